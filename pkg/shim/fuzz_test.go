package shim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/userns-shim/userns-shim/pkg/config"
	"github.com/userns-shim/userns-shim/pkg/mapping"
	"github.com/userns-shim/userns-shim/pkg/spec"
	"github.com/userns-shim/userns-shim/pkg/spec/spectest"
)

// Bits of FuzzRewrite's opts: the configuration, which annotations the CRI
// runtime added, and the host's answers the pure path cannot ask for.
const (
	optModeMask    = 3      // 0, 3 passthrough; 1 require; 2 allocate
	optIDMapRT     = 1 << 2 // idmap = "runtime", else the shim maps
	optWarn        = 1 << 3 // on_unsupported_fs = "warn"
	optUIDAnn      = 1 << 4 // userns-shim.io/uid-mappings set to uidAnn
	optGIDAnn      = 1 << 5 // userns-shim.io/gid-mappings set to gidAnn
	optNoIDMapAnn  = 1 << 6 // userns-shim.io/no-idmap set to noIDMap
	optUnsupported = 1 << 7 // odd-numbered mounts are on a filesystem without idmap support
)

// FuzzRewrite runs a create's pure decision and rewrite path on a fuzzed
// config.json and fuzzed annotations: decode, Restore, PodOf, Decide, the
// mount modifiers as idmapMount applies them to a source that is a
// directory, SetUserNamespace, Remember, Encode. What comes out must be
// what the runtime can be trusted with: it decodes to exactly the rewritten
// spec with unknown fields kept, it validates again with exactly the
// decided mapping in one user namespace, no ID lands below 65536 on the
// host, and every host-backed mount is ID-mapped unless policy (no-idmap, an
// unsupported filesystem with on_unsupported_fs = "warn") says otherwise.
func FuzzRewrite(f *testing.F) {
	const ns = `"linux":{"namespaces":[{"type":"pid"},{"type":"network"},{"type":"ipc"},{"type":"mount"}]}`
	seeds := []struct {
		raw, uid, gid, noIDMap string
		opts                   uint8
	}{
		{`{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},` + ns + `}`, "0:65536:65536", "", "", optUIDAnn},
		{`{"process":{"args":["sh"]},"mounts":[{"destination":"/proc","type":"proc","source":"proc"},{"destination":"/data","type":"bind","source":"/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/data","options":["rbind"]},{"destination":"/raw","source":"/x","options":["bind"]}],` + ns + `}`,
			"0:131072:65536", "0:131072:65536", "/raw", optUIDAnn | optGIDAnn | optNoIDMapAnn},
		{`{"process":{"args":["sh"]},"annotations":{"io.kubernetes.pod.uid":"p1"},"mounts":[{"destination":"/a","type":"bind","source":"/a"},{"destination":"/b","type":"bind","source":"/b"}],` + ns + `,"future":{"x":1}}`,
			"", "", "", 1 | optIDMapRT | optWarn | optUnsupported},
		{`{"process":{"args":["sh"]},"mounts":[{"destination":"/v","type":"bind","source":"/v","options":["idmap"],"uidMappings":[{"containerID":0,"hostID":196608,"size":65536}],"gidMappings":[{"containerID":0,"hostID":196608,"size":65536}]}],` + ns + `}`,
			"", "", "", 0},
		{`{"process":{"args":["sh"]},"linux":{"namespaces":[{"type":"pid"},{"type":"network"},{"type":"ipc"},{"type":"user"}],"uidMappings":[{"containerID":0,"hostID":65536,"size":65536}],"gidMappings":[{"containerID":0,"hostID":65536,"size":65536}]},"mounts":[{"destination":"/s","type":"bind","source":"/s"}]}`,
			"", "", "", optIDMapRT},
		{`{"process":{"args":["sh"]},"linux":{"namespaces":[{"type":"pid"},{"type":"network"},{"type":"ipc"},{"type":"user","path":"/proc/42/ns/user"}]}}`, "", "", "", 1},
		{`{"process":{"args":["sh"]},` + ns + `}`, "", "", "", 2},
		{`{"process":{"args":["sh"]},"annotations":{"io.kubernetes.cri.sandbox-uid":"p0","io.kubernetes.cri.sandbox-id":"s1","io.kubernetes.cri.container-type":"container"},` + ns + `}`, "", "", "", 1},
		// A config.json the shim rewrote before (podman start after stop).
		{`{"process":{"args":["sh"]},"root":{"path":"/run/userns-shim/staging/ctr/rootfs"},"annotations":{"userns-shim.io/original":"{\"root\":\"rootfs\",\"mounts\":[{\"destination\":\"/v\",\"type\":\"bind\",\"source\":\"/v\"}]}"},"mounts":[{"destination":"/v","type":"bind","source":"/run/userns-shim/staging/ctr/0"}],` + ns + `}`,
			"0:65536:65536", "", "", optUIDAnn},
		{`{"process":{"args":["sh"],"user":{"uid":1000,"gid":1000,"additionalGids":[5]}},"mounts":[{"destination":"/etc/hosts","source":"/h","options":["bind","ro"]},{"destination":"/r","type":"bind","source":"/r","options":["rbind","ridmap"]}],` + ns + `,"ociVersion":"1.3.0","linux2":{"a":[1,2]}}`,
			"0:65536:65536,65536:131072:65536", "", "/r/,/etc/hosts", optUIDAnn | optNoIDMapAnn},
	}
	for _, s := range seeds {
		f.Add([]byte(s.raw), s.uid, s.gid, s.noIDMap, s.opts)
	}
	cfgFile := filepath.Join(f.TempDir(), "config.json")
	if err := os.WriteFile(cfgFile, nil, 0o600); err != nil {
		f.Fatal(err)
	}
	st, err := os.Stat(cfgFile)
	if err != nil {
		f.Fatal(err)
	}
	record := func(host uint32) string {
		return fmt.Sprintf(`{"uidMappings":[{"hostId":%d,"containerId":0,"length":65536}],"gidMappings":[{"hostId":%[1]d,"containerId":0,"length":65536}]}`, host)
	}
	// p0's record maps onto the host's IDs: the kubelet is trusted, yet
	// its mapping is checked like any other.
	src := fakeSources(map[string]string{"p1": record(262144), "p0": record(0)},
		map[string]mapping.Mapping{"/proc/42/ns/user": {UIDs: otherRange, GIDs: otherRange}})

	f.Fuzz(func(t *testing.T, raw []byte, uidAnn, gidAnn, noIDMap string, opts uint8) {
		cfg := config.Default()
		cfg.Mode = []config.Mode{config.ModePassthrough, config.ModeRequire, config.ModeAllocate, config.ModePassthrough}[opts&optModeMask]
		if opts&optIDMapRT != 0 {
			cfg.IDMap = config.IDMapRuntime
		}
		if opts&optWarn != 0 {
			cfg.OnUnsupportedFS = config.UnsupportedWarn
		}
		if spec.CheckDocument(raw) != nil {
			return // spec.Read refuses it
		}
		file, err := spec.FromBytes(cfgFile, raw, st)
		if err != nil {
			return
		}
		sp := file.Spec
		annotate(sp, opts, uidAnn, gidAnn, noIDMap)
		shim := &Shim{Cfg: cfg}
		if _, err := spec.Restore(sp, shim.ownsPath); err != nil {
			return
		}
		original := spec.Snapshot(sp)
		pod, err := spec.PodOf(sp.Annotations, "ctr")
		if err != nil {
			return
		}
		before, _ := json.Marshal(sp)
		d, err := Decide(sp, cfg, src, nil)
		if after, _ := json.Marshal(sp); !bytes.Equal(before, after) {
			t.Fatalf("Decide changed the spec:\nbefore %s\nafter  %s", before, after)
		}
		if err != nil {
			return // refused before any write: config.json stays as it was
		}
		if d.Source == mapping.SourceNone {
			if cfg.Mode != config.ModePassthrough {
				t.Fatalf("mode %s let a container through without a mapping", cfg.Mode)
			}
			return
		}
		// The passthrough fast path skips the decode when the bytes show no
		// mapping source: it must never skip a container that has one.
		if cfg.Mode == config.ModePassthrough && opts&(optUIDAnn|optGIDAnn|optNoIDMapAnn) == 0 && !mayCarryMapping(raw) {
			t.Fatalf("the passthrough fast path would run as it is a container with a %s mapping", d.Source)
		}
		if d.Source == mapping.SourceAllocator {
			// joinPod's part: the pool's first block, validated again.
			pool := mapping.Pool{Start: cfg.Allocate.Start, Length: cfg.Allocate.Length, Size: cfg.Allocate.IDsPerPod}
			if d.Mapping, err = pool.Allocate(nil, 0); err != nil {
				t.Fatalf("allocate: %v", err)
			}
		}
		checkMapping(t, "decided", d.Mapping)

		unmapped := map[int]string{} // mounts policy leaves without ID mapping
		for _, c := range spec.ChooseMounts(sp, d.Mapping) {
			m := &sp.Mounts[c.Index]
			switch {
			case c.Skip != "":
				unmapped[c.Index] = c.Skip
			case opts&optUnsupported != 0 && c.Index%2 == 1:
				if cfg.OnUnsupportedFS == config.UnsupportedFail {
					return // refused, naming the volume
				}
				spec.StripIDMap(m)
				unmapped[c.Index] = TreatUnsupported
			case cfg.IDMap == config.IDMapRuntime:
				spec.RequestRuntimeIDMap(m, c.Mapping)
			default:
				spec.StripIDMap(m)
				m.Source = filepath.Join(shim.stagingDir("ctr"), fmt.Sprint(c.Index))
			}
		}
		if d.Source != mapping.SourceSpec {
			spec.SetUserNamespace(sp, d.Mapping)
			if shimMakesUserNS(d.Source) {
				spec.Namespace(sp, specs.UserNamespace).Path = filepath.Join(cfg.StateDir, "pods", pod.ID, "userns")
			}
		}
		if err := spec.Remember(sp, original); err != nil {
			t.Fatalf("remember: %v", err)
		}
		out, err := file.Encode(sp)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		if err := spectest.CheckRewrite(sp, raw, out); err != nil {
			t.Fatalf("%v\ninput  %s\noutput %s", err, raw, out)
		}
		back, _ := spec.Decode(out)
		checkOutput(t, back, cfg, src, d, original.Mounts, unmapped, out)
	})
}

