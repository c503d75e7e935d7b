package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/fsutil"
	"github.com/userns-shim/userns-shim/pkg/idmount"
	"github.com/userns-shim/userns-shim/pkg/mapping"
	"github.com/userns-shim/userns-shim/pkg/nsexec"
	"github.com/userns-shim/userns-shim/pkg/runcargs"
	"github.com/userns-shim/userns-shim/pkg/runtime"
	"github.com/userns-shim/userns-shim/pkg/state"
)

const verbUsage = "usage: userns-shim shim inspect CONTAINER-ID | pods [--json] | gc | doctor"

// verb runs the shim's own subcommands: `userns-shim shim VERB`.
func (s *Shim) verb() (int, error) {
	args := s.Inv.CommandArgs
	if len(args) == 0 {
		return 0, errors.New(verbUsage)
	}
	switch {
	case args[0] == "inspect" && len(args) == 2:
		return 0, s.inspect(os.Stdout, args[1])
	case args[0] == "pods" && (len(args) == 1 || len(args) == 2 && args[1] == "--json"):
		return 0, s.pods(os.Stdout, len(args) == 2)
	case args[0] == "gc" && len(args) == 1:
		return 0, s.gc(os.Stdout)
	case args[0] == "doctor" && len(args) == 1:
		if ready := s.doctor(os.Stdout); !ready {
			return 1, nil
		}
		return 0, nil
	}
	return 0, errors.New(verbUsage)
}

// inspection is what `shim inspect` prints: the container's record and its pod.
type inspection struct {
	*state.Record
	Pod *podView `json:"pod,omitempty"`
}

// podView is a pod as the verbs show it.
type podView struct {
	*state.Pod
	HostRange   string `json:"hostRange"`
	UserNSInode uint64 `json:"usernsInode,omitempty"`
}

func (s *Shim) view(p *state.Pod) *podView {
	v := &podView{Pod: p}
	var spans []string
	for _, sp := range mapping.HostSpans(p.Mapping) {
		spans = append(spans, sp.String())
	}
	v.HostRange = strings.Join(spans, ",")
	for _, path := range []string{p.Pin, p.UserNS} {
		var st unix.Stat_t
		if path != "" && unix.Stat(path, &st) == nil {
			v.UserNSInode = st.Ino
			break
		}
	}
	return v
}

