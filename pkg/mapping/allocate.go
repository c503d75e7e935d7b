package mapping

import (
	"errors"
	"fmt"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Span is a half-open range of host IDs [Lo, Hi).
type Span struct{ Lo, Hi uint64 }

// Overlaps reports whether two spans share an ID.
func (s Span) Overlaps(o Span) bool { return s.Lo < o.Hi && o.Lo < s.Hi }

func (s Span) String() string { return fmt.Sprintf("%d-%d", s.Lo, s.Hi-1) }

// HostSpans returns the host IDs a mapping uses, uid and gid ranges merged.
func HostSpans(m Mapping) []Span {
	var out []Span
	for _, rs := range [][]specs.LinuxIDMapping{m.UIDs, m.GIDs} {
		for _, r := range rs {
			s := Span{uint64(r.HostID), uint64(r.HostID) + uint64(r.Size)}
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// FirstOverlap returns the first span of a that overlaps one of b.
func FirstOverlap(a, b []Span) (Span, bool) {
	for _, x := range a {
		for _, y := range b {
			if x.Overlaps(y) {
				return x, true
			}
		}
	}
	return Span{}, false
}

// Pool is the allocator's pool: Length host IDs from Start, handed out in
// blocks of Size, aligned to Start.
type Pool struct{ Start, Length, Size uint32 }

// ErrPreferredTaken: the block Allocate was asked to prefer is in use.
var ErrPreferredTaken = errors.New("the block is in use")

// Allocate returns the lowest block of the pool that overlaps none of used,
// as the mapping of one pod (container 0 at the block's first ID). Lowest
// first keeps the pool compact and makes a freed block the next one given.
// When prefer is an ID of the pool (a restarted container's files belong to
// it), its block is given or, if used, ErrPreferredTaken.
func (p Pool) Allocate(used []Span, prefer uint32) (Mapping, error) {
	if p.Size == 0 {
		return Mapping{}, fmt.Errorf("allocate: ids_per_pod is 0")
	}
	if prefer >= p.Start && uint64(prefer) < uint64(p.Start)+uint64(p.Length)/uint64(p.Size)*uint64(p.Size) {
		prefer = p.Start + (prefer-p.Start)/p.Size*p.Size
		want := Span{uint64(prefer), uint64(prefer) + uint64(p.Size)}
		if _, taken := FirstOverlap([]Span{want}, used); taken {
			return Mapping{}, fmt.Errorf("host IDs %s: %w", want, ErrPreferredTaken)
		}
		r := []specs.LinuxIDMapping{{ContainerID: 0, HostID: prefer, Size: p.Size}}
		return Mapping{UIDs: r, GIDs: slices.Clone(r)}, nil
	}
	end := uint64(p.Start) + uint64(p.Length)
	sorted := slices.Clone(used)
	slices.SortFunc(sorted, func(a, b Span) int {
		switch {
		case a.Lo < b.Lo:
			return -1
		case a.Lo > b.Lo:
			return 1
		}
		return 0
	})
	lo := uint64(p.Start)
	for _, u := range sorted {
		if lo+uint64(p.Size) > end {
			break
		}
		if !(Span{lo, lo + uint64(p.Size)}).Overlaps(u) {
			if u.Lo >= lo+uint64(p.Size) {
				break // the gap before u holds a block
			}
			continue // u lies before lo
		}
		// Skip past u, to the next block boundary.
		lo = uint64(p.Start) + (u.Hi-uint64(p.Start)+uint64(p.Size)-1)/uint64(p.Size)*uint64(p.Size)
	}
	if lo+uint64(p.Size) > end {
		return Mapping{}, fmt.Errorf("allocate: the pool %d-%d has no free block of %d IDs (%d pods hold ranges in it); enlarge [allocate] length or delete pods",
			p.Start, end-1, p.Size, len(used))
	}
	r := []specs.LinuxIDMapping{{ContainerID: 0, HostID: uint32(lo), Size: p.Size}}
	return Mapping{UIDs: r, GIDs: slices.Clone(r)}, nil
}
