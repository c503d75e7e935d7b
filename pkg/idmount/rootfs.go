package idmount

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/mapping"
)

// Kinds of rootfs handling (Rootfs.Kind).
const (
	// RootfsDir: a directory, ID-mapped onto <staging>/rootfs.
	RootfsDir = "dir"
	// RootfsOverlay: an overlay re-mounted in place with ID-mapped lower
	// layers and its upper and work dirs owned by the mapped root.
	RootfsOverlay = "overlay"
	// RootfsPrepared: the CRI runtime already prepared the rootfs for a
	// mapping; nothing was done.
	RootfsPrepared = "prepared"
)

// Rootfs says what PrepareRootfs did to a container's rootfs, for the
// caller's record, and undoes the temporary part of it (Release).
//
// Ownership: the overlay's upper layer is not ID-mapped (an upper
// ID-mapped with the container's mapping leaves host root, the overlay's
// mounter, without an ID in it: the kernel logs errno 75 on workdir and the
// overlay is read-only), so whatever the container's root writes lands in upperdir as the mapped
// root's host uid (the caller's fsuid is stored as it is), and a file
// copied up from a lower layer keeps the owner it shows through the
// ID-mapped lower (on-disk 0 -> host root of the mapping). The upper layer
// is therefore in host IDs throughout, like the upper of CRI-O's and
// containerd 2's own ID-mapped overlays; a directory rootfs, which is
// ID-mapped itself, keeps the on-disk IDs (container root writes uid 0).
type Rootfs struct {
	// Path is what the spec's root.path must be: a staging mount for a
	// directory (and for an overlay that the mapped root cannot reach), else
	// the path given to PrepareRootfs.
	Path string
	// Kind is RootfsDir, RootfsOverlay or RootfsPrepared.
	Kind string
	// Reason says what was found and done, for logs and records.
	Reason string

	mounts []string // staging mount points, detached by Release (last first)
	dirs   []string // staging directories made, removed by Release (last first)
	m      mapping.Mapping
}

// newOverlayTestOption, when set by a test, is added to the options of the
// re-mounted overlay (only), to make that mount fail.
var newOverlayTestOption string

