package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// containerd 1.6 (Debian's /usr/bin/containerd and its runc shim) with the
// shim as a runtime handler (io.containerd.runc.v2, options.BinaryName =
// the shim's wrapper), started by hack/e2e/containerd16.sh in a private
// directory, driven by crictl. containerd 1.6 ignores the CRI userns_options:
// the pod's mapping reaches the shim only as the pod annotation
// userns-shim.io/uid-mappings, passed through pod_annotations (inject mode).

// c16HostID is the host ID container root maps to in these tests.
const c16HostID = poolStart

// C16 is one test's containerd 1.6.
type C16 struct {
	t      *testing.T
	Shim   *Shim
	Dir    string // the daemon's directory (hack/e2e/containerd16.sh DIR)
	Env    map[string]string
	Crictl string
	// RuntimeErrors collects the real runtime's --log and the failing
	// config.json of every create that failed (see c16LogKeeper).
	RuntimeErrors string
}

// c16LogKeeper wraps the real runtime: on a failed create it appends the
// runtime's own log (which containerd's runc shim deletes with the bundle)
// to ERRORS and keeps the config.json the shim handed over as
// failed-<id>.json next to it. Every other call is a plain exec.
const c16LogKeeper = `#!/bin/sh
# %[1]s, keeping its log and config.json when create fails (e2e/containerd16_test.go)
verb="" log="" bundle="" prev=""
for a in "$@"; do
	case $prev in --log) log=$a ;; --bundle | -b) bundle=$a ;; esac
	case $a in create | run) [ -n "$verb" ] || verb=$a ;; esac
	prev=$a
done
[ -n "$verb" ] && [ -n "$bundle" ] || exec %[1]s "$@"
%[1]s "$@"
rc=$?
if [ $rc -ne 0 ]; then
	{ echo "=== $*: exit $rc"; [ -n "$log" ] && cat "$log"; } >>%[2]s 2>&1
	cp "$bundle/config.json" "%[3]s/failed-$(basename "$bundle").json" 2>/dev/null
fi
exit $rc
`

// c16Start starts containerd 1.6 for rt behind the shim in mode, with the
// test images imported. Stopped (pods removed, mounts detached) at clean-up.
func c16Start(t *testing.T, rt Runtime, mode string) *C16 {
	t.Helper()
	requireRoot(t)
	requireTools(t, "ctr", "containerd", "containerd-shim-runc-v2", "skopeo", "umoci")
	for _, p := range []string{"/usr/bin/containerd", "/usr/bin/containerd-shim-runc-v2", "/usr/lib/cni/bridge"} {
		if _, err := os.Stat(p); err != nil {
			missing(t, "%s: %v (apt-get install containerd containernetworking-plugins)", p, err)
		}
	}
	images := testImages(t)
	tools := runCmd(t, 10*time.Minute, nil, "../hack/e2e/tools.sh")
	if tools.Code != 0 {
		t.Fatalf("hack/e2e/tools.sh: %s", tools)
	}
	crictl := c16Vars(tools.Stdout)["CRICTL"]
	if crictl == "" {
		t.Fatalf("hack/e2e/tools.sh named no CRICTL:\n%s", tools.Stdout)
	}

	dir := shortTempDir(t, "e2e-c16-")
	keeper := filepath.Join(dir, "bin", rt.Name+"-logkeep")
	errs := filepath.Join(dir, "runtime-errors.log")
	if err := os.MkdirAll(filepath.Dir(keeper), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keeper, []byte(fmt.Sprintf(c16LogKeeper, rt.Path, errs, dir)), 0o755); err != nil {
		t.Fatal(err)
	}
	shim := newShim(t, dir, Runtime{Name: rt.Name, Path: keeper}, mode, "")
	c := &C16{t: t, Shim: shim, Dir: filepath.Join(dir, "ctrd"), Crictl: crictl, RuntimeErrors: errs}

	env := []string{"SHIM=" + shim.Wrapper, "CRICTL=" + crictl}
	start := time.Now()
	r := runCmd(t, 2*time.Minute, env, "../hack/e2e/containerd16.sh", "start", c.Dir)
	// Registered after shortTempDir's clean-up, so it runs before it.
	t.Cleanup(func() {
		r := runCmd(t, 3*time.Minute, env, "../hack/e2e/containerd16.sh", "stop", c.Dir)
		if r.Code != 0 {
			t.Errorf("containerd16.sh stop: %s", r)
		}
		if t.Failed() {
			c.dumpLogs()
		}
	})
	if r.Code != 0 {
		t.Fatalf("containerd16.sh start: %s", r)
	}
	timed(t, "containerd 1.6 start", start)
	c.Env = c16Vars(r.Stdout)

	start = time.Now()
	for _, a := range []string{images.PauseArchive, images.BusyboxArchive} {
		r := runCmd(t, 2*time.Minute, nil, "ctr", "-a", c.Env["CONTAINERD_ADDRESS"], "-n", "k8s.io", "images", "import", a)
		if r.Code != 0 {
			t.Fatalf("ctr images import: %s", r)
		}
	}
	timed(t, "ctr images import (pause, busybox)", start)
	return c
}

