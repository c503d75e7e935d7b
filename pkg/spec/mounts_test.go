package spec

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/userns-shim/userns-shim/pkg/mapping"
)

func TestChooseMounts(t *testing.T) {
	pod := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 65536, Size: 65536}}
	own := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 131072, Size: 65536}}
	container := mapping.Mapping{UIDs: pod, GIDs: pod}
	s := &specs.Spec{
		Annotations: map[string]string{mapping.AnnotationNoIDMap: " /raw/ ,/elsewhere"},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm"},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup"},
			{Destination: "/data", Type: "bind", Source: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/data", Options: []string{"rbind"}},
			{Destination: "/etc/hosts", Source: "/var/lib/kubelet/pods/u/etc-hosts", Options: []string{"bind", "ro"}},
			{Destination: "/raw", Type: "bind", Source: "/x"},
			{Destination: "/own", Type: "bind", Source: "/y", UIDMappings: own},
		},
	}
	got := ChooseMounts(s, container)
	assert.Len(t, got, 7)
	for _, i := range []int{0, 1, 2} {
		assert.Contains(t, got[i].Skip, "made by the runtime inside the container", s.Mounts[i].Destination)
	}
	assert.Empty(t, got[3].Skip)
	assert.Equal(t, container, got[3].Mapping)
	assert.Empty(t, got[4].Skip, "a file bind without type is host-backed")
	assert.Contains(t, got[5].Skip, mapping.AnnotationNoIDMap)
	assert.True(t, got[5].NoIDMap)
	for _, i := range []int{0, 1, 2, 3, 4, 6} {
		assert.False(t, got[i].NoIDMap, s.Mounts[i].Destination)
	}
	assert.Empty(t, got[6].Skip)
	assert.Equal(t, mapping.Mapping{UIDs: own, GIDs: own}, got[6].Mapping, "a mount keeps its own mapping")
}

// TestCheckSpecialSource: a device node, socket or FIFO source is refused
// exactly when its mount asks for an ID mapping, in any of the three ways.
func TestCheckSpecialSource(t *testing.T) {
	mp := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 65536, Size: 65536}}
	for _, tc := range []struct {
		name    string
		m       specs.Mount
		refused bool
	}{
		{"plain bind", specs.Mount{Options: []string{"bind", "rw"}}, false},
		{"uidMappings", specs.Mount{Options: []string{"bind"}, UIDMappings: mp}, true},
		{"gidMappings only", specs.Mount{Options: []string{"bind"}, GIDMappings: mp}, true},
		{"idmap option", specs.Mount{Options: []string{"rbind", "idmap"}}, true},
		{"ridmap option with a value", specs.Mount{Options: []string{"ridmap=uids=0-65536-1"}}, true},
		{"an option that only starts like idmap", specs.Mount{Options: []string{"idmapped"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.m.Destination, tc.m.Source = "/dev/x", "/dev/sda"
			assert.Equal(t, tc.refused, AsksIDMap(tc.m))
			err := CheckSpecialSource(tc.m, "a device node")
			if !tc.refused {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, "mount /dev/x: source /dev/sda is a device node and the mount asks for an ID mapping")
		})
	}
}

// TestDropIDMapRequest: every way of asking is dropped, other options stay,
// and a mount that asks for nothing is not changed.
func TestDropIDMapRequest(t *testing.T) {
	mp := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 65536, Size: 65536}}
	asked := specs.Mount{Destination: "/v", Source: "/s", Options: []string{"rbind", "ridmap", "ro"}, UIDMappings: mp, GIDMappings: mp}
	assert.True(t, DropIDMapRequest(&asked))
	assert.Equal(t, specs.Mount{Destination: "/v", Source: "/s", Options: []string{"rbind", "ro"}}, asked)
	assert.False(t, AsksIDMap(asked))

	plain := specs.Mount{Destination: "/v", Source: "/s", Options: []string{"rbind", "ro"}}
	assert.False(t, DropIDMapRequest(&plain))
	assert.Equal(t, []string{"rbind", "ro"}, plain.Options)
}

func TestIsReadOnly(t *testing.T) {
	for _, tc := range []struct {
		opts []string
		ro   bool
	}{
		{nil, false},
		{[]string{"rbind", "ro"}, true},
		{[]string{"ro", "rw"}, false},
		{[]string{"rw", "nosuid", "ro"}, true},
		{[]string{"rbind", "rro"}, false}, // not an option the shim or runc 1.1 knows
	} {
		assert.Equal(t, tc.ro, IsReadOnly(specs.Mount{Options: tc.opts}), "%v", tc.opts)
	}
}

