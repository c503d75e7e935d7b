package e2e

// The deployment files of deploy/ (issue 5, item 7), each used where this
// machine allows:
//   - deploy/crio/10-userns-shim.conf goes unchanged, except runtime_path and
//     runtime_root, into a private CRI-O 1.34 (hack/e2e/crio.sh, CRIO_CONF_D),
//     which runs a hostUsers:false pod through handler userns-shim;
//   - deploy/containerd/config-2.x.toml is imported the same way into a
//     private containerd 2.4 (hack/e2e/containerd2.sh, CONTAINERD_CONF_D);
//     both containerd snippets are checked as TOML;
//   - deploy/kubernetes/*.yaml parse and agree on the handler name, and the
//     DaemonSet's ConfigMap carries the CRI-O drop-in byte for byte;
//   - the Dockerfile builds offline with podman (FROM scratch) and the image
//     answers --version; an image with the static busybox the DaemonSet needs
//     runs the DaemonSet's install script against temporary host directories.

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"go.yaml.in/yaml/v3"
)

const dpHandler = "userns-shim"

// dpRepo returns the repository root (tests run in e2e/).
func dpRepo(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func dpRead(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dpRepo(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dpRewrite replaces the value of `key = ...` lines (a TOML string) with val,
// failing when no line matched: the file must still have the key.
func dpRewrite(t *testing.T, text, key, val string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^(\s*` + regexp.QuoteMeta(key) + `\s*=\s*)["'][^"'\n]*["']`)
	if !re.MatchString(text) {
		t.Fatalf("no %s = line to rewrite in:\n%s", key, text)
	}
	return re.ReplaceAllString(text, "${1}"+fmt.Sprintf("%q", val))
}

// dpStart starts a private daemon of kind ("crio" or "containerd2") with
// confD as CRIO_CONF_D / CONTAINERD_CONF_D (the deployment file plus what
// the test machine needs), loads the test images and returns it with its
// userns-shim handler's Shim. confD is filled by fill, called with the
// directory, the shim (its wrapper is the handler's binary) and a directory
// for the handler's runtime root.
func dpStart(t *testing.T, kind string, fill func(confD string, shim *Shim, rootDir string)) (*criDaemon, *Shim) {
	t.Helper()
	tools := criToolPaths(t)
	images := testImages(t)
	dir := shortTempDir(t, "e2e-dp-"+kind+"-")
	d := &criDaemon{t: t, Kind: kind, Dir: filepath.Join(dir, "d"), Tools: tools, Shims: map[string]*Shim{}, Images: images}
	for _, p := range []string{d.Dir, filepath.Join(dir, "shim"), filepath.Join(dir, "conf.d"), filepath.Join(dir, "root")} {
		if err := os.MkdirAll(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	// The real runtime behind the shim: the daemon's own crun handler
	// binary (written by the start script), so that the shim gets the same
	// workarounds for this machine.
	real := crunHybrid(t)
	if kind == "crio" {
		real = filepath.Join(d.Dir, "crun-oomclamp")
	}
	shim := newShim(t, filepath.Join(dir, "shim"), Runtime{Name: "crun", Path: real}, "passthrough", criShimTOML)
	d.Shims[dpHandler] = shim
	confD := filepath.Join(dir, "conf.d")
	fill(confD, shim, filepath.Join(dir, "root"))
	script := "../hack/e2e/crio.sh"
	env := []string{"E2E_LOG_LEVEL=debug", "SHIM=", "SHIM_HANDLERS="}
	logName := "crio.log"
	// Bridges and subnets of their own: TestCRI* may run at the same time
	// in another process.
	if kind == "crio" {
		env = append(env, "CRIO_CONF_D="+confD, "CNI_BRIDGE=e2e-dp-crio", "CNI_SUBNET=10.99.5.0/24")
	} else {
		script = "../hack/e2e/containerd2.sh"
		env = append(env, "CONTAINERD_CONF_D="+confD, "CNI_BRIDGE=e2e-dp-ctrd2", "CNI_SUBNET=10.99.6.0/24")
		logName = "containerd.log"
	}
	for _, k := range []string{"CRICTL", "CRITEST", "CONTAINERD", "CONTAINERD_SHIM", "CTR", "CRIO", "PINNS", "E2E_BIN"} {
		env = append(env, k+"="+tools[k])
	}
	t.Cleanup(func() {
		if r := runCmd(t, 3*time.Minute, env, script, "stop", d.Dir); r.Code != 0 {
			t.Errorf("%s stop: %s", script, r)
		}
		if t.Failed() {
			if log, err := os.ReadFile(filepath.Join(d.Dir, logName)); err == nil {
				t.Logf("last lines of the %s log:\n%s", kind, tail(string(log), 80))
			}
		}
		if left := mountsUnder(t, dir); len(left) != 0 {
			t.Errorf("mounts left under %s: %v", dir, left)
		}
	})
	start := time.Now()
	r := runCmd(t, 3*time.Minute, env, script, "start", d.Dir)
	if r.Code != 0 {
		if log, err := os.ReadFile(filepath.Join(d.Dir, logName)); err == nil {
			t.Logf("last lines of the %s log:\n%s", kind, tail(string(log), 40))
		}
		t.Fatalf("%s start: %s", script, r)
	}
	timed(t, kind+" start with the deploy/ file", start)
	d.Env = criParseEnv(r.Stdout)
	if d.Env["HANDLER_CRUN"] != real {
		t.Fatalf("%s's crun handler runs %q; the shim was configured with %q", kind, d.Env["HANDLER_CRUN"], real)
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
	timed(t, "load images", start)
	return d, shim
}

// dpRunPod runs, checks and removes a hostUsers:false pod through the
// userns-shim handler, and checks the handler's runtime root was used.
func dpRunPod(t *testing.T, d *criDaemon, shim *Shim, name string, hostID uint32, rootDir string) {
	t.Helper()
	p := d.RunPod(dpHandler, name, hostID, false)
	d.CheckPod(shim, p)
	if t.Failed() {
		t.Logf("shim pods while running: %s", shim.Run("shim", "pods", "--json").Stdout)
	}
	if ents, _ := os.ReadDir(rootDir); len(ents) == 0 {
		t.Errorf("the handler's runtime root %s stayed empty: the daemon did not use the deploy/ file's root", rootDir)
	}
	d.RemovePod(shim, p)
}

func TestDeployCrioDropin(t *testing.T) {
	src := string(dpRead(t, "deploy/crio/10-userns-shim.conf"))
	// The drop-in as TOML: the handler and its keys.
	var cfg struct {
		Crio struct {
			Runtime struct {
				Runtimes map[string]map[string]any `toml:"runtimes"`
			} `toml:"runtime"`
		} `toml:"crio"`
	}
	if _, err := toml.Decode(src, &cfg); err != nil {
		t.Fatalf("deploy/crio/10-userns-shim.conf: %v", err)
	}
	h, ok := cfg.Crio.Runtime.Runtimes[dpHandler]
	if !ok || len(cfg.Crio.Runtime.Runtimes) != 1 {
		t.Fatalf("want exactly the handler %q, got %v", dpHandler, cfg.Crio.Runtime.Runtimes)
	}
	for k, want := range map[string]string{"runtime_path": "/usr/local/bin/userns-shim", "runtime_type": "oci", "runtime_root": "/run/userns-shim-runtime"} {
		if h[k] != want {
			t.Errorf("%s = %v, want %q", k, h[k], want)
		}
	}
	// CRI-O ignores a handler whose allowed_annotations name anything but
	// its own annotations (userns-shim.io/* reach config.json without it).
	if ann, ok := h["allowed_annotations"].([]any); ok {
		for _, a := range ann {
			if strings.HasPrefix(fmt.Sprint(a), "userns-shim.io/") {
				t.Errorf("allowed_annotations lists %v: CRI-O then ignores the whole handler", a)
			}
		}
	}
	if t.Failed() {
		return
	}

	// The drop-in in a real CRI-O: only the binary and the runtime root
	// point into the test's directories.
	var rootDir string
	d, shim := dpStart(t, "crio", func(confD string, shim *Shim, root string) {
		rootDir = root
		text := dpRewrite(t, src, "runtime_path", shim.Wrapper)
		text = dpRewrite(t, text, "runtime_root", root)
		if err := os.WriteFile(filepath.Join(confD, "10-userns-shim.conf"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		// What this machine needs (see criStart): Debian's crun cannot apply
		// pids.limit -1 on cgroup v1.
		if err := os.WriteFile(filepath.Join(confD, "60-e2e-pids.conf"), []byte("[crio.runtime]\npids_limit = 32768\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	if b, err := os.ReadFile(filepath.Join(d.Env["CRIO_CONFIG_DIR"], "10-userns-shim.conf")); err != nil || !strings.Contains(string(b), "allowed_annotations") {
		t.Fatalf("CRI-O's config dir does not hold the drop-in: %v", err)
	}
	if log, err := os.ReadFile(d.Env["DAEMON_LOG"]); err == nil && bytes.Contains(log, []byte("is being ignored")) {
		t.Errorf("CRI-O ignored a runtime handler: %s", tail(string(log), 40))
	}
	dpRunPod(t, d, shim, "dp-crio", criHostID(30), rootDir)
}

// dpContainerdSnippet decodes a containerd snippet and returns the handler's
// table.
func dpContainerdSnippet(t *testing.T, rel string, version int64, plugin string) map[string]any {
	t.Helper()
	var cfg map[string]any
	md, err := toml.Decode(string(dpRead(t, rel)), &cfg)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	if cfg["version"] != version {
		t.Errorf("%s: version = %v, want %d", rel, cfg["version"], version)
	}
	if !md.IsDefined("plugins", plugin, "containerd", "runtimes", dpHandler) {
		t.Fatalf("%s: no [plugins.%q.containerd.runtimes.%s]; keys %v", rel, plugin, dpHandler, md.Keys())
	}
	h := cfg["plugins"].(map[string]any)[plugin].(map[string]any)["containerd"].(map[string]any)["runtimes"].(map[string]any)[dpHandler].(map[string]any)
	if h["runtime_type"] != "io.containerd.runc.v2" {
		t.Errorf("%s: runtime_type = %v", rel, h["runtime_type"])
	}
	for _, k := range []string{"pod_annotations", "container_annotations"} {
		if fmt.Sprint(h[k]) != "[userns-shim.io/*]" {
			t.Errorf("%s: %s = %v, want [userns-shim.io/*]", rel, k, h[k])
		}
	}
	opts, _ := h["options"].(map[string]any)
	if opts["BinaryName"] != "/usr/local/bin/userns-shim" {
		t.Errorf("%s: options.BinaryName = %v", rel, opts["BinaryName"])
	}
	return h
}

func TestDeployContainerdSnippets(t *testing.T) {
	dpContainerdSnippet(t, "deploy/containerd/config-1.6-1.7.toml", 2, "io.containerd.grpc.v1.cri")
	dpContainerdSnippet(t, "deploy/containerd/config-2.x.toml", 3, "io.containerd.cri.v1.runtime")
	if t.Failed() {
		return
	}
	t.Run("containerd2", func(t *testing.T) {
		src := string(dpRead(t, "deploy/containerd/config-2.x.toml"))
		var rootDir string
		d, shim := dpStart(t, "containerd2", func(confD string, shim *Shim, root string) {
			rootDir = root
			text := dpRewrite(t, src, "BinaryName", shim.Wrapper)
			// The runtime root in the test's directory (the runc shim adds
			// the namespace), not /run/containerd/runc.
			text = strings.Replace(text, "BinaryName =", fmt.Sprintf("Root = %q\n    BinaryName =", root), 1)
			if err := os.WriteFile(filepath.Join(confD, "userns-shim.toml"), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		})
		// containerd took the handler with the snippet's annotations.
		info := d.MustCrictl("info")
		if !strings.Contains(info, `"userns-shim.io/*"`) || !strings.Contains(info, shim.Wrapper) {
			t.Errorf("crictl info shows no userns-shim handler with the snippet's annotations:\n%s", tail(info, 60))
		}
		dpRunPod(t, d, shim, "dp-ctrd2", criHostID(31), rootDir)
	})
}

// dpYAML decodes every document of a deploy/kubernetes file.
func dpYAML(t *testing.T, name string) []map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(dpRead(t, "deploy/kubernetes/"+name)))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if doc == nil {
			continue
		}
		if doc["apiVersion"] == nil || doc["kind"] == nil {
			t.Errorf("%s: a document without apiVersion/kind: %v", name, doc)
		}
		docs = append(docs, doc)
	}
	return docs
}

// dpGet walks nested maps and lists ("0" indexes a list).
func dpGet(v any, path ...string) any {
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			var i int
			if _, err := fmt.Sscan(p, &i); err != nil || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func dpKind(t *testing.T, docs []map[string]any, kind string) map[string]any {
	t.Helper()
	for _, d := range docs {
		if d["kind"] == kind {
			return d
		}
	}
	t.Fatalf("no %s document", kind)
	return nil
}

func TestDeployKubernetesYAML(t *testing.T) {
	rc := dpKind(t, dpYAML(t, "runtimeclass.yaml"), "RuntimeClass")
	if rc["apiVersion"] != "node.k8s.io/v1" || rc["handler"] != dpHandler || dpGet(rc, "metadata", "name") != dpHandler {
		t.Errorf("runtimeclass.yaml: %v", rc)
	}

	pod := dpKind(t, dpYAML(t, "example-pod.yaml"), "Pod")
	if dpGet(pod, "spec", "hostUsers") != false || dpGet(pod, "spec", "runtimeClassName") != dpGet(rc, "metadata", "name") {
		t.Errorf("example-pod.yaml: hostUsers %v runtimeClassName %v", dpGet(pod, "spec", "hostUsers"), dpGet(pod, "spec", "runtimeClassName"))
	}
	kinds := map[string]bool{}
	vols, _ := dpGet(pod, "spec", "volumes").([]any)
	for _, v := range vols {
		for _, k := range []string{"emptyDir", "secret", "hostPath"} {
			if _, ok := v.(map[string]any)[k]; ok {
				kinds[k] = true
			}
		}
	}
	if len(kinds) != 3 {
		t.Errorf("example-pod.yaml: volume kinds %v, want emptyDir, secret and hostPath", kinds)
	}
	mounts, _ := dpGet(pod, "spec", "containers", "0", "volumeMounts").([]any)
	if len(mounts) != len(vols) {
		t.Errorf("example-pod.yaml: %d volumes, %d mounts", len(vols), len(mounts))
	}

	docs := dpYAML(t, "daemonset.yaml")
	ds := dpKind(t, docs, "DaemonSet")
	cm := dpKind(t, docs, "ConfigMap")
	if dpGet(ds, "metadata", "namespace") != "kube-system" || dpGet(cm, "metadata", "namespace") != "kube-system" {
		t.Errorf("daemonset.yaml: not in kube-system")
	}
	if got, want := dpGet(cm, "data", "10-userns-shim.conf"), string(dpRead(t, "deploy/crio/10-userns-shim.conf")); got != want {
		t.Errorf("daemonset.yaml's ConfigMap differs from deploy/crio/10-userns-shim.conf:\n%v", got)
	}
	if dpGet(ds, "spec", "template", "spec", "hostPID") == true {
		t.Errorf("daemonset.yaml: hostPID is not needed")
	}
	sel := fmt.Sprint(dpGet(ds, "spec", "selector", "matchLabels"))
	if sel != fmt.Sprint(dpGet(ds, "spec", "template", "metadata", "labels")) {
		t.Errorf("daemonset.yaml: selector %s does not match the template's labels", sel)
	}
	init := dpGet(ds, "spec", "template", "spec", "initContainers", "0")
	if img, _ := dpGet(init, "image").(string); !strings.HasPrefix(img, "userns-shim:") {
		t.Errorf("daemonset.yaml: init image %q, want userns-shim:VERSION", img)
	}
	hostPaths := map[string]string{} // volume name -> host path
	for _, v := range dpGet(ds, "spec", "template", "spec", "volumes").([]any) {
		if p := dpGet(v, "hostPath", "path"); p != nil {
			hostPaths[dpGet(v, "name").(string)] = p.(string)
		}
	}
	mounted := map[string]string{} // host path -> mount path
	for _, m := range dpGet(init, "volumeMounts").([]any) {
		if hp, ok := hostPaths[dpGet(m, "name").(string)]; ok {
			mounted[hp] = dpGet(m, "mountPath").(string)
		}
	}
	for _, hp := range []string{"/usr/local/bin", "/etc/userns-shim", "/etc/crio/crio.conf.d"} {
		if mounted[hp] != "/host"+hp {
			t.Errorf("daemonset.yaml: host %s mounted at %q in the init container, want /host%s", hp, mounted[hp], hp)
		}
	}
}

// dpPodman runs podman with a private storage root and what podman 4.3.1
// needs on this machine (writeContainersConf: no CAP_SYS_RESOURCE, no systemd),
// with runc (Debian's crun 1.8.1 refuses the hybrid cgroup layout).
func dpPodman(t *testing.T, store string, timeout time.Duration, args ...string) Result {
	t.Helper()
	conf := filepath.Join(store, "containers.conf")
	if _, err := os.Stat(conf); err != nil {
		for _, d := range []string{filepath.Join(store, "tmp"), filepath.Join(store, "cni")} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		writeContainersConf(t, conf, store)
	}
	base := []string{"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "runroot"),
		"--tmpdir", filepath.Join(store, "tmp"), "--storage-driver", "overlay", "--runtime", "/usr/sbin/runc"}
	return runCmd(t, timeout, []string{"CONTAINERS_CONF=" + conf}, "podman", append(base, args...)...)
}

func dpCopy(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

func TestDeployImage(t *testing.T) {
	requireRoot(t)
	requireTools(t, "podman", "go")
	repo := dpRepo(t)
	tmp := shortTempDir(t, "e2e-dp-image-")
	store := filepath.Join(tmp, "store")
	t.Cleanup(func() {
		dpPodman(t, store, time.Minute, "system", "reset", "--force")
		unmountUnder(t, tmp)
	})

	// The build context of `make build && podman build .`: the Dockerfile
	// and what it copies, with the binary built as the Makefile does.
	ctx := filepath.Join(tmp, "ctx")
	dpCopy(t, filepath.Join(repo, "Dockerfile"), filepath.Join(ctx, "Dockerfile"), 0o644)
	dpCopy(t, filepath.Join(repo, "deploy/config.toml.example"), filepath.Join(ctx, "deploy/config.toml.example"), 0o644)
	// `make image` copies Debian's static busybox there: the DaemonSet's
	// install step runs it.
	bb, err := exec.LookPath("busybox")
	if err != nil {
		missing(t, "busybox not installed")
	}
	dpCopy(t, bb, filepath.Join(ctx, "bin/busybox"), 0o755)
	start := time.Now()
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(ctx, "bin/userns-shim"), "./cmd/userns-shim")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	timed(t, "go build (CGO_ENABLED=0)", start)

	start = time.Now()
	const image = "localhost/userns-shim:e2e"
	if r := dpPodman(t, store, 5*time.Minute, "build", "--pull=never", "--network=none", "-t", image, ctx); r.Code != 0 {
		t.Fatalf("podman build: %s", r)
	}
	timed(t, "podman build", start)
	start = time.Now()
	// --version names the real runtime too, and a FROM scratch image has
	// none: a stand-in runc (a static busybox running a script that prints
	// the host runc's --version) is mounted, as a node's runtime would be
	// seen by the shim.
	if !dpStatic(t, bb) {
		t.Fatalf("%s is not a static binary: the scratch image cannot run it (Debian's busybox-static is)", bb)
	}
	runcVersion, err := exec.Command("/usr/sbin/runc", "--version").Output()
	if err != nil {
		t.Fatalf("runc --version: %v", err)
	}
	fakeRunc := filepath.Join(tmp, "fake-runc")
	if err := os.WriteFile(fakeRunc, []byte("#!/bin/busybox sh\ncat <<'END'\n"+string(runcVersion)+"END\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := dpPodman(t, store, 2*time.Minute, "run", "--rm", "--network=none",
		"-v", fakeRunc+":/usr/bin/runc:ro", image, "--version")
	if r.Code != 0 || !strings.Contains(r.Stdout, "userns-shim version") {
		t.Fatalf("podman run %s --version: %s", image, r)
	}
	timed(t, "podman run --version", start)
	t.Logf("image says: %s", strings.TrimSpace(strings.SplitN(r.Stdout, "\n", 2)[0]))

	t.Run("daemonset-install", func(t *testing.T) {

		// The DaemonSet's init container under podman: its command, its
		// mounts (hostPath volumes -> temporary "host" directories, the
		// ConfigMap -> a directory of its data).
		docs := dpYAML(t, "daemonset.yaml")
		ds, cm := dpKind(t, docs, "DaemonSet"), dpKind(t, docs, "ConfigMap")
		spec := dpGet(ds, "spec", "template", "spec")
		host := filepath.Join(tmp, "host")
		vols := map[string]string{}
		for _, v := range dpGet(spec, "volumes").([]any) {
			name := dpGet(v, "name").(string)
			if p := dpGet(v, "hostPath", "path"); p != nil {
				vols[name] = filepath.Join(host, p.(string))
				os.MkdirAll(vols[name], 0o755)
			} else if dpGet(v, "configMap", "name") == dpGet(cm, "metadata", "name") {
				vols[name] = filepath.Join(tmp, "configmap-"+name)
				for f, data := range dpGet(cm, "data").(map[string]any) {
					dpCopy(t, "/dev/null", filepath.Join(vols[name], f), 0o644)
					os.WriteFile(filepath.Join(vols[name], f), []byte(data.(string)), 0o644)
				}
			} else {
				t.Fatalf("volume %s: neither hostPath nor the ConfigMap", name)
			}
		}
		init := dpGet(spec, "initContainers", "0")
		var cmd []string
		for _, a := range append(dpGet(init, "command").([]any), dpGet(init, "args").([]any)...) {
			cmd = append(cmd, a.(string))
		}
		args := []string{"run", "--rm", "--network=none", "--read-only", "--entrypoint", cmd[0]}
		for _, m := range dpGet(init, "volumeMounts").([]any) {
			opt := dpGet(m, "mountPath").(string)
			if dpGet(m, "readOnly") == true {
				opt += ":ro"
			}
			args = append(args, "-v", vols[dpGet(m, "name").(string)]+":"+opt)
		}
		args = append(append(args, image), cmd[1:]...)
		// A node that already has a config keeps it.
		hostCfg := filepath.Join(host, "etc/userns-shim/config.toml")
		for i, keep := range []bool{false, true} {
			if keep {
				os.WriteFile(hostCfg, []byte("mode = \"require\"\n"), 0o644)
			}
			start := time.Now()
			r := dpPodman(t, store, 2*time.Minute, args...)
			if r.Code != 0 {
				t.Fatalf("the DaemonSet's install script (run %d): %s", i+1, r)
			}
			timed(t, fmt.Sprintf("install script run %d", i+1), start)
			t.Logf("run %d: %s", i+1, strings.TrimSpace(r.Stdout))
			for _, f := range []struct{ host, src string }{
				{"usr/local/bin/userns-shim", filepath.Join(ctx, "bin/userns-shim")},
				{"etc/userns-shim/config.toml.example", filepath.Join(repo, "deploy/config.toml.example")},
				{"etc/crio/crio.conf.d/10-userns-shim.conf", filepath.Join(repo, "deploy/crio/10-userns-shim.conf")},
			} {
				got, err := os.ReadFile(filepath.Join(host, f.host))
				want, _ := os.ReadFile(f.src)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("run %d: /%s not installed as %s (%v)", i+1, f.host, f.src, err)
				}
			}
			if st, err := os.Stat(filepath.Join(host, "usr/local/bin/userns-shim")); err != nil || st.Mode().Perm() != 0o755 {
				t.Errorf("run %d: binary mode %v (%v)", i+1, st.Mode(), err)
			}
			got, _ := os.ReadFile(hostCfg)
			want, _ := os.ReadFile(filepath.Join(repo, "deploy/config.toml.example"))
			if keep && string(got) != "mode = \"require\"\n" {
				t.Errorf("run %d: the node's config.toml was overwritten", i+1)
			} else if !keep && !bytes.Equal(got, want) {
				t.Errorf("run %d: config.toml not installed from the example", i+1)
			}
			ents, _ := os.ReadDir(filepath.Join(host, "usr/local/bin"))
			if len(ents) != 1 {
				t.Errorf("run %d: /usr/local/bin holds %d entries (a temporary file left?)", i+1, len(ents))
			}
		}
		// The main container's command runs in the image too.
		main := dpGet(spec, "containers", "0")
		var mcmd []string
		for _, a := range dpGet(main, "command").([]any) {
			mcmd = append(mcmd, a.(string))
		}
		if r := dpPodman(t, store, time.Minute, "run", "--rm", "--network=none", "--entrypoint", mcmd[0], image, "--help"); !strings.Contains(r.Stdout+r.Stderr, "BusyBox") {
			t.Errorf("the main container's %s does not run in the image: %s", mcmd[0], r)
		}
	})
}

// dpStatic reports whether the ELF binary at path has no interpreter (is
// statically linked).
func dpStatic(t *testing.T, path string) bool {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}
