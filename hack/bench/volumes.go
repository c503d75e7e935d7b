package main

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// volumeResult is the volumes part: container cycles of the shim with a
// mapping and of the bare runtime with 0..N bind-mount volumes, and the
// shim's calls with as many volumes against the stub runtime.
type volumeResult struct {
	counts        []int
	rounds        int
	warmup        int
	stubRounds    int
	vs, stubs     []*variant
	samples, stub map[string][]sample
}

func volName(shim bool, n int) string {
	if shim {
		return fmt.Sprintf("shim+map+%dvol", n)
	}
	return fmt.Sprintf("bare+%dvol", n)
}

// runVolumes measures how create grows with the number of ID-mapped volumes.
func runVolumes(o options, mk *maker, sd *specDoc, rtPath, shimBin, stubPath string, check func([]*variant) error, rounds roundsFunc) (*volumeResult, error) {
	r := &volumeResult{counts: o.volCounts, rounds: o.volRounds, warmup: o.warmup, stubRounds: o.stubRounds}
	for _, n := range o.volCounts {
		bm, err := sd.write(fmt.Sprintf("bundle-vol-map-%d", n), bundleOpts{annotations: mapAnnotation(), volumes: n})
		if err != nil {
			return nil, err
		}
		bp, err := sd.write(fmt.Sprintf("bundle-vol-%d", n), bundleOpts{volumes: n})
		if err != nil {
			return nil, err
		}
		vShim, err := mk.variant("vol", volName(true, n), fmt.Sprintf("shim with a mapping, %d ID-mapped volumes", n), shimBin, rtPath, bm)
		if err != nil {
			return nil, err
		}
		vBare, err := mk.variant("vol", volName(false, n), fmt.Sprintf("the runtime itself, %d bind-mount volumes", n), rtPath, rtPath, bp)
		if err != nil {
			return nil, err
		}
		vStub, err := mk.variant("volstub", volName(true, n), fmt.Sprintf("shim with a mapping, %d ID-mapped volumes, stub runtime", n), shimBin, stubPath, bm)
		if err != nil {
			return nil, err
		}
		r.vs = append(r.vs, vShim, vBare)
		r.stubs = append(r.stubs, vStub)
	}
	if err := check(r.vs); err != nil {
		return nil, err
	}
	var err error
	if r.samples, err = rounds("volumes", r.vs, o.volRounds, o.warmup, (*variant).cycle); err != nil {
		return nil, err
	}
	if r.stub, err = rounds("volumes, stub runtime", r.stubs, o.stubRounds, o.warmup, (*variant).stubCycle); err != nil {
		return nil, err
	}
	return r, nil
}

func createOf(s sample) float64 { return s.create }
func cycleOf(s sample) float64  { return s.cycle() }

// slope is the least-squares slope of ys over xs.
func slope(xs, ys []float64) float64 {
	if len(xs) < 2 {
		return 0
	}
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx /= float64(len(xs))
	my /= float64(len(xs))
	var num, den float64
	for i := range xs {
		num += (xs[i] - mx) * (ys[i] - my)
		den += (xs[i] - mx) * (xs[i] - mx)
	}
	if den == 0 {
		return 0
	}
	return num / den
}

// perVolume returns, for each count n > 0, (f(n) - f(0)) / n, and the
// least-squares slope of f over all counts, in ms per volume.
func (r *volumeResult) perVolume(f func(n int) float64) (each map[int]float64, fit float64) {
	each = map[int]float64{}
	var xs, ys []float64
	base, hasBase := 0.0, false
	for _, n := range r.counts {
		if n == 0 {
			base, hasBase = f(0), true
		}
	}
	for _, n := range r.counts {
		y := f(n)
		xs, ys = append(xs, float64(n)), append(ys, y)
		if n > 0 && hasBase {
			each[n] = (y - base) / float64(n)
		}
	}
	return each, slope(xs, ys)
}