// PrepareRootfs makes the rootfs at path usable by a container in the user
// namespace userns, whose mapping is m, without chown of the image and at a
// cost that does not grow with the image (it grows with the number of
// layers: one clone each):
//
//   - a directory (a plain one, a bind mount of one, or the root of a
//     filesystem that supports ID-mapped mounts) is cloned, with its
//     submounts, ID-mapped onto stagingDir/rootfs, the returned Path;
//   - an overlay mounted exactly at path (what CRI-O, containerd and podman
//     hand over) is re-mounted in place: each lower layer is cloned
//     ID-mapped and read-only onto stagingDir/lowers/<n> (a 0700 directory:
//     the mapped root must not reach writable image layers), upperdir and
//     workdir (and workdir's "work" and "index", not their contents) are
//     chowned to the mapped root, the original overlay is unmounted and a
//     new one with the same options over the ID-mapped lowers is mounted at
//     path, so the CRI runtime's own umount still tears it down. If that
//     mount fails, the original overlay is mounted again (same options) and
//     the owners are restored. If the mapped root cannot reach path (podman's
//     storage and containerd's bundles are 0700), the new overlay is also
//     bound on stagingDir/rootfs and that is Path;
//   - a rootfs the CRI runtime already prepared for a mapping is left alone
//     (Kind RootfsPrepared, Reason says why): an ID-mapped mount; an overlay
//     whose options carry uidmap/gidmap, or whose lower layers are ID-mapped
//     mounts, or are gone or unnamed (the temporary ID-mapped mounts CRI-O
//     and containerd 2 detach once the overlay exists; layers passed to
//     fsconfig as fds show as "/") while its root belongs to the mapped
//     root, or whose top lower layer belongs to the mapped root (layers
//     chowned for the mapping); a directory that belongs to the mapped root.
//
// Overlays that cannot be re-mounted are refused, never guessed at: layer
// paths that are relative (containers/storage mounts long lists relative to
// its home) or gone without the root belonging to the mapped root. The
// kernel keeps only the layer path strings it was given, so a path that now
// names something else than at mount time cannot be told apart.
//
// The mapped root is the host uid and gid that m gives container ID 0.
// stagingDir is made (0711) if missing; its parents must let the mapped root
// through, since runtimes mount root.path from inside the user namespace.
// Call Release once the runtime's create has returned (the container keeps
// its own references), and on every error path of the caller.
func PrepareRootfs(path string, userns *os.File, m mapping.Mapping, stagingDir string) (_ *Rootfs, retErr error) {
	uid, gid, err := mappedRoot(m)
	if err != nil {
		return nil, fmt.Errorf("rootfs %s: %w", path, err)
	}
	// A rootfs that is itself a symlink could lead the ID-mapped clone
	// anywhere (the host's /, another container's rootfs): no CRI runtime
	// hands one over. Symlinks above it (/var/run -> /run) are followed.
	var lst unix.Stat_t
	if err := unix.Lstat(path, &lst); err != nil {
		return nil, fmt.Errorf("rootfs: %w", &os.PathError{Op: "lstat", Path: path, Err: err})
	}
	if lst.Mode&unix.S_IFMT == unix.S_IFLNK {
		// The caller names the rootfs: "rootfs <path>: it is a symlink".
		return nil, errors.New("it is a symlink: the shim will not ID-map a path that may lead elsewhere; point root.path at the real directory")
	}
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	if resolved, err = filepath.Abs(resolved); err != nil {
		return nil, fmt.Errorf("rootfs %s: %w", path, err)
	}
	if stagingDir, err = filepath.Abs(stagingDir); err != nil {
		return nil, fmt.Errorf("rootfs staging dir: %w", err)
	}
	var stx unix.Statx_t
	mask := unix.STATX_TYPE | unix.STATX_UID | unix.STATX_GID | unix.STATX_MNT_ID
	if err := unix.Statx(unix.AT_FDCWD, resolved, unix.AT_SYMLINK_NOFOLLOW, mask, &stx); err != nil {
		return nil, &os.PathError{Op: "statx", Path: resolved, Err: err}
	}
	if stx.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("rootfs %s is not a directory", path)
	}
	info, err := mountByID(int(stx.Mnt_id), resolved)
	if err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	isRoot := info.Mountpoint == resolved
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		isRoot = stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
	}

	r := &Rootfs{Path: path, m: m}
	defer func() {
		if retErr != nil {
			_ = r.Release()
		}
	}()
	if hasOption(info.Options, "idmapped") {
		return r.prepared("the mount at %s is ID-mapped already", info.Mountpoint), nil
	}
	if info.FSType == "overlay" {
		if !isRoot {
			return nil, fmt.Errorf("rootfs %s is a directory inside the overlay mounted at %s: an overlay cannot be ID-mapped, and only an overlay mounted exactly at the rootfs can be re-mounted with ID-mapped layers",
				path, info.Mountpoint)
		}
		if err := r.overlay(resolved, info, &stx, userns, uid, gid, stagingDir); err != nil {
			return nil, fmt.Errorf("rootfs %s: %w", path, err)
		}
		return r, nil
	}
	if stx.Uid == uid && stx.Gid == gid {
		return r.prepared("the directory belongs to the mapped root %d:%d already", uid, gid), nil
	}
	if err := r.dir(resolved, userns, uid, gid, stagingDir); err != nil {
		return nil, fmt.Errorf("rootfs %s: %w", path, err)
	}
	return r, nil
}

// Release detaches the staging mounts and removes the staging directories
// PrepareRootfs made. A re-mounted overlay keeps its own references to its
// ID-mapped layers (overlayfs takes private clones of its layers' mounts),
// and a created container keeps its copy of the rootfs mount, so nothing
// that uses them notices. Idempotent; safe on a nil Rootfs.
func (r *Rootfs) Release() error {
	if r == nil {
		return nil
	}
	var errs []error
	var kept []string
	for i := len(r.mounts) - 1; i >= 0; i-- {
		err := Detach(r.mounts[i])
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			kept = append([]string{r.mounts[i]}, kept...)
		}
	}
	r.mounts = kept
	var keptDirs []string
	for i := len(r.dirs) - 1; i >= 0; i-- {
		// rmdir, never a recursive removal: a directory that is still a
		// mount point (EBUSY) or not empty keeps what is below it.
		err := unix.Rmdir(r.dirs[i])
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, &os.PathError{Op: "rmdir", Path: r.dirs[i], Err: err})
			keptDirs = append([]string{r.dirs[i]}, keptDirs...)
		}
	}
	r.dirs = keptDirs
	if len(errs) > 0 {
		return fmt.Errorf("release rootfs staging: %w", errors.Join(errs...))
	}
	return nil
}

func (r *Rootfs) prepared(format string, args ...any) *Rootfs {
	r.Kind = RootfsPrepared
	r.Reason = fmt.Sprintf(format, args...)
	return r
}

