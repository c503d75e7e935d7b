package integration

// Lifecycle tests: containers driven through the shim from create to delete
// against the real runc and crun, checked the way a user would check them:
// the runtime's state, the container's uid_map and host uid seen from the
// host, `id` inside the container, config.json, and the shim's own record.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Annotations and record sources as the contract names them.
const (
	lcAnnUIDMappings = "userns-shim.io/uid-mappings"
	lcAnnGIDMappings = "userns-shim.io/gid-mappings"
	lcAnnPodUID      = "io.kubernetes.pod.uid"
)

// lcSize is the one range size every test maps: one 65536-ID block.
const lcSize = 65536

// lcHost returns a host ID distinct for each (test, runtime) pair, so that no
// two containers of this file ever share host IDs. Host IDs need only be at
// least 65536; they are deliberately not multiples of 65536.
func lcHost(test, rt int) uint32 {
	return uint32(2_000_000 + test*1_000_000 + rt*100_000)
}

// lcRange is the mapping of container IDs 0-65535 to host IDs host-host+65535.
func lcRange(host uint32) specs.LinuxIDMapping {
	return specs.LinuxIDMapping{ContainerID: 0, HostID: host, Size: lcSize}
}

// lcAnnotation renders r the way the mapping annotations are written.
func lcAnnotation(r specs.LinuxIDMapping) string {
	return fmt.Sprintf("%d:%d:%d", r.ContainerID, r.HostID, r.Size)
}

// lcForEachRuntime runs f once per real runtime, as a subtest named after it.
func lcForEachRuntime(t *testing.T, f func(t *testing.T, rtIndex int, rt Runtime)) {
	t.Helper()
	requireRoot(t)
	for i, rt := range runtimes(t) {
		t.Run(rt.Name, func(t *testing.T) { f(t, i, rt) })
	}
}

// lcShim runs the shim with the runtime's --root of e prepended.
func lcShim(e *Env, args ...string) Result {
	e.t.Helper()
	return e.Shim(append([]string{"--root", e.RootDir}, args...)...)
}

// lcMustShim is lcShim that fails the test on a non-zero exit.
func lcMustShim(e *Env, args ...string) Result {
	e.t.Helper()
	return e.MustShim(append([]string{"--root", e.RootDir}, args...)...)
}

// lcCleanup kills and deletes container id at the end of the test, whatever
// happened to it. It goes through the shim so that the shim's record goes too.
func lcCleanup(t *testing.T, e *Env, id string) {
	t.Helper()
	t.Cleanup(func() {
		if lcShim(e, "state", id).Code != 0 {
			return // never created, or already deleted
		}
		lcShim(e, "kill", id, "KILL")
		if r := lcShim(e, "delete", "--force", id); r.Code != 0 {
			t.Errorf("cleanup: delete --force %s: exit %d: %s", id, r.Code, r.Stderr)
		}
	})
}

// lcCreate creates container id from bundle b through the shim, detached,
// and returns its pid as the pid file says. The container is cleaned up at
// the end of the test.
func lcCreate(t *testing.T, e *Env, b *Bundle, id string, globalFlags ...string) int {
	t.Helper()
	lcCleanup(t, e, id)
	pidFile := filepath.Join(t.TempDir(), "pid")
	args := append(slices.Clone(globalFlags), "create", "--bundle", b.Dir, "--pid-file", pidFile, id)
	r := lcShim(e, args...)
	if r.Code != 0 {
		t.Fatalf("userns-shim create %s: exit %d\nstdout: %s\nstderr: %s", id, r.Code, r.Stdout, r.Stderr)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("pid file after create: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		t.Fatalf("pid file holds %q, not a pid", data)
	}
	return pid
}

// lcState returns what `state ID` says, through the shim.
func lcState(t *testing.T, e *Env, id string) specs.State {
	t.Helper()
	r := lcMustShim(e, "state", id)
	var st specs.State
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
		t.Fatalf("state %s: not JSON: %v\n%s", id, err, r.Stdout)
	}
	return st
}

