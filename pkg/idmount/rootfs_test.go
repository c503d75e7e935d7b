package idmount

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/mapping"
)

// makeImage lays out a small image: etc/ and root/ (0700) and etc/passwd
// owned by 0, home/user and home/user/file owned by 1000.
func makeImage(t testing.TB, dir string) {
	t.Helper()
	for _, d := range []struct {
		path string
		mode os.FileMode
		id   int
	}{{"", 0o755, 0}, {"etc", 0o755, 0}, {"root", 0o700, 0}, {"home", 0o755, 0}, {"home/user", 0o755, 1000}} {
		p := filepath.Join(dir, d.path)
		require.NoError(t, os.MkdirAll(p, d.mode))
		require.NoError(t, os.Chmod(p, d.mode))
		require.NoError(t, os.Chown(p, d.id, d.id))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "home/user/file"), []byte("mine"), 0o644))
	require.NoError(t, os.Chown(filepath.Join(dir, "home/user/file"), 1000, 1000))
}

func assertOwner(t *testing.T, path string, id uint32) {
	t.Helper()
	uid, gid := owner(t, path)
	assert.Equal(t, [2]uint32{id, id}, [2]uint32{uid, gid}, "owner of %s", path)
}

// assertContainerView checks, from the host, what the container's root
// sees through root: image files owned by the mapped IDs, and /etc and
// /root writable by the mapped root.
func assertContainerView(t *testing.T, root, suffix string) {
	t.Helper()
	assertOwner(t, filepath.Join(root, "etc/passwd"), hostBase)
	assertOwner(t, filepath.Join(root, "root"), hostBase)
	assertOwner(t, filepath.Join(root, "home/user/file"), hostBase+1000)
	for _, p := range []string{"etc/new" + suffix, "root/new" + suffix, "new" + suffix} {
		require.NoError(t, touchAs(hostBase, filepath.Join(root, p)))
	}
	require.NoError(t, touchAs(hostBase+1000, filepath.Join(root, "home/user/new"+suffix)))
}

func releaseOnCleanup(t *testing.T, r *Rootfs) {
	t.Cleanup(func() { assert.NoError(t, r.Release()) })
}

func TestRootfsDir(t *testing.T) {
	needRoot(t)
	base := baseDir(t)
	rootfs := filepath.Join(base, "rootfs")
	makeImage(t, rootfs)
	staging := filepath.Join(base, "staging")

	r, err := PrepareRootfs(rootfs, userNS(t), podMapping, staging)
	require.NoError(t, err)
	releaseOnCleanup(t, r)
	t.Logf("kind %s, path %s: %s", r.Kind, r.Path, r.Reason)
	assert.Equal(t, RootfsDir, r.Kind)
	assert.Equal(t, filepath.Join(staging, "rootfs"), r.Path)
	st, err := os.Stat(staging)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o711), st.Mode().Perm(), "the mapped root can traverse the staging dir")
	info, err := MountInfoOf(r.Path)
	require.NoError(t, err)
	assert.Equal(t, r.Path, info.Mountpoint)
	assert.Contains(t, info.Options, "idmapped")

	assertContainerView(t, r.Path, "")
	// Container root's files land on disk as uid 0, uid 1000's as 1000;
	// the image keeps its owners.
	assertOwner(t, filepath.Join(rootfs, "etc/new"), 0)
	assertOwner(t, filepath.Join(rootfs, "root/new"), 0)
	assertOwner(t, filepath.Join(rootfs, "home/user/new"), 1000)
	assertOwner(t, filepath.Join(rootfs, "etc/passwd"), 0)
	assertOwner(t, filepath.Join(rootfs, "home/user/file"), 1000)

	require.NoError(t, r.Release())
	assert.Empty(t, mountsUnder(t, staging), "no staging mount left")
	assert.NoDirExists(t, staging)
	assert.NoError(t, r.Release(), "idempotent")
	assert.DirExists(t, filepath.Join(rootfs, "etc"), "the rootfs itself is untouched")
}

type overlayFixture struct {
	lowers              []string // top first
	upper, work, merged string
	data                string // mount(2) options
	flags               uintptr
}

