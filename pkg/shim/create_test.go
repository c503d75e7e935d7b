package shim

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/config"
	"github.com/userns-shim/userns-shim/pkg/mapping"
	"github.com/userns-shim/userns-shim/pkg/state"
)

var (
	podRange   = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 196608, Size: 65536}}
	otherRange = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 262144, Size: 65536}}
)

// baseSpec is a container with its own network, PID and IPC namespaces.
func baseSpec() *specs.Spec {
	return &specs.Spec{
		Process: &specs.Process{User: specs.User{UID: 0, GID: 0}},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.IPCNamespace}, {Type: specs.MountNamespace},
		}},
	}
}

func fakeSources(records map[string]string, joined map[string]mapping.Mapping) Sources {
	return Sources{
		KubeletRecord: func(uid string) ([]byte, string, error) {
			if r, ok := records[uid]; ok {
				return []byte(r), "/k/pods/" + uid + "/userns", nil
			}
			return nil, "", fs.ErrNotExist
		},
		JoinedMapping: func(p string) (mapping.Mapping, error) { return joined[p], nil },
		IsHost: func(t specs.LinuxNamespaceType, p string) (bool, error) {
			return p == "/proc/1/ns/"+map[specs.LinuxNamespaceType]string{specs.NetworkNamespace: "net", specs.PIDNamespace: "pid", specs.IPCNamespace: "ipc", specs.UserNamespace: "user"}[t], nil
		},
	}
}

