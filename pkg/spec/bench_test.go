package spec

import (
	"encoding/json"
	"fmt"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/userns-shim/userns-shim/pkg/mapping"
)

// spec50 is a config.json with 50 bind-mount volumes, a pod's worth.
func spec50(b *testing.B) []byte {
	s := &specs.Spec{Version: "1.0.2", Process: &specs.Process{Args: []string{"sh"}, Cwd: "/"}, Root: &specs.Root{Path: "rootfs"},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.IPCNamespace}}}}
	for i := range 50 {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: fmt.Sprintf("/vol/%d", i), Type: "bind",
			Source: fmt.Sprintf("/var/lib/kubelet/pods/uid/volumes/kubernetes.io~empty-dir/v%d", i), Options: []string{"rbind", "rprivate", "rw"}})
	}
	raw, err := json.Marshal(s)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

// BenchmarkLoadModifySave50: decode, choose mounts, add the user
// namespace, strip idmap options, encode: the pure part of a create.
func BenchmarkLoadModifySave50(b *testing.B) {
	raw := spec50(b)
	mp := []specs.LinuxIDMapping{{HostID: 1 << 31, Size: 65536}}
	m := mapping.Mapping{UIDs: mp, GIDs: mp}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		s, err := Decode(raw)
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range ChooseMounts(s, m) {
			if c.Skip == "" {
				StripIDMap(&s.Mounts[c.Index])
				s.Mounts[c.Index].Source = "/run/userns-shim/staging/id/x"
			}
		}
		SetUserNamespace(s, m)
		if _, err := Encode(s, raw); err != nil {
			b.Fatal(err)
		}
	}
}