// dir clones the directory resolved ID-mapped onto stagingDir/rootfs.
func (r *Rootfs) dir(resolved string, userns *os.File, uid, gid uint32, stagingDir string) error {
	target := filepath.Join(stagingDir, "rootfs")
	if err := r.makeStaging(stagingDir); err != nil {
		return err
	}
	if err := r.mkdir(target, 0o755); err != nil {
		return err
	}
	if err := reachable(target, uid, gid); err != nil {
		return err
	}
	// Recursive, as runtimes bind the rootfs recursively.
	tree, err := Clone(resolved, userns, true)
	if err != nil {
		return err
	}
	err = Attach(tree, target)
	tree.Close()
	if err != nil {
		return err
	}
	r.mounts = append(r.mounts, target)
	r.Path, r.Kind = target, RootfsDir
	r.Reason = "directory " + resolved + " ID-mapped onto " + target
	return nil
}

// overlay re-mounts the overlay at resolved over ID-mapped clones of its lower
// layers.
func (r *Rootfs) overlay(resolved string, info *mountinfo.Info, root *unix.Statx_t, userns *os.File, uid, gid uint32, stagingDir string) error {
	orig, err := parseOverlayOptions(info.VFSOptions)
	if err != nil {
		return fmt.Errorf("overlay at %s: %w", resolved, err)
	}
	if o := orig.idmapOption(); o != "" {
		r.prepared("the overlay's options carry %s", o)
		return nil
	}
	for _, p := range orig.paths() {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("overlay at %s was mounted with the relative layer path %q (containers/storage does that for long lowerdir lists): cannot tell what it is relative to, so cannot re-mount it", resolved, p)
		}
	}
	if len(orig.layers) == 0 {
		return fmt.Errorf("overlay at %s: no lowerdir in its options %q", resolved, info.VFSOptions)
	}

	// What the layers are now: ID-mapped mounts, gone, or chowned.
	mounts, err := mountsByID()
	if err != nil {
		return err
	}
	var gone []string
	for _, l := range orig.layers {
		if l.path == "/" {
			// Layers given to fsconfig as file descriptors (Linux 6.13+:
			// detached mounts, such as ID-mapped clones) show as "/".
			gone = append(gone, `"/" (a layer passed as a file descriptor)`)
			continue
		}
		var stx unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, l.path, 0, unix.STATX_MNT_ID, &stx); err != nil {
			if errors.Is(err, unix.ENOENT) {
				gone = append(gone, l.path)
				continue
			}
			return &os.PathError{Op: "statx", Path: l.path, Err: err}
		}
		if mi := mounts[int(stx.Mnt_id)]; mi != nil && hasOption(mi.Options, "idmapped") {
			r.prepared("lower layer %s of the overlay is on the ID-mapped mount %s", l.path, mi.Mountpoint)
			return nil
		}
	}
	if len(gone) > 0 {
		if root.Uid == uid && root.Gid == gid {
			r.prepared("the overlay's lower layers %s are gone or unnamed (temporary ID-mapped mounts, as CRI-O and containerd 2 make and detach) and its root belongs to the mapped root %d:%d",
				strings.Join(gone, ", "), uid, gid)
			return nil
		}
		return fmt.Errorf("overlay at %s: lower layers %s no longer exist or cannot be named, so it cannot be re-mounted (and its root, owned by %d:%d, is not the mapped root's %d:%d)",
			resolved, strings.Join(gone, ", "), root.Uid, root.Gid, uid, gid)
	}
	var top unix.Stat_t
	if err := unix.Stat(orig.layers[0].path, &top); err != nil {
		return &os.PathError{Op: "stat", Path: orig.layers[0].path, Err: err}
	}
	if top.Uid == uid && top.Gid == gid {
		r.prepared("the overlay's top lower layer %s belongs to the mapped root %d:%d (layers chowned for the mapping)", orig.layers[0].path, uid, gid)
		return nil
	}

	// ID-mapped, read-only clones of the lower layers, where only host root
	// can reach them: they are the image's shared layers, and an ID-mapped
	// view makes their root-owned files the mapped root's.
	if err := r.makeStaging(stagingDir); err != nil {
		return err
	}
	lowersDir := filepath.Join(stagingDir, "lowers")
	if err := r.mkdir(lowersDir, 0o700); err != nil {
		return err
	}
	next := orig.clone()
	for i, l := range orig.layers {
		target := filepath.Join(lowersDir, strconv.Itoa(i))
		if err := r.mkdir(target, 0o700); err != nil {
			return err
		}
		// containers/storage (podman, CRI-O) names its layers by the
		// symlinks in overlay/l/: the kernel followed them at mount
		// time, so follow them here too (Clone refuses a symlink).
		src, err := filepath.EvalSymlinks(l.path)
		if err != nil {
			return fmt.Errorf("lower layer %d: %w", i, err)
		}
		if err := cloneReadOnly(src, target, userns); err != nil {
			return fmt.Errorf("lower layer %d: %w", i, err)
		}
		r.mounts = append(r.mounts, target)
		next.layers[i].path = target
	}
	if newOverlayTestOption != "" {
		next.opts = append(next.opts, newOverlayTestOption)
	}

	// The runtime mounts root.path from inside the user namespace: if the
	// mapped root cannot reach path, the new overlay is also bound where
	// it can. Decided (and the mount point made) before anything changes.
	bindTarget, unreachable := "", reachable(resolved, uid, gid)
	if unreachable != nil {
		bindTarget = filepath.Join(stagingDir, "rootfs")
		if err := reachable(bindTarget, uid, gid); err != nil {
			return fmt.Errorf("%v, and a bind on staging dir %s would not be either: %v", unreachable, bindTarget, err)
		}
		if err := r.mkdir(bindTarget, 0o755); err != nil {
			return err
		}
	}

	restoreOwners, err := chownUpper(orig, uid, gid, r.m)
	if err != nil {
		return err
	}
	flags := mountFlags(info)
	if err := unix.Unmount(resolved, 0); err != nil {
		restoreOwners()
		hint := ""
		if errors.Is(err, unix.EBUSY) {
			hint = " (busy: a process uses it or something is mounted below it)"
		}
		return fmt.Errorf("unmount the overlay at %s to re-mount it: %w%s", resolved, err, hint)
	}
	// restore puts the CRI runtime's overlay back after err.
	restore := func(err error) error {
		restoreOwners()
		if rerr := remountOverlay(resolved, info.Source, orig, flags); rerr != nil {
			return fmt.Errorf("%w; mounting the original overlay again failed too, %s is NOT mounted now: %v (original options: %s)",
				err, resolved, rerr, info.VFSOptions)
		}
		setPropagation(resolved, info)
		return fmt.Errorf("%w (the original overlay is mounted again)", err)
	}
	if err := remountOverlay(resolved, info.Source, next, flags); err != nil {
		return restore(fmt.Errorf("mount overlay with ID-mapped lower layers at %s: %w", resolved, err))
	}
	setPropagation(resolved, info)
	r.Kind = RootfsOverlay
	r.Reason = fmt.Sprintf("overlay at %s re-mounted over %d ID-mapped lower layers; upperdir and workdir owned by %d:%d", resolved, len(orig.layers), uid, gid)
	if bindTarget != "" {
		if err := unix.Mount(resolved, bindTarget, "", unix.MS_BIND, ""); err != nil {
			err = &os.PathError{Op: "bind mount " + resolved + " on", Path: bindTarget, Err: err}
			if uerr := unix.Unmount(resolved, 0); uerr != nil {
				return fmt.Errorf("%w; and unmounting the new overlay at %s failed: %v", err, resolved, uerr)
			}
			return restore(err)
		}
		r.mounts = append(r.mounts, bindTarget)
		r.Path = bindTarget
		r.Reason += "; bound on " + bindTarget + " because " + unreachable.Error()
	}
	return nil
}