// newOverlay mounts an overlay of two lower layers (top: etc/motd; base:
// makeImage) below dir, as a CRI runtime would. Layer names carry the
// characters overlayfs escapes.
func newOverlay(t *testing.T, dir, opts string, flags uintptr) *overlayFixture {
	t.Helper()
	f := &overlayFixture{
		lowers: []string{filepath.Join(dir, "top:layer"), filepath.Join(dir, "base,layer x")},
		upper:  filepath.Join(dir, "upper"), work: filepath.Join(dir, "work"), merged: filepath.Join(dir, "merged"),
		flags: flags,
	}
	makeImage(t, f.lowers[1])
	require.NoError(t, os.MkdirAll(filepath.Join(f.lowers[0], "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(f.lowers[0], "etc/motd"), []byte("hello"), 0o644))
	for _, d := range []string{f.upper, f.work, f.merged} {
		require.NoError(t, os.Mkdir(d, 0o755))
	}
	f.data = fmt.Sprintf("lowerdir=%s:%s,upperdir=%s,workdir=%s%s",
		escapeLayer(f.lowers[0]), escapeLayer(f.lowers[1]), f.upper, f.work, opts)
	f.mount(t)
	return f
}

func (f *overlayFixture) mount(t testing.TB) {
	t.Helper()
	require.NoError(t, unix.Mount("overlay", f.merged, "overlay", f.flags, f.data))
	t.Cleanup(func() {
		for Detach(f.merged) == nil {
		}
	})
}

func TestRootfsOverlay(t *testing.T) {
	needRoot(t)
	for _, reachableRoot := range []bool{true, false} {
		t.Run("reachable="+strconv.FormatBool(reachableRoot), func(t *testing.T) {
			base := baseDir(t)
			dir := base
			if !reachableRoot {
				// Like podman's storage or containerd's bundles: 0700.
				dir = filepath.Join(base, "private")
				require.NoError(t, os.Mkdir(dir, 0o700))
			}
			f := newOverlay(t, dir, ",redirect_dir=on,index=on,volatile", unix.MS_NOSUID|unix.MS_NODEV)
			before, err := MountInfoOf(f.merged)
			require.NoError(t, err)
			t.Logf("CRI runtime's overlay: %s %s", before.Options, before.VFSOptions)
			staging := filepath.Join(base, "staging")

			start := time.Now()
			r, err := PrepareRootfs(f.merged, userNS(t), podMapping, staging)
			took := time.Since(start)
			require.NoError(t, err)
			releaseOnCleanup(t, r)
			t.Logf("kind %s, path %s (%v): %s", r.Kind, r.Path, took, r.Reason)
			assert.Equal(t, RootfsOverlay, r.Kind)
			if reachableRoot {
				assert.Equal(t, f.merged, r.Path)
			} else {
				assert.Equal(t, filepath.Join(staging, "rootfs"), r.Path)
				assert.Contains(t, r.Reason, "cannot reach")
			}

			// From the host: still an overlay at the same path, same mount
			// flags and options, lower layers now the ID-mapped clones.
			after, err := MountInfoOf(f.merged)
			require.NoError(t, err)
			t.Logf("re-mounted overlay: %s %s", after.Options, after.VFSOptions)
			assert.Equal(t, "overlay", after.FSType)
			assert.Equal(t, f.merged, after.Mountpoint)
			assert.Equal(t, before.Options, after.Options)
			assert.Equal(t, before.Source, after.Source)
			oldCfg, err := parseOverlayOptions(before.VFSOptions)
			require.NoError(t, err)
			newCfg, err := parseOverlayOptions(after.VFSOptions)
			require.NoError(t, err)
			assert.Equal(t, oldCfg.opts, newCfg.opts, "other options kept")
			assert.Equal(t, []overlayLayer{{path: filepath.Join(staging, "lowers/0")}, {path: filepath.Join(staging, "lowers/1")}}, newCfg.layers)
			assert.Equal(t, [2]string{f.upper, f.work}, [2]string{newCfg.upper, newCfg.work})
			for i, l := range newCfg.layers {
				info, err := MountInfoOf(l.path)
				require.NoError(t, err)
				assert.Contains(t, info.Options, "idmapped", "lower %d", i)
				assert.Contains(t, strings.Split(info.Options, ","), "ro", "lower %d is read-only", i)
			}
			st, err := os.Stat(filepath.Join(staging, "lowers"))
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o700), st.Mode().Perm(), "the mapped root cannot reach the layers' clones")
			err = os.WriteFile(filepath.Join(staging, "lowers/1/etc/x"), nil, 0o644)
			assert.ErrorIs(t, err, unix.EROFS, "the layers' clones are read-only")

			// What the container's root sees and does.
			assertContainerView(t, r.Path, "")
			assertOwner(t, filepath.Join(r.Path, "etc/motd"), hostBase)
			assertOwner(t, r.Path, hostBase)
			require.NoError(t, touchAs(hostBase, filepath.Join(r.Path, "etc/passwd")), "copy-up")

			// On disk: the upper holds host IDs (the upper is not
			// ID-mapped); the layers keep their owners.
			for _, p := range []string{"etc/new", "root/new", "new", "etc/passwd", "etc", "root"} {
				assertOwner(t, filepath.Join(f.upper, p), hostBase)
			}
			assertOwner(t, filepath.Join(f.upper, "home/user/new"), hostBase+1000)
			assertOwner(t, f.upper, hostBase)
			assertOwner(t, f.work, hostBase)
			assertOwner(t, filepath.Join(f.lowers[1], "etc/passwd"), 0)
			assertOwner(t, filepath.Join(f.lowers[1], "root"), 0)
			assertOwner(t, filepath.Join(f.lowers[1], "home/user/file"), 1000)
			assertOwner(t, filepath.Join(f.lowers[0], "etc/motd"), 0)
			assert.NoFileExists(t, filepath.Join(f.lowers[1], "etc/new"))

			// The staging clones go; the overlay keeps its own references.
			require.NoError(t, r.Release())
			assert.Empty(t, mountsUnder(t, staging), "no staging mount left")
			assert.NoDirExists(t, staging)
			assert.NoError(t, r.Release(), "idempotent")
			data, err := os.ReadFile(filepath.Join(f.merged, "home/user/file"))
			require.NoError(t, err)
			assert.Equal(t, "mine", string(data), "the overlay still reads its lower layers")
			data, err = os.ReadFile(filepath.Join(f.merged, "etc/motd"))
			require.NoError(t, err)
			assert.Equal(t, "hello", string(data))
			assertOwner(t, filepath.Join(f.merged, "home/user/file"), hostBase+1000)
			assertOwner(t, filepath.Join(f.merged, "root"), hostBase)
			if reachableRoot {
				assertContainerView(t, f.merged, "-after-release")
			}
			require.NoError(t, os.WriteFile(filepath.Join(f.merged, "root/by-host-root"), []byte("x"), 0o644), "still writable")

			// The CRI runtime's teardown.
			require.NoError(t, unix.Unmount(f.merged, 0))
			assert.Empty(t, mountsUnder(t, base), "nothing left mounted")
		})
	}
}

func TestRootfsPrepared(t *testing.T) {
	needRoot(t)

	t.Run("idmapped bind", func(t *testing.T) {
		base := baseDir(t)
		src, path := filepath.Join(base, "src"), filepath.Join(base, "rootfs")
		makeImage(t, src)
		require.NoError(t, os.Mkdir(path, 0o755))
		unmountOnCleanup(t, path)
		tree, err := Clone(src, userNS(t), false)
		require.NoError(t, err)
		require.NoError(t, Attach(tree, path))
		tree.Close()

		staging := filepath.Join(base, "staging")
		r, err := PrepareRootfs(path, userNS(t), podMapping, staging)
		require.NoError(t, err)
		t.Log(r.Reason)
		assert.Equal(t, RootfsPrepared, r.Kind)
		assert.Equal(t, path, r.Path)
		assert.Contains(t, r.Reason, "ID-mapped")
		assert.NoDirExists(t, staging, "nothing staged")
		assert.NoError(t, r.Release())
		assert.Equal(t, []string{path}, mountsUnder(t, base), "left alone")
	})

	t.Run("overlay over ID-mapped layers", func(t *testing.T) {
		base := baseDir(t)
		lower, mapped := filepath.Join(base, "lower"), filepath.Join(base, "mapped")
		makeImage(t, lower)
		require.NoError(t, os.Mkdir(mapped, 0o755))
		unmountOnCleanup(t, mapped)
		tree, err := Clone(lower, userNS(t), false)
		require.NoError(t, err)
		require.NoError(t, Attach(tree, mapped))
		tree.Close()
		f := &overlayFixture{upper: filepath.Join(base, "upper"), work: filepath.Join(base, "work"), merged: filepath.Join(base, "merged")}
		for _, d := range []string{f.upper, f.work, f.merged} {
			require.NoError(t, os.Mkdir(d, 0o755))
		}
		f.data = "lowerdir=" + mapped + ",upperdir=" + f.upper + ",workdir=" + f.work
		f.mount(t)

		r, err := PrepareRootfs(f.merged, userNS(t), podMapping, filepath.Join(base, "staging"))
		require.NoError(t, err)
		t.Log(r.Reason)
		assert.Equal(t, RootfsPrepared, r.Kind)
		assert.Equal(t, f.merged, r.Path)
		assert.Contains(t, r.Reason, "ID-mapped mount")
		assertOwner(t, f.upper, 0)
	})

	t.Run("prepared by PrepareRootfs", func(t *testing.T) {
		base := baseDir(t)
		f := newOverlay(t, base, "", 0)
		r, err := PrepareRootfs(f.merged, userNS(t), podMapping, filepath.Join(base, "staging"))
		require.NoError(t, err)
		releaseOnCleanup(t, r)
		require.Equal(t, RootfsOverlay, r.Kind)

		// Before Release the layers are ID-mapped mounts; after it they
		// are gone and the root belongs to the mapped root, as with the
		// temporary ID-mapped layers of CRI-O and containerd 2.
		again, err := PrepareRootfs(f.merged, userNS(t), podMapping, filepath.Join(base, "staging2"))
		require.NoError(t, err)
		t.Log(again.Reason)
		assert.Equal(t, RootfsPrepared, again.Kind)
		assert.Contains(t, again.Reason, "ID-mapped mount")
		require.NoError(t, r.Release())
		again, err = PrepareRootfs(f.merged, userNS(t), podMapping, filepath.Join(base, "staging2"))
		require.NoError(t, err)
		t.Log(again.Reason)
		assert.Equal(t, RootfsPrepared, again.Kind)
		assert.Contains(t, again.Reason, "are gone")
		assertOwner(t, filepath.Join(f.merged, "etc/passwd"), hostBase)

		// Gone layers under a root the mapping does not own: an error.
		other := mapping.Mapping{
			UIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 300000, Size: 65536}},
			GIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 300000, Size: 65536}},
		}
		_, err = PrepareRootfs(f.merged, userNS(t), other, filepath.Join(base, "staging3"))
		assert.ErrorContains(t, err, "no longer exist")
		assert.NoDirExists(t, filepath.Join(base, "staging3"))
	})

	t.Run("overlay mounted from layer fds", func(t *testing.T) {
		base := baseDir(t)
		lower := filepath.Join(base, "lower")
		makeImage(t, lower)
		upper, work, merged := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
		for _, d := range []string{upper, work, merged} {
			require.NoError(t, os.Mkdir(d, 0o755))
		}
		require.NoError(t, os.Chown(upper, hostBase, hostBase))
		tree, err := Clone(lower, userNS(t), false)
		require.NoError(t, err)
		defer tree.Close()
		fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(fd)
		if err := unix.FsconfigSetFd(fd, "lowerdir+", int(tree.Fd())); err != nil {
			t.Skipf("this kernel takes no layer fds: %v", err)
		}
		require.NoError(t, unix.FsconfigSetString(fd, "upperdir", upper))
		require.NoError(t, unix.FsconfigSetString(fd, "workdir", work))
		require.NoError(t, unix.FsconfigCreate(fd))
		mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(mfd)
		require.NoError(t, unix.MoveMount(mfd, "", unix.AT_FDCWD, merged, unix.MOVE_MOUNT_F_EMPTY_PATH))
		unmountOnCleanup(t, merged)
		info, err := MountInfoOf(merged)
		require.NoError(t, err)
		t.Log(info.VFSOptions)

		r, err := PrepareRootfs(merged, userNS(t), podMapping, filepath.Join(base, "staging"))
		require.NoError(t, err)
		t.Log(r.Reason)
		assert.Equal(t, RootfsPrepared, r.Kind)
		assert.Contains(t, r.Reason, "file descriptor")

		require.NoError(t, os.Chown(upper, 0, 0))
		_, err = PrepareRootfs(merged, userNS(t), podMapping, filepath.Join(base, "staging"))
		assert.ErrorContains(t, err, "cannot be named", "never re-mounted over the host's /")
		assert.NoDirExists(t, filepath.Join(base, "staging"))
	})

	t.Run("chowned layers", func(t *testing.T) {
		base := baseDir(t)
		f := newOverlay(t, base, "", 0)
		require.NoError(t, unix.Unmount(f.merged, 0))
		for _, l := range append(f.lowers, f.upper) {
			out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", hostBase, hostBase), l).CombinedOutput()
			require.NoError(t, err, "%s", out)
		}
		f.mount(t)
		r, err := PrepareRootfs(f.merged, userNS(t), podMapping, filepath.Join(base, "staging"))
		require.NoError(t, err)
		t.Log(r.Reason)
		assert.Equal(t, RootfsPrepared, r.Kind)
		assert.Contains(t, r.Reason, "chowned")
	})

	t.Run("chowned directory", func(t *testing.T) {
		base := baseDir(t)
		rootfs := filepath.Join(base, "rootfs")
		makeImage(t, rootfs)
		require.NoError(t, os.Chown(rootfs, hostBase, hostBase))
		r, err := PrepareRootfs(rootfs, userNS(t), podMapping, filepath.Join(base, "staging"))
		require.NoError(t, err)
		t.Log(r.Reason)
		assert.Equal(t, RootfsPrepared, r.Kind)
		assert.Equal(t, rootfs, r.Path)
	})
}

