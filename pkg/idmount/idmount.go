// Package idmount makes ID-mapped mounts with the new mount API
// (open_tree, mount_setattr, move_mount), probes which filesystems support
// them, and finds the mount that holds a path.
package idmount

import (
	"errors"
	"fmt"
	"os"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/mapping"
	"github.com/userns-shim/userns-shim/pkg/nsexec"
)

const opSetattr = "mount_setattr MOUNT_ATTR_IDMAP"

// Clone returns a detached copy of the mount at src (with its submounts when
// recursive), ID-mapped with the mapping of the user namespace userns. The
// copy is visible nowhere until Attach; closing the fd without attaching it
// dissolves it. The result's Name() is src, for later error messages.
func Clone(src string, userns *os.File, recursive bool) (_ *os.File, retErr error) {
	// The source is opened without following a final symlink and checked,
	// then that very object is cloned: a source swapped for a symlink after
	// the caller looked at it fails here instead of leading elsewhere.
	// RESOLVE_NO_MAGICLINKS: a /proc magic link anywhere in the path
	// (/proc/<pid>/root/..., /proc/self/cwd/..., /proc/<pid>/fd/N) would
	// lead into another process's view of the filesystem, such as another
	// container's root; ordinary symlinks in parent directories are allowed
	// (/var/run -> /run).
	pathFd, err := openSource(src)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pathFd)
	var st unix.Stat_t
	if err := unix.Fstat(pathFd, &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: src, Err: err}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return nil, withHint(&os.PathError{Op: "open_tree", Path: src, Err: unix.ELOOP}, "a mount source must not be a symlink")
	}
	// procfs holds other processes' state and the host's kernel knobs; an
	// ID-mapped view of it would be owned by the container's root.
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(pathFd, &sfs); err != nil {
		return nil, &os.PathError{Op: "fstatfs", Path: src, Err: err}
	}
	if sfs.Type == unix.PROC_SUPER_MAGIC {
		return nil, &os.PathError{Op: "open_tree", Path: src, Err: ErrProcSource}
	}
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC | unix.AT_EMPTY_PATH)
	setFlags := uint(unix.AT_EMPTY_PATH)
	if recursive {
		flags |= unix.AT_RECURSIVE
		setFlags |= unix.AT_RECURSIVE
	}
	var fd int
	err = ignoringEINTR(func() (err error) {
		fd, err = unix.OpenTree(pathFd, "", flags)
		return err
	})
	if err != nil {
		return nil, withHint(&os.PathError{Op: "open_tree", Path: src, Err: err}, openTreeHint(err))
	}
	tree := os.NewFile(uintptr(fd), src)
	defer func() {
		if retErr != nil {
			tree.Close()
		}
	}()
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns.Fd())}
	// The mapping is applied to the detached copy only (the kernel allows
	// MOUNT_ATTR_IDMAP on mounts nobody can see yet), never to src itself.
	err = ignoringEINTR(func() error { return unix.MountSetattr(fd, "", setFlags, &attr) })
	if err != nil {
		return nil, withHint(&os.PathError{Op: opSetattr, Path: src, Err: err}, setattrHint(err))
	}
	return tree, nil
}

// ErrProcSource is the error for a mount source on procfs.
var ErrProcSource = errors.New("a /proc path: the shim will not ID-map procfs")

// openSource opens src as O_PATH without following a final symlink or any
// /proc magic link.
func openSource(src string) (int, error) {
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_MAGICLINKS}
	var fd int
	err := ignoringEINTR(func() (err error) {
		fd, err = unix.Openat2(unix.AT_FDCWD, src, &how)
		return err
	})
	switch {
	case errors.Is(err, unix.ELOOP):
		return -1, withHint(&os.PathError{Op: "open", Path: src, Err: err}, "the path goes through a /proc magic link such as /proc/<pid>/root, which the shim will not follow into another process's view of the filesystem, or through too many symlinks")
	case errors.Is(err, unix.ENOSYS):
		// openat2 needs Linux 5.6; ID-mapped mounts need 5.12 anyway.
		return -1, withHint(&os.PathError{Op: "openat2", Path: src, Err: err}, "needs Linux 5.6 or newer")
	case err != nil:
		return -1, &os.PathError{Op: "open", Path: src, Err: err}
	}
	return fd, nil
}

