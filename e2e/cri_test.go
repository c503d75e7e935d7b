package e2e

// CRI runtimes with the shim as a runtime handler: containerd 2.4.2 and
// CRI-O 1.34.0 (both built by hack/e2e/tools.sh, once per machine, into
// /var/cache/userns-shim-e2e), driven by crictl and critest. Each daemon is
// private (hack/e2e/containerd2.sh, hack/e2e/crio.sh: everything in one
// temporary directory) and gets two extra handlers, userns-shim-runc and
// userns-shim-crun: the shim's wrapper script with a config naming the real
// runtime (Debian's runc 1.1.5 or crun 1.8.1) in passthrough mode. The pods
// carry CRI userns_options (hostUsers: false), so the mapping comes from the
// CRI runtime and the shim supplies what the old runtimes lack: the
// `features` answer, a lower ociVersion for crun, ID-mapped volumes.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// criShimTOML: critest's user-namespace specs map container 0 onto host
// 1000 with a length of 100000; the shim's default rules refuse both.
const criShimTOML = "[validation]\nmin_host_id = 1000\nsize_multiple = 1\n"

// criToolPaths runs hack/e2e/tools.sh (a no-op printing paths once built; a
// cold build takes about 5 minutes) and returns its NAME=PATH lines. The
// test skips (fails under CI) when the tools cannot be built.
func criToolPaths(t *testing.T) map[string]string {
	t.Helper()
	requireRoot(t)
	requireTools(t, "conmon", "skopeo", "runc", "crun", "unshare")
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		missing(t, "CNI plugins not installed in /usr/lib/cni: run hack/e2e/install-deps.sh")
	}
	start := time.Now()
	r := runCmd(t, 20*time.Minute, nil, "../hack/e2e/tools.sh")
	if r.Code != 0 {
		missing(t, "containerd 2.4.2, CRI-O 1.34.0, crictl and critest are not built and hack/e2e/tools.sh "+
			"could not build them (it needs the Go module proxy once): %s", r)
	}
	timed(t, "hack/e2e/tools.sh", start)
	return criParseEnv(r.Stdout)
}

func criParseEnv(s string) map[string]string {
	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env
}

// criDaemon is one private containerd 2.4 or CRI-O 1.34.
type criDaemon struct {
	t      *testing.T
	Kind   string // "containerd2" or "crio"
	Dir    string
	Env    map[string]string // what the start script printed
	Tools  map[string]string
	Shims  map[string]*Shim // handler name -> its shim
	Images Images
}

