package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/idmount"
	"github.com/userns-shim/userns-shim/pkg/mapping"
	"github.com/userns-shim/userns-shim/pkg/nsexec"
)

// Kinds of rootfs measurement.
const (
	caseHelper  = "helper"  // nsexec.OpenUserNS: once per create, shared with the volumes
	caseDir     = "dir"     // PrepareRootfs + Release of a directory rootfs
	caseOverlay = "overlay" // PrepareRootfs + Release of an overlay over the tree
	caseUmount  = "umount"  // umount of such an overlay alone (PrepareRootfs does one)
	filesPerDir = 100       // files per directory in a tree
)

type rootfsCase struct {
	kind  string
	files int
}

// rootfsSample is one direct measurement, in seconds. For caseHelper,
// prepare is OpenUserNS and release the fd's Close.
type rootfsSample struct {
	round            int
	c                rootfsCase
	prepare, release float64
}

func (s rootfsSample) total() float64 { return s.prepare + s.release }

// rootfsResult is the rootfs part.
type rootfsResult struct {
	sizes       []int
	img         string    // what the trees live on
	build       []float64 // seconds to build each tree
	inodes      []int     // inodes of each tree (files, directories, links)
	rounds      int
	warmup      int
	chownRuns   int
	prep        map[rootfsCase][]rootfsSample // by round
	chown       map[int][]float64             // seconds, by run
	e2eRounds   int
	e2eVariants []*variant
	e2e         map[string][]sample
	e2eBig      int // tree size of the end-to-end overlay variants' big tree
	e2eSmall    int
	pm          *pmGrowth // podman's first use of each tree as an image
}

func benchMappingValue() mapping.Mapping {
	r := []specs.LinuxIDMapping{{ContainerID: 0, HostID: benchHostID, Size: benchSize}}
	return mapping.Mapping{UIDs: r, GIDs: r}
}