// SetReadOnly makes a tree from Clone read-only (with its submounts when
// recursive), before it is attached: a mount namespace that a container's
// user namespace owns copies it with the flag locked (lock_mnt_tree), so
// the container's root cannot remount its bind of it read-write, as it
// could a bind the runtime made read-only inside that namespace.
func SetReadOnly(tree *os.File, recursive bool) error {
	flags := uint(unix.AT_EMPTY_PATH)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	err := ignoringEINTR(func() error { return unix.MountSetattr(int(tree.Fd()), "", flags, &attr) })
	if err != nil {
		return &os.PathError{Op: "mount_setattr MOUNT_ATTR_RDONLY", Path: tree.Name(), Err: err}
	}
	return nil
}

// IsUnsupported reports whether err from Clone means that the filesystem
// (or mount) at the source cannot be ID-mapped, as opposed to the source
// being unreachable.
func IsUnsupported(err error) bool {
	var pe *os.PathError
	return errors.As(err, &pe) && pe.Op == opSetattr
}

// Attach mounts a tree made by Clone on target. The caller still closes tree;
// once attached, closing it no longer dissolves the mount.
func Attach(tree *os.File, target string) error {
	err := ignoringEINTR(func() error {
		return unix.MoveMount(int(tree.Fd()), "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH)
	})
	if err != nil {
		return &os.PathError{Op: "move_mount " + tree.Name() + " to", Path: target, Err: err}
	}
	return nil
}

// Detach lazily unmounts target (MNT_DETACH: processes that already use it,
// such as a container created from it, keep their copy). When target is not
// a mount point, errors.Is(err, unix.EINVAL) holds.
func Detach(target string) error {
	if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
		hint := ""
		if errors.Is(err, unix.EINVAL) {
			hint = "not a mount point"
		}
		return withHint(&os.PathError{Op: "umount", Path: target, Err: err}, hint)
	}
	return nil
}

func openTreeHint(err error) string {
	switch {
	case errors.Is(err, unix.ENOSYS):
		return "open_tree needs Linux 5.2 or newer"
	case errors.Is(err, unix.EINVAL):
		return "the mount cannot be cloned: unbindable, or locked in a mount namespace of another user namespace"
	}
	return ""
}

func setattrHint(err error) string {
	switch {
	case errors.Is(err, unix.EINVAL):
		return "the filesystem does not support ID-mapped mounts (overlayfs; tmpfs before Linux 6.3; NFS, FUSE and others)"
	case errors.Is(err, unix.EPERM):
		return "the filesystem was mounted in another user namespace, the mount is already ID-mapped, or the user namespace is the initial one"
	case errors.Is(err, unix.ENOSYS):
		return "ID-mapped mounts need Linux 5.12 or newer"
	case errors.Is(err, unix.EBADF):
		return "the user namespace fd is not valid"
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

// ignoringEINTR retries a path-walking syscall interrupted by a signal
// (possible on NFS and FUSE even with SA_RESTART).
func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// ProbeMapping is the mapping a Prober uses when it is given none. Which one
// does not matter: support depends on the filesystem, not on the mapping.
var ProbeMapping = mapping.Mapping{
	UIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 65536, Size: 65536}},
	GIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 65536, Size: 65536}},
}

// Support is what a Prober found out about the filesystem holding a path.
type Support struct {
	OK     bool
	FSType string // "ext4", "tmpfs", "overlay", ... (see Prober.Supports)
	Dev    uint64 // st_dev of the path
	Err    error  // when !OK, the error the probe got (with its hint)
}

// probeKey names one mount. The kernel's answer depends on the filesystem
// type (FS_ALLOW_IDMAP), the superblock's user namespace and whether this
// mount is already ID-mapped (EPERM), so (type, device) alone is not enough:
// an ID-mapped bind of the root ext4 would poison the answer for all of it.
type probeKey struct {
	magic int64
	dev   uint64
	mnt   uint64 // unique mount ID (Linux >= 6.8), else the reusable one
}

// Prober tells whether filesystems support ID-mapped mounts by trying one,
// since only trying covers the filesystem type, the superblock's owner and
// the kernel version at once. Results are kept per mount (type, device,
// mount ID) for the Prober's lifetime, one invocation: in a pod, host-path
// volumes share the mount of the kubelet's directory and each tmpfs volume
// is its own device anyway, so this costs no more probes than per device.
// Not safe for concurrent use.
type Prober struct {
	users  *nsexec.UserNSCache
	m      mapping.Mapping
	cache  map[probeKey]Support
	probes int
}

// NewProber probes with user namespaces from users (which the caller closes).
// m may be the container's own mapping, whose namespace the cache then
// already holds; an empty m means ProbeMapping.
func NewProber(users *nsexec.UserNSCache, m mapping.Mapping) *Prober {
	if m.Empty() {
		m = ProbeMapping
	}
	return &Prober{users: users, m: m, cache: map[probeKey]Support{}}
}

