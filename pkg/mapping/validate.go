package mapping

import (
	"fmt"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Rules are the limits a mapping must respect. The zero value is not safe:
// start from DefaultRules.
type Rules struct {
	MinHostID    uint32 // host IDs below this belong to the host
	SizeMultiple uint32 // every range's size is a multiple of this
}

// DefaultRules: the host keeps 0-65535, pods get whole 65536-ID blocks.
func DefaultRules() Rules { return Rules{MinHostID: 65536, SizeMultiple: 65536} }

// idLimit is one past the last valid ID: 4294967295 is (uid_t)-1, which the
// kernel refuses in any uid_map range.
const idLimit = uint64(1)<<32 - 1

// ValidationError lists every rule a mapping breaks, so one refusal tells the
// user everything to fix.
type ValidationError struct{ Problems []string }

func (e *ValidationError) Error() string { return strings.Join(e.Problems, "; ") }

// Validate checks a mapping against the rules: container ID 0 mapped, sizes
// multiples of SizeMultiple, host IDs at or above MinHostID, no range
// reaching 2^32-1 or past it, no overlaps, and uid mapping equal to gid mapping.
func Validate(m Mapping, r Rules) error {
	var p []string
	p = append(p, checkRanges("uid", m.UIDs, r)...)
	p = append(p, checkRanges("gid", m.GIDs, r)...)
	if len(m.UIDs) > 0 && len(m.GIDs) > 0 && !rangesEqual(m.UIDs, m.GIDs) {
		p = append(p, fmt.Sprintf("uid mapping %s differs from gid mapping %s: they must be equal", String(m.UIDs), String(m.GIDs)))
	}
	if len(p) > 0 {
		return &ValidationError{Problems: p}
	}
	return nil
}

func checkRanges(kind string, rs []specs.LinuxIDMapping, r Rules) []string {
	if len(rs) == 0 {
		return []string{fmt.Sprintf("no %s mapping", kind)}
	}
	var p []string
	rootMapped := false
	for _, m := range rs {
		desc := fmt.Sprintf("%s range %d:%d:%d", kind, m.ContainerID, m.HostID, m.Size)
		switch {
		case m.Size == 0:
			p = append(p, desc+": size 0")
			continue
		case m.Size%r.SizeMultiple != 0:
			p = append(p, fmt.Sprintf("%s: size %d is not a multiple of %d", desc, m.Size, r.SizeMultiple))
		}
		if m.HostID < r.MinHostID {
			p = append(p, fmt.Sprintf("%s: host IDs below %d belong to the host", desc, r.MinHostID))
		}
		if uint64(m.HostID)+uint64(m.Size) > idLimit {
			p = append(p, desc+": host range reaches past 4294967294, the last valid ID")
		}
		if uint64(m.ContainerID)+uint64(m.Size) > idLimit {
			p = append(p, desc+": container range reaches past 4294967294, the last valid ID")
		}
		if m.ContainerID == 0 {
			rootMapped = true
		}
	}
	if !rootMapped {
		p = append(p, fmt.Sprintf("%s mapping %s leaves container ID 0 unmapped", kind, String(rs)))
	}
	p = append(p, overlaps(kind, "host", rs, func(m specs.LinuxIDMapping) uint32 { return m.HostID })...)
	p = append(p, overlaps(kind, "container", rs, func(m specs.LinuxIDMapping) uint32 { return m.ContainerID })...)
	return p
}

func overlaps(kind, side string, rs []specs.LinuxIDMapping, start func(specs.LinuxIDMapping) uint32) []string {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b specs.LinuxIDMapping) int { return int(int64(start(a)) - int64(start(b))) })
	var p []string
	for i := 1; i < len(s); i++ {
		if uint64(start(s[i-1]))+uint64(s[i-1].Size) > uint64(start(s[i])) {
			p = append(p, fmt.Sprintf("%s ranges %s and %s overlap on the %s side", kind, String(s[i-1:i]), String(s[i:i+1]), side))
		}
	}
	return p
}

// Contains reports whether container ID id is inside one of the ranges.
func Contains(rs []specs.LinuxIDMapping, id uint32) bool {
	for _, m := range rs {
		if id >= m.ContainerID && uint64(id) < uint64(m.ContainerID)+uint64(m.Size) {
			return true
		}
	}
	return false
}

// HostOf returns the host ID that container ID id maps to.
func HostOf(rs []specs.LinuxIDMapping, id uint32) (uint32, bool) {
	for _, m := range rs {
		if id >= m.ContainerID && uint64(id) < uint64(m.ContainerID)+uint64(m.Size) {
			return m.HostID + (id - m.ContainerID), true
		}
	}
	return 0, false
}

// ValidateProcessUser checks that the process's uid, gid and additional gids
// exist inside the container's mapping: an unmapped ID would run as overflow.
func ValidateProcessUser(u specs.User, m Mapping) error {
	var p []string
	if !Contains(m.UIDs, u.UID) {
		p = append(p, fmt.Sprintf("process.user.uid %d is outside the uid mapping %s", u.UID, String(m.UIDs)))
	}
	if !Contains(m.GIDs, u.GID) {
		p = append(p, fmt.Sprintf("process.user.gid %d is outside the gid mapping %s", u.GID, String(m.GIDs)))
	}
	for _, g := range u.AdditionalGids {
		if !Contains(m.GIDs, g) {
			p = append(p, fmt.Sprintf("process.user.additionalGids %d is outside the gid mapping %s", g, String(m.GIDs)))
		}
	}
	if len(p) > 0 {
		return &ValidationError{Problems: p}
	}
	return nil
}