// kfiles formats a file count: 1000 -> 1k.
func kfiles(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// runRootfs builds the trees on an ext4 image of their own, measures the
// shim's rootfs handling directly and `chown -R`, then end-to-end cycles.
func runRootfs(o options, mk *maker, sd *specDoc, repo, dir, rootfs, rtPath, shimBin string, rng *rand.Rand, sigs chan os.Signal,
	check func([]*variant) error, rounds roundsFunc) (_ *rootfsResult, retErr error) {
	r := &rootfsResult{sizes: o.treeSizes, rounds: o.rootRounds, warmup: o.warmup, chownRuns: o.chownRuns, e2eRounds: o.rounds,
		prep: map[rootfsCase][]rootfsSample{}, chown: map[int][]float64{}}
	stopped := func() error {
		select {
		case s := <-sigs:
			return fmt.Errorf("rootfs: stopped by %v", s)
		default:
			return nil
		}
	}

	// The image: a sparse file on the work dir's filesystem, ext4 with its
	// inode tables initialised now (lazy init would write in the background
	// while the bench measures), small files inline in their inodes.
	img := filepath.Join(dir, "rootfs.img")
	mnt := filepath.Join(dir, "img")
	total := 0
	for _, n := range r.sizes {
		total += n + n/filesPerDir + 100
	}
	inodes := total + total/4 + 20000
	if o.pmGrowthN > 0 {
		// podman's image layers, in a second store too for the fallback,
		// and a chowned copy per fallback run.
		inodes += total
		if o.pmCopyN > 0 {
			inodes += total * (1 + o.pmCopyN)
		}
	}
	f, err := os.Create(img)
	if err != nil {
		return nil, err
	}
	err = f.Truncate(int64(o.imgMiB) << 20)
	f.Close()
	defer os.Remove(img)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "bench: rootfs: making a %d MiB ext4 image for %d inodes\n", o.imgMiB, inodes)
	mkfs := []string{"-q", "-F", "-N", strconv.Itoa(inodes), "-O", "inline_data", "-E", "lazy_itable_init=0,lazy_journal_init=0", img}
	if out, err := exec.Command("mkfs.ext4", mkfs...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mkfs.ext4 %s: %w: %s", strings.Join(mkfs, " "), err, out)
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.Command("mount", "-t", "ext4", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mount -o loop %s: %w: %s", img, err, out)
	}
	defer func() {
		// The loop device goes with the mount (mount -o loop sets autoclear).
		if err := unix.Unmount(mnt, 0); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("umount %s: %w", mnt, err))
		}
	}()
	r.img = fmt.Sprintf("ext4 (journal, inline_data) on a %d MiB loop-mounted image file", o.imgMiB)
	if err := os.Chmod(mnt, 0o755); err != nil {
		return nil, err
	}

	trees := map[int]string{}
	for _, n := range r.sizes {
		tree := filepath.Join(mnt, "trees", kfiles(n))
		t := time.Now()
		count, err := buildTree(tree, filepath.Join(rootfs, "bin", "busybox"), n)
		if err != nil {
			return nil, fmt.Errorf("build tree of %d files: %w", n, err)
		}
		r.build = append(r.build, time.Since(t).Seconds())
		r.inodes = append(r.inodes, count)
		trees[n] = tree
		fmt.Fprintf(os.Stderr, "bench: rootfs: tree of %d files (%d inodes) built in %.1fs\n", n, count, time.Since(t).Seconds())
		if err := stopped(); err != nil {
			return nil, err
		}
	}
	if err := syncfs(mnt); err != nil {
		return nil, err
	}

	// One user-namespace fd for every PrepareRootfs, as one shim create
	// uses one per mapping.
	m := benchMappingValue()
	ns, err := nsexec.OpenUserNS(m)
	if err != nil {
		return nil, err
	}
	defer ns.Close()

	stagingRoot := filepath.Join(mk.stateRoot, "rootfs-staging")
	if err := os.Mkdir(stagingRoot, 0o711); err != nil {
		return nil, err
	}
	seq := 0
	measure := func(c rootfsCase, verify bool) (s rootfsSample, err error) {
		seq++
		defer func() { s.c = c }()
		switch c.kind {
		case caseHelper:
			t := time.Now()
			f, err := nsexec.OpenUserNS(m)
			s.prepare = time.Since(t).Seconds()
			if err != nil {
				return s, err
			}
			t = time.Now()
			err = f.Close()
			s.release = time.Since(t).Seconds()
			return s, err
		case caseDir:
			return prepareOnce(trees[c.files], idmount.RootfsDir, ns, m, filepath.Join(stagingRoot, strconv.Itoa(seq)), verify)
		case caseOverlay:
			base := filepath.Join(mnt, "ovl", strconv.Itoa(seq))
			merged, err := mountOverlay(trees[c.files], base)
			if err != nil {
				return s, err
			}
			defer func() {
				err = errors.Join(err, unmountOverlay(merged, base))
			}()
			return prepareOnce(merged, idmount.RootfsOverlay, ns, m, filepath.Join(stagingRoot, strconv.Itoa(seq)), verify)
		case caseUmount:
			base := filepath.Join(mnt, "ovl", strconv.Itoa(seq))
			merged, err := mountOverlay(trees[c.files], base)
			if err != nil {
				return s, err
			}
			t := time.Now()
			err = unix.Unmount(merged, 0)
			s.prepare = time.Since(t).Seconds()
			if err != nil {
				return s, fmt.Errorf("umount %s: %w", merged, err)
			}
			return s, os.RemoveAll(base)
		}
		return s, fmt.Errorf("unknown case %q", c.kind)
	}
	cases := []rootfsCase{{caseHelper, 0}}
	for _, kind := range []string{caseDir, caseOverlay, caseUmount} {
		for _, n := range r.sizes {
			cases = append(cases, rootfsCase{kind, n})
		}
	}
	start := time.Now()
	for round := 0; round < o.warmup+o.rootRounds; round++ {
		if err := stopped(); err != nil {
			return nil, err
		}
		for _, i := range rng.Perm(len(cases)) {
			s, err := measure(cases[i], round == 0)
			if err != nil {
				return nil, fmt.Errorf("rootfs %s %d files, round %d: %w", cases[i].kind, cases[i].files, round, err)
			}
			if round >= o.warmup {
				s.round = round - o.warmup
				r.prep[s.c] = append(r.prep[s.c], s)
			}
		}
		if (round+1)%max(1, (o.warmup+o.rootRounds)/4) == 0 {
			fmt.Fprintf(os.Stderr, "bench: rootfs handling: %d/%d rounds (%.0fs)\n", round+1, o.warmup+o.rootRounds, time.Since(start).Seconds())
		}
	}

	// chown -R to the mapped root, timed; back to 0:0 and synced, untimed.
	// One untimed warm-up run per tree.
	chownTo := func(tree string, uid int) (float64, error) {
		t := time.Now()
		out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", uid, uid), tree).CombinedOutput()
		d := time.Since(t).Seconds()
		if err != nil {
			return d, fmt.Errorf("chown -R %s: %w: %s", tree, err, out)
		}
		return d, nil
	}
	start = time.Now()
	chownWarmup := min(o.warmup, 1)
	for run := 0; run < chownWarmup+o.chownRuns; run++ {
		if err := stopped(); err != nil {
			return nil, err
		}
		for _, i := range rng.Perm(len(r.sizes)) {
			n := r.sizes[i]
			d, err := chownTo(trees[n], benchHostID)
			if err != nil {
				return nil, err
			}
			if _, err := chownTo(trees[n], 0); err != nil {
				return nil, err
			}
			if err := syncfs(mnt); err != nil {
				return nil, err
			}
			if run >= chownWarmup {
				r.chown[n] = append(r.chown[n], d)
			}
		}
		fmt.Fprintf(os.Stderr, "bench: chown -R: %d/%d runs (%.0fs)\n", run+1, chownWarmup+o.chownRuns, time.Since(start).Seconds())
	}

	if o.pmGrowthN > 0 {
		if r.pm, err = podmanGrowth(o, repo, mnt, mk.stateRoot, shimBin, r.sizes, trees, rng, stopped); err != nil {
			return nil, err
		}
		if r.pm.skipped != "" {
			fmt.Fprintln(os.Stderr, "bench: rootfs: podman SKIPPED:", r.pm.skipped)
		}
	}

	// End to end: container cycles on those trees.
	if err := r.endToEnd(o, mk, sd, mnt, trees, rtPath, shimBin, check, rounds); err != nil {
		return nil, err
	}
	if left := mountsBelow(mnt); len(left) > 0 {
		return nil, fmt.Errorf("mounts left on the image: %s", strings.Join(left, ", "))
	}
	return r, nil
}