// criStart starts a daemon of kind with the handlers userns-shim-runc and
// userns-shim-crun, and loads the busybox and pause images. Stopped (pods
// removed, daemon stopped, leftovers cleaned) when the test ends.
func criStart(t *testing.T, kind string) *criDaemon {
	t.Helper()
	tools := criToolPaths(t)
	images := testImages(t)
	dir := shortTempDir(t, "e2e-"+kind+"-")
	d := &criDaemon{t: t, Kind: kind, Dir: filepath.Join(dir, "d"), Tools: tools, Shims: map[string]*Shim{}, Images: images}
	if err := os.MkdirAll(d.Dir, 0o711); err != nil {
		t.Fatal(err)
	}
	// The real runtimes the daemon's own runc/crun handlers use : the shim must call the same ones.
	real := map[string]string{"runc": "/usr/sbin/runc", "crun": crunHybrid(t)}
	if kind == "crio" {
		real = map[string]string{"runc": filepath.Join(d.Dir, "runc-oomclamp"), "crun": filepath.Join(d.Dir, "crun-oomclamp")}
	}
	var handlers, extraEnv []string
	for _, rt := range []string{"runc", "crun"} {
		h := "userns-shim-" + rt
		if err := os.MkdirAll(filepath.Join(dir, h), 0o711); err != nil {
			t.Fatal(err)
		}
		// The daemon's own wrappers, whatever their names: the shim asks the
		// runtime what it is.
		s := newShim(t, filepath.Join(dir, h), Runtime{Name: rt, Path: real[rt]}, "passthrough", criShimTOML)
		d.Shims[h] = s
		handlers = append(handlers, h+"="+s.Wrapper)
	}
	// CRI-O writes pids.limit -1 (its default pids_limit) into every
	// container's config, which Debian's crun 1.8.1 cannot apply on cgroup v1
	// ("writing file `pids.max`: Invalid argument"): the shim drops it for
	// such a crun, so no drop-in is needed here.
	script := "../hack/e2e/" + map[string]string{"containerd2": "containerd2.sh", "crio": "crio.sh"}[kind]
	env := []string{"SHIM_HANDLERS=" + strings.Join(handlers, " "), "E2E_LOG_LEVEL=debug"}
	env = append(env, extraEnv...)
	for _, k := range []string{"CRICTL", "CRITEST", "CONTAINERD", "CONTAINERD_SHIM", "CTR", "CRIO", "PINNS", "E2E_BIN"} {
		env = append(env, k+"="+tools[k])
	}
	t.Cleanup(func() {
		r := runCmd(t, 3*time.Minute, env, script, "stop", d.Dir)
		if r.Code != 0 {
			t.Errorf("%s stop: %s", script, r)
		}
		if t.Failed() {
			if log, err := os.ReadFile(filepath.Join(d.Dir, map[string]string{"containerd2": "containerd.log", "crio": "crio.log"}[kind])); err == nil {
				lines := strings.Split(string(log), "\n")
				if len(lines) > 80 {
					lines = lines[len(lines)-80:]
				}
				t.Logf("last lines of the %s log:\n%s", kind, strings.Join(lines, "\n"))
			}
		}
	})
	start := time.Now()
	r := runCmd(t, 3*time.Minute, env, script, "start", d.Dir)
	if r.Code != 0 {
		t.Fatalf("%s start: %s", script, r)
	}
	timed(t, kind+" start", start)
	d.Env = criParseEnv(r.Stdout)
	if got := d.Env["HANDLER_RUNC"] + " " + d.Env["HANDLER_CRUN"]; got != real["runc"]+" "+real["crun"] {
		t.Fatalf("%s uses runtimes %s; the shims were configured with %s %s", kind, got, real["runc"], real["crun"])
	}
	start = time.Now()
	for _, img := range []struct{ name, archive string }{{images.BusyboxImage, images.BusyboxArchive}, {images.PauseImage, images.PauseArchive}} {
		var r Result
		if kind == "containerd2" {
			r = runCmd(t, 2*time.Minute, nil, tools["CTR"], "-a", d.Env["CONTAINERD_ADDRESS"], "-n", "k8s.io", "images", "import", img.archive)
		} else {
			r = runCmd(t, 2*time.Minute, nil, "skopeo", "copy", "--quiet", "docker-archive:"+img.archive,
				"containers-storage:["+d.Env["CRIO_STORAGE"]+"]"+img.name)
		}
		if r.Code != 0 {
			t.Fatalf("load %s: %s", img.name, r)
		}
	}
	if r := d.Crictl("inspecti", images.BusyboxImage); r.Code != 0 {
		t.Fatalf("the daemon does not see the busybox image: %s", r)
	}
	timed(t, "load images", start)
	return d
}

// Crictl runs crictl against the daemon.
func (d *criDaemon) Crictl(args ...string) Result {
	d.t.Helper()
	return runCmd(d.t, 2*time.Minute, nil, d.Tools["CRICTL"], append([]string{"--config", d.Env["CRICTL_CONFIG"]}, args...)...)
}

// MustCrictl runs crictl and fails the test unless it exits 0; returns stdout.
func (d *criDaemon) MustCrictl(args ...string) string {
	d.t.Helper()
	r := d.Crictl(args...)
	if r.Code != 0 {
		d.t.Fatalf("%s", r)
	}
	return strings.TrimSpace(r.Stdout)
}

// criIDRange is a CRI IDMapping.
type criIDRange struct {
	HostID      uint32 `json:"host_id"`
	ContainerID uint32 `json:"container_id"`
	Length      uint32 `json:"length"`
}

// criNamespaceOptions: modes POD=0, CONTAINER=1, NODE=2, TARGET=3.
func criNamespaceOptions(hostID uint32, pid int) map[string]any {
	m := []criIDRange{{HostID: hostID, ContainerID: 0, Length: 65536}}
	return map[string]any{
		"network": 0, "ipc": 0, "pid": pid,
		"userns_options": map[string]any{"mode": 0, "uids": m, "gids": m},
	}
}