// lcRequireStatus fails unless `state ID` reports status want.
func lcRequireStatus(t *testing.T, e *Env, id string, want specs.ContainerState) specs.State {
	t.Helper()
	st := lcState(t, e, id)
	if st.Status != want {
		t.Fatalf("state %s: status %q, want %q", id, st.Status, want)
	}
	if st.ID != id {
		t.Fatalf("state %s: id %q", id, st.ID)
	}
	return st
}

// lcWaitStatus polls `state ID` until it reports status want.
func lcWaitStatus(t *testing.T, e *Env, id string, want specs.ContainerState) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := lcState(t, e, id)
		if st.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %s: still %q after 10s, want %q", id, st.Status, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lcProcMap reads /proc/PID/uid_map or gid_map from the host.
func lcProcMap(t *testing.T, pid int, file string) []specs.LinuxIDMapping {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/%s", pid, file)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []specs.LinuxIDMapping
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("%s: line %q: want 3 fields", path, line)
		}
		var v [3]uint32
		for i, s := range f {
			n, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				t.Fatalf("%s: line %q: %v", path, line, err)
			}
			v[i] = uint32(n)
		}
		out = append(out, specs.LinuxIDMapping{ContainerID: v[0], HostID: v[1], Size: v[2]})
	}
	return out
}

// lcRequireProcMaps fails unless the process's uid_map and gid_map are both
// exactly want.
func lcRequireProcMaps(t *testing.T, pid int, want ...specs.LinuxIDMapping) {
	t.Helper()
	for _, file := range []string{"uid_map", "gid_map"} {
		if got := lcProcMap(t, pid, file); !slices.Equal(got, want) {
			t.Errorf("/proc/%d/%s = %v, want %v", pid, file, got, want)
		}
	}
}

// lcRequireHostIDs fails unless every field of the Uid: and Gid: lines of
// /proc/PID/status (real, effective, saved, fs) is host: the container's
// root seen from the host.
func lcRequireHostIDs(t *testing.T, pid int, host uint32) {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/status", pid)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := strconv.FormatUint(uint64(host), 10)
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, rest, _ := strings.Cut(sc.Text(), ":")
		if key != "Uid" && key != "Gid" {
			continue
		}
		seen++
		ids := strings.Fields(rest)
		if len(ids) != 4 || slices.ContainsFunc(ids, func(s string) bool { return s != want }) {
			t.Errorf("%s: %s:%s, want %s four times", path, key, rest, want)
		}
	}
	if seen != 2 {
		t.Errorf("%s: found %d of the Uid/Gid lines", path, seen)
	}
}

// lcRecordPath is the shim's record of container id.
func lcRecordPath(e *Env, id string) string {
	return filepath.Join(e.StateDir, "containers", id+".json")
}

// lcRecord is the part of the shim's record the tests look at.
type lcRecord struct {
	ID      string `json:"id"`
	Bundle  string `json:"bundle"`
	Root    string `json:"root"`
	Runtime string `json:"runtime"`
	PodUID  string `json:"podUID"`
	Source  string `json:"source"`
	Mapping struct {
		UIDs []specs.LinuxIDMapping `json:"uidMappings"`
		GIDs []specs.LinuxIDMapping `json:"gidMappings"`
	} `json:"mapping"`
}

// lcParseRecord decodes a record and checks it names id, source and want.
func lcParseRecord(t *testing.T, data []byte, id, source string, want specs.LinuxIDMapping) lcRecord {
	t.Helper()
	var rec lcRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatalf("record of %s: not JSON: %v\n%s", id, err, data)
	}
	if rec.ID != id || rec.Source != source {
		t.Errorf("record: id %q source %q, want id %q source %q\n%s", rec.ID, rec.Source, id, source, data)
	}
	w := []specs.LinuxIDMapping{want}
	if !slices.Equal(rec.Mapping.UIDs, w) || !slices.Equal(rec.Mapping.GIDs, w) {
		t.Errorf("record: mapping uid %v gid %v, want %v for both", rec.Mapping.UIDs, rec.Mapping.GIDs, w)
	}
	return rec
}