// Probes returns how many real probes (clones) the Prober has made.
func (p *Prober) Probes() int { return p.probes }

// Supports reports whether the mount holding path supports ID-mapped
// mounts. statfs(2) and statx(2) on the path itself name the superblock and
// mount really reached (through symlinks and stacked mounts) in two
// syscalls; mountinfo would mean reading and parsing the whole mount table
// and matching prefixes. statfs's magic number cannot tell ext2/3/4 apart,
// nor devtmpfs from tmpfs, nor FUSE subtypes, so when the answer is no (an
// error message will name the type) FSType comes from mountinfo instead.
// A refusal by mount_setattr is an answer (OK false, Err set), not an error;
// failing to reach or clone path is an error.
func (p *Prober) Supports(path string) (Support, error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err != nil {
		return Support{}, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_MNT_ID_UNIQUE, &stx); err != nil {
		return Support{}, &os.PathError{Op: "statx", Path: path, Err: err}
	}
	dev := unix.Mkdev(stx.Dev_major, stx.Dev_minor)
	key := probeKey{magic: int64(sfs.Type), dev: dev, mnt: stx.Mnt_id}
	if s, ok := p.cache[key]; ok {
		return s, nil
	}
	ns, err := p.users.Get(p.m)
	if err != nil {
		return Support{}, err
	}
	p.probes++
	s := Support{FSType: FSTypeName(int64(sfs.Type)), Dev: dev}
	tree, err := Clone(path, ns, false)
	switch {
	case err == nil:
		tree.Close() // never attached: closing dissolves it
		s.OK = true
	case IsUnsupported(err):
		s.Err = err
		if info, err := MountInfoOf(path); err == nil {
			s.FSType = info.FSType
		}
	default:
		return Support{}, err
	}
	p.cache[key] = s
	return s, nil
}

var fsNames = map[int64]string{
	unix.EXT4_SUPER_MAGIC:      "ext4", // also ext2/ext3: same magic
	unix.TMPFS_MAGIC:           "tmpfs",
	unix.OVERLAYFS_SUPER_MAGIC: "overlay",
	unix.XFS_SUPER_MAGIC:       "xfs",
	unix.BTRFS_SUPER_MAGIC:     "btrfs",
	unix.NFS_SUPER_MAGIC:       "nfs",
	unix.FUSE_SUPER_MAGIC:      "fuse",
	unix.F2FS_SUPER_MAGIC:      "f2fs",
	unix.SQUASHFS_MAGIC:        "squashfs",
	unix.EROFS_SUPER_MAGIC_V1:  "erofs",
	unix.RAMFS_MAGIC:           "ramfs",
	unix.PROC_SUPER_MAGIC:      "proc",
	unix.SYSFS_MAGIC:           "sysfs",
	unix.CGROUP_SUPER_MAGIC:    "cgroup",
	unix.CGROUP2_SUPER_MAGIC:   "cgroup2",
	unix.NSFS_MAGIC:            "nsfs",
	unix.V9FS_MAGIC:            "9p",
	unix.CIFS_SUPER_MAGIC:      "cifs",
	unix.SMB2_SUPER_MAGIC:      "smb3",
	unix.MSDOS_SUPER_MAGIC:     "vfat",
	0x2fc12fc1:                 "zfs",
	0x00c36400:                 "ceph",
}

// FSTypeName names a statfs f_type magic number.
func FSTypeName(magic int64) string {
	if n, ok := fsNames[magic]; ok {
		return n
	}
	return fmt.Sprintf("0x%x", magic)
}

// MountInfoOf returns the mount that holds path, from /proc/self/mountinfo:
// fstype, source, per-mount options (Options, which say "idmapped") and
// superblock options (VFSOptions: overlay's lowerdir, upperdir, workdir).
// The mount is found by its ID from statx(STATX_MNT_ID), not by matching
// path prefixes, so symlinks, bind mounts and stacked mounts are no trap.
func MountInfoOf(path string) (*mountinfo.Info, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_MNT_ID, &stx); err != nil {
		return nil, &os.PathError{Op: "statx", Path: path, Err: err}
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return nil, fmt.Errorf("statx %s: no mount ID (needs Linux 5.8)", path)
	}
	id := int(stx.Mnt_id)
	infos, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) {
		return i.ID != id, i.ID == id
	})
	if err != nil {
		return nil, fmt.Errorf("mount of %s: %w", path, err)
	}
	if len(infos) == 0 {
		return nil, fmt.Errorf("mount of %s: mount ID %d not in /proc/self/mountinfo (outside this root?)", path, id)
	}
	return infos[0], nil
}
