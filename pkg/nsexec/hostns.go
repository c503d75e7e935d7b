// Package nsexec deals with namespaces as files: telling the host's own
// namespaces from a container's, and reading the mappings of a user namespace
// that a container joins by path.
package nsexec

import (
	"fmt"
	"os"
	"regexp"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// procNames maps spec namespace types to their /proc/<pid>/ns/ names.
var procNames = map[specs.LinuxNamespaceType]string{
	specs.NetworkNamespace: "net", specs.PIDNamespace: "pid", specs.IPCNamespace: "ipc",
	specs.UserNamespace: "user", specs.UTSNamespace: "uts", specs.MountNamespace: "mnt",
	specs.CgroupNamespace: "cgroup", specs.TimeNamespace: "time",
}

// IsHostNamespace reports whether path names the same namespace of type t as
// the host's init process (/proc/1/ns/<t>).
func IsHostNamespace(t specs.LinuxNamespaceType, path string) (bool, error) {
	name, ok := procNames[t]
	if !ok {
		return false, fmt.Errorf("unknown namespace type %q", t)
	}
	var host, st unix.Stat_t
	hostPath := "/proc/1/ns/" + name
	if err := unix.Stat(hostPath, &host); err != nil {
		return false, &os.PathError{Op: "stat", Path: hostPath, Err: err}
	}
	if err := unix.Stat(path, &st); err != nil {
		return false, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return host.Dev == st.Dev && host.Ino == st.Ino, nil
}

var procUserNS = regexp.MustCompile(`^/proc/([0-9]+)/ns/user$`)

// ProcOfUserNS returns the /proc/<pid> directory of a /proc/<pid>/ns/user
// path, or "" when path names a user namespace some other way (a pin).
func ProcOfUserNS(path string) string {
	m := procUserNS.FindStringSubmatch(path)
	if m == nil {
		return ""
	}
	return "/proc/" + m[1]
}