func TestRootfsErrors(t *testing.T) {
	needRoot(t)
	base := baseDir(t)
	f := newOverlay(t, base, "", 0)

	_, err := PrepareRootfs(filepath.Join(f.merged, "etc"), userNS(t), podMapping, filepath.Join(base, "staging"))
	assert.ErrorContains(t, err, "inside the overlay mounted at "+f.merged)

	noRoot := mapping.Mapping{
		UIDs: []specs.LinuxIDMapping{{ContainerID: 1, HostID: hostBase, Size: 10}},
		GIDs: []specs.LinuxIDMapping{{ContainerID: 1, HostID: hostBase, Size: 10}},
	}
	_, err = PrepareRootfs(f.merged, userNS(t), noRoot, filepath.Join(base, "staging"))
	assert.ErrorContains(t, err, "does not map container ID 0")

	// A directory rootfs whose staging dir the mapped root cannot reach.
	private := filepath.Join(base, "private")
	require.NoError(t, os.Mkdir(private, 0o700))
	rootfs := filepath.Join(base, "rootfs")
	makeImage(t, rootfs)
	_, err = PrepareRootfs(rootfs, userNS(t), podMapping, filepath.Join(private, "staging"))
	assert.ErrorContains(t, err, "cannot reach")
	assert.NoDirExists(t, filepath.Join(private, "staging"))

	// A rootfs that is a symlink (to a good rootfs) is refused, nothing made.
	link := filepath.Join(base, "rootfs-link")
	require.NoError(t, os.Symlink(rootfs, link))
	_, err = PrepareRootfs(link, userNS(t), podMapping, filepath.Join(base, "staging-link"))
	assert.ErrorContains(t, err, "it is a symlink")
	assert.NoDirExists(t, filepath.Join(base, "staging-link"))

	// A stale staging dir is not reused.
	stale := filepath.Join(base, "stale")
	require.NoError(t, os.MkdirAll(filepath.Join(stale, "rootfs"), 0o755))
	_, err = PrepareRootfs(rootfs, userNS(t), podMapping, stale)
	assert.ErrorContains(t, err, "left over")
	assert.DirExists(t, filepath.Join(stale, "rootfs"), "not ours to remove")
}

