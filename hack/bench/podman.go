package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// podmanConf is what podman 4.3.1 needs on this machine (no systemd, no
// CAP_SYS_RESOURCE; shared/ENVIRONMENT.md), with its state in the bench's
// work dir; userns-shim among the runtimes that get --log-format=json.
// podmanEnv is a private podman: its own storage, runroot, tmpdir and
// configuration, nothing of the host's podman state read or written.
type podmanEnv struct {
	dir, root, runroot, tmp string
	env                     []string
	real                    map[string]string // runc, crun: the runtimes
	shim                    map[string]string // runc, crun: the shim's wrapper over each
}

// podmanMissing says why podman cannot be benchmarked here, or "".
func podmanMissing() string {
	for _, t := range []string{"podman", "conmon", "skopeo"} {
		if _, err := exec.LookPath(t); err != nil {
			return t + " is not installed (hack/e2e/install-deps.sh installs it)"
		}
	}
	return ""
}

// newPodmanEnv sets podman up in dir with its image store in root. With
// noIDMap, containers/storage is told (by the cache file its overlay driver
// keeps of its probe) that the kernel cannot ID-map overlay lower layers: it
// then falls back to a chowned copy of the image per mapping, as on kernels
// or filesystems without that support. podman 4.3.1's containers/storage has
// no other switch for it.
func newPodmanEnv(repo, dir, root, stateRoot, shimBin string, noIDMap bool) (*podmanEnv, error) {
	// podman refuses a runroot path longer than 50 characters.
	runroot, err := os.MkdirTemp("", "bench-pm-")
	if err != nil {
		return nil, err
	}
	p := &podmanEnv{dir: dir, root: root, runroot: runroot, tmp: filepath.Join(dir, "tmp"),
		real: map[string]string{"runc": "/usr/sbin/runc", "crun": filepath.Join(repo, "hack", "crun-hybrid")}, shim: map[string]string{}}
	for _, d := range []string{p.tmp, filepath.Join(dir, "cni"), root} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	conf, storage := filepath.Join(dir, "containers.conf"), filepath.Join(dir, "storage.conf")
	// The end-to-end tests' podman configuration, for the same podman.
	tmpl, err := os.ReadFile(filepath.Join(repo, "hack", "e2e", "containers.conf"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(conf, bytes.ReplaceAll(tmpl, []byte("@DIR@"), []byte(dir)), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(storage, []byte(fmt.Sprintf("[storage]\ndriver = \"overlay\"\ngraphroot = %q\nrunroot = %q\n", root, p.runroot)), 0o644); err != nil {
		return nil, err
	}
	p.env = append(os.Environ(), "CONTAINERS_CONF="+conf, "CONTAINERS_STORAGE_CONF="+storage)
	if noIDMap {
		runhome := filepath.Join(runroot, "overlay")
		if err := os.MkdirAll(runhome, 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(runhome, "idmapped-lower-dir-false"), []byte("turned off by hack/bench"), 0o644); err != nil {
			return nil, err
		}
	}
	for _, rt := range []string{"runc", "crun"} {
		// The wrapper's base name is userns-shim: podman passes --log to it.
		w, _, err := shimWrapper(filepath.Join(dir, "shim-"+rt), shimBin, p.real[rt], filepath.Join(stateRoot, "podman-shim-"+rt), "")
		if err != nil {
			return nil, err
		}
		p.shim[rt] = w
	}
	return p, nil
}

// load copies a docker-archive into the store as name.
func (p *podmanEnv) load(archive, name string) error {
	dest := fmt.Sprintf("containers-storage:[overlay@%s+%s]%s", p.root, p.runroot, name)
	cmd := exec.Command("skopeo", "copy", "--quiet", "docker-archive:"+archive, dest)
	cmd.Env = p.env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("skopeo copy %s: %w: %s", archive, err, out)
	}
	return nil
}

// podman runs podman with runtime and returns its wall time.
func (p *podmanEnv) podman(extraEnv []string, runtime string, args ...string) (float64, error) {
	global := []string{"--root", p.root, "--runroot", p.runroot, "--tmpdir", p.tmp, "--storage-driver", "overlay", "--runtime", runtime}
	cmd := exec.Command("podman", append(global, args...)...)
	cmd.Env = append(p.env, extraEnv...)
	t := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(t).Seconds()
	if err != nil {
		return d, fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return d, nil
}

// close removes every container and unmounts what containers/storage left
// mounted below the store (it keeps its overlay home bind-mounted).
func (p *podmanEnv) close() error {
	_, err := p.podman(nil, p.real["runc"], "rm", "--all", "--force", "--time", "0")
	mps := append(mountsBelow(p.root), mountsBelow(p.runroot)...)
	for i := len(mps) - 1; i >= 0; i-- {
		if e := unix.Unmount(mps[i], unix.MNT_DETACH); e != nil && !errors.Is(e, unix.EINVAL) && !errors.Is(e, unix.ENOENT) {
			err = errors.Join(err, fmt.Errorf("umount %s: %w", mps[i], e))
		}
	}
	if len(mountsBelow(p.runroot)) == 0 {
		os.RemoveAll(p.runroot)
	}
	return err
}

// mapArgs are podman's own user namespace with host ID h, or the shim's
// mapping annotation for it.
func uidmapArgs(h int) []string {
	m := fmt.Sprintf("0:%d:%d", h, benchSize)
	return []string{"--uidmap", m, "--gidmap", m}
}

func shimMapArgs(h int) []string {
	return []string{"--annotation", fmt.Sprintf("%s=0:%d:%d", annotationUIDMappings, h, benchSize)}
}

// podmanVariant is one way of running `podman run --rm IMAGE true`.
type podmanVariant struct {
	name, desc, runtime string
	args                func() []string
}

// podmanResult is the podman part: `podman run --rm` of the busybox image.
type podmanResult struct {
	rounds, warmup int
	skipped        string
	vs             []podmanVariant
	samples        map[string][]sample // create = the whole podman run
}

func runPodman(o options, repo, dir, stateRoot, shimBin string, rng *rand.Rand, sigs chan os.Signal) (_ *podmanResult, retErr error) {
	r := &podmanResult{rounds: o.pmRounds, warmup: o.warmup, samples: map[string][]sample{}}
	if r.skipped = podmanMissing(); r.skipped != "" {
		fmt.Fprintln(os.Stderr, "bench: podman: SKIPPED:", r.skipped)
		return r, nil
	}
	images, err := e2eVars(repo, nil, "images.sh")
	if err != nil {
		r.skipped = err.Error()
		return r, nil
	}
	pd := filepath.Join(dir, "podman")
	pe, err := newPodmanEnv(repo, pd, filepath.Join(pd, "root"), stateRoot, shimBin, false)
	if err != nil {
		return nil, err
	}
	defer func() { retErr = errors.Join(retErr, pe.close()) }()
	img := images["BUSYBOX_IMAGE"]
	if err := pe.load(images["BUSYBOX_ARCHIVE"], img); err != nil {
		return nil, err
	}
	none := func() []string { return nil }
	for _, rt := range []string{"runc", "crun"} {
		r.vs = append(r.vs,
			podmanVariant{rt, "podman with " + rt + ", no user namespace", pe.real[rt], none},
			podmanVariant{rt + "+uidmap", "podman with " + rt + " and `--uidmap/--gidmap 0:" + fmt.Sprint(benchHostID) + ":65536` (podman's own user namespace)", pe.real[rt],
				func() []string { return uidmapArgs(benchHostID) }},
			podmanVariant{"shim-" + rt, "podman with `--runtime` the shim over " + rt + ", passthrough", pe.shim[rt], none},
			podmanVariant{"shim-" + rt + "+map", "podman with `--runtime` the shim over " + rt + " and the annotation " + annotationUIDMappings + "=" + benchMapping, pe.shim[rt],
				func() []string { return shimMapArgs(benchHostID) }},
		)
	}
	runOnce := func(v podmanVariant) (float64, error) {
		args := append([]string{"run", "--rm", "--network", "none"}, v.args()...)
		return pe.podman(nil, v.runtime, append(args, img, "true")...)
	}
	for _, v := range r.vs {
		if _, err := runOnce(v); err != nil {
			return nil, fmt.Errorf("podman: variant %s does not work: %w", v.name, err)
		}
	}
	start := time.Now()
	for round := 0; round < o.warmup+o.pmRounds; round++ {
		select {
		case s := <-sigs:
			return nil, fmt.Errorf("podman: stopped by %v", s)
		default:
		}
		for _, i := range rng.Perm(len(r.vs)) {
			d, err := runOnce(r.vs[i])
			if err != nil {
				return nil, fmt.Errorf("podman: %s, round %d: %w", r.vs[i].name, round, err)
			}
			if round >= o.warmup {
				r.samples[r.vs[i].name] = append(r.samples[r.vs[i].name], sample{round: round - o.warmup, create: d})
			}
		}
		if (round+1)%max(1, (o.warmup+o.pmRounds)/4) == 0 {
			fmt.Fprintf(os.Stderr, "bench: podman: %d/%d rounds (%.0fs)\n", round+1, o.warmup+o.pmRounds, time.Since(start).Seconds())
		}
	}
	return r, nil
}

func podmanPairs(rt string) [][3]string {
	return [][3]string{
		{"shim-" + rt, rt, "shim passthrough ÷ " + rt},
		{"shim-" + rt + "+map", rt + "+uidmap", "shim with a mapping ÷ podman's own `--uidmap`, same " + rt},
		{"shim-" + rt + "+map", rt, "shim with a mapping ÷ " + rt + " without a user namespace"},
	}
}

func (r *podmanResult) ratio(rng *rand.Rand, a, b string) (ratio, lo, hi float64) {
	return medianRatio(rng, r.samples, a, b, createOf)
}

func (r *podmanResult) render(rng *rand.Rand) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	if !sectionHead(&b, "## podman run: `--uidmap` vs the shim", r.skipped) {
		return b.String()
	}
	p("`podman run --rm --network none IMAGE true` of the busybox image (hack/e2e/images.sh), wall time of the whole command (create, start, wait, remove); podman 4.3.1 with conmon, private storage (overlay) and configuration. ")
	p("%d rounds after %d warm-up rounds, every variant once a round, shuffled. Median [p25 – p75], ms.\n\n", r.rounds, r.warmup)
	p("| variant | podman run ms | |\n|---|---|---|\n")
	for _, v := range r.vs {
		p("| %s | %s | %s |\n", v.name, spread(metric(r.samples[v.name], createOf)), v.desc)
	}
	p("\n| comparison | ratio of medians [95%% bootstrap] |\n|---|---|\n")
	for _, rt := range []string{"runc", "crun"} {
		for _, pr := range podmanPairs(rt) {
			x, lo, hi := r.ratio(rng, pr[0], pr[1])
			p("| %s | %.3f [%.3f – %.3f] |\n", pr[2], x, lo, hi)
		}
	}
	return b.String()
}

func (r *podmanResult) targetRows(rng *rand.Rand) string {
	var b strings.Builder
	if r.skipped != "" {
		fmt.Fprintf(&b, "| podman run through the shim ≤ %.2f × podman without it | skipped: %s | – |\n", targetPodStartRatio, mdCell(r.skipped))
		return b.String()
	}
	for _, rt := range []string{"runc", "crun"} {
		for _, pr := range podmanPairs(rt)[:2] {
			x, lo, hi := r.ratio(rng, pr[0], pr[1])
			fmt.Fprintf(&b, "| podman run, %s ≤ %.2f × | %.3f × [%.3f – %.3f] | %s |\n", pr[2], targetPodStartRatio, x, lo, hi, verdict(x <= targetPodStartRatio))
		}
	}
	return b.String()
}

// Image growth through podman (part of the rootfs part: the trees and the
// store live on its ext4 image).
const (
	pmPlain  = "podman run, no user namespace"
	pmIDMap  = "podman --uidmap (ID-mapped layers)"
	pmCopy   = "podman --uidmap, chown-copy fallback"
	pmShim   = "podman + shim (ID-mapped rootfs)"
	pmHostID = 0x20000000 // first host ID of the fresh mappings, one block per run
)

var pmMethods = []string{pmPlain, pmIDMap, pmShim, pmCopy}

// pmGrowth is podman's first use of an image of each size.
type pmGrowth struct {
	skipped  string
	runs     int
	copyRuns int
	importS  map[int]float64
	times    map[string]map[int][]float64 // method -> files -> seconds
}

// podmanGrowth imports each tree as an image and times `podman run --rm`
// with a mapping podman has not seen: podman's ID-mapped layers, its
// chown-copy fallback (in a second store whose driver believes the kernel
// cannot ID-map overlay lowers), and the shim.
func podmanGrowth(o options, repo, dir, stateRoot, shimBin string, sizes []int, trees map[int]string, rng *rand.Rand, stopped func() error) (_ *pmGrowth, retErr error) {
	g := &pmGrowth{runs: o.pmGrowthN, copyRuns: o.pmCopyN, importS: map[int]float64{}, times: map[string]map[int][]float64{}}
	for _, m := range pmMethods {
		g.times[m] = map[int][]float64{}
	}
	if g.skipped = podmanMissing(); g.skipped != "" {
		return g, nil
	}
	pe, err := newPodmanEnv(repo, filepath.Join(dir, "podman"), filepath.Join(dir, "podman", "root"), stateRoot, shimBin, false)
	if err != nil {
		return nil, err
	}
	defer func() { retErr = errors.Join(retErr, pe.close()) }()
	stores := []*podmanEnv{pe}
	var fb *podmanEnv
	if o.pmCopyN > 0 {
		if fb, err = newPodmanEnv(repo, filepath.Join(dir, "podman-copy"), filepath.Join(dir, "podman-copy", "root"), stateRoot, shimBin, true); err != nil {
			return nil, err
		}
		defer func() { retErr = errors.Join(retErr, fb.close()) }()
		stores = append(stores, fb)
	}
	name := func(n int) string { return "localhost/bench/tree:" + kfiles(n) }
	for _, n := range sizes {
		tarball := filepath.Join(dir, "tree.tar")
		if out, err := exec.Command("tar", "-C", trees[n], "-cf", tarball, ".").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("tar %s: %w: %s", trees[n], err, out)
		}
		for i, st := range stores {
			d, err := st.podman(nil, st.real["runc"], "import", "--quiet", "--change", "CMD /bin/true", tarball, name(n))
			if err != nil {
				os.Remove(tarball)
				return nil, err
			}
			if i == 0 {
				g.importS[n] = d
				fmt.Fprintf(os.Stderr, "bench: rootfs: podman import of the %s-file tree: %.1fs\n", kfiles(n), d)
			}
		}
		os.Remove(tarball)
	}
	seq := 0
	fresh := func() int { seq++; return pmHostID + seq*benchSize }
	runOnce := func(method string, n int) (float64, error) {
		args := []string{"run", "--rm", "--network", "none"}
		st, rt := pe, pe.real["runc"]
		switch method {
		case pmIDMap:
			args = append(args, uidmapArgs(fresh())...)
		case pmCopy:
			st, rt = fb, fb.real["runc"]
			args = append(args, uidmapArgs(fresh())...)
		case pmShim:
			rt = pe.shim["runc"]
			args = append(args, shimMapArgs(fresh())...)
		}
		return st.podman(nil, rt, append(args, name(n), "true")...)
	}
	type job struct {
		method string
		n      int
	}
	var jobs []job
	for _, n := range sizes {
		for _, m := range []string{pmPlain, pmIDMap, pmShim} {
			jobs = append(jobs, job{m, n})
		}
	}
	for run := 0; run < 1+o.pmGrowthN; run++ {
		for _, i := range rng.Perm(len(jobs)) {
			if err := stopped(); err != nil {
				return nil, err
			}
			j := jobs[i]
			d, err := runOnce(j.method, j.n)
			if err != nil {
				return nil, err
			}
			if run > 0 { // the first run of each is a warm-up
				g.times[j.method][j.n] = append(g.times[j.method][j.n], d)
			}
		}
	}
	// The fallback copies the whole image for every new mapping: a few runs,
	// smallest image first.
	for _, n := range sizes {
		for k := 0; k < o.pmCopyN; k++ {
			if err := stopped(); err != nil {
				return nil, err
			}
			d, err := runOnce(pmCopy, n)
			if err != nil {
				return nil, err
			}
			g.times[pmCopy][n] = append(g.times[pmCopy][n], d)
			fmt.Fprintf(os.Stderr, "bench: rootfs: podman --uidmap chown-copy fallback, %s files: %.1fs\n", kfiles(n), d)
		}
	}
	return g, nil
}

func (g *pmGrowth) render(sizes []int) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	if !sectionHead(&b, "\n### podman: first use of an image with a new mapping", g.skipped) {
		return b.String()
	}
	p("Each tree imported as an image (`podman import`: ")
	for i, n := range sizes {
		if i > 0 {
			p(", ")
		}
		p("%s files %.1f s", kfiles(n), g.importS[n])
	}
	p("), store on the same ext4 image. Wall time of `podman run --rm --network none IMAGE true` with runc, every run with a mapping podman has not used before (a fresh host range): ")
	p("**%s**: podman 4.3.1's default here, ID-mapped overlay lower layers, no copy; **%s**: the same in a second store whose overlay driver was told (by the `idmapped-lower-dir-false` cache file of its probe, podman 4.3.1 has no other switch) that the kernel cannot ID-map overlay lowers: containers/storage's fallback on kernels or filesystems without that support, a copy of the image chowned into the mapping on first use of each mapping; **%s**: podman with the shim as its runtime and a mapping annotation; **%s**: reference. ", pmIDMap, pmCopy, pmShim, pmPlain)
	p("%d runs each after a warm-up run (the fallback: %d run each). Median [p25 – p75], ms.\n\n", g.runs, g.copyRuns)
	p("| files |")
	for _, m := range pmMethods {
		p(" %s |", m)
	}
	p("\n|---|")
	for range pmMethods {
		p("---|")
	}
	p("\n")
	for _, n := range sizes {
		p("| %s |", kfiles(n))
		for _, m := range pmMethods {
			if xs := g.times[m][n]; len(xs) > 0 {
				p(" %s |", spread(xs))
			} else {
				p(" – |")
			}
		}
		p("\n")
	}
	return b.String()
}
