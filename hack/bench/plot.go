package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// A small SVG line chart, written by hand so that the bench needs no
// plotting module; rsvg-convert (Debian: librsvg2-bin), when installed,
// turns it into a PNG.

type series struct {
	name   string
	color  string
	dash   bool
	labels bool // print each point's value next to it
	xs, ys []float64
	lo, hi []float64 // optional error bars (same length as ys)
}

type chart struct {
	title, xlabel, ylabel string
	logX, logY            bool
	xfmt                  func(float64) string
	series                []series
}

const (
	svgW, svgH                       = 860, 540
	padL, padR, padT, padB           = 80, 24, 48, 64
	plotW, plotH                     = svgW - padL - padR, svgH - padT - padB
	legendLine, legendX, legendFirst = 18, padL + 14, padT + 18
)

type axis struct {
	log    bool
	lo, hi float64 // in data units (log10 of them for a log axis)
}

func newAxis(vals []float64, log bool) axis {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vals {
		if log && v <= 0 {
			continue
		}
		if log {
			v = math.Log10(v)
		}
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	if math.IsInf(lo, 0) {
		lo, hi = 0, 1
	}
	if log {
		return axis{log: true, lo: math.Floor(lo), hi: math.Max(math.Ceil(hi), math.Floor(lo)+1)}
	}
	lo = math.Min(lo, 0)
	if hi <= lo {
		hi = lo + 1
	}
	step := niceStep((hi - lo) / 5)
	return axis{lo: math.Floor(lo/step) * step, hi: math.Ceil(hi/step) * step}
}

func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// frac is v's position along the axis, 0..1.
func (a axis) frac(v float64) float64 {
	if a.log {
		if v <= 0 {
			return math.NaN()
		}
		v = math.Log10(v)
	}
	return (v - a.lo) / (a.hi - a.lo)
}

// ticks returns the tick values (in data units).
func (a axis) ticks() []float64 {
	var out []float64
	if a.log {
		for e := a.lo; e <= a.hi+1e-9; e++ {
			out = append(out, math.Pow(10, e))
		}
		return out
	}
	step := niceStep((a.hi - a.lo) / 5)
	for v := a.lo; v <= a.hi+step/1e6; v += step {
		out = append(out, v)
	}
	return out
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 100, math.Abs(v) >= 1 && v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

func (c chart) svg() []byte {
	var xs, ys []float64
	for _, s := range c.series {
		xs = append(xs, s.xs...)
		ys = append(ys, s.ys...)
		ys = append(ys, s.lo...)
		ys = append(ys, s.hi...)
	}
	ax, ay := newAxis(xs, c.logX), newAxis(ys, c.logY)
	px := func(v float64) float64 { return padL + ax.frac(v)*plotW }
	py := func(v float64) float64 { return padT + (1-ay.frac(v))*plotH }
	xfmt := c.xfmt
	if xfmt == nil {
		xfmt = fmtNum
	}

	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Arial, sans-serif" font-size="13">`+"\n", svgW, svgH, svgW, svgH)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%d" y="28" font-size="16" font-weight="bold">%s</text>`+"\n", padL, xmlEscape(c.title))
	// Grid and ticks.
	for _, t := range ax.ticks() {
		x := px(t)
		p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x, padT, x, padT+plotH)
		p(`<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, padT+plotH+18, xmlEscape(xfmt(t)))
	}
	for _, t := range ay.ticks() {
		y := py(t)
		p(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", padL, y, padL+plotW, y)
		p(`<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", padL-6, y, xmlEscape(fmtNum(t)))
	}
	if c.logY { // minor ticks 2..9 of each decade
		for e := ay.lo; e < ay.hi; e++ {
			for k := 2.0; k <= 9; k++ {
				y := py(k * math.Pow(10, e))
				p(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#f0f0f0"/>`+"\n", padL, y, padL+plotW, y)
			}
		}
	}
	p(`<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", padL, padT, plotW, plotH)
	p(`<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", padL+plotW/2, svgH-18, xmlEscape(c.xlabel+axisNote(c.logX)))
	p(`<text transform="translate(20 %d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", padT+plotH/2, xmlEscape(c.ylabel+axisNote(c.logY)))
	// Series, with the legend on a white box in the top left corner.
	legendW := 0
	for _, s := range c.series {
		legendW = max(legendW, 40+8*len([]rune(s.name)))
	}
	var legend strings.Builder
	fmt.Fprintf(&legend, `<rect x="%d" y="%d" width="%d" height="%d" fill="white" fill-opacity="0.9" stroke="#ccc"/>`+"\n",
		legendX-8, legendFirst-12, legendW, len(c.series)*legendLine+6)
	for i, s := range c.series {
		dash := ""
		if s.dash {
			dash = ` stroke-dasharray="6 4"`
		}
		var pts []string
		for j := range s.xs {
			x, y := px(s.xs[j]), py(s.ys[j])
			if math.IsNaN(x) || math.IsNaN(y) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
			if j < len(s.lo) && j < len(s.hi) {
				y1, y2 := py(s.lo[j]), py(s.hi[j])
				if !math.IsNaN(y1) && !math.IsNaN(y2) {
					p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x, y1, x, y2, s.color)
					p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x-4, y1, x+4, y1, s.color)
					p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x-4, y2, x+4, y2, s.color)
				}
			}
			p(`<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", x, y, s.color)
			if s.labels {
				anchor, dx := "start", 8.0
				if j == len(s.xs)-1 {
					anchor, dx = "end", -8
				}
				p(`<text x="%.1f" y="%.1f" font-size="12" fill="%s" text-anchor="%s">%s ms</text>`+"\n", x+dx, y-8, s.color, anchor, fmtNum(s.ys[j]))
			}
		}
		p(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), s.color, dash)
		ly := legendFirst + i*legendLine
		fmt.Fprintf(&legend, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", legendX, ly, legendX+24, ly, s.color, dash)
		fmt.Fprintf(&legend, `<text x="%d" y="%d" dominant-baseline="middle">%s</text>`+"\n", legendX+30, ly, xmlEscape(s.name))
	}
	b.WriteString(legend.String())
	p("</svg>\n")
	return []byte(b.String())
}

