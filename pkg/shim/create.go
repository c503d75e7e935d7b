package shim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/config"
	"github.com/userns-shim/userns-shim/pkg/failpoint"
	"github.com/userns-shim/userns-shim/pkg/idmount"
	"github.com/userns-shim/userns-shim/pkg/mapping"
	"github.com/userns-shim/userns-shim/pkg/nsexec"
	"github.com/userns-shim/userns-shim/pkg/runtime"
	"github.com/userns-shim/userns-shim/pkg/spec"
	"github.com/userns-shim/userns-shim/pkg/state"
)

// Decision is what the shim concluded about one container's user namespace.
type Decision struct {
	Source  mapping.Source
	Mapping mapping.Mapping
	PodUID  string
}

// create handles create and run: load, decide, validate, rewrite, record,
// then hand over. Every refusal happens before the first write.
func (s *Shim) create() (_ int, retErr error) {
	id := s.Inv.ContainerID
	defer func() {
		if retErr != nil {
			retErr = fmt.Errorf("container %s: %w", id, retErr)
		}
	}()
	tm := s.newTimings()
	bundle, cfgPath, err := s.configPath()
	if err != nil {
		return 0, err
	}
	raw, st, err := spec.Read(cfgPath)
	if err != nil {
		return 0, err
	}
	// A document without "ociVersion" (required by the spec) takes the full
	// decode, which explains what is wrong with it.
	// A version newer than 1.1 may have to be lowered for the runtime
	// (fitRuntime): not on the fast path.
	if s.Cfg.Mode == config.ModePassthrough && !mayCarryMapping(raw) && !newerThan11(raw) {
		// Nothing in the document can ask for a mapping: skip the decode.
		s.Log.WithField("id", id).Debug("no mapping source in config.json; passing through")
		return 0, runtime.Exec(s.RuntimePath, s.Inv.Args)
	}
	f, err := spec.FromBytes(cfgPath, raw, st)
	if err != nil {
		return 0, err
	}
	tm.lap("decode")
	// A client that creates the container again from the file the shim
	// rewrote (podman start after stop) gets what it first wrote.
	restored, err := spec.Restore(f.Spec, s.ownsPath)
	if err != nil {
		return 0, err
	}
	if restored {
		s.Log.WithField("id", id).Debug("config.json was rewritten by an earlier create: its original values restored")
	}
	original := spec.Snapshot(f.Spec)
	pod, err := spec.PodOf(f.Spec.Annotations, id)
	if err != nil {
		return 0, err
	}
	src := s.sources()
	if s.Cfg.Mode == config.ModePassthrough {
		// Decided without the pod registry: in passthrough mode a container
		// with no mapping of its own runs as it is, whatever its pod.
		d, err := Decide(f.Spec, s.Cfg, src, nil)
		if err != nil {
			return 0, err
		}
		if d.Source == mapping.SourceNone {
			if changed, err := s.fitRuntime(f.Spec); err != nil {
				return 0, err
			} else if changed {
				if err := f.Save(f.Spec); err != nil {
					return 0, err
				}
			}
			s.Log.WithField("id", id).Debug("no mapping from any source; mode passthrough: running the container as it is")
			return 0, runtime.Exec(s.RuntimePath, s.Inv.Args)
		}
	}

	// Held until the shim exits: `shim gc` leaves this container alone
	// while the runtime does not know it yet.
	lock, err := s.State.CreateLock(id)
	if err != nil {
		return 0, err
	}
	defer lock.Close()
	users := &nsexec.UserNSCache{}
	defer users.Close()
	d, p, err := s.joinPod(f.Spec, pod, src, users, previousHostRoot(f.Spec, bundle))
	if err != nil {
		s.State.RemoveCreateLock(id)
		return 0, err
	}
	failpoint.Hit(failpoint.Allocated)
	tm.lap("decide")
	log := s.Log.WithFields(logrus.Fields{"id": id, "pod": pod.ID, "source": d.Source})
	log.WithFields(logrus.Fields{"uidMappings": mapping.String(d.Mapping.UIDs), "gidMappings": mapping.String(d.Mapping.GIDs), "userns": p.Pin + p.UserNS}).
		Debug("user namespace decided")

	rec := &state.Record{
		ID: id, Bundle: bundle, Root: s.Inv.Global.Root, Runtime: s.RuntimePath, PodID: pod.ID,
		PodUID: d.PodUID, Source: d.Source, Mapping: d.Mapping, Created: time.Now().UTC(),
	}
	stagingRoot, err := s.State.Staging()
	if err != nil {
		s.forget(id)
		return 0, err
	}
	staging := &Staging{dir: filepath.Join(stagingRoot, id)}
	if err := s.prepare(f, bundle, d, p, rec, users, staging, original, tm); err != nil {
		s.forget(id)
		return 0, err
	}
	code, err := s.handOver(staging, tm)
	// The container no longer exists after a failed create or run, or after
	// a foreground run without --keep returned: what the shim keeps of it goes.
	gone := err != nil || code != 0 || (s.Inv.Command == "run" && !s.Inv.Detach && !s.Inv.Keep)
	if gone {
		s.forget(id)
	} else if kerr := staging.keepRootfsPath(f.Spec.Root.Path); kerr != nil {
		log.WithError(kerr).Warn("keep the rootfs path for exec")
	}
	tm.log(log, "create timings")
	return code, err
}

