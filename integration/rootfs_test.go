package integration

// Rootfs tests: the image rootfs of a container with a user namespace is
// made usable by the container's mapped root without chown, whatever the
// runtime: a plain directory (ID-mapped clone staged by the shim), an
// overlay mounted at the rootfs path as CRI-O, containerd and podman hand
// one over (re-mounted in place over ID-mapped lower layers), and a rootfs
// the CRI runtime already prepared for the mapping (left alone). Checked the
// way a user checks them: `ls -ln` inside, owners on disk of image files and
// of what container root writes, the host's mount table, `shim inspect`, and
// the CRI runtime's own teardown (`umount <bundle>/rootfs`).

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Rootfs kinds and treatments as `shim inspect` names them.
const (
	rtKindDir      = "dir"
	rtKindOverlay  = "overlay"
	rtKindPrepared = "prepared"
)

// rtHost returns a host ID range start distinct for each (test, runtime)
// pair and from the lc and im tests' ranges.
func rtHost(test, rt int) uint32 {
	return uint32(40_000_000 + test*1_000_000 + rt*100_000)
}

// rtSetup makes an env and a bundle (newBundle's rootfs, owned by host root,
// plus /etc/user-file owned by 1000:1000, writable) running args, whose
// mapping comes from the uid-mappings annotation.
func rtSetup(t *testing.T, rt Runtime, test, rtIndex int, args ...string) (*Env, *Bundle, specs.LinuxIDMapping) {
	t.Helper()
	want := lcRange(rtHost(test, rtIndex))
	e := newEnv(t, rt, "")
	b := newBundle(t, args...)
	b.Spec.Annotations = map[string]string{lcAnnUIDMappings: lcAnnotation(want)}
	b.Spec.Root.Readonly = false // runc spec's default is a read-only rootfs
	b.Save(t)
	imWrite(t, filepath.Join(b.Dir, "rootfs", "etc", "user-file"), "user\n", 1000, 1000)
	return e, b, want
}

// rtRootfsRecord is the "rootfs" part of `shim inspect`.
type rtRootfsRecord struct {
	Path      string `json:"path"`
	Kind      string `json:"kind"`
	Treatment string `json:"treatment"`
	Reason    string `json:"reason"`
}

// rtInspectRootfs returns the shim's record of container id's rootfs.
func rtInspectRootfs(t *testing.T, e *Env, id string) rtRootfsRecord {
	t.Helper()
	out := lcMustShim(e, "shim", "inspect", id).Stdout
	var rec struct {
		Rootfs *rtRootfsRecord `json:"rootfs"`
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("shim inspect %s: not JSON: %v\n%s", id, err, out)
	}
	if rec.Rootfs == nil {
		t.Fatalf("shim inspect %s: no rootfs record:\n%s", id, out)
	}
	return *rec.Rootfs
}

// rtRequireRootfs fails unless the shim's record of id's rootfs names path
// with kind and treatment, and a reason.
func rtRequireRootfs(t *testing.T, e *Env, id, path, kind, treatment string) rtRootfsRecord {
	t.Helper()
	r := rtInspectRootfs(t, e, id)
	if r.Path != path || r.Kind != kind || r.Treatment != treatment || r.Reason == "" {
		t.Errorf("shim inspect %s, rootfs: %+v, want path %s kind %q treatment %q and a reason", id, r, path, kind, treatment)
	}
	t.Logf("shim inspect %s, rootfs: kind %q treatment %q reason %q", id, r.Kind, r.Treatment, r.Reason)
	return r
}

// rtParseLs returns "uid:gid" per path of `ls -ln` output naming files.
func rtParseLs(out string) map[string]string {
	owners := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || f[0] == "total" {
			continue
		}
		name := f[8] // a symlink line goes on with "-> target"
		owners[name] = f[2] + ":" + f[3]
	}
	return owners
}

// rtRequireOwners fails unless owners (from `ls -ln` inside, what) shows each
// path of want with that owner.
func rtRequireOwners(t *testing.T, what string, owners, want map[string]string) {
	t.Helper()
	for name, owner := range want {
		if owners[name] != owner {
			t.Errorf("%s: %s owned by %q, want %s (all: %v)", what, name, owners[name], owner, owners)
		}
	}
}

