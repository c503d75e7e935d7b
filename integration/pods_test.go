package integration

// Pod tests: every container of a pod runs in the one user namespace the
// shim pins for the pod, pods never share host IDs, the allocator hands out
// exclusive ranges and takes them back with the pod, also under concurrent
// creates and with shims killed half-way, and a container that would break
// these rules is refused with nothing changed. Everything is checked from the
// host: /proc/<pid>/ns/user and uid_map, the pin's inode and the host's
// mount table, the registry <state_dir>/pods.json, and `shim inspect`.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Pod identity annotations as CRI-O and containerd write them.
const (
	pdAnnCRIOType    = "io.kubernetes.cri-o.ContainerType"
	pdAnnCRIOSandbox = "io.kubernetes.cri-o.SandboxID"
	pdAnnCtrdType    = "io.kubernetes.cri.container-type"
	pdAnnCtrdSandbox = "io.kubernetes.cri.sandbox-id"
	pdAnnCtrdUID     = "io.kubernetes.cri.sandbox-uid"
)

// pdHost returns a host ID range start distinct for each (test, runtime)
// pair and from the lc, im and rt tests' ranges.
func pdHost(test, rt int) uint32 {
	return uint32(60_000_000 + test*1_000_000 + rt*100_000)
}

// pdPool is an [allocate] pool of blocks of lcSize IDs.
type pdPool struct{ Start, Length, Size uint32 }

// pdNewPool returns a pool of n blocks distinct for each (test, runtime)
// pair and from every fixed range of the integration tests.
func pdNewPool(test, rt int, n uint32) pdPool {
	return pdPool{Start: uint32(600_000_000 + test*50_000_000 + rt*10_000_000), Length: n * lcSize, Size: lcSize}
}

// TOML is the shim configuration for mode allocate with this pool.
func (p pdPool) TOML() string {
	return fmt.Sprintf("mode = \"allocate\"\n[allocate]\nstart = %d\nlength = %d\nids_per_pod = %d\n", p.Start, p.Length, p.Size)
}

// Block is the mapping of the pool's n-th block.
func (p pdPool) Block(n int) specs.LinuxIDMapping {
	return specs.LinuxIDMapping{ContainerID: 0, HostID: p.Start + uint32(n)*p.Size, Size: p.Size}
}

// pdRequireInPool fails unless m is exactly one block of the pool.
func pdRequireInPool(t *testing.T, what string, p pdPool, m []specs.LinuxIDMapping) {
	t.Helper()
	if len(m) != 1 {
		t.Errorf("%s: %d ranges %v, want one block of the pool", what, len(m), m)
		return
	}
	r := m[0]
	end := uint64(p.Start) + uint64(p.Length)
	if r.ContainerID != 0 || r.Size != p.Size || r.HostID < p.Start || uint64(r.HostID)+uint64(r.Size) > end || (r.HostID-p.Start)%p.Size != 0 {
		t.Errorf("%s: range %v is not a block of the pool %d-%d (blocks of %d)", what, r, p.Start, end-1, p.Size)
	}
}

// pdEnv is newEnv plus a cleanup, run after every container of the test is
// gone, that detaches whatever is still mounted under the state dir (pins,
// staging mounts). strict: anything found there is a test error (the shim
// should have removed it); otherwise it is only logged (the kill -9 test,
// which leaves work for `shim gc`).
func pdEnv(t *testing.T, rt Runtime, extra string, strict bool) *Env {
	t.Helper()
	e := newEnv(t, rt, extra)
	t.Cleanup(func() {
		left := pdMountsUnder(t, e.StateDir)
		sort.Slice(left, func(i, j int) bool { return len(left[i]) > len(left[j]) })
		for _, m := range left {
			if strict {
				t.Errorf("cleanup: still mounted after every container was deleted: %s", m)
			} else {
				t.Logf("cleanup: detaching what was left mounted: %s", m)
			}
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				t.Errorf("cleanup: umount %s: %v", m, err)
			}
		}
	})
	return e
}

// pdBundle is a bundle running sleep 1000 with these annotations.
func pdBundle(t *testing.T, ann map[string]string) *Bundle {
	t.Helper()
	b := newBundle(t, "sleep", "1000")
	if len(ann) > 0 {
		b.Spec.Annotations = ann
	}
	b.Save(t)
	return b
}

// pdCRIO is what CRI-O puts on an app container of a pod with no infra
// container: type, sandbox ID, pod UID, and (copied from the pod) the
// mapping annotation, when uidMappings is not empty.
func pdCRIO(sandboxID, podUID, uidMappings string) map[string]string {
	ann := map[string]string{pdAnnCRIOType: "container", pdAnnCRIOSandbox: sandboxID, lcAnnPodUID: podUID}
	if uidMappings != "" {
		ann[lcAnnUIDMappings] = uidMappings
	}
	return ann
}

// pdContainerd is what containerd's CRI puts on a sandbox (kind "sandbox",
// sandboxID its own ID) or an app container (kind "container"), plus the
// mapping annotation as pod_annotations passes it, when not empty.
func pdContainerd(kind, sandboxID, podUID, uidMappings string) map[string]string {
	ann := map[string]string{pdAnnCtrdType: kind, pdAnnCtrdSandbox: sandboxID, pdAnnCtrdUID: podUID}
	if uidMappings != "" {
		ann[lcAnnUIDMappings] = uidMappings
	}
	return ann
}

// pdProcNS names namespace types the way /proc/<pid>/ns does.
var pdProcNS = map[specs.LinuxNamespaceType]string{
	specs.NetworkNamespace: "net", specs.IPCNamespace: "ipc", specs.UTSNamespace: "uts",
	specs.PIDNamespace: "pid", specs.UserNamespace: "user", specs.MountNamespace: "mnt",
}

// pdJoin makes the bundle join process pid's namespaces of these types by
// /proc/<pid>/ns/... paths, as containerd's app containers join the pause
// container's. A container joining a UTS namespace sets no hostname.
func pdJoin(t *testing.T, b *Bundle, pid int, types ...specs.LinuxNamespaceType) {
	t.Helper()
	for _, typ := range types {
		path := fmt.Sprintf("/proc/%d/ns/%s", pid, pdProcNS[typ])
		found := false
		for k := range b.Spec.Linux.Namespaces {
			if b.Spec.Linux.Namespaces[k].Type == typ {
				b.Spec.Linux.Namespaces[k].Path = path
				found = true
			}
		}
		if !found {
			b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: typ, Path: path})
		}
		if typ == specs.UTSNamespace {
			b.Spec.Hostname = ""
		}
	}
	b.Save(t)
}

// pdNSInode returns the inode of process pid's namespace name ("user",
// "net", ...) from the readlink of /proc/<pid>/ns/<name>: "user:[N]".
func pdNSInode(t *testing.T, pid int, name string) uint64 {
	t.Helper()
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, name))
	if err != nil {
		t.Fatal(err)
	}
	inner, ok := strings.CutPrefix(link, name+":[")
	inner, ok2 := strings.CutSuffix(inner, "]")
	n, err := strconv.ParseUint(inner, 10, 64)
	if !ok || !ok2 || err != nil {
		t.Fatalf("readlink /proc/%d/ns/%s = %q, want %s:[N]", pid, name, link, name)
	}
	return n
}

// pdInode returns the inode of path (for a pin: the namespace's).
func pdInode(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

// pdMountPoints returns the host's mount points.
func pdMountPoints(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 {
			out = append(out, fields[4])
		}
	}
	return out
}

// pdMountsUnder returns the mount points at or below dir.
func pdMountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, m := range pdMountPoints(t) {
		if m == dir || strings.HasPrefix(m, dir+"/") {
			out = append(out, m)
		}
	}
	return out
}

