package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// microPkgs hold the Go micro-benchmarks of the pure parts (argv parsing,
// mapping validation and allocation, config load/modify/save of a 50-mount
// spec).
var microPkgs = []string{"./pkg/runcargs", "./pkg/mapping", "./pkg/spec"}

// microResult is `go test -bench` of microPkgs.
type microResult struct {
	cmd   string
	lines []string // the Benchmark... result lines
	pkgs  []string // "pkg: ..." lines, in order
}

func runMicro(o options, repo string) (*microResult, error) {
	args := append([]string{"test", "-run", "^$", "-bench", ".", "-benchmem", "-benchtime", o.microTime, "-count", "1"}, microPkgs...)
	r := &microResult{cmd: "go " + strings.Join(args, " ")}
	cmd := exec.Command("go", args...)
	cmd.Dir = repo
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	fmt.Fprintln(os.Stderr, "bench:", r.cmd)
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", r.cmd, err, out.String())
	}
	pkg := ""
	for _, l := range strings.Split(out.String(), "\n") {
		switch {
		case strings.HasPrefix(l, "pkg: "):
			pkg = strings.TrimPrefix(l, "pkg: ")
		case strings.HasPrefix(l, "Benchmark"):
			r.lines = append(r.lines, l)
			r.pkgs = append(r.pkgs, pkg)
		}
	}
	return r, nil
}

func (r *microResult) render() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("## Go micro-benchmarks of the pure parts\n\n`%s` (in the bench's process tree, after the other parts).\n\n", r.cmd)
	p("| package | benchmark | iterations | ns/op | B/op | allocs/op |\n|---|---|---|---|---|---|\n")
	for i, l := range r.lines {
		f := strings.Fields(l)
		get := func(unit string) string {
			for k := 1; k < len(f); k++ {
				if f[k] == unit {
					return f[k-1]
				}
			}
			return "–"
		}
		iters := "–"
		if len(f) > 1 {
			iters = f[1]
		}
		p("| %s | %s | %s | %s | %s | %s |\n", strings.TrimPrefix(r.pkgs[i], "github.com/userns-shim/userns-shim/"), f[0], iters, get("ns/op"), get("B/op"), get("allocs/op"))
	}
	return b.String()
}
