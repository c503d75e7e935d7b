package spec

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/mapping"
)

const minimal = `{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},
"linux":{"namespaces":[{"type":"pid"},{"type":"network"},{"type":"ipc"},{"type":"mount"}]}}`

func write(t *testing.T, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), mode))
	require.NoError(t, os.Chmod(p, mode))
	return p
}

func TestLoadAndSaveKeepsModeAndAddsUserNamespace(t *testing.T) {
	p := write(t, "config.json", minimal, 0o640)
	f, err := Load(p)
	require.NoError(t, err)
	assert.Equal(t, minimal, string(f.Raw))

	m := mapping.Mapping{UIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 65536, Size: 65536}}}
	m.GIDs = m.UIDs
	SetUserNamespace(f.Spec, m)
	require.NoError(t, f.Save(f.Spec))

	st, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), st.Mode().Perm())
	g, err := Load(p)
	require.NoError(t, err)
	assert.NotNil(t, Namespace(g.Spec, specs.UserNamespace))
	assert.Equal(t, m, SpecMapping(g.Spec))
	entries, _ := os.ReadDir(filepath.Dir(p))
	assert.Len(t, entries, 1, "no temporary file left behind")
}

func TestSetUserNamespaceKeepsExistingEntry(t *testing.T) {
	s := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.UserNamespace, Path: "/proc/5/ns/user"}}}}
	SetUserNamespace(s, mapping.Mapping{})
	assert.Len(t, s.Linux.Namespaces, 1)
	assert.Equal(t, "/proc/5/ns/user", s.Linux.Namespaces[0].Path)
	s = &specs.Spec{}
	SetUserNamespace(s, mapping.Mapping{})
	assert.Equal(t, []specs.LinuxNamespace{{Type: specs.UserNamespace}}, s.Linux.Namespaces)
}

func TestEncodeKeepsUnknownFields(t *testing.T) {
	orig := `{"ociVersion":"1.3.0","process":{"args":["sh"],"cwd":"/","futureProcessField":{"a":1}},
"root":{"path":"rootfs"},"futureTopLevel":[1,2],
"mounts":[{"destination":"/a","type":"bind","source":"/x","futureMountField":"keep"},{"destination":"/b"}],
"linux":{"namespaces":[{"type":"pid"}],"futureLinux":true}}`
	s, err := Decode([]byte(orig))
	require.NoError(t, err)
	SetUserNamespace(s, mapping.Mapping{UIDs: []specs.LinuxIDMapping{{HostID: 65536, Size: 65536}}})
	s.Mounts[0].Source = "/y"
	out, err := Encode(s, []byte(orig))
	require.NoError(t, err)
	assert.Contains(t, string(out), `"process":{"args":["sh"],"cwd":"/","futureProcessField":{"a":1}}`,
		"what the shim does not change stays as written")

	var got map[string]any
	require.NoError(t, json.Unmarshal(out, &got))
	assert.Equal(t, []any{1.0, 2.0}, got["futureTopLevel"])
	assert.Equal(t, map[string]any{"a": 1.0}, got["process"].(map[string]any)["futureProcessField"])
	mnt := got["mounts"].([]any)[0].(map[string]any)
	assert.Equal(t, "keep", mnt["futureMountField"])
	assert.Equal(t, "/y", mnt["source"], "the modification wins")
	linux := got["linux"].(map[string]any)
	assert.Equal(t, true, linux["futureLinux"])
	assert.NotNil(t, linux["uidMappings"])
}