func TestStripAndRequestIDMap(t *testing.T) {
	mp := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 65536, Size: 65536}}
	m := specs.Mount{Destination: "/v", Type: "bind", Source: "/s", Options: []string{"rbind", "idmap", "ridmap=uids=0-65536-1", "ro"}, UIDMappings: mp, GIDMappings: mp}
	orig := append([]string(nil), m.Options...)
	StripIDMap(&m)
	assert.Equal(t, []string{"rbind", "ro"}, m.Options)
	assert.Nil(t, m.UIDMappings)
	assert.Nil(t, m.GIDMappings)

	m.Options = orig
	RequestRuntimeIDMap(&m, mapping.Mapping{UIDs: mp, GIDs: mp})
	assert.Equal(t, []string{"rbind", "ro", "ridmap"}, m.Options, "rbind asks for a recursive mapping")
	assert.Equal(t, mp, m.UIDMappings)

	b := specs.Mount{Destination: "/b", Type: "bind", Source: "/s", Options: []string{"bind"}}
	RequestRuntimeIDMap(&b, mapping.Mapping{UIDs: mp, GIDs: mp})
	assert.Equal(t, []string{"bind", "idmap"}, b.Options)
}

func TestKubeletVolume(t *testing.T) {
	tests := []struct {
		source, plugin, name string
		ok                   bool
	}{
		{"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache", "kubernetes.io~empty-dir", "cache", true},
		{"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/token/sub/dir", "kubernetes.io~secret", "token", true},
		{"/var/lib/kubelet/pods/u1/etc-hosts", "", "", false},
		{"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir", "", "", false},
		{"/srv/data", "", "", false},
		{"/var/lib/kubelet/../kubelet/pods/u1/volumes/p/n", "p", "n", true},
	}
	for _, tc := range tests {
		plugin, name, ok := KubeletVolume("/var/lib/kubelet/", tc.source)
		assert.Equal(t, tc.ok, ok, tc.source)
		assert.Equal(t, tc.plugin, plugin, tc.source)
		assert.Equal(t, tc.name, name, tc.source)
	}
}

func TestRememberRestore(t *testing.T) {
	mp := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 65536, Size: 65536}}
	orig := func() *specs.Spec {
		return &specs.Spec{
			Root:        &specs.Root{Path: "rootfs"},
			Annotations: map[string]string{mapping.AnnotationUIDMappings: "0:65536:65536"},
			Mounts:      []specs.Mount{{Destination: "/v", Type: "bind", Source: "/data", Options: []string{"rbind", "idmap"}, UIDMappings: mp}},
			Linux:       &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}}},
		}
	}
	ours := func(p string) bool { return strings.HasPrefix(p, "/run/userns-shim/") }

	s := orig()
	snap := Snapshot(s)
	// What the shim does to it.
	s.Root.Path = "/run/userns-shim/staging/c/rootfs"
	s.Mounts[0].Source = "/run/userns-shim/staging/c/0"
	StripIDMap(&s.Mounts[0])
	SetUserNamespace(s, mapping.Mapping{UIDs: mp, GIDs: mp})
	Namespace(s, specs.UserNamespace).Path = "/run/userns-shim/pods/c/userns"
	require.NoError(t, Remember(s, snap))

	ok, err := Restore(s, ours)
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, orig(), s, "the original spec comes back, annotation gone")

	// An annotation in a spec that points nowhere into the shim (a pod
	// author's) is dropped and changes nothing.
	s = orig()
	s.Annotations[AnnotationOriginal] = `{"root":"/","mounts":[]}`
	ok, err = Restore(s, ours)
	require.NoError(t, err)
	assert.False(t, ok)
	assert.Equal(t, orig(), s)
}

func TestFitVersion(t *testing.T) {
	v11 := Version{1, 1}
	s := &specs.Spec{Version: "1.3.0", Process: &specs.Process{}, Linux: &specs.Linux{}}
	changed, err := FitVersion(s, v11)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, "1.1.0", s.Version)

	s = &specs.Spec{Version: "1.1.0"}
	changed, err = FitVersion(s, v11)
	require.NoError(t, err)
	assert.False(t, changed, "nothing to do for a version the runtime knows")

	s = &specs.Spec{Version: "1.2.1", Process: &specs.Process{IOPriority: &specs.LinuxIOPriority{Class: specs.IOPRIO_CLASS_BE}}}
	_, err = FitVersion(s, v11)
	require.ErrorContains(t, err, "process.ioPriority")
	assert.Equal(t, "1.2.1", s.Version, "a refused config keeps its version")

	s = &specs.Spec{Version: "1.2.0", Mounts: []specs.Mount{{Destination: "/v", Options: []string{"rbind", "ridmap"}}}}
	_, err = FitVersion(s, v11)
	require.ErrorContains(t, err, "mounts[/v].ridmap")

	_, err = FitVersion(&specs.Spec{Version: "garbage"}, v11)
	require.Error(t, err)
}