// pdPinsMounted returns the pins mounted under the state dir.
func pdPinsMounted(t *testing.T, e *Env) []string {
	t.Helper()
	var out []string
	for _, m := range pdMountsUnder(t, e.StateDir) {
		if imIsPin(e, m) {
			out = append(out, m)
		}
	}
	return out
}

// pdPinPath is where the shim pins pod's user namespace.
func pdPinPath(e *Env, pod string) string { return filepath.Join(e.StateDir, "pods", pod, "userns") }

// pdPod is one entry of the registry, as far as the tests look at it.
type pdPod struct {
	ID        string `json:"id"`
	UID       string `json:"uid"`
	CRI       string `json:"cri"`
	Source    string `json:"source"`
	Allocated bool   `json:"allocated"`
	Mapping   struct {
		UIDs []specs.LinuxIDMapping `json:"uidMappings"`
		GIDs []specs.LinuxIDMapping `json:"gidMappings"`
	} `json:"mapping"`
	Pin        string   `json:"pin"`
	UserNS     string   `json:"userns"`
	Containers []string `json:"containers"`
}

// pdRegistry is <state_dir>/pods.json.
type pdRegistry struct {
	Pods map[string]*pdPod `json:"pods"`
}

func pdRegistryPath(e *Env) string { return filepath.Join(e.StateDir, "pods.json") }

// pdReadRegistry returns the registry and its bytes, or nil, nil when the
// file does not exist (a state dir without pods). It fails the test unless
// the file is valid JSON whose pods object names every pod once, under its
// own ID.
func pdReadRegistry(t *testing.T, e *Env) (*pdRegistry, []byte) {
	t.Helper()
	data, err := os.ReadFile(pdRegistryPath(e))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var r pdRegistry
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("pods.json is not valid JSON: %v\n%s", err, data)
	}
	keys, err := pdPodKeys(data)
	if err != nil {
		t.Fatalf("pods.json: %v\n%s", err, data)
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			t.Errorf("pods.json names pod %s twice", k)
		}
		seen[k] = true
	}
	for k, p := range r.Pods {
		if p == nil || p.ID != k {
			t.Errorf("pods.json: entry under %q is %+v, want its id to be the key", k, p)
		}
	}
	return &r, data
}

// pdPodKeys returns the keys of the registry's pods object in file order,
// duplicates included (encoding/json would silently keep the last one).
func pdPodKeys(data []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("want an object, got %v (%v)", tok, err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		if tok != "pods" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, err
			}
			continue
		}
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			return nil, fmt.Errorf("pods: want an object, got %v (%v)", tok, err)
		}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			keys = append(keys, k.(string))
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				return nil, err
			}
		}
		if _, err := dec.Token(); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// pdRequireNoOverlap fails if two pods of the registry share a host ID or a
// container, and returns the number of collisions.
func pdRequireNoOverlap(t *testing.T, r *pdRegistry) int {
	t.Helper()
	if r == nil {
		return 0
	}
	type span struct {
		pod    string
		lo, hi uint64
	}
	var spans []span
	owner := map[string]string{}
	for _, p := range r.Pods {
		seen := map[[2]uint64]bool{}
		for _, m := range append(slices.Clone(p.Mapping.UIDs), p.Mapping.GIDs...) {
			k := [2]uint64{uint64(m.HostID), uint64(m.HostID) + uint64(m.Size)}
			if !seen[k] {
				seen[k] = true
				spans = append(spans, span{p.ID, k[0], k[1]})
			}
		}
		for _, c := range p.Containers {
			if o, ok := owner[c]; ok {
				t.Errorf("pods.json: container %s belongs to pods %s and %s", c, o, p.ID)
			}
			owner[c] = p.ID
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].lo < spans[j].lo })
	collisions := 0
	for i := range spans {
		for j := i + 1; j < len(spans) && spans[j].lo < spans[i].hi; j++ {
			if spans[j].pod != spans[i].pod {
				collisions++
				t.Errorf("pods.json: pods %s (%d-%d) and %s (%d-%d) share host IDs",
					spans[i].pod, spans[i].lo, spans[i].hi-1, spans[j].pod, spans[j].lo, spans[j].hi-1)
			}
		}
	}
	return collisions
}

// pdRequirePod checks the registry's entry of pod: its containers (in any
// order), its source, its mapping (uid and gid), and a pin at the shim's
// place that is mounted. It returns the entry.
func pdRequirePod(t *testing.T, e *Env, pod string, containers []string, source string, want specs.LinuxIDMapping) *pdPod {
	t.Helper()
	r, data := pdReadRegistry(t, e)
	if r == nil || r.Pods[pod] == nil {
		t.Fatalf("pods.json has no pod %s:\n%s", pod, data)
	}
	p := r.Pods[pod]
	got, wantC := slices.Sorted(slices.Values(p.Containers)), slices.Sorted(slices.Values(containers))
	if !slices.Equal(got, wantC) {
		t.Errorf("pods.json: pod %s has containers %v, want %v", pod, p.Containers, containers)
	}
	if p.Source != source {
		t.Errorf("pods.json: pod %s has source %q, want %q", pod, p.Source, source)
	}
	w := []specs.LinuxIDMapping{want}
	if !slices.Equal(p.Mapping.UIDs, w) || !slices.Equal(p.Mapping.GIDs, w) {
		t.Errorf("pods.json: pod %s has mapping %v/%v, want %v for both", pod, p.Mapping.UIDs, p.Mapping.GIDs, w)
	}
	if p.Pin != pdPinPath(e, pod) {
		t.Errorf("pods.json: pod %s pin %q, want %q", pod, p.Pin, pdPinPath(e, pod))
	}
	if !slices.Contains(pdPinsMounted(t, e), pdPinPath(e, pod)) {
		t.Errorf("pin %s of pod %s is not a mount", pdPinPath(e, pod), pod)
	}
	return p
}

// pdRequirePodGone fails if pod is still in the registry, its pin still
// mounted or its directory still there.
func pdRequirePodGone(t *testing.T, e *Env, pod string) {
	t.Helper()
	if r, data := pdReadRegistry(t, e); r != nil && r.Pods[pod] != nil {
		t.Errorf("pods.json still has pod %s:\n%s", pod, data)
	}
	if slices.Contains(pdMountPoints(t), pdPinPath(e, pod)) {
		t.Errorf("pin %s of deleted pod %s is still mounted", pdPinPath(e, pod), pod)
	}
	if _, err := os.Lstat(filepath.Dir(pdPinPath(e, pod))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("directory of deleted pod %s: stat says %v, want it gone", pod, err)
	}
}

// pdRequireStateClean fails unless no pod is left: no pods.json, no pin.
func pdRequireStateClean(t *testing.T, e *Env) {
	t.Helper()
	if data, err := os.ReadFile(pdRegistryPath(e)); err == nil {
		t.Errorf("pods.json still there with no container left:\n%s", data)
	}
	if pins := pdPinsMounted(t, e); len(pins) > 0 {
		t.Errorf("pins still mounted with no container left: %v", pins)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.StateDir, "pods")); len(ents) > 0 {
		var names []string
		for _, d := range ents {
			names = append(names, d.Name())
		}
		t.Errorf("pod directories left with no container: %v", names)
	}
}