// TestEncodeUnknownFieldsRegressions: inputs FuzzEncode found that Encode
// got wrong while keeping unknown fields, and documents that take the full
// re-encode. Through the patch and through encodeFull, each output must
// decode (as runc decodes it, whole) to the original with the shim's
// changes, and keep the unknown field "future".
func TestEncodeUnknownFieldsRegressions(t *testing.T) {
	pod := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 65536, Size: 65536}}
	userns := func(s *specs.Spec) { SetUserNamespace(s, mapping.Mapping{UIDs: pod, GIDs: pod}) }
	tests := []struct {
		name      string
		orig      string
		edit      func(s *specs.Spec)
		ambiguous bool // the patch must leave it to encodeFull
	}{
		{
			// Numbers went through float64: 2^64-1 came back as 18446744073709552000.
			name: "RLIM_INFINITY stays exact",
			orig: `{"process":{"args":["a"],"rlimits":[{"type":"RLIMIT_CORE","hard":18446744073709551615,"soft":18446744073709551615}]},"future":12345678901234567891}`,
			edit: userns,
		},
		{
			// encoding/json decodes "uidmappings" into UIDMappings; kept beside
			// the shim's "uidMappings" it was read last and mapped onto host 0.
			name: "case variant of linux.uidMappings is not unknown",
			orig: `{"process":{"args":["a"]},"linux":{"uidmappings":[{"containerID":0,"hostID":0,"size":4294967295}]},"future":1}`,
			edit: userns,
		},
		{
			name: "case variant of a mount's mappings does not come back after StripIDMap",
			orig: `{"process":{"args":["a"]},"mounts":[{"destination":"/v","type":"bind","source":"/s","UIDMAPPINGS":[{"containerID":0,"hostID":0,"size":65536}],"options":["idmap"]}],"future":1}`,
			edit: func(s *specs.Spec) { StripIDMap(&s.Mounts[0]) },
		},
		{
			name: "fields of embedded structs are known",
			orig: `{"process":{"args":["a"]},"linux":{"resources":{"blockIO":{"weightDevice":[{"MAJOR":8,"minor":0,"weight":10}]}}},"future":1}`,
			edit: userns,
		},
		{
			// encoding/json merges both into one Linux: the patch cannot
			// tell which to go into.
			name:      "linux twice, in two cases",
			orig:      `{"process":{"args":["a"]},"linux":{"namespaces":[{"type":"pid"}]},"Linux":{"uidMappings":[{"containerID":0,"hostID":0,"size":1}],"future":2},"future":1}`,
			edit:      userns,
			ambiguous: true,
		},
		{
			name: "a mount's source twice: a value written whole",
			orig: `{"process":{"args":["a"]},"mounts":[{"destination":"/v","source":"/a","SOURCE":"/b"}],"future":1}`,
			edit: func(s *specs.Spec) { s.Mounts[0].Source = "/c" },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want, _, err := decodeFull([]byte(tc.orig))
			require.NoError(t, err)
			s, err := Decode([]byte(tc.orig))
			require.NoError(t, err)
			tc.edit(s)
			SetView(want, s)
			wantJSON, _ := json.Marshal(want)

			_, err = patch([]byte(tc.orig), reflect.ValueOf(viewOf(mustDecode(t, tc.orig))), reflect.ValueOf(viewOf(s)))
			assert.Equal(t, tc.ambiguous, errors.Is(err, errAmbiguous), "patch: %v", err)
			for name, encode := range map[string]func(*specs.Spec, []byte) ([]byte, error){"Encode": Encode, "encodeFull": encodeFull} {
				out, err := encode(s, []byte(tc.orig))
				require.NoError(t, err, name)
				var back specs.Spec
				require.NoError(t, json.Unmarshal(out, &back), "%s: %s", name, out)
				got, _ := json.Marshal(&back)
				assert.JSONEq(t, string(wantJSON), string(got), "%s: the runtime reads what the shim wrote: %s", name, out)
				assert.Contains(t, string(out), `"future":`, name)
			}
		})
	}
}

func mustDecode(t *testing.T, raw string) *specs.Spec {
	s, err := Decode([]byte(raw))
	require.NoError(t, err)
	return s
}

// TestSetView: the view fields move, everything else stays, and a section
// left empty goes.
func TestSetView(t *testing.T) {
	dst := &specs.Spec{Version: "1.0.0", Hostname: "h", Process: &specs.Process{Args: []string{"sh"}, User: specs.User{UID: 1}},
		Linux: &specs.Linux{Sysctl: map[string]string{"a": "b"}, UIDMappings: []specs.LinuxIDMapping{{Size: 1}},
			Resources: &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr(int64(5))}}}}
	SetView(dst, &specs.Spec{Version: "1.1.0", Process: &specs.Process{User: specs.User{UID: 2}}, Linux: &specs.Linux{}})
	assert.Equal(t, "1.1.0", dst.Version)
	assert.Equal(t, "h", dst.Hostname)
	assert.Equal(t, []string{"sh"}, dst.Process.Args)
	assert.Equal(t, uint32(2), dst.Process.User.UID)
	assert.Nil(t, dst.Linux.UIDMappings)
	assert.Equal(t, map[string]string{"a": "b"}, dst.Linux.Sysctl)
	assert.Nil(t, dst.Linux.Resources, "resources held only pids")

	only := &specs.Spec{Linux: &specs.Linux{UIDMappings: []specs.LinuxIDMapping{{Size: 1}}}}
	SetView(only, &specs.Spec{})
	assert.Nil(t, only.Linux, "a linux section with nothing else goes with its view fields")
}

func ptr[T any](v T) *T { return &v }

