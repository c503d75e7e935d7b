package integration

// ID-mapped mount tests: host-backed volumes of a container with a user
// namespace are ID-mapped by the shim itself, whatever the runtime, and
// checked the way a user checks them: `ls -ln` inside the container, the
// owner on disk of files the container writes, the shim's record (`shim
// inspect`), the error of a refused create, and the host's mount table.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Annotations and record values as the contract names them.
const (
	imAnnNoIDMap       = "userns-shim.io/no-idmap"
	imTreatShim        = "idmapped by the shim"
	imTreatSkipped     = "left alone"
	imTreatUnsupported = "left unmapped: filesystem without ID-mapped mount support"
	imOverflow         = "65534:65534" // overflowuid:overflowgid, an unmapped ID seen inside
)

// imHost returns a host ID range start distinct for each (test, runtime)
// pair and from the lc tests' ranges.
func imHost(test, rt int) uint32 {
	return uint32(20_000_000 + test*1_000_000 + rt*100_000)
}

// imSetup makes an env (extra is TOML for the shim's config) and a bundle
// running args whose mapping comes from the uid-mappings annotation.
func imSetup(t *testing.T, rt Runtime, test, rtIndex int, extra string, args ...string) (*Env, *Bundle, specs.LinuxIDMapping) {
	t.Helper()
	want := lcRange(imHost(test, rtIndex))
	e := newEnv(t, rt, extra)
	b := newBundle(t, args...)
	b.Spec.Annotations = map[string]string{lcAnnUIDMappings: lcAnnotation(want)}
	b.Save(t)
	return e, b, want
}

// imReachable makes every directory from dir up to the temp dir 0755, as
// newBundle does for the bundle: the container's mapped root must be able
// to reach a volume's source. (The state dir, where the staging mounts
// live, is deliberately left below the 0700 temp dir newEnv makes.)
func imReachable(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// imWrite writes a file owned by uid:gid (mode 0644).
func imWrite(t *testing.T, path, data string, uid, gid int) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// imFillVolume puts root-file (owned by host 0:0) and user-file (host
// 1000:1000) into dir and makes dir world-writable, like an emptyDir, so
// that a uid-1000 process can create files in it.
func imFillVolume(t *testing.T, dir string) {
	t.Helper()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	imWrite(t, filepath.Join(dir, "root-file"), "root\n", 0, 0)
	imWrite(t, filepath.Join(dir, "user-file"), "user\n", 1000, 1000)
}

// imVolume makes a volume directory on the root ext4 (the test's temp dir,
// path 0755) holding root-file and user-file.
func imVolume(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "vol")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	imReachable(t, filepath.Dir(dir))
	imFillVolume(t, dir)
	return dir
}

// imTmpfs mounts a fresh tmpfs (mode 1777, like a pod's /dev/shm or a
// secret volume's) on a temp dir and unmounts it at the end of the test,
// after the containers that use it are gone.
func imTmpfs(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	imReachable(t, filepath.Dir(dir))
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size=16m"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	imUnmountAtCleanup(t, dir)
	return dir
}

// imOverlay mounts an overlay on mountpoint (made if missing) whose lower
// layer holds root-file and user-file, and unmounts it at the end of the test.
func imOverlay(t *testing.T, mountpoint string) {
	t.Helper()
	layers := t.TempDir()
	imReachable(t, layers)
	lower, upper, work := filepath.Join(layers, "lower"), filepath.Join(layers, "upper"), filepath.Join(layers, "work")
	for _, d := range []string{lower, upper, work, mountpoint} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	imReachable(t, filepath.Dir(mountpoint))
	imFillVolume(t, lower)
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", mountpoint, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay on %s: %v", mountpoint, err)
	}
	imUnmountAtCleanup(t, mountpoint)
}

func imUnmountAtCleanup(t *testing.T, dir string) {
	t.Helper()
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("cleanup: umount %s: %v", dir, err)
		}
	})
}

// imBind is a bind mount as a CRI runtime writes one for a volume (options
// rbind,rprivate,rw unless opts are given).
func imBind(dst, src string, opts ...string) specs.Mount {
	if len(opts) == 0 {
		opts = []string{"rbind", "rprivate", "rw"}
	}
	return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts}
}