// pdRequireShared checks from the host that every process of pids is in the
// user namespace pinned for pod (same inode as the pin), and that all have
// uid_map and gid_map want.
func pdRequireShared(t *testing.T, e *Env, pod string, pids []int, want specs.LinuxIDMapping) {
	t.Helper()
	pin := pdInode(t, pdPinPath(e, pod))
	host := pdNSInode(t, os.Getpid(), "user")
	for _, pid := range pids {
		ino := pdNSInode(t, pid, "user")
		if ino != pin {
			t.Errorf("pid %d: user namespace inode %d, want the pin's %d (pod %s)", pid, ino, pin, pod)
		}
		if ino == host {
			t.Errorf("pid %d runs in the host's user namespace", pid)
		}
		lcRequireProcMaps(t, pid, want)
	}
	t.Logf("pod %s: pids %v in user namespace %d (the pin's %d), uid_map and gid_map %s", pod, pids, pdNSInode(t, pids[0], "user"), pin, lcAnnotation(want))
}

// pdRequireJoinsPin checks that the bundle's config.json joins the pod's pin
// by path with want as its mappings.
func pdRequireJoinsPin(t *testing.T, e *Env, b *Bundle, pod string, want specs.LinuxIDMapping) {
	t.Helper()
	b.Load(t)
	user := userNamespaces(b.Spec)
	w := []specs.LinuxIDMapping{want}
	if len(user) != 1 || user[0].Path != pdPinPath(e, pod) || !slices.Equal(b.Spec.Linux.UIDMappings, w) || !slices.Equal(b.Spec.Linux.GIDMappings, w) {
		t.Errorf("config.json: user namespace %v with mappings %v/%v, want one joining %s with %v",
			user, b.Spec.Linux.UIDMappings, b.Spec.Linux.GIDMappings, pdPinPath(e, pod), w)
	}
}

// pdRequireInspect checks what `shim inspect ID` says of the pod and source.
func pdRequireInspect(t *testing.T, e *Env, id, pod, source string) {
	t.Helper()
	var rec struct {
		PodID  string `json:"podID"`
		Source string `json:"source"`
	}
	out := lcMustShim(e, "shim", "inspect", id).Stdout
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("shim inspect %s: not JSON: %v\n%s", id, err, out)
	}
	if rec.PodID != pod || rec.Source != source {
		t.Errorf("shim inspect %s: pod %q source %q, want pod %q source %q", id, rec.PodID, rec.Source, pod, source)
	}
}

// pdCreateStart creates and starts container id and returns its pid.
func pdCreateStart(t *testing.T, e *Env, b *Bundle, id string) int {
	t.Helper()
	pid := lcCreate(t, e, b, id)
	lcMustShim(e, "start", id)
	lcRequireStatus(t, e, id, specs.StateRunning)
	return pid
}

// pdSameNS fails unless process b is in process a's namespace name.
func pdSameNS(t *testing.T, a, b int, name string) {
	t.Helper()
	if x, y := pdNSInode(t, a, name), pdNSInode(t, b, name); x != y {
		t.Errorf("pid %d %s namespace %d, want pid %d's %d", b, name, y, a, x)
	}
}

// TestPodsCRIOStyle: a CRI-O pod without an infra container, two app
// containers carrying the pod's annotations (CRI-O copies them into every
// container): both run in the one pinned user namespace with the same
// uid_map, the registry lists both, and the pod goes with its last container.
func TestPodsCRIOStyle(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		for k, tc := range []struct {
			name string
			// sandboxIsFirst: the sandbox ID is the first container's ID;
			// otherwise it is an ID no container has, as with CRI-O's
			// dropped infra container.
			sandboxIsFirst bool
			// joinNet: the second container joins the first's network and
			// ipc namespaces by /proc path; otherwise it has its own.
			joinNet bool
		}{
			{"sandbox-id-of-first-container/own-namespaces", true, false},
			{"sandbox-id-without-container/shared-net-ipc", false, true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				want := lcRange(pdHost(k, i))
				e := pdEnv(t, rt, "", true)
				a, b := fmt.Sprintf("pd-crio-%d-a-%s", k, rt.Name), fmt.Sprintf("pd-crio-%d-b-%s", k, rt.Name)
				pod := a
				if !tc.sandboxIsFirst {
					pod = fmt.Sprintf("pd-crio-%d-sandbox-%s", k, rt.Name)
				}
				uid := fmt.Sprintf("3c9e1a52-7d41-4b0e-9f6a-%012d", 10*i+k)
				ann := pdCRIO(pod, uid, lcAnnotation(want))

				ba := pdBundle(t, ann)
				pidA := pdCreateStart(t, e, ba, a)
				bb := pdBundle(t, ann)
				if tc.joinNet {
					pdJoin(t, bb, pidA, specs.NetworkNamespace, specs.IPCNamespace)
				}
				pidB := pdCreateStart(t, e, bb, b)

				pdRequireShared(t, e, pod, []int{pidA, pidB}, want)
				for _, name := range []string{"net", "ipc", "pid", "uts", "mnt"} {
					x, y := pdNSInode(t, pidA, name), pdNSInode(t, pidB, name)
					shared := tc.joinNet && (name == "net" || name == "ipc")
					if shared && x != y {
						t.Errorf("%s namespace: %d and %d, want the second to join the first's", name, x, y)
					}
					if !shared && x == y {
						t.Errorf("%s namespace: both containers in %d, want one each", name, x)
					}
				}
				p := pdRequirePod(t, e, pod, []string{a, b}, "annotation", want)
				if p.CRI != "cri-o" || p.UID != uid {
					t.Errorf("pods.json: pod %s cri %q uid %q, want cri-o and %s", pod, p.CRI, p.UID, uid)
				}
				pdRequireJoinsPin(t, e, ba, pod, want)
				pdRequireJoinsPin(t, e, bb, pod, want)
				pdRequireInspect(t, e, a, pod, "annotation")
				pdRequireInspect(t, e, b, pod, "annotation")

				// The pod outlives its first container; the last one takes it.
				lcKillAndDelete(t, e, a)
				pdRequirePod(t, e, pod, []string{b}, "annotation", want)
				pdRequireShared(t, e, pod, []int{pidB}, want)
				lcKillAndDelete(t, e, b)
				pdRequirePodGone(t, e, pod)
				pdRequireStateClean(t, e)
			})
		}
	})
}

// TestPodsContainerdStyle: a containerd pod: a pause container and two app
// containers joining its network, ipc and uts namespaces by /proc paths. With
// the mapping annotation on every container (pod_annotations) in the default
// mode, and on the pause container only in mode require, where the apps take
// their pod's mapping (source "pod"): all three share the pinned user
// namespace and the uid_map.
func TestPodsContainerdStyle(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		for k, tc := range []struct {
			name          string
			toml          string
			annotateApps  bool
			appSourceWant string
		}{
			{"pod-annotations-on-all", "", true, "annotation"},
			{"annotation-on-pause-only-require", `mode = "require"`, false, "pod"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				want := lcRange(pdHost(2+k, i))
				e := pdEnv(t, rt, tc.toml, true)
				pause := fmt.Sprintf("pd-ctrd-%d-pause-%s", k, rt.Name)
				apps := []string{fmt.Sprintf("pd-ctrd-%d-app1-%s", k, rt.Name), fmt.Sprintf("pd-ctrd-%d-app2-%s", k, rt.Name)}
				uid := fmt.Sprintf("8d2f6b10-94c3-4e57-a1b2-%012d", 10*i+k)

				bp := pdBundle(t, pdContainerd("sandbox", pause, uid, lcAnnotation(want)))
				pidP := pdCreateStart(t, e, bp, pause)
				pids := []int{pidP}
				var appBundles []*Bundle
				for _, app := range apps {
					appAnn := ""
					if tc.annotateApps {
						appAnn = lcAnnotation(want)
					}
					ba := pdBundle(t, pdContainerd("container", pause, uid, appAnn))
					pdJoin(t, ba, pidP, specs.NetworkNamespace, specs.IPCNamespace, specs.UTSNamespace)
					pids = append(pids, pdCreateStart(t, e, ba, app))
					appBundles = append(appBundles, ba)
				}

				pdRequireShared(t, e, pause, pids, want)
				for _, pid := range pids[1:] {
					for _, name := range []string{"net", "ipc", "uts"} {
						pdSameNS(t, pidP, pid, name)
					}
					if pdNSInode(t, pid, "pid") == pdNSInode(t, pidP, "pid") {
						t.Errorf("pid %d shares the pause container's pid namespace; want its own", pid)
					}
				}
				p := pdRequirePod(t, e, pause, append([]string{pause}, apps...), "annotation", want)
				if p.CRI != "containerd" || p.UID != uid {
					t.Errorf("pods.json: pod %s cri %q uid %q, want containerd and %s", pause, p.CRI, p.UID, uid)
				}
				pdRequireJoinsPin(t, e, bp, pause, want)
				pdRequireInspect(t, e, pause, pause, "annotation")
				for n, app := range apps {
					pdRequireJoinsPin(t, e, appBundles[n], pause, want)
					pdRequireInspect(t, e, app, pause, tc.appSourceWant)
				}

				// containerd removes the apps, then the sandbox.
				for _, app := range apps {
					lcKillAndDelete(t, e, app)
				}
				pdRequirePod(t, e, pause, []string{pause}, "annotation", want)
				lcKillAndDelete(t, e, pause)
				pdRequirePodGone(t, e, pause)
				pdRequireStateClean(t, e)
			})
		}
	})
}

