package idmount

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/mapping"
	"github.com/userns-shim/userns-shim/pkg/nsexec"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// hostBase is where mapping 0:hostBase:65536 puts on-disk uid 0.
const hostBase = 200000

var podMapping = mapping.Mapping{
	UIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: hostBase, Size: 65536}},
	GIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: hostBase, Size: 65536}},
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts filesystems and makes ID-mapped mounts")
	}
}

// baseDir is a fresh directory the mapped IDs can traverse (t.TempDir is
// 0700, which a process running as host uid hostBase could not enter). At
// the end of the test nothing may be mounted below it.
func baseDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "idmount-test-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o711))
	t.Cleanup(func() {
		assert.Empty(t, mountsUnder(t, dir), "nothing left mounted")
		os.RemoveAll(dir)
	})
	return dir
}

func mountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	require.NoError(t, err)
	var out []string
	for _, i := range infos {
		out = append(out, i.Mountpoint)
	}
	return out
}

// unmountOnCleanup detaches whatever is mounted on dir at the end, even when
// the test failed half-way; "not mounted" is fine.
func unmountOnCleanup(t *testing.T, dir string) {
	t.Cleanup(func() {
		for Detach(dir) == nil {
		}
	})
}

func userNS(t testing.TB) *os.File {
	t.Helper()
	var c nsexec.UserNSCache
	t.Cleanup(func() { c.Close() })
	ns, err := c.Get(podMapping)
	require.NoError(t, err)
	return ns
}

func owner(t *testing.T, path string) (uid, gid uint32) {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(path, &st))
	return st.Uid, st.Gid
}

func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// populate makes src (0755) with a file owned by uid/gid 0, one by 1000 and
// a directory home-1000 owned by 1000.
func populate(t *testing.T, src string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(src, 0o755))
	require.NoError(t, os.Chmod(src, 0o755))
	require.NoError(t, os.Mkdir(filepath.Join(src, "home-1000"), 0o755))
	require.NoError(t, os.Chown(filepath.Join(src, "home-1000"), 1000, 1000))
	for _, id := range []int{0, 1000} {
		p := filepath.Join(src, "owned-"+strconv.Itoa(id))
		require.NoError(t, os.WriteFile(p, []byte("x"), 0o644))
		require.NoError(t, os.Chown(p, id, id))
	}
}

// touchAs creates path as host uid/gid id with no capabilities left.
func touchAs(id int, path string) error {
	s := strconv.Itoa(id)
	out, err := exec.Command("setpriv", "--reuid", s, "--regid", s, "--clear-groups", "touch", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("touch %s as %d: %w: %s", path, id, err, out)
	}
	return nil
}

// checkIDMapped mounts src ID-mapped with podMapping on target and checks
// from the host what Kubernetes relies on.
func checkIDMapped(t *testing.T, src, target string) {
	populate(t, src)
	require.NoError(t, os.MkdirAll(target, 0o755))
	unmountOnCleanup(t, target)

	tree, err := Clone(src, userNS(t), false)
	require.NoError(t, err)
	require.NoError(t, Attach(tree, target))
	require.NoError(t, tree.Close())

	info, err := MountInfoOf(target)
	require.NoError(t, err)
	assert.Equal(t, target, info.Mountpoint)
	assert.Contains(t, info.Options, "idmapped")

	// On-disk 0 and 1000 show as hostBase and hostBase+1000 through the mount.
	uid, gid := owner(t, filepath.Join(target, "owned-0"))
	assert.Equal(t, [2]uint32{hostBase, hostBase}, [2]uint32{uid, gid})
	uid, gid = owner(t, filepath.Join(target, "owned-1000"))
	assert.Equal(t, [2]uint32{hostBase + 1000, hostBase + 1000}, [2]uint32{uid, gid})

	// Host root has no on-disk ID through this mapping.
	err = os.WriteFile(filepath.Join(target, "by-host-root"), nil, 0o644)
	assert.ErrorIs(t, err, unix.EOVERFLOW)

	// What the container's root and uid 1000 are on the host: their files
	// land on disk as 0 and 1000.
	require.NoError(t, touchAs(hostBase, filepath.Join(target, "by-root")))
	uid, gid = owner(t, filepath.Join(src, "by-root"))
	assert.Equal(t, [2]uint32{0, 0}, [2]uint32{uid, gid})
	require.NoError(t, touchAs(hostBase+1000, filepath.Join(target, "home-1000", "by-1000")))
	uid, gid = owner(t, filepath.Join(src, "home-1000", "by-1000"))
	assert.Equal(t, [2]uint32{1000, 1000}, [2]uint32{uid, gid})

	require.NoError(t, Detach(target))
	assert.Empty(t, mountsUnder(t, target), "detached")
	err = Detach(target)
	assert.ErrorIs(t, err, unix.EINVAL, "not a mount any more")
	assert.ErrorContains(t, err, target)
}