// imAddMount appends m to the bundle's spec (replacing any mount at the same
// destination) and makes its mount point in the rootfs, which belongs to
// host root: the container's root could not make it.
func imAddMount(t *testing.T, b *Bundle, m specs.Mount) {
	t.Helper()
	var kept []specs.Mount
	for _, old := range b.Spec.Mounts {
		if filepath.Clean(old.Destination) != filepath.Clean(m.Destination) {
			kept = append(kept, old)
		}
	}
	b.Spec.Mounts = append(kept, m)
	b.Save(t)
	if strings.HasPrefix(m.Destination, "/dev/") {
		return // /dev is a tmpfs the runtime makes inside the container
	}
	point := filepath.Join(b.Dir, "rootfs", m.Destination)
	if _, err := os.Lstat(point); err == nil {
		return
	}
	if fi, err := os.Stat(m.Source); err == nil && !fi.IsDir() {
		imWrite(t, point, "", 0, 0)
		return
	}
	if err := os.MkdirAll(point, 0o755); err != nil {
		t.Fatal(err)
	}
}

// imExec runs args in container id and fails the test on a non-zero exit.
func imExec(t *testing.T, e *Env, id string, args ...string) string {
	t.Helper()
	return lcMustShim(e, append([]string{"exec", id}, args...)...).Stdout
}

// imOwnersInside returns "uid:gid" per name as `ls -ln dir` shows them in
// container id.
func imOwnersInside(t *testing.T, e *Env, id, dir string) map[string]string {
	t.Helper()
	out := imExec(t, e, id, "ls", "-ln", dir)
	owners := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || f[0] == "total" {
			continue
		}
		owners[f[len(f)-1]] = f[2] + ":" + f[3]
	}
	return owners
}

// imRequireOwnersInside fails unless `ls -ln dir` inside shows each file of
// want with that owner.
func imRequireOwnersInside(t *testing.T, e *Env, id, dir string, want map[string]string) {
	t.Helper()
	got := imOwnersInside(t, e, id, dir)
	for name, owner := range want {
		if got[name] != owner {
			t.Errorf("in %s: ls -ln %s: %s owned by %q, want %s (all: %v)", id, dir, name, got[name], owner, got)
		}
	}
}

// imHostOwner returns "uid:gid" of path on the host.
func imHostOwner(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("on the host: %v", err)
	}
	return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
}

// imRequireVolumeMapped is what a user checks of an ID-mapped volume at
// ctrDir (host hostDir) of container id: files keep their on-disk owners
// inside, and files made by container root and by uid 1000 land on disk as
// 0 and 1000.
func imRequireVolumeMapped(t *testing.T, e *Env, id, ctrDir, hostDir string) {
	t.Helper()
	imRequireOwnersInside(t, e, id, ctrDir, map[string]string{"root-file": "0:0", "user-file": "1000:1000"})

	imExec(t, e, id, "touch", ctrDir+"/by-root")
	if got := imHostOwner(t, filepath.Join(hostDir, "by-root")); got != "0:0" {
		t.Errorf("file made by container root in %s: on disk %s, want 0:0", ctrDir, got)
	}
	lcMustShim(e, "exec", "--user", "1000:1000", id, "touch", ctrDir+"/by-1000")
	if got := imHostOwner(t, filepath.Join(hostDir, "by-1000")); got != "1000:1000" {
		t.Errorf("file made by container uid 1000 in %s: on disk %s, want 1000:1000", ctrDir, got)
	}
	imRequireOwnersInside(t, e, id, ctrDir, map[string]string{"by-root": "0:0", "by-1000": "1000:1000"})
}

// imMountRecord is one entry of mounts[] in `shim inspect`.
type imMountRecord struct {
	Destination string `json:"destination"`
	Source      string `json:"source"`
	Treatment   string `json:"treatment"`
	Reason      string `json:"reason"`
	Staging     string `json:"staging"`
}

// imInspectMount returns the shim's record of the mount at dst of container id.
func imInspectMount(t *testing.T, e *Env, id, dst string) imMountRecord {
	t.Helper()
	out := lcMustShim(e, "shim", "inspect", id).Stdout
	var rec struct {
		Mounts []imMountRecord `json:"mounts"`
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("shim inspect %s: not JSON: %v\n%s", id, err, out)
	}
	for _, m := range rec.Mounts {
		if m.Destination == dst {
			return m
		}
	}
	t.Fatalf("shim inspect %s: no mount at %s:\n%s", id, dst, out)
	return imMountRecord{}
}

