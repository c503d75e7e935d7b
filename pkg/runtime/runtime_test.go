package runtime

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestParseVersion(t *testing.T) {
	crun := "crun version 1.8.1\ncommit: f8a096be\nrundir: /run/crun\nspec: 1.0.0\n+SYSTEMD +SELINUX +APPARMOR +CAP +SECCOMP +EBPF +YAJL\n"
	inf, err := ParseVersion([]byte(crun))
	require.NoError(t, err)
	assert.Equal(t, Info{Name: "crun", Version: "1.8.1", Commit: "f8a096be", Spec: "1.0.0",
		Flags: []string{"+SYSTEMD", "+SELINUX", "+APPARMOR", "+CAP", "+SECCOMP", "+EBPF", "+YAJL"}}, inf)

	runc := "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\nlibseccomp: 2.5.4\n"
	inf, err = ParseVersion([]byte(runc))
	require.NoError(t, err)
	assert.Equal(t, "runc", inf.Name)
	assert.Equal(t, "1.0.2-dev", inf.Spec)

	_, err = ParseVersion([]byte("garbage"))
	require.Error(t, err)
}

// TestVersionTextParsesLikeGoRunc applies the parsing rules of go-runc's
// older parseVersion (exactly three lines; "version " and ": " split each in
// two) to the shim's output.
func TestVersionTextParsesLikeGoRunc(t *testing.T) {
	out := VersionText("0.1.0", "abc123", "/usr/bin/crun", Info{Name: "crun", Version: "1.8.1", Spec: "1.0.0"})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3)
	for i, sep := range []string{"version ", ": ", ": "} {
		parts := strings.Split(lines[i], sep)
		require.Len(t, parts, 2, "line %q", lines[i])
	}
	assert.Equal(t, "userns-shim version 0.1.0 (runtime crun 1.8.1 at /usr/bin/crun)", lines[0])
	assert.Equal(t, "spec: 1.0.0", lines[2])
}

func TestPatchFeatures(t *testing.T) {
	in := `{"ociVersionMin":"1.0.0","linux":{"namespaces":["pid","net"],"futureKey":1},"futureTop":"x"}`
	out, err := patchFeatures([]byte(in), false)
	require.NoError(t, err)
	var f map[string]any
	require.NoError(t, json.Unmarshal(out, &f))
	linux := f["linux"].(map[string]any)
	assert.Equal(t, []any{"pid", "net", "user"}, linux["namespaces"])
	assert.Equal(t, false, linux["mountExtensions"].(map[string]any)["idmap"].(map[string]any)["enabled"])
	assert.Equal(t, 1.0, linux["futureKey"])
	assert.Equal(t, "x", f["futureTop"])

	// A runtime that says it does idmap keeps saying so.
	out, err = patchFeatures([]byte(`{"linux":{"namespaces":["user"],"mountExtensions":{"idmap":{"enabled":true}}}}`), false)
	require.NoError(t, err)
	assert.Contains(t, string(out), `"enabled": true`)
	assert.Equal(t, 1, strings.Count(string(out), `"user"`))
}

func TestBuiltFeatures(t *testing.T) {
	f := builtFeatures(Info{Name: "crun", Spec: "1.0.0", Flags: []string{"+SECCOMP", "-APPARMOR"}})
	assert.Equal(t, "1.0.0", f.OCIVersionMax)
	assert.Contains(t, f.Linux.Namespaces, "user")
	assert.True(t, *f.Linux.Seccomp.Enabled)
	assert.False(t, *f.Linux.Apparmor.Enabled)
	assert.Contains(t, f.Linux.Capabilities, "CAP_SYS_ADMIN")
}

// TestRunPassesInheritedFDs checks that a descriptor the caller left open
// (like conmon's _OCI_SYNCPIPE) reaches the runtime started as a child.
func TestRunPassesInheritedFDs(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	// Make the write end inheritable, as conmon does for its pipes.
	_, err = unix.FcntlInt(w.Fd(), unix.F_SETFD, 0)
	require.NoError(t, err)
	script := filepath.Join(t.TempDir(), "fake-runtime")
	require.NoError(t, os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\necho \"args:$*\" >&%d\nexit 3\n", w.Fd())), 0o755))

	code, err := Run(script, []string{"create", "--bundle", "/b", "id"})
	require.NoError(t, err)
	w.Close()
	assert.Equal(t, 3, code, "the runtime's exit status is passed on")
	got, _ := io.ReadAll(r)
	assert.Equal(t, "args:create --bundle /b id\n", string(got))
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "myruntime")
	require.NoError(t, os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755))
	p, err := Resolve(fake)
	require.NoError(t, err)
	assert.Equal(t, fake, p)

	t.Setenv("PATH", dir)
	p, err = Resolve("myruntime")
	require.NoError(t, err)
	assert.Equal(t, fake, p)

	_, err = Resolve("")
	require.ErrorContains(t, err, "neither crun nor runc")
	_, err = Resolve("nosuch")
	require.ErrorContains(t, err, `real runtime "nosuch"`)

	t.Setenv("PATH", "")
	p, err = Resolve("sh")
	require.NoError(t, err, "an empty PATH (conmon) falls back to the usual directories")
	assert.True(t, strings.HasSuffix(p, "/sh"))

	self, err := os.Executable()
	require.NoError(t, err)
	_, err = Resolve(self)
	require.ErrorContains(t, err, "userns-shim itself")
}