// prepareOnce times idmount.PrepareRootfs and Release of path, checks that
// the handling was of kind want, and, when verify is set, that a file owned
// by host root on disk shows as the mapped root through the result.
func prepareOnce(path, want string, ns *os.File, m mapping.Mapping, staging string, verify bool) (s rootfsSample, err error) {
	t := time.Now()
	rf, err := idmount.PrepareRootfs(path, ns, m, staging)
	s.prepare = time.Since(t).Seconds()
	if err != nil {
		return s, err
	}
	defer func() {
		if err != nil {
			_ = rf.Release()
		}
	}()
	if rf.Kind != want {
		return s, fmt.Errorf("PrepareRootfs(%s) did %q, want %q: %s", path, rf.Kind, want, rf.Reason)
	}
	if verify {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(rf.Path, "bin", "busybox"), &st); err != nil {
			return s, err
		}
		if st.Uid != benchHostID || st.Gid != benchHostID {
			return s, fmt.Errorf("through the prepared rootfs %s, bin/busybox is owned by %d:%d, want the mapped root %d:%d",
				rf.Path, st.Uid, st.Gid, benchHostID, benchHostID)
		}
	}
	t = time.Now()
	err = rf.Release()
	s.release = time.Since(t).Seconds()
	return s, err
}

// mountOverlay mounts an overlay of lower with fresh upper and work dirs
// below base, on base/merged, as a CRI runtime hands over a rootfs.
func mountOverlay(lower, base string) (merged string, err error) {
	merged = filepath.Join(base, "merged")
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			return "", err
		}
	}
	data := "lowerdir=" + lower + ",upperdir=" + filepath.Join(base, "upper") + ",workdir=" + filepath.Join(base, "work")
	if err := unix.Mount("overlay", merged, "overlay", 0, data); err != nil {
		os.RemoveAll(base)
		return "", fmt.Errorf("mount overlay -o %s on %s: %w", data, merged, err)
	}
	return merged, nil
}

