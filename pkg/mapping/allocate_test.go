package mapping

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAllocate(t *testing.T) {
	const B = 65536
	p := Pool{Start: 10 * B, Length: 4 * B, Size: B}
	block := func(i uint64) Span { return Span{uint64(p.Start) + i*B, uint64(p.Start) + (i+1)*B} }
	tests := []struct {
		name    string
		used    []Span
		want    uint32
		wantErr string
	}{
		{name: "empty pool", want: p.Start},
		{name: "first taken", used: []Span{block(0)}, want: p.Start + B},
		{name: "hole reused", used: []Span{block(0), block(2)}, want: p.Start + B},
		{name: "unsorted", used: []Span{block(2), block(1), block(0)}, want: p.Start + 3*B},
		{name: "outside the pool ignored", used: []Span{{0, 5 * B}, {100 * B, 101 * B}}, want: p.Start},
		{name: "unaligned foreign range", used: []Span{{uint64(p.Start) + 100, uint64(p.Start) + 200}}, want: p.Start + B},
		{name: "foreign range across blocks", used: []Span{{uint64(p.Start) + B/2, uint64(p.Start) + 2*B + 1}}, want: p.Start + 3*B},
		{name: "full", used: []Span{block(0), block(1), block(2), block(3)}, wantErr: "no free block"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := p.Allocate(tc.used, 0)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, m.UIDs[0].HostID)
			assert.Equal(t, m.UIDs, m.GIDs)
			require.NoError(t, Validate(m, DefaultRules()))
			_, clash := FirstOverlap(HostSpans(m), tc.used)
			assert.False(t, clash)
		})
	}
}

func TestAllocatePreferred(t *testing.T) {
	const B = 65536
	p := Pool{Start: 10 * B, Length: 4 * B, Size: B}
	m, err := p.Allocate(nil, p.Start+2*B)
	require.NoError(t, err)
	assert.Equal(t, p.Start+2*B, m.UIDs[0].HostID, "a restarted container gets the block its files belong to")
	_, err = p.Allocate([]Span{{uint64(p.Start) + 2*B, uint64(p.Start) + 3*B}}, p.Start+2*B)
	require.ErrorIs(t, err, ErrPreferredTaken)
	m, err = p.Allocate(nil, p.Start+3*B+1000)
	require.NoError(t, err)
	assert.Equal(t, p.Start+3*B, m.UIDs[0].HostID, "any ID of a block names the block")
	for _, prefer := range []uint32{5 * B, p.Start + 4*B} { // below, past the pool
		m, err := p.Allocate(nil, prefer)
		require.NoError(t, err)
		assert.Equal(t, p.Start, m.UIDs[0].HostID, "prefer %d is no block of the pool: ignored", prefer)
	}
}

func TestHostSpansAndOverlap(t *testing.T) {
	m := Mapping{UIDs: []specs.LinuxIDMapping{r(0, 65536, 65536)}, GIDs: []specs.LinuxIDMapping{r(0, 65536, 65536), r(65536, 200000, 10)}}
	assert.Equal(t, []Span{{65536, 131072}, {200000, 200010}}, HostSpans(m))
	s, ok := FirstOverlap(HostSpans(m), []Span{{200005, 200006}})
	assert.True(t, ok)
	assert.Equal(t, Span{200000, 200010}, s)
	_, ok = FirstOverlap(HostSpans(m), []Span{{131072, 200000}})
	assert.False(t, ok, "adjacent is not overlapping")
}
