package mapping

import "testing"

func BenchmarkValidate(b *testing.B) {
	m := same(r(0, 1<<31, 65536))
	rules := DefaultRules()
	b.ReportAllocs()
	for b.Loop() {
		if err := Validate(m, rules); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllocate: the allocator with 1000 live pods in the pool.
func BenchmarkAllocate(b *testing.B) {
	p := Pool{Start: 1 << 31, Length: 1 << 30, Size: 65536}
	var used []Span
	for i := uint64(0); i < 1000; i++ {
		lo := uint64(p.Start) + i*65536
		used = append(used, Span{lo, lo + 65536})
	}
	b.ReportAllocs()
	for b.Loop() {
		m, err := p.Allocate(used, 0)
		if err != nil || m.UIDs[0].HostID != p.Start+1000*65536 {
			b.Fatal(err, m)
		}
	}
}

func BenchmarkParseRanges(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRanges("0:2147483648:65536,65536:2147549184:65536"); err != nil {
			b.Fatal(err)
		}
	}
}