// TestPodsAllocateReuse: in mode allocate, with no mapping annotation
// anywhere, two pods (a containerd-style pod of two containers and a plain
// bundle) get the two lowest blocks of the pool, disjoint; deleting the first
// pod's containers frees its block and pin only with the last one; the next
// new pod gets the freed block.
func TestPodsAllocateReuse(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		pool := pdNewPool(3, i, 8)
		e := pdEnv(t, rt, pool.TOML(), true)
		podA := "pd-alloc-a-pause-" + rt.Name
		appA := "pd-alloc-a-app-" + rt.Name
		podB := "pd-alloc-b-" + rt.Name
		podC := "pd-alloc-c-" + rt.Name
		uid := fmt.Sprintf("b7e4c1d0-2a3f-4c5d-8e9f-%012d", i)

		pidA := pdCreateStart(t, e, pdBundle(t, pdContainerd("sandbox", podA, uid, "")), podA)
		bApp := pdBundle(t, pdContainerd("container", podA, uid, ""))
		pdJoin(t, bApp, pidA, specs.NetworkNamespace, specs.IPCNamespace, specs.UTSNamespace)
		pidApp := pdCreateStart(t, e, bApp, appA)
		pidB := pdCreateStart(t, e, pdBundle(t, nil), podB)

		// Lowest free block first: A the pool's first, B the second.
		wantA, wantB := pool.Block(0), pool.Block(1)
		pdRequireShared(t, e, podA, []int{pidA, pidApp}, wantA)
		pdRequireShared(t, e, podB, []int{pidB}, wantB)
		for _, pid := range []int{pidA, pidB} {
			pdRequireInPool(t, fmt.Sprintf("/proc/%d/uid_map", pid), pool, lcProcMap(t, pid, "uid_map"))
		}
		if pdNSInode(t, pidA, "user") == pdNSInode(t, pidB, "user") {
			t.Errorf("pods %s and %s share a user namespace", podA, podB)
		}
		pa := pdRequirePod(t, e, podA, []string{podA, appA}, "allocator", wantA)
		pb := pdRequirePod(t, e, podB, []string{podB}, "allocator", wantB)
		if !pa.Allocated || !pb.Allocated {
			t.Errorf("pods.json: allocated %v/%v, want true for both", pa.Allocated, pb.Allocated)
		}
		r, _ := pdReadRegistry(t, e)
		if n := pdRequireNoOverlap(t, r); n != 0 {
			t.Errorf("%d overlapping ranges", n)
		}
		pdRequireInspect(t, e, podA, podA, "allocator")
		pdRequireInspect(t, e, appA, podA, "pod")
		pdRequireInspect(t, e, podB, podB, "allocator")

		// The pod keeps its range and pin while a container is left.
		lcKillAndDelete(t, e, appA)
		pdRequirePod(t, e, podA, []string{podA}, "allocator", wantA)
		lcKillAndDelete(t, e, podA)
		pdRequirePodGone(t, e, podA)
		pdRequirePod(t, e, podB, []string{podB}, "allocator", wantB)

		// The next pod gets the freed block, the lowest free one.
		pidC := pdCreateStart(t, e, pdBundle(t, nil), podC)
		pdRequireShared(t, e, podC, []int{pidC}, wantA)
		pdRequirePod(t, e, podC, []string{podC}, "allocator", wantA)
		if pdNSInode(t, pidC, "user") == pdNSInode(t, pidB, "user") {
			t.Errorf("pods %s and %s share a user namespace", podC, podB)
		}

		lcKillAndDelete(t, e, podB)
		lcKillAndDelete(t, e, podC)
		pdRequireStateClean(t, e)
	})
}

// pdCall is one shim process started without the test's *testing.T, so that
// goroutines can run many at once and the test can kill them.
type pdCall struct {
	cmd     *exec.Cmd
	dir     string
	cancel  context.CancelFunc
	started time.Time
}

// pdStart starts the shim with the env's config and --root, stdout and
// stderr in files (see Env.Shim), killed if it runs for over a minute.
func pdStart(e *Env, args ...string) (*pdCall, error) {
	dir, err := os.MkdirTemp("", "pd-shim-")
	if err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	errF, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		return nil, err
	}
	defer errF.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cmd := exec.CommandContext(ctx, e.bin(), append([]string{"--root", e.RootDir}, args...)...)
	cmd.Env = e.environ()
	cmd.Stdout, cmd.Stderr = out, errF
	c := &pdCall{cmd: cmd, dir: dir, cancel: cancel, started: time.Now()}
	if err := cmd.Start(); err != nil {
		cancel()
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

// pdOutcome is how a shim call ended.
type pdOutcome struct {
	Result
	Killed   bool           // by a signal (the test's SIGKILL)
	Signal   syscall.Signal // which, when Killed
	Err      error
	Duration time.Duration
}

// Wait waits for the call and returns its outcome.
func (c *pdCall) Wait() pdOutcome {
	defer c.cancel()
	defer os.RemoveAll(c.dir)
	err := c.cmd.Wait()
	o := pdOutcome{Duration: time.Since(c.started)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		o.Code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			o.Killed, o.Signal = true, ws.Signal()
		}
	case err != nil:
		o.Err = err
	}
	out, _ := os.ReadFile(filepath.Join(c.dir, "stdout"))
	errOut, _ := os.ReadFile(filepath.Join(c.dir, "stderr"))
	o.Stdout, o.Stderr = string(out), string(errOut)
	return o
}

// pdRun runs one shim call to its end.
func pdRun(e *Env, args ...string) pdOutcome {
	c, err := pdStart(e, args...)
	if err != nil {
		return pdOutcome{Err: err}
	}
	return c.Wait()
}

// pdParallel runs f(0..n-1) in n goroutines and waits for all.
func pdParallel(n int, f func(j int)) {
	var wg sync.WaitGroup
	for j := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(j)
		}()
	}
	wg.Wait()
}

// pdDurations renders min/median/max of ds.
func pdDurations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	r := func(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
	return fmt.Sprintf("min %s, median %s, max %s", r(s[0]), r(s[len(s)/2]), r(s[len(s)-1]))
}