// rtRequireHostOwners fails unless each path (below root on the host) of
// want has that owner on disk.
func rtRequireHostOwners(t *testing.T, what, root string, want map[string]string) {
	t.Helper()
	for rel, owner := range want {
		if got := imHostOwner(t, filepath.Join(root, rel)); got != owner {
			t.Errorf("%s: %s on disk owned by %s, want %s", what, filepath.Join(root, rel), got, owner)
		}
	}
}

// rtWaitFile waits until path exists and is not empty (written by the
// container's process) and returns what it holds.
func rtWaitFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if data, err := os.ReadFile(path); err == nil && len(data) > 0 {
			return string(data)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear (non-empty) within 10s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rtInitScript is what the container's root runs first: files in /etc and
// /root of an image nobody chowned, and what `ls -ln` says of image files,
// into /root/ls-init (written under a temporary name first).
const rtInitScript = "touch /etc/new /root/new && ls -ln /etc/hosts /bin/busybox /etc/user-file > /root/ls.tmp && mv /root/ls.tmp /root/ls-init && exec sleep 1000"

// rtImageOwners is what container root must see of the image's files.
var rtImageOwners = map[string]string{"/etc/hosts": "0:0", "/bin/busybox": "0:0", "/etc/user-file": "1000:1000"}

// rtLayers is an overlay rootfs's layers, as a CRI runtime's snapshotter
// keeps them: in a 0700 directory of host root's.
type rtLayers struct {
	Dir, Lower, Upper, Work string
	Merged                  string // <bundle>/rootfs
}

// rtOverlayRootfs replaces the bundle's plain rootfs with an overlay mounted
// at <bundle>/rootfs, as CRI-O, containerd and podman hand one over: the
// lower layer is a copy of the rootfs (owned by host 0, /etc/user-file by
// 1000); upper and work are empty. With shift > 0 the layers are prepared
// for the mapping as a CRI runtime that chowns does it: every on-disk owner
// of the lower becomes shift + its owner, and upper and work belong to
// shift. The overlay is unmounted at the end of the test if it still is
// (after the containers that use it are gone: cleanups run last first).
func rtOverlayRootfs(t *testing.T, b *Bundle, shift uint32) *rtLayers {
	t.Helper()
	dir := t.TempDir() // 0700, as containerd's and containers/storage's are
	l := &rtLayers{Dir: dir, Lower: filepath.Join(dir, "lower"), Upper: filepath.Join(dir, "upper"),
		Work: filepath.Join(dir, "work"), Merged: filepath.Join(b.Dir, "rootfs")}
	if out, err := exec.Command("cp", "-a", l.Merged, l.Lower).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v: %s", l.Merged, l.Lower, err, out)
	}
	for _, d := range []string{l.Upper, l.Work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if shift > 0 {
		err := filepath.WalkDir(l.Lower, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return err
			}
			return os.Lchown(p, int(shift+st.Uid), int(shift+st.Gid))
		})
		if err != nil {
			t.Fatalf("chown the lower layer for the mapping: %v", err)
		}
		for _, d := range []string{l.Upper, l.Work} {
			if err := os.Chown(d, int(shift), int(shift)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.RemoveAll(l.Merged); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(l.Merged, 0o755); err != nil {
		t.Fatal(err)
	}
	l.Mount(t)
	t.Cleanup(func() {
		for rtMountAt(t, l.Merged) != nil {
			if err := unix.Unmount(l.Merged, unix.MNT_DETACH); err != nil {
				t.Errorf("cleanup: umount %s: %v", l.Merged, err)
				return
			}
		}
	})
	return l
}

// Mount mounts the overlay of the layers at Merged, as a CRI runtime does
// for a container's rootfs.
func (l *rtLayers) Mount(t *testing.T) {
	t.Helper()
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", l.Lower, l.Upper, l.Work)
	if err := unix.Mount("overlay", l.Merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay on %s: %v", l.Merged, err)
	}
}

// rtMountAt returns the top mount at mountpoint in the host's mount table,
// or nil.
func rtMountAt(t *testing.T, mountpoint string) *mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mountpoint))
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) == 0 {
		return nil
	}
	top := infos[0]
	for _, i := range infos[1:] {
		if i.Parent == top.ID {
			top = i
		}
	}
	return top
}

