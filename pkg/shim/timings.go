package shim

import (
	"time"

	"github.com/sirupsen/logrus"
)

// timings measures the phases of one call for its debug log line ("create
// timings": decode, decide, mounts, write, runtime, release, in ms), so an
// operator can tell the shim's share of a slow start from the runtime's.
// A nil *timings (debug logging off) measures nothing.
type timings struct {
	last   time.Time
	fields logrus.Fields
}

func (s *Shim) newTimings() *timings {
	if !s.Log.IsLevelEnabled(logrus.DebugLevel) {
		return nil
	}
	return &timings{last: time.Now(), fields: logrus.Fields{}}
}

// lap records the time since the previous lap as phase name.
func (t *timings) lap(name string) {
	if t == nil {
		return
	}
	now := time.Now()
	t.fields[name+"_ms"] = float64(now.Sub(t.last).Microseconds()) / 1000
	t.last = now
}

// log writes the phases as one debug entry.
func (t *timings) log(l logrus.FieldLogger, msg string) {
	if t != nil {
		l.WithFields(t.fields).Debug(msg)
	}
}