func TestRootfsRestoreOnFailure(t *testing.T) {
	needRoot(t)
	base := baseDir(t)
	f := newOverlay(t, base, ",redirect_dir=on", unix.MS_NOSUID|unix.MS_NOEXEC)
	before, err := MountInfoOf(f.merged)
	require.NoError(t, err)
	staging := filepath.Join(base, "staging")

	newOverlayTestOption = "no_such_option"
	t.Cleanup(func() { newOverlayTestOption = "" })
	_, err = PrepareRootfs(f.merged, userNS(t), podMapping, staging)
	t.Log(err)
	require.Error(t, err)
	assert.ErrorIs(t, err, unix.EINVAL)
	assert.ErrorContains(t, err, "original overlay is mounted again")

	after, err := MountInfoOf(f.merged)
	require.NoError(t, err)
	assert.Equal(t, f.merged, after.Mountpoint)
	assert.Equal(t, "overlay", after.FSType)
	assert.Equal(t, before.Source, after.Source)
	assert.Equal(t, before.Options, after.Options, "same mount flags")
	assert.Equal(t, before.VFSOptions, after.VFSOptions, "same overlay options")
	assert.Equal(t, strings.Contains(before.Optional, "shared:"), strings.Contains(after.Optional, "shared:"))
	assertOwner(t, f.upper, 0)
	assertOwner(t, f.work, 0)
	assertOwner(t, filepath.Join(f.merged, "etc/passwd"), 0)
	assert.Empty(t, mountsUnder(t, staging))
	assert.NoDirExists(t, staging)
	require.NoError(t, os.WriteFile(filepath.Join(f.merged, "etc/x"), nil, 0o644), "the original overlay works")
	assertOwner(t, filepath.Join(f.upper, "etc/x"), 0)
}

