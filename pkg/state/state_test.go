package state

import (
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/userns-shim/userns-shim/pkg/mapping"
)

func TestRecordRoundTrip(t *testing.T) {
	d := Dir(filepath.Join(t.TempDir(), "state"))
	assert.False(t, d.Has("c1"))
	r := &Record{ID: "c1", Bundle: "/b", Source: mapping.SourceAnnotation,
		Mapping: mapping.Mapping{UIDs: []specs.LinuxIDMapping{{HostID: 65536, Size: 65536}}}}
	require.NoError(t, d.Save(r))
	assert.True(t, d.Has("c1"))
	got, err := d.Load("c1")
	require.NoError(t, err)
	assert.Equal(t, r.Mapping, got.Mapping)
	st, err := os.Stat(d.Path("c1"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	require.NoError(t, d.Remove("c1"))
	assert.False(t, d.Has("c1"))
	require.NoError(t, d.Remove("c1"), "removing twice is fine")
	entries, _ := os.ReadDir(filepath.Join(string(d), "containers"))
	assert.Empty(t, entries, "no temporary files left")
}