// imRequireShimMapped fails unless the shim's record says it ID-mapped the
// mount at dst (host source src) itself, through a staging path in its state dir.
func imRequireShimMapped(t *testing.T, e *Env, id, dst, src string) {
	t.Helper()
	m := imInspectMount(t, e, id, dst)
	if m.Treatment != imTreatShim || m.Source != src || !strings.HasPrefix(m.Staging, e.StateDir+"/") {
		t.Errorf("shim inspect %s, mount %s: %+v, want treatment %q, source %s, staging under %s", id, dst, m, imTreatShim, src, e.StateDir)
	}
}

// imRequireNoStaging fails if the host's mount table holds any mount under
// the shim's state dir, or the state dir still holds staging paths.
func imRequireNoStaging(t *testing.T, e *Env, when string) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && imIsPin(e, fields[4]) {
			continue // a pod's pinned user namespace lives as long as the pod
		}
		if len(fields) > 4 && (fields[4] == e.StateDir || strings.HasPrefix(fields[4], e.StateDir+"/")) {
			t.Errorf("%s: host mount under the state dir: %s", when, sc.Text())
		}
	}
	for _, p := range imStagingLeft(e) {
		t.Errorf("%s: staging path left: %s", when, p)
	}
}

// imIsPin reports whether a mount point is a pod's pinned user namespace,
// <state_dir>/pods/<pod>/userns.
func imIsPin(e *Env, mountPoint string) bool {
	rest, ok := strings.CutPrefix(mountPoint, e.StateDir+"/pods/")
	pod, ok2 := strings.CutSuffix(rest, "/userns")
	return ok && ok2 && !strings.Contains(pod, "/")
}

// imStagingLeft lists what the state dir's staging holds beyond the empty
// rootfs directory the shim keeps for a live container (runc execs with the
// rootfs path as working directory; it holds no mount).
func imStagingLeft(e *Env) []string {
	var left []string
	staging := filepath.Join(e.StateDir, "staging")
	entries, _ := os.ReadDir(staging)
	for _, ent := range entries {
		dir := filepath.Join(staging, ent.Name())
		inside, _ := os.ReadDir(dir)
		if len(inside) == 1 && inside[0].Name() == "rootfs" && inside[0].IsDir() {
			if empty, _ := os.ReadDir(filepath.Join(dir, "rootfs")); len(empty) == 0 {
				continue
			}
		}
		left = append(left, dir)
	}
	return left
}

// imCreateStart creates (checking that no staging mount outlives create)
// and starts container id, and returns its pid.
func imCreateStart(t *testing.T, e *Env, b *Bundle, id string, globalFlags ...string) int {
	t.Helper()
	pid := lcCreate(t, e, b, id, globalFlags...)
	imRequireNoStaging(t, e, "after create of "+id)
	lcMustShim(e, "start", id)
	lcRequireStatus(t, e, id, specs.StateRunning)
	return pid
}

// imDelete kills and deletes container id and checks that nothing of the
// shim's stays mounted.
func imDelete(t *testing.T, e *Env, id string) {
	t.Helper()
	lcKillAndDelete(t, e, id)
	imRequireNoStaging(t, e, "after delete of "+id)
	if data, err := os.ReadFile(filepath.Join(e.StateDir, "pods.json")); err == nil && bytes.Contains(data, []byte(`"`+id+`"`)) {
		t.Errorf("after delete of %s: the pod registry still names it:\n%s", id, data)
	}
	if _, err := os.Lstat(filepath.Join(e.StateDir, "staging", id)); err == nil {
		t.Errorf("after delete of %s: its staging directory is still there", id)
	}
}

// imRequireRefused checks a refused create of container id: a non-zero exit,
// stderr one `userns-shim: ` line naming every string of wants, config.json
// as it was, no record, no container, no staging mount.
func imRequireRefused(t *testing.T, e *Env, b *Bundle, id string, before []byte, r Result, wants ...string) {
	t.Helper()
	requireRefusalLine(t, id, r, wants...)
	if after := b.Raw(t); !bytes.Equal(before, after) {
		t.Errorf("config.json changed by a refused create:\nbefore %s\nafter %s", before, after)
	}
	entries, err := os.ReadDir(filepath.Join(e.StateDir, "containers"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, ent := range entries {
		t.Errorf("state dir after a refused create holds %s", filepath.Join(e.StateDir, "containers", ent.Name()))
	}
	if st := lcShim(e, "state", id); st.Code == 0 {
		t.Errorf("state %s after a refused create: exit 0, want no container\n%s", id, st.Stdout)
	}
	imRequireNoStaging(t, e, "after the refused create of "+id)
}

// TestIDMapVolume: a volume on the root ext4 with files owned by host 0 and
// 1000 shows them as 0 and 1000 inside; container root's and uid 1000's new
// files land on disk as 0 and 1000.
func TestIDMapVolume(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		e, b, _ := imSetup(t, rt, 0, i, "", "sleep", "1000")
		vol := imVolume(t)
		imAddMount(t, b, imBind("/vol", vol))
		id := "im-vol-" + rt.Name

		imCreateStart(t, e, b, id)
		imRequireShimMapped(t, e, id, "/vol", vol)
		imRequireVolumeMapped(t, e, id, "/vol", vol)
		imDelete(t, e, id)
	})
}

