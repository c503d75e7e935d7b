package shim

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/config"
	"github.com/userns-shim/userns-shim/pkg/failpoint"
	"github.com/userns-shim/userns-shim/pkg/idmount"
	"github.com/userns-shim/userns-shim/pkg/mapping"
	"github.com/userns-shim/userns-shim/pkg/nsexec"
	"github.com/userns-shim/userns-shim/pkg/spec"
	"github.com/userns-shim/userns-shim/pkg/state"
)

// Mount treatments recorded for `shim inspect`.
const (
	TreatShim        = "idmapped by the shim"
	TreatRuntime     = "idmap requested from the runtime"
	TreatSkipped     = "left alone"
	TreatUnsupported = "left unmapped: filesystem without ID-mapped mount support"
	TreatUnmapped    = "left unmapped: its ID-mapping request removed"
)

// Staging holds the host mounts the shim made for one create. They exist
// only until the runtime's create returns: Release detaches them. They all
// sit on one tmpfs mounted on dir, so that Release is a single detach of
// that tree: each umount(2) costs the kernel 0.07 to 2 ms here (it waits for
// an RCU grace period), one per volume and image layer.
type Staging struct {
	dir     string
	mounted bool // the tmpfs is on dir
	targets []string
	rootfs  *idmount.Rootfs
}

// stagingDir is where the ID-mapped copies of container id's mounts wait for
// the runtime (see state.Dir.Staging).
func (s *Shim) stagingDir(id string) string {
	return filepath.Join(s.Cfg.StateDir, "staging", id)
}

// ensure makes dir and mounts the staging tmpfs on it, once.
func (st *Staging) ensure() error {
	if st.mounted {
		return nil
	}
	if err := os.Mkdir(st.dir, 0o711); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("staging dir: %w", err)
	}
	// 0711: the mapped root must traverse it to reach a staged rootfs.
	if err := unix.Mount("userns-shim", st.dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0711,size=64k"); err != nil {
		return &os.PathError{Op: "mount tmpfs on", Path: st.dir, Err: err}
	}
	st.mounted = true
	return nil
}

func (st *Staging) newTarget(dir bool) (string, error) {
	if err := st.ensure(); err != nil {
		return "", err
	}
	p := filepath.Join(st.dir, strconv.Itoa(len(st.targets)))
	var err error
	if dir {
		err = os.Mkdir(p, 0o711)
	} else {
		err = os.WriteFile(p, nil, 0o400)
	}
	if err != nil {
		return "", fmt.Errorf("staging target: %w", err)
	}
	st.targets = append(st.targets, p)
	return p, nil
}