// lcRequireNoRecord fails if the shim has a record of container id.
func lcRequireNoRecord(t *testing.T, e *Env, id string) {
	t.Helper()
	if _, err := os.Stat(lcRecordPath(e, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record %s: want none, stat says %v", lcRecordPath(e, id), err)
	}
}

// lcRequireUserNamespace fails unless the bundle's config.json now asks for
// a new user namespace with want as both uid and gid mapping.
func lcRequireUserNamespace(t *testing.T, b *Bundle, want specs.LinuxIDMapping) {
	t.Helper()
	b.Load(t)
	if b.Spec.Linux == nil {
		t.Fatal("config.json: no linux section")
	}
	user := userNamespaces(b.Spec)
	// The shim makes one user namespace per pod, pins it under
	// <state_dir>/pods/<pod>/userns, and every container joins the pin.
	if len(user) != 1 || !strings.HasSuffix(user[0].Path, "/userns") || !strings.Contains(user[0].Path, "/pods/") {
		t.Errorf("config.json: user namespace entries %v, want one joining the pod's pin <state_dir>/pods/<pod>/userns", user)
	}
	w := []specs.LinuxIDMapping{want}
	if !slices.Equal(b.Spec.Linux.UIDMappings, w) || !slices.Equal(b.Spec.Linux.GIDMappings, w) {
		t.Errorf("config.json: linux.uidMappings %v gidMappings %v, want %v for both",
			b.Spec.Linux.UIDMappings, b.Spec.Linux.GIDMappings, w)
	}
}

// lcRequireSpecUserNamespace: a spec that came with its user namespace and
// mappings keeps them as they were.
func lcRequireSpecUserNamespace(t *testing.T, b *Bundle, want specs.LinuxIDMapping) {
	t.Helper()
	b.Load(t)
	user := userNamespaces(b.Spec)
	w := []specs.LinuxIDMapping{want}
	if len(user) != 1 || user[0].Path != "" || !slices.Equal(b.Spec.Linux.UIDMappings, w) || !slices.Equal(b.Spec.Linux.GIDMappings, w) {
		t.Errorf("config.json: user namespace %v with mappings %v/%v, want the spec's own new one with %v", user, b.Spec.Linux.UIDMappings, b.Spec.Linux.GIDMappings, w)
	}
}

// lcRequireRootInside fails unless `exec ID id` says the process is root.
func lcRequireRootInside(t *testing.T, e *Env, id string) {
	t.Helper()
	out := lcMustShim(e, "exec", id, "id").Stdout
	if !strings.Contains(out, "uid=0(root)") || !strings.Contains(out, "gid=0(root)") {
		t.Errorf("exec %s id: %q, want uid=0(root) gid=0(root)", id, out)
	}
}

// lcKillAndDelete stops the running container id with SIGKILL, waits until
// the runtime reports it stopped, deletes it and checks that both the
// container and the shim's record are gone.
func lcKillAndDelete(t *testing.T, e *Env, id string) {
	t.Helper()
	lcMustShim(e, "kill", id, "KILL")
	lcWaitStatus(t, e, id, specs.StateStopped)
	lcMustShim(e, "delete", id)
	if r := lcShim(e, "state", id); r.Code == 0 {
		t.Errorf("state %s after delete: exit 0, want the container gone\n%s", id, r.Stdout)
	}
	lcRequireNoRecord(t, e, id)
}

// lcLifecycle drives container id from bundle b through create, state,
// start, exec, kill and delete behind the shim, and checks at each step that
// it runs in a user namespace with want, as decided from source.
func lcLifecycle(t *testing.T, e *Env, b *Bundle, id, source string, want specs.LinuxIDMapping) {
	t.Helper()
	pid := lcCreate(t, e, b, id)
	if st := lcRequireStatus(t, e, id, specs.StateCreated); st.Pid != pid {
		t.Errorf("state %s: pid %d, pid file %d", id, st.Pid, pid)
	}
	data, err := os.ReadFile(lcRecordPath(e, id))
	if err != nil {
		t.Fatalf("shim record after create: %v", err)
	}
	lcParseRecord(t, data, id, source, want)
	if source == "spec" {
		lcRequireSpecUserNamespace(t, b, want)
	} else {
		lcRequireUserNamespace(t, b, want)
	}

	lcMustShim(e, "start", id)
	lcRequireStatus(t, e, id, specs.StateRunning)
	lcRequireProcMaps(t, pid, want)
	lcRequireHostIDs(t, pid, want.HostID)
	lcRequireRootInside(t, e, id)

	lcKillAndDelete(t, e, id)
}

// TestLifecycleAnnotationMapping: the pod's mapping comes from the
// userns-shim.io annotations; the shim writes it into config.json and the
// container runs as root inside, as the mapped host uid outside.
func TestLifecycleAnnotationMapping(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		want := lcRange(lcHost(0, i))
		e := newEnv(t, rt, "")
		b := newBundle(t, "sleep", "1000")
		b.Spec.Annotations = map[string]string{
			lcAnnUIDMappings: lcAnnotation(want),
			lcAnnGIDMappings: lcAnnotation(want),
		}
		b.Save(t)

		lcLifecycle(t, e, b, "lc-annotation-"+rt.Name, "annotation", want)

		// The rewrite keeps what was there: annotations and other namespaces.
		if got := b.Spec.Annotations[lcAnnUIDMappings]; got != lcAnnotation(want) {
			t.Errorf("config.json after rewrite: annotation %s = %q", lcAnnUIDMappings, got)
		}
		if n := len(b.Spec.Linux.Namespaces); n != 6 {
			t.Errorf("config.json after rewrite: %d namespaces %v, want runc spec's 5 and user", n, b.Spec.Linux.Namespaces)
		}
	})
}