// dumpLogs logs the tail of containerd's log and the runtime's errors.
func (c *C16) dumpLogs() {
	if data, err := os.ReadFile(c.Env["DAEMON_LOG"]); err == nil {
		ls := strings.Split(string(data), "\n")
		if len(ls) > 60 {
			ls = ls[len(ls)-60:]
		}
		c.t.Logf("containerd log (last lines):\n%s", strings.Join(ls, "\n"))
	}
	if data, err := os.ReadFile(c.RuntimeErrors); err == nil {
		c.t.Logf("runtime errors:\n%s", data)
	}
}

func c16Vars(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok {
			m[k] = v
		}
	}
	return m
}

// Cri runs crictl against this containerd.
func (c *C16) Cri(args ...string) Result {
	c.t.Helper()
	return runCmd(c.t, 2*time.Minute, nil, c.Crictl, append([]string{"--config", c.Env["CRICTL_CONFIG"]}, args...)...)
}

// MustCri runs crictl and fails the test unless it succeeds; returns stdout
// trimmed.
func (c *C16) MustCri(args ...string) string {
	c.t.Helper()
	r := c.Cri(args...)
	if r.Code != 0 {
		c.t.Fatalf("%s", r)
	}
	return strings.TrimSpace(r.Stdout)
}

// Pid is the host PID of a container (inspect) or sandbox (inspectp).
func (c *C16) Pid(verb, id string) int {
	c.t.Helper()
	out := c.MustCri(verb, "-o", "go-template", "--template", "{{.info.pid}}", id)
	pid, err := strconv.Atoi(out)
	if err != nil || pid <= 0 {
		c.t.Fatalf("crictl %s %s: no pid: %q", verb, id, out)
	}
	return pid
}

