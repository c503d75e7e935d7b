package spec

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/userns-shim/userns-shim/pkg/mapping"
)

// MountChoice says whether one spec mount gets an ID mapping, with which
// mapping, or why not.
type MountChoice struct {
	Index   int             // into spec.Mounts
	Mapping mapping.Mapping // the mount's own mapping if it had one, else the container's
	Skip    string          // non-empty: left alone, for this reason
	// NoIDMap: listed in userns-shim.io/no-idmap, so left without any ID
	// mapping (DropIDMapRequest), not only without the shim's.
	NoIDMap bool
}

// IsBind reports whether m is a bind mount: its source is a path on the host.
func IsBind(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// IsRecursiveBind reports whether m binds its source with the submounts under it.
func IsRecursiveBind(m specs.Mount) bool { return slices.Contains(m.Options, "rbind") }

// IsReadOnly reports whether m is mounted read-only: its last ro or rw
// option is ro.
func IsReadOnly(m specs.Mount) bool {
	ro := false
	for _, o := range m.Options {
		switch o {
		case "ro":
			ro = true
		case "rw":
			ro = false
		}
	}
	return ro
}

// NoIDMapPaths parses the userns-shim.io/no-idmap annotation: container
// paths, comma-separated.
func NoIDMapPaths(ann map[string]string) []string {
	var out []string
	for _, p := range strings.Split(ann[mapping.AnnotationNoIDMap], ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, path.Clean(p))
		}
	}
	return out
}

// ChooseMounts decides for each mount whether it is host-backed and gets an
// ID mapping. Host-backed means a bind mount: hostPath, emptyDir, configMap,
// secret, projected token, downward API volumes, /dev/shm of a pod, the
// /etc/hosts, /etc/hostname, /etc/resolv.conf, /run/.containerenv and
// termination-log files. Filesystems the runtime creates inside the
// container (proc, sysfs, devpts, mqueue, cgroup, a tmpfs with no host
// source) are not. Device nodes are recognised later, when the source is
// opened; paths in userns-shim.io/no-idmap are left alone.
func ChooseMounts(s *specs.Spec, container mapping.Mapping) []MountChoice {
	noIDMap := NoIDMapPaths(s.Annotations)
	out := make([]MountChoice, len(s.Mounts))
	for i, m := range s.Mounts {
		c := MountChoice{Index: i, Mapping: container}
		switch {
		case !IsBind(m):
			c.Skip = "made by the runtime inside the container (" + m.Type + ")"
		case slices.Contains(noIDMap, path.Clean(m.Destination)):
			c.Skip, c.NoIDMap = "listed in "+mapping.AnnotationNoIDMap, true
		case len(m.UIDMappings) > 0 || len(m.GIDMappings) > 0:
			own := mapping.Mapping{UIDs: m.UIDMappings, GIDs: m.GIDMappings}
			if own.UIDs == nil {
				own.UIDs = own.GIDs
			}
			if own.GIDs == nil {
				own.GIDs = own.UIDs
			}
			c.Mapping = own
		}
		out[i] = c
	}
	return out
}

// idmapOptions are the mount options that ask the runtime for an ID mapping.
var idmapOptions = []string{"idmap", "ridmap"}

// StripIDMap removes the runtime's ID-mapping request from m: the shim made
// the ID-mapped mount itself, and a runtime that half-supports the option
// (crun 1.8.1 fails on it in some cases, runc 1.1.5 ignores it) must not try.
func StripIDMap(m *specs.Mount) {
	m.UIDMappings, m.GIDMappings = nil, nil
	m.Options = slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool {
		return slices.Contains(idmapOptions, strings.SplitN(o, "=", 2)[0])
	})
}

// AsksIDMap reports whether m asks for an ID-mapped mount: it carries
// uidMappings or gidMappings, or an idmap or ridmap option.
func AsksIDMap(m specs.Mount) bool {
	return len(m.UIDMappings) > 0 || len(m.GIDMappings) > 0 || slices.ContainsFunc(m.Options, func(o string) bool {
		return slices.Contains(idmapOptions, strings.SplitN(o, "=", 2)[0])
	})
}

// DropIDMapRequest removes m's request for an ID mapping, if it has one,
// and reports whether it did: a mount the pod asked to leave unmapped
// (userns-shim.io/no-idmap) must not be ID-mapped by the runtime either,
// at the CRI runtime's request.
func DropIDMapRequest(m *specs.Mount) bool {
	if !AsksIDMap(*m) {
		return false
	}
	StripIDMap(m)
	return true
}