// prepare makes the ID-mapped mounts and the rootfs, records the decision
// and rewrites config.json. On error the staging mounts are gone; the caller
// removes the rest (forget).
func (s *Shim) prepare(f *spec.File, bundle string, d Decision, p *state.Pod, rec *state.Record, users *nsexec.UserNSCache, staging *Staging, original spec.Original, tm *timings) (err error) {
	defer func() {
		if err != nil {
			err = errors.Join(err, staging.Release())
		}
	}()
	if err := s.checkRuncJoins(f.Spec, p.Pin); err != nil {
		return err
	}
	if rec.Mounts, err = s.idmapMounts(f.Spec, d, users, staging); err != nil {
		return err
	}
	if rec.Rootfs, err = s.idmapRootfs(f.Spec, bundle, d, users, staging); err != nil {
		return err
	}
	tm.lap("mounts")
	fitted, err := s.fitRuntime(f.Spec)
	if err != nil {
		return err
	}
	if err := s.State.Save(rec); err != nil {
		return err
	}
	failpoint.Hit(failpoint.RecordSaved)
	// The shim's user namespace is the pod's pin, joined by path; a user
	// namespace joined by path also gets its mappings written out, since runc
	// refuses one without them. A complete spec stays as it is.
	addUserNS := d.Source != mapping.SourceSpec
	if addUserNS || fitted || changedMounts(rec.Mounts) || rec.Rootfs != nil && rec.Rootfs.Treatment == TreatShim {
		if addUserNS {
			spec.SetUserNamespace(f.Spec, d.Mapping)
			if p.Pin != "" {
				spec.Namespace(f.Spec, specs.UserNamespace).Path = p.Pin
			}
		}
		if err := spec.Remember(f.Spec, original); err != nil {
			return err
		}
		if err := f.Save(f.Spec); err != nil {
			return err
		}
		failpoint.Hit(failpoint.ConfigSaved)
	}
	tm.lap("write")
	return nil
}

// previousHostRoot returns a host ID that an earlier run of the container
// wrote its rootfs overlay's upper layer as (podman restarts a stopped
// container by creating it again): the owner of the upper layer or, since
// containers/storage gives that back to root when it mounts the layer again,
// of the first entry in it that is not root's. 0 when there is none.
func previousHostRoot(sp *specs.Spec, bundle string) uint32 {
	if sp.Root == nil || sp.Root.Path == "" {
		return 0
	}
	root := sp.Root.Path
	if !filepath.IsAbs(root) {
		root = filepath.Join(bundle, root)
	}
	upper, ok := idmount.OverlayUpper(root)
	if !ok {
		return 0
	}
	var st unix.Stat_t
	if unix.Stat(upper, &st) != nil {
		return 0
	}
	if st.Uid != 0 {
		return st.Uid
	}
	entries, _ := os.ReadDir(upper)
	for _, e := range entries {
		if unix.Lstat(filepath.Join(upper, e.Name()), &st) == nil && st.Uid != 0 {
			return st.Uid
		}
	}
	return 0
}