func TestDecide(t *testing.T) {
	record := `{"uidMappings":[{"hostId":262144,"containerId":0,"length":65536}],"gidMappings":[{"hostId":262144,"containerId":0,"length":65536}]}`
	tests := []struct {
		name       string
		mode       config.Mode
		edit       func(s *specs.Spec)
		wantSource mapping.Source
		wantMap    []specs.LinuxIDMapping
		wantErr    string
		pod        *state.Pod
	}{
		{name: "nothing, passthrough", wantSource: mapping.SourceNone},
		{name: "nothing, require", mode: config.ModeRequire, wantErr: "mode is require and no mapping was found"},
		{name: "nothing, allocate: placeholder from the pool's start", mode: config.ModeAllocate, wantSource: mapping.SourceAllocator,
			wantMap: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1 << 31, Size: 65536}}},
		{name: "nothing, allocate, process outside the pod's range", mode: config.ModeAllocate, wantErr: "process.user.uid 65536",
			edit: func(s *specs.Spec) { s.Process.User.UID = 65536 }},
		{name: "nothing, pod known: the pod's mapping", mode: config.ModeRequire, pod: &state.Pod{ID: "p", Mapping: mapping.Mapping{UIDs: otherRange, GIDs: otherRange}},
			wantSource: mapping.SourcePod, wantMap: otherRange},
		{name: "own mapping wins over the pod's (compared later)", pod: &state.Pod{ID: "p", Mapping: mapping.Mapping{UIDs: otherRange, GIDs: otherRange}},
			wantSource: mapping.SourceAnnotation, wantMap: podRange,
			edit: func(s *specs.Spec) {
				s.Annotations = map[string]string{mapping.AnnotationUIDMappings: "0:196608:65536"}
			}},
		{
			name: "spec has user namespace", wantSource: mapping.SourceSpec, wantMap: podRange,
			edit: func(s *specs.Spec) {
				s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
				s.Linux.UIDMappings, s.Linux.GIDMappings = podRange, podRange
				s.Annotations = map[string]string{mapping.AnnotationUIDMappings: "0:262144:65536"}
			},
		},
		{
			name: "joined user namespace without mappings", wantSource: mapping.SourceJoined, wantMap: otherRange,
			edit: func(s *specs.Spec) {
				s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/proc/42/ns/user"})
			},
		},
		{
			name: "host user namespace by path", wantErr: "is the host's user namespace",
			edit: func(s *specs.Spec) {
				s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/proc/1/ns/user"})
				s.Linux.UIDMappings, s.Linux.GIDMappings = podRange, podRange
			},
		},
		{
			name: "mounts carry the mapping", wantSource: mapping.SourceMounts, wantMap: podRange,
			edit: func(s *specs.Spec) {
				s.Mounts = []specs.Mount{{Destination: "/data", Source: "/x", Options: []string{"bind"}, UIDMappings: podRange, GIDMappings: podRange}}
				s.Annotations = map[string]string{mapping.AnnotationUIDMappings: "0:262144:65536"}
			},
		},
		{
			name: "annotation", wantSource: mapping.SourceAnnotation, wantMap: otherRange, mode: config.ModeRequire,
			edit: func(s *specs.Spec) {
				s.Annotations = map[string]string{mapping.AnnotationUIDMappings: "0:262144:65536", "io.kubernetes.pod.uid": "p1"}
			},
		},
		{
			name: "kubelet record", wantSource: mapping.SourceKubelet, wantMap: otherRange, mode: config.ModeRequire,
			edit: func(s *specs.Spec) { s.Annotations = map[string]string{"io.kubernetes.cri.sandbox-uid": "p1"} },
		},
		{
			name: "pod without kubelet record, passthrough", wantSource: mapping.SourceNone,
			edit: func(s *specs.Spec) { s.Annotations = map[string]string{"io.kubernetes.pod.uid": "p2"} },
		},
		{
			name: "hostile pod uid", wantErr: "not a valid UID",
			edit: func(s *specs.Spec) { s.Annotations = map[string]string{"io.kubernetes.pod.uid": "../../etc"} },
		},
		{
			name: "garbage annotation", wantErr: "userns-shim.io/uid-mappings",
			edit: func(s *specs.Spec) { s.Annotations = map[string]string{mapping.AnnotationUIDMappings: "root"} },
		},
		{
			name: "annotation onto host IDs", wantErr: "host IDs below 65536 belong to the host",
			edit: func(s *specs.Spec) { s.Annotations = map[string]string{mapping.AnnotationUIDMappings: "0:0:65536"} },
		},
		{
			name: "process uid outside", wantErr: "process.user.uid 70000",
			edit: func(s *specs.Spec) {
				s.Annotations = map[string]string{mapping.AnnotationUIDMappings: "0:262144:65536"}
				s.Process.User.UID = 70000
			},
		},
		{
			name: "host network by omission", wantErr: `no "network" entry`,
			edit: func(s *specs.Spec) {
				s.Annotations = map[string]string{mapping.AnnotationUIDMappings: "0:262144:65536"}
				s.Linux.Namespaces = s.Linux.Namespaces[:1]
			},
		},
		{
			name: "host pid by path", wantErr: "pid namespace path /proc/1/ns/pid is the host's",
			edit: func(s *specs.Spec) {
				s.Annotations = map[string]string{mapping.AnnotationUIDMappings: "0:262144:65536"}
				s.Linux.Namespaces[0].Path = "/proc/1/ns/pid"
			},
		},
		{
			name: "no linux section at all", wantErr: "network",
			edit: func(s *specs.Spec) {
				s.Linux = nil
				s.Annotations = map[string]string{mapping.AnnotationUIDMappings: "0:262144:65536"}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := baseSpec()
			if tc.edit != nil {
				tc.edit(s)
			}
			cfg := config.Default()
			if tc.mode != "" {
				cfg.Mode = tc.mode
			}
			d, err := Decide(s, cfg, fakeSources(map[string]string{"p1": record}, map[string]mapping.Mapping{"/proc/42/ns/user": {UIDs: otherRange, GIDs: otherRange}}), tc.pod)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantSource, d.Source)
			if tc.wantMap != nil {
				assert.Equal(t, mapping.Mapping{UIDs: tc.wantMap, GIDs: tc.wantMap}, d.Mapping)
			}
		})
	}
}

func TestMayCarryMapping(t *testing.T) {
	assert.False(t, mayCarryMapping([]byte(`{"process":{"user":{"uid":0},"args":["true"]},"linux":{"namespaces":[{"type":"pid"}]}}`)))
	assert.False(t, mayCarryMapping([]byte(`{"process":{"user" : {"uid":0}}}`)), "process.user is a key, not a namespace")
	for _, s := range []string{
		`{"linux":{"namespaces":[{"type":"user"}]}}`,
		`{"linux":{"namespaces":[{"type": "user"}]}}`,
		`{"mounts":[{"uidMappings":[]}]}`,
		`{"mounts":[{"uidmappings":[]}]}`,
		`{"linux":{"GIDMAPPINGS":[]}}`,
		`{"linux":{"uidMappingſ":[]}}`,
		`{"annotations":{"userns-shim.io/uid-mappings":"0:65536:65536"}}`,
		`{"annotations":{"io.kubernetes.pod.uid":"x"}}`,
		`{"annotations":{"io.kubernetes.cri.sandbox-uid":"x"}}`,
		`{"linux":{"namespaces":[{"type":"\u0075ser"}]}}`,
	} {
		assert.True(t, mayCarryMapping([]byte(s)), s)
	}
}

