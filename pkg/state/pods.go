package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/fsutil"
	"github.com/userns-shim/userns-shim/pkg/mapping"
)

// Pod is one pod's entry in the registry: its mapping, where its user
// namespace is, and which of its containers exist.
type Pod struct {
	ID     string         `json:"id"`
	UID    string         `json:"uid,omitempty"`
	CRI    string         `json:"cri,omitempty"`
	Source mapping.Source `json:"source"`
	// Allocated: the range came from the shim's pool and goes back with the pod.
	Allocated bool            `json:"allocated,omitempty"`
	Mapping   mapping.Mapping `json:"mapping"`
	// Pin is the shim's bind mount of the pod's user namespace, when the shim
	// made the namespace; containers join it by this path.
	Pin string `json:"pin,omitempty"`
	// UserNS is the path containers join when the CRI runtime made the
	// namespace, as its config.json named it.
	UserNS     string    `json:"userns,omitempty"`
	Containers []string  `json:"containers"`
	Created    time.Time `json:"created"`
}

// Registry is every pod the shim knows on this node, in one file, so that
// the allocator and the overlap guard see all ranges at once.
type Registry struct {
	Pods map[string]*Pod `json:"pods"`
}

// Sorted returns the pods by ID.
func (r *Registry) Sorted() []*Pod {
	out := make([]*Pod, 0, len(r.Pods))
	for _, p := range r.Pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// PodOfContainer returns the pod that holds container id, or nil.
func (r *Registry) PodOfContainer(id string) *Pod {
	for _, p := range r.Pods {
		if slices.Contains(p.Containers, id) {
			return p
		}
	}
	return nil
}

// UsedSpans returns the host IDs of every pod but except.
func (r *Registry) UsedSpans(except string) []mapping.Span {
	var out []mapping.Span
	for _, p := range r.Sorted() {
		if p.ID != except {
			out = append(out, mapping.HostSpans(p.Mapping)...)
		}
	}
	return out
}

// Overlapping returns a pod other than except whose host range overlaps m.
func (r *Registry) Overlapping(m mapping.Mapping, except string) (*Pod, mapping.Span) {
	mine := mapping.HostSpans(m)
	for _, p := range r.Sorted() {
		if p.ID == except {
			continue
		}
		if s, ok := mapping.FirstOverlap(mine, mapping.HostSpans(p.Mapping)); ok {
			return p, s
		}
	}
	return nil, mapping.Span{}
}

func (d Dir) podsFile() string { return filepath.Join(string(d), "pods.json") }

// PodDir is where the shim keeps a pod's pin.
func (d Dir) PodDir(podID string) string { return filepath.Join(string(d), "pods", podID) }

// UpdatePods runs fn on the registry under an exclusive lock held across
// processes (flock), and saves the result atomically (temporary file, fsync,
// rename) if fn succeeds. A shim killed at any point leaves either the old
// file or the new one; the lock dies with the process.
func (d Dir) UpdatePods(fn func(*Registry) error) (err error) {
	unlock, err := d.lock(unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := d.readPods()
	if err != nil {
		return err
	}
	if err := fn(r); err != nil {
		return err
	}
	if len(r.Pods) == 0 {
		// No pod, no file: a node without pods has a clean state dir.
		if err := os.Remove(d.podsFile()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteAtomic(d.podsFile(), append(data, '\n'), 0o600, -1, -1)
}

// Pods reads the registry under a shared lock.
func (d Dir) Pods() (*Registry, error) {
	unlock, err := d.lock(unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return d.readPods()
}

// lock takes a flock on the state directory itself: a lock file could not be
// removed safely, and a clean node keeps a clean state dir.
func (d Dir) lock(how int) (unlock func(), err error) {
	if err := os.MkdirAll(string(d), 0o711); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	f, err := os.Open(string(d))
	if err != nil {
		return nil, fmt.Errorf("open state dir: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, &os.PathError{Op: "flock", Path: string(d), Err: err}
	}
	return func() { f.Close() }, nil
}

func (d Dir) readPods() (*Registry, error) {
	r := &Registry{Pods: map[string]*Pod{}}
	data, err := os.ReadFile(d.podsFile())
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("pod registry %s: %w (move it away and run `userns-shim shim gc`)", d.podsFile(), err)
	}
	if r.Pods == nil {
		r.Pods = map[string]*Pod{}
	}
	return r, nil
}

// CreateLock marks container id's create as under way for as long as the
// returned file stays open (the shim holds it until it exits), so that
// `shim gc` does not take a container the runtime does not know yet for an
// orphan.
func (d Dir) CreateLock(id string) (*os.File, error) {
	if err := os.MkdirAll(d.containers(), 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	p := filepath.Join(d.containers(), id+".lock")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "flock", Path: p, Err: err}
	}
	return f, nil
}

// Creating reports whether a shim is creating container id right now.
func (d Dir) Creating(id string) bool {
	f, err := os.OpenFile(filepath.Join(d.containers(), id+".lock"), os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	return errors.Is(unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB), unix.EWOULDBLOCK)
}

// Leftovers lists files a killed shim can leave: create locks of containers
// with no record that no shim holds, and temporary files of atomic writes
// (the registry's and records'). Call it under the registry lock.
func (d Dir) Leftovers() []string {
	var out []string
	for _, dir := range []string{string(d), d.containers()} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			name := e.Name()
			switch {
			case fsutil.IsTemp(name):
				// A record's temporary file belongs to a create that may
				// still be running; the registry's is ours under the lock.
				if id, isRecord := strings.CutSuffix(strings.SplitN(name[1:], fsutil.TempInfix, 2)[0], ".json"); isRecord && dir == d.containers() && d.Creating(id) {
					continue
				}
				out = append(out, filepath.Join(dir, name))
			case dir == d.containers() && strings.HasSuffix(name, ".lock"):
				id := strings.TrimSuffix(name, ".lock")
				if !d.Has(id) && !d.Creating(id) {
					out = append(out, filepath.Join(dir, name))
				}
			}
		}
	}
	return out
}

// RemoveCreateLock removes container id's lock file.
func (d Dir) RemoveCreateLock(id string) {
	_ = os.Remove(filepath.Join(d.containers(), id+".lock"))
}