// pdReadPid reads a pid file, or returns 0.
func pdReadPid(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// pdHostSpansCollisions counts pairs of the maps (one per container, from
// /proc) that share a host ID.
func pdHostSpansCollisions(maps map[string][]specs.LinuxIDMapping) (int, []string) {
	type span struct {
		id     string
		lo, hi uint64
	}
	var spans []span
	for id, m := range maps {
		for _, r := range m {
			spans = append(spans, span{id, uint64(r.HostID), uint64(r.HostID) + uint64(r.Size)})
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].lo < spans[j].lo })
	n := 0
	var what []string
	for i := range spans {
		for j := i + 1; j < len(spans) && spans[j].lo < spans[i].hi; j++ {
			if spans[i].id != spans[j].id {
				n++
				what = append(what, fmt.Sprintf("%s %d-%d and %s %d-%d", spans[i].id, spans[i].lo, spans[i].hi-1, spans[j].id, spans[j].lo, spans[j].hi-1))
			}
		}
	}
	return n, what
}

// TestPodsConcurrentAllocate: 50 shims create 50 pods (plain bundles, one
// container each) at once in mode allocate: all succeed with 50 disjoint
// blocks of the pool, in pods.json and in each container's uid_map, each in
// its own pinned user namespace; 50 concurrent deletes then free them all.
func TestPodsConcurrentAllocate(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		const n = 50
		pool := pdNewPool(4, i, 64)
		e := pdEnv(t, rt, pool.TOML(), true)
		ids := make([]string, n)
		bundles := make([]*Bundle, n)
		pidFiles := make([]string, n)
		pidDir := t.TempDir()
		for j := range n {
			ids[j] = fmt.Sprintf("pd-conc-%02d-%s", j, rt.Name)
			bundles[j] = pdBundle(t, nil)
			pidFiles[j] = filepath.Join(pidDir, ids[j]+".pid")
			lcCleanup(t, e, ids[j])
		}

		outcomes := make([]pdOutcome, n)
		start := time.Now()
		pdParallel(n, func(j int) {
			outcomes[j] = pdRun(e, "create", "--bundle", bundles[j].Dir, "--pid-file", pidFiles[j], ids[j])
		})
		total := time.Since(start)
		var durs []time.Duration
		failed := 0
		for j, o := range outcomes {
			durs = append(durs, o.Duration)
			if o.Err != nil || o.Code != 0 {
				failed++
				t.Errorf("create %s: exit %d err %v\nstderr: %s", ids[j], o.Code, o.Err, o.Stderr)
			}
		}
		t.Logf("%d concurrent creates on %s: total %s wall, per call %s, %d failed",
			n, rt.Name, total.Round(time.Millisecond), pdDurations(durs), failed)
		if failed > 0 {
			t.FailNow()
		}

		// The registry: 50 pods, one container each, 50 disjoint blocks.
		r, _ := pdReadRegistry(t, e)
		if r == nil {
			t.Fatal("no pods.json after 50 creates")
		}
		if len(r.Pods) != n {
			t.Errorf("pods.json has %d pods, want %d", len(r.Pods), n)
		}
		regCollisions := pdRequireNoOverlap(t, r)
		for _, id := range ids {
			p := r.Pods[id]
			if p == nil {
				t.Errorf("pods.json has no pod %s", id)
				continue
			}
			if !slices.Equal(p.Containers, []string{id}) || p.Source != "allocator" || !p.Allocated {
				t.Errorf("pods.json: pod %s: containers %v source %q allocated %v, want [%s] allocator true", id, p.Containers, p.Source, p.Allocated, id)
			}
			pdRequireInPool(t, "pods.json pod "+id, pool, p.Mapping.UIDs)
		}

		// From the host: each container's maps are its pod's, each in its
		// own pinned namespace, and no two share a host ID.
		procMaps := map[string][]specs.LinuxIDMapping{}
		inodes := map[uint64]string{}
		for j, id := range ids {
			pid := pdReadPid(pidFiles[j])
			if pid <= 0 {
				t.Errorf("create %s: no pid in %s", id, pidFiles[j])
				continue
			}
			uids, gids := lcProcMap(t, pid, "uid_map"), lcProcMap(t, pid, "gid_map")
			procMaps[id] = uids
			if p := r.Pods[id]; p != nil && (!slices.Equal(uids, p.Mapping.UIDs) || !slices.Equal(gids, p.Mapping.GIDs)) {
				t.Errorf("%s: /proc/%d maps %v/%v, pods.json says %v/%v", id, pid, uids, gids, p.Mapping.UIDs, p.Mapping.GIDs)
			}
			ino := pdNSInode(t, pid, "user")
			if other, ok := inodes[ino]; ok {
				t.Errorf("%s and %s share user namespace %d", id, other, ino)
			}
			inodes[ino] = id
			if pin := pdInode(t, pdPinPath(e, id)); pin != ino {
				t.Errorf("%s: user namespace %d, its pin %d", id, ino, pin)
			}
		}
		procCollisions, what := pdHostSpansCollisions(procMaps)
		for _, w := range what {
			t.Errorf("host IDs shared by %s", w)
		}
		if pins := pdPinsMounted(t, e); len(pins) != n {
			t.Errorf("%d pins mounted, want %d", len(pins), n)
		}
		t.Logf("%d pods: %d distinct user namespaces, %d registry collisions, %d /proc uid_map collisions",
			len(r.Pods), len(inodes), regCollisions, procCollisions)

		// 50 concurrent deletes free every range and pin.
		start = time.Now()
		pdParallel(n, func(j int) {
			outcomes[j] = pdRun(e, "delete", "--force", ids[j])
		})
		total = time.Since(start)
		durs = durs[:0]
		for j, o := range outcomes {
			durs = append(durs, o.Duration)
			if o.Err != nil || o.Code != 0 {
				t.Errorf("delete --force %s: exit %d err %v\nstderr: %s", ids[j], o.Code, o.Err, o.Stderr)
			}
		}
		t.Logf("%d concurrent deletes on %s: total %s wall, per call %s", n, rt.Name, total.Round(time.Millisecond), pdDurations(durs))
		pdRequireStateClean(t, e)
	})
}

// pdProcsWith returns the pids of processes of the host's user namespace
// whose command line contains s. Container processes are left out: crun's
// container init keeps crun's command line until it execs.
func pdProcsWith(s string) []int {
	host, _ := os.Readlink("/proc/self/ns/user")
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if ns, err := os.Readlink(filepath.Join("/proc", ent.Name(), "ns", "user")); err != nil || ns != host {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			out = append(out, pid)
		}
	}
	return out
}

// pdShimProcs returns the pids of processes running the shim binary bin
// (shims, and helper processes they cloned).
func pdShimProcs(bin string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", ent.Name(), "exe")); err == nil && exe == bin {
			out = append(out, pid)
		}
	}
	return out
}

// pdWaitSettled waits until no process still works with the env's runtime
// root (runtime creates orphaned by a killed shim run on to their end) and no
// shim process is left.
func pdWaitSettled(t *testing.T, e *Env) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		busy, shims := pdProcsWith(e.RootDir), pdShimProcs(e.bin())
		if len(busy) == 0 && len(shims) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still running 30s after the kills: runtime calls %v, shim processes %v", busy, shims)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pdInventory lists what the shim keeps under the state dir: registry
// entries, pins (mounted or not), records, create locks, staging
// directories and mounts, temporary files.
type pdInventory struct {
	EntryIDs     []string
	Entries      []string // pod: containers, range, pin mounted?
	PodDirs      []string
	PodDirState  []string // pod: pin mounted / placeholder file / empty
	PinsMounted  []string
	Records      []string
	Locks        []string
	Staging      []string
	StagingMount []string
	TempFiles    []string
}