// CheckSpecialSource refuses a mount whose source is a device node, socket
// or FIFO (what says which) when the mount asks for an ID mapping. Left
// unmapped, such a source keeps its host owner, which the container sees as
// 65534; ID-mapped with the pod's mapping, a root-owned /dev/sda or
// containerd.sock would be owned by the container's root. The shim never
// maps one, and must not let the runtime do it either.
func CheckSpecialSource(m specs.Mount, what string) error {
	if !AsksIDMap(m) {
		return nil
	}
	return fmt.Errorf("mount %s: source %s is %s and the mount asks for an ID mapping, which would give the container's root the access of its host owner: drop the mount's uidMappings, gidMappings and idmap option (it then keeps its host owner, shown as 65534 inside)",
		m.Destination, m.Source, what)
}

// RequestRuntimeIDMap asks the runtime to ID-map m with mp (idmap = "runtime").
func RequestRuntimeIDMap(m *specs.Mount, mp mapping.Mapping) {
	StripIDMap(m)
	opt := "idmap"
	if IsRecursiveBind(*m) {
		opt = "ridmap"
	}
	m.Options = append(m.Options, opt)
	m.UIDMappings, m.GIDMappings = slices.Clone(mp.UIDs), slices.Clone(mp.GIDs)
}

// KubeletVolume names the Kubernetes volume a host path belongs to, when it
// lies in <kubeletRoot>/pods/<uid>/volumes/<plugin>/<name>: plugin
// ("kubernetes.io~empty-dir") and name. ok is false for other paths.
func KubeletVolume(kubeletRoot, source string) (plugin, name string, ok bool) {
	rel, found := strings.CutPrefix(path.Clean(source), path.Clean(kubeletRoot)+"/pods/")
	if !found {
		return "", "", false
	}
	parts := strings.Split(rel, "/")
	if len(parts) < 4 || parts[1] != "volumes" {
		return "", "", false
	}
	return parts[2], parts[3], true
}

// AnnotationOriginal holds, in a config.json the shim rewrote, what it
// changed, so that a client that creates the container again from the same
// file (podman start after stop) gets the original spec back rather than
// paths to staging mounts and pins that are gone.
const AnnotationOriginal = "userns-shim.io/original"

// Original is what the shim changes in a spec, as it was.
type Original struct {
	Root        string                 `json:"root"`
	Mounts      []specs.Mount          `json:"mounts"`
	UserNS      *specs.LinuxNamespace  `json:"userns,omitempty"`
	UIDMappings []specs.LinuxIDMapping `json:"uidMappings,omitempty"`
	GIDMappings []specs.LinuxIDMapping `json:"gidMappings,omitempty"`
}

// Remember records s's original values in the AnnotationOriginal annotation.
func Remember(s *specs.Spec, o Original) error {
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[AnnotationOriginal] = string(data)
	return nil
}

// Snapshot captures what Remember keeps, before the shim changes s.
func Snapshot(s *specs.Spec) Original {
	var o Original
	if s.Root != nil {
		o.Root = s.Root.Path
	}
	for _, m := range s.Mounts {
		m.Options = slices.Clone(m.Options)
		o.Mounts = append(o.Mounts, m)
	}
	if ns := Namespace(s, specs.UserNamespace); ns != nil {
		c := *ns
		o.UserNS = &c
	}
	if s.Linux != nil {
		o.UIDMappings, o.GIDMappings = slices.Clone(s.Linux.UIDMappings), slices.Clone(s.Linux.GIDMappings)
	}
	return o
}

// Restore undoes an earlier rewrite by the shim, when s carries one: its
// AnnotationOriginal is honoured only if s still points into the shim's own
// paths (ours reports that of a path), which nobody but the shim writes
// there, so an annotation from a pod's author changes nothing. It reports
// whether it restored.
func Restore(s *specs.Spec, ours func(path string) bool) (bool, error) {
	raw, ok := s.Annotations[AnnotationOriginal]
	if !ok {
		return false, nil
	}
	delete(s.Annotations, AnnotationOriginal)
	pointsIntoShim := s.Root != nil && ours(s.Root.Path)
	for _, m := range s.Mounts {
		pointsIntoShim = pointsIntoShim || ours(m.Source)
	}
	if ns := Namespace(s, specs.UserNamespace); ns != nil && ns.Path != "" {
		pointsIntoShim = pointsIntoShim || ours(ns.Path)
	}
	if !pointsIntoShim {
		return false, nil
	}
	var o Original
	if err := json.Unmarshal([]byte(raw), &o); err != nil {
		return false, fmt.Errorf("annotation %s: %w", AnnotationOriginal, err)
	}
	if s.Root != nil {
		s.Root.Path = o.Root
	}
	s.Mounts = o.Mounts
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.UserNamespace })
	if o.UserNS != nil {
		s.Linux.Namespaces = append(s.Linux.Namespaces, *o.UserNS)
	}
	s.Linux.UIDMappings, s.Linux.GIDMappings = o.UIDMappings, o.GIDMappings
	return true, nil
}
