package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDoctor: `shim doctor` passes on this machine (kernel, user namespaces,
// ID-mapped mounts, the runtime, the state dir) and fails with a reason,
// exit status 1, when the state dir cannot be written.
func TestDoctor(t *testing.T) {
	requireRoot(t)
	rt := runtimes(t)[0]
	e := newEnv(t, rt, "")
	r := e.Shim("shim", "doctor")
	if r.Code != 0 || !strings.Contains(r.Stdout, "ready: this node can run") {
		t.Fatalf("shim doctor: exit %d, want 0 and ready\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, want := range []string{"ok    kernel", "ok    user namespaces", "ok    idmap ", "ok    runtime", "ok    state_dir"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("shim doctor output lacks %q:\n%s", want, r.Stdout)
		}
	}

	// A state dir below a regular file can never be made.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := newEnv(t, rt, "")
	cfg, _ := os.ReadFile(bad.Config)
	cfg = []byte(strings.Replace(string(cfg), bad.StateDir, filepath.Join(file, "state"), 1))
	if err := os.WriteFile(bad.Config, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	r = bad.Shim("shim", "doctor")
	if r.Code != 1 || !strings.Contains(r.Stdout, "FAIL  state_dir") || !strings.Contains(r.Stdout, "not a directory") {
		t.Errorf("shim doctor with an unusable state dir: exit %d, want 1 and a FAIL state_dir line with the reason\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
}

// TestVerbUsage: an unknown or incomplete verb gets the usage, exit 1.
func TestVerbUsage(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, runtimes(t)[0], "")
	for _, args := range [][]string{{"shim"}, {"shim", "frobnicate"}, {"shim", "inspect"}, {"shim", "pods", "--yaml"}} {
		r := e.Shim(args...)
		if r.Code == 0 || !strings.HasPrefix(r.Stderr, "userns-shim: usage: userns-shim shim inspect") {
			t.Errorf("%v: exit %d stderr %q, want the usage line", args, r.Code, r.Stderr)
		}
	}
	r := e.Shim("shim", "inspect", "no-such-container")
	if r.Code == 0 || !strings.Contains(r.Stderr, `no record of container "no-such-container"`) {
		t.Errorf("inspect of an unknown container: exit %d stderr %q", r.Code, r.Stderr)
	}
}
