package integration

// Kill-point tests: the shim is SIGKILLed at each step of a create (a build
// with the failpoints tag stops itself there; a runtime wrapper holds the
// runtime's create while the test kills the shim). What a CRI runtime does
// after a failed create (delete --force) and `shim gc` must then leave the
// host as it was before that create, config.json must be the original or
// the complete rewrite, and the same create tried again must run.

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/failpoint"
)

var (
	kpBinOnce sync.Once
	kpBinPath string
	kpBinErr  error
)

// kpShimBin builds the shim with the failpoints tag once, next to shimBin
// (TestMain removes that directory).
func kpShimBin(t *testing.T) string {
	t.Helper()
	kpBinOnce.Do(func() {
		kpBinPath = filepath.Join(filepath.Dir(shimBin), "userns-shim-failpoints")
		out, err := exec.Command("go", "build", "-tags", "failpoints", "-o", kpBinPath, "../cmd/userns-shim").CombinedOutput()
		if err != nil {
			kpBinErr = fmt.Errorf("go build -tags failpoints: %v\n%s", err, out)
		}
	})
	if kpBinErr != nil {
		t.Fatal(kpBinErr)
	}
	return kpBinPath
}

// kpHoldEnv set to "before" or "after" makes kpHoldingRuntime's wrapper hold
// a create before or after the real runtime's create.
const kpHoldEnv = "KP_HOLD"

// kpHoldingRuntime wraps rt in a script that, for a create or run with KP_HOLD set,
// makes the file "held" in dir and waits for the file "go" there, before or
// after running the real create: a window, as long as the test wants, in
// which the shim's runtime child runs and the test kills the shim.
func kpHoldingRuntime(t *testing.T, rt Runtime, dir string) Runtime {
	t.Helper()
	script := fmt.Sprintf(`#!/bin/sh
hold() { : > '%[1]s/held'; while [ ! -e '%[1]s/go' ]; do sleep 0.01; done; }
case " $* " in
*" create "*|*" run "*)
	[ "$%[3]s" = before ] && hold
	'%[2]s' "$@"; rc=$?
	[ "$%[3]s" = after ] && hold
	exit $rc
esac
exec '%[2]s' "$@"
`, dir, rt.Path, kpHoldEnv)
	path := filepath.Join(dir, rt.Name+"-holding")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return Runtime{Name: rt.Name, Path: path}
}

// kpPoint is one place of a create where the shim dies.
type kpPoint struct {
	name     string
	fail     string // USERNS_SHIM_FAILPOINT ({id}: the container's), or "" for a hold
	hold     string // KP_HOLD, or ""
	rewrite  bool   // config.json has been rewritten by then
	created  bool   // the runtime's create runs to its end
	firstPod bool   // only the pod's first container gets there
}

// kpVolumes is how many ID-mapped volumes each container has: the kill
// points after the first and after the last staging mount differ.
const kpVolumes = 3

var kpPoints = []kpPoint{
	{name: "pinned", fail: failpoint.Pinned, firstPod: true},
	{name: "registry-temp-written", fail: failpoint.TempWritten + "/pods.json"},
	{name: "allocated", fail: failpoint.Allocated},
	{name: "first-staging-mount", fail: failpoint.StagingMount + ":1"},
	{name: "last-staging-mount", fail: fmt.Sprintf("%s:%d", failpoint.StagingMount, kpVolumes)},
	{name: "rootfs-staged", fail: failpoint.RootfsStaged},
	{name: "record-temp-written", fail: failpoint.TempWritten + "/{id}.json"},
	{name: "record-saved", fail: failpoint.RecordSaved},
	{name: "config-temp-written", fail: failpoint.TempWritten + "/config.json"},
	{name: "config-saved", fail: failpoint.ConfigSaved, rewrite: true},
	{name: "runtime-create-started", hold: "before", rewrite: true, created: true},
	{name: "runtime-create-returned", hold: "after", rewrite: true, created: true},
}

// kpRole is which container of a pod is killed, and what its caller does next.
type kpRole struct {
	name    string
	app     bool // an app container joining a running sandbox, else the sandbox
	overlay bool // its rootfs is an overlay, as CRI runtimes hand over, else a directory
	// direct: the create is retried at once, without gc, and without a
	// delete unless the runtime has the container (podman starting a
	// container again by the same ID); gc runs at the end.
	direct bool
	// run: the shim dies in a `run --detach` (podman's and runc's one-step
	// create and start), which shares create's steps and releases the
	// staging mounts while the runtime runs.
	run bool
}