// TestLifecycleMappingSources: the same lifecycle with the mapping taken from
// config.json itself, from a mount's uidMappings, and from the kubelet's
// record of the pod.
func TestLifecycleMappingSources(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		t.Run("spec", func(t *testing.T) {
			want := lcRange(lcHost(1, i))
			e := newEnv(t, rt, "")
			b := newBundle(t, "sleep", "1000")
			b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
			b.Spec.Linux.UIDMappings = []specs.LinuxIDMapping{want}
			b.Spec.Linux.GIDMappings = []specs.LinuxIDMapping{want}
			b.Save(t)
			before := *b.Spec

			lcLifecycle(t, e, b, "lc-spec-"+rt.Name, "spec", want)

			// A complete spec is verified and kept; only root.path now names
			// the ID-mapped rootfs the shim staged for the mapped root.
			b.Load(t)
			if !strings.HasPrefix(b.Spec.Root.Path, e.StateDir+"/staging/") {
				t.Errorf("root.path %s: want the shim's ID-mapped rootfs under %s/staging", b.Spec.Root.Path, e.StateDir)
			}
			b.Spec.Root.Path = before.Root.Path
			// The shim keeps what it changed for a re-create from this file.
			if _, ok := b.Spec.Annotations["userns-shim.io/original"]; !ok {
				t.Errorf("config.json: no userns-shim.io/original annotation after a rewrite")
			}
			delete(b.Spec.Annotations, "userns-shim.io/original")
			if len(b.Spec.Annotations) == 0 {
				b.Spec.Annotations = before.Annotations
			}
			if got, want := lcJSON(t, b.Spec), lcJSON(t, &before); got != want {
				t.Errorf("config.json changed beyond root.path:\nbefore %s\nafter  %s", want, got)
			}
		})

		t.Run("mounts", func(t *testing.T) {
			want := lcRange(lcHost(2, i))
			e := newEnv(t, rt, "")
			b := newBundle(t, "sleep", "1000")
			// The volume lives in the bundle, whose path the container's
			// mapped root can traverse.
			vol := filepath.Join(b.Dir, "vol")
			if err := os.Mkdir(vol, 0o755); err != nil {
				t.Fatal(err)
			}
			// The mount point must exist: the rootfs belongs to host root,
			// so the container's root cannot make it.
			if err := os.Mkdir(filepath.Join(b.Dir, "rootfs", "vol"), 0o755); err != nil {
				t.Fatal(err)
			}
			// runc 1.1.5 ignores per-mount mappings and crun 1.8.1 applies
			// them; either way the container's own mapping is what is checked.
			b.Spec.Mounts = append(b.Spec.Mounts, specs.Mount{
				Destination: "/vol", Type: "bind", Source: vol, Options: []string{"bind"},
				UIDMappings: []specs.LinuxIDMapping{want}, GIDMappings: []specs.LinuxIDMapping{want},
			})
			b.Save(t)

			lcLifecycle(t, e, b, "lc-mounts-"+rt.Name, "mounts", want)
		})

		t.Run("kubelet", func(t *testing.T) {
			want := lcRange(lcHost(3, i))
			kubelet := t.TempDir()
			podUID := "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f" + strconv.Itoa(i)
			rec := fmt.Sprintf(`{"uidMappings":[{"hostId":%d,"containerId":0,"length":%d}],"gidMappings":[{"hostId":%d,"containerId":0,"length":%d}]}`,
				want.HostID, want.Size, want.HostID, want.Size)
			podDir := filepath.Join(kubelet, "pods", podUID)
			if err := os.MkdirAll(podDir, 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(podDir, "userns"), []byte(rec), 0o600); err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, rt, fmt.Sprintf("kubelet_root = %q", kubelet))
			b := newBundle(t, "sleep", "1000")
			b.Spec.Annotations = map[string]string{lcAnnPodUID: podUID}
			b.Save(t)

			id := "lc-kubelet-" + rt.Name
			lcLifecycle(t, e, b, id, "kubelet", want)
		})
	})
}