// fsconfigMount mounts an overlay of layers with one lowerdir+ each, as a
// CRI runtime with a long layer list would have to.
func fsconfigMount(t *testing.T, layers []string, upper, work, target string) {
	t.Helper()
	c := &overlayConfig{upper: upper, work: work}
	for _, l := range layers {
		c.layers = append(c.layers, overlayLayer{path: l})
	}
	require.Greater(t, len(c.mountData()), os.Getpagesize())
	require.NoError(t, fsconfigOverlay(target, "overlay", c, 0, len(c.mountData())))
	t.Cleanup(func() {
		for Detach(target) == nil {
		}
	})
}

func TestRootfsManyLayers(t *testing.T) {
	needRoot(t)
	base := baseDir(t)
	const n = 100
	long := strings.Repeat("l", 60)
	var layers []string
	for i := range n {
		l := filepath.Join(base, fmt.Sprintf("%s:%03d", long, i))
		require.NoError(t, os.Mkdir(l, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(l, fmt.Sprintf("f%03d", i)), []byte(strconv.Itoa(i)), 0o644))
		layers = append(layers, l)
	}
	makeImage(t, layers[n-1])
	upper, work, merged := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{upper, work, merged} {
		require.NoError(t, os.Mkdir(d, 0o755))
	}
	fsconfigMount(t, layers, upper, work, merged)
	before, err := MountInfoOf(merged)
	require.NoError(t, err)
	require.Contains(t, before.VFSOptions, "lowerdir+=")

	// Failure, then restore, both through fsconfig.
	staging := filepath.Join(base, "staging")
	newOverlayTestOption = "no_such_option"
	_, err = PrepareRootfs(merged, userNS(t), podMapping, staging)
	newOverlayTestOption = ""
	t.Log(err)
	require.ErrorContains(t, err, "original overlay is mounted again")
	after, err := MountInfoOf(merged)
	require.NoError(t, err)
	origCfg, err := parseOverlayOptions(before.VFSOptions)
	require.NoError(t, err)
	restoredCfg, err := parseOverlayOptions(after.VFSOptions)
	require.NoError(t, err)
	assert.Equal(t, origCfg, restoredCfg)
	assert.Empty(t, mountsUnder(t, staging))

	r, err := PrepareRootfs(merged, userNS(t), podMapping, staging)
	require.NoError(t, err)
	releaseOnCleanup(t, r)
	assert.Equal(t, RootfsOverlay, r.Kind)
	after, err = MountInfoOf(merged)
	require.NoError(t, err)
	newCfg, err := parseOverlayOptions(after.VFSOptions)
	require.NoError(t, err)
	require.Len(t, newCfg.layers, n)
	assert.Equal(t, filepath.Join(staging, "lowers", strconv.Itoa(n-1)), newCfg.layers[n-1].path)
	assert.Contains(t, after.VFSOptions, "lowerdir+=", "mounted through fsconfig")
	require.NoError(t, r.Release())
	assertOwner(t, filepath.Join(merged, "f000"), hostBase)
	assertOwner(t, filepath.Join(merged, fmt.Sprintf("f%03d", n-1)), hostBase)
	assertContainerView(t, merged, "")
}