// TestIDMapTmpfsVolume: a volume on a tmpfs of its own, like a secret or a
// projected token, works the same way.
func TestIDMapTmpfsVolume(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		e, b, _ := imSetup(t, rt, 1, i, "", "sleep", "1000")
		secret := imTmpfs(t)
		imFillVolume(t, secret)
		imAddMount(t, b, imBind("/secret", secret))
		id := "im-tmpfs-" + rt.Name

		imCreateStart(t, e, b, id)
		imRequireShimMapped(t, e, id, "/secret", secret)
		imRequireVolumeMapped(t, e, id, "/secret", secret)
		imDelete(t, e, id)
	})
}

// TestIDMapDevShm: the pod's /dev/shm, a tmpfs on the host bound CRI style
// in place of the runtime's own, works the same way.
func TestIDMapDevShm(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		e, b, _ := imSetup(t, rt, 2, i, "", "sleep", "1000")
		shm := imTmpfs(t)
		imFillVolume(t, shm)
		imAddMount(t, b, imBind("/dev/shm", shm, "rbind", "nosuid", "noexec", "nodev"))
		id := "im-shm-" + rt.Name

		imCreateStart(t, e, b, id)
		imRequireShimMapped(t, e, id, "/dev/shm", shm)
		imRequireVolumeMapped(t, e, id, "/dev/shm", shm)
		imDelete(t, e, id)
	})
}

// TestIDMapFileBind: single files bound like /etc/hosts (owned by host root)
// and a termination log (owned by 1000) keep their owners inside, and
// container root can write to /etc/hosts.
func TestIDMapFileBind(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		e, b, _ := imSetup(t, rt, 3, i, "", "sleep", "1000")
		dir := t.TempDir()
		imReachable(t, dir)
		hosts, termLog := filepath.Join(dir, "hosts"), filepath.Join(dir, "termination-log")
		imWrite(t, hosts, "127.0.0.1 localhost\n", 0, 0)
		imWrite(t, termLog, "", 1000, 1000)
		imAddMount(t, b, imBind("/etc/hosts", hosts))
		imAddMount(t, b, imBind("/dev/termination-log", termLog))
		id := "im-file-" + rt.Name

		imCreateStart(t, e, b, id)
		imRequireShimMapped(t, e, id, "/etc/hosts", hosts)
		imRequireShimMapped(t, e, id, "/dev/termination-log", termLog)
		for ctr, want := range map[string]string{"/etc/hosts": "0:0", "/dev/termination-log": "1000:1000"} {
			if got := strings.TrimSpace(imExec(t, e, id, "stat", "-c", "%u:%g", ctr)); got != want {
				t.Errorf("inside %s: %s owned by %q, want %s", id, ctr, got, want)
			}
		}
		imExec(t, e, id, "sh", "-c", "echo 10.0.0.1 extra >> /etc/hosts")
		data, err := os.ReadFile(hosts)
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != "127.0.0.1 localhost\n10.0.0.1 extra\n" {
			t.Errorf("hosts file on disk after container root appended a line: %q", data)
		}
		if got := imHostOwner(t, hosts); got != "0:0" {
			t.Errorf("hosts file on disk: owner %s, want 0:0", got)
		}
		imDelete(t, e, id)
	})
}

