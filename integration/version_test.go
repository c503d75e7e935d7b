package integration

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestOCIVersionForCrun: containerd 2.4 writes ociVersion 1.3.0 and CRI-O
// 1.34 writes 1.2.1, which Debian's crun 1.8.1 refuses ("unknown version
// specified"). Through the shim the container runs: the version is lowered to
// 1.1.0, since the config uses nothing 1.1 lacks. A config that does use
// something newer is refused with a message naming it, config.json unchanged.
func TestOCIVersionForCrun(t *testing.T) {
	requireRoot(t)
	var crun *Runtime
	for _, rt := range runtimes(t) {
		if rt.Name == "crun" {
			crun = &rt
		}
	}
	if crun == nil {
		t.Skip("crun is not installed (apt-get install crun)")
	}
	e := newEnv(t, *crun, "")
	b := newBundle(t, "id")
	b.Spec.Version = "1.3.0"
	b.Spec.Annotations = map[string]string{lcAnnUIDMappings: "0:5000000:65536"}
	b.Save(t)
	r := lcMustShim(e, "run", "--bundle", b.Dir, "ver-ok")
	if !strings.Contains(r.Stdout, "uid=0") {
		t.Errorf("run: %q, want uid=0", r.Stdout)
	}
	b.Load(t)
	if b.Spec.Version != "1.1.0" {
		t.Errorf("config.json ociVersion %q after the run, want 1.1.0", b.Spec.Version)
	}

	b = newBundle(t, "id")
	b.Spec.Version = "1.2.1"
	b.Spec.Annotations = map[string]string{lcAnnUIDMappings: "0:5000000:65536"}
	b.Spec.Process.IOPriority = &specs.LinuxIOPriority{Class: specs.IOPRIO_CLASS_BE, Priority: 4}
	b.Save(t)
	before := b.Raw(t)
	r = lcShim(e, "create", "--bundle", b.Dir, "ver-refused")
	requireRefusalLine(t, "ver-refused", r, "process.ioPriority", "1.1")
	if string(b.Raw(t)) != string(before) {
		t.Errorf("config.json changed by a refused create")
	}
	lcRequireNoRecord(t, e, "ver-refused")
}