func TestNewerThan11(t *testing.T) {
	for raw, want := range map[string]bool{
		`{"ociVersion":"1.0.2-dev"}`: false,
		`{"ociVersion": "1.1.0"}`:    false,
		`{"ociVersion" : "1.2.1"}`:   true,
		`{"ociVersion":"1.3.0"}`:     true,
		`{"ociVersion":"2.0.0"}`:     true,
		`{"process":{}}`:             true, // no version: the full decode says why
		`{"ociVersion":"garbage"}`:   true,
		`{"ociVersion":1}`:           true,
	} {
		assert.Equal(t, want, newerThan11([]byte(raw)), raw)
	}
}

// TestRemoveStagingLeavesMountsWhole: a mount still below a staging
// directory is neither entered nor emptied.
func TestRemoveStagingLeavesMountsWhole(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a tmpfs")
	}
	dir := t.TempDir()
	staging := filepath.Join(dir, "staging")
	vol := filepath.Join(staging, "0")
	require.NoError(t, os.MkdirAll(vol, 0o711))
	require.NoError(t, unix.Mount("tmpfs", vol, "tmpfs", 0, ""))
	defer unix.Unmount(vol, unix.MNT_DETACH)
	keep := filepath.Join(vol, "precious")
	require.NoError(t, os.WriteFile(keep, []byte("data"), 0o644))
	// A bind of vol elsewhere stands for the volume's other users; the
	// staging mount itself is detached by removeStaging, which must then
	// remove only the empty directory.
	other := filepath.Join(dir, "other")
	require.NoError(t, os.Mkdir(other, 0o755))
	require.NoError(t, unix.Mount(vol, other, "", unix.MS_BIND, ""))
	defer unix.Unmount(other, unix.MNT_DETACH)

	require.NoError(t, removeStaging(staging))
	_, err := os.Stat(staging)
	assert.True(t, os.IsNotExist(err), "staging removed")
	data, err := os.ReadFile(filepath.Join(other, "precious"))
	require.NoError(t, err, "the volume's content is untouched")
	assert.Equal(t, "data", string(data))
}

// TestRemoveStagingDetachesEveryLevel: what a killed create leaves (the
// per-create tmpfs on the staging dir itself, mounts inside it, a mount
// stacked twice on one target) is detached and the directory removed; the
// host's mount table holds nothing below it afterwards.
func TestRemoveStagingDetachesEveryLevel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts tmpfs")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	require.NoError(t, os.Mkdir(src, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644))
	staging := filepath.Join(dir, "staging")
	require.NoError(t, os.Mkdir(staging, 0o711))
	require.NoError(t, unix.Mount("userns-shim", staging, "tmpfs", 0, "mode=0711"))
	for _, target := range []string{"0", "1"} {
		require.NoError(t, os.Mkdir(filepath.Join(staging, target), 0o711))
	}
	require.NoError(t, os.WriteFile(filepath.Join(staging, "file"), nil, 0o600))
	for _, target := range []string{"0", "1", "1", "file"} {
		from := src
		if target == "file" {
			from = filepath.Join(src, "f")
		}
		require.NoError(t, unix.Mount(from, filepath.Join(staging, target), "", unix.MS_BIND, ""))
	}

	require.NoError(t, removeStaging(staging))
	_, err := os.Lstat(staging)
	assert.True(t, os.IsNotExist(err), "staging removed")
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(staging))
	require.NoError(t, err)
	assert.Empty(t, mounts, "no mount left below the staging dir")
	data, err := os.ReadFile(filepath.Join(src, "f"))
	require.NoError(t, err, "the bound source is untouched")
	assert.Equal(t, "x", string(data))
}