// TestIDMapJoinedPIDNamespace: a container that joins another container's
// PID namespace by path (both with the same mapping) gets its ID-mapped
// volume, every time (crun 1.8.1's own idmap fails here with EPERM, most
// runs). Two shapes:
//   - "pid": the second container joins only the PID namespace and gets a
//     user namespace of its own with the same mapping;
//   - "pod": it joins the first one's user and PID namespaces by path, as a
//     Kubernetes app container joins its pause container's, with the
//     mappings in linux.uidMappings/gidMappings as CRI-O writes them.
//
// runc 1.1.5 cannot run the "pid" shape at all, shim or not: its /proc mount
// fails with EPERM, because the joined PID namespace belongs to the first
// container's user namespace, over which the second one's root has no
// capability (reproduced with bare runc). That case is skipped when it
// fails exactly so.
func TestIDMapJoinedPIDNamespace(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		for k, shape := range []string{"pid", "pod"} {
			t.Run(shape, func(t *testing.T) {
				e, first, want := imSetup(t, rt, 4+k*10, i, "", "sleep", "1000")
				vol := imVolume(t)
				imAddMount(t, first, imBind("/vol", vol))
				firstID := fmt.Sprintf("im-%s-first-%s", shape, rt.Name)
				// One CRI-O pod without a pause container: its first app
				// container names the sandbox, the others join it.
				podAnn := map[string]string{"io.kubernetes.cri-o.ContainerType": "container", "io.kubernetes.cri-o.SandboxID": firstID}
				maps.Copy(first.Spec.Annotations, podAnn)
				first.Save(t)
				firstPid := imCreateStart(t, e, first, firstID)
				imRequireVolumeMapped(t, e, firstID, "/vol", vol)
				joined := map[specs.LinuxNamespaceType]string{specs.PIDNamespace: fmt.Sprintf("/proc/%d/ns/pid", firstPid)}
				if shape == "pod" {
					joined[specs.UserNamespace] = fmt.Sprintf("/proc/%d/ns/user", firstPid)
				}
				wantNS := map[specs.LinuxNamespaceType]string{}
				// Either way the pod has one user namespace.
				for typ, path := range map[specs.LinuxNamespaceType]string{specs.PIDNamespace: joined[specs.PIDNamespace], specs.UserNamespace: fmt.Sprintf("/proc/%d/ns/user", firstPid)} {
					var err error
					if wantNS[typ], err = os.Readlink(path); err != nil {
						t.Fatal(err)
					}
				}

				for n := range 3 {
					b := newBundle(t, "sleep", "1000")
					if shape == "pod" {
						// Joined by path with the mappings written too, as
						// CRI-O does: runc refuses a joined user namespace
						// without them.
						b.Spec.Linux.UIDMappings = []specs.LinuxIDMapping{want}
						b.Spec.Linux.GIDMappings = []specs.LinuxIDMapping{want}
					} else {
						b.Spec.Annotations = map[string]string{lcAnnUIDMappings: lcAnnotation(want)}
					}
					if b.Spec.Annotations == nil {
						b.Spec.Annotations = map[string]string{}
					}
					maps.Copy(b.Spec.Annotations, podAnn)
					imJoin(b.Spec, joined)
					b.Save(t)
					vol2 := imVolume(t)
					imAddMount(t, b, imBind("/vol", vol2))
					id := fmt.Sprintf("im-%s-second%d-%s", shape, n, rt.Name)
					lcCleanup(t, e, id)

					r := lcShim(e, "create", "--bundle", b.Dir, id)
					if r.Code != 0 && rt.Name == "runc" && shape == "pid" && strings.Contains(r.Stderr, `error mounting \"proc\" to rootfs at \"/proc\"`) &&
						strings.Contains(r.Stderr, "operation not permitted") {
						imRequireNoStaging(t, e, "after the failed create of "+id)
						t.Skipf("runc 1.1.5 cannot mount /proc for a PID namespace owned by another user namespace (not the shim's doing):\n%s", r.Stderr)
					}
					if r.Code != 0 {
						t.Fatalf("userns-shim create %s: exit %d\nstderr: %s", id, r.Code, r.Stderr)
					}
					imRequireNoStaging(t, e, "after create of "+id)
					lcMustShim(e, "start", id)
					pid := lcRequireStatus(t, e, id, specs.StateRunning).Pid
					for typ, w := range wantNS {
						if got, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, imNSFile(typ))); got != w {
							t.Errorf("%s: %s namespace %s, want the first container's %s", id, typ, got, w)
						}
					}
					lcRequireProcMaps(t, pid, want)
					imRequireShimMapped(t, e, id, "/vol", vol2)
					imRequireVolumeMapped(t, e, id, "/vol", vol2)
					imDelete(t, e, id)
				}
				imDelete(t, e, firstID)
			})
		}
	})
}