// Release detaches every staging mount and removes the staging directory.
// It keeps going after an error and reports them all. Removal is never
// recursive: a target still mounted (its detach failed) holds a volume,
// and must not be emptied.
func (st *Staging) Release() error {
	if st == nil {
		return nil
	}
	var errs []error
	treeGone := false
	if st.mounted {
		// MNT_DETACH takes the whole tree: the tmpfs, the volumes and the
		// rootfs staged on it.
		if err := idmount.Detach(st.dir); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		} else {
			st.mounted, st.targets, treeGone = false, nil, true
		}
	}
	// What the tree did not take (after a failed detach), one by one.
	if !treeGone {
		errs = append(errs, st.rootfs.Release())
	}
	for _, t := range st.targets {
		if err := idmount.Detach(t); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		if err := os.Remove(t); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	st.targets = nil
	if err := os.Remove(st.dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// keepRootfsPath leaves an empty directory where the ID-mapped rootfs was
// staged, for the container's life: runc starts `runc init` for an exec with
// the rootfs path as its working directory, and fails if it is gone. It
// holds no mount; forget removes it with the container's record.
func (st *Staging) keepRootfsPath(specRoot string) error {
	if st.rootfs == nil || !strings.HasPrefix(specRoot, st.dir+"/") {
		return nil
	}
	return os.MkdirAll(specRoot, 0o711)
}

// forget removes what the shim keeps of container id once it is gone: its
// place in its pod, its record, its create lock, its staging directory
// with any mount a killed create left there (removeStaging: never a
// recursive removal), and the temporary file of a config.json write that
// was killed, in the bundle its record names.
func (s *Shim) forget(id string) {
	failpoint.Hit(failpoint.Forget)
	if rec, err := s.State.Load(id); err == nil {
		if err := removeWriteTemps(rec.Bundle); err != nil {
			s.Log.WithError(err).Warn("remove temporary files from the bundle")
		}
	}
	if err := s.leavePod(id); err != nil {
		s.Log.WithError(err).Warn("leave pod")
	}
	failpoint.Hit(failpoint.LeftPod)
	if err := s.State.Remove(id); err != nil {
		s.Log.WithError(err).Warn("remove record")
	}
	s.State.RemoveCreateLock(id)
	if err := removeStaging(s.stagingDir(id)); err != nil {
		s.Log.WithError(err).Warn("remove staging directory")
	}
}

// used reports whether anything is staged.
func (st *Staging) used() bool { return st.mounted || len(st.targets) > 0 || st.rootfs != nil }

// idmapRootfs makes the rootfs usable by the container's mapped root (see
// idmount.PrepareRootfs) and points root.path at the result.
func (s *Shim) idmapRootfs(sp *specs.Spec, bundle string, d Decision, users *nsexec.UserNSCache, st *Staging) (*state.RootfsRecord, error) {
	if sp.Root == nil || sp.Root.Path == "" {
		return nil, nil
	}
	root := sp.Root.Path
	if !filepath.IsAbs(root) {
		root = filepath.Join(bundle, root)
	}
	ns, err := users.Get(d.Mapping)
	if err != nil {
		return nil, err
	}
	if err := st.ensure(); err != nil {
		return nil, err
	}
	r, err := idmount.PrepareRootfs(root, ns, d.Mapping, st.dir)
	if err != nil {
		return nil, fmt.Errorf("rootfs %s: %w", root, err)
	}
	st.rootfs = r
	failpoint.Hit(failpoint.RootfsStaged)
	rec := &state.RootfsRecord{Path: root, Kind: r.Kind, Treatment: TreatShim, Reason: r.Reason}
	if r.Kind == idmount.RootfsPrepared {
		rec.Treatment = TreatSkipped
		return rec, nil
	}
	if r.Path != root {
		sp.Root.Path = r.Path
	}
	return rec, nil
}

// idmapMounts gives every host-backed mount of the spec an ID mapping, as the
// idmap key says, and returns what it did to each. On error every staging
// mount made so far is gone.
func (s *Shim) idmapMounts(sp *specs.Spec, d Decision, users *nsexec.UserNSCache, st *Staging) (recs []state.MountRecord, err error) {
	defer func() {
		if err != nil {
			err = errors.Join(err, st.Release())
		}
	}()
	for _, c := range spec.ChooseMounts(sp, d.Mapping) {
		m := &sp.Mounts[c.Index]
		rec := state.MountRecord{Destination: m.Destination, Source: m.Source}
		if c.Skip == "" {
			c.Skip, err = s.idmapMount(m, c.Mapping, users, st, &rec)
			if err != nil {
				return nil, err
			}
		}
		if c.Skip != "" {
			rec.Treatment, rec.Reason = TreatSkipped, c.Skip
			if c.NoIDMap && spec.DropIDMapRequest(m) {
				rec.Treatment = TreatUnmapped // a change: config.json is rewritten
			}
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// idmapMount maps one host-backed mount. skip is a reason to leave it alone
// that is not an error.
func (s *Shim) idmapMount(m *specs.Mount, mp mapping.Mapping, users *nsexec.UserNSCache, st *Staging, rec *state.MountRecord) (skip string, err error) {
	var fi unix.Stat_t
	if err := unix.Lstat(m.Source, &fi); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return "source does not exist (the runtime decides)", nil
		}
		return "", fmt.Errorf("mount %s: %w", m.Destination, &os.PathError{Op: "lstat", Path: m.Source, Err: err})
	}
	switch fi.Mode & unix.S_IFMT {
	case unix.S_IFCHR, unix.S_IFBLK:
		return "device node", spec.CheckSpecialSource(*m, "a device node")
	case unix.S_IFLNK:
		return "", fmt.Errorf("mount %s: source %s is a symlink: the shim will not ID-map a path that may lead elsewhere; bind the real path", m.Destination, m.Source)
	case unix.S_IFDIR, unix.S_IFREG:
	default:
		return "neither a directory nor a regular file", spec.CheckSpecialSource(*m, "neither a directory nor a regular file")
	}
	if s.Cfg.IDMap == config.IDMapRuntime {
		spec.RequestRuntimeIDMap(m, mp)
		rec.Treatment = TreatRuntime
		rec.Mapping = &mp
		return "", nil
	}
	ns, err := users.Get(mp)
	if err != nil {
		return "", err
	}
	tree, err := idmount.Clone(m.Source, ns, spec.IsRecursiveBind(*m))
	if idmount.IsUnsupported(err) {
		return "", s.unsupported(m, rec, err)
	}
	if err != nil {
		return "", fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	defer tree.Close()
	if spec.IsReadOnly(*m) {
		if err := idmount.SetReadOnly(tree, spec.IsRecursiveBind(*m)); err != nil {
			return "", fmt.Errorf("mount %s: %w", m.Destination, err)
		}
	}
	target, err := st.newTarget(fi.Mode&unix.S_IFMT == unix.S_IFDIR)
	if err != nil {
		return "", err
	}
	if err := idmount.Attach(tree, target); err != nil {
		return "", fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	failpoint.Hit(failpoint.StagingMount)
	spec.StripIDMap(m)
	m.Source = target
	rec.Treatment, rec.Staging, rec.Mapping = TreatShim, target, &mp
	return "", nil
}

// unsupported handles a mount whose filesystem cannot be ID-mapped, as
// on_unsupported_fs says: a refusal that names the volume, or a warning and
// the mount left unmapped.
func (s *Shim) unsupported(m *specs.Mount, rec *state.MountRecord, cause error) error {
	fstype := "unknown"
	if info, err := idmount.MountInfoOf(m.Source); err == nil {
		fstype = info.FSType
	}
	what := fmt.Sprintf("mount %s (host source %s, filesystem %s)", m.Destination, m.Source, fstype)
	if plugin, name, ok := spec.KubeletVolume(s.Cfg.KubeletRoot, m.Source); ok {
		what = fmt.Sprintf("volume %q (%s) at %s (host source %s, filesystem %s)", name, plugin, m.Destination, m.Source, fstype)
	}
	if s.Cfg.OnUnsupportedFS == config.UnsupportedFail {
		return fmt.Errorf("%s does not support ID-mapped mounts: %v; move the volume to a filesystem that does (ext4, xfs, btrfs, tmpfs on Linux >= 6.3), list its path in the %s annotation, or set on_unsupported_fs = \"warn\"",
			what, cause, mapping.AnnotationNoIDMap)
	}
	s.Log.Warnf("%s does not support ID-mapped mounts; leaving it unmapped (on_unsupported_fs = \"warn\"): files there show as the overflow ID 65534 unless they are owned by the pod's host range", what)
	spec.StripIDMap(m)
	rec.Treatment, rec.Reason = TreatUnsupported, fstype
	return nil
}