// makeStaging makes stagingDir 0711 (traversable by the mapped root).
func (r *Rootfs) makeStaging(stagingDir string) error {
	if _, err := os.Lstat(stagingDir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(stagingDir), 0o711); err != nil {
			return err
		}
		return r.mkdir(stagingDir, 0o711)
	}
	return os.Chmod(stagingDir, 0o711)
}

// mkdir makes a staging directory that Release removes.
func (r *Rootfs) mkdir(dir string, mode os.FileMode) error {
	if err := os.Mkdir(dir, mode); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("staging directory %s exists (left over from an earlier run? detach what is mounted there and remove it): %w", dir, err)
		}
		return err
	}
	r.dirs = append(r.dirs, dir)
	return os.Chmod(dir, mode) // whatever the umask
}

// cloneReadOnly attaches an ID-mapped, read-only clone of src on target.
func cloneReadOnly(src, target string, userns *os.File) error {
	tree, err := Clone(src, userns, false)
	if err != nil {
		return err
	}
	defer tree.Close()
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	err = ignoringEINTR(func() error { return unix.MountSetattr(int(tree.Fd()), "", unix.AT_EMPTY_PATH, &attr) })
	if err != nil {
		return &os.PathError{Op: "mount_setattr MOUNT_ATTR_RDONLY", Path: src, Err: err}
	}
	return Attach(tree, target)
}

// OverlayUpper returns the upperdir of the overlay mounted exactly at path.
func OverlayUpper(path string) (string, bool) {
	// statfs first: most rootfs are no overlay, and mountinfo is not free.
	var st unix.Statfs_t
	if unix.Statfs(path, &st) != nil || st.Type != unix.OVERLAYFS_SUPER_MAGIC {
		return "", false
	}
	info, err := MountInfoOf(path)
	if err != nil || info.FSType != "overlay" || info.Mountpoint != filepath.Clean(path) {
		return "", false
	}
	c, err := parseOverlayOptions(info.VFSOptions)
	if err != nil || c.upper == "" {
		return "", false
	}
	return c.upper, true
}

