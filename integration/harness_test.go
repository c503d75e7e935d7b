// Package integration runs the shim binary against the real runtimes (Debian
// runc and crun), as root. Tests skip with a reason when not root or when a
// runtime is missing; CI runs them as root with everything installed.
package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// shimBin is the shim built once for the whole package.
var shimBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "userns-shim-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shimBin = filepath.Join(dir, "userns-shim")
	build := exec.Command("go", "build", "-o", shimBin, "../cmd/userns-shim")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build shim:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates containers, user namespaces and mounts")
	}
}

// Runtime is a real OCI runtime the tests run behind the shim.
type Runtime struct {
	Name string
	Path string // what the shim's config names as runtime
}

// runtimes returns the real runtimes installed here: runc and crun (through
// the hybrid-cgroup wrapper when this host needs it).
func runtimes(t *testing.T) []Runtime {
	t.Helper()
	var rts []Runtime
	if p, err := exec.LookPath("runc"); err == nil {
		rts = append(rts, Runtime{Name: "runc", Path: p})
	}
	if _, err := exec.LookPath("crun"); err == nil {
		// hack/crun-hybrid: crun behind the hybrid-cgroup workaround.
		p, err := filepath.Abs("../hack/crun-hybrid")
		if err != nil {
			t.Fatal(err)
		}
		rts = append(rts, Runtime{Name: "crun", Path: p})
	}
	if len(rts) == 0 {
		t.Skip("neither runc nor crun is installed (apt-get install runc crun)")
	}
	return rts
}

// Env is one test's shim setup: its config file and state dir.
type Env struct {
	t        *testing.T
	RT       Runtime
	StateDir string
	Config   string
	RootDir  string // the runtime's --root
	// Bin is the shim binary to run instead of the package's (a failpoints
	// build), and ExtraEnv is added to every call's environment.
	Bin      string
	ExtraEnv []string
}

// bin is the shim binary e's calls run.
func (e *Env) bin() string {
	if e.Bin != "" {
		return e.Bin
	}
	return shimBin
}

// environ is the environment of e's shim calls: the test's, the config, ExtraEnv.
func (e *Env) environ() []string {
	return append(append(os.Environ(), "USERNS_SHIM_CONFIG="+e.Config), e.ExtraEnv...)
}

// newEnv writes a shim config for rt; extra is appended TOML.
func newEnv(t *testing.T, rt Runtime, extra string) *Env {
	t.Helper()
	dir := t.TempDir()
	e := &Env{t: t, RT: rt, StateDir: filepath.Join(dir, "state"), Config: filepath.Join(dir, "config.toml"), RootDir: filepath.Join(dir, "root")}
	cfg := fmt.Sprintf("runtime = %q\nstate_dir = %q\n%s\n", rt.Path, e.StateDir, extra)
	if err := os.WriteFile(e.Config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// Result is one shim invocation's outcome.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// Shim runs the shim with args (argv without argv[0]) and the test's config.
// Its stdout and stderr are files, not pipes: a created container inherits
// the runtime's stdio and keeps it open for its whole life, so with pipes
// the call would not return until the container exits. Real callers
// (conmon, containerd) give the runtime descriptors they own for the same
// reason. A call that does not return within a minute fails the test.
func (e *Env) Shim(args ...string) Result {
	e.t.Helper()
	dir, err := os.MkdirTemp("", "shim-out-")
	if err != nil {
		e.t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	stdout, stderr := filepath.Join(dir, "stdout"), filepath.Join(dir, "stderr")
	outF, err := os.Create(stdout)
	if err != nil {
		e.t.Fatal(err)
	}
	defer outF.Close()
	errF, err := os.Create(stderr)
	if err != nil {
		e.t.Fatal(err)
	}
	defer errF.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin(), args...)
	cmd.Env = e.environ()
	cmd.Stdout, cmd.Stderr = outF, errF
	err = cmd.Run()
	var r Result
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		e.t.Fatalf("userns-shim %s: no exit within a minute", strings.Join(args, " "))
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		e.t.Fatalf("run shim: %v", err)
	}
	out, _ := os.ReadFile(stdout)
	errOut, _ := os.ReadFile(stderr)
	r.Stdout, r.Stderr = string(out), string(errOut)
	return r
}

// MustShim runs the shim and fails the test on a non-zero exit.
func (e *Env) MustShim(args ...string) Result {
	e.t.Helper()
	r := e.Shim(args...)
	if r.Code != 0 {
		e.t.Fatalf("userns-shim %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r
}

// Bundle is a container bundle with a busybox-static rootfs.
type Bundle struct {
	Dir  string
	Spec *specs.Spec
}

// ConfigPath is the bundle's config.json.
func (b *Bundle) ConfigPath() string { return filepath.Join(b.Dir, "config.json") }

// newBundle makes a bundle whose rootfs holds busybox-static, with the files
// a rootfs owned by host root must already have to be usable from a user
// namespace. The spec is runc's default with args as the process.
func newBundle(t *testing.T, args ...string) *Bundle {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox is not installed (apt-get install busybox-static)")
	}
	dir := t.TempDir()
	// Temp dirs are 0700; the container's mapped root must be able to reach its rootfs.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	root := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "proc", "sys", "dev", "etc", "tmp", "root", "run"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(root, "tmp"), 0o1777)
	if err := copyFile(bb, filepath.Join(root, "bin", "busybox")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"sh", "id", "ls", "cat", "sleep", "true", "echo", "touch", "stat", "mkdir", "ps"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", c)); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"etc/hosts", "etc/hostname", "etc/resolv.conf"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\n"), 0o644)
	spec := exec.Command("runc", "spec", "--bundle", dir)
	if out, err := spec.CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	b := &Bundle{Dir: dir}
	b.Load(t)
	b.Spec.Process.Terminal = false
	b.Spec.Process.Args = args
	b.Save(t)
	return b
}

// Load reads the bundle's config.json into b.Spec.
func (b *Bundle) Load(t *testing.T) {
	t.Helper()
	data, err := os.ReadFile(b.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	b.Spec = new(specs.Spec)
	if err := json.Unmarshal(data, b.Spec); err != nil {
		t.Fatal(err)
	}
}

// Save writes b.Spec to config.json.
func (b *Bundle) Save(t *testing.T) {
	t.Helper()
	data, err := json.MarshalIndent(b.Spec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b.ConfigPath(), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Raw returns config.json's bytes, to compare before and after a refusal.
func (b *Bundle) Raw(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(b.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o755)
}

// requireRefusalLine checks that r is a refusal of the create of container
// id: a non-zero exit and stderr exactly one line starting "userns-shim: "
// that names every string of wants. It returns that line.
func requireRefusalLine(t *testing.T, id string, r Result, wants ...string) string {
	t.Helper()
	if r.Code == 0 {
		t.Fatalf("create %s: exit 0, want a refusal\nstderr: %s", id, r.Stderr)
	}
	msg := strings.TrimSuffix(r.Stderr, "\n")
	if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "userns-shim: ") {
		t.Errorf("create %s: stderr %q, want one line starting \"userns-shim: \"", id, r.Stderr)
	}
	for _, w := range wants {
		if !strings.Contains(msg, w) {
			t.Errorf("create %s: stderr %q does not name %q", id, msg, w)
		}
	}
	return msg
}

// userNamespaces returns the spec's user namespace entries.
func userNamespaces(s *specs.Spec) []specs.LinuxNamespace {
	var user []specs.LinuxNamespace
	if s.Linux != nil {
		for _, ns := range s.Linux.Namespaces {
			if ns.Type == specs.UserNamespace {
				user = append(user, ns)
			}
		}
	}
	return user
}