// fitRuntime adapts a config to what Debian's crun 1.8.1 can run: it lowers
// the ociVersion for a runtime that refuses newer ones, when nothing in the
// config needs the newer version (spec.FitVersion), and drops a pids limit
// of -1 that crun before 1.9 cannot apply on cgroup v1.
// Only crun checks the version: before 1.9 (no `features` command) it takes
// 1.0.x and 1.1.x, and containerd 2.4 writes 1.3.0, CRI-O 1.34 1.2.1. runc
// does not check it. Which runtime it is comes from asking it, once per
// binary (cached in the state dir), not from its file name: wrappers are
// common.
func (s *Shim) fitRuntime(sp *specs.Spec) (bool, error) {
	have, err := spec.ParseVersion(sp.Version)
	newer := err == nil && (spec.Version{Major: 1, Minor: 1}).Less(have)
	unlimitedPids := sp.Linux != nil && sp.Linux.Resources != nil && sp.Linux.Resources.Pids != nil && sp.Linux.Resources.Pids.Limit != nil && *sp.Linux.Resources.Pids.Limit == -1
	if !newer && !unlimitedPids {
		return false, nil
	}
	facts := s.runtimeFacts()
	if facts.Name != "crun" {
		return false, nil
	}
	changed := false
	if unlimitedPids && cgroupV1() && !facts.HasFeat {
		// crun before 1.9 writes -1 to pids.max, which cgroup v1 refuses
		// (EINVAL); no limit is what -1 means, and a new cgroup has none.
		sp.Linux.Resources.Pids = nil
		changed = true
	}
	if !newer {
		return changed, nil
	}
	max, err := spec.ParseVersion(facts.OCIMax)
	if err != nil {
		return false, nil
	}
	lowered, err := spec.FitVersion(sp, max)
	if lowered {
		s.Log.WithField("ociVersion", sp.Version).Debug("ociVersion lowered for the runtime")
	}
	return changed || lowered, err
}

// cgroupV1 reports whether the pids controller is a cgroup v1 one here (v1
// or the hybrid layout), where "max" must be written as such.
func cgroupV1() bool {
	var st unix.Statfs_t
	return unix.Statfs("/sys/fs/cgroup/pids", &st) == nil && st.Type == unix.CGROUP_SUPER_MAGIC
}

// runtimeFacts returns what the real runtime is, from the state dir's cache
// or by asking it (`--version`, `features`).
func (s *Shim) runtimeFacts() state.RuntimeFacts {
	if f, ok := s.State.CachedRuntime(s.RuntimePath); ok {
		return f
	}
	var f state.RuntimeFacts
	out, err := runtime.Output(s.RuntimePath, "--version")
	if err != nil {
		return f
	}
	inf, _ := runtime.ParseVersion(out)
	f.Name, f.Version, f.OCIMax = inf.Name, inf.Version, inf.Spec
	if inf.Name == "crun" {
		f.OCIMax = "1.1.0" // crun before 1.9 says spec 1.0.0 but takes 1.1.x too
	}
	if out, err := runtime.Output(s.RuntimePath, "features"); err == nil {
		var feat struct {
			Max string `json:"ociVersionMax"`
		}
		if json.Unmarshal(out, &feat) == nil && feat.Max != "" {
			f.OCIMax, f.HasFeat = feat.Max, true
		}
	}
	if err := s.State.CacheRuntime(s.RuntimePath, f); err != nil {
		s.Log.WithError(err).Debug("cache runtime facts")
	}
	return f
}

// newerThan11 is a cheap scan: does raw's ociVersion say 1.2 or later?
func newerThan11(raw []byte) bool {
	i := bytes.Index(raw, []byte(`"ociVersion"`))
	if i < 0 {
		return true // no version: the full decode explains what is wrong
	}
	rest := bytes.TrimLeft(raw[i+len(`"ociVersion"`):], " \t\r\n:")
	if len(rest) == 0 || rest[0] != '"' {
		return true
	}
	end := bytes.IndexByte(rest[1:], '"')
	if end < 0 {
		return true
	}
	v, err := spec.ParseVersion(string(rest[1 : 1+end]))
	return err != nil || (spec.Version{Major: 1, Minor: 1}).Less(v)
}

// ownsPath reports whether path lies in the shim's state dir: only the shim
// points a spec there (staging mounts, pins).
func (s *Shim) ownsPath(path string) bool {
	return strings.HasPrefix(filepath.Clean(path), filepath.Clean(s.Cfg.StateDir)+"/")
}

// changedMounts reports whether the shim changed any mount of the spec.
func changedMounts(recs []state.MountRecord) bool {
	for _, r := range recs {
		if r.Treatment != TreatSkipped {
			return true
		}
	}
	return false
}

// handOver runs the runtime's create or run and detaches the staging mounts
// as soon as the container exists: when create returns, or, for a run, once
// the runtime reports the container (its process may run for long).
func (s *Shim) handOver(st *Staging, tm *timings) (int, error) {
	defer tm.lap("release")
	if !st.used() {
		defer tm.lap("runtime")
		return runtime.Run(s.RuntimePath, s.Inv.Args)
	}
	var stop chan struct{}
	done := make(chan struct{})
	if s.Inv.Command == "run" {
		stop = make(chan struct{})
		go func() {
			defer close(done)
			s.waitCreated(stop)
			s.release(st)
		}()
	} else {
		close(done)
	}
	code, err := runtime.Run(s.RuntimePath, s.Inv.Args)
	tm.lap("runtime")
	if stop != nil {
		close(stop)
	}
	<-done
	s.release(st)
	return code, err
}