// rtUniqueMountID returns the 64-bit mount ID (never reused, unlike
// mountinfo's) of the mount at path.
func rtUniqueMountID(t *testing.T, path string) uint64 {
	t.Helper()
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID_UNIQUE, &stx); err != nil {
		t.Fatalf("statx %s: %v", path, err)
	}
	if stx.Mask&unix.STATX_MNT_ID_UNIQUE == 0 {
		t.Skip("statx has no STATX_MNT_ID_UNIQUE here (Linux < 6.8)")
	}
	return stx.Mnt_id
}

// rtRequireOverlayAt fails unless the top mount at merged is an overlay,
// and returns it.
func rtRequireOverlayAt(t *testing.T, merged string) *mountinfo.Info {
	t.Helper()
	m := rtMountAt(t, merged)
	if m == nil || m.FSType != "overlay" {
		t.Fatalf("mount at %s: %+v, want an overlay", merged, m)
	}
	return m
}

// rtLowerdir returns the lowerdir option of an overlay's superblock options.
func rtLowerdir(m *mountinfo.Info) string {
	for _, o := range strings.Split(m.VFSOptions, ",") {
		if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
			return v
		}
	}
	return ""
}

// rtUmountLikeCRI unmounts the overlay at merged the way a CRI runtime does
// once the container is deleted (a plain umount, not a lazy one) and checks
// that nothing of the test's stays mounted: nothing at or below the bundle,
// nothing naming the layers or the shim's state dir.
func rtUmountLikeCRI(t *testing.T, e *Env, b *Bundle, l *rtLayers) {
	t.Helper()
	if err := unix.Unmount(l.Merged, 0); err != nil {
		t.Fatalf("umount %s after delete (what the CRI runtime does): %v", l.Merged, err)
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == b.Dir || strings.HasPrefix(f[4], b.Dir+"/")) ||
			strings.Contains(line, e.StateDir) || strings.Contains(line, l.Dir) {
			t.Errorf("after umount %s: still mounted: %s", l.Merged, line)
		}
	}
}

// TestRootfsDir: a directory rootfs nobody chowned (owned by host root) is
// usable by container root: it creates files in /etc and /root, which land
// on disk as uid 0 (the rootfs is ID-mapped); image files show and keep
// their on-disk owners (0, and 1000 for /etc/user-file); exec works while
// the staging path holds no mount.
func TestRootfsDir(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		e, b, _ := rtSetup(t, rt, 0, i, "sh", "-c", rtInitScript)
		rootfs := filepath.Join(b.Dir, "rootfs")
		id := "rt-dir-" + rt.Name

		imCreateStart(t, e, b, id) // no staging mount after create
		rtRequireRootfs(t, e, id, rootfs, rtKindDir, imTreatShim)
		b.Load(t)
		staged := filepath.Join(e.StateDir, "staging", id, "rootfs")
		if b.Spec.Root.Path != staged {
			t.Errorf("config.json root.path %s, want the shim's ID-mapped clone %s", b.Spec.Root.Path, staged)
		}
		if ents, err := os.ReadDir(staged); err != nil || len(ents) != 0 {
			t.Errorf("staging rootfs path %s after create: %d entries, %v; want an empty directory (runc exec's cwd)", staged, len(ents), err)
		}

		// The container's own process: what it wrote lands in the bundle's rootfs.
		init := rtWaitFile(t, filepath.Join(rootfs, "root", "ls-init"))
		rtRequireOwners(t, "ls -ln by the container's process", rtParseLs(init), rtImageOwners)

		// exec, as container root, the brief's command.
		out := imExec(t, e, id, "sh", "-c", "touch /etc/new-etc /root/new-root && ls -ln /etc/hosts /bin/busybox /etc/user-file")
		rtRequireOwners(t, "exec ls -ln", rtParseLs(out), rtImageOwners)
		imRequireOwnersInside(t, e, id, "/etc", map[string]string{"new": "0:0", "new-etc": "0:0"})
		lcRequireRootInside(t, e, id)

		rtRequireHostOwners(t, "directory rootfs", rootfs, map[string]string{
			"etc/new": "0:0", "root/new": "0:0", "etc/new-etc": "0:0", "root/new-root": "0:0", "root/ls-init": "0:0",
			"etc/hosts": "0:0", "bin/busybox": "0:0", "etc/user-file": "1000:1000", "etc": "0:0", "root": "0:0",
		})
		imDelete(t, e, id) // no staging mount or directory after delete
		if m := rtMountAt(t, rootfs); m != nil {
			t.Errorf("after delete: %s is a mount point: %+v", rootfs, m)
		}
	})
}

