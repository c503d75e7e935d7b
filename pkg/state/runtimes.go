package state

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/userns-shim/userns-shim/pkg/fsutil"
)

// RuntimeFacts is what the shim learnt by running a runtime binary, cached
// so that a create does not pay for `--version` and `features` calls.
type RuntimeFacts struct {
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime"`
	Name    string `json:"name"`               // crun, runc
	Version string `json:"version"`            // its own version
	OCIMax  string `json:"ociVersionMax"`      // newest runtime-spec it takes
	HasFeat bool   `json:"features,omitempty"` // has a `features` command
}

func (d Dir) runtimesFile() string { return filepath.Join(string(d), "runtimes.json") }

// CachedRuntime returns the facts learnt about the binary at path, if the
// binary has not changed since (same size and modification time).
func (d Dir) CachedRuntime(path string) (RuntimeFacts, bool) {
	st, err := os.Stat(path)
	if err != nil {
		return RuntimeFacts{}, false
	}
	data, err := os.ReadFile(d.runtimesFile())
	if err != nil {
		return RuntimeFacts{}, false
	}
	var all map[string]RuntimeFacts
	if json.Unmarshal(data, &all) != nil {
		return RuntimeFacts{}, false
	}
	f, ok := all[path]
	return f, ok && f.Size == st.Size() && f.ModTime == st.ModTime().UnixNano()
}

// CacheRuntime records facts about the binary at path. Losing a race with
// another shim only costs that shim a lookup later.
func (d Dir) CacheRuntime(path string, f RuntimeFacts) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	f.Size, f.ModTime = st.Size(), st.ModTime().UnixNano()
	all := map[string]RuntimeFacts{}
	if data, err := os.ReadFile(d.runtimesFile()); err == nil {
		_ = json.Unmarshal(data, &all)
	}
	all[path] = f
	data, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(string(d), 0o711); err != nil {
		return err
	}
	return fsutil.WriteAtomic(d.runtimesFile(), append(data, '\n'), 0o600, -1, -1)
}