func c16WriteJSON(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestContainerd16Inject: a pod with the mapping annotation, two busybox
// containers, a hostPath-like volume and a tmpfs-backed volume (like a
// secret), on containerd 1.6 with the shim in mode require. From the host:
// pause and both containers share one user namespace mapped to c16HostID;
// crictl exec runs as root inside; volume files keep their on-disk owners
// (0, 1000) and root's writes land as 0; logs work; stop/rm/stopp/rmp leave
// no mount, pod record or pin.
func TestContainerd16Inject(t *testing.T) {
	forRuntimes(t, func(t *testing.T, rt Runtime) {
		c := c16Start(t, rt, "require")
		dir := filepath.Dir(c.Dir)

		// Volumes: a host dir and a tmpfs, each with files of 0 and 1000.
		hostVol := filepath.Join(dir, "hostpath")
		secretVol := filepath.Join(dir, "secret")
		mustMkdir(t, hostVol, 0o755, 0, 0)
		mustWrite(t, filepath.Join(hostVol, "root-file"), 0o644, 0, 0)
		mustWrite(t, filepath.Join(hostVol, "user-file"), 0o644, 1000, 1000)
		mustMkdir(t, secretVol, 0o755, 0, 0)
		if err := unix.Mount("tmpfs", secretVol, "tmpfs", 0, "size=1m,mode=0755"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(secretVol, unix.MNT_DETACH) })
		mustWrite(t, filepath.Join(secretVol, "root-secret"), 0o644, 0, 0)
		mustWrite(t, filepath.Join(secretVol, "user-secret"), 0o640, 1000, 1000)

		uid := "c16-" + rt.Name + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		podJSON := c16WriteJSON(t, filepath.Join(dir, "pod.json"), fmt.Sprintf(`{
  "metadata": {"name": "c16-%[1]s", "namespace": "e2e", "uid": %[2]q, "attempt": 0},
  "log_directory": %[3]q,
  "annotations": {"userns-shim.io/uid-mappings": "0:%[4]d:65536"},
  "linux": {"security_context": {"namespace_options": {"network": 0, "pid": 1, "ipc": 0}}}
}`, rt.Name, uid, filepath.Join(dir, "logs"), c16HostID))
		ctrJSON := func(name string) string {
			return c16WriteJSON(t, filepath.Join(dir, "ctr-"+name+".json"), fmt.Sprintf(`{
  "metadata": {"name": %[1]q},
  "image": {"image": "localhost/userns-shim/busybox:e2e"},
  "command": ["sh", "-c", "echo c16-log-%[1]s; exec sleep 3600"],
  "log_path": "%[1]s.log",
  "mounts": [
    {"container_path": "/vol/host", "host_path": %[2]q},
    {"container_path": "/vol/secret", "host_path": %[3]q, "readonly": true}
  ],
  "linux": {}
}`, name, hostVol, secretVol))
		}

		start := time.Now()
		r := c.Cri("runp", "--runtime", "userns-shim", podJSON)
		if rt.Name == "runc" {
			// runc 1.1 joins the pod's user namespace (the shim's pin) before
			// the network namespace, which containerd 1.6 made in the host's
			// user namespace, and then lacks the rights to join it. The shim
			// refuses such a create with its own message, which crictl shows,
			// instead of runc's EOF.
			if r.Code == 0 || !strings.Contains(r.Stderr, "userns-shim: ") || !strings.Contains(r.Stderr, "put crun behind the shim") {
				t.Fatalf("crictl runp with runc behind the shim on containerd 1.6: want the shim's refusal naming crun\n%s", r)
			}
			return
		}
		if r.Code != 0 {
			t.Fatalf("crictl runp: %s", r)
		}
		pod := strings.TrimSpace(r.Stdout)
		timed(t, "crictl runp", start)

		start = time.Now()
		ids := map[string]string{}
		for _, name := range []string{"a", "b"} {
			id := c.MustCri("create", pod, ctrJSON(name), podJSON)
			c.MustCri("start", id)
			ids[name] = id
		}
		timed(t, "crictl create+start x2", start)

		// Host view: one user namespace, mapped to c16HostID, for all three.
		pids := map[string]int{"pause": c.Pid("inspectp", pod), "a": c.Pid("inspect", ids["a"]), "b": c.Pid("inspect", ids["b"])}
		var inode uint64
		for name, pid := range pids {
			p := procIDs(t, pid)
			t.Logf("%s: pid %d userns %d uid_map %v Uid %v", name, pid, p.UsernsInode, p.UIDMap, p.UID)
			if fmt.Sprint(p.UIDMap) != fmt.Sprint(wantMap(c16HostID)) || fmt.Sprint(p.GIDMap) != fmt.Sprint(wantMap(c16HostID)) {
				t.Errorf("%s (pid %d): uid_map %v gid_map %v, want %v", name, pid, p.UIDMap, p.GIDMap, wantMap(c16HostID))
			}
			if p.UID[0] != c16HostID || p.UID[1] != c16HostID {
				t.Errorf("%s (pid %d): host uid %v, want %d (container root)", name, pid, p.UID, c16HostID)
			}
			if inode == 0 {
				inode = p.UsernsInode
			} else if p.UsernsInode != inode {
				t.Errorf("%s (pid %d): user namespace %d, want the pod's one %d (processes %v)", name, pid, p.UsernsInode, inode, pids)
			}
		}
		if self := procIDs(t, os.Getpid()); self.UsernsInode == inode {
			t.Fatalf("the pod runs in the host's user namespace")
		}
		pods := c.Shim.Pods()
		if len(pods) != 1 || pods[0].UsernsInode != inode || pods[0].Source != "annotation" || len(pods[0].Containers) != 3 {
			t.Errorf("shim pods --json: want one pod from the annotation with 3 containers and userns %d, got %+v", inode, pods)
		}

		// exec, volumes, writes.
		start = time.Now()
		for _, name := range []string{"a", "b"} {
			id := ids[name]
			if out := c.MustCri("exec", id, "id"); !strings.Contains(out, "uid=0(root) gid=0(root)") {
				t.Errorf("%s: crictl exec id: %q, want uid=0(root) gid=0(root)", name, out)
			}
			for vol, files := range map[string][2]string{"/vol/host": {"root-file", "user-file"}, "/vol/secret": {"root-secret", "user-secret"}} {
				out := c.MustCri("exec", id, "ls", "-ln", vol)
				owners := lsOwners(out)
				if owners[files[0]] != "0:0" || owners[files[1]] != "1000:1000" {
					t.Errorf("%s: ls -ln %s: want %s 0:0 and %s 1000:1000 (on-disk owners), got:\n%s", name, vol, files[0], files[1], out)
				}
			}
			f := "written-by-" + name
			if r := c.Cri("exec", id, "sh", "-c", "echo x > /vol/host/"+f+" && cat /vol/secret/user-secret"); r.Code != 0 {
				t.Errorf("%s: container root writes the hostPath volume and reads the secret: %s", name, r)
			} else if u, g := owner(t, filepath.Join(hostVol, f)); u != 0 || g != 0 {
				t.Errorf("%s: %s written by container root is %d:%d on disk, want 0:0", name, f, u, g)
			}
			if r := c.Cri("exec", id, "touch", "/vol/secret/x"); r.Code == 0 {
				t.Errorf("%s: read-only secret volume is writable", name)
			}
			if out := c.MustCri("logs", id); !strings.Contains(out, "c16-log-"+name) {
				t.Errorf("%s: crictl logs: %q, want c16-log-%s", name, out, name)
			}
		}
		timed(t, "exec/ls/logs checks", start)

		// Clean-up through the CRI.
		start = time.Now()
		for _, name := range []string{"a", "b"} {
			c.MustCri("stop", "-t", "2", ids[name])
			c.MustCri("rm", ids[name])
		}
		c.MustCri("stopp", pod)
		c.MustCri("rmp", pod)
		timed(t, "crictl stop+rm x2, stopp, rmp", start)
		if left := c.Shim.Leftovers(); len(left) > 0 {
			t.Errorf("left in the shim's state dir after rmp: %v", left)
		}
		if pods := c.Shim.Pods(); len(pods) != 0 {
			t.Errorf("shim pods --json after rmp: %+v", pods)
		}
		if m := mountsUnder(t, filepath.Join(c.Dir, "state", "io.containerd.runtime.v2.task")); len(m) > 0 {
			t.Errorf("mounts left under containerd's task state: %v", m)
		}
		if out := c.MustCri("pods", "-q"); out != "" {
			t.Errorf("crictl pods after rmp: %q", out)
		}
		if data, _ := os.ReadFile(c.RuntimeErrors); len(data) > 0 {
			t.Logf("runtime errors (creates that failed):\n%s", data)
		}
	})
}
