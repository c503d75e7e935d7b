// Package mapping holds ID mapping types, their parsers (annotations, the
// kubelet's record) and the rules every mapping must pass. Nothing here makes
// a syscall, so all of it is tested without root.
package mapping

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Source names where a container's mapping came from, in order of precedence.
type Source string

const (
	SourceSpec       Source = "spec"       // config.json already had a user namespace and mappings
	SourceJoined     Source = "joined"     // a user namespace joined by /proc/<pid>/ns/user, its maps read there
	SourceMounts     Source = "mounts"     // mounts carried uidMappings/gidMappings
	SourceAnnotation Source = "annotation" // userns-shim.io/uid-mappings, gid-mappings
	SourceKubelet    Source = "kubelet"    // <kubelet_root>/pods/<uid>/userns
	SourceAllocator  Source = "allocator"  // the shim's own pool
	SourcePod        Source = "pod"        // the pod's mapping, set by an earlier container of the pod
	SourceNone       Source = "none"       // no mapping: the container runs as it is
)

// Mapping is a container's user-namespace mapping.
type Mapping struct {
	UIDs []specs.LinuxIDMapping `json:"uidMappings"`
	GIDs []specs.LinuxIDMapping `json:"gidMappings"`
}

// Empty reports whether the mapping maps nothing.
func (m Mapping) Empty() bool { return len(m.UIDs) == 0 && len(m.GIDs) == 0 }

// Equal reports whether two mappings are the same, range order ignored.
func (m Mapping) Equal(o Mapping) bool {
	return rangesEqual(m.UIDs, o.UIDs) && rangesEqual(m.GIDs, o.GIDs)
}

func rangesEqual(a, b []specs.LinuxIDMapping) bool {
	return slices.Equal(sorted(a), sorted(b))
}

// sorted orders by every field: ranges with the same container ID (an
// invalid mapping, but Equal still compares them) must not keep their order.
func sorted(r []specs.LinuxIDMapping) []specs.LinuxIDMapping {
	out := slices.Clone(r)
	slices.SortFunc(out, func(x, y specs.LinuxIDMapping) int {
		return cmp.Or(cmp.Compare(x.ContainerID, y.ContainerID), cmp.Compare(x.HostID, y.HostID), cmp.Compare(x.Size, y.Size))
	})
	return out
}

// String renders ranges the way the annotations are written: c:h:n[,c:h:n].
func String(r []specs.LinuxIDMapping) string {
	parts := make([]string, len(r))
	for i, m := range r {
		parts[i] = fmt.Sprintf("%d:%d:%d", m.ContainerID, m.HostID, m.Size)
	}
	return strings.Join(parts, ",")
}

// maxRanges bounds what a hostile annotation can make the shim do; the kernel
// itself accepts at most 340 lines in uid_map.
const maxRanges = 340

// ParseRanges parses "containerID:hostID:size[,containerID:hostID:size...]".
func ParseRanges(s string) ([]specs.LinuxIDMapping, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty mapping")
	}
	fields := strings.Split(s, ",")
	if len(fields) > maxRanges {
		return nil, fmt.Errorf("%d ranges: at most %d allowed", len(fields), maxRanges)
	}
	out := make([]specs.LinuxIDMapping, 0, len(fields))
	for _, f := range fields {
		parts := strings.Split(strings.TrimSpace(f), ":")
		if len(parts) != 3 {
			return nil, fmt.Errorf("range %q: want containerID:hostID:size", f)
		}
		var v [3]uint32
		for i, p := range parts {
			n, err := strconv.ParseUint(p, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("range %q: %q is not a number from 0 to 4294967295", f, p)
			}
			v[i] = uint32(n)
		}
		out = append(out, specs.LinuxIDMapping{ContainerID: v[0], HostID: v[1], Size: v[2]})
	}
	return out, nil
}