func (s *Shim) inspect(w io.Writer, id string) error {
	if err := runcargs.ValidateContainerID(id); err != nil {
		return err
	}
	rec, err := s.State.Load(id)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no record of container %q: the shim passed it through unchanged, or it was deleted", id)
	}
	if err != nil {
		return err
	}
	out := inspection{Record: rec}
	if reg, err := s.State.Pods(); err == nil {
		if p := reg.PodOfContainer(id); p != nil {
			out.Pod = s.view(p)
		}
	}
	return writeJSON(w, out)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (s *Shim) pods(w io.Writer, asJSON bool) error {
	reg, err := s.State.Pods()
	if err != nil {
		return err
	}
	views := []*podView{}
	for _, p := range reg.Sorted() {
		views = append(views, s.view(p))
	}
	if asJSON {
		return writeJSON(w, views)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tCRI\tPOD UID\tSOURCE\tHOST IDS\tCONTAINERS\tUSERNS")
	for _, v := range views {
		userns := v.Pin
		if userns == "" {
			userns = v.UserNS
		}
		if userns == "" {
			userns = "(made by the runtime)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", short(v.ID), orDash(v.CRI), orDash(v.UID), v.Source, v.HostRange, len(v.Containers), userns)
	}
	return tw.Flush()
}

func short(id string) string {
	if len(id) > 20 {
		return id[:20]
	}
	return id
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// gc removes what the shim keeps of containers the real runtime no longer
// knows: their records, their membership of pods, the pins and ranges of
// pods left with no container, staging mounts and directories of creates
// that were killed, and pins of pods the registry does not name. A container
// whose create is under way (its shim holds its create lock) is left alone,
// so gc is safe while pods are being created.
func (s *Shim) gc(w io.Writer) error {
	var errs []error
	report := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }

	// Which containers are gone: asked outside the registry lock, since the
	// runtime takes milliseconds per container.
	reg, err := s.State.Pods()
	if err != nil {
		return err
	}
	ids, err := s.State.IDs()
	if err != nil {
		return err
	}
	for _, p := range reg.Pods {
		for _, c := range p.Containers {
			if !slices.Contains(ids, c) {
				ids = append(ids, c)
			}
		}
	}
	var gone []string
	for _, id := range ids {
		if !s.State.Creating(id) && !s.runtimeKnows(id) {
			gone = append(gone, id)
		}
	}
	for _, id := range gone {
		if s.State.Creating(id) { // a create of the same ID began meanwhile
			continue
		}
		s.forget(id)
		report("removed container %s: the runtime does not know it", id)
	}

	// Pins and pod directories the registry does not name.
	reg, err = s.State.Pods()
	if err != nil {
		return err
	}
	entries, _ := os.ReadDir(filepath.Join(string(s.State), "pods"))
	for _, e := range entries {
		if _, ok := reg.Pods[e.Name()]; ok {
			continue
		}
		err := s.State.UpdatePods(func(r *state.Registry) error {
			if _, ok := r.Pods[e.Name()]; ok {
				return nil // recorded meanwhile
			}
			return s.dropPod(r, &state.Pod{ID: e.Name(), Pin: filepath.Join(s.State.PodDir(e.Name()), "userns")})
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		report("removed pod %s: pinned but not in the registry", e.Name())
	}

	// Lock files of creates that ended without a record, and temporary
	// files of writes that were killed (taken under the registry lock,
	// which every write of the registry holds).
	errs = append(errs, s.State.UpdatePods(func(*state.Registry) error {
		for _, f := range s.State.Leftovers() {
			if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			report("removed %s", f)
		}
		return nil
	}))

	// Staging directories of creates that did not finish.
	stagingRoot := filepath.Join(string(s.State), "staging")
	entries, _ = os.ReadDir(stagingRoot)
	for _, e := range entries {
		id := e.Name()
		if s.State.Has(id) || s.State.Creating(id) {
			continue
		}
		if err := removeStaging(filepath.Join(stagingRoot, id)); err != nil {
			errs = append(errs, err)
			continue
		}
		report("removed staging of container %s", id)
	}
	return errors.Join(errs...)
}

// runtimeKnows asks the real runtime for the container's state, with the
// --root its record names.
func (s *Shim) runtimeKnows(id string) bool {
	var args []string
	if rec, err := s.State.Load(id); err == nil && rec.Root != "" {
		args = append(args, "--root", rec.Root)
	} else if err != nil && s.Inv.Global.Root != "" {
		args = append(args, "--root", s.Inv.Global.Root)
	}
	_, err := runtime.Output(s.RuntimePath, append(args, "state", id)...)
	return err == nil
}

// removeStaging detaches every mount below dir (and on it), then removes
// the directories and placeholder files one by one: never a recursive
// removal, which could reach into a volume still mounted there. Mounts are
// found by their statx mount IDs on the way down, not in mountinfo, which
// the kernel renders in full for every read: a delete pays for one statx per
// entry, usually two.
func removeStaging(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil // the common case
	}
	// Everything below dir belongs on the mount of its parent: a path with
	// another mount ID is a mount point, since the walk clears each level
	// before it descends.
	root, err := mountID(filepath.Dir(dir))
	if err != nil {
		return err
	}
	var paths []string
	var visit func(p string) error
	visit = func(p string) error {
		if err := detachAll(p, root); err != nil {
			return err
		}
		paths = append(paths, p)
		fi, err := os.Lstat(p)
		if err != nil || !fi.IsDir() {
			return nil
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := visit(filepath.Join(p, e.Name())); err != nil {
				return err
			}
		}
		return nil
	}
	if err := visit(dir); err != nil {
		return err
	}
	for i := len(paths) - 1; i >= 0; i-- { // children before parents
		if err := os.Remove(paths[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// detachAll lazily unmounts what is mounted on p, stacked mounts too, until
// p lies on mount root. A path on another mount that is no mount point
// cannot be cleared: it is left in place and named.
func detachAll(p string, root uint64) error {
	for {
		id, err := mountID(p)
		if err != nil || id == root {
			return err
		}
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("%s is on another mount (ID %d) but is no mount point: left in place", p, id)
			}
			return &os.PathError{Op: "umount", Path: p, Err: err}
		}
	}
}

// removeWriteTemps removes from dir the temporary files of atomic writes
// (fsutil.WriteAtomic) that a killed shim left: regular files only, and
// os.Remove never follows a symlink. The record is saved before config.json
// is written, so the bundle of a write that was killed is always known.
func removeWriteTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.Type().IsRegular() && fsutil.IsTemp(e.Name()) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// mountID is the unique ID of the mount that holds path (not following a
// final symlink).
func mountID(path string) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID_UNIQUE, &stx); err != nil {
		return 0, &os.PathError{Op: "statx", Path: path, Err: err}
	}
	return stx.Mnt_id, nil
}

// doctor checks whether this node can run user-namespaced pods through the
// shim, one line per check, and reports whether it is ready.
func (s *Shim) doctor(w io.Writer) bool {
	ready := true
	check := func(name string, err error, okDetail string) {
		if err != nil {
			ready = false
			fmt.Fprintf(w, "FAIL  %-28s %v\n", name, err)
			return
		}
		fmt.Fprintf(w, "ok    %-28s %s\n", name, okDetail)
	}
	warn := func(name, detail string) { fmt.Fprintf(w, "warn  %-28s %s\n", name, detail) }

	var uts unix.Utsname
	_ = unix.Uname(&uts)
	release := unix.ByteSliceToString(uts.Release[:])
	major, minor := kernelVersion(release)
	var kerr error
	if major < 5 || major == 5 && minor < 12 {
		kerr = fmt.Errorf("Linux %s: ID-mapped mounts need 5.12 or newer", release)
	}
	check("kernel", kerr, "Linux "+release)
	if kerr == nil && (major < 6 || major == 6 && minor < 3) {
		warn("kernel tmpfs", "Linux "+release+" cannot ID-map tmpfs (secrets, tokens, emptyDir medium Memory): 6.3 or newer can")
	}

	usersErr := s.checkUserNamespaces()
	check("user namespaces", usersErr, "a user namespace with a 65536-ID mapping can be made")

	if usersErr == nil {
		for _, dir := range s.doctorDirs() {
			detail, err := s.checkIDMap(dir)
			check("idmap "+dir, err, detail)
		}
	}

	if out, err := runtime.Output(s.RuntimePath, "--version"); err != nil {
		check("runtime", err, "")
	} else {
		inf, _ := runtime.ParseVersion(out)
		check("runtime", nil, fmt.Sprintf("%s %s at %s (spec %s)", inf.Name, inf.Version, s.RuntimePath, inf.Spec))
		if _, err := runtime.Output(s.RuntimePath, "features"); err != nil {
			warn("runtime features", "the runtime has no `features` command; the shim answers for it")
		}
	}

	check("state_dir", s.checkStateDir(), s.Cfg.StateDir+" writable, registry readable")
	var sfs unix.Statfs_t
	if unix.Statfs(s.Cfg.StateDir, &sfs) == nil && sfs.Type != unix.TMPFS_MAGIC {
		warn("state_dir tmpfs", s.Cfg.StateDir+" is not on a tmpfs: records survive a reboot and staging costs more")
	}
	if ready {
		fmt.Fprintln(w, "ready: this node can run user-namespaced pods through userns-shim")
	} else {
		fmt.Fprintln(w, "not ready: see FAIL lines above")
	}
	return ready
}

func kernelVersion(release string) (major, minor int) {
	fmt.Sscanf(release, "%d.%d", &major, &minor)
	return major, minor
}

// doctorDirs are the filesystems pods' volumes and images live on, where
// they exist: the state dir (staging, usually /run), the kubelet's root
// (emptyDir, hostPath, secrets' parent), and the CRI runtimes' storage.
func (s *Shim) doctorDirs() []string {
	var out []string
	for _, d := range []string{s.Cfg.StateDir, s.Cfg.KubeletRoot, "/var/lib/containers/storage", "/var/lib/containerd", "/run"} {
		if _, err := os.Stat(d); err == nil && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		out = append(out, existingAncestor(s.Cfg.StateDir))
	}
	return out
}

func (s *Shim) checkUserNamespaces() error {
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(b)) == "0" {
		return errors.New("user.max_user_namespaces is 0: raise it (sysctl user.max_user_namespaces=63000)")
	}
	users := &nsexec.UserNSCache{}
	defer users.Close()
	_, err := users.Get(idmount.ProbeMapping)
	return err
}

func (s *Shim) checkIDMap(dir string) (string, error) {
	users := &nsexec.UserNSCache{}
	defer users.Close()
	sup, err := idmount.NewProber(users, mapping.Mapping{}).Supports(dir)
	if err != nil {
		return "", err
	}
	if !sup.OK {
		return "", fmt.Errorf("%s does not support ID-mapped mounts: %v", sup.FSType, sup.Err)
	}
	return sup.FSType + " supports ID-mapped mounts", nil
}

func (s *Shim) checkStateDir() error {
	if _, err := s.State.Staging(); err != nil {
		return err
	}
	f, err := os.CreateTemp(s.Cfg.StateDir, ".doctor-*")
	if err != nil {
		return fmt.Errorf("not writable: %w", err)
	}
	f.Close()
	os.Remove(f.Name())
	_, err = s.State.Pods()
	return err
}