// chownUpper gives upperdir, workdir and workdir's "work" and "index" (if
// present) to uid:gid, and returns what puts the old owners back. The first
// time (the upper does not belong to the mapped root yet), what the CRI
// runtime already put in the upper as the host's IDs (podman writes
// /etc/mtab there, copying /etc up as 0:0) is shifted into the mapping, as
// if the container had written it: only a few files, before the container
// ever ran, so the cost does not grow with the image.
func chownUpper(c *overlayConfig, uid, gid uint32, m mapping.Mapping) (restore func(), err error) {
	var done []prevOwner
	restore = func() {
		for i := len(done) - 1; i >= 0; i-- {
			_ = os.Lchown(done[i].path, done[i].uid, done[i].gid)
			if done[i].mode != 0 {
				_ = os.Chmod(done[i].path, done[i].mode)
			}
		}
	}
	if c.upper != "" {
		var st unix.Stat_t
		if err := unix.Stat(c.upper, &st); err == nil && st.Uid != uid {
			if done, err = shiftUpper(c.upper, m); err != nil {
				restore()
				return nil, err
			}
		}
	}
	var paths []string
	if c.upper != "" {
		paths = append(paths, c.upper)
	}
	if c.work != "" {
		paths = append(paths, c.work, filepath.Join(c.work, "work"), filepath.Join(c.work, "index"))
	}
	for i, p := range paths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			if i >= 2 && errors.Is(err, unix.ENOENT) {
				continue // work/work, work/index: made by the kernel
			}
			restore()
			return nil, &os.PathError{Op: "stat", Path: p, Err: err}
		}
		if st.Uid == uid && st.Gid == gid {
			continue
		}
		if err := os.Chown(p, int(uid), int(gid)); err != nil {
			restore()
			return nil, err
		}
		done = append(done, prevOwner{path: p, uid: int(st.Uid), gid: int(st.Gid)})
	}
	return restore, nil
}

// prevOwner is a path's owner (and mode, when a chown clears set-id bits) as it
// was before the shim changed it.
type prevOwner struct {
	path     string
	uid, gid int
	mode     os.FileMode
}

// shiftUpper moves the owners of everything below upper that are container
// IDs as the host sees them (inside the mapping's container range) to the
// host IDs the mapping gives them. IDs outside the container range, or
// already mapped, stay. Each inode is shifted once (hard links), set-id bits
// a chown clears are put back.
func shiftUpper(upper string, m mapping.Mapping) ([]prevOwner, error) {
	var done []prevOwner
	seen := map[[2]uint64]bool{}
	err := filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == upper {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
		key := [2]uint64{st.Dev, st.Ino}
		if seen[key] {
			return nil
		}
		seen[key] = true
		nu, okU := mapping.HostOf(m.UIDs, st.Uid)
		ng, okG := mapping.HostOf(m.GIDs, st.Gid)
		if !okU && !okG {
			return nil
		}
		if !okU {
			nu = st.Uid
		}
		if !okG {
			ng = st.Gid
		}
		o := prevOwner{path: p, uid: int(st.Uid), gid: int(st.Gid)}
		if err := os.Lchown(p, int(nu), int(ng)); err != nil {
			return err
		}
		if st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 && st.Mode&unix.S_IFMT == unix.S_IFREG {
			mode := os.FileMode(st.Mode & 0o777)
			if st.Mode&unix.S_ISUID != 0 {
				mode |= os.ModeSetuid
			}
			if st.Mode&unix.S_ISGID != 0 {
				mode |= os.ModeSetgid
			}
			if err := os.Chmod(p, mode); err != nil {
				return err
			}
			o.mode = mode
		}
		done = append(done, o)
		return nil
	})
	return done, err
}

// reachable tells whether uid:gid (no supplementary groups, no
// capabilities: the mapped root seen from the host) may search every
// directory above path. Mode bits only; ACLs are not read.
func reachable(path string, uid, gid uint32) error {
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			return &os.PathError{Op: "stat", Path: dir, Err: err}
		}
		bit := uint32(0o001)
		switch {
		case st.Uid == uid:
			bit = 0o100
		case st.Gid == gid:
			bit = 0o010
		}
		if st.Mode&bit == 0 {
			return fmt.Errorf("the mapped root %d:%d cannot reach %s: %s is mode %04o owned by %d:%d",
				uid, gid, path, dir, st.Mode&0o7777, st.Uid, st.Gid)
		}
		if dir == "/" {
			return nil
		}
	}
}