// unmountOverlay unmounts what is mounted on merged (the overlay the shim
// re-mounted, or the original) and removes base.
func unmountOverlay(merged, base string) error {
	if err := unix.Unmount(merged, 0); err != nil {
		if !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("umount %s: %w", merged, err)
		}
		if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("umount -l %s: %w", merged, err)
		}
	}
	return os.RemoveAll(base)
}

func syncfs(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// buildTree makes a busybox rootfs at root plus files small files, 100 a
// directory, below usr/share/bench, and returns how many inodes it holds.
func buildTree(root, busybox string, files int) (int, error) {
	if err := populateRootfs(root, busybox); err != nil {
		return 0, err
	}
	content := []byte("a file of the bench image, small enough to live in its inode\n")
	d := ""
	for i := 0; i < files; i++ {
		if i%filesPerDir == 0 {
			d = filepath.Join(root, "usr", "share", "bench", fmt.Sprintf("d%05d", i/filesPerDir))
			if err := os.MkdirAll(d, 0o755); err != nil {
				return 0, err
			}
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%03d", i%filesPerDir)), content, 0o644); err != nil {
			return 0, err
		}
	}
	count := 0
	err := filepath.WalkDir(root, func(string, os.DirEntry, error) error { count++; return nil })
	return count, err
}

// endToEnd runs container cycles on overlay and directory rootfs of the
// smallest and the largest tree: the bare runtime on the big overlay, the
// shim with a mapping on both overlays and on the big tree as a directory.
func (r *rootfsResult) endToEnd(o options, mk *maker, sd *specDoc, mnt string, trees map[int]string, rtPath, shimBin string,
	check func([]*variant) error, rounds roundsFunc) error {
	small, big := r.sizes[0], r.sizes[len(r.sizes)-1]
	r.e2eSmall, r.e2eBig = small, big
	rtName := filepath.Base(rtPath)
	type def struct {
		name, desc, bin string
		mapped          bool
		files           int
		overlay         bool
	}
	defs := []def{
		{"bare+ovl-" + kfiles(big), rtName + " itself, overlay rootfs over the " + kfiles(big) + "-file tree", rtPath, false, big, true},
		{"shim+map+ovl-" + kfiles(small), "shim with a mapping, overlay rootfs over the " + kfiles(small) + "-file tree", shimBin, true, small, true},
		{"shim+map+ovl-" + kfiles(big), "shim with a mapping, overlay rootfs over the " + kfiles(big) + "-file tree", shimBin, true, big, true},
		{"shim+map+dir-" + kfiles(big), "shim with a mapping, the " + kfiles(big) + "-file tree as a directory rootfs", shimBin, true, big, false},
	}
	for _, d := range defs {
		name := "bundle-e2e-" + idName(d.name)
		bundleDir := filepath.Join(sd.dir, name)
		rootPath := trees[d.files]
		if d.overlay {
			rootPath = filepath.Join(bundleDir, "rootfs")
		}
		bo := bundleOpts{rootfs: rootPath}
		if d.mapped {
			bo.annotations = mapAnnotation()
		}
		b, err := sd.write(name, bo)
		if err != nil {
			return err
		}
		v, err := mk.variant("e2e", d.name, d.desc, d.bin, rtPath, b)
		if err != nil {
			return err
		}
		if d.overlay {
			if err := os.Mkdir(rootPath, 0o755); err != nil {
				return err
			}
			lower, seq := trees[d.files], 0
			base := func() string { return filepath.Join(mnt, "e2e", idName(d.name), strconv.Itoa(seq)) }
			v.before = func() error {
				seq++
				tmp := base()
				if err := os.MkdirAll(tmp, 0o755); err != nil {
					return err
				}
				for _, sub := range []string{"upper", "work"} {
					if err := os.Mkdir(filepath.Join(tmp, sub), 0o755); err != nil {
						return err
					}
				}
				data := "lowerdir=" + lower + ",upperdir=" + filepath.Join(tmp, "upper") + ",workdir=" + filepath.Join(tmp, "work")
				if err := unix.Mount("overlay", rootPath, "overlay", 0, data); err != nil {
					return fmt.Errorf("mount overlay -o %s on %s: %w", data, rootPath, err)
				}
				return nil
			}
			v.after = func() error {
				if err := unix.Unmount(rootPath, 0); err != nil {
					if err := unix.Unmount(rootPath, unix.MNT_DETACH); err != nil {
						return fmt.Errorf("umount %s: %w", rootPath, err)
					}
				}
				return os.RemoveAll(base())
			}
		}
		r.e2eVariants = append(r.e2eVariants, v)
	}
	if err := check(r.e2eVariants); err != nil {
		return err
	}
	var err error
	r.e2e, err = rounds("rootfs end to end", r.e2eVariants, o.rounds, o.warmup, (*variant).cycle)
	return err
}

// totals returns the total (PrepareRootfs + Release) of case c by round, in
// seconds.
func (r *rootfsResult) totals(c rootfsCase) []float64 {
	out := make([]float64, len(r.prep[c]))
	for i, s := range r.prep[c] {
		out[i] = s.total()
	}
	return out
}

func pick(xs []float64, idx []int) []float64 {
	out := make([]float64, len(idx))
	for i, j := range idx {
		out[i] = xs[j]
	}
	return out
}

// bootstrap2 returns the 95% interval of stat over resamples of two
// independent sets of n1 and n2 runs.
func bootstrap2(rng *rand.Rand, n1, n2 int, stat func(i1, i2 []int) float64) (lo, hi float64) {
	if n1 <= 0 || n2 <= 0 {
		return 0, 0
	}
	stats := make([]float64, bootstrapN)
	i1, i2 := make([]int, n1), make([]int, n2)
	for k := range stats {
		for j := range i1 {
			i1[j] = rng.IntN(n1)
		}
		for j := range i2 {
			i2[j] = rng.IntN(n2)
		}
		stats[k] = stat(i1, i2)
	}
	return quantile(stats, .025), quantile(stats, .975)
}

// growth is the ratio of the median totals of kind at the largest tree and
// at the smallest, with its interval (rounds resampled whole).
func (r *rootfsResult) growth(rng *rand.Rand, kind string) (ratio, lo, hi float64) {
	small, big := r.sizes[0], r.sizes[len(r.sizes)-1]
	a, b := r.totals(rootfsCase{kind, big}), r.totals(rootfsCase{kind, small})
	stat := func(idx, _ []int) float64 { return quantile(pick(a, idx), .5) / quantile(pick(b, idx), .5) }
	all := make([]int, len(a))
	for i := range all {
		all[i] = i
	}
	lo, hi = bootstrap2(rng, len(a), 1, stat)
	return stat(all, nil), lo, hi
}

// chownFactor is chown -R at the largest tree over the rootfs handling of
// kind there.
func (r *rootfsResult) chownFactor(rng *rand.Rand, kind string) (ratio, lo, hi float64) {
	big := r.sizes[len(r.sizes)-1]
	a, c := r.totals(rootfsCase{kind, big}), r.chown[big]
	stat := func(i1, i2 []int) float64 { return quantile(pick(c, i2), .5) / quantile(pick(a, i1), .5) }
	lo, hi = bootstrap2(rng, len(a), len(c), stat)
	return quantile(c, .5) / quantile(a, .5), lo, hi
}

// spread3 is spread with three decimals, for sub-millisecond figures.
func spread3(xs []float64) string {
	return fmt.Sprintf("%.3f [%.3f – %.3f]", ms(quantile(xs, .5)), ms(quantile(xs, .25)), ms(quantile(xs, .75)))
}

func (r *rootfsResult) render(rng *rand.Rand) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	small, big := r.sizes[0], r.sizes[len(r.sizes)-1]
	p("## Growth with image size: the shim's rootfs handling vs `chown -R`\n\n")
	p("Trees: a busybox rootfs plus N small files (%d a directory), on %s; built in ", filesPerDir, r.img)
	for i, n := range r.sizes {
		if i > 0 {
			p(", ")
		}
		p("%.1f s (%s files, %d inodes)", r.build[i], kfiles(n), r.inodes[i])
	}
	p(". Warm cache: the trees were just written.\n\n")
	p("- **shim, directory rootfs**: `idmount.PrepareRootfs` (an ID-mapped recursive clone of the tree onto a staging dir on tmpfs) + `Release`, called by the bench with one user-namespace fd, as the shim does in `create`.\n")
	p("- **shim, overlay rootfs**: an overlay (lower = the tree, fresh upper and work dirs) mounted for each round, untimed, then `PrepareRootfs` (ID-mapped clone of the lower, upper/work chowned to the mapped root, the overlay re-mounted in place over it) + `Release`.\n")
	p("- **chown -R**: `chown -R %d:%d TREE` (GNU coreutils), wall time; owners put back and the filesystem synced, untimed, after each run.\n", benchHostID, benchHostID)
	p("- %d rounds after %d warm-up rounds, all cases once a round, shuffled; chown %d runs after 1 warm-up run. Median [p25 – p75], ms.\n\n", r.rounds, r.warmup, r.chownRuns)
	helper := r.prep[rootfsCase{caseHelper, 0}]
	p("User-namespace helper (`nsexec.OpenUserNS`, once per create, shared by the rootfs and every volume): %s ms (in the bench's process).\n\n",
		spread3(metric2(helper, func(s rootfsSample) float64 { return s.prepare })))
	p("| files | shim dir: PrepareRootfs | Release | total | shim overlay: PrepareRootfs | Release | total | umount of an overlay, alone | chown -R | chown ÷ dir | chown ÷ overlay |\n")
	p("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range r.sizes {
		d, ov := r.prep[rootfsCase{caseDir, n}], r.prep[rootfsCase{caseOverlay, n}]
		prep := func(s rootfsSample) float64 { return s.prepare }
		rel := func(s rootfsSample) float64 { return s.release }
		ch := quantile(r.chown[n], .5)
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f× | %.0f× |\n", kfiles(n),
			spread3(metric2(d, prep)), spread3(metric2(d, rel)), spread3(r.totals(rootfsCase{caseDir, n})),
			spread3(metric2(ov, prep)), spread3(metric2(ov, rel)), spread3(r.totals(rootfsCase{caseOverlay, n})),
			spread3(r.totals(rootfsCase{caseUmount, n})), spread(r.chown[n]), ch/quantile(r.totals(rootfsCase{caseDir, n}), .5), ch/quantile(r.totals(rootfsCase{caseOverlay, n}), .5))
	}
	for _, kind := range []string{caseDir, caseOverlay} {
		g, lo, hi := r.growth(rng, kind)
		p("\n%s rootfs: total at %s files ÷ at %s = %.3f [%.3f – %.3f].", kind, kfiles(big), kfiles(small), g, lo, hi)
	}
	p("\n\nThe overlay handling unmounts the CRI runtime's overlay once; the \"umount of an overlay, alone\" column times just that on a fresh overlay: ")
	p("unmounting an overlay syncs its upper filesystem (here the image's ext4, journaled, on a loop device), which costs the same whatever the image's size.")
	if r.pm != nil {
		p("\n%s", r.pm.render(r.sizes))
	}
	p("\n\n### End to end: container cycles on those trees\n\n")
	p("%d rounds after %d warm-up rounds. The overlay variants get a fresh overlay (lower = the tree) mounted on the bundle's `rootfs` before each cycle and unmounted after it, untimed, as a CRI runtime would. Median [p25 – p75], ms.\n\n", r.e2eRounds, r.warmup)
	p("| variant | create | cycle | create − %s create (paired) | cycle × %s |\n|---|---|---|---|---|\n", r.e2eVariants[0].name, r.e2eVariants[0].name)
	base := r.e2e[r.e2eVariants[0].name]
	for _, v := range r.e2eVariants {
		ss := r.e2e[v.name]
		p("| %s | %s | %s | %s | %.3f |\n", v.name, spread(metric(ss, createOf)), spread(metric(ss, cycleOf)),
			signedSpread(paired(ss, base, createOf)), quantile(metric(ss, cycleOf), .5)/quantile(metric(base, cycleOf), .5))
	}
	bigName, smallName := "shim+map+ovl-"+kfiles(big), "shim+map+ovl-"+kfiles(small)
	p("\nshim+map create with the %s-file overlay − with the %s-file overlay (paired): %s ms.\n", kfiles(big), kfiles(small),
		signedSpread(paired(r.e2e[bigName], r.e2e[smallName], createOf)))
	return b.String()
}

