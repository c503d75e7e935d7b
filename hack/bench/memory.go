package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const targetRSSMiB = 20 // peak RSS of one shim create

// memoryNames are the variants whose create RSS the memory section shows.
var memoryNames = []string{"bare", "noop", "shim", "shim+map", "shim+map+rootfs+10vol"}

// residue is what one check for leftover shim processes found.
type residue struct {
	when  string
	procs []int
}

// procsOf returns the pids of processes whose executable is bin: a shim
// that stayed behind (or a helper it cloned) after its call returned.
func procsOf(bin string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == bin {
			out = append(out, pid)
		}
	}
	return out
}

// memoryResult is the memory part: peak RSS (KiB) of create, by variant,
// against the stub runtime and the real one.
type memoryResult struct {
	rounds   int
	stub, rt map[string][]float64 // MiB
	timeBin  string
	rtName   string
	skipped  string
}

// runMemory runs create+start+delete cycles of the memory variants with
// create under GNU time, which reports its child's wait4 Maxrss. Go's
// os/exec starts children with CLONE_VM, so a child forked by the bench
// itself starts its peak at the bench's own RSS (~8 MiB); GNU time is a
// small C program, so the floor it adds is about 1 MiB (the bare stub row).
func runMemory(o options, dir string, stubs, vs []*variant, rng *rand.Rand) (*memoryResult, error) {
	tb, err := exec.LookPath("time")
	if err != nil {
		if _, e := os.Stat("/usr/bin/time"); e != nil {
			fmt.Fprintln(os.Stderr, "bench: memory: SKIPPED: GNU time is not installed")
			return &memoryResult{skipped: "GNU time is not installed (apt-get install time; hack/bench/install-deps.sh does)"}, nil
		}
		tb = "/usr/bin/time"
	}
	r := &memoryResult{rounds: o.memRounds, stub: map[string][]float64{}, rt: map[string][]float64{}, timeBin: tb}
	out := filepath.Join(dir, "maxrss")
	type item struct {
		v    *variant
		stub bool
	}
	var items []item
	for _, set := range []struct {
		vs   []*variant
		stub bool
	}{{stubs, true}, {vs, false}} {
		for _, v := range set.vs {
			if slices.Contains(memoryNames, v.name) {
				items = append(items, item{v, set.stub})
			}
		}
	}
	if len(vs) > 0 {
		r.rtName = filepath.Base(vs[0].bin)
	}
	for round := 0; round < o.warmup+o.memRounds; round++ {
		for _, i := range rng.Perm(len(items)) {
			it := items[i]
			os.Remove(out)
			it.v.wrap = []string{tb, "-f", "%M", "-o", out}
			var err error
			if it.stub {
				_, err = it.v.stubCycle()
			} else {
				_, err = it.v.cycle()
			}
			it.v.wrap = nil
			if err != nil {
				return nil, fmt.Errorf("memory: %s: %w", it.v.name, err)
			}
			data, err := os.ReadFile(out)
			if err != nil {
				return nil, err
			}
			// The last line: GNU time puts "Command exited..." first when the
			// command fails.
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			kib, err := strconv.ParseFloat(strings.TrimSpace(lines[len(lines)-1]), 64)
			if err != nil {
				return nil, fmt.Errorf("memory: %s: GNU time wrote %q", it.v.name, data)
			}
			if round >= o.warmup {
				m := r.rt
				if it.stub {
					m = r.stub
				}
				m[it.v.name] = append(m[it.v.name], kib/1024)
			}
		}
	}
	return r, nil
}

// peakShim is the largest create RSS of the shim's variants against the
// stub runtime, in MiB.
func (r *memoryResult) peakShim() (float64, string) {
	best, name := 0.0, ""
	for _, n := range memoryNames {
		if !strings.HasPrefix(n, "shim") {
			continue
		}
		for _, x := range r.stub[n] {
			if x > best {
				best, name = x, n
			}
		}
	}
	return best, name
}

func renderMemory(res *results) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	r := res.mem
	p("## Memory\n\n")
	if r != nil && r.skipped != "" {
		p("Peak RSS: SKIPPED: %s.\n\n", r.skipped)
	} else if r != nil {
		p("Peak RSS of `create`, MiB, median [p25 – p75] and max over %d rounds (after %d warm-up rounds, variants shuffled): `create` runs under GNU time (`%s -f %%M`), which reports wait4's `ru_maxrss` of its child: the largest RSS of the process across its `execve` and of the children it waited for. ", r.rounds, res.warmup, r.timeBin)
		p("(Timed by the bench's own Go process, the figure would start at the bench's RSS: Go's os/exec clones with CLONE_VM.) ")
		p("Against the stub runtime (busybox `true`: the bare row, the floor) this is the shim's own peak: Go's runtime, config parsing, and for the mapped variants the user-namespace helper and the ID-mapped mounts. ")
		p("With the real runtime it is the larger of the shim and %s (a passthrough call execs the runtime in the same process; a mapped create waits for it as a child).\n\n", r.rtName)
		p("| variant | stub runtime | max | with %s | max |\n|---|---|---|---|---|\n", r.rtName)
		f := func(xs []float64) string {
			if len(xs) == 0 {
				return "– | –"
			}
			return fmt.Sprintf("%.1f [%.1f – %.1f] | %.1f", quantile(xs, .5), quantile(xs, .25), quantile(xs, .75), slices.Max(xs))
		}
		for _, n := range memoryNames {
			p("| %s | %s | %s |\n", n, f(r.stub[n]), f(r.rt[n]))
		}
		p("\n")
	}
	p("What stays resident afterwards: the shim is no daemon; each call is a process that exits (passthrough calls become the runtime by `execve`). ")
	p("Processes running the shim's binary, counted after each part:")
	for i, r := range res.residues {
		if i > 0 {
			p(";")
		}
		p(" after %s: %d", r.when, len(r.procs))
		if len(r.procs) > 0 {
			p(" (pids %v)", r.procs)
		}
	}
	p(". The only things a mapped pod keeps while it lives are its user-namespace pin (a bind mount of an nsfs file, no process) and its records in `state_dir`.\n")
	return b.String()
}

// memoryTargetRows are the memory rows of the targets table.
func memoryTargetRows(res *results) string {
	var b strings.Builder
	if res.mem != nil && res.mem.skipped == "" {
		peak, name := res.mem.peakShim()
		fmt.Fprintf(&b, "| peak RSS of a shim create ≤ %d MiB (largest over every shim variant and round, stub runtime) | %.1f MiB (%s) | %s |\n",
			targetRSSMiB, peak, name, verdict(peak <= targetRSSMiB))
	}
	left := 0
	for _, r := range res.residues {
		left += len(r.procs)
	}
	if len(res.residues) > 0 {
		fmt.Fprintf(&b, "| nothing of the shim stays resident (shim processes after each part) | %d | %s |\n", left, verdict(left == 0))
	}
	return b.String()
}