// rtRequireOverlayWorks checks a running container id whose rootfs is the
// overlay l (re-mounted by the shim, or prepared by the CRI runtime; its
// layers shifted by shift): container root sees the image's owners, creates
// files in /etc and /root, copies up files; what lands in upperdir is
// reported; the lower layer on disk keeps its owners.
func rtRequireOverlayWorks(t *testing.T, e *Env, id string, l *rtLayers, host, shift uint32) {
	t.Helper()
	init := rtWaitFile(t, filepath.Join(l.Upper, "root", "ls-init"))
	rtRequireOwners(t, "ls -ln by the container's process", rtParseLs(init), rtImageOwners)
	out := imExec(t, e, id, "sh", "-c", "touch /etc/new-etc /root/new-root && ls -ln /etc/hosts /bin/busybox /etc/user-file")
	rtRequireOwners(t, "exec ls -ln", rtParseLs(out), rtImageOwners)
	if got := imExec(t, e, id, "cat", "/etc/user-file"); got != "user\n" {
		t.Errorf("cat /etc/user-file inside: %q, want the lower layer's \"user\\n\"", got)
	}
	// Copy-ups: container root changes an image file of root's, uid 1000
	// one of its own (runc spec's capabilities have no CAP_FOWNER).
	imExec(t, e, id, "sh", "-c", "echo 10.0.0.1 x >> /etc/hosts")
	lcMustShim(e, "exec", "--user", "1000:1000", id, "touch", "/etc/user-file", "/tmp/by-1000")
	imRequireOwnersInside(t, e, id, "/etc", map[string]string{"new": "0:0", "new-etc": "0:0", "hosts": "0:0", "user-file": "1000:1000"})
	imRequireOwnersInside(t, e, id, "/tmp", map[string]string{"by-1000": "1000:1000"})

	// upperdir is in host IDs (not ID-mapped): container root's files are
	// the mapped root's, a copy-up keeps the owner seen through the lower.
	h, h1000 := fmt.Sprintf("%d:%d", host, host), fmt.Sprintf("%d:%d", host+1000, host+1000)
	upper := map[string]string{
		"etc/new": h, "root/new": h, "etc/new-etc": h, "root/new-root": h, "root/ls-init": h,
		"etc/hosts": h, "etc/user-file": h1000, "tmp/by-1000": h1000,
	}
	for _, rel := range []string{"", "etc", "root", "tmp", "etc/new", "etc/hosts", "etc/user-file", "tmp/by-1000"} {
		t.Logf("upperdir: %-16s owned by %s on disk", "/"+rel, imHostOwner(t, filepath.Join(l.Upper, rel)))
	}
	rtRequireHostOwners(t, "upperdir", l.Upper, upper)
	s0, s1000 := fmt.Sprintf("%d:%d", shift, shift), fmt.Sprintf("%d:%d", shift+1000, shift+1000)
	rtRequireHostOwners(t, "lower layer", l.Lower, map[string]string{
		"etc/hosts": s0, "bin/busybox": s0, "etc/user-file": s1000, "etc": s0, "root": s0,
	})
	for _, rel := range []string{"etc/new", "root/new", "root/ls-init"} {
		if _, err := os.Lstat(filepath.Join(l.Lower, rel)); err == nil {
			t.Errorf("lower layer: %s exists: a write went to the lower layer", rel)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(l.Lower, "etc", "hosts")); len(data) != 0 {
		t.Errorf("lower layer: etc/hosts holds %q: a write went to the lower layer", data)
	}
	// What the host sees through the merged view (observation).
	for _, rel := range []string{"etc/hosts", "etc/user-file", "bin/busybox", "etc/new"} {
		t.Logf("host view of %s: owned by %s", filepath.Join(l.Merged, rel), imHostOwner(t, filepath.Join(l.Merged, rel)))
	}
}

// TestRootfsOverlay: an overlay mounted at <bundle>/rootfs (what CRI-O,
// containerd and podman hand over), its layers owned by host root, is
// re-mounted in place over ID-mapped lower layers; container root creates
// files in /etc and /root, which land in upperdir as the mapped root; the
// lower layer keeps its owners; after delete the CRI runtime's plain umount
// works and leaves nothing mounted. Also with the bundle dir 0700
// (containerd 1.6), where the shim binds the overlay at a staging path.
func TestRootfsOverlay(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		for k, shape := range []string{"reachable", "bundle-0700"} {
			t.Run(shape, func(t *testing.T) {
				e, b, want := rtSetup(t, rt, 1+k, i, "sh", "-c", rtInitScript)
				l := rtOverlayRootfs(t, b, 0)
				b.Spec.Root.Path = "rootfs"
				b.Save(t)
				if shape == "bundle-0700" {
					if err := os.Chmod(b.Dir, 0o700); err != nil {
						t.Fatal(err)
					}
				}
				before, beforeID := rtRequireOverlayAt(t, l.Merged), rtUniqueMountID(t, l.Merged)
				id := fmt.Sprintf("rt-overlay-%s-%s", shape, rt.Name)

				imCreateStart(t, e, b, id) // no staging mount after create
				rec := rtRequireRootfs(t, e, id, l.Merged, rtKindOverlay, imTreatShim)
				b.Load(t)
				staged := filepath.Join(e.StateDir, "staging", id, "rootfs")
				switch shape {
				case "reachable":
					if b.Spec.Root.Path != "rootfs" {
						t.Errorf("config.json root.path %q, want \"rootfs\" kept (the overlay is re-mounted in place)", b.Spec.Root.Path)
					}
				case "bundle-0700":
					if b.Spec.Root.Path != staged {
						t.Errorf("config.json root.path %q, want the staging bind %s (bundle dir 0700)", b.Spec.Root.Path, staged)
					}
					if !strings.Contains(rec.Reason, staged) {
						t.Errorf("rootfs reason %q does not name the staging bind %s", rec.Reason, staged)
					}
				}

				// The host still has an overlay at <bundle>/rootfs, a new one,
				// over the shim's (now detached) ID-mapped lower layers.
				after := rtRequireOverlayAt(t, l.Merged)
				lower := rtLowerdir(after)
				t.Logf("overlay at %s before create: lowerdir=%s; after: lowerdir=%s upperdir/workdir unchanged: %v",
					l.Merged, rtLowerdir(before), lower, strings.Contains(after.VFSOptions, "upperdir="+l.Upper))
				if afterID := rtUniqueMountID(t, l.Merged); afterID == beforeID || !strings.HasPrefix(lower, filepath.Join(e.StateDir, "staging", id)+"/") {
					t.Errorf("overlay at %s after create: unique mount id %d (before %d), lowerdir=%s: want a new overlay over the shim's staging paths", l.Merged, afterID, beforeID, lower)
				}
				if !strings.Contains(after.VFSOptions, "upperdir="+l.Upper) || !strings.Contains(after.VFSOptions, "workdir="+l.Work) {
					t.Errorf("overlay at %s after create: options %s, want upperdir %s and workdir %s kept", l.Merged, after.VFSOptions, l.Upper, l.Work)
				}
				if _, err := os.Stat(lower); err == nil {
					t.Logf("staging lower %s still exists after create", lower)
				}

				rtRequireOverlayWorks(t, e, id, l, want.HostID, 0)
				t.Logf("upperdir %s and workdir %s now owned by %s and %s", l.Upper, l.Work, imHostOwner(t, l.Upper), imHostOwner(t, l.Work))
				lcRequireRootInside(t, e, id)

				imDelete(t, e, id) // no staging mount or directory after delete
				if m := rtMountAt(t, l.Merged); m == nil || m.FSType != "overlay" {
					t.Errorf("after delete: mount at %s %+v, want the overlay still there for the CRI runtime to unmount", l.Merged, m)
				}
				rtUmountLikeCRI(t, e, b, l)
			})
		}
	})
}