func (r *volumeResult) render(_ *rand.Rand) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("## Growth with volumes\n\n")
	p("Container cycles (%d rounds after %d warm-up rounds, every variant once a round, shuffled): **shim+map+Nvol** is the shim with a mapping and N bind-mount volumes it ID-maps (plus the directory rootfs), **bare+Nvol** the runtime with the same N bind mounts and no user namespace. ", r.rounds, r.warmup)
	p("The stub column is the shim's `create` with N volumes against the stub runtime (%d rounds): the shim's own work, without the runtime's. Median [p25 – p75], ms.\n\n", r.stubRounds)
	p("| volumes | shim create, stub runtime | shim+map create | bare create | shim+map − bare create (paired) | shim+map cycle | bare cycle | cycle × bare |\n")
	p("|---|---|---|---|---|---|---|---|\n")
	for _, n := range r.counts {
		s, bb, st := r.samples[volName(true, n)], r.samples[volName(false, n)], r.stub[volName(true, n)]
		p("| %d | %s | %s | %s | %s | %s | %s | %.3f |\n", n, spread(metric(st, createOf)), spread(metric(s, createOf)),
			spread(metric(bb, createOf)), signedSpread(paired(s, bb, createOf)), spread(metric(s, cycleOf)), spread(metric(bb, cycleOf)),
			quantile(metric(s, cycleOf), .5)/quantile(metric(bb, cycleOf), .5))
	}
	med := func(set map[string][]sample, name string, f func(sample) float64) float64 {
		return ms(quantile(metric(set[name], f), .5))
	}
	stubEach, stubFit := r.perVolume(func(n int) float64 { return med(r.stub, volName(true, n), createOf) })
	shimEach, shimFit := r.perVolume(func(n int) float64 { return med(r.samples, volName(true, n), createOf) })
	bareEach, bareFit := r.perVolume(func(n int) float64 { return med(r.samples, volName(false, n), createOf) })
	diffEach, diffFit := r.perVolume(func(n int) float64 {
		return ms(quantile(paired(r.samples[volName(true, n)], r.samples[volName(false, n)], createOf), .5))
	})
	p("\nms per volume: (median at N − median at 0) / N, and the least-squares slope over all N:\n\n")
	p("| | ")
	for _, n := range r.counts {
		if n > 0 {
			p("N=%d | ", n)
		}
	}
	p("slope |\n|---|")
	for _, n := range r.counts {
		if n > 0 {
			p("---|")
		}
	}
	p("---|\n")
	row := func(label string, each map[int]float64, fit float64) {
		p("| %s | ", label)
		for _, n := range r.counts {
			if n > 0 {
				p("%.3f | ", each[n])
			}
		}
		p("%.3f |\n", fit)
	}
	row("shim create, stub runtime (the shim's own work)", stubEach, stubFit)
	row("shim+map create", shimEach, shimFit)
	row("bare create (the runtime's bind mounts)", bareEach, bareFit)
	row("shim+map − bare create (paired)", diffEach, diffFit)
	return b.String()
}

// chart plots the medians against the number of volumes.
func (r *volumeResult) chart() chart {
	var xs []float64
	for _, n := range r.counts {
		xs = append(xs, float64(n))
	}
	line := func(name, color string, dash bool, set map[string][]sample, shim bool, f func(sample) float64) series {
		s := series{name: name, color: color, dash: dash, xs: xs}
		for _, n := range r.counts {
			v := metric(set[volName(shim, n)], f)
			s.ys = append(s.ys, ms(quantile(v, .5)))
			s.lo = append(s.lo, ms(quantile(v, .25)))
			s.hi = append(s.hi, ms(quantile(v, .75)))
		}
		return s
	}
	return chart{
		title:  "Create through the shim vs number of ID-mapped volumes",
		xlabel: "bind-mount volumes",
		ylabel: "ms (median, bars p25–p75)",
		series: []series{
			line("shim+map cycle", "#1f77b4", false, r.samples, true, cycleOf),
			line("bare runtime cycle, same volumes", "#7f7f7f", false, r.samples, false, cycleOf),
			line("shim+map create", "#1f77b4", true, r.samples, true, createOf),
			line("bare runtime create", "#7f7f7f", true, r.samples, false, createOf),
			line("shim create, stub runtime", "#d62728", false, r.stub, true, createOf),
		},
	}
}
