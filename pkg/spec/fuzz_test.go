package spec_test

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/userns-shim/userns-shim/pkg/mapping"
	"github.com/userns-shim/userns-shim/pkg/spec"
	"github.com/userns-shim/userns-shim/pkg/spec/spectest"
)

// FuzzEncode: whatever config.json decodes, the shim's modifiers applied to
// it and Encode give a document that decodes to exactly the modified spec
// and keeps the unknown fields (spectest.CheckRewrite).
func FuzzEncode(f *testing.F) {
	f.Add([]byte(`{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"pid"}]}}`))
	f.Add([]byte(`{"process":{"args":["a"]},"x":{"y":[{"z":1}]},"mounts":[{"destination":"/a","k":2}]}`))
	f.Add([]byte(`{"process":{"args":["a"]},"future":1,"mounts":[{"destination":"/a","type":"bind","source":"/s","options":["rbind","idmap"],"uidMappings":[{"containerID":0,"hostID":65536,"size":65536}],"x":{}}]}`))
	pod := []specs.LinuxIDMapping{{HostID: 65536, Size: 65536}}
	m := mapping.Mapping{UIDs: pod, GIDs: pod}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if spec.CheckDocument(raw) != nil {
			return
		}
		s, err := spec.Decode(raw)
		if err != nil {
			return
		}
		original := spec.Snapshot(s)
		spec.SetUserNamespace(s, m)
		for i := range s.Mounts {
			if i%2 == 0 && spec.IsBind(s.Mounts[i]) {
				spec.RequestRuntimeIDMap(&s.Mounts[i], m)
			} else {
				spec.StripIDMap(&s.Mounts[i])
			}
		}
		if err := spec.Remember(s, original); err != nil {
			t.Fatalf("remember: %v", err)
		}
		out, err := spec.Encode(s, raw)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		if err := spectest.CheckRewrite(s, raw, out); err != nil {
			t.Fatalf("%v\ninput  %s\noutput %s", err, raw, out)
		}
	})
}