func (s *Shim) release(st *Staging) {
	if err := st.Release(); err != nil {
		s.Log.WithError(err).Error("detach staging mounts")
	}
}

// waitCreated polls the runtime's state of the container until it exists
// past "creating", or stop closes.
func (s *Shim) waitCreated(stop <-chan struct{}) {
	args := append(append([]string{}, s.Inv.GlobalArgs()...), "state", s.Inv.ContainerID)
	delay := time.Millisecond
	for {
		if out, err := runtime.Output(s.RuntimePath, args...); err == nil && !bytes.Contains(out, []byte(`"creating"`)) {
			return
		}
		select {
		case <-stop:
			return
		case <-time.After(delay):
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

// configPath returns the bundle and the config.json the runtime will read,
// after checking the bundle, before anything is written.
func (s *Shim) configPath() (bundle, cfgPath string, err error) {
	if bundle, err = filepath.Abs(s.Inv.Bundle); err != nil { // "" is the current directory
		return "", "", fmt.Errorf("bundle %q: %w", s.Inv.Bundle, err)
	}
	st, err := os.Stat(bundle)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", "", fmt.Errorf("bundle %s does not exist", bundle)
	case err != nil:
		return "", "", fmt.Errorf("bundle: %w", err)
	case !st.IsDir():
		return "", "", fmt.Errorf("bundle %s is not a directory", bundle)
	}
	name := s.Inv.ConfigFile
	if name == "" {
		name = "config.json"
	}
	if !filepath.IsAbs(name) {
		name = filepath.Join(bundle, name)
	}
	return bundle, name, nil
}

// mayCarryMapping is a cheap byte scan that is true whenever any mapping
// source could apply to the document: a user namespace or mappings, the
// shim's annotations, or a pod UID that could lead to a kubelet record. A
// JSON escape (\u) could hide any of these, so it also takes the full path.
// Object keys match without case in encoding/json, which runc uses:
// "uidmappings" or "UIDMAPPINGS" is a mapping too, and so is "uidMappingſ"
// (U+017F folds to s), hence the search for "mapping" in any case.
func mayCarryMapping(raw []byte) bool {
	if hasUserValue(raw) || bytes.Contains(bytes.ToLower(raw), []byte("mapping")) {
		return true
	}
	for _, k := range [][]byte{
		[]byte("userns-shim.io/"), []byte(`\u`),
		[]byte(spec.AnnotationPodUID), []byte(spec.AnnotationContainerdPodUID),
	} {
		if bytes.Contains(raw, k) {
			return true
		}
	}
	return false
}

// Sources are the mapping sources that need the host: kept apart from
// Decide so that Decide stays a pure function with table tests.
type Sources struct {
	// KubeletRecord returns the kubelet's userns file for a pod and its
	// path, or fs.ErrNotExist.
	KubeletRecord func(podUID string) ([]byte, string, error)
	// JoinedMapping returns the mapping of a user namespace joined by path.
	JoinedMapping func(path string) (mapping.Mapping, error)
	// IsHost tells whether a namespace path is the host's.
	IsHost spec.HostNamespaceChecker
}

func (s *Shim) sources() Sources {
	return Sources{
		KubeletRecord: func(uid string) ([]byte, string, error) {
			p := filepath.Join(s.Cfg.KubeletRoot, "pods", uid, "userns")
			data, err := os.ReadFile(p)
			return data, p, err
		},
		JoinedMapping: joinedMapping,
		IsHost:        nsexec.IsHostNamespace,
	}
}

func joinedMapping(path string) (mapping.Mapping, error) {
	proc := nsexec.ProcOfUserNS(path)
	if proc == "" {
		return mapping.Mapping{}, fmt.Errorf("user namespace %s is joined by path but config.json has no uidMappings/gidMappings, and it is not a /proc/<pid>/ns/user path whose maps could be read", path)
	}
	var m mapping.Mapping
	for _, x := range []struct {
		file string
		dst  *[]specs.LinuxIDMapping
	}{{"uid_map", &m.UIDs}, {"gid_map", &m.GIDs}} {
		data, err := os.ReadFile(filepath.Join(proc, x.file))
		if err != nil {
			return m, err
		}
		if *x.dst, err = mapping.ParseProcMap(data); err != nil {
			return m, fmt.Errorf("%s/%s: %w", proc, x.file, err)
		}
	}
	return m, nil
}

// Decide resolves a container's mapping from the first source that applies
// (config.json, mounts, annotations, the kubelet's record, its pod's mapping
// when pod is the registry's entry of an existing pod, the mode), then
// validates it. In mode allocate a container of a new pod gets a mapping
// whose host range is a placeholder (the pool's start): the allocator
// replaces it, and the container side, which the checks look at, stays.
func Decide(sp *specs.Spec, cfg config.Config, src Sources, pod *state.Pod) (Decision, error) {
	d, err := resolve(sp, src)
	if err != nil {
		return d, err
	}
	if d.Source == mapping.SourceNone {
		switch {
		case pod != nil:
			d.Source, d.Mapping = mapping.SourcePod, pod.Mapping
		case cfg.Mode == config.ModeRequire:
			return d, errors.New("mode is require and no mapping was found: config.json has no user namespace, no mount carries uidMappings, there is no " +
				mapping.AnnotationUIDMappings + " annotation and no kubelet record for the pod")
		case cfg.Mode == config.ModeAllocate:
			r := []specs.LinuxIDMapping{{ContainerID: 0, HostID: cfg.Allocate.Start, Size: cfg.Allocate.IDsPerPod}}
			d.Source, d.Mapping = mapping.SourceAllocator, mapping.Mapping{UIDs: r, GIDs: slices.Clone(r)}
		default:
			return d, nil
		}
	}
	return d, validate(sp, d, cfg, src)
}

func resolve(sp *specs.Spec, src Sources) (Decision, error) {
	var d Decision
	var err error
	if d.PodUID, err = spec.PodUID(sp.Annotations); err != nil {
		return d, err
	}
	if ns := spec.Namespace(sp, specs.UserNamespace); ns != nil {
		if m := spec.SpecMapping(sp); !m.Empty() {
			d.Source, d.Mapping = mapping.SourceSpec, m
			return d, nil
		}
		if ns.Path != "" {
			if host, err := src.IsHost(specs.UserNamespace, ns.Path); err == nil && host {
				return d, fmt.Errorf("user namespace path %s is the host's user namespace", ns.Path)
			}
			m, err := src.JoinedMapping(ns.Path)
			if err != nil {
				return d, err
			}
			d.Source, d.Mapping = mapping.SourceJoined, m
			return d, nil
		}
	}
	if m, found, err := mapping.FromMounts(sp.Mounts); found || err != nil {
		d.Source, d.Mapping = mapping.SourceMounts, m
		return d, err
	}
	if m, found, err := mapping.FromAnnotations(sp.Annotations); found || err != nil {
		d.Source, d.Mapping = mapping.SourceAnnotation, m
		return d, err
	}
	if d.PodUID != "" && src.KubeletRecord != nil {
		data, path, err := src.KubeletRecord(d.PodUID)
		switch {
		case err == nil:
			d.Source = mapping.SourceKubelet
			if d.Mapping, err = mapping.ParseKubeletRecord(data); err != nil {
				return d, fmt.Errorf("pod %s: %s: %w", d.PodUID, path, err)
			}
			return d, nil
		case !errors.Is(err, fs.ErrNotExist):
			return d, fmt.Errorf("kubelet record of pod %s: %w", d.PodUID, err)
		}
	}
	d.Source = mapping.SourceNone
	return d, nil
}

func validate(sp *specs.Spec, d Decision, cfg config.Config, src Sources) error {
	rules := rulesOf(cfg)
	var errs []error
	if err := mapping.Validate(d.Mapping, rules); err != nil {
		errs = append(errs, fmt.Errorf("%s mapping refused: %w", d.Source, err))
	}
	if sp.Process != nil {
		if err := mapping.ValidateProcessUser(sp.Process.User, d.Mapping); err != nil {
			errs = append(errs, err)
		}
	}
	if ns := spec.Namespace(sp, specs.UserNamespace); ns != nil && ns.Path != "" {
		if host, err := src.IsHost(specs.UserNamespace, ns.Path); err != nil {
			errs = append(errs, fmt.Errorf("user namespace path: %w", err))
		} else if host {
			errs = append(errs, fmt.Errorf("user namespace path %s is the host's user namespace", ns.Path))
		}
	}
	if err := spec.CheckHostNamespaces(sp, src.IsHost); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// hasUserValue reports whether "user" occurs as a JSON value (a namespace
// type), not only as a key such as process.user, which every spec has.
func hasUserValue(raw []byte) bool {
	k := []byte(`"user"`)
	for i := 0; ; {
		j := bytes.Index(raw[i:], k)
		if j < 0 {
			return false
		}
		i += j + len(k)
		rest := bytes.TrimLeft(raw[i:], " \t\r\n")
		if len(rest) == 0 || rest[0] != ':' {
			return true
		}
	}
}
