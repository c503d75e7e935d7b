package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaultsAreValid(t *testing.T) {
	c := Default()
	require.NoError(t, c.Validate())
	assert.Equal(t, ModePassthrough, c.Mode)
	assert.Equal(t, "/run/userns-shim", c.StateDir)
	assert.Equal(t, uint32(65536), c.Validation.MinHostID)
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.toml")
	require.NoError(t, os.WriteFile(p, []byte(`
runtime = "runc"
mode = "require"
state_dir = "/tmp/s"
[validation]
min_host_id = 1000
size_multiple = 1
[allocate]
ids_per_pod = 131072
`), 0o644))
	c, err := Load(env(map[string]string{EnvConfig: p}))
	require.NoError(t, err)
	assert.Equal(t, "runc", c.Runtime)
	assert.Equal(t, ModeRequire, c.Mode)
	assert.Equal(t, uint32(1000), c.Validation.MinHostID)
	assert.Equal(t, uint32(131072), c.Allocate.IDsPerPod)
	assert.Equal(t, IDMapAuto, c.IDMap, "keys not in the file keep their defaults")

	c, err = Load(env(map[string]string{EnvConfig: p, EnvRuntime: "/opt/crun"}))
	require.NoError(t, err)
	assert.Equal(t, "/opt/crun", c.Runtime, "USERNS_SHIM_RUNTIME overrides the file")
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(env(map[string]string{EnvConfig: "/nonexistent/c.toml"}))
	require.ErrorContains(t, err, "/nonexistent/c.toml", "a file named explicitly must exist")
}

func TestParseErrors(t *testing.T) {
	tests := map[string]string{
		`mode = "sometimes"`:                              "mode",
		`idmap = "kernel"`:                                "idmap",
		`on_unsupported_fs = "ignore"`:                    "on_unsupported_fs",
		`state_dir = "relative"`:                          "state_dir",
		`kubelet_root = ""`:                               "kubelet_root",
		`runtme = "crun"`:                                 `unknown key "runtme"`,
		"[allocate]\nids_per_pod = 1000":                  "multiple of 65536",
		"[allocate]\nstart = 0":                           "host keeps IDs 0-65535",
		"[allocate]\nstart = 4294901760\nlength = 131072": "passes the last ID",
		"[validation]\nmin_host_id = 0":                   "host root",
		"[validation]\nsize_multiple = 0":                 "size_multiple",
		`mode = `:                                         "",
		"[validation]\nmin_host_id = -1":                  "",
	}
	for in, want := range tests {
		t.Run(in, func(t *testing.T) {
			c := Default()
			err := Parse([]byte(in), &c)
			require.Error(t, err)
			assert.Contains(t, err.Error(), want)
		})
	}
}

func TestExampleFileParses(t *testing.T) {
	data, err := os.ReadFile("../../deploy/config.toml.example")
	require.NoError(t, err)
	c := Default()
	require.NoError(t, Parse(data, &c))
	assert.Equal(t, Default(), c, "the example documents the defaults")
}