// imJoin sets the paths of the spec's namespaces of the types in joined,
// adding entries that are missing.
func imJoin(s *specs.Spec, joined map[specs.LinuxNamespaceType]string) {
	for typ, path := range joined {
		found := false
		for k := range s.Linux.Namespaces {
			if s.Linux.Namespaces[k].Type == typ {
				s.Linux.Namespaces[k].Path, found = path, true
			}
		}
		if !found {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: typ, Path: path})
		}
	}
}

// imNSFile is the /proc/PID/ns file of a namespace type.
func imNSFile(typ specs.LinuxNamespaceType) string {
	if typ == specs.NetworkNamespace {
		return "net"
	}
	return string(typ)
}

// TestIDMapUnsupportedFS: a volume on an overlay, which cannot be ID-mapped:
// refused by default with an error naming the mount (and the Kubernetes
// volume when it is one), left unmapped with a warning in warn mode.
func TestIDMapUnsupportedFS(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		t.Run("fail", func(t *testing.T) {
			e, b, _ := imSetup(t, rt, 5, i, "", "sleep", "1000")
			// A good volume first: its staging mount must go with the refusal.
			imAddMount(t, b, imBind("/vol", imVolume(t)))
			merged := filepath.Join(t.TempDir(), "merged")
			imOverlay(t, merged)
			imAddMount(t, b, imBind("/data", merged))
			before := b.Raw(t)
			id := "im-overlay-fail-" + rt.Name
			lcCleanup(t, e, id)

			r := lcShim(e, "create", "--bundle", b.Dir, id)
			imRequireRefused(t, e, b, id, before, r, "/data", merged, "overlay")
		})

		t.Run("fail-kubelet", func(t *testing.T) {
			kubelet := t.TempDir()
			e, b, _ := imSetup(t, rt, 6, i, fmt.Sprintf("kubelet_root = %q", kubelet), "sleep", "1000")
			cache := filepath.Join(kubelet, "pods", "6f1e2d3c-b4a5-4697-8899-aabbccddee0"+strconv.Itoa(i),
				"volumes", "kubernetes.io~empty-dir", "cache")
			imOverlay(t, cache)
			imAddMount(t, b, imBind("/cache", cache))
			before := b.Raw(t)
			id := "im-overlay-kubelet-" + rt.Name
			lcCleanup(t, e, id)

			r := lcShim(e, "create", "--bundle", b.Dir, id)
			imRequireRefused(t, e, b, id, before, r, "/cache", cache, "overlay", `volume "cache"`)
		})

		t.Run("warn", func(t *testing.T) {
			e, b, _ := imSetup(t, rt, 7, i, `on_unsupported_fs = "warn"`, "sleep", "1000")
			vol := imVolume(t)
			imAddMount(t, b, imBind("/vol", vol))
			merged := filepath.Join(t.TempDir(), "merged")
			imOverlay(t, merged)
			imAddMount(t, b, imBind("/data", merged))
			id := "im-overlay-warn-" + rt.Name
			logFile := filepath.Join(t.TempDir(), "log.json")

			imCreateStart(t, e, b, id, "--log", logFile, "--log-format", "json")
			imRequireOwnersInside(t, e, id, "/data", map[string]string{"root-file": imOverflow, "user-file": imOverflow})
			imRequireVolumeMapped(t, e, id, "/vol", vol)
			imRequireShimMapped(t, e, id, "/vol", vol)
			if m := imInspectMount(t, e, id, "/data"); m.Treatment != imTreatUnsupported || m.Reason != "overlay" || m.Staging != "" {
				t.Errorf("shim inspect, mount /data: %+v, want treatment %q reason overlay and no staging", m, imTreatUnsupported)
			}
			imRequireWarning(t, logFile, "/data", merged, "overlay")
			imDelete(t, e, id)
		})
	})
}

// imRequireWarning fails unless the JSON log file has a warning entry whose
// message names every string of wants.
func imRequireWarning(t *testing.T, logFile string, wants ...string) {
	t.Helper()
	data, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var entry struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil || (entry.Level != "warning" && entry.Level != "warn") {
			continue
		}
		found := true
		for _, w := range wants {
			found = found && strings.Contains(entry.Msg, w)
		}
		if found {
			return
		}
	}
	t.Errorf("log %s has no warning entry naming %q:\n%s", logFile, wants, data)
}

