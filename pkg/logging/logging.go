// Package logging writes the shim's log the way runc does: to the --log file
// in --log-format (JSON lines with level, msg and time, which CRI-O,
// containerd and podman parse), and reports a fatal error once, both as a
// `userns-shim: ...` line on stderr and as an error entry in that file.
package logging

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/userns-shim/userns-shim/pkg/runcargs"
)

// Prefix starts every error line the shim prints.
const Prefix = "userns-shim: "

// Logger is the shim's logger for one invocation.
type Logger struct {
	*logrus.Logger
	file   *os.File // the --log file, nil without one
	stderr io.Writer
}

// Open sets up logging from the runtime's global flags. A --log file that
// cannot be opened is reported on stderr and otherwise ignored: losing the
// log must not fail the container.
func Open(g runcargs.Global, stderr io.Writer) *Logger {
	l := &Logger{Logger: logrus.New(), stderr: stderr}
	l.Out = stderr
	l.Level = logrus.WarnLevel
	if g.Debug {
		l.Level = logrus.DebugLevel
	}
	if g.LogFormat == "json" {
		l.Formatter = &logrus.JSONFormatter{}
	} else {
		l.Formatter = &logrus.TextFormatter{DisableColors: true, FullTimestamp: true}
	}
	if g.Log != "" {
		f, err := os.OpenFile(g.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_SYNC, 0o644)
		if err != nil {
			fmt.Fprintf(stderr, "%sopen log file: %v\n", Prefix, err)
		} else {
			l.file = f
			l.Out = f
		}
	}
	return l
}

// Fail reports err as the invocation's one fatal error.
func (l *Logger) Fail(err error) {
	// One line, whatever the error: callers parse the last line of stderr.
	msg := Prefix + strings.ReplaceAll(err.Error(), "\n", "; ")
	fmt.Fprintln(l.stderr, msg)
	if l.file != nil {
		l.Error(msg)
	}
}

// Close closes the log file.
func (l *Logger) Close() {
	if l.file != nil {
		l.file.Close()
	}
}
