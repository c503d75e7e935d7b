package nsexec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/mapping"
)

// helperExe is what the user-namespace helper execs. The helper stops at the
// exec (PTRACE_TRACEME makes the kernel stop it with SIGTRAP before its first
// instruction), so the program never runs; it only has to be executable by
// the mapped root, which /proc/self/exe is for an installed 0755 binary.
// A magic link also skips the search permission of the directories above it.
const helperExe = "/proc/self/exe"

// OpenUserNS returns an fd (O_RDONLY|O_CLOEXEC) to a new user namespace with
// mapping m. Go cannot unshare(CLONE_NEWUSER) itself (the process has many
// threads), so a helper is cloned into the namespace by os.StartProcess (the
// Go runtime's own fork path: raw syscalls only, no Go code runs in the
// child), its namespace is opened and the helper is killed and reaped. The fd
// keeps the namespace alive after the helper is gone.
func OpenUserNS(m mapping.Mapping) (_ *os.File, retErr error) {
	if len(m.UIDs) == 0 || len(m.GIDs) == 0 {
		return nil, fmt.Errorf("user namespace for mapping uid %q gid %q: both uid and gid ranges are needed",
			mapping.String(m.UIDs), mapping.String(m.GIDs))
	}
	pidfd := -1
	// syscall.ForkExec, not os.StartProcess: the os package first forks a
	// throwaway child to check clone(CLONE_PIDFD) (about 0.3 ms here).
	pid, err := syscall.ForkExec(helperExe, []string{"userns-shim[userns]"}, &syscall.ProcAttr{
		Sys: &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER,
			UidMappings: idMaps(m.UIDs),
			GidMappings: idMaps(m.GIDs),
			// A pinned pod namespace is joined by the container, whose runtime
			// calls setgroups(2); "deny" (Go's default) would make that fail.
			GidMappingsEnableSetgroups: true,
			Ptrace:                     true,
			Pdeathsig:                  unix.SIGKILL, // never outlive the shim
			PidFD:                      &pidfd,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("user namespace helper for uid %s gid %s: %w",
			mapping.String(m.UIDs), mapping.String(m.GIDs), withHint(err, usernsHint(err)))
	}
	// Until it is reaped the helper's PID cannot be reused, so killing and
	// waiting by PID reach this child; reap it on every path.
	defer func() {
		_ = unix.Kill(pid, unix.SIGKILL)
		for {
			if _, err := unix.Wait4(pid, nil, 0, nil); !errors.Is(err, unix.EINTR) {
				break
			}
		}
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
	}()
	if pidfd < 0 {
		return nil, errors.New("user namespace helper: kernel gave no pidfd, cannot rule out PID reuse")
	}

	path := "/proc/" + strconv.Itoa(pid) + "/ns/user"
	ns, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err // already an *os.PathError with op and path
	}
	defer func() {
		if retErr != nil {
			ns.Close()
		}
	}()
	// The helper is stopped, never exits by itself and is not reaped yet, so
	// its PID cannot have been reused: if the pidfd still reaches it, the
	// path above named our helper. Checked anyway, with the namespace not
	// being ours, because a wrong fd would map mounts with the host's IDs.
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		return nil, fmt.Errorf("user namespace helper %d gone before %s was checked: %w",
			pid, path, os.NewSyscallError("pidfd_send_signal", err))
	}
	if host, err := IsHostNamespace(specs.UserNamespace, "/proc/self/fd/"+strconv.Itoa(int(ns.Fd()))); err != nil {
		return nil, err
	} else if host {
		return nil, fmt.Errorf("%s is the shim's own user namespace, not a new one", path)
	}
	return ns, nil
}

func idMaps(r []specs.LinuxIDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, len(r))
	for i, m := range r {
		out[i] = syscall.SysProcIDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)}
	}
	return out
}

// usernsHint explains the errnos seen when creating a user namespace.
func usernsHint(err error) string {
	switch {
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EUSERS):
		return "too many user namespaces: see sysctl user.max_user_namespaces (0 disables them) and the nesting limit of 32"
	case errors.Is(err, unix.EPERM):
		return "creating user namespaces is not allowed here: a seccomp profile, an LSM, a chroot or kernel.unprivileged_userns_clone"
	case errors.Is(err, unix.EINVAL):
		return "the kernel refused the uid_map/gid_map: overlapping ranges, a zero size or more than 340 ranges"
	case errors.Is(err, unix.EACCES):
		return "the helper could not exec " + helperExe + ": the binary must be executable by the mapped root (mode o+x)"
	}
	return ""
}