// TestIDMapNoIDMapAnnotation: a mount listed in userns-shim.io/no-idmap is
// left unmapped (its files show as the overflow ID inside) while the other
// volumes are mapped.
func TestIDMapNoIDMapAnnotation(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		e, b, _ := imSetup(t, rt, 8, i, "", "sleep", "1000")
		vol, raw := imVolume(t), imVolume(t)
		imAddMount(t, b, imBind("/vol", vol))
		imAddMount(t, b, imBind("/raw", raw))
		b.Spec.Annotations[imAnnNoIDMap] = "/elsewhere, /raw/"
		b.Save(t)
		id := "im-noidmap-" + rt.Name

		imCreateStart(t, e, b, id)
		imRequireOwnersInside(t, e, id, "/raw", map[string]string{"root-file": imOverflow, "user-file": imOverflow})
		if m := imInspectMount(t, e, id, "/raw"); m.Treatment != imTreatSkipped || !strings.Contains(m.Reason, imAnnNoIDMap) || m.Staging != "" {
			t.Errorf("shim inspect, mount /raw: %+v, want treatment %q for the %s annotation", m, imTreatSkipped, imAnnNoIDMap)
		}
		imRequireShimMapped(t, e, id, "/vol", vol)
		imRequireVolumeMapped(t, e, id, "/vol", vol)
		imDelete(t, e, id)
	})
}

// TestIDMapSymlinkSource: a volume whose source is a symlink is refused with
// a message naming it; the staging mount of the good volume before it goes.
func TestIDMapSymlinkSource(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		e, b, _ := imSetup(t, rt, 9, i, "", "sleep", "1000")
		imAddMount(t, b, imBind("/vol", imVolume(t)))
		link := filepath.Join(t.TempDir(), "link")
		if err := os.Symlink(imVolume(t), link); err != nil {
			t.Fatal(err)
		}
		imAddMount(t, b, imBind("/linked", link))
		before := b.Raw(t)
		id := "im-symlink-" + rt.Name
		lcCleanup(t, e, id)

		r := lcShim(e, "create", "--bundle", b.Dir, id)
		imRequireRefused(t, e, b, id, before, r, "/linked", link, "symlink")
	})
}

// imStartShim starts the shim with args (after --root) with its output in
// files, and returns a function that waits for it to exit.
func imStartShim(t *testing.T, e *Env, args ...string) func() Result {
	t.Helper()
	dir := t.TempDir()
	stdout, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cmd := exec.CommandContext(ctx, e.bin(), append([]string{"--root", e.RootDir}, args...)...)
	cmd.Env = e.environ()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	var r *Result
	wait := func() Result {
		if r != nil {
			return *r
		}
		err := cmd.Wait()
		cancel()
		stdout.Close()
		stderr.Close()
		r = &Result{}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			r.Code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				r.Code = 128 + int(ws.Signal())
			}
		} else if err != nil {
			t.Errorf("shim %s: %v", strings.Join(args, " "), err)
		}
		out, _ := os.ReadFile(stdout.Name())
		errOut, _ := os.ReadFile(stderr.Name())
		r.Stdout, r.Stderr = string(out), string(errOut)
		return *r
	}
	t.Cleanup(func() { wait() })
	return wait
}

// imWaitFile waits until path exists.
func imWaitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within 20s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// imWaitNoStaging waits (a run detaches the staging mounts and removes their
// directory once the runtime reports the container, asynchronously) until no
// staging mount or path is left, then checks again, reporting any.
func imWaitNoStaging(t *testing.T, e *Env, when string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		data, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(data, []byte(" "+e.StateDir+"/")) && len(imStagingLeft(e)) == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	imRequireNoStaging(t, e, when)
}