var kpRoles = []kpRole{{name: "sandbox"}, {name: "app", app: true}, {name: "sandbox-overlay", overlay: true}, {name: "sandbox-retry-at-once", direct: true}, {name: "sandbox-run", run: true}}

// TestKillPoints: for each runtime, mapping from the allocator or from an
// annotation, the pod's sandbox (first container: allocation, pin; with a
// directory or an overlay rootfs) or an app container joining a running
// sandbox, and each kill point: the shim dies by
// SIGKILL there; config.json is the original or the complete rewrite; after
// the CRI runtime's delete --force and `shim gc` the state dir (files,
// registry, pins), the mounts below the test's directories and the bundle
// are as before the create, and no shim process is left; the same create
// then succeeds and runs with its mapping and ID-mapped volumes. An overlay
// rootfs is unmounted after the delete and mounted again for the retry, as
// a CRI runtime does with a container's snapshot.
func TestKillPoints(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		bin := kpShimBin(t)
		for m, mode := range []string{"allocate", "annotation"} {
			for _, role := range kpRoles {
				for k, pt := range kpPoints {
					if pt.firstPod && role.app {
						continue
					}
					t.Run(mode+"/"+role.name+"/"+pt.name, func(t *testing.T) {
						kpRun(t, rt, bin, mode, role, pt, uint32(3_000_000_000+i*100_000_000+m*50_000_000+k*lcSize*4))
					})
				}
			}
		}
	})
}

