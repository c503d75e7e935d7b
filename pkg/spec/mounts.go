package spec

import (
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
}

// IsBind reports whether m is a bind mount: its source is a path on the host.
func IsBind(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// IsRecursiveBind reports whether m binds its source with the submounts under it.
func IsRecursiveBind(m specs.Mount) bool { return slices.Contains(m.Options, "rbind") }

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
			c.Skip = "listed in " + mapping.AnnotationNoIDMap
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