func TestCloneAttachDisk(t *testing.T) {
	needRoot(t)
	base := baseDir(t)
	var sfs unix.Statfs_t
	require.NoError(t, unix.Statfs(base, &sfs))
	if n := FSTypeName(int64(sfs.Type)); n != "ext4" && n != "tmpfs" {
		t.Skipf("%s is on %s; TestCloneAttachTmpfs covers a supported filesystem", base, n)
	}
	checkIDMapped(t, filepath.Join(base, "src"), filepath.Join(base, "target"))
}

func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755,size=1m"))
	unmountOnCleanup(t, dir)
}

func TestCloneAttachTmpfs(t *testing.T) {
	needRoot(t)
	base := baseDir(t)
	src := filepath.Join(base, "tmpfs")
	mountTmpfs(t, src)
	checkIDMapped(t, src, filepath.Join(base, "target"))
}

func TestCloneRecursive(t *testing.T) {
	needRoot(t)
	base := baseDir(t)
	src := filepath.Join(base, "src")
	populate(t, src)
	mountTmpfs(t, filepath.Join(src, "sub"))
	populate(t, filepath.Join(src, "sub"))

	for _, recursive := range []bool{false, true} {
		target := filepath.Join(base, "target-"+strconv.FormatBool(recursive))
		require.NoError(t, os.Mkdir(target, 0o755))
		unmountOnCleanup(t, target)
		tree, err := Clone(src, userNS(t), recursive)
		require.NoError(t, err)
		require.NoError(t, Attach(tree, target))
		require.NoError(t, tree.Close())
		_, err = os.Stat(filepath.Join(target, "sub", "owned-1000"))
		if !recursive {
			assert.ErrorIs(t, err, os.ErrNotExist, "without recursive, the submount is not copied")
			continue
		}
		uid, _ := owner(t, filepath.Join(target, "sub", "owned-1000"))
		assert.Equal(t, uint32(hostBase+1000), uid, "the submount is ID-mapped too")
	}
}

func mountOverlay(t *testing.T, base string) string {
	t.Helper()
	var dirs []string
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		dirs = append(dirs, filepath.Join(base, d))
		require.NoError(t, os.Mkdir(dirs[len(dirs)-1], 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dirs[0], "f"), nil, 0o644))
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", dirs[0], dirs[1], dirs[2])
	require.NoError(t, unix.Mount("overlay", dirs[3], "overlay", 0, opts))
	unmountOnCleanup(t, dirs[3])
	return dirs[3]
}