// sizedOverlay is an overlay whose single lower layer holds files files,
// on a tmpfs of its own; reset puts the CRI runtime's overlay back.
type sizedOverlay struct {
	lower, upper, work, merged string
}

func newSizedOverlay(tb testing.TB, dir string, files int) *sizedOverlay {
	tb.Helper()
	require.NoError(tb, os.MkdirAll(dir, 0o755))
	require.NoError(tb, unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755,size=256m,nr_inodes=0"))
	tb.Cleanup(func() {
		for Detach(dir) == nil {
		}
	})
	s := &sizedOverlay{
		lower: filepath.Join(dir, "lower"), upper: filepath.Join(dir, "upper"),
		work: filepath.Join(dir, "work"), merged: filepath.Join(dir, "merged"),
	}
	makeImage(tb, s.lower)
	for _, d := range []string{s.upper, s.work, s.merged} {
		require.NoError(tb, os.Mkdir(d, 0o755))
	}
	for i := 0; i < files; i++ {
		sub := filepath.Join(s.lower, "usr", strconv.Itoa(i/100))
		if i%100 == 0 {
			require.NoError(tb, os.MkdirAll(sub, 0o755))
		}
		p := filepath.Join(sub, strconv.Itoa(i))
		require.NoError(tb, os.WriteFile(p, nil, 0o644))
		if i%10 == 0 {
			require.NoError(tb, os.Chown(p, 1000, 1000))
		}
	}
	tb.Cleanup(func() {
		for Detach(s.merged) == nil {
		}
	})
	return s
}

// reset unmounts whatever overlay is at merged and mounts the CRI
// runtime's original again, with upper and work owned by root.
func (s *sizedOverlay) reset(tb testing.TB) {
	for Detach(s.merged) == nil {
	}
	for _, p := range []string{s.upper, s.work} {
		require.NoError(tb, os.Chown(p, 0, 0))
	}
	require.NoError(tb, unix.Mount("overlay", s.merged, "overlay", 0,
		"lowerdir="+s.lower+",upperdir="+s.upper+",workdir="+s.work))
}

func prepareAndRelease(tb testing.TB, s *sizedOverlay, ns *os.File, staging string) time.Duration {
	start := time.Now()
	r, err := PrepareRootfs(s.merged, ns, podMapping, staging)
	if err == nil {
		err = r.Release()
	}
	took := time.Since(start)
	require.NoError(tb, err)
	require.Equal(tb, RootfsOverlay, r.Kind)
	return took
}

func TestRootfsCostIndependentOfSize(t *testing.T) {
	needRoot(t)
	base := baseDir(t)
	ns := userNS(t)
	sizes := []int{1000, 10000}
	fixtures := map[int]*sizedOverlay{}
	for _, n := range sizes {
		fixtures[n] = newSizedOverlay(t, filepath.Join(base, strconv.Itoa(n)), n)
	}
	// Staging on a tmpfs (as under /run) and on the root ext4, whose
	// mkdir/rmdir cost about a millisecond each on this machine.
	stagingFS := filepath.Join(base, "stagingfs")
	mountTmpfs(t, stagingFS)
	stagings := map[string]string{"tmpfs": filepath.Join(stagingFS, "staging"), "ext4": filepath.Join(base, "staging")}
	// Interleaved runs, so machine noise hits every case alike.
	const runs = 25
	type key struct {
		files   int
		staging string
	}
	times := map[key][]time.Duration{}
	for i := 0; i < runs; i++ {
		for _, n := range sizes {
			for name, staging := range stagings {
				s := fixtures[n]
				s.reset(t)
				k := key{n, name}
				times[k] = append(times[k], prepareAndRelease(t, s, ns, staging))
			}
		}
	}
	median := func(d []time.Duration) time.Duration {
		d = slices.Clone(d)
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}
	for _, n := range sizes {
		for _, name := range []string{"tmpfs", "ext4"} {
			d := times[key{n, name}]
			t.Logf("%5d files, staging on %-5s: PrepareRootfs+Release median %v (min %v, max %v) over %d runs",
				n, name, median(d), slices.Min(d), slices.Max(d), runs)
		}
	}
	for _, n := range sizes {
		s := fixtures[n]
		start := time.Now()
		out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", hostBase, hostBase), s.lower).CombinedOutput()
		require.NoError(t, err, "%s", out)
		t.Logf("%5d files: chown -R of the layer, for comparison: %v", n, time.Since(start))
	}
	// Same cost; generous bounds for a noisy machine.
	m1, m10 := median(times[key{1000, "tmpfs"}]), median(times[key{10000, "tmpfs"}])
	assert.Less(t, m10, m1*3/2+time.Millisecond/2, "10k files cost about what 1k files cost")
	for _, s := range fixtures {
		s.reset(t) // the layer is chowned now; not used again
	}
}

func BenchmarkRootfsOverlay(b *testing.B) {
	needRoot(b)
	for _, n := range []int{1000, 10000} {
		b.Run("files="+strconv.Itoa(n), func(b *testing.B) {
			dir, err := os.MkdirTemp("", "idmount-bench-")
			require.NoError(b, err)
			require.NoError(b, os.Chmod(dir, 0o711))
			b.Cleanup(func() { os.RemoveAll(dir) })
			s := newSizedOverlay(b, filepath.Join(dir, "fs"), n)
			ns := userNS(b)
			for b.Loop() {
				b.StopTimer()
				s.reset(b)
				b.StartTimer()
				// Staging on the fixture's tmpfs: mkdir on this machine's
				// root ext4 costs about a millisecond and varies a lot.
				prepareAndRelease(b, s, ns, filepath.Join(dir, "fs", "staging"))
			}
		})
	}
}

func TestRootfsParseOverlayOptions(t *testing.T) {
	// As Linux 6.18 shows them (seen in /proc/self/mountinfo).
	c, err := parseOverlayOptions(`rw,lowerdir=/tmp/ovx/lo\134:w\134\054er\134\134x\040y:/tmp/ovx/l2,upperdir=/tmp/ovx/up\134\054p\134:er,workdir=/tmp/ovx/work,uuid=on`)
	require.NoError(t, err)
	assert.Equal(t, &overlayConfig{
		layers: []overlayLayer{{path: `/tmp/ovx/lo:w,er\x y`}, {path: "/tmp/ovx/l2"}},
		upper:  "/tmp/ovx/up,p:er", work: "/tmp/ovx/work", opts: []string{"uuid=on"},
	}, c)
	assert.Equal(t, `lowerdir=/tmp/ovx/lo\:w\,er\\x y:/tmp/ovx/l2,upperdir=/tmp/ovx/up\,p\:er,workdir=/tmp/ovx/work,uuid=on`, c.mountData())

	c, err = parseOverlayOptions(`rw,lowerdir+=/tmp/b/lo:w\054er\040x,lowerdir+=/tmp/b/l2,datadir+=/d:1,upperdir=/tmp/b/up,workdir=/tmp/b/work,redirect_dir=on,metacopy=on,volatile`)
	require.NoError(t, err)
	assert.Equal(t, []overlayLayer{{path: "/tmp/b/lo:w,er x"}, {path: "/tmp/b/l2"}, {path: "/d:1", data: true}}, c.layers)
	assert.Equal(t, []string{"redirect_dir=on", "metacopy=on", "volatile"}, c.opts)
	assert.Equal(t, `lowerdir=/tmp/b/lo\:w\,er x:/tmp/b/l2::/d\:1,upperdir=/tmp/b/up,workdir=/tmp/b/work,redirect_dir=on,metacopy=on,volatile`, c.mountData())

	c, err = parseOverlayOptions(`ro,lowerdir=/a:/b::/d1::/d2,context="system_u:object_r:container_file_t:s0:c1,c2",userxattr`)
	require.NoError(t, err)
	assert.True(t, c.readOnly)
	assert.Equal(t, []overlayLayer{{path: "/a"}, {path: "/b"}, {path: "/d1", data: true}, {path: "/d2", data: true}}, c.layers)
	assert.Equal(t, []string{`context="system_u:object_r:container_file_t:s0:c1,c2"`, "userxattr"}, c.opts)
	assert.Empty(t, c.idmapOption())

	for _, bad := range []string{`rw,lowerdir=/a::/d:/b`, `rw,lowerdir=/a::`, `rw,datadir+=/d`, `rw,lowerdir=`} {
		_, err := parseOverlayOptions(bad)
		assert.Error(t, err, bad)
	}

	c, err = parseOverlayOptions(`rw,lowerdir=/a,uidmap=0:100000:65536,gidmap=0:100000:65536`)
	require.NoError(t, err)
	assert.Equal(t, "uidmap=0:100000:65536", c.idmapOption())

	var mi mountinfo.Info
	mi.Options = "rw,nosuid,nodev,noatime"
	assert.Equal(t, uintptr(unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOATIME), mountFlags(&mi))
	mi.Options = "ro,noexec"
	assert.Equal(t, uintptr(unix.MS_RDONLY|unix.MS_NOEXEC|unix.MS_STRICTATIME), mountFlags(&mi))
	assert.Equal(t, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOEXEC|unix.MOUNT_ATTR_STRICTATIME, mountAttrs(mountFlags(&mi)))

	_, _, err = mappedRoot(mapping.Mapping{UIDs: podMapping.UIDs})
	assert.ErrorContains(t, err, "does not map container ID 0")
	uid, gid, err := mappedRoot(mapping.Mapping{
		UIDs: []specs.LinuxIDMapping{{ContainerID: 1, HostID: 5, Size: 1}, {ContainerID: 0, HostID: 7, Size: 1}},
		GIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 9, Size: 2}},
	})
	require.NoError(t, err)
	assert.Equal(t, [2]uint32{7, 9}, [2]uint32{uid, gid})
}