func pdTakeInventory(t *testing.T, e *Env) pdInventory {
	t.Helper()
	var inv pdInventory
	mounted := pdMountsUnder(t, e.StateDir)
	if r, _ := pdReadRegistry(t, e); r != nil {
		for _, p := range r.Sorted() {
			inv.EntryIDs = append(inv.EntryIDs, p.ID)
			inv.Entries = append(inv.Entries, fmt.Sprintf("%s containers=%v range=%s pin-mounted=%v",
				p.ID, p.Containers, pdMappingString(p.Mapping.UIDs), slices.Contains(mounted, p.Pin)))
		}
	}
	list := func(dir string, keep func(string) bool) []string {
		ents, _ := os.ReadDir(dir)
		var out []string
		for _, d := range ents {
			if keep == nil || keep(d.Name()) {
				out = append(out, d.Name())
			}
		}
		return out
	}
	inv.PodDirs = list(filepath.Join(e.StateDir, "pods"), nil)
	for _, pod := range inv.PodDirs {
		what := "empty directory"
		if inside := list(filepath.Join(e.StateDir, "pods", pod), nil); len(inside) > 0 {
			what = fmt.Sprintf("holds %v", inside)
		}
		switch pin := pdPinPath(e, pod); {
		case slices.Contains(mounted, pin):
			what = "pin mounted"
		case pdFileExists(pin):
			what = "userns file not mounted (placeholder)"
		}
		inv.PodDirState = append(inv.PodDirState, pod+": "+what)
	}
	inv.Records = list(filepath.Join(e.StateDir, "containers"), func(n string) bool { return strings.HasSuffix(n, ".json") })
	inv.Locks = list(filepath.Join(e.StateDir, "containers"), func(n string) bool { return strings.HasSuffix(n, ".lock") })
	inv.Staging = list(filepath.Join(e.StateDir, "staging"), nil)
	inv.TempFiles = list(e.StateDir, func(n string) bool { return strings.HasPrefix(n, ".") })
	for _, m := range mounted {
		rel, _ := filepath.Rel(e.StateDir, m)
		if imIsPin(e, m) {
			inv.PinsMounted = append(inv.PinsMounted, rel)
		} else {
			inv.StagingMount = append(inv.StagingMount, rel)
		}
	}
	return inv
}

func (inv pdInventory) String() string {
	var b strings.Builder
	line := func(name string, v []string) { fmt.Fprintf(&b, "  %s (%d): %v\n", name, len(v), v) }
	b.WriteString("\n")
	for _, en := range inv.Entries {
		fmt.Fprintf(&b, "  pods.json entry: %s\n", en)
	}
	fmt.Fprintf(&b, "  pods.json entries: %d\n", len(inv.Entries))
	line("pod directories", inv.PodDirState)
	line("pins mounted", inv.PinsMounted)
	line("records", inv.Records)
	line("create locks", inv.Locks)
	line("staging dirs", inv.Staging)
	line("other mounts under the state dir", inv.StagingMount)
	line("temporary files", inv.TempFiles)
	return b.String()
}

// Sorted returns the registry's pods by ID.
func (r *pdRegistry) Sorted() []*pdPod {
	out := make([]*pdPod, 0, len(r.Pods))
	for _, p := range r.Pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func pdFileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func pdMappingString(m []specs.LinuxIDMapping) string {
	var parts []string
	for _, r := range m {
		parts = append(parts, lcAnnotation(r))
	}
	return strings.Join(parts, ",")
}

// TestPodsKillDuringAllocate: many creates in mode allocate, some of whose
// shims get SIGKILL at a random moment 0-20 ms after they start. Afterwards
// the registry is valid JSON without duplicate or overlapping entries, every
// container the runtime made is in it with the mapping it runs with, and no
// two live containers share host IDs; the shims not killed all succeeded and
// their deletes leave nothing. What killed creates leave behind is logged:
// it is `shim gc`'s work.
func TestPodsKillDuringAllocate(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		const waves, perWave, killsPerWave = 6, 8, 4
		n := waves * perWave
		pool := pdNewPool(5, i, 64)
		e := pdEnv(t, rt, pool.TOML(), false)
		seed := uint64(time.Now().UnixNano())
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		t.Logf("seed %d", seed)

		ids := make([]string, n)
		bundles := make([]*Bundle, n)
		pidFiles := make([]string, n)
		pidDir := t.TempDir()
		for j := range n {
			ids[j] = fmt.Sprintf("pd-kill-%02d-%s", j, rt.Name)
			bundles[j] = pdBundle(t, nil)
			pidFiles[j] = filepath.Join(pidDir, ids[j]+".pid")
			lcCleanup(t, e, ids[j])
		}

		outcomes := make([]pdOutcome, n)
		killAfter := make([]time.Duration, n) // <0: not a victim
		for w := range waves {
			victims := rng.Perm(perWave)[:killsPerWave]
			for k := range perWave {
				killAfter[w*perWave+k] = -1
			}
			for _, v := range victims {
				killAfter[w*perWave+v] = time.Duration(rng.IntN(20_001)) * time.Microsecond
			}
			pdParallel(perWave, func(k int) {
				j := w*perWave + k
				c, err := pdStart(e, "create", "--bundle", bundles[j].Dir, "--pid-file", pidFiles[j], ids[j])
				if err != nil {
					outcomes[j] = pdOutcome{Err: err}
					return
				}
				if killAfter[j] >= 0 {
					time.Sleep(killAfter[j])
					c.cmd.Process.Signal(syscall.SIGKILL)
				}
				outcomes[j] = c.Wait()
			})
		}
		pdWaitSettled(t, e)

		killed, exitedBeforeKill, okCreates, failedCreates := 0, 0, 0, 0
		var killedIDs []string
		for j, o := range outcomes {
			switch {
			case o.Killed:
				killed++
				killedIDs = append(killedIDs, ids[j])
			case killAfter[j] >= 0 && o.Code == 0 && o.Err == nil:
				exitedBeforeKill++
				okCreates++
			case o.Code == 0 && o.Err == nil:
				okCreates++
			default:
				failedCreates++
				t.Errorf("create %s (not killed): exit %d err %v\nstderr: %s", ids[j], o.Code, o.Err, o.Stderr)
			}
		}

		// The registry is valid, with disjoint blocks of the pool.
		r, data := pdReadRegistry(t, e)
		collisions := pdRequireNoOverlap(t, r)
		if r != nil {
			for _, p := range r.Pods {
				pdRequireInPool(t, "pods.json pod "+p.ID, pool, p.Mapping.UIDs)
			}
		}

		// Every container the runtime made is in the registry with the
		// maps it runs with; no two share host IDs.
		var existing []string
		procMaps := map[string][]specs.LinuxIDMapping{}
		killedAndCreated := 0
		for j, id := range ids {
			res := lcShim(e, "state", id)
			if res.Code != 0 {
				continue
			}
			existing = append(existing, id)
			var st specs.State
			if err := json.Unmarshal([]byte(res.Stdout), &st); err != nil {
				t.Fatalf("state %s: %v", id, err)
			}
			if outcomes[j].Killed {
				killedAndCreated++
			}
			if st.Pid <= 0 {
				t.Errorf("state %s: status %s pid %d", id, st.Status, st.Pid)
				continue
			}
			uids := lcProcMap(t, st.Pid, "uid_map")
			procMaps[id] = uids
			var p *pdPod
			if r != nil {
				p = r.Pods[id]
			}
			switch {
			case p == nil:
				t.Errorf("container %s exists (pid %d, maps %v) but pods.json has no pod for it:\n%s", id, st.Pid, uids, data)
			case !slices.Equal(uids, p.Mapping.UIDs):
				t.Errorf("container %s runs with %v, pods.json says %v", id, uids, p.Mapping.UIDs)
			case !slices.Contains(p.Containers, id):
				t.Errorf("pods.json: pod %s does not list its container", id)
			case p.Pin != "" && pdInode(t, p.Pin) != pdNSInode(t, st.Pid, "user"):
				t.Errorf("container %s: user namespace %d, its pin %d", id, pdNSInode(t, st.Pid, "user"), pdInode(t, p.Pin))
			}
		}
		procCollisions, what := pdHostSpansCollisions(procMaps)
		for _, w := range what {
			t.Errorf("live containers share host IDs: %s", w)
		}
		before := pdTakeInventory(t, e)
		t.Logf("%s: %d creates in %d waves of %d, %d SIGKILLed (0-20 ms), %d victims finished first, %d succeeded, %d failed; %d containers exist (%d of them from killed shims); registry: %d pods, %d collisions; /proc collisions %d\nstate before deletes:%s",
			rt.Name, n, waves, perWave, killed, exitedBeforeKill, okCreates, failedCreates, len(existing), killedAndCreated,
			len(before.Entries), collisions, procCollisions, before)
		t.Logf("%s: where the %d killed shims died, from what each left: %s", rt.Name, killed, pdKillStages(before, killedIDs, existing))

		// Delete through the shim the containers that exist.
		for _, id := range existing {
			if res := lcShim(e, "delete", "--force", id); res.Code != 0 {
				t.Errorf("delete --force %s: exit %d: %s", id, res.Code, res.Stderr)
			}
		}
		after := pdTakeInventory(t, e)
		t.Logf("%s: LEFT FOR GC after deleting the %d existing containers (killed: %v):%s", rt.Name, len(existing), killedIDs, after)

		// Only killed creates may leave anything behind.
		if r, _ := pdReadRegistry(t, e); r != nil {
			for _, p := range r.Pods {
				if !slices.Contains(killedIDs, p.ID) {
					t.Errorf("pods.json keeps pod %s, whose create was not killed (%+v)", p.ID, p)
				}
			}
			pdRequireNoOverlap(t, r)
		}
		for _, p := range after.PinsMounted {
			pod := filepath.Base(filepath.Dir(p))
			if !slices.Contains(killedIDs, pod) {
				t.Errorf("pin %s left for a create that was not killed", p)
			}
		}

		// The allocator still works next to the leftovers: a new pod gets a
		// block that overlaps none of them.
		id := "pd-kill-after-" + rt.Name
		pid := lcCreate(t, e, pdBundle(t, nil), id)
		uids := lcProcMap(t, pid, "uid_map")
		pdRequireInPool(t, "new pod after the kills", pool, uids)
		if r, _ := pdReadRegistry(t, e); r != nil {
			pdRequireNoOverlap(t, r)
			if p := r.Pods[id]; p == nil || !slices.Equal(p.Mapping.UIDs, uids) {
				t.Errorf("new pod %s: pods.json entry %+v, runs with %v", id, p, uids)
			}
		}
		lcMustShim(e, "delete", "--force", id)
		if r, _ := pdReadRegistry(t, e); r != nil && r.Pods[id] != nil {
			t.Errorf("pods.json keeps %s after its delete", id)
		}

		// shim gc restores a clean host: no pin, registry entry, record,
		// lock, staging mount or directory, temporary file.
		gc := lcMustShim(e, "shim", "gc")
		t.Logf("%s: shim gc:\n%s", rt.Name, gc.Stdout)
		if clean := pdTakeInventory(t, e); !reflect.DeepEqual(clean, pdInventory{}) {
			t.Errorf("%s: left after shim gc:%s", rt.Name, clean)
		}
		if m := pdMountsUnder(t, e.StateDir); len(m) > 0 {
			t.Errorf("%s: mounts under the state dir after shim gc: %v", rt.Name, m)
		}
		// And a retried create of a killed one succeeds.
		if len(killedIDs) > 0 {
			retry := killedIDs[0]
			lcShim(e, "delete", "--force", retry) // in case the runtime still has it
			lcCreate(t, e, pdBundle(t, nil), retry)
			lcMustShim(e, "delete", "--force", retry)
		}
	})
}