// FromAnnotations reads the userns-shim.io mapping annotations. found is false
// when neither is present. One of the two alone serves for both, since uid and
// gid mappings must be equal anyway.
func FromAnnotations(ann map[string]string) (m Mapping, found bool, err error) {
	u, hasU := ann[AnnotationUIDMappings]
	g, hasG := ann[AnnotationGIDMappings]
	if !hasU && !hasG {
		return Mapping{}, false, nil
	}
	if hasU {
		if m.UIDs, err = ParseRanges(u); err != nil {
			return Mapping{}, true, fmt.Errorf("annotation %s=%q: %w", AnnotationUIDMappings, u, err)
		}
	}
	if hasG {
		if m.GIDs, err = ParseRanges(g); err != nil {
			return Mapping{}, true, fmt.Errorf("annotation %s=%q: %w", AnnotationGIDMappings, g, err)
		}
	}
	if !hasU {
		m.UIDs = slices.Clone(m.GIDs)
	}
	if !hasG {
		m.GIDs = slices.Clone(m.UIDs)
	}
	return m, true, nil
}

// Annotations the shim reads.
const (
	AnnotationUIDMappings = "userns-shim.io/uid-mappings"
	AnnotationGIDMappings = "userns-shim.io/gid-mappings"
	AnnotationNoIDMap     = "userns-shim.io/no-idmap"
)

// kubeletRecord is the file the kubelet's user-namespace manager writes as
// <kubelet_root>/pods/<pod uid>/userns (pkg/kubelet/userns/userns_manager.go).
type kubeletRecord struct {
	UIDMappings []kubeletRange `json:"uidMappings"`
	GIDMappings []kubeletRange `json:"gidMappings"`
}

type kubeletRange struct {
	HostID      uint32 `json:"hostId"`
	ContainerID uint32 `json:"containerId"`
	Length      uint32 `json:"length"`
}

// ParseKubeletRecord parses the kubelet's userns file.
func ParseKubeletRecord(data []byte) (Mapping, error) {
	var rec kubeletRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return Mapping{}, fmt.Errorf("kubelet userns record: %w", err)
	}
	if len(rec.UIDMappings) == 0 || len(rec.GIDMappings) == 0 {
		return Mapping{}, errors.New("kubelet userns record: no uidMappings or gidMappings")
	}
	conv := func(in []kubeletRange) []specs.LinuxIDMapping {
		out := make([]specs.LinuxIDMapping, len(in))
		for i, r := range in {
			out[i] = specs.LinuxIDMapping{ContainerID: r.ContainerID, HostID: r.HostID, Size: r.Length}
		}
		return out
	}
	return Mapping{UIDs: conv(rec.UIDMappings), GIDs: conv(rec.GIDMappings)}, nil
}

// FromMounts returns the mapping the spec's mounts carry (source b). All
// mounts that carry one must carry the same one.
func FromMounts(mounts []specs.Mount) (m Mapping, found bool, err error) {
	var first string
	for _, mnt := range mounts {
		if len(mnt.UIDMappings) == 0 && len(mnt.GIDMappings) == 0 {
			continue
		}
		cur := Mapping{UIDs: mnt.UIDMappings, GIDs: mnt.GIDMappings}
		if cur.UIDs == nil {
			cur.UIDs = cur.GIDs
		}
		if cur.GIDs == nil {
			cur.GIDs = cur.UIDs
		}
		if !found {
			m, found, first = cur, true, mnt.Destination
			continue
		}
		if !m.Equal(cur) {
			return Mapping{}, true, fmt.Errorf("mounts %s and %s carry different ID mappings (%s and %s): cannot tell which is the container's",
				first, mnt.Destination, String(m.UIDs), String(cur.UIDs))
		}
	}
	return m, found, nil
}

// ParseProcMap parses /proc/<pid>/uid_map or gid_map: one "inside outside
// count" line per range.
func ParseProcMap(data []byte) ([]specs.LinuxIDMapping, error) {
	var out []specs.LinuxIDMapping
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("id map line %q: want 3 fields", line)
		}
		r, err := ParseRanges(f[0] + ":" + f[1] + ":" + f[2])
		if err != nil {
			return nil, err
		}
		out = append(out, r...)
	}
	return out, nil
}