// TestLifecyclePassthrough: in passthrough mode a container with no mapping
// from any source runs exactly as its config.json says: in the host's user
// namespace, with config.json untouched and no record kept.
func TestLifecyclePassthrough(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		e := newEnv(t, rt, `mode = "passthrough"`)
		b := newBundle(t, "sleep", "1000")
		before := b.Raw(t)
		id := "lc-passthrough-" + rt.Name

		pid := lcCreate(t, e, b, id)
		lcRequireStatus(t, e, id, specs.StateCreated)
		lcMustShim(e, "start", id)
		lcRequireStatus(t, e, id, specs.StateRunning)

		// The initial user namespace maps all of 0-4294967294 onto itself.
		lcRequireProcMaps(t, pid, specs.LinuxIDMapping{ContainerID: 0, HostID: 0, Size: 4294967295})
		lcRequireHostIDs(t, pid, 0)
		if after := b.Raw(t); !bytes.Equal(before, after) {
			t.Errorf("config.json changed in passthrough:\nbefore %s\nafter %s", before, after)
		}
		lcRequireNoRecord(t, e, id)
		if r := lcShim(e, "shim", "inspect", id); r.Code == 0 || !strings.HasPrefix(r.Stderr, "userns-shim: ") {
			t.Errorf("shim inspect of a passed-through container: exit %d stderr %q, want a userns-shim: error", r.Code, r.Stderr)
		}

		lcKillAndDelete(t, e, id)
	})
}

