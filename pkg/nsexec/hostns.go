// Package nsexec deals with namespaces as files: telling the host's own
// namespaces from a container's, and reading the mappings of a user namespace
// that a container joins by path.
package nsexec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/fsutil"
)

// procNames maps spec namespace types to their /proc/<pid>/ns/ names.
var procNames = map[specs.LinuxNamespaceType]string{
	specs.NetworkNamespace: "net", specs.PIDNamespace: "pid", specs.IPCNamespace: "ipc",
	specs.UserNamespace: "user", specs.UTSNamespace: "uts", specs.MountNamespace: "mnt",
	specs.CgroupNamespace: "cgroup", specs.TimeNamespace: "time",
}

// IsHostNamespace reports whether path names the host's namespace of type t:
// the one of the host's init process (/proc/1/ns/<t>) or the one the shim
// itself runs in (/proc/self/ns/<t>), which is the node's as far as the pod
// is concerned even when the node is itself a container. /proc/1/ns may be
// unreadable (an init that even root may not inspect); the shim's own
// namespace is always checked.
func IsHostNamespace(t specs.LinuxNamespaceType, path string) (bool, error) {
	name, ok := procNames[t]
	if !ok {
		return false, fmt.Errorf("unknown namespace type %q", t)
	}
	if filepath.Clean(path) == "/proc/1/ns/"+name {
		return true, nil // pid 1's namespace is the host's by definition, readable or not
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	// A namespace file is a regular file on nsfs; anything else (a device,
	// whose open may have effects) is refused without being opened.
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false, fmt.Errorf("%s is not a namespace (not even a regular file)", path)
	}
	if err := checkType(t, path); err != nil {
		return false, err
	}
	for _, ref := range []string{"/proc/self/ns/" + name, "/proc/1/ns/" + name} {
		var host unix.Stat_t
		if err := unix.Stat(ref, &host); err != nil {
			if ref == "/proc/self/ns/"+name || !(errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)) {
				return false, &os.PathError{Op: "stat", Path: ref, Err: err}
			}
			continue
		}
		if host.Dev == st.Dev && host.Ino == st.Ino {
			return true, nil
		}
	}
	return false, nil
}

// cloneFlags are the namespace types as ioctl NS_GET_NSTYPE names them.
var cloneFlags = map[specs.LinuxNamespaceType]int{
	specs.NetworkNamespace: unix.CLONE_NEWNET, specs.PIDNamespace: unix.CLONE_NEWPID, specs.IPCNamespace: unix.CLONE_NEWIPC,
	specs.UserNamespace: unix.CLONE_NEWUSER, specs.UTSNamespace: unix.CLONE_NEWUTS, specs.MountNamespace: unix.CLONE_NEWNS,
	specs.CgroupNamespace: unix.CLONE_NEWCGROUP, specs.TimeNamespace: unix.CLONE_NEWTIME,
}

// checkType refuses a path that is not a namespace of type t: a file that
// is no namespace at all, or one of another type. Either would make the
// host check above meaningless.
func checkType(t specs.LinuxNamespaceType, path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	got, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("%s is not a namespace: %w", path, &os.PathError{Op: "ioctl NS_GET_NSTYPE", Path: path, Err: err})
	}
	if got != cloneFlags[t] {
		for other, flag := range cloneFlags {
			if flag == got {
				return fmt.Errorf("%s is a %s namespace, not a %s namespace", path, other, t)
			}
		}
		return fmt.Errorf("%s is not a %s namespace (type %#x)", path, t, got)
	}
	return nil
}

// ProcOfUserNS returns the /proc/<pid> directory of a /proc/<pid>/ns/user
// path, or "" when path names a user namespace some other way (a pin).
func ProcOfUserNS(path string) string {
	rest, ok := strings.CutPrefix(path, "/proc/")
	if !ok {
		return ""
	}
	pid, ok := strings.CutSuffix(rest, "/ns/user")
	if !ok || !fsutil.IsName(pid, 10, "") || strings.Trim(pid, "0123456789") != "" {
		return ""
	}
	return "/proc/" + pid
}

// OwningUserNS returns the inode of the user namespace that owns the
// namespace at path (ioctl NS_GET_USERNS).
func OwningUserNS(path string) (uint64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	owner, err := unix.IoctlRetInt(fd, unix.NS_GET_USERNS)
	if err != nil {
		return 0, &os.PathError{Op: "ioctl NS_GET_USERNS", Path: path, Err: err}
	}
	defer unix.Close(owner)
	var st unix.Stat_t
	if err := unix.Fstat(owner, &st); err != nil {
		return 0, &os.PathError{Op: "fstat owner of", Path: path, Err: err}
	}
	return st.Ino, nil
}