func criWriteJSON(t *testing.T, path string, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// criVolumes makes a hostPath-like directory with files owned 0 and 1000,
// and a tmpfs-backed one (emptyDir medium Memory) with a file owned 1000.
func criVolumes(t *testing.T, dir string) (hostPath, tmpfsPath string) {
	t.Helper()
	hostPath = filepath.Join(dir, "hostpath")
	tmpfsPath = filepath.Join(dir, "tmpfs")
	for _, p := range []string{hostPath, tmpfsPath} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", tmpfsPath, "tmpfs", 0, "size=4m,mode=0755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(tmpfsPath, unix.MNT_DETACH) })
	for _, f := range []struct {
		path     string
		uid, gid int
	}{
		{filepath.Join(hostPath, "root-file"), 0, 0},
		{filepath.Join(hostPath, "user-file"), 1000, 1000},
		{filepath.Join(tmpfsPath, "mem-root"), 0, 0},
		{filepath.Join(tmpfsPath, "mem-user"), 1000, 1000},
	} {
		if err := os.WriteFile(f.path, []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(f.path, f.uid, f.gid); err != nil {
			t.Fatal(err)
		}
	}
	return hostPath, tmpfsPath
}

// criPod is a pod with one busybox container, run through a handler.
type criPod struct {
	ID, CID string
	HostID  uint32
	Dir     string // the pod's files: pod.json, ctr.json, volumes, logs
}

// RunPod runs a hostUsers:false pod (mapping 0 -> hostID, 65536 IDs) with a
// busybox container that has the two volumes, through handler. sharePID
// makes the pod share its PID namespace (CRI-O then runs a pause
// container).
func (d *criDaemon) RunPod(handler, name string, hostID uint32, sharePID bool) criPod {
	t := d.t
	t.Helper()
	dir := filepath.Join(d.Dir, "pods", name)
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	hostPath, tmpfsPath := criVolumes(t, dir)
	pid := 1 // CONTAINER
	if sharePID {
		pid = 0 // POD
	}
	nsOpts := criNamespaceOptions(hostID, pid)
	podCfg := criWriteJSON(t, filepath.Join(dir, "pod.json"), map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "e2e", "uid": name + "-uid", "attempt": 0},
		"hostname":      name,
		"log_directory": filepath.Join(dir, "logs"),
		"linux": map[string]any{
			"cgroup_parent":    "/e2e-" + name,
			"security_context": map[string]any{"namespace_options": nsOpts},
		},
	})
	ctrCfg := criWriteJSON(t, filepath.Join(dir, "ctr.json"), map[string]any{
		"metadata": map[string]any{"name": "box", "attempt": 0},
		"image":    map[string]any{"image": d.Images.BusyboxImage},
		"command":  []string{"sh", "-c", "trap 'exit 0' TERM; echo hello-from-" + name + "; sleep 3600 & wait"},
		"log_path": "box.log",
		"mounts": []map[string]any{
			{"container_path": "/data", "host_path": hostPath},
			{"container_path": "/mem", "host_path": tmpfsPath},
		},
		"linux": map[string]any{
			"security_context": map[string]any{"namespace_options": nsOpts},
		},
	})
	var p criPod
	p.HostID = hostID
	p.Dir = dir
	start := time.Now()
	p.ID = d.MustCrictl("runp", "--runtime", handler, podCfg)
	t.Cleanup(func() {
		// A failed test's pod; a no-op after RemovePod.
		if d.Crictl("inspectp", p.ID).Code == 0 {
			d.Crictl("rmp", "-f", p.ID)
		}
	})
	timed(t, name+": runp", start)
	t0 := time.Now()
	p.CID = d.MustCrictl("create", p.ID, ctrCfg, podCfg)
	timed(t, name+": create", t0)
	t0 = time.Now()
	d.MustCrictl("start", p.CID)
	timed(t, name+": start", t0)
	timed(t, name+": runp+create+start", start)
	return p
}

// PID returns the container's init process as the host sees it.
func (d *criDaemon) PID(cid string) int {
	d.t.Helper()
	out := d.MustCrictl("inspect", "-o", "go-template", "--template", "{{.info.pid}}", cid)
	pid, err := strconv.Atoi(out)
	if err != nil || pid <= 0 {
		d.t.Fatalf("crictl inspect %s: pid %q", cid, out)
	}
	return pid
}