// TestRootfsShiftUpper: files a CRI runtime put in an upper layer before the
// container ran, in host IDs, are shifted into the mapping once; set-id bits
// survive the chown; IDs outside the container range and hard links are
// shifted at most once.
func TestRootfsShiftUpper(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chown")
	}
	const H = 300000
	m := mapping.Mapping{UIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: H, Size: 65536}}}
	m.GIDs = m.UIDs
	upper := t.TempDir()
	etc := filepath.Join(upper, "etc")
	require.NoError(t, os.Mkdir(etc, 0o755))
	mtab := filepath.Join(etc, "mtab")
	require.NoError(t, os.Symlink("/proc/mounts", mtab))
	suid := filepath.Join(upper, "suid")
	require.NoError(t, os.WriteFile(suid, nil, 0o755))
	require.NoError(t, os.Chown(suid, 1000, 1000))
	require.NoError(t, os.Chmod(suid, 0o755|os.ModeSetuid))
	require.NoError(t, os.Link(suid, filepath.Join(upper, "suid-link")))
	far := filepath.Join(upper, "far")
	require.NoError(t, os.WriteFile(far, nil, 0o644))
	require.NoError(t, os.Chown(far, 70000, 70000))

	done, err := shiftUpper(upper, m)
	require.NoError(t, err)
	owner := func(p string) (uint32, uint32, os.FileMode) {
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(p, &st))
		fi, _ := os.Lstat(p)
		return st.Uid, st.Gid, fi.Mode()
	}
	u, g, _ := owner(etc)
	assert.Equal(t, [2]uint32{H, H}, [2]uint32{u, g})
	u, _, _ = owner(mtab)
	assert.Equal(t, uint32(H), u, "a symlink itself is shifted")
	u, g, mode := owner(suid)
	assert.Equal(t, [2]uint32{H + 1000, H + 1000}, [2]uint32{u, g}, "hard links shift once")
	assert.NotZero(t, mode&os.ModeSetuid, "the set-uid bit survives the chown")
	u, _, _ = owner(far)
	assert.Equal(t, uint32(70000), u, "an ID outside the container range stays")
	assert.Len(t, done, 3)
}