func TestLoadRefusals(t *testing.T) {
	dir := t.TempDir()
	real := write(t, "real.json", minimal, 0o644)
	link := filepath.Join(dir, "config.json")
	require.NoError(t, os.Symlink(real, link))
	_, err := Load(link)
	require.ErrorContains(t, err, "symlink")

	_, err = Load(dir)
	require.ErrorContains(t, err, "not a regular file")

	_, err = Load(filepath.Join(dir, "missing.json"))
	require.ErrorContains(t, err, "no such file")

	// Special files are refused without a read that could block.
	fifo, sock := filepath.Join(dir, "fifo.json"), filepath.Join(dir, "sock.json")
	require.NoError(t, unix.Mkfifo(fifo, 0o644))
	require.NoError(t, unix.Mknod(sock, unix.S_IFSOCK|0o644, 0))
	_, err = Load(fifo)
	require.ErrorContains(t, err, "not a regular file but a named pipe")
	_, err = Load(sock)
	require.ErrorContains(t, err, "it is a socket")

	_, err = Load(write(t, "c.json", `{"ociVersion": "1.0.2", "process": {`, 0o644))
	require.ErrorContains(t, err, "not valid JSON")

	_, err = Load(write(t, "c.json", `[1,2,3]`, 0o644))
	require.ErrorContains(t, err, "not a valid OCI runtime spec")

	_, err = Load(write(t, "c.json", `{"hello":"world"}`, 0o644))
	require.ErrorContains(t, err, "no process, root or linux")

	deep := strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000)
	_, err = Load(write(t, "c.json", `{"process":`+deep+`}`, 0o644))
	require.Error(t, err)

	big := write(t, "c.json", "", 0o644)
	require.NoError(t, os.Truncate(big, MaxSize+10))
	_, err = Load(big)
	require.ErrorContains(t, err, "larger than")
}