// TestRootfsPrepared: an overlay whose layers the CRI runtime already
// chowned for the mapping (on-disk uid = H + image uid) is left alone and
// works: image files show their image owners inside.
func TestRootfsPrepared(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		e, b, want := rtSetup(t, rt, 3, i, "sh", "-c", rtInitScript)
		l := rtOverlayRootfs(t, b, want.HostID)
		b.Spec.Root.Path = "rootfs"
		b.Save(t)
		before, beforeID := rtRequireOverlayAt(t, l.Merged), rtUniqueMountID(t, l.Merged)
		id := "rt-prepared-" + rt.Name

		imCreateStart(t, e, b, id)
		rec := rtRequireRootfs(t, e, id, l.Merged, rtKindPrepared, imTreatSkipped)
		if !strings.Contains(rec.Reason, l.Lower) {
			t.Errorf("rootfs reason %q does not name the chowned layer %s", rec.Reason, l.Lower)
		}
		b.Load(t)
		if b.Spec.Root.Path != "rootfs" {
			t.Errorf("config.json root.path %q, want \"rootfs\" untouched", b.Spec.Root.Path)
		}
		after, afterID := rtRequireOverlayAt(t, l.Merged), rtUniqueMountID(t, l.Merged)
		if afterID != beforeID || after.VFSOptions != before.VFSOptions {
			t.Errorf("overlay at %s: was unique mount id %d %s, now %d %s: want it untouched", l.Merged, beforeID, before.VFSOptions, afterID, after.VFSOptions)
		}
		if _, err := os.Lstat(filepath.Join(e.StateDir, "staging", id)); err == nil {
			t.Errorf("staging directory for %s exists: nothing was to be staged", id)
		}

		rtRequireOverlayWorks(t, e, id, l, want.HostID, want.HostID)
		imDelete(t, e, id)
		rtUmountLikeCRI(t, e, b, l)
	})
}