// annotate adds the annotations opts selects, as a CRI runtime copies a
// pod's annotations into config.json.
func annotate(sp *specs.Spec, opts uint8, uidAnn, gidAnn, noIDMap string) {
	for _, a := range []struct {
		bit        uint8
		key, value string
	}{
		{optUIDAnn, mapping.AnnotationUIDMappings, uidAnn},
		{optGIDAnn, mapping.AnnotationGIDMappings, gidAnn},
		{optNoIDMapAnn, mapping.AnnotationNoIDMap, noIDMap},
	} {
		if opts&a.bit == 0 {
			continue
		}
		if sp.Annotations == nil {
			sp.Annotations = map[string]string{}
		}
		// What a CRI runtime writes is JSON: its strings are UTF-8.
		sp.Annotations[a.key] = strings.ToValidUTF8(a.value, "\uFFFD")
	}
}

// checkOutput holds the rewritten config.json to what the shim promises.
func checkOutput(t *testing.T, back *specs.Spec, cfg config.Config, src Sources, d Decision, before []specs.Mount, unmapped map[int]string, out []byte) {
	t.Helper()
	users := 0
	for _, n := range back.Linux.Namespaces {
		if n.Type == specs.UserNamespace {
			users++
		}
	}
	if users != 1 {
		t.Fatalf("%d user namespace entries: %s", users, out)
	}
	if got := spec.SpecMapping(back); !got.Equal(d.Mapping) {
		t.Fatalf("user namespace mapping %s, decided %s", mapping.String(got.UIDs), mapping.String(d.Mapping.UIDs))
	}
	checkMapping(t, "written", spec.SpecMapping(back))
	// What the runtime gets must pass the shim's own checks again.
	again, err := Decide(back, cfg, src, nil)
	if err != nil {
		t.Fatalf("the rewritten config.json is refused: %v\n%s", err, out)
	}
	if !again.Mapping.Equal(d.Mapping) {
		t.Fatalf("the rewritten config.json decides %s, not %s", mapping.String(again.Mapping.UIDs), mapping.String(d.Mapping.UIDs))
	}
	for i, m := range back.Mounts {
		// A mount's ID mapping is the decided one, or the one config.json
		// gave it when the container's mapping comes from config.json or a
		// joined namespace (the CRI runtime's own choice, not checked).
		if own, ok := mountMapping(m); ok && !own.Equal(d.Mapping) {
			given, _ := mountMapping(before[i])
			if !own.Equal(given) || shimMakesUserNS(d.Source) {
				t.Fatalf("mount %s carries the mapping %s; decided %s from %s: %s", m.Destination, mapping.String(own.UIDs), mapping.String(d.Mapping.UIDs), d.Source, out)
			}
		}
		// A host-backed mount as runc and crun see it: a bind.
		if m.Type != "bind" && !slices.Contains(m.Options, "bind") && !slices.Contains(m.Options, "rbind") {
			continue
		}
		if _, ok := unmapped[i]; ok {
			continue
		}
		shimMapped := strings.HasPrefix(m.Source, cfg.StateDir+"/staging/")
		runtimeMapped := len(m.UIDMappings) > 0 && len(m.GIDMappings) > 0 &&
			slices.ContainsFunc(m.Options, func(o string) bool { return o == "idmap" || o == "ridmap" })
		if !shimMapped && !runtimeMapped {
			t.Fatalf("host-backed mount %s (source %s) left without ID mapping: %s", m.Destination, m.Source, out)
		}
		if shimMapped && (len(m.UIDMappings) > 0 || slices.ContainsFunc(m.Options, func(o string) bool { return strings.Contains(o, "idmap") })) {
			t.Fatalf("mount %s is ID-mapped by the shim and still asks the runtime to map it: %s", m.Destination, out)
		}
	}
	for i, why := range unmapped {
		if why == "listed in "+mapping.AnnotationNoIDMap && !slices.Contains(spec.NoIDMapPaths(back.Annotations), path.Clean(back.Mounts[i].Destination)) {
			t.Fatalf("mount %s left alone for a no-idmap entry it does not have", back.Mounts[i].Destination)
		}
	}
}