func metric2(ss []rootfsSample, f func(rootfsSample) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

func (r *rootfsResult) targetRows(rng *rand.Rand) string {
	var b strings.Builder
	small, big := r.sizes[0], r.sizes[len(r.sizes)-1]
	for _, kind := range []string{caseDir, caseOverlay} {
		g, lo, hi := r.growth(rng, kind)
		fmt.Fprintf(&b, "| %s rootfs handling at %s files ≤ %.1f × at %s (PrepareRootfs + Release, ratio of medians) | %.3f × [%.3f – %.3f]; %.3f ms vs %.3f ms | %s |\n",
			kind, kfiles(big), targetRootfsGrowth, kfiles(small), g, lo, hi,
			ms(quantile(r.totals(rootfsCase{kind, big}), .5)), ms(quantile(r.totals(rootfsCase{kind, small}), .5)), verdict(g <= targetRootfsGrowth))
	}
	for _, kind := range []string{caseDir, caseOverlay} {
		f, lo, hi := r.chownFactor(rng, kind)
		fmt.Fprintf(&b, "| `chown -R` at %s files ≥ %d × the %s rootfs handling there | %.0f × [%.0f – %.0f]; %.1f ms vs %.3f ms | %s |\n",
			kfiles(big), targetChownFactor, kind, f, lo, hi, ms(quantile(r.chown[big], .5)),
			ms(quantile(r.totals(rootfsCase{kind, big}), .5)), verdict(f >= targetChownFactor))
	}
	return b.String()
}

// summaryCSV is one row per tree size and method: medians and quartiles.
func (r *rootfsResult) summaryCSV() []byte {
	var b strings.Builder
	b.WriteString("files,inodes,method,median_ms,p25_ms,p75_ms,samples\n")
	row := func(n, inodes int, method string, xs []float64) {
		fmt.Fprintf(&b, "%d,%d,%s,%.4f,%.4f,%.4f,%d\n", n, inodes, method, ms(quantile(xs, .5)), ms(quantile(xs, .25)), ms(quantile(xs, .75)), len(xs))
	}
	for i, n := range r.sizes {
		row(n, r.inodes[i], "shim-dir-rootfs", r.totals(rootfsCase{caseDir, n}))
		row(n, r.inodes[i], "shim-overlay-rootfs", r.totals(rootfsCase{caseOverlay, n}))
		row(n, r.inodes[i], "overlay-umount-alone", r.totals(rootfsCase{caseUmount, n}))
		row(n, r.inodes[i], "chown-R", r.chown[n])
	}
	if r.pm != nil {
		for i, n := range r.sizes {
			for _, m := range pmMethods {
				if xs := r.pm.times[m][n]; len(xs) > 0 {
					row(n, r.inodes[i], strings.NewReplacer(" ", "-", "(", "", ")", "", ",", "").Replace(m), xs)
				}
			}
		}
	}
	row(0, 0, "userns-helper", r.totals(rootfsCase{caseHelper, 0}))
	return []byte(b.String())
}

// rawCSV is every direct sample and chown run.
func (r *rootfsResult) rawCSV() []byte {
	var b strings.Builder
	b.WriteString("method,files,round,prepare_ms,release_ms,total_ms\n")
	cases := make([]rootfsCase, 0, len(r.prep))
	for c := range r.prep {
		cases = append(cases, c)
	}
	slices.SortFunc(cases, func(a, b rootfsCase) int {
		if a.kind != b.kind {
			return strings.Compare(a.kind, b.kind)
		}
		return a.files - b.files
	})
	for _, c := range cases {
		for _, s := range r.prep[c] {
			fmt.Fprintf(&b, "%s,%d,%d,%.4f,%.4f,%.4f\n", c.kind, c.files, s.round, ms(s.prepare), ms(s.release), ms(s.total()))
		}
	}
	for _, n := range r.sizes {
		for i, d := range r.chown[n] {
			fmt.Fprintf(&b, "chown-R,%d,%d,,,%.4f\n", n, i, ms(d))
		}
	}
	return []byte(b.String())
}

// chart plots time against files, log-log.
func (r *rootfsResult) chart() chart {
	var xs []float64
	for _, n := range r.sizes {
		xs = append(xs, float64(n))
	}
	line := func(name, color string, get func(n int) []float64) series {
		s := series{name: name, color: color, xs: xs, labels: true}
		for _, n := range r.sizes {
			v := get(n)
			s.ys = append(s.ys, ms(quantile(v, .5)))
			s.lo = append(s.lo, ms(quantile(v, .25)))
			s.hi = append(s.hi, ms(quantile(v, .75)))
		}
		return s
	}
	ss := []series{
		line("chown -R", "#d62728", func(n int) []float64 { return r.chown[n] }),
		line("shim: overlay rootfs (ID-mapped lower, re-mount)", "#1f77b4", func(n int) []float64 { return r.totals(rootfsCase{caseOverlay, n}) }),
		line("shim: directory rootfs (ID-mapped clone)", "#2ca02c", func(n int) []float64 { return r.totals(rootfsCase{caseDir, n}) }),
	}
	if g := r.pm; g != nil && g.skipped == "" {
		pm := func(name, color, method string) {
			for _, n := range r.sizes {
				if len(g.times[method][n]) == 0 {
					return
				}
			}
			s := line(name, color, func(n int) []float64 { return g.times[method][n] })
			s.dash = true
			ss = append(ss, s)
		}
		pm("whole podman run: --uidmap, chown-copy fallback (first use)", "#ff7f0e", pmCopy)
		pm("whole podman run: --uidmap, ID-mapped layers", "#9467bd", pmIDMap)
		pm("whole podman run: podman + shim", "#17becf", pmShim)
	}
	return chart{
		title:  "Rootfs for a user namespace vs files in the image",
		xlabel: "files in the image",
		ylabel: "ms (median, bars p25–p75)",
		logX:   true, logY: true,
		xfmt:   func(x float64) string { return kfiles(int(x)) },
		series: ss,
	}
}