// TestRootfsRunOverlay: a foreground run with an overlay rootfs works and
// leaves nothing of the shim's: no staging mount or directory, no record;
// the CRI runtime's umount then leaves nothing mounted.
func TestRootfsRunOverlay(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		e, b, want := rtSetup(t, rt, 4, i, "sh", "-c",
			"touch /etc/new /root/new && ls -ln /etc/hosts /bin/busybox /etc/user-file && echo done")
		l := rtOverlayRootfs(t, b, 0)
		b.Spec.Root.Path = "rootfs"
		b.Save(t)
		id := "rt-run-overlay-" + rt.Name
		lcCleanup(t, e, id)

		r := lcShim(e, "run", "--bundle", b.Dir, id)
		if r.Code != 0 || !strings.Contains(r.Stdout, "done") {
			t.Fatalf("run %s: exit %d stdout %q stderr %q, want 0 and \"done\"", id, r.Code, r.Stdout, r.Stderr)
		}
		rtRequireOwners(t, "ls -ln in a run", rtParseLs(r.Stdout), rtImageOwners)
		h := fmt.Sprintf("%d:%d", want.HostID, want.HostID)
		rtRequireHostOwners(t, "upperdir after a run", l.Upper, map[string]string{"etc/new": h, "root/new": h})
		rtRequireHostOwners(t, "lower layer after a run", l.Lower, map[string]string{"etc/hosts": "0:0", "etc/user-file": "1000:1000"})

		imWaitNoStaging(t, e, "after the foreground run of "+id)
		if _, err := os.Lstat(filepath.Join(e.StateDir, "staging", id)); err == nil {
			t.Errorf("after the run of %s: its staging directory is still there", id)
		}
		lcRequireNoRecord(t, e, id)
		if st := lcShim(e, "state", id); st.Code == 0 {
			t.Errorf("state %s after a foreground run: exit 0, want no container\n%s", id, st.Stdout)
		}
		rtRequireOverlayAt(t, l.Merged)
		rtUmountLikeCRI(t, e, b, l)
	})
}