// mountMapping returns a mount's ID mapping, one side standing for both as
// in mapping.FromMounts.
func mountMapping(m specs.Mount) (mapping.Mapping, bool) {
	own := mapping.Mapping{UIDs: m.UIDMappings, GIDs: m.GIDMappings}
	if own.UIDs == nil {
		own.UIDs = own.GIDs
	}
	if own.GIDs == nil {
		own.GIDs = own.UIDs
	}
	return own, !own.Empty()
}

// checkMapping: under the default rules no range reaches the host's IDs
// below 65536 or past 4294967294, container ID 0 is mapped, and uids and
// gids map alike. Written out longhand, apart from mapping.Validate.
func checkMapping(t *testing.T, what string, m mapping.Mapping) {
	t.Helper()
	for _, rs := range [][]specs.LinuxIDMapping{m.UIDs, m.GIDs} {
		root := false
		for _, r := range rs {
			if r.HostID < 65536 || uint64(r.HostID)+uint64(r.Size) > 1<<32-1 || uint64(r.ContainerID)+uint64(r.Size) > 1<<32-1 || r.Size == 0 {
				t.Fatalf("%s mapping %s reaches host IDs it must not", what, mapping.String(rs))
			}
			root = root || r.ContainerID == 0
		}
		if !root {
			t.Fatalf("%s mapping %s leaves container ID 0 unmapped", what, mapping.String(rs))
		}
	}
	if !m.Equal(mapping.Mapping{UIDs: m.GIDs, GIDs: m.UIDs}) {
		t.Fatalf("%s mapping: uids %s, gids %s", what, mapping.String(m.UIDs), mapping.String(m.GIDs))
	}
}
