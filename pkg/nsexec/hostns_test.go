package nsexec

import (
	"os"
	"os/exec"
	"strconv"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestIsHostNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: reads other processes' /proc/<pid>/ns")
	}
	host, err := IsHostNamespace(specs.NetworkNamespace, "/proc/self/ns/net")
	require.NoError(t, err)
	assert.True(t, host, "the test runs in the host's network namespace")

	// A process in its own network namespace is not the host's.
	cmd := exec.Command("unshare", "--net", "sleep", "10")
	require.NoError(t, cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	path := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"
	require.Eventually(t, func() bool {
		h, err := IsHostNamespace(specs.NetworkNamespace, path)
		return err == nil && !h
	}, 5e9, 1e7)

	_, err = IsHostNamespace(specs.NetworkNamespace, "/nonexistent")
	require.ErrorContains(t, err, "/nonexistent")
}

// TestIsHostNamespaceType: a path that is no namespace, or a namespace of
// another type, is an error, not "not the host's"; the right type passes.
func TestIsHostNamespaceType(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: opens namespace files")
	}
	for _, tc := range []struct {
		typ        specs.LinuxNamespaceType
		path, want string
	}{
		{specs.UserNamespace, "/proc/self/ns/user", ""},
		{specs.PIDNamespace, "/proc/self/ns/pid", ""},
		{specs.UserNamespace, "/etc/passwd", "/etc/passwd is not a namespace"},
		{specs.NetworkNamespace, "/dev/null", "/dev/null is not a namespace (not even a regular file)"},
		{specs.NetworkNamespace, "/proc/self/ns/ipc", "/proc/self/ns/ipc is a ipc namespace, not a network namespace"},
		{specs.UserNamespace, "/proc/self/ns/net", "is a network namespace, not a user namespace"},
	} {
		t.Run(string(tc.typ)+" "+tc.path, func(t *testing.T) {
			_, err := IsHostNamespace(tc.typ, tc.path)
			if tc.want == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tc.want)
			}
		})
	}
}

func TestProcOfUserNS(t *testing.T) {
	assert.Equal(t, "/proc/42", ProcOfUserNS("/proc/42/ns/user"))
	assert.Equal(t, "", ProcOfUserNS("/run/userns-shim/pins/x"))
	assert.Equal(t, "", ProcOfUserNS("/proc/42/ns/net"))
	assert.Equal(t, "", ProcOfUserNS("/proc/../1/ns/user"))
}