// mappedRoot returns the host IDs of container ID 0.
func mappedRoot(m mapping.Mapping) (uid, gid uint32, err error) {
	find := func(r []specs.LinuxIDMapping) (uint32, bool) {
		for _, x := range r {
			if x.ContainerID == 0 && x.Size > 0 {
				return x.HostID, true
			}
		}
		return 0, false
	}
	uid, okU := find(m.UIDs)
	gid, okG := find(m.GIDs)
	if !okU || !okG {
		return 0, 0, fmt.Errorf("mapping uid %q gid %q does not map container ID 0: no owner for the rootfs",
			mapping.String(m.UIDs), mapping.String(m.GIDs))
	}
	return uid, gid, nil
}

func hasOption(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// mountByID returns mount id from /proc/self/mountinfo.
func mountByID(id int, path string) (*mountinfo.Info, error) {
	infos, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) {
		return i.ID != id, i.ID == id
	})
	if err != nil {
		return nil, fmt.Errorf("mount of %s: %w", path, err)
	}
	if len(infos) == 0 {
		return nil, fmt.Errorf("mount of %s: mount ID %d not in /proc/self/mountinfo", path, id)
	}
	return infos[0], nil
}

// mountsByID reads /proc/self/mountinfo once.
func mountsByID() (map[int]*mountinfo.Info, error) {
	infos, err := mountinfo.GetMounts(nil)
	if err != nil {
		return nil, err
	}
	out := make(map[int]*mountinfo.Info, len(infos))
	for _, i := range infos {
		out[i.ID] = i
	}
	return out, nil
}

// mountFlags turns a mount's per-mount options and superblock read-only
// flag into mount(2) flags.
func mountFlags(info *mountinfo.Info) uintptr {
	var flags uintptr
	atime := false
	for _, o := range strings.Split(info.Options, ",") {
		switch o {
		case "ro":
			flags |= unix.MS_RDONLY
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "nodev":
			flags |= unix.MS_NODEV
		case "noexec":
			flags |= unix.MS_NOEXEC
		case "noatime":
			flags |= unix.MS_NOATIME
			atime = true
		case "relatime":
			flags |= unix.MS_RELATIME
			atime = true
		case "nodiratime":
			flags |= unix.MS_NODIRATIME
		case "nosymfollow":
			flags |= unix.MS_NOSYMFOLLOW
		}
	}
	if !atime {
		flags |= unix.MS_STRICTATIME
	}
	return flags
}

// setPropagation makes a re-mounted overlay private when the original was
// not shared (a new mount under a shared parent would be). Peer groups and
// slave relations are not recreated.
func setPropagation(target string, orig *mountinfo.Info) {
	if !strings.Contains(orig.Optional, "shared:") {
		_ = unix.Mount("", target, "", unix.MS_PRIVATE, "")
	}
}

// overlayLayer is one lower layer: a regular one or a data-only one.
type overlayLayer struct {
	path string // as the kernel resolves it: no escapes
	data bool
}

// overlayConfig is an overlay's superblock options, parsed from mountinfo.
type overlayConfig struct {
	readOnly    bool
	layers      []overlayLayer // top first, data-only layers last
	upper, work string         // no escapes
	opts        []string       // everything else, as shown (redirect_dir=on, index=off, volatile, ...)
}

func (c *overlayConfig) clone() *overlayConfig {
	n := *c
	n.layers = append([]overlayLayer(nil), c.layers...)
	n.opts = append([]string(nil), c.opts...)
	return &n
}

func (c *overlayConfig) paths() []string {
	var out []string
	for _, l := range c.layers {
		out = append(out, l.path)
	}
	if c.upper != "" {
		out = append(out, c.upper)
	}
	if c.work != "" {
		out = append(out, c.work)
	}
	return out
}

// idmapOption returns an option that asks for ID mapping (uidmap=, gidmap=,
// as mount helpers and fuse-overlayfs take them), if any.
func (c *overlayConfig) idmapOption() string {
	for _, o := range c.opts {
		k, _, _ := strings.Cut(o, "=")
		if strings.HasPrefix(k, "uidmap") || strings.HasPrefix(k, "gidmap") {
			return o
		}
	}
	return ""
}