// CheckPod checks the running pod from the host and through crictl.
func (d *criDaemon) CheckPod(shim *Shim, p criPod) {
	t := d.t
	t.Helper()
	want := IDMap{ContainerID: 0, HostID: p.HostID, Size: 65536}
	pid := d.PID(p.CID)
	ids := procIDs(t, pid)
	if len(ids.UIDMap) != 1 || ids.UIDMap[0] != want || len(ids.GIDMap) != 1 || ids.GIDMap[0] != want {
		t.Errorf("container pid %d: uid_map %v gid_map %v, want %v", pid, ids.UIDMap, ids.GIDMap, want)
	}
	if ids.UID[0] != p.HostID || ids.GID[0] != p.HostID {
		t.Errorf("container pid %d runs as host uid %d gid %d, want %d", pid, ids.UID[0], ids.GID[0], p.HostID)
	}
	if out := d.MustCrictl("exec", p.CID, "id"); !strings.HasPrefix(out, "uid=0(root) gid=0(root)") {
		t.Errorf("crictl exec id: %q, want uid=0(root) gid=0(root)", out)
	}
	// The exec'd process lives in the same user namespace.
	if out := d.MustCrictl("exec", p.CID, "cat", "/proc/self/uid_map"); !strings.Contains(strings.Join(strings.Fields(out), " "), fmt.Sprintf("0 %d 65536", p.HostID)) {
		t.Errorf("crictl exec cat /proc/self/uid_map: %q", out)
	}
	for _, v := range []struct {
		path string
		want map[string]string
	}{
		{"/data", map[string]string{"root-file": "0:0", "user-file": "1000:1000"}},
		{"/mem", map[string]string{"mem-root": "0:0", "mem-user": "1000:1000"}},
	} {
		out := d.MustCrictl("exec", p.CID, "ls", "-ln", v.path)
		got := lsOwners(out)
		for name, w := range v.want {
			if got[name] != w {
				t.Errorf("ls -ln %s: %s is %q, want %q (on-disk owner)\n%s", v.path, name, got[name], w, out)
			}
		}
	}
	// Container root writes to the hostPath volume as on-disk root.
	d.MustCrictl("exec", p.CID, "sh", "-c", "echo w > /data/written-by-root")
	hostPath := filepath.Join(p.Dir, "hostpath")
	if uid, gid := owner(t, filepath.Join(hostPath, "written-by-root")); uid != 0 || gid != 0 {
		t.Errorf("a file container root wrote to the volume is %d:%d on disk, want 0:0", uid, gid)
	}
	// Logs: the container's first line.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := d.Crictl("logs", p.CID)
		if r.Code == 0 && strings.Contains(r.Stdout+r.Stderr, "hello-from-") {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("crictl logs: no hello line: %s", r)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(mountsUnder(t, filepath.Join(shim.StateDir, "staging"))) != 0 {
		t.Errorf("staging mounts left after create: %v", mountsUnder(t, shim.StateDir))
	}
}

// RemovePod stops and removes the container and the pod, and checks that
// the shim kept nothing.
func (d *criDaemon) RemovePod(shim *Shim, p criPod) {
	t := d.t
	t.Helper()
	start := time.Now()
	d.MustCrictl("stop", "-t", "2", p.CID)
	d.MustCrictl("rm", p.CID)
	d.MustCrictl("stopp", p.ID)
	d.MustCrictl("rmp", p.ID)
	timed(t, "stop+rm+stopp+rmp", start)
	if left := mountsUnder(t, shim.StateDir); len(left) != 0 {
		t.Errorf("shim mounts left under %s: %v", shim.StateDir, left)
	}
	if pods := shim.Pods(); len(pods) != 0 {
		t.Errorf("shim pods --json after rmp: %+v", pods)
	}
	if left := shim.Leftovers(); len(left) != 0 {
		t.Errorf("shim state left after rmp: %v", left)
	}
	if out := d.MustCrictl("pods", "-q", "--id", p.ID); out != "" {
		t.Errorf("pod left after rmp: %s", out)
	}
	if out := d.MustCrictl("ps", "-a", "-q", "--id", p.CID); out != "" {
		t.Errorf("container left after rm: %s", out)
	}
}

// criHostID gives each pod of a run its own block (multiple of 65536).
func criHostID(n int) uint32 { return uint32(65536 * (40 + n)) }

func TestCRIContainerd2(t *testing.T) {
	d := criStart(t, "containerd2")
	for i, rt := range []string{"crun", "runc"} {
		t.Run(rt, func(t *testing.T) {
			d.t = t
			defer func() { d.t = t }()
			h := "userns-shim-" + rt
			shim := d.Shims[h]
			shim.t = t
			p := d.RunPod(h, "ctrd-"+rt, criHostID(i), false)
			d.CheckPod(shim, p)
			if t.Failed() {
				t.Logf("shim pods while running: %s", shim.Run("shim", "pods", "--json").Stdout)
			}
			d.RemovePod(shim, p)
		})
	}
}

func TestCRICrio(t *testing.T) {
	d := criStart(t, "crio")
	for i, rt := range []string{"crun", "runc"} {
		for j, share := range []bool{false, true} {
			name := "crio-" + rt
			if share {
				name += "-sharedpid"
			}
			t.Run(strings.TrimPrefix(name, "crio-"), func(t *testing.T) {
				d.t = t
				h := "userns-shim-" + rt
				shim := d.Shims[h]
				shim.t = t
				p := d.RunPod(h, name, criHostID(10+2*i+j), share)
				d.CheckPod(shim, p)
				if share {
					// The pause container runs in the pod's PID namespace
					// and user namespace.
					out := d.MustCrictl("exec", p.CID, "ps", "-o", "pid,user,args")
					if !strings.Contains(out, "/pause") {
						t.Errorf("shared PID namespace: no /pause in ps:\n%s", out)
					}
					pid := d.PID(p.CID)
					var ctrNS, pauseNS unix.Stat_t
					unix.Stat(fmt.Sprintf("/proc/%d/ns/pid", pid), &ctrNS)
					found := false
					for pp, cmd := range procsMentioning("/pause") {
						if strings.TrimSpace(cmd) != "/pause" {
							continue
						}
						var st unix.Stat_t
						if unix.Stat(fmt.Sprintf("/proc/%d/ns/pid", pp), &st) == nil && st.Ino == ctrNS.Ino {
							pauseNS = st
							found = true
							ids := procIDs(t, pp)
							if len(ids.UIDMap) != 1 || ids.UIDMap[0].HostID != p.HostID {
								t.Errorf("pause pid %d: uid_map %v, want host %d", pp, ids.UIDMap, p.HostID)
							}
						}
					}
					if !found {
						t.Errorf("no /pause process in the container's PID namespace (inode %d)", ctrNS.Ino)
					}
					_ = pauseNS
				}
				if t.Failed() {
					t.Logf("shim pods while running: %s", shim.Run("shim", "pods", "--json").Stdout)
				}
				d.RemovePod(shim, p)
			})
		}
	}
}

var critestSummary = regexp.MustCompile(`Ran (\d+) of (\d+) Specs.*`)
var critestCounts = regexp.MustCompile(`(\d+) Passed \| (\d+) Failed`)

func TestCRITestUserNamespaces(t *testing.T) {
	for _, kind := range []string{"containerd2", "crio"} {
		t.Run(kind, func(t *testing.T) {
			d := criStart(t, kind)
			for _, s := range d.Shims {
				s.t = t
			}
			imgs := filepath.Join(d.Dir, "test-images.yaml")
			if err := os.WriteFile(imgs, []byte("defaultTestContainerImage: "+d.Images.BusyboxImage+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			r := runCmd(t, 15*time.Minute, nil, d.Tools["CRITEST"],
				"--runtime-endpoint", d.Env["RUNTIME_ENDPOINT"], "--image-endpoint", d.Env["RUNTIME_ENDPOINT"],
				"--runtime-handler", "userns-shim-crun", "--test-images-file", imgs,
				"--ginkgo.focus", "UserNamespaces", "--ginkgo.no-color")
			timed(t, "critest UserNamespaces", start)
			out := r.Stdout + r.Stderr
			summary := critestSummary.FindString(out)
			counts := critestCounts.FindStringSubmatch(out)
			t.Logf("critest on %s with userns-shim over crun: %s; %s", kind, summary, strings.TrimSpace(func() string {
				if counts != nil {
					return counts[0]
				}
				return "no counts"
			}()))
			passed := 0
			if counts != nil {
				passed, _ = strconv.Atoi(counts[1])
			}
			if passed < 6 || r.Code != 0 {
				t.Errorf("critest UserNamespaces on %s: %d passed, want 6 (exit %d):\n%s", kind, passed, r.Code, tail(out, 120))
			}
			d.MustCrictl("pods") // the daemon still answers
			for h, s := range d.Shims {
				if left := mountsUnder(t, s.StateDir); len(left) != 0 {
					t.Errorf("%s: shim mounts left after critest: %v", h, left)
				}
			}
		})
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
