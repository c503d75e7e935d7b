package nsexec

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/mapping"
)

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates user namespaces with host ID ranges and mounts")
	}
}

func mapOf(ranges ...uint32) mapping.Mapping {
	var r []specs.LinuxIDMapping
	for i := 0; i+2 < len(ranges); i += 3 {
		r = append(r, specs.LinuxIDMapping{ContainerID: ranges[i], HostID: ranges[i+1], Size: ranges[i+2]})
	}
	return mapping.Mapping{UIDs: r, GIDs: r}
}

func inode(t *testing.T, f *os.File) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Fstat(int(f.Fd()), &st))
	return st
}

func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// children lists the PIDs whose parent is this test process: a helper that
// was not reaped shows up here (as a zombie or a stopped process).
func children(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
		fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(os.Getpid()) {
			out = append(out, pid)
		}
	}
	return out
}

// inNS runs cmd inside the user namespace of ns, as a user on the host would
// check it: nsenter joins the namespace through the fd passed as fd 3.
func inNS(t *testing.T, ns *os.File, cmd ...string) string {
	t.Helper()
	c := exec.Command("nsenter", append([]string{"--user=/proc/self/fd/3"}, cmd...)...)
	c.ExtraFiles = []*os.File{ns}
	out, err := c.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return string(out)
}

func TestOpenUserNS(t *testing.T) {
	needRoot(t)
	// Warm up whatever the Go runtime opens once (pidfd probe), so the fd
	// count below measures OpenUserNS alone.
	ns, err := OpenUserNS(mapOf(0, 200000, 65536))
	require.NoError(t, err)
	ns.Close()
	fdsBefore := fdCount(t)

	ns1, err := OpenUserNS(mapOf(0, 200000, 65536))
	require.NoError(t, err)
	ns2, err := OpenUserNS(mapOf(0, 300000, 65536, 65536, 500000, 1))
	require.NoError(t, err)

	typ, err := unix.IoctlRetInt(int(ns1.Fd()), unix.NS_GET_NSTYPE)
	require.NoError(t, err)
	assert.Equal(t, unix.CLONE_NEWUSER, typ, "the fd is a user namespace")

	var self unix.Stat_t
	require.NoError(t, unix.Stat("/proc/self/ns/user", &self))
	assert.NotEqual(t, self.Ino, inode(t, ns1).Ino, "not the host's namespace")
	assert.NotEqual(t, inode(t, ns1).Ino, inode(t, ns2).Ino, "distinct mappings, distinct namespaces")

	// From the host: the namespaces carry the mappings asked for, and
	// setgroups is allowed so a container joining a pinned one can use it.
	assert.Equal(t, []string{"0", "200000", "65536"}, strings.Fields(inNS(t, ns1, "cat", "/proc/self/uid_map")))
	assert.Equal(t, []string{"0", "300000", "65536", "65536", "500000", "1"},
		strings.Fields(inNS(t, ns2, "cat", "/proc/self/gid_map")))
	assert.Equal(t, "allow", strings.TrimSpace(inNS(t, ns1, "cat", "/proc/self/setgroups")))

	assert.Empty(t, children(t), "every helper is reaped")
	require.NoError(t, ns1.Close())
	require.NoError(t, ns2.Close())
	assert.Equal(t, fdsBefore, fdCount(t), "no fd left open")
}

func TestOpenUserNSErrors(t *testing.T) {
	needRoot(t)
	_, err := OpenUserNS(mapping.Mapping{})
	require.Error(t, err)

	fdsBefore := fdCount(t)
	// Overlapping container ranges: the kernel refuses the uid_map write.
	_, err = OpenUserNS(mapOf(0, 200000, 10, 5, 300000, 10))
	require.ErrorIs(t, err, unix.EINVAL)
	assert.Contains(t, err.Error(), "overlapping ranges")
	assert.Contains(t, err.Error(), "0:200000:10,5:300000:10")
	assert.Empty(t, children(t), "failed helper reaped")
	assert.Equal(t, fdsBefore, fdCount(t), "no fd left open")
}

func TestUserNSCache(t *testing.T) {
	needRoot(t)
	fdsBefore := fdCount(t)
	var c UserNSCache
	a, err := c.Get(mapOf(0, 200000, 65536, 65536, 400000, 10))
	require.NoError(t, err)
	b, err := c.Get(mapOf(65536, 400000, 10, 0, 200000, 65536))
	require.NoError(t, err)
	assert.Same(t, a, b, "same mapping (ranges reordered), same fd")
	d, err := c.Get(mapOf(0, 300000, 65536))
	require.NoError(t, err)
	assert.NotEqual(t, inode(t, a).Ino, inode(t, d).Ino)
	assert.Equal(t, fdsBefore+2, fdCount(t), "one fd per distinct mapping")
	require.NoError(t, c.Close())
	assert.Equal(t, fdsBefore, fdCount(t))
	assert.Empty(t, children(t))
}

func mountsUnder(t *testing.T, dir string) []*mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	require.NoError(t, err)
	return infos
}

func TestPin(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "pods", "p1", "userns")
	t.Cleanup(func() {
		assert.NoError(t, Unpin(path))
		assert.Empty(t, mountsUnder(t, dir), "nothing left mounted")
	})

	ns, err := OpenUserNS(mapOf(0, 200000, 65536))
	require.NoError(t, err)
	want := inode(t, ns)
	require.NoError(t, Pin(ns, path))
	fi, err := os.Stat(filepath.Dir(path))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o700), fi.Mode().Perm())

	var st unix.Stat_t
	require.NoError(t, unix.Stat(path, &st))
	assert.Equal(t, want.Ino, st.Ino, "the pinned file is the namespace")
	assert.Equal(t, want.Dev, st.Dev)
	assert.Len(t, mountsUnder(t, path), 1)

	// Pinning again would stack a second mount: refused.
	assert.ErrorIs(t, Pin(ns, path), fs.ErrExist)
	assert.Len(t, mountsUnder(t, path), 1)

	// The namespace outlives the fd (and the helper).
	require.NoError(t, ns.Close())
	again, err := OpenPinned(path)
	require.NoError(t, err)
	assert.Equal(t, want.Ino, inode(t, again).Ino)
	assert.Equal(t, []string{"0", "200000", "65536"}, strings.Fields(inNS(t, again, "cat", "/proc/self/uid_map")))
	require.NoError(t, again.Close())

	require.NoError(t, Unpin(path))
	assert.Empty(t, mountsUnder(t, path), "unpinned: no mount left")
	_, err = os.Lstat(path)
	assert.ErrorIs(t, err, fs.ErrNotExist, "unpinned: file removed")
	assert.NoError(t, Unpin(path), "unpinning twice is fine")

	// A placeholder left by a crash between create and mount: not a pin,
	// and Unpin cleans it up.
	require.NoError(t, os.WriteFile(path, nil, 0o400))
	_, err = OpenPinned(path)
	assert.ErrorContains(t, err, "not a pinned namespace")
	assert.NoError(t, Unpin(path))
	_, err = os.Lstat(path)
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

func BenchmarkOpenUserNS(b *testing.B) {
	needRoot(b)
	m := mapOf(0, 200000, 65536)
	for b.Loop() {
		ns, err := OpenUserNS(m)
		if err != nil {
			b.Fatal(err)
		}
		ns.Close()
	}
}