// pdKillStages tells, for each killed create, how far its shim got, from
// what it left: a container (the runtime create ran), a record (the last
// step before the hand-over), a registry entry, a pin without entry, only
// the create lock, or nothing.
func pdKillStages(inv pdInventory, killed, existing []string) string {
	stages := []string{"container made", "record, no container", "registry entry, no record", "pin mounted, no entry", "pod directory without pin mount or entry", "create lock only", "nothing"}
	byStage := map[string][]string{}
	for _, id := range killed {
		var st string
		switch {
		case slices.Contains(existing, id):
			st = stages[0]
		case slices.Contains(inv.Records, id+".json"):
			st = stages[1]
		case slices.Contains(inv.EntryIDs, id):
			st = stages[2]
		case slices.Contains(inv.PinsMounted, filepath.Join("pods", id, "userns")):
			st = stages[3]
		case slices.Contains(inv.PodDirs, id):
			st = stages[4]
		case slices.Contains(inv.Locks, id+".lock"):
			st = stages[5]
		default:
			st = stages[6]
		}
		byStage[st] = append(byStage[st], id)
	}
	var b strings.Builder
	for _, st := range stages {
		fmt.Fprintf(&b, "\n  %s: %d %v", st, len(byStage[st]), byStage[st])
	}
	return b.String()
}

// pdSnapshot is everything a refused create must leave as it was: the
// registry's bytes, every path under the state dir with its size, and the
// mounts there.
func pdSnapshot(t *testing.T, e *Env) string {
	t.Helper()
	var b strings.Builder
	reg, err := os.ReadFile(pdRegistryPath(e))
	fmt.Fprintf(&b, "pods.json (%v):\n%s\n", err, reg)
	filepath.WalkDir(e.StateDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", p, err)
			return nil
		}
		info, _ := d.Info()
		size := int64(0)
		if info != nil && !d.IsDir() {
			size = info.Size()
		}
		fmt.Fprintf(&b, "%s %s %d\n", p, d.Type(), size)
		return nil
	})
	fmt.Fprintf(&b, "mounts: %v\n", pdMountsUnder(t, e.StateDir))
	return b.String()
}

// pdRequireRefusedUnchanged checks a refused create of container id: a
// non-zero exit, one `userns-shim: ` stderr line naming every string of
// wants, config.json byte-identical, the state dir (registry bytes, files,
// pins) as before, and no container.
func pdRequireRefusedUnchanged(t *testing.T, e *Env, b *Bundle, id string, configBefore []byte, stateBefore string, r Result, wants ...string) {
	t.Helper()
	msg := requireRefusalLine(t, id, r, wants...)
	t.Logf("refusal: %s", msg)
	if after := b.Raw(t); !bytes.Equal(configBefore, after) {
		t.Errorf("config.json changed by a refused create:\nbefore %s\nafter %s", configBefore, after)
	}
	if after := pdSnapshot(t, e); after != stateBefore {
		t.Errorf("state dir changed by a refused create:\nbefore:\n%s\nafter:\n%s", stateBefore, after)
	}
	if st := lcShim(e, "state", id); st.Code == 0 {
		t.Errorf("state %s after a refused create: exit 0, want no container\n%s", id, st.Stdout)
	}
}