// TestRootfsOverlayBusyUpper: the CRI runtime's overlay also lives on, for a
// moment, in a mount namespace copied from the host's while it was mounted
// (here `unshare -m sleep`; in real life a concurrent runtime call's or a
// container's being set up). With index=on the kernel refuses a new overlay
// on the same upperdir (EBUSY) until that copy is gone: the re-mount waits
// for it instead of failing and leaving the rootfs unmounted.
func TestRootfsOverlayBusyUpper(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	base := baseDir(t)
	f := newOverlay(t, base, ",index=on", 0)
	const hold = 300 * time.Millisecond
	holder := exec.Command("unshare", "-m", "sleep", strconv.FormatFloat(hold.Seconds(), 'f', 1, 64))
	require.NoError(t, holder.Start())
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	// Wait until the copy exists: unshare has exec'd sleep.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", holder.Process.Pid)); strings.TrimSpace(string(comm)) == "sleep" {
			break
		}
		require.False(t, time.Now().After(deadline), "unshare did not exec sleep")
	}

	start := time.Now()
	r, err := PrepareRootfs(f.merged, userNS(t), podMapping, filepath.Join(base, "staging"))
	require.NoError(t, err)
	releaseOnCleanup(t, r)
	t.Logf("re-mounted after %s, while a copy held the old overlay for %s", time.Since(start).Round(time.Millisecond), hold)
	assert.Equal(t, RootfsOverlay, r.Kind)
	info, err := MountInfoOf(f.merged)
	require.NoError(t, err)
	assert.Equal(t, "overlay", info.FSType)
}