// TestIDMapNoHostMountsLeft: no mount of the shim's stays on the host once
// the container exists, for create, a foreground run (checked while its
// process still runs) and run -d, nor after delete. Refused creates are
// checked by TestIDMapUnsupportedFS and TestIDMapSymlinkSource.
func TestIDMapNoHostMountsLeft(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		t.Run("create", func(t *testing.T) {
			e, b, _ := imSetup(t, rt, 10, i, "", "sleep", "1000")
			vol := imVolume(t)
			shm := imTmpfs(t)
			imFillVolume(t, shm)
			imAddMount(t, b, imBind("/vol", vol))
			imAddMount(t, b, imBind("/dev/shm", shm, "rbind", "nosuid", "noexec", "nodev"))
			id := "im-left-create-" + rt.Name

			imCreateStart(t, e, b, id) // checks after create
			imRequireVolumeMapped(t, e, id, "/vol", vol)
			imRequireVolumeMapped(t, e, id, "/dev/shm", shm)
			imDelete(t, e, id) // checks after delete
		})

		t.Run("run-foreground", func(t *testing.T) {
			e, b, _ := imSetup(t, rt, 11, i, "", "sh", "-c",
				"ls -ln /vol > /vol/seen.tmp && mv /vol/seen.tmp /vol/seen; while [ ! -e /vol/go ]; do sleep 0.05; done; echo done")
			vol := imVolume(t)
			imAddMount(t, b, imBind("/vol", vol))
			id := "im-left-run-" + rt.Name
			lcCleanup(t, e, id)

			wait := imStartShim(t, e, "run", "--bundle", b.Dir, id)
			imWaitFile(t, filepath.Join(vol, "seen"))
			imWaitNoStaging(t, e, "while the process of a foreground run of "+id+" runs")
			seen, err := os.ReadFile(filepath.Join(vol, "seen"))
			if err != nil {
				t.Fatal(err)
			}
			owners := map[string]string{}
			for _, line := range strings.Split(string(seen), "\n") {
				if f := strings.Fields(line); len(f) >= 9 {
					owners[f[len(f)-1]] = f[2] + ":" + f[3]
				}
			}
			if owners["root-file"] != "0:0" || owners["user-file"] != "1000:1000" {
				t.Errorf("run %s: ls -ln /vol inside showed %v, want root-file 0:0 and user-file 1000:1000", id, owners)
			}
			if got := imHostOwner(t, filepath.Join(vol, "seen")); got != "0:0" {
				t.Errorf("file made by container root: on disk %s, want 0:0", got)
			}
			imWrite(t, filepath.Join(vol, "go"), "", 0, 0)
			r := wait()
			if r.Code != 0 || !strings.Contains(r.Stdout, "done") {
				t.Errorf("run %s: exit %d stdout %q stderr %q, want 0 and \"done\"", id, r.Code, r.Stdout, r.Stderr)
			}
			imRequireNoStaging(t, e, "after the foreground run of "+id)
			lcRequireNoRecord(t, e, id)
		})

		t.Run("run-detached", func(t *testing.T) {
			e, b, _ := imSetup(t, rt, 12, i, "", "sleep", "1000")
			vol := imVolume(t)
			imAddMount(t, b, imBind("/vol", vol))
			id := "im-left-rund-" + rt.Name
			lcCleanup(t, e, id)

			r := lcShim(e, "run", "-d", "--bundle", b.Dir, id)
			if r.Code != 0 {
				t.Fatalf("run -d %s: exit %d\nstderr: %s", id, r.Code, r.Stderr)
			}
			imRequireNoStaging(t, e, "after run -d of "+id)
			lcRequireStatus(t, e, id, specs.StateRunning)
			imRequireShimMapped(t, e, id, "/vol", vol)
			imRequireVolumeMapped(t, e, id, "/vol", vol)
			imDelete(t, e, id)
		})
	})
}

// TestIDMapRuntimeMode: with idmap = "runtime" the shim only asks the
// runtime for the ID-mapped mount (the idmap option and the mappings on the
// mount) and stages nothing. crun 1.8.1 honours the request for a bind
// mount; runc 1.1.5 ignores it, so the owners inside are checked on crun only.
func TestIDMapRuntimeMode(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		e, b, want := imSetup(t, rt, 14, i, `idmap = "runtime"`, "sleep", "1000")
		vol := imVolume(t)
		// A plain bind: crun 1.8.1 ignores ridmap, the recursive form.
		imAddMount(t, b, imBind("/vol", vol, "bind"))
		id := "im-rtmode-" + rt.Name

		imCreateStart(t, e, b, id)
		b.Load(t)
		var got *specs.Mount
		for i := range b.Spec.Mounts {
			if b.Spec.Mounts[i].Destination == "/vol" {
				got = &b.Spec.Mounts[i]
			}
		}
		if got == nil || got.Source != vol || !slices.Contains(got.Options, "idmap") ||
			len(got.UIDMappings) != 1 || got.UIDMappings[0] != want {
			t.Fatalf("mount /vol after create: %+v, want source %s, option idmap and uidMappings %v", got, vol, want)
		}
		if m := imInspectMount(t, e, id, "/vol"); m.Treatment != "idmap requested from the runtime" {
			t.Errorf("shim inspect: /vol treatment %q", m.Treatment)
		}
		if rt.Name == "crun" {
			imRequireVolumeMapped(t, e, id, "/vol", vol)
		}
		imDelete(t, e, id)
	})
}
