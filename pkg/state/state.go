// Package state keeps the shim's per-container records under state_dir, so
// that `shim inspect` can say later what the shim decided and why.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/userns-shim/userns-shim/pkg/fsutil"
	"github.com/userns-shim/userns-shim/pkg/mapping"
)

// Record is what the shim decided for one container.
type Record struct {
	ID      string          `json:"id"`
	Bundle  string          `json:"bundle"`
	Root    string          `json:"root,omitempty"` // the runtime's --root
	Runtime string          `json:"runtime"`
	PodID   string          `json:"podID,omitempty"`
	PodUID  string          `json:"podUID,omitempty"`
	Source  mapping.Source  `json:"source"`
	Mapping mapping.Mapping `json:"mapping"`
	Created time.Time       `json:"created"`
	Rootfs  *RootfsRecord   `json:"rootfs,omitempty"`
	Mounts  []MountRecord   `json:"mounts,omitempty"`
}

// MountRecord is what the shim did to one mount of the spec, and why.
type MountRecord struct {
	Destination string           `json:"destination"`
	Source      string           `json:"source"`
	Treatment   string           `json:"treatment"`
	Reason      string           `json:"reason,omitempty"`
	Staging     string           `json:"staging,omitempty"` // the ID-mapped copy the runtime mounted
	Mapping     *mapping.Mapping `json:"mapping,omitempty"`
}

// RootfsRecord is what the shim did to the rootfs.
type RootfsRecord struct {
	Path      string `json:"path"`
	Kind      string `json:"kind"`
	Treatment string `json:"treatment"`
	Reason    string `json:"reason,omitempty"`
}

// Dir is a state directory.
type Dir string

func (d Dir) containers() string { return filepath.Join(string(d), "containers") }

// Path is the record file of container id. id must already be validated
// (runcargs.ValidateContainerID): it becomes a file name.
func (d Dir) Path(id string) string { return filepath.Join(d.containers(), id+".json") }

// Staging returns <state_dir>/staging, made if needed. It and the state
// dir are 0711: runtimes mount the staged copies from inside the container's
// user namespace, as its mapped root, which must be able to traverse them.
func (d Dir) Staging() (string, error) {
	staging := filepath.Join(string(d), "staging")
	for _, dir := range []string{string(d), staging} {
		if err := os.Mkdir(dir, 0o711); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("create state dir: %w", err)
		}
		if err := os.Chmod(dir, 0o711); err != nil {
			return "", err
		}
	}
	return staging, nil
}

// Save writes the record atomically.
func (d Dir) Save(r *Record) error {
	if err := os.MkdirAll(d.containers(), 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteAtomic(d.Path(r.ID), append(data, '\n'), 0o600, -1, -1)
}

// Load reads the record of container id.
func (d Dir) Load(id string) (*Record, error) {
	data, err := os.ReadFile(d.Path(id))
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("state record %s: %w", d.Path(id), err)
	}
	return &r, nil
}

// Remove deletes the record of container id; a missing record is not an error.
func (d Dir) Remove(id string) error {
	if err := os.Remove(d.Path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove state record: %w", err)
	}
	return nil
}

// IDs lists the containers that have a record.
func (d Dir) IDs() ([]string, error) {
	entries, err := os.ReadDir(d.containers())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok && !strings.HasPrefix(id, ".") {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Has reports whether container id has a record.
func (d Dir) Has(id string) bool {
	_, err := os.Lstat(d.Path(id))
	return err == nil
}