// kpRun is one kill: host is where this case's host IDs start.
func kpRun(t *testing.T, rt Runtime, bin, mode string, role kpRole, pt kpPoint, host uint32) {
	holdDir := t.TempDir()
	toml, ann := "", ""
	want := lcRange(host)
	if mode == "allocate" {
		pool := pdPool{Start: host, Length: 2 * lcSize, Size: lcSize}
		toml, want = pool.TOML(), pool.Block(0)
	} else {
		ann = lcAnnotation(want)
	}
	e := pdEnv(t, kpHoldingRuntime(t, rt, holdDir), toml, true)
	e.Bin = bin
	// Every temp dir of a test (state dir's, bundles, volumes) is below one
	// directory: mounts there are this test's.
	root := filepath.Dir(filepath.Dir(e.StateDir))

	base := "kp-" + strings.ReplaceAll(t.Name()[len("TestKillPoints/"):], "/", "-")
	sandbox, app := base+"-pause", base+"-app"
	uid := fmt.Sprintf("0c1d2e3f-4a5b-4c6d-8e7f-%012d", host/lcSize)
	withVolumes := func(b *Bundle) *Bundle {
		kpMountVolumes(t, b, kpNewVolumes(t, kpVolumes))
		return b
	}
	bs := withVolumes(pdBundle(t, pdContainerd("sandbox", sandbox, uid, ann)))
	victim, vb := sandbox, bs
	var layers *rtLayers
	if role.overlay {
		layers = rtOverlayRootfs(t, bs, 0)
	}
	if role.app {
		pid := pdCreateStart(t, e, bs, sandbox)
		vb = pdBundle(t, pdContainerd("container", sandbox, uid, ann))
		pdJoin(t, vb, pid, specs.NetworkNamespace, specs.IPCNamespace, specs.UTSNamespace)
		withVolumes(vb)
		victim = app
	}
	lcCleanup(t, e, victim)

	before := pdTakeInventory(t, e)
	filesBefore, mountsBefore, bundleBefore := kpFiles(t, e.StateDir), pdMountsUnder(t, root), kpFiles(t, vb.Dir)
	hostMountsBefore := len(pdMountPoints(t))
	orig := vb.Raw(t)

	// The create that dies.
	if pt.fail != "" {
		e.ExtraEnv = []string{failpoint.Env + "=" + strings.ReplaceAll(pt.fail, "{id}", victim)}
	} else {
		e.ExtraEnv = []string{kpHoldEnv + "=" + pt.hold}
	}
	call := []string{"create"}
	if role.run {
		call = []string{"run", "--detach"}
	}
	c, err := pdStart(e, append(call, "--bundle", vb.Dir, "--pid-file", filepath.Join(holdDir, "pid"), victim)...)
	e.ExtraEnv = nil
	if err != nil {
		t.Fatal(err)
	}
	if pt.hold != "" {
		imWaitFile(t, filepath.Join(holdDir, "held"))
		c.cmd.Process.Signal(syscall.SIGKILL)
		if err := os.WriteFile(filepath.Join(holdDir, "go"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	o := c.Wait()
	if !o.Killed || o.Signal != syscall.SIGKILL {
		t.Fatalf("%s %s: exit %d signal %v err %v, want death by SIGKILL at %s\nstderr: %s", call[0], victim, o.Code, o.Signal, o.Err, pt.name, o.Stderr)
	}
	pdWaitSettled(t, e) // a held runtime create runs on to its end
	kpRequireConfig(t, e, vb, orig, pt.rewrite, role.overlay, sandbox, victim, want)
	killed := pdTakeInventory(t, e)
	if pt.created {
		status := specs.StateCreated
		if role.run {
			status = specs.StateRunning
		}
		kpRequireRetryRefused(t, e, vb, victim, killed, status)
	}

	// What a CRI runtime does after a failed create: delete, forced, the
	// container it may or may not have; then the node's periodic gc.
	created := lcShim(e, "state", victim).Code == 0
	if created != pt.created {
		t.Errorf("after the kill at %s: the runtime has container %s: %v, want %v", pt.name, victim, created, pt.created)
	}
	if role.direct {
		if created {
			lcMustShim(e, "delete", "--force", victim)
		}
	} else {
		kpDeleteAndGC(t, e, victim, created, layers, killed)
		kpRequireSame(t, "after delete and gc", before, pdTakeInventory(t, e))
		if role.overlay {
			mountsBefore = slices.DeleteFunc(mountsBefore, func(m string) bool { return m == layers.Merged })
		}
		kpRequireSame(t, "state dir files after delete and gc", filesBefore, kpFiles(t, e.StateDir))
		kpRequireSame(t, "mounts below "+root+" after delete and gc", mountsBefore, pdMountsUnder(t, root))
		kpRequireSame(t, "bundle after delete and gc", bundleBefore, kpFiles(t, vb.Dir))
		if procs := pdShimProcs(e.bin()); len(procs) > 0 {
			t.Errorf("shim processes left: %v", procs)
		}
		t.Logf("host mount count: %d before the create, %d after delete and gc", hostMountsBefore, len(pdMountPoints(t)))
		if role.overlay {
			layers.Mount(t)
		}
	}

	// The same create again runs, in the pod's user namespace, with its
	// volumes ID-mapped.
	pid := pdCreateStart(t, e, vb, victim)
	lcRequireProcMaps(t, pid, want)
	pdRequirePod(t, e, sandbox, slices.Compact([]string{sandbox, victim}), map[string]string{"allocate": "allocator", "annotation": "annotation"}[mode], want)
	imRequireOwnersInside(t, e, victim, "/vol0", map[string]string{"root-file": "0:0", "user-file": "1000:1000"})
	imRequireOwnersInside(t, e, victim, "/dev/shm", map[string]string{"root-file": "0:0", "user-file": "1000:1000"})

	if role.app {
		lcKillAndDelete(t, e, app)
	}
	lcKillAndDelete(t, e, sandbox)
	if role.overlay {
		rtUmountLikeCRI(t, e, bs, layers)
	}
	if role.direct {
		t.Logf("shim gc at the end:\n%s", lcMustShim(e, "shim", "gc").Stdout)
	}
	pdRequireStateClean(t, e)
	imRequireNoStaging(t, e, "after the retried containers were deleted")
	kpRequireSame(t, "state dir files at the end", nil, kpFiles(t, e.StateDir))
	kpRequireSame(t, "bundle at the end", bundleBefore, kpFiles(t, vb.Dir))
	if n := soakCgroups(base + "-"); n > 0 {
		t.Errorf("%d cgroup directories of the test's containers left", n)
	}
}

// kpDeleteAndGC is what a CRI runtime and the node do after a failed
// create: delete --force the container (which the runtime may or may not
// have), unmount an overlay rootfs's snapshot (layers), run `shim gc`.
func kpDeleteAndGC(t *testing.T, e *Env, id string, created bool, layers *rtLayers, killed pdInventory) {
	t.Helper()
	del := lcShim(e, "delete", "--force", id)
	if created && del.Code != 0 {
		t.Errorf("delete --force %s: exit %d: %s", id, del.Code, del.Stderr)
	}
	if layers != nil {
		// The CRI runtime unmounts the snapshot of a container it gave up.
		if err := unix.Unmount(layers.Merged, 0); err != nil {
			t.Errorf("umount the rootfs overlay %s after delete: %v", layers.Merged, err)
		}
	}
	gc := lcMustShim(e, "shim", "gc")
	t.Logf("killed: left%s\ndelete --force: exit %d; shim gc:\n%s", killed, del.Code, gc.Stdout)
}

// kpRequireSame fails unless after equals before.
func kpRequireSame[T any](t *testing.T, what string, before, after T) {
	t.Helper()
	if !reflect.DeepEqual(before, after) {
		t.Errorf("%s: differs from before the create:\nbefore: %v\nafter:  %v", what, before, after)
	}
}

// kpRequireRetryRefused: a create retried without a delete, of a container
// the runtime made before the shim was killed, fails (it exists) and
// changes nothing: the live container keeps its record, its pod's range and
// pin, and config.json.
func kpRequireRetryRefused(t *testing.T, e *Env, b *Bundle, id string, before pdInventory, status specs.ContainerState) {
	t.Helper()
	config := b.Raw(t)
	r := lcShim(e, "create", "--bundle", b.Dir, id)
	if r.Code == 0 {
		t.Fatalf("create %s again while the runtime has it: exit 0", id)
	}
	t.Logf("create %s again while the runtime has it: exit %d: %s", id, r.Code, strings.TrimSpace(r.Stderr))
	// Its lock file goes, as with every refusal: it is no state of the
	// container (the create that made the container released its lock).
	after := pdTakeInventory(t, e)
	before.Locks, after.Locks = nil, nil
	if !reflect.DeepEqual(before, after) {
		t.Errorf("a refused create of the existing %s changed the state:\nbefore:%s\nafter:%s", id, before, after)
	}
	if !bytes.Equal(config, b.Raw(t)) {
		t.Errorf("a refused create of the existing %s changed config.json", id)
	}
	lcRequireStatus(t, e, id, status)
}

// kpNewVolumes makes n volumes: n-1 directories on the root ext4 and a
// tmpfs, each holding root-file and user-file (see imFillVolume).
func kpNewVolumes(t *testing.T, n int) []string {
	t.Helper()
	var vols []string
	for range n - 1 {
		vols = append(vols, imVolume(t))
	}
	shm := imTmpfs(t)
	imFillVolume(t, shm)
	return append(vols, shm)
}

// kpMountVolumes binds vols into b at /vol0, /vol1, ..., the last (the
// tmpfs) at /dev/shm, as a pod's shared memory.
func kpMountVolumes(t *testing.T, b *Bundle, vols []string) {
	t.Helper()
	for n, v := range vols[:len(vols)-1] {
		imAddMount(t, b, imBind(fmt.Sprintf("/vol%d", n), v))
	}
	imAddMount(t, b, imBind("/dev/shm", vols[len(vols)-1], "rbind", "nosuid", "noexec", "nodev"))
}

// kpRequireConfig checks config.json after the kill: byte for byte the
// original before the shim's write, else the complete rewrite: joins the
// pod's pin with the pod's mapping, every volume from its staging mount,
// the rootfs from its staging mount or, an overlay re-mounted in place
// (overlay), where it was.
func kpRequireConfig(t *testing.T, e *Env, b *Bundle, orig []byte, rewrite, overlay bool, pod, id string, want specs.LinuxIDMapping) {
	t.Helper()
	now := b.Raw(t)
	if !rewrite {
		if !bytes.Equal(now, orig) {
			t.Errorf("config.json changed by a create killed before its write:\nbefore %s\nafter %s", orig, now)
		}
		return
	}
	if bytes.Equal(now, orig) {
		t.Fatalf("config.json is the original after a create killed past its write")
	}
	pdRequireJoinsPin(t, e, b, pod, want) // decodes it
	staging := filepath.Join(e.StateDir, "staging", id) + "/"
	for _, m := range b.Spec.Mounts {
		if m.Type == "bind" && !strings.HasPrefix(m.Source, staging) {
			t.Errorf("config.json: mount %s from %s, want its staging mount under %s", m.Destination, m.Source, staging)
		}
	}
	if overlay && b.Spec.Root.Path != "rootfs" {
		t.Errorf("config.json: root.path %s, want rootfs: the overlay is re-mounted in place", b.Spec.Root.Path)
	}
	if !overlay && !strings.HasPrefix(b.Spec.Root.Path, staging) {
		t.Errorf("config.json: root.path %s, want the staged rootfs under %s", b.Spec.Root.Path, staging)
	}
}

// kpFiles lists every path below dir but directories and the runtime facts
// cache, and the rootfs contents of a bundle.
func kpFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case rel == "rootfs" && d.IsDir():
			return filepath.SkipDir
		case d.IsDir() || rel == "runtimes.json":
			return nil
		}
		out = append(out, rel)
		return nil
	})
	return out
}