// withHint appends a hint to err's text; errors.Is/As still see err.
func withHint(err error, hint string) error {
	if hint == "" {
		return err
	}
	return fmt.Errorf("%w (%s)", err, hint)
}

// UserNSCache hands out one user-namespace fd per distinct mapping, so one
// invocation pays for one helper per mapping however many mounts use it.
// Not safe for concurrent use. The fds stay owned by the cache.
type UserNSCache struct {
	fds map[string]*os.File
}

// Get returns the cached fd for m, creating the namespace on first use. The
// caller must not close it; Close does.
func (c *UserNSCache) Get(m mapping.Mapping) (*os.File, error) {
	key := cacheKey(m)
	if f, ok := c.fds[key]; ok {
		return f, nil
	}
	f, err := OpenUserNS(m)
	if err != nil {
		return nil, err
	}
	if c.fds == nil {
		c.fds = map[string]*os.File{}
	}
	c.fds[key] = f
	return f, nil
}

// Put hands the cache an fd for m (a pinned namespace, say), which Get then
// returns instead of making a namespace; the cache closes it.
func (c *UserNSCache) Put(m mapping.Mapping, f *os.File) {
	if c.fds == nil {
		c.fds = map[string]*os.File{}
	}
	if old, ok := c.fds[cacheKey(m)]; ok {
		old.Close()
	}
	c.fds[cacheKey(m)] = f
}

// Close closes every fd the cache handed out.
func (c *UserNSCache) Close() error {
	var errs []error
	for k, f := range c.fds {
		errs = append(errs, f.Close())
		delete(c.fds, k)
	}
	return errors.Join(errs...)
}

// cacheKey is the same for mappings that differ only in range order, which
// the kernel treats as the same mapping.
func cacheKey(m mapping.Mapping) string {
	s := func(r []specs.LinuxIDMapping) string {
		r = slices.Clone(r)
		slices.SortFunc(r, func(a, b specs.LinuxIDMapping) int { return int(int64(a.ContainerID) - int64(b.ContainerID)) })
		return mapping.String(r)
	}
	return s(m.UIDs) + "/" + s(m.GIDs)
}

// Pin bind-mounts the namespace file of ns onto path, so the namespace
// outlives every process and fd that holds it (a pod's namespace, joined by
// path by each of its containers). path must not exist yet: pinning twice
// would stack mounts; a stale path is removed with Unpin. Missing parent
// directories are made 0700.
func Pin(ns *os.File, path string) (retErr error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY|unix.O_CLOEXEC, 0o400)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return withHint(err, "already pinned or left over: OpenPinned it or Unpin it first")
		}
		return err
	}
	f.Close()
	defer func() {
		if retErr != nil {
			os.Remove(path)
		}
	}()
	src := "/proc/self/fd/" + strconv.Itoa(int(ns.Fd()))
	if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
		return &os.PathError{Op: "mount " + src + " on", Path: path, Err: err}
	}
	return nil
}

// Unpin undoes Pin: it detaches the namespace mount(s) on path and removes
// the file. A path that does not exist is not an error, nor is a file that
// is not mounted on (Pin stopped half-way), so Unpin can always clean up.
func Unpin(path string) error {
	// Loop: a mount stacked on the pin by someone else would otherwise keep
	// the file busy. EINVAL means nothing (more) is mounted there.
	for {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if err == nil {
			continue
		}
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if errors.Is(err, unix.EINVAL) {
			break
		}
		return &os.PathError{Op: "umount", Path: path, Err: err}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// OpenPinned opens a namespace pinned by Pin and checks that it is a user
// namespace, so an empty placeholder file (not pinned) is an error.
func OpenPinned(path string) (_ *os.File, retErr error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			f.Close()
		}
	}()
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		if errors.Is(err, unix.ENOTTY) {
			return nil, withHint(&os.PathError{Op: "ioctl NS_GET_NSTYPE", Path: path, Err: err}, "not a pinned namespace")
		}
		return nil, &os.PathError{Op: "ioctl NS_GET_NSTYPE", Path: path, Err: err}
	}
	if t != unix.CLONE_NEWUSER {
		return nil, fmt.Errorf("%s: pinned namespace is not a user namespace (type %#x)", path, t)
	}
	return f, nil
}