func axisNote(log bool) string {
	if log {
		return " (log scale)"
	}
	return ""
}

// writeChart writes base.svg and, if rsvg-convert is installed, base.png.
func writeChart(base string, c chart) ([]string, error) {
	svg := base + ".svg"
	if err := os.WriteFile(svg, c.svg(), 0o644); err != nil {
		return nil, err
	}
	files := []string{svg}
	conv, err := exec.LookPath("rsvg-convert")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: rsvg-convert not found (apt-get install librsvg2-bin): wrote", svg, "only")
		return files, nil
	}
	png := base + ".png"
	if out, err := exec.Command(conv, "-b", "white", "-o", png, svg).CombinedOutput(); err != nil {
		return files, fmt.Errorf("rsvg-convert %s: %w: %s", svg, err, out)
	}
	return append(files, png), nil
}

// writeArtifacts writes the rootfs CSV and the plots into dir.
func writeArtifacts(dir string, res *results) ([]string, error) {
	var files []string
	if res.rfs != nil {
		csv := filepath.Join(dir, "bench-rootfs.csv")
		if err := os.WriteFile(csv, res.rfs.summaryCSV(), 0o644); err != nil {
			return nil, err
		}
		files = append(files, csv)
		f, err := writeChart(filepath.Join(dir, "bench-rootfs"), res.rfs.chart())
		if err != nil {
			return nil, err
		}
		files = append(files, f...)
	}
	if res.conc != nil {
		f, err := writeChart(filepath.Join(dir, "bench-concurrency"), res.conc.chart())
		if err != nil {
			return nil, err
		}
		files = append(files, f...)
	}
	if res.vol != nil {
		f, err := writeChart(filepath.Join(dir, "bench-volumes"), res.vol.chart())
		if err != nil {
			return nil, err
		}
		files = append(files, f...)
	}
	return files, nil
}