// TestKillPointsNotShipped: the binary built without the failpoints tag
// carries no failpoint: not even the variable's name is in it, whereas the
// tagged build has it.
func TestKillPointsNotShipped(t *testing.T) {
	for _, c := range []struct {
		bin  string
		want bool
	}{{shimBin, false}, {kpShimBin(t), true}} {
		data, err := os.ReadFile(c.bin)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(data, []byte(failpoint.Env)); got != c.want {
			t.Errorf("%s holds %q: %v, want %v", c.bin, failpoint.Env, got, c.want)
		}
	}
}

// TestKillPointsDelete: a delete killed after the runtime's delete, before
// and after the container left its pod; `shim gc` then finishes the job.
func TestKillPointsDelete(t *testing.T) { kpKillCleanup(t, "delete", 3_400_000_000) }

// TestKillPointsGC: `shim gc` removes what the shim kept of a container the
// runtime lost without the shim (deleted behind its back), through the same
// steps as a delete; killed at each of them, the next gc finishes the job.
func TestKillPointsGC(t *testing.T) { kpKillCleanup(t, "gc", 3_500_000_000) }

// kpKillCleanup kills the shim's cleanup of a container (in a delete, or in
// the gc after the runtime lost it) at each of its steps; after `shim gc`
// the state dir, staging and the mounts are as before the create, and the
// same create runs again. host is where the test's host IDs start.
func kpKillCleanup(t *testing.T, how string, host uint32) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		bin := kpShimBin(t)
		for k, point := range []string{failpoint.Forget, failpoint.LeftPod} {
			t.Run(point, func(t *testing.T) {
				want := lcRange(host + uint32(i*10_000_000+k*lcSize*4))
				e := pdEnv(t, rt, "", true)
				e.Bin = bin
				root := filepath.Dir(filepath.Dir(e.StateDir))
				id := fmt.Sprintf("kp-%s-%s-%s", how, point, rt.Name)
				b := pdBundle(t, pdContainerd("sandbox", id, "", lcAnnotation(want)))
				kpMountVolumes(t, b, kpNewVolumes(t, kpVolumes))
				mountsBefore := pdMountsUnder(t, root)
				pdCreateStart(t, e, b, id)

				killed := []string{"delete", "--force", id}
				if how == "gc" {
					// The runtime loses the container; the shim's record and pod stay.
					if out, err := exec.Command(rt.Path, "--root", e.RootDir, "delete", "--force", id).CombinedOutput(); err != nil {
						t.Fatalf("%s delete --force %s behind the shim: %v: %s", rt.Name, id, err, out)
					}
					if left := pdTakeInventory(t, e); len(left.Records) == 0 || len(left.PinsMounted) == 0 {
						t.Fatalf("nothing for gc to do: %s", left)
					}
					killed = []string{"shim", "gc"}
				}
				e.ExtraEnv = []string{failpoint.Env + "=" + point}
				o := pdRun(e, killed...)
				e.ExtraEnv = nil
				if !o.Killed || o.Signal != syscall.SIGKILL {
					t.Fatalf("%v: exit %d signal %v err %v, want death by SIGKILL at %s\nstderr: %s", killed, o.Code, o.Signal, o.Err, point, o.Stderr)
				}
				if lcShim(e, "state", id).Code == 0 {
					t.Fatalf("the runtime still has %s", id)
				}
				t.Logf("killed in %s at %s: left%s", how, point, pdTakeInventory(t, e))
				t.Logf("shim gc:\n%s", lcMustShim(e, "shim", "gc").Stdout)

				pdRequireStateClean(t, e)
				imRequireNoStaging(t, e, "after gc")
				kpRequireSame(t, "state dir files after gc", nil, kpFiles(t, e.StateDir))
				kpRequireSame(t, "mounts below "+root+" after gc", mountsBefore, pdMountsUnder(t, root))
				if n := soakCgroups(id); n > 0 {
					t.Errorf("%d cgroup directories of %s left", n, id)
				}
				pid := pdCreateStart(t, e, b, id)
				lcRequireProcMaps(t, pid, want)
				lcKillAndDelete(t, e, id)
				pdRequireStateClean(t, e)
			})
		}
	})
}