func TestCloneOverlayRefused(t *testing.T) {
	needRoot(t)
	base := baseDir(t)
	merged := mountOverlay(t, base)
	ns := userNS(t)

	fds := fdCount(t)
	tree, err := Clone(merged, ns, false)
	assert.Nil(t, tree)
	require.ErrorIs(t, err, unix.EINVAL)
	assert.ErrorContains(t, err, merged)
	assert.ErrorContains(t, err, "does not support ID-mapped mounts")
	var pe *os.PathError
	assert.True(t, errors.As(err, &pe))
	assert.Equal(t, fds, fdCount(t), "the cloned tree is closed on failure")

	// One unsupported submount makes a recursive clone fail as a whole.
	_, err = Clone(base, ns, true)
	assert.ErrorIs(t, err, unix.EINVAL)

	info, err := MountInfoOf(filepath.Join(merged, "f"))
	require.NoError(t, err)
	assert.Equal(t, "overlay", info.FSType)
	assert.Equal(t, merged, info.Mountpoint)
	for _, o := range []string{"lowerdir=" + filepath.Join(base, "lower"), "upperdir=", "workdir="} {
		assert.Contains(t, info.VFSOptions, o)
	}
	assert.NotContains(t, info.Options, "idmapped")
}

// TestCloneRefusesProc: a source on procfs, or one reached through a /proc
// magic link, is refused before anything is cloned; the same directory
// reached by its own path is cloned (the control).
func TestCloneRefusesProc(t *testing.T) {
	needRoot(t)
	base := baseDir(t)
	ns := userNS(t)
	for _, tc := range []struct {
		name, src string
		want      string // "" means the clone must succeed
	}{
		{"the directory itself", base, ""},
		{"through /proc/self/root", "/proc/self/root" + base, "magic link"},
		{"through /proc/<pid>/root", fmt.Sprintf("/proc/%d/root%s", os.Getpid(), base), "magic link"},
		{"a magic link as last component", "/proc/self/root", "symlink"},
		{"a procfs directory", "/proc/sys", "procfs"},
		{"a procfs file", "/proc/self/status", "procfs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fds := fdCount(t)
			tree, err := Clone(tc.src, ns, false)
			if tc.want == "" {
				require.NoError(t, err)
				tree.Close()
				return
			}
			assert.Nil(t, tree)
			require.ErrorContains(t, err, tc.want)
			assert.ErrorContains(t, err, tc.src)
			assert.False(t, IsUnsupported(err), "a refusal, not an unsupported filesystem: on_unsupported_fs = warn must not let it through")
			assert.Equal(t, fds, fdCount(t), "nothing left open")
		})
	}
}

// TestSetReadOnly: a clone made read-only before it is attached is
// read-only with its submounts (recursive), the source stays writable, and
// in a mount namespace owned by another user namespace (as a container's)
// its copy cannot be remounted read-write: the flag is locked. The control,
// a clone that was writable, can be remounted both ways there.
func TestSetReadOnly(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	base := baseDir(t)
	src := filepath.Join(base, "src")
	populate(t, src)
	mountTmpfs(t, filepath.Join(src, "sub"))
	ns := userNS(t)
	remountRW := func(target string) error {
		// A new user and mount namespace, as a runtime makes for a container.
		out, err := exec.Command("unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
			"mount -o remount,ro,bind \"$0\" && mount -o remount,rw,bind \"$0\"", target).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	for _, tc := range []struct {
		name                string
		readOnly, recursive bool
	}{
		{"read-only", true, false},
		{"read-only recursive", true, true},
		{"writable control", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := filepath.Join(base, strings.ReplaceAll(tc.name, " ", "-"))
			require.NoError(t, os.Mkdir(target, 0o755))
			tree, err := Clone(src, ns, tc.recursive)
			require.NoError(t, err)
			defer tree.Close()
			if tc.readOnly {
				require.NoError(t, SetReadOnly(tree, tc.recursive))
			}
			require.NoError(t, Attach(tree, target))
			unmountOnCleanup(t, target)

			err = os.WriteFile(filepath.Join(target, "new"), nil, 0o644)
			if tc.readOnly {
				assert.ErrorIs(t, err, unix.EROFS)
				if tc.recursive {
					assert.ErrorIs(t, os.WriteFile(filepath.Join(target, "sub", "new"), nil, 0o644), unix.EROFS, "the submount too")
				}
				assert.ErrorContains(t, remountRW(target), "permission denied", "locked read-only in a container's mount namespace")
			} else {
				// Host root has no ID in the mapping: EOVERFLOW, not EROFS.
				assert.NotErrorIs(t, err, unix.EROFS)
				assert.NoError(t, remountRW(target))
			}
			assert.NoError(t, os.WriteFile(filepath.Join(src, "still-writable"), nil, 0o644), "the source is not changed")
		})
	}
}

