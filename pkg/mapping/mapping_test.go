package mapping

import (
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func r(c, h, n uint32) specs.LinuxIDMapping {
	return specs.LinuxIDMapping{ContainerID: c, HostID: h, Size: n}
}

func same(rs ...specs.LinuxIDMapping) Mapping { return Mapping{UIDs: rs, GIDs: rs} }

func TestParseRanges(t *testing.T) {
	tests := []struct {
		in      string
		want    []specs.LinuxIDMapping
		wantErr string
	}{
		{in: "0:65536:65536", want: []specs.LinuxIDMapping{r(0, 65536, 65536)}},
		{in: " 0:131072:65536 , 65536:262144:65536", want: []specs.LinuxIDMapping{r(0, 131072, 65536), r(65536, 262144, 65536)}},
		{in: "0:4294901760:65536", want: []specs.LinuxIDMapping{r(0, 4294901760, 65536)}},
		{in: "", wantErr: "empty"},
		{in: "0:1", wantErr: "want containerID:hostID:size"},
		{in: "0:1:2:3", wantErr: "want containerID:hostID:size"},
		{in: "a:1:2", wantErr: `"a" is not a number`},
		{in: "-1:1:2", wantErr: "is not a number"},
		{in: "0:4294967296:1", wantErr: "is not a number"},
		{in: "0:1:2,", wantErr: "want containerID:hostID:size"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRanges(tc.in)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseRangesBoundsCount(t *testing.T) {
	s := "0:65536:1"
	for i := 0; i < maxRanges; i++ {
		s += ",0:65536:1"
	}
	_, err := ParseRanges(s)
	require.ErrorContains(t, err, "at most 340")
}

func TestFromAnnotations(t *testing.T) {
	m, found, err := FromAnnotations(map[string]string{AnnotationUIDMappings: "0:65536:65536"})
	require.NoError(t, err)
	assert.True(t, found)
	assert.Equal(t, same(r(0, 65536, 65536)), m, "a uid mapping alone serves for gids")

	m, found, err = FromAnnotations(map[string]string{AnnotationGIDMappings: "0:65536:65536"})
	require.NoError(t, err)
	assert.True(t, found)
	assert.Equal(t, same(r(0, 65536, 65536)), m)

	_, found, err = FromAnnotations(map[string]string{"other": "x"})
	require.NoError(t, err)
	assert.False(t, found)

	_, found, err = FromAnnotations(map[string]string{AnnotationUIDMappings: "garbage"})
	assert.True(t, found)
	require.ErrorContains(t, err, AnnotationUIDMappings)
}

func TestEqual(t *testing.T) {
	a, b, c := r(0, 65536, 65536), r(0, 131072, 65536), r(65536, 196608, 65536)
	tests := []struct {
		name string
		x, y []specs.LinuxIDMapping
		want bool
	}{
		{"same", []specs.LinuxIDMapping{a, c}, []specs.LinuxIDMapping{a, c}, true},
		{"order", []specs.LinuxIDMapping{a, c}, []specs.LinuxIDMapping{c, a}, true},
		// FuzzFromAnnotations: ranges with the same container ID kept
		// their order, so a reordered copy did not equal itself.
		{"same container ID, reordered", []specs.LinuxIDMapping{a, b}, []specs.LinuxIDMapping{b, a}, true},
		{"different", []specs.LinuxIDMapping{a}, []specs.LinuxIDMapping{b}, false},
		{"subset", []specs.LinuxIDMapping{a}, []specs.LinuxIDMapping{a, c}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, Mapping{UIDs: tc.x, GIDs: tc.x}.Equal(Mapping{UIDs: tc.y, GIDs: tc.y}))
		})
	}
}

func TestParseKubeletRecord(t *testing.T) {
	// The format kubelet's userns manager writes (json.Marshal of userNamespace).
	data := []byte(`{"uidMappings":[{"hostId":1966080,"containerId":0,"length":65536}],"gidMappings":[{"hostId":1966080,"containerId":0,"length":65536}]}`)
	m, err := ParseKubeletRecord(data)
	require.NoError(t, err)
	assert.Equal(t, same(r(0, 1966080, 65536)), m)

	_, err = ParseKubeletRecord([]byte(`{"uidMappings":[]}`))
	require.ErrorContains(t, err, "no uidMappings")
	_, err = ParseKubeletRecord([]byte(`not json`))
	require.ErrorContains(t, err, "kubelet userns record")
}

func TestFromMounts(t *testing.T) {
	a := []specs.LinuxIDMapping{r(0, 65536, 65536)}
	b := []specs.LinuxIDMapping{r(0, 131072, 65536)}
	m, found, err := FromMounts([]specs.Mount{{Destination: "/proc"}, {Destination: "/v", UIDMappings: a, GIDMappings: a}, {Destination: "/w", UIDMappings: a}})
	require.NoError(t, err)
	assert.True(t, found)
	assert.Equal(t, Mapping{UIDs: a, GIDs: a}, m)

	_, found, err = FromMounts([]specs.Mount{{Destination: "/v", UIDMappings: a, GIDMappings: a}, {Destination: "/w", UIDMappings: b, GIDMappings: b}})
	assert.True(t, found)
	require.ErrorContains(t, err, "carry different ID mappings")

	_, found, err = FromMounts([]specs.Mount{{Destination: "/proc"}})
	require.NoError(t, err)
	assert.False(t, found)
}

func TestParseProcMap(t *testing.T) {
	got, err := ParseProcMap([]byte("         0     300000      65536\n     65536     500000      65536\n"))
	require.NoError(t, err)
	assert.Equal(t, []specs.LinuxIDMapping{r(0, 300000, 65536), r(65536, 500000, 65536)}, got)
	_, err = ParseProcMap([]byte("0 1\n"))
	require.Error(t, err)
}

func TestValidate(t *testing.T) {
	def := DefaultRules()
	tests := []struct {
		name    string
		m       Mapping
		rules   Rules
		wantErr []string
	}{
		{name: "one pod block", m: same(r(0, 65536, 65536))},
		{name: "two blocks", m: same(r(0, 131072, 65536), r(65536, 262144, 65536))},
		{name: "last whole block", m: same(r(0, 4294836224, 65536))},
		{name: "block ending at 2^32 holds (uid_t)-1", m: same(r(0, 4294901760, 65536)), wantErr: []string{"host range reaches past 4294967294"}},
		{name: "size 0", m: same(r(0, 65536, 0)), wantErr: []string{"size 0"}},
		{name: "size not multiple", m: same(r(0, 65536, 1000)), wantErr: []string{"not a multiple of 65536"}},
		{name: "host root", m: same(r(0, 0, 65536)), wantErr: []string{"host IDs below 65536 belong to the host"}},
		{name: "host 1000", m: same(r(0, 1000, 65536)), wantErr: []string{"below 65536"}},
		{name: "host wraps", m: same(r(0, 4294901761, 65536)), wantErr: []string{"host range reaches past"}},
		{name: "container wraps", m: same(r(0, 65536, 65536), r(4294901761, 131072, 65536)), wantErr: []string{"container range reaches past"}},
		{name: "root unmapped", m: same(r(1, 65536, 65536)), wantErr: []string{"leaves container ID 0 unmapped"}},
		{name: "host overlap", m: same(r(0, 65536, 131072), r(131072, 131072, 65536)), wantErr: []string{"overlap on the host side"}},
		{name: "container overlap", m: same(r(0, 65536, 131072), r(65536, 262144, 65536)), wantErr: []string{"overlap on the container side"}},
		{name: "uid != gid", m: Mapping{UIDs: []specs.LinuxIDMapping{r(0, 65536, 65536)}, GIDs: []specs.LinuxIDMapping{r(0, 131072, 65536)}}, wantErr: []string{"differs from gid mapping"}},
		{name: "no gid mapping", m: Mapping{UIDs: []specs.LinuxIDMapping{r(0, 65536, 65536)}}, wantErr: []string{"no gid mapping"}},
		{name: "critest mapping refused by default", m: same(r(0, 1000, 100000)), wantErr: []string{"below 65536", "not a multiple"}},
		{name: "critest mapping with relaxed rules", m: same(r(0, 1000, 100000)), rules: Rules{MinHostID: 1000, SizeMultiple: 1}},
		{name: "every problem reported", m: same(r(5, 0, 3)), wantErr: []string{"not a multiple", "below", "unmapped"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rules := tc.rules
			if rules == (Rules{}) {
				rules = def
			}
			err := Validate(tc.m, rules)
			if len(tc.wantErr) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, w := range tc.wantErr {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestValidateProcessUser(t *testing.T) {
	m := same(r(0, 65536, 65536))
	require.NoError(t, ValidateProcessUser(specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{10, 65535}}, m))
	err := ValidateProcessUser(specs.User{UID: 65536, GID: 70000, AdditionalGids: []uint32{1, 100000}}, m)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "process.user.uid 65536")
	assert.Contains(t, err.Error(), "process.user.gid 70000")
	assert.Contains(t, err.Error(), "additionalGids 100000")
	assert.NotContains(t, err.Error(), "additionalGids 1 ")
}

// FuzzParseRanges: a mapping annotation parses to what it says (String
// gives it back), and Validate under the default rules accepts exactly the
// mappings the rules describe, checked longhand by checkLonghand.
func FuzzParseRanges(f *testing.F) {
	for _, s := range []string{
		"0:65536:65536", "0:1:2,3:4:5", "", "a:b:c", "0:4294967295:4294967295",
		"0:131072:65536,65536:262144:65536", "0:4294836224:65536", "0:4294901760:65536", " 0:65536:65536 ,65536:65536:65536",
		"+0:65536:65536", "00:065536:65536",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParseRanges(s)
		if err != nil {
			return
		}
		if len(rs) == 0 || len(rs) > maxRanges {
			t.Fatalf("%d ranges parsed", len(rs))
		}
		if back, err := ParseRanges(String(rs)); err != nil || !slices.Equal(back, rs) {
			t.Fatalf("%q parsed as %v, which reads back as %v (%v)", s, rs, back, err)
		}
		checkValidate(t, Mapping{UIDs: rs, GIDs: rs}, DefaultRules())
	})
}

// FuzzFromAnnotations: whatever the two mapping annotations say (either may
// be absent), a mapping that validates, under the default rules or fuzzed
// ones as a config may set them, keeps to them.
func FuzzFromAnnotations(f *testing.F) {
	f.Add("0:65536:65536", "0:65536:65536", uint8(3), uint32(0), uint32(0))
	f.Add("0:65536:65536", "", uint8(1), uint32(0), uint32(0))
	f.Add("", "0:131072:65536,65536:262144:65536", uint8(2), uint32(0), uint32(0))
	f.Add("0:65536:65536", "0:131072:65536", uint8(3), uint32(0), uint32(0))
	f.Add("0:1000:100000", "0:1000:100000", uint8(7), uint32(1000), uint32(1))
	f.Add("garbage", "0:65536:65536", uint8(3), uint32(0), uint32(0))
	f.Fuzz(func(t *testing.T, u, g string, which uint8, minHost, multiple uint32) {
		ann := map[string]string{"other": "x"}
		if which&1 != 0 {
			ann[AnnotationUIDMappings] = u
		}
		if which&2 != 0 {
			ann[AnnotationGIDMappings] = g
		}
		rules := DefaultRules()
		if which&4 != 0 {
			// config.Validate refuses zero for either.
			rules = Rules{MinHostID: max(minHost, 1), SizeMultiple: max(multiple, 1)}
		}
		m, found, err := FromAnnotations(ann)
		if found != (which&3 != 0) {
			t.Fatalf("found = %v with annotations %v", found, ann)
		}
		if err != nil || !found {
			return
		}
		if len(m.UIDs) == 0 || len(m.GIDs) == 0 {
			t.Fatalf("a side of the mapping is empty: %+v", m)
		}
		if which&3 != 3 && !slices.Equal(m.UIDs, m.GIDs) {
			t.Fatalf("one annotation alone gives uids %v, gids %v", m.UIDs, m.GIDs)
		}
		if !m.Equal(Mapping{UIDs: reversed(m.UIDs), GIDs: reversed(m.GIDs)}) {
			t.Fatalf("range order changes Equal: %+v", m)
		}
		checkValidate(t, m, rules)
	})
}

func reversed(rs []specs.LinuxIDMapping) []specs.LinuxIDMapping {
	out := slices.Clone(rs)
	slices.Reverse(out)
	return out
}

// checkValidate: Validate accepts m exactly when checkLonghand finds no
// broken rule, and what it accepts maps every container ID it maps onto
// host IDs at or above the minimum.
func checkValidate(t *testing.T, m Mapping, r Rules) {
	t.Helper()
	err := Validate(m, r)
	if why := checkLonghand(m, r); (err == nil) != (why == "") {
		t.Fatalf("Validate(%s / %s) = %v, but longhand: %q", String(m.UIDs), String(m.GIDs), err, why)
	}
	if err != nil {
		return
	}
	for _, rs := range [][]specs.LinuxIDMapping{m.UIDs, m.GIDs} {
		if h, ok := HostOf(rs, 0); !ok || h < r.MinHostID {
			t.Fatalf("container 0 maps to host %d (%v)", h, ok)
		}
		for _, x := range rs {
			last := x.ContainerID + (x.Size - 1)
			if h, ok := HostOf(rs, last); !ok || h != x.HostID+(x.Size-1) || h < r.MinHostID {
				t.Fatalf("container %d maps to host %d, want %d", last, h, x.HostID+(x.Size-1))
			}
		}
	}
}

// checkLonghand says which rule m breaks, pair by pair, apart from
// Validate's own code: "" when none.
func checkLonghand(m Mapping, r Rules) string {
	if !sameSet(m.UIDs, m.GIDs) {
		return "uids differ from gids"
	}
	for _, rs := range [][]specs.LinuxIDMapping{m.UIDs, m.GIDs} {
		if len(rs) == 0 {
			return "empty"
		}
		root := false
		for i, x := range rs {
			switch {
			case x.Size == 0 || x.Size%r.SizeMultiple != 0:
				return "size"
			case x.HostID < r.MinHostID:
				return "host IDs of the host"
			case uint64(x.HostID)+uint64(x.Size) >= 1<<32-1+1, uint64(x.ContainerID)+uint64(x.Size) >= 1<<32-1+1:
				return "reaches 4294967295"
			}
			root = root || x.ContainerID == 0
			for _, y := range rs[:i] {
				if overlap(x.HostID, y.HostID, x.Size, y.Size) || overlap(x.ContainerID, y.ContainerID, x.Size, y.Size) {
					return "overlap"
				}
			}
		}
		if !root {
			return "container 0 unmapped"
		}
	}
	return ""
}

func overlap(a, b, na, nb uint32) bool {
	return uint64(a) < uint64(b)+uint64(nb) && uint64(b) < uint64(a)+uint64(na)
}

func sameSet(a, b []specs.LinuxIDMapping) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			return false
		}
	}
	return true
}
