package spec

import (
	"fmt"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Version is a runtime-spec version's major and minor number.
type Version struct{ Major, Minor int }

// ParseVersion reads "1.2.1", "1.0.2-dev" and the like.
func ParseVersion(v string) (Version, error) {
	var out Version
	if _, err := fmt.Sscanf(v, "%d.%d", &out.Major, &out.Minor); err != nil {
		return out, fmt.Errorf("ociVersion %q: %w", v, err)
	}
	return out, nil
}

// Less orders versions.
func (v Version) Less(o Version) bool {
	return v.Major < o.Major || v.Major == o.Major && v.Minor < o.Minor
}

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// fieldsAfter11 names what runtime-spec added after 1.1 that a config may
// use: a runtime that knows only 1.1 would ignore or refuse it.
func fieldsAfter11(s *specs.Spec) []string {
	var used []string
	if p := s.Process; p != nil {
		if p.Scheduler != nil {
			used = append(used, "process.scheduler")
		}
		if p.IOPriority != nil {
			used = append(used, "process.ioPriority")
		}
		if p.ExecCPUAffinity != nil {
			used = append(used, "process.execCPUAffinity")
		}
	}
	if l := s.Linux; l != nil {
		if len(l.NetDevices) > 0 {
			used = append(used, "linux.netDevices")
		}
		if l.MemoryPolicy != nil {
			used = append(used, "linux.memoryPolicy")
		}
		if r := l.IntelRdt; r != nil && (len(r.Schemata) > 0 || r.EnableMonitoring) {
			used = append(used, "linux.intelRdt.schemata/enableMonitoring")
		}
	}
	for _, m := range s.Mounts {
		for _, o := range m.Options {
			if n := strings.SplitN(o, "=", 2)[0]; n == "idmap" || n == "ridmap" {
				used = append(used, "mounts["+m.Destination+"]."+n)
			}
		}
	}
	return used
}

// FitVersion lowers the config's ociVersion to max (a runtime that refuses
// newer versions, such as crun before 1.9 with 1.2 and later), which is
// only right when the config uses nothing added after max. It reports
// whether it changed the version; a config that needs the newer version is
// an error naming what it uses.
func FitVersion(s *specs.Spec, max Version) (bool, error) {
	have, err := ParseVersion(s.Version)
	if err != nil || !max.Less(have) {
		return false, err
	}
	if max.Less(Version{1, 1}) {
		return false, fmt.Errorf("ociVersion %s: the runtime knows only %s", s.Version, max)
	}
	if used := fieldsAfter11(s); len(used) > 0 {
		return false, fmt.Errorf("ociVersion %s: the runtime knows only %s and the config uses %s, which %s lacks: use a newer runtime",
			s.Version, max, strings.Join(used, ", "), max)
	}
	s.Version = fmt.Sprintf("%d.%d.0", max.Major, max.Minor)
	return true, nil
}