func TestProber(t *testing.T) {
	needRoot(t)
	base := baseDir(t)
	merged := mountOverlay(t, base)
	tmp := filepath.Join(base, "tmpfs")
	mountTmpfs(t, tmp)
	require.NoError(t, os.Mkdir(filepath.Join(base, "plain"), 0o755))
	require.NoError(t, os.Mkdir(filepath.Join(tmp, "sub"), 0o755))

	var users nsexec.UserNSCache
	defer users.Close()
	p := NewProber(&users, mapping.Mapping{})

	s, err := p.Supports(merged)
	require.NoError(t, err)
	assert.False(t, s.OK)
	assert.Equal(t, "overlay", s.FSType)
	assert.ErrorIs(t, s.Err, unix.EINVAL)

	s, err = p.Supports(tmp)
	require.NoError(t, err)
	assert.True(t, s.OK, "%v", s.Err)
	assert.Equal(t, "tmpfs", s.FSType)

	s, err = p.Supports(base)
	require.NoError(t, err)
	onDisk := s.FSType == "ext4" || s.FSType == "tmpfs"
	if onDisk {
		assert.True(t, s.OK, "%v", s.Err)
	}
	assert.Equal(t, 3, p.Probes())

	// A mount that is already ID-mapped cannot be mapped again (EPERM): a
	// property of that mount, which must not spoil its filesystem's answer.
	idmapped := filepath.Join(base, "idmapped")
	require.NoError(t, os.Mkdir(idmapped, 0o755))
	unmountOnCleanup(t, idmapped)
	tree, err := Clone(filepath.Join(base, "plain"), userNS(t), false)
	require.NoError(t, err)
	require.NoError(t, Attach(tree, idmapped))
	require.NoError(t, tree.Close())
	s, err = p.Supports(idmapped)
	require.NoError(t, err)
	assert.False(t, s.OK)
	assert.ErrorIs(t, s.Err, unix.EPERM)
	assert.Equal(t, 4, p.Probes())

	// The same mounts again: answered from the cache.
	for path, want := range map[string]bool{filepath.Join(base, "plain"): onDisk, filepath.Join(tmp, "sub"): true, merged: false} {
		s, err := p.Supports(path)
		require.NoError(t, err)
		assert.Equal(t, want, s.OK, path)
	}
	assert.Equal(t, 4, p.Probes(), "cached per mount")

	_, err = p.Supports(filepath.Join(base, "missing"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func BenchmarkCloneAttachDetach(b *testing.B) {
	needRoot(b)
	dir := b.TempDir()
	src, target := filepath.Join(dir, "src"), filepath.Join(dir, "target")
	require.NoError(b, os.Mkdir(src, 0o755))
	require.NoError(b, os.Mkdir(target, 0o755))
	ns := userNS(b)
	for b.Loop() {
		tree, err := Clone(src, ns, false)
		if err != nil {
			b.Fatal(err)
		}
		if err := Attach(tree, target); err != nil {
			b.Fatal(err)
		}
		tree.Close()
		if err := Detach(target); err != nil {
			b.Fatal(err)
		}
	}
	if m := mountsUnder(b, target); len(m) != 0 {
		b.Fatalf("left mounted: %v", m)
	}
}

func BenchmarkMountInfoOf(b *testing.B) {
	for b.Loop() {
		if _, err := MountInfoOf("/tmp"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkProbeUncached(b *testing.B) {
	needRoot(b)
	dir := b.TempDir()
	var users nsexec.UserNSCache
	defer users.Close()
	for b.Loop() {
		if s, err := NewProber(&users, mapping.Mapping{}).Supports(dir); err != nil || !s.OK {
			b.Fatal(s, err)
		}
	}
}