// TestLifecycleShimInspect: `userns-shim shim inspect ID` shows the shim's
// decision while the container exists, and nothing once it is deleted.
func TestLifecycleShimInspect(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		want := lcRange(lcHost(4, i))
		e := newEnv(t, rt, "")
		b := newBundle(t, "sleep", "1000")
		b.Spec.Annotations = map[string]string{lcAnnUIDMappings: lcAnnotation(want)}
		b.Save(t)
		id := "lc-inspect-" + rt.Name

		lcCreate(t, e, b, id)
		lcMustShim(e, "start", id)
		r := lcMustShim(e, "shim", "inspect", id)
		// The gid mapping follows the uid annotation when only that is given.
		rec := lcParseRecord(t, []byte(r.Stdout), id, "annotation", want)
		if rec.Bundle != b.Dir {
			t.Errorf("inspect: bundle %q, want %q", rec.Bundle, b.Dir)
		}
		if rec.Root != e.RootDir || rec.Runtime != rt.Path {
			t.Errorf("inspect: root %q runtime %q, want %q and %q", rec.Root, rec.Runtime, e.RootDir, rt.Path)
		}

		lcKillAndDelete(t, e, id)
		r = lcShim(e, "shim", "inspect", id)
		if r.Code == 0 || !strings.HasPrefix(r.Stderr, "userns-shim: ") || !strings.Contains(r.Stderr, "no record") {
			t.Errorf("shim inspect after delete: exit %d stderr %q, want a userns-shim: no record error", r.Code, r.Stderr)
		}
	})
}

// TestLifecycleVersionAndFeatures: the answers CRI runtimes ask for at start:
// runc's three-line --version naming the real runtime, and a features
// document that lists user namespaces and says whether idmap mounts work.
func TestLifecycleVersionAndFeatures(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		e := newEnv(t, rt, "")

		// What the real runtime says of itself.
		own, err := exec.Command(rt.Path, "--version").Output()
		if err != nil {
			t.Fatalf("%s --version: %v", rt.Path, err)
		}
		ownLines := strings.Split(string(own), "\n")
		name, ver, _ := strings.Cut(ownLines[0], " version ")
		var ownSpec string
		for _, l := range ownLines {
			if s, ok := strings.CutPrefix(l, "spec: "); ok {
				ownSpec = s
			}
		}

		out := e.MustShim("--version").Stdout
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 3 {
			t.Fatalf("--version: %d lines, want 3:\n%s", len(lines), out)
		}
		first := regexp.MustCompile(`^userns-shim version \S+ \(runtime (\S+) (\S+) at (\S+)\)$`).FindStringSubmatch(lines[0])
		if first == nil {
			t.Errorf("--version line 1 %q: want \"userns-shim version V (runtime NAME VER at PATH)\"", lines[0])
		} else if first[1] != name || first[2] != ver || first[3] != rt.Path {
			t.Errorf("--version names runtime %s %s at %s, want %s %s at %s", first[1], first[2], first[3], name, ver, rt.Path)
		}
		if !strings.HasPrefix(lines[1], "commit: ") {
			t.Errorf("--version line 2 %q: want \"commit: ...\"", lines[1])
		}
		if lines[2] != "spec: "+ownSpec {
			t.Errorf("--version line 3 %q: want %q, the runtime's own", lines[2], "spec: "+ownSpec)
		}

		out = e.MustShim("features").Stdout
		var f struct {
			Linux struct {
				Namespaces      []string `json:"namespaces"`
				MountExtensions struct {
					IDMap struct {
						Enabled *bool `json:"enabled"`
					} `json:"idmap"`
				} `json:"mountExtensions"`
			} `json:"linux"`
		}
		if err := json.Unmarshal([]byte(out), &f); err != nil {
			t.Fatalf("features: not JSON: %v\n%s", err, out)
		}
		if !slices.Contains(f.Linux.Namespaces, "user") {
			t.Errorf("features: linux.namespaces %v lacks user", f.Linux.Namespaces)
		}
		if f.Linux.MountExtensions.IDMap.Enabled == nil {
			t.Errorf("features: no linux.mountExtensions.idmap.enabled:\n%s", out)
		}
	})
}