// TestPodsRefusals: a second container of a pod with a mapping other than
// the pod's, and a new pod whose host range overlaps a live pod's (from an
// annotation or from the allocator), are refused with a message that says
// why and names the pods, and nothing changes: config.json, the registry's
// bytes, the state dir, the pins.
func TestPodsRefusals(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		t.Run("mismatched-mapping", func(t *testing.T) {
			want := lcRange(pdHost(10, i))
			other := lcRange(pdHost(10, i) + 5*lcSize)
			e := pdEnv(t, rt, "", true)
			pod := "pd-mismatch-sandbox-" + rt.Name
			uid := fmt.Sprintf("e1f2a3b4-c5d6-4e7f-8091-%012d", i)
			a, b := "pd-mismatch-a-"+rt.Name, "pd-mismatch-b-"+rt.Name
			pidA := pdCreateStart(t, e, pdBundle(t, pdCRIO(pod, uid, lcAnnotation(want))), a)

			bb := pdBundle(t, pdCRIO(pod, uid, lcAnnotation(other)))
			cfg, st := bb.Raw(t), pdSnapshot(t, e)
			lcCleanup(t, e, b)
			r := lcShim(e, "create", "--bundle", bb.Dir, b)
			pdRequireRefusedUnchanged(t, e, bb, b, cfg, st, r, "differs from its pod", pod, lcAnnotation(other), lcAnnotation(want))
			lcRequireNoRecord(t, e, b)
			pdRequirePod(t, e, pod, []string{a}, "annotation", want)
			pdRequireShared(t, e, pod, []int{pidA}, want)

			lcKillAndDelete(t, e, a)
			pdRequireStateClean(t, e)
		})

		t.Run("overlapping-annotation", func(t *testing.T) {
			want := lcRange(pdHost(11, i))
			// Half a block further: shares 32768 IDs with the live pod.
			overlap := lcRange(pdHost(11, i) + lcSize/2)
			e := pdEnv(t, rt, "", true)
			podA := "pd-overlap-a-sandbox-" + rt.Name
			podB := "pd-overlap-b-pause-" + rt.Name
			a := "pd-overlap-a-" + rt.Name
			pidA := pdCreateStart(t, e, pdBundle(t, pdCRIO(podA, "f0e1d2c3-b4a5-4968-8776-00000000000"+strconv.Itoa(i), lcAnnotation(want))), a)

			bb := pdBundle(t, pdContainerd("sandbox", podB, "0a1b2c3d-4e5f-4a6b-8c7d-00000000000"+strconv.Itoa(i), lcAnnotation(overlap)))
			cfg, st := bb.Raw(t), pdSnapshot(t, e)
			lcCleanup(t, e, podB)
			r := lcShim(e, "create", "--bundle", bb.Dir, podB)
			pdRequireRefusedUnchanged(t, e, bb, podB, cfg, st, r, "overlap", "pod "+podA, "pod "+podB)
			lcRequireNoRecord(t, e, podB)
			pdRequirePod(t, e, podA, []string{a}, "annotation", want)
			pdRequireShared(t, e, podA, []int{pidA}, want)

			lcKillAndDelete(t, e, a)
			pdRequireStateClean(t, e)
		})

		t.Run("overlapping-allocated", func(t *testing.T) {
			pool := pdNewPool(12, i, 4)
			e := pdEnv(t, rt, pool.TOML(), true)
			podA := "pd-overlap-alloc-a-" + rt.Name
			podB := "pd-overlap-alloc-b-" + rt.Name
			pidA := pdCreateStart(t, e, pdBundle(t, nil), podA)
			pdRequirePod(t, e, podA, []string{podA}, "allocator", pool.Block(0))

			// A pod whose annotation names the block the allocator gave A.
			bb := pdBundle(t, map[string]string{lcAnnUIDMappings: lcAnnotation(pool.Block(0))})
			cfg, st := bb.Raw(t), pdSnapshot(t, e)
			lcCleanup(t, e, podB)
			r := lcShim(e, "create", "--bundle", bb.Dir, podB)
			pdRequireRefusedUnchanged(t, e, bb, podB, cfg, st, r, "overlap", "pod "+podA, "pod "+podB)
			lcRequireNoRecord(t, e, podB)
			pdRequireShared(t, e, podA, []int{pidA}, pool.Block(0))

			lcKillAndDelete(t, e, podA)
			pdRequireStateClean(t, e)
		})
	})
}

// TestPodsRuntimeMadeUserNS: when the CRI runtime made the pod's user
// namespace (config.json has a user namespace with mappings, later
// containers join it by path, as CRI-O and containerd 2 do), the shim pins
// nothing and keeps the spec's namespace; it only checks that every
// container's mappings agree with the pod's, and refuses one that differs.
func TestPodsRuntimeMadeUserNS(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		want := lcRange(pdHost(20, i))
		other := lcRange(pdHost(20, i) + 3*lcSize)
		e := pdEnv(t, rt, "", true)
		pod := "pd-rtns-sandbox-" + rt.Name
		uid := fmt.Sprintf("4a5b6c7d-8e9f-4a0b-9c1d-%012d", i)
		a, b, c := "pd-rtns-a-"+rt.Name, "pd-rtns-b-"+rt.Name, "pd-rtns-c-"+rt.Name
		withUserNS := func(bd *Bundle, path string, m specs.LinuxIDMapping) {
			bd.Spec.Linux.Namespaces = append(bd.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: path})
			bd.Spec.Linux.UIDMappings = []specs.LinuxIDMapping{m}
			bd.Spec.Linux.GIDMappings = []specs.LinuxIDMapping{m}
			bd.Save(t)
		}

		ba := pdBundle(t, pdCRIO(pod, uid, ""))
		withUserNS(ba, "", want)
		pidA := pdCreateStart(t, e, ba, a)
		userns := fmt.Sprintf("/proc/%d/ns/user", pidA)
		bb := pdBundle(t, pdCRIO(pod, uid, ""))
		withUserNS(bb, userns, want)
		pidB := pdCreateStart(t, e, bb, b)

		if x, y := pdNSInode(t, pidA, "user"), pdNSInode(t, pidB, "user"); x != y {
			t.Errorf("user namespaces %d and %d, want the second to join the first's", x, y)
		}
		lcRequireProcMaps(t, pidA, want)
		lcRequireProcMaps(t, pidB, want)
		if pins := pdPinsMounted(t, e); len(pins) != 0 {
			t.Errorf("pins %v, want none: the runtime made the user namespace", pins)
		}
		r, data := pdReadRegistry(t, e)
		if r == nil || r.Pods[pod] == nil {
			t.Fatalf("pods.json has no pod %s:\n%s", pod, data)
		}
		p := r.Pods[pod]
		if p.Pin != "" || !slices.Equal(slices.Sorted(slices.Values(p.Containers)), slices.Sorted(slices.Values([]string{a, b}))) ||
			!slices.Equal(p.Mapping.UIDs, []specs.LinuxIDMapping{want}) {
			t.Errorf("pods.json: pod %s: pin %q containers %v mapping %v, want no pin, [%s %s], %v", pod, p.Pin, p.Containers, p.Mapping.UIDs, a, b, want)
		}
		bb.Load(t)
		if ns := bb.Spec.Linux.Namespaces[len(bb.Spec.Linux.Namespaces)-1]; ns.Type != specs.UserNamespace || ns.Path != userns {
			t.Errorf("config.json of %s: user namespace %v, want the spec's own path %s kept", b, ns, userns)
		}
		pdRequireInspect(t, e, a, pod, "spec")
		pdRequireInspect(t, e, b, pod, "spec")

		// A container of the pod whose spec maps other IDs is refused.
		bc := pdBundle(t, pdCRIO(pod, uid, ""))
		withUserNS(bc, "", other)
		cfg, st := bc.Raw(t), pdSnapshot(t, e)
		lcCleanup(t, e, c)
		res := lcShim(e, "create", "--bundle", bc.Dir, c)
		pdRequireRefusedUnchanged(t, e, bc, c, cfg, st, res, "differs from its pod", pod)

		lcKillAndDelete(t, e, b)
		lcKillAndDelete(t, e, a)
		pdRequireStateClean(t, e)
	})
}