// parseOverlayOptions parses an overlay's superblock options as mountinfo
// shows them (fourth-last field). The kernel (6.5+) shows each layer path
// as it was given: "lowerdir=" with ':' separators, "::" before data-only
// layers and '\' escaping ':' ',' and '\' in paths; or one "lowerdir+=" /
// "datadir+=" per layer with the raw path (fsconfig, Linux 6.8+). On top,
// seq_file escapes ' ', '\t', '\n', '\\' and ',' (and '=' in some values)
// as \ooo octal. LSM options such as context="a,b" quote their commas.
func parseOverlayOptions(vfs string) (*overlayConfig, error) {
	c := &overlayConfig{}
	for i, raw := range splitOptions(vfs) {
		o := unescapeOctal(raw)
		k, v, hasValue := strings.Cut(o, "=")
		switch {
		case i == 0 && (o == "rw" || o == "ro"):
			c.readOnly = o == "ro"
		case k == "lowerdir" && hasValue:
			layers, err := splitLowerdir(v)
			if err != nil {
				return nil, fmt.Errorf("lowerdir=%s: %w", v, err)
			}
			c.layers = append(c.layers, layers...)
		case (k == "lowerdir+" || k == "datadir+") && hasValue:
			if v == "" {
				return nil, fmt.Errorf("empty %s", k)
			}
			c.layers = append(c.layers, overlayLayer{path: v, data: k == "datadir+"})
		case k == "upperdir" && hasValue:
			c.upper = unescapeBackslash(v)
		case k == "workdir" && hasValue:
			c.work = unescapeBackslash(v)
		default:
			c.opts = append(c.opts, o)
		}
	}
	seenData := false
	for _, l := range c.layers {
		if !l.data && seenData {
			return nil, errors.New("a regular lower layer after a data-only one")
		}
		seenData = seenData || l.data
	}
	if len(c.layers) > 0 && c.layers[0].data {
		return nil, errors.New("only data-only lower layers")
	}
	return c, nil
}

// splitOptions splits on commas outside double quotes.
func splitOptions(s string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// splitLowerdir splits a "lowerdir=" value the way overlayfs does: ':'
// separates layers, "::" starts a data-only one, '\' escapes any byte.
func splitLowerdir(v string) ([]overlayLayer, error) {
	var out []overlayLayer
	var cur strings.Builder
	data := false
	emit := func() error {
		if cur.Len() == 0 {
			return errors.New("empty layer path")
		}
		out = append(out, overlayLayer{path: cur.String(), data: data})
		cur.Reset()
		return nil
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\':
			if i+1 < len(v) {
				i++
				cur.WriteByte(v[i])
			}
		case c == ':':
			if err := emit(); err != nil {
				return nil, err
			}
			if i+1 < len(v) && v[i+1] == ':' {
				i++
				data = true
			} else if data {
				return nil, errors.New("a regular lower layer after a data-only one")
			}
		default:
			cur.WriteByte(c)
		}
	}
	if err := emit(); err != nil {
		return nil, err
	}
	return out, nil
}

// unescapeOctal undoes seq_file's \ooo escapes.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }

// unescapeBackslash undoes overlayfs's '\' escapes (ovl_unescape).
func unescapeBackslash(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			if i == len(s) {
				break
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// escapeLayer escapes a path for "lowerdir=", "upperdir=" and "workdir=".
func escapeLayer(p string) string {
	if !strings.ContainsAny(p, `\:,`) {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if c := p[i]; c == '\\' || c == ':' || c == ',' {
			b.WriteByte('\\')
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// mountData renders the options for mount(2).
func (c *overlayConfig) mountData() string {
	var b strings.Builder
	b.WriteString("lowerdir=")
	for i, l := range c.layers {
		switch {
		case l.data:
			b.WriteString("::")
		case i > 0:
			b.WriteByte(':')
		}
		b.WriteString(escapeLayer(l.path))
	}
	if c.upper != "" {
		b.WriteString(",upperdir=" + escapeLayer(c.upper))
	}
	if c.work != "" {
		b.WriteString(",workdir=" + escapeLayer(c.work))
	}
	for _, o := range c.opts {
		b.WriteString("," + o)
	}
	return b.String()
}

// remountOverlay mounts the overlay c at target: by mount(2) when its options
// fit in the page mount(2) copies, else by fsopen/fsconfig with one
// "lowerdir+"/"datadir+" per layer (Linux 6.8+), which has no such limit.
func remountOverlay(target, source string, c *overlayConfig, flags uintptr) error {
	if c.work != "" && (hasOpt(c.opts, "volatile") || hasOpt(c.opts, "fsync=volatile")) {
		// A volatile overlay leaves work/work/incompat/volatile behind and
		// the kernel refuses the next mount while it is there ("overlay
		// with incompat feature 'volatile' cannot be mounted"). Linux 6.18
		// shows "volatile" as "fsync=volatile".
		_ = os.RemoveAll(filepath.Join(c.work, "work", "incompat", "volatile"))
	}
	if source == "" {
		source = "overlay"
	}
	data := c.mountData()
	mount := func() error {
		if len(data) >= os.Getpagesize() {
			return fsconfigOverlay(target, source, c, flags, len(data))
		}
		f := flags
		if c.readOnly {
			f |= unix.MS_RDONLY
		}
		if err := unix.Mount(source, target, "overlay", f, data); err != nil {
			return &os.PathError{Op: "mount overlay -o " + data, Path: target, Err: err}
		}
		return nil
	}
	// The overlay just unmounted lives on in every mount namespace copied
	// from the host's while it was mounted (a concurrent runtime call's
	// unshare -m, a container being set up), and with index=on the kernel
	// refuses another overlay on its upperdir (EBUSY) until those copies
	// are gone, within milliseconds: wait for that rather than fail and
	// leave the rootfs unmounted.
	delay, deadline := time.Millisecond, time.Now().Add(overlayBusyWait)
	for {
		err := mount()
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(delay)
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// overlayBusyWait bounds remountOverlay's wait for an upperdir in use.
const overlayBusyWait = 3 * time.Second

func hasOpt(opts []string, want string) bool {
	for _, o := range opts {
		if o == want {
			return true
		}
	}
	return false
}

func fsconfigOverlay(target, source string, c *overlayConfig, flags uintptr, dataLen int) (retErr error) {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("overlay options are %d bytes, more than the %d mount(2) takes, and fsopen failed: %w", dataLen, os.Getpagesize(), err)
	}
	defer unix.Close(fd)
	defer func() {
		if retErr != nil {
			if log := fsLog(fd); log != "" {
				retErr = fmt.Errorf("%w (kernel: %s)", retErr, log)
			}
		}
	}()
	set := func(key, value string) error {
		if err := unix.FsconfigSetString(fd, key, value); err != nil {
			return fmt.Errorf("fsconfig overlay %s=%s for %s: %w", key, value, target, err)
		}
		return nil
	}
	if err := set("source", source); err != nil {
		return err
	}
	for _, l := range c.layers {
		key := "lowerdir+"
		if l.data {
			key = "datadir+"
		}
		if err := set(key, l.path); err != nil { // taken as is: no escapes
			if errors.Is(err, unix.EINVAL) {
				err = fmt.Errorf("%w (overlay options are %d bytes, more than the %d mount(2) takes; lowerdir+ needs Linux 6.8)", err, dataLen, os.Getpagesize())
			}
			return err
		}
	}
	if c.upper != "" {
		if err := set("upperdir", escapeLayer(c.upper)); err != nil {
			return err
		}
	}
	if c.work != "" {
		if err := set("workdir", escapeLayer(c.work)); err != nil {
			return err
		}
	}
	for _, o := range c.opts {
		k, v, hasValue := strings.Cut(o, "=")
		if hasValue {
			if err := set(k, strings.Trim(v, `"`)); err != nil {
				return err
			}
		} else if err := unix.FsconfigSetFlag(fd, k); err != nil {
			return fmt.Errorf("fsconfig overlay %s for %s: %w", k, target, err)
		}
	}
	if c.readOnly {
		if err := unix.FsconfigSetFlag(fd, "ro"); err != nil {
			return fmt.Errorf("fsconfig overlay ro for %s: %w", target, err)
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("fsconfig create overlay for %s: %w", target, err)
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, mountAttrs(flags))
	if err != nil {
		return fmt.Errorf("fsmount overlay for %s: %w", target, err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return &os.PathError{Op: "move_mount overlay to", Path: target, Err: err}
	}
	return nil
}

// fsLog reads the messages an fs context fd holds.
func fsLog(fd int) string {
	var msgs []string
	buf := make([]byte, 512)
	for range 16 {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	return strings.Join(msgs, "; ")
}

// mountAttrs turns mount(2) per-mount flags into fsmount MOUNT_ATTR_ flags.
func mountAttrs(flags uintptr) int {
	var a int
	for _, f := range []struct {
		ms   uintptr
		attr int
	}{
		{unix.MS_RDONLY, unix.MOUNT_ATTR_RDONLY},
		{unix.MS_NOSUID, unix.MOUNT_ATTR_NOSUID},
		{unix.MS_NODEV, unix.MOUNT_ATTR_NODEV},
		{unix.MS_NOEXEC, unix.MOUNT_ATTR_NOEXEC},
		{unix.MS_NOATIME, unix.MOUNT_ATTR_NOATIME},
		{unix.MS_STRICTATIME, unix.MOUNT_ATTR_STRICTATIME},
		{unix.MS_NODIRATIME, unix.MOUNT_ATTR_NODIRATIME},
		{unix.MS_NOSYMFOLLOW, unix.MOUNT_ATTR_NOSYMFOLLOW},
	} {
		if flags&f.ms != 0 {
			a |= f.attr
		}
	}
	return a
}