func TestCheckHostNamespaces(t *testing.T) {
	hostPaths := map[string]bool{"/proc/1/ns/net": true, "/proc/1/ns/pid": true, "/proc/1/ns/ipc": true}
	isHost := func(_ specs.LinuxNamespaceType, p string) (bool, error) { return hostPaths[p], nil }
	ns := func(list ...specs.LinuxNamespace) *specs.Spec {
		return &specs.Spec{Linux: &specs.Linux{Namespaces: list}}
	}
	net, pid, ipc := specs.LinuxNamespace{Type: specs.NetworkNamespace}, specs.LinuxNamespace{Type: specs.PIDNamespace}, specs.LinuxNamespace{Type: specs.IPCNamespace}

	require.NoError(t, CheckHostNamespaces(ns(net, pid, ipc), isHost))
	require.NoError(t, CheckHostNamespaces(ns(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/proc/77/ns/net"}, pid, ipc), isHost))

	err := CheckHostNamespaces(ns(pid, ipc), isHost)
	require.ErrorContains(t, err, `shares the host's network namespace (no "network" entry`)
	err = CheckHostNamespaces(ns(net, ipc, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: "/proc/1/ns/pid"}), isHost)
	require.ErrorContains(t, err, "pid namespace path /proc/1/ns/pid is the host's")
	err = CheckHostNamespaces(&specs.Spec{}, isHost)
	require.ErrorContains(t, err, "network")
	require.ErrorContains(t, err, "pid")
	require.ErrorContains(t, err, "ipc")
}

// TestCheckHostNamespacesDuplicates: FuzzRewrite found configs whose second
// entry of a type joined the host's namespace; only the first was checked.
func TestCheckHostNamespacesDuplicates(t *testing.T) {
	isHost := func(_ specs.LinuxNamespaceType, p string) (bool, error) { return strings.HasPrefix(p, "/proc/1/"), nil }
	ns := func(t specs.LinuxNamespaceType, path string) specs.LinuxNamespace {
		return specs.LinuxNamespace{Type: t, Path: path}
	}
	base := []specs.LinuxNamespace{ns(specs.PIDNamespace, ""), ns(specs.NetworkNamespace, ""), ns(specs.IPCNamespace, "")}
	tests := []struct {
		name    string
		extra   []specs.LinuxNamespace
		wantErr string
	}{
		{name: "each type once"},
		{name: "second user entry joins the host's", extra: []specs.LinuxNamespace{ns(specs.UserNamespace, ""), ns(specs.UserNamespace, "/proc/1/ns/user")},
			wantErr: "lists the user namespace more than once"},
		{name: "second network entry joins the host's", extra: []specs.LinuxNamespace{ns(specs.NetworkNamespace, "/proc/1/ns/net")},
			wantErr: "lists the network namespace more than once"},
		{name: "harmless type twice", extra: []specs.LinuxNamespace{ns(specs.MountNamespace, ""), ns(specs.MountNamespace, "")},
			wantErr: "lists the mount namespace more than once"},
		{name: "two types twice", extra: []specs.LinuxNamespace{ns(specs.PIDNamespace, ""), ns(specs.IPCNamespace, ""), ns(specs.IPCNamespace, "")},
			wantErr: "lists the pid, ipc namespace more than once"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &specs.Spec{Linux: &specs.Linux{Namespaces: append(slices.Clone(base), tc.extra...)}}
			err := CheckHostNamespaces(s, isHost)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestPodUID(t *testing.T) {
	tests := []struct {
		ann     map[string]string
		want    string
		wantErr bool
	}{
		{ann: map[string]string{AnnotationPodUID: "6f1b0c1e-1a2b-4c3d-8e9f-001122334455"}, want: "6f1b0c1e-1a2b-4c3d-8e9f-001122334455"},
		{ann: map[string]string{AnnotationContainerdPodUID: "abc"}, want: "abc"},
		{ann: map[string]string{AnnotationCRIOLabels: `{"io.kubernetes.pod.uid":"xyz"}`}, want: "xyz"},
		{ann: map[string]string{AnnotationCRIOLabels: `not json`}, want: ""},
		{ann: nil, want: ""},
		{ann: map[string]string{AnnotationPodUID: "../../etc"}, wantErr: true},
		{ann: map[string]string{AnnotationPodUID: "a/b"}, wantErr: true},
		{ann: map[string]string{AnnotationPodUID: "a..b"}, wantErr: true},
	}
	for _, tc := range tests {
		got, err := PodUID(tc.ann)
		if tc.wantErr {
			assert.Error(t, err, "%v", tc.ann)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, tc.want, got)
	}
}

func TestPodOf(t *testing.T) {
	tests := []struct {
		name    string
		ann     map[string]string
		want    Pod
		wantErr bool
	}{
		{name: "plain OCI bundle", want: Pod{ID: "c1"}},
		{name: "containerd sandbox", ann: map[string]string{AnnotationContainerdContainerType: "sandbox", AnnotationContainerdSandboxID: "c1", AnnotationContainerdPodUID: "u1"},
			want: Pod{ID: "c1", UID: "u1", Sandbox: true, CRI: "containerd"}},
		{name: "containerd app", ann: map[string]string{AnnotationContainerdContainerType: "container", AnnotationContainerdSandboxID: "s1", AnnotationContainerdPodUID: "u1"},
			want: Pod{ID: "s1", UID: "u1", CRI: "containerd"}},
		{name: "cri-o app without pause", ann: map[string]string{AnnotationCRIOContainerType: "container", AnnotationCRIOSandboxID: "s2", AnnotationPodUID: "u2"},
			want: Pod{ID: "s2", UID: "u2", CRI: "cri-o"}},
		{name: "cri-o sandbox", ann: map[string]string{AnnotationCRIOContainerType: "sandbox", AnnotationCRIOSandboxID: "c1"},
			want: Pod{ID: "c1", Sandbox: true, CRI: "cri-o"}},
		{name: "hostile sandbox id", ann: map[string]string{AnnotationCRIOSandboxID: "../x"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PodOf(tc.ann, "c1")
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestDecodeView: Decode reads only what the shim uses; a bad type in a
// field it does not read is the runtime's to refuse.
func TestDecodeView(t *testing.T) {
	_, err := Decode([]byte(minimal))
	require.NoError(t, err)
	_, err = Decode([]byte(`{"process":{"user":"root"}}`))
	require.ErrorContains(t, err, "not a valid OCI runtime spec")
	_, err = Decode([]byte(`{"process":{"args":"not-a-list"}}`))
	require.NoError(t, err)
	_, _, err = decodeFull([]byte(`{"process":{"args":"not-a-list"}}`))
	require.ErrorContains(t, err, "not a valid OCI runtime spec")
}

// TestFileEncodeSeesChangesInPlace: the modifiers change File.Spec in place
// (options, annotations, namespaces); File keeps its own copy of what it
// read, so Save writes those changes and the same bytes as Encode.
func TestFileEncodeSeesChangesInPlace(t *testing.T) {
	raw := []byte(`{"process":{"user":{"uid":0,"gid":0}},"annotations":{"a":"b"},"mounts":[{"destination":"/v","type":"bind","source":"/s","options":["rbind","idmap"]}],"linux":{"namespaces":[{"type":"pid"},{"type":"user"}]}}`)
	path := write(t, "config.json", string(raw), 0o644)
	f, err := Load(path)
	require.NoError(t, err)
	f.Spec.Mounts[0].Options[1] = "ro"
	f.Spec.Annotations["a"] = "c"
	f.Spec.Linux.Namespaces[1].Path = "/p"
	out, err := f.Encode(f.Spec)
	require.NoError(t, err)
	want, err := Encode(f.Spec, raw)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(out))
	back, err := Decode(out)
	require.NoError(t, err)
	assert.Equal(t, []string{"rbind", "ro"}, back.Mounts[0].Options)
	assert.Equal(t, "c", back.Annotations["a"])
	assert.Equal(t, "/p", back.Linux.Namespaces[1].Path)
}