// TestLifecycleDebugLog: with --log FILE --log-format json --debug, the log
// file holds JSON lines (level, msg, time) that CRI runtimes can parse, and
// the shim's decision is among them at debug level.
func TestLifecycleDebugLog(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		want := lcRange(lcHost(5, i))
		e := newEnv(t, rt, "")
		b := newBundle(t, "sleep", "1000")
		b.Spec.Annotations = map[string]string{lcAnnUIDMappings: lcAnnotation(want)}
		b.Save(t)
		id := "lc-debuglog-" + rt.Name
		logFile := filepath.Join(t.TempDir(), "log.json")

		lcCreate(t, e, b, id, "--log", logFile, "--log-format", "json", "--debug")

		data, err := os.ReadFile(logFile)
		if err != nil {
			t.Fatal(err)
		}
		var decided, timed map[string]any
		for n, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var entry map[string]any
			if err := json.Unmarshal([]byte(line), &entry); err != nil {
				t.Errorf("log line %d is not JSON: %v: %q", n+1, err, line)
				continue
			}
			for _, k := range []string{"level", "msg", "time"} {
				if _, ok := entry[k].(string); !ok {
					t.Errorf("log line %d: no string %q: %q", n+1, k, line)
				}
			}
			switch entry["msg"] {
			case "user namespace decided":
				decided = entry
			case "create timings":
				timed = entry
			}
		}
		if decided == nil {
			t.Fatalf("log has no \"user namespace decided\" entry:\n%s", data)
		}
		if decided["level"] != "debug" || decided["id"] != id || decided["source"] != "annotation" ||
			decided["uidMappings"] != lcAnnotation(want) || decided["gidMappings"] != lcAnnotation(want) {
			t.Errorf("decision entry %v: want level debug, id %s, source annotation, uid and gid mappings %s", decided, id, lcAnnotation(want))
		}
		// The phases of the create, in ms: the runtime's own create takes
		// milliseconds whatever the machine; every phase is measured.
		if timed == nil {
			t.Fatalf("log has no \"create timings\" entry:\n%s", data)
		}
		for _, phase := range []string{"decode", "decide", "mounts", "write", "runtime", "release"} {
			if ms, ok := timed[phase+"_ms"].(float64); !ok || ms < 0 {
				t.Errorf("create timings %v: no %s_ms", timed, phase)
			}
		}
		if ms, _ := timed["runtime_ms"].(float64); ms < 1 {
			t.Errorf("create timings %v: the runtime's create took %v ms, under a millisecond", timed, ms)
		}
	})
}

// TestLifecycleRunForeground: `run` without --detach runs the process to its
// end through the shim in the user namespace, passing on its output and exit
// status.
func TestLifecycleRunForeground(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		want := lcRange(lcHost(6, i))
		e := newEnv(t, rt, "")
		b := newBundle(t, "sh", "-c", "id; cat /proc/self/uid_map")
		b.Spec.Annotations = map[string]string{lcAnnUIDMappings: lcAnnotation(want)}
		b.Save(t)
		id := "lc-run-" + rt.Name
		lcCleanup(t, e, id)

		// The container exits by itself, so pipes for its output are fine here.
		r := lcMustShim(e, "run", "--bundle", b.Dir, id)
		if !strings.Contains(r.Stdout, "uid=0(root)") {
			t.Errorf("run %s: output %q, want uid=0(root)", id, r.Stdout)
		}
		// The process sees its own side of the mapping: 0 -> host ID.
		if !strings.Contains(strings.Join(strings.Fields(r.Stdout), " "), fmt.Sprintf("0 %d %d", want.HostID, want.Size)) {
			t.Errorf("run %s: uid_map in output %q, want 0 %d %d", id, r.Stdout, want.HostID, want.Size)
		}
		lcRequireUserNamespace(t, b, want)

		// A foreground run removes the container when its process exits, and
		// the shim's record goes with it.
		if st := lcShim(e, "state", id); st.Code == 0 {
			t.Errorf("state %s after run: exit 0, want the container gone\n%s", id, st.Stdout)
		}
		lcRequireNoRecord(t, e, id)

		// A run that fails leaves no record either.
		b.Spec.Process.Args = []string{"/nonexistent"}
		b.Save(t)
		if r := lcShim(e, "run", "--bundle", b.Dir, id+"-fail"); r.Code == 0 {
			t.Errorf("run of /nonexistent: exit 0")
		}
		lcShim(e, "delete", "--force", id+"-fail")
		lcRequireNoRecord(t, e, id+"-fail")
	})
}

func lcJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
