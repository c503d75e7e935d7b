package shim

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRemoveWriteTemps: only the regular files named like WriteAtomic's
// temporary files go; config.json, other dot files, a directory and a
// symlink with such names, and the symlink's target stay.
func TestRemoveWriteTemps(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "target")
	require.NoError(t, os.WriteFile(target, nil, 0o600))
	for _, f := range []string{"config.json", ".config.json.userns-shim-123", ".hidden", ".x.userns-shim-9"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), nil, 0o600))
	}
	require.NoError(t, os.Mkdir(filepath.Join(dir, ".d.userns-shim-1"), 0o700))
	require.NoError(t, os.Symlink(target, filepath.Join(dir, ".l.userns-shim-2")))

	require.NoError(t, removeWriteTemps(dir))
	var left []string
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	assert.ElementsMatch(t, []string{"config.json", ".hidden", ".d.userns-shim-1", ".l.userns-shim-2"}, left)
	assert.FileExists(t, target)
	assert.NoError(t, removeWriteTemps(filepath.Join(dir, "gone")), "a bundle that is gone is not an error")
}
