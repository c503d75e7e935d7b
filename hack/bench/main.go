// Command bench measures what userns-shim costs on top of the real OCI
// runtime and the clients that call it. It is not shipped. Run it as root
// from inside the repository (make bench runs every part with -o
// docs/benchmarks.md):
//
//	go run ./hack/bench [-o FILE] [-parts cycle,stub,memory,volumes,rootfs,concurrency,cri,podman,micro]
//	                    [-n 100] [-stub-n 100] [-runtime runc|crun] [-raw FILE.csv] [-shim BIN] ...
//
// (go run ./hack/bench -h lists every flag.) It builds the shim and
// hack/bench/noopwrapper (a Go program that only execs the runtime: the floor
// of any Go wrapper) with -ldflags "-s -w", makes a busybox-static bundle,
// and compares these variants:
//
//	bare                   the runtime itself
//	noop                   noopwrapper over the runtime
//	shim                   userns-shim in passthrough (no mapping source in config.json)
//	shim+map               userns-shim with a userns-shim.io/uid-mappings annotation: a user
//	                       namespace, the directory rootfs ID-mapped by the shim
//	shim+map+rootfs+10vol  the same plus 10 bind-mount volumes the shim ID-maps
//	bare+userns            the runtime with the same mapping written in config.json (no shim,
//	                       no ID-mapped mounts): what the runtime's own user namespace costs
//	bare+10vol             the runtime with the same 10 bind-mount volumes, no user namespace
//
// The shims' state_dir is on a tmpfs the bench mounts in its work directory
// (staging directories on a disk filesystem cost a millisecond or more per
// mkdir), as /run is on a normal node.
//
// -parts selects what runs (default all):
//
// cycle, container cycles: -n rounds (after -warmup rounds that are not
// recorded); each round runs one cycle of every variant, in a freshly
// shuffled order. A cycle is `create --bundle B --pid-file P ID`, `start ID`,
// wait for the container's init to exit, `delete ID`. The wait is
// deterministic and costs no process: the bench is a child subreaper, so the
// container's init (orphaned when the runtime's create returns) becomes its
// child; it waits on a pidfd and reaps the init before delete, so every
// delete finds a stopped container whose init is gone. Every variant has its
// own --root and every cycle a fresh container ID. Before each cycle
// (untimed) config.json is put back to its original bytes, because the
// mapping variant rewrites it.
//
// stub, per call: the same command lines and config.json, -stub-n rounds,
// with the runtime replaced by busybox's true, which exits at once. A real
// runc create varies by several ms from call to call on a busy machine; the
// stub isolates what each wrapper itself costs per call, to well under
// 0.1 ms.
//
// memory: -mem-n rounds of cycles of bare, noop, shim, shim+map and
// shim+map+rootfs+10vol, against the stub and the real runtime, with create
// run under GNU time, whose %M is wait4's Maxrss of the shim (and of the
// children it waited for). After every part the bench counts processes
// running the shim's binary: none may stay.
//
// volumes, growth with volumes: container cycles (-vol-n rounds) of the shim
// with a mapping and of the bare runtime, each with 0, 1, 10, 50 and 100
// bind-mount volumes (-volumes), interleaved, plus the shim's create with as
// many volumes against the stub runtime (-stub-n rounds): ms per volume.
//
// rootfs, growth with image size: trees of 1k, 10k and 100k files (-rootfs-files;
// a busybox rootfs plus that many small files) are built once on an ext4
// image of its own (-img-size MiB, loop-mounted in the work directory, removed
// at the end: mass deletes on the root filesystem would slow down everything
// after them). The bench then calls idmount.PrepareRootfs and Release itself,
// with one user-namespace fd from nsexec.OpenUserNS (as the shim does), for
// each tree as a directory rootfs and as the lower layer of an overlay
// mounted for the round, and, for reference, the plain unmount of such an
// overlay (-rootfs-n rounds, every case once a round, shuffled), and times
// `chown -R` of each tree to the mapped root (-chown-n rounds; the
// owners are put back, untimed, after each). With podman installed, each
// tree is imported as an image and `podman run --rm` timed with a mapping
// podman has not used before: podman's own --uidmap (ID-mapped layers on
// this kernel), its chown-copy fallback (a second store whose overlay
// driver is told it cannot ID-map lowers), and podman with the shim
// (-podman-growth-n, -podman-copy-n runs). Last, end-to-end container
// cycles (-n rounds) on overlay and directory rootfs of those trees, through
// the bare runtime and the shim with a mapping.
//
// concurrency: batches of 1, 10 and 50 (-conc) sandbox containers, half
// with containerd's and half with CRI-O's annotations, created at once
// through the shim in mode allocate (-conc-n batches each): throughput,
// p50/p99 latency, and collisions of their host ranges in
// /proc/<pid>/uid_map and in `userns-shim shim pods --json`.
//
// cri: a private containerd 2.4 and CRI-O 1.34, started by hack/e2e's own
// scripts (containerd2.sh, crio.sh; the binaries from hack/e2e/tools.sh),
// with the handlers runc, crun, noop-runc and userns-shim-{runc,crun}; pods
// of one busybox container through crictl (runp+create+start, then
// stop+rm+stopp+rmp), with and without hostUsers:false (CRI userns_options),
// -cri-n rounds. A handler the daemon or runtime refuses is reported with
// the daemon's error.
//
// podman: `podman run --rm` of the busybox image with runc and crun: bare,
// podman's --uidmap, the shim in passthrough and the shim with a mapping
// (-podman-n rounds).
//
// micro: the Go micro-benchmarks of the pure packages (go test -bench).
//
// The report gives medians with p25/p75, per-round paired differences,
// ratios to the bare runtime, and PASS/MISS for the targets of issue 6
// (never a failing exit status), with bootstrap intervals. A part whose
// client is missing is reported as skipped with the reason. With -o, the
// report is written to FILE and, next to it, bench-rootfs.csv and the plots
// bench-rootfs.svg and bench-volumes.svg, with PNG copies when rsvg-convert
// (Debian: librsvg2-bin) is installed.
//
// With -runtime crun on a host with the hybrid cgroup layout, the bench
// re-executes itself once inside a private mount namespace with the cgroup2
// mount at /sys/fs/cgroup/unified removed (crun 1.8.1 refuses the hybrid
// layout), so crun is then called directly, without a wrapper script. The
// host's mounts are not changed.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	annotationUIDMappings = "userns-shim.io/uid-mappings"
	benchMapping          = "0:200000:65536"
	benchHostID           = 200000 // benchMapping's host ID of container ID 0
	benchSize             = 65536
	envInNamespace        = "USERNS_SHIM_BENCH_IN_MOUNTNS"
	cgroup2Hybrid         = "/sys/fs/cgroup/unified"

	targetCycleRatio    = 1.10 // shim passthrough cycle / bare runtime cycle
	targetPerCallMs     = 1.0  // shim passthrough - noop floor, per call
	targetVolCycleRatio = 1.20 // shim+map+rootfs+10vol cycle / bare runtime cycle
	targetRootfsGrowth  = 1.1  // rootfs handling at the largest tree / at the smallest
	targetChownFactor   = 400  // chown -R / rootfs handling, at the largest tree
	cycleVolumes        = 10   // volumes of the shim+map+rootfs+10vol variant
)

type options struct {
	rounds     int
	stubRounds int
	warmup     int
	rt         string
	out        string
	raw        string
	seed       uint64
	repo       string
	workdir    string
	keep       bool
	shim       string
	compare    string
	parts      map[string]bool
	volRounds  int
	volCounts  []int
	rootRounds int
	chownRuns  int
	treeSizes  []int
	imgMiB     int
	memRounds  int
	concLevels []int
	concRounds int
	criRounds  int
	pmRounds   int
	pmGrowthN  int
	pmCopyN    int
	microTime  string
}

var allParts = []string{"cycle", "stub", "memory", "volumes", "rootfs", "concurrency", "cri", "podman", "micro"}

func main() {
	var o options
	flag.IntVar(&o.rounds, "n", 100, "measured rounds; each round runs every variant once")
	flag.IntVar(&o.stubRounds, "stub-n", 100, "rounds against the stub runtime (busybox true), for the per-call cost")
	flag.IntVar(&o.warmup, "warmup", 3, "rounds run first and not recorded")
	flag.StringVar(&o.rt, "runtime", "runc", "real runtime: runc or crun (a name on PATH or a path)")
	flag.StringVar(&o.out, "o", "", "also write the markdown report to this file")
	flag.StringVar(&o.raw, "raw", "", "write every sample as CSV to this file")
	flag.Uint64Var(&o.seed, "seed", 0, "seed of the per-round shuffle (0: from the clock)")
	flag.StringVar(&o.repo, "repo", "", "repository root (default: the module of the current directory)")
	flag.StringVar(&o.workdir, "workdir", "", "parent of the bench's temporary directory (default $TMPDIR or /tmp)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory")
	flag.StringVar(&o.shim, "shim", "", "use this prebuilt userns-shim binary instead of building ./cmd/userns-shim")
	flag.StringVar(&o.compare, "compare", "", "add variant shim-b: this other userns-shim binary in passthrough, interleaved with the rest (A/B of two builds)")
	parts := flag.String("parts", strings.Join(allParts, ","), "what to run: a comma-separated subset of "+strings.Join(allParts, ","))
	flag.IntVar(&o.volRounds, "vol-n", 20, "measured container rounds of the volumes part")
	volumes := flag.String("volumes", "0,1,10,50,100", "volume counts of the volumes part")
	flag.IntVar(&o.rootRounds, "rootfs-n", 200, "rounds of direct rootfs handling (PrepareRootfs + Release) in the rootfs part")
	flag.IntVar(&o.chownRuns, "chown-n", 7, "timed `chown -R` runs per tree in the rootfs part")
	sizes := flag.String("rootfs-files", "1000,10000,100000", "tree sizes (files) of the rootfs part")
	flag.IntVar(&o.imgMiB, "img-size", 2048, "size in MiB of the ext4 image that holds the rootfs part's trees")
	flag.IntVar(&o.memRounds, "mem-n", 10, "rounds of the memory part")
	flag.StringVar(&o.microTime, "micro-time", "1s", "-benchtime of the Go micro-benchmarks (micro part)")
	conc := flag.String("conc", "1,10,50", "pods created at once in the concurrency part")
	flag.IntVar(&o.concRounds, "conc-n", 6, "batches per level in the concurrency part")
	flag.IntVar(&o.criRounds, "cri-n", 20, "pod start rounds per variant through crictl in the cri part")
	flag.IntVar(&o.pmRounds, "podman-n", 20, "podman run rounds per variant in the podman part")
	flag.IntVar(&o.pmGrowthN, "podman-growth-n", 3, "podman runs per image size and variant in the rootfs part")
	flag.IntVar(&o.pmCopyN, "podman-copy-n", 1, "podman runs per image size on containers/storage's chown-copy fallback in the rootfs part (0: skip; ~85 s at 100k files)")
	flag.Parse()
	if o.rounds < 1 || o.stubRounds < 1 || o.warmup < 0 || o.volRounds < 1 || o.rootRounds < 1 || o.chownRuns < 1 {
		die(errors.New("-n, -stub-n, -vol-n, -rootfs-n and -chown-n must be at least 1 and -warmup at least 0"))
	}
	o.parts = map[string]bool{}
	for _, p := range strings.Split(*parts, ",") {
		if p = strings.TrimSpace(p); !slices.Contains(allParts, p) {
			die(fmt.Errorf("-parts: unknown part %q (known: %s)", p, strings.Join(allParts, ",")))
		}
		o.parts[p] = true
	}
	var err error
	if o.volCounts, err = intList(*volumes, 0); err != nil {
		die(fmt.Errorf("-volumes: %w", err))
	}
	if o.treeSizes, err = intList(*sizes, 1); err != nil || len(o.treeSizes) < 2 {
		die(fmt.Errorf("-rootfs-files: at least two sizes: %v", err))
	}
	if o.concLevels, err = intList(*conc, 1); err != nil {
		die(fmt.Errorf("-conc: %w", err))
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	if os.Geteuid() != 0 {
		die(errors.New("run as root: the bench creates containers"))
	}
	rtPath, err := exec.LookPath(o.rt)
	if err != nil {
		die(fmt.Errorf("runtime %q: %w", o.rt, err))
	}
	if rtPath, err = filepath.Abs(rtPath); err != nil {
		die(err)
	}
	if isCrun(rtPath) && hybridCgroups() && os.Getenv(envInNamespace) == "" {
		die(reexecInMountNS())
	}
	if err := run(o, rtPath); err != nil {
		die(err)
	}
}

func die(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func isCrun(path string) bool {
	out, err := exec.Command(path, "--version").Output()
	return err == nil && strings.HasPrefix(string(out), "crun")
}

func hybridCgroups() bool {
	var st unix.Statfs_t
	return unix.Statfs(cgroup2Hybrid, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// reexecInMountNS replaces the process with itself inside a private mount
// namespace without the hybrid cgroup2 mount. The host is not changed.
func reexecInMountNS() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return fmt.Errorf("crun on a hybrid cgroup host needs unshare(1): %w", err)
	}
	argv := append([]string{unshare, "-m", "--propagation", "private", "sh", "-c",
		`umount ` + cgroup2Hybrid + ` && exec "$0" "$@"`, self}, os.Args[1:]...)
	env := append(os.Environ(), envInNamespace+"=1")
	return fmt.Errorf("exec unshare: %w", syscall.Exec(unshare, argv, env))
}

// afterShimWork names the variant of bare+10vol whose every cycle follows
// the shim's own work (untimed).
const afterShimWork = "bare+10vol+after-shim-work"

// variant is one way of calling the runtime.
type variant struct {
	name   string
	desc   string
	bin    string
	env    []string
	root   string // the runtime's --root
	bundle string
	config []byte // config.json's original bytes
	pid    string // --pid-file
	log    *os.File
	ids    int
	cfg    string   // the shim's config file (USERNS_SHIM_CONFIG)
	wrap   []string // when set, create runs as wrap... bin args (the memory part's GNU time)
	// before and after, when set, run around every cycle, untimed: they
	// mount and unmount an overlay rootfs, as a CRI runtime would.
	before, after func() error
}

// idName turns a variant name into container-ID characters.
func idName(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '.' || r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' {
			return r
		}
		return '-'
	}, name)
}

// sample is one measured cycle, in seconds.
type sample struct {
	round                        int
	create, start, wait, destroy float64
	cpu                          float64 // user+sys of the three calls and the children they waited for
}

func (s sample) cycle() float64 { return s.create + s.start + s.wait + s.destroy }

func run(o options, rtPath string) error {
	began := time.Now()
	repo := o.repo
	if repo == "" {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
			return fmt.Errorf("cannot find the repository (go env GOMOD: %v); run inside it or pass -repo", err)
		}
		repo = filepath.Dir(strings.TrimSpace(string(out)))
	}
	parent := o.workdir
	if parent == "" {
		parent = os.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "userns-shim-bench-")
	if err != nil {
		return err
	}
	// Whatever is still mounted below dir at the end is unmounted (and
	// named: the shim leaving a staging mount is a bug), and dir is removed
	// only when nothing is mounted there any more.
	defer func() {
		left := unmountBelow(dir)
		switch {
		case o.keep:
			fmt.Fprintln(os.Stderr, "bench: kept work dir", dir)
		case left:
			fmt.Fprintln(os.Stderr, "bench: NOT removing", dir, "because something is still mounted below it")
		default:
			os.RemoveAll(dir)
		}
	}()
	// The container's mapped root must be able to reach its rootfs.
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o005 != 0o005 {
			if d != dir {
				return fmt.Errorf("%s is mode %v: the mapped container root cannot reach a bundle below it; use -workdir", d, st.Mode().Perm())
			}
			if err := os.Chmod(d, 0o755); err != nil {
				return err
			}
		}
	}
	// The shims' state_dir (records and staging mount points) on a tmpfs,
	// as /run is on a node: a mkdir on this machine's root ext4 costs ~1 ms.
	stateRoot := filepath.Join(dir, "run")
	if err := os.Mkdir(stateRoot, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", stateRoot, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=64m"); err != nil {
		return fmt.Errorf("mount a tmpfs for the state dirs on %s: %w", stateRoot, err)
	}

	fmt.Fprintln(os.Stderr, "bench: building the shim and the noop wrapper")
	shimBin := filepath.Join(dir, "userns-shim")
	noopBin := filepath.Join(dir, "noopwrapper")
	builds := []struct{ out, pkg string }{{shimBin, "./cmd/userns-shim"}, {noopBin, "./hack/bench/noopwrapper"}}
	if o.shim != "" {
		if shimBin, err = filepath.Abs(o.shim); err != nil {
			return err
		}
		builds = builds[1:]
	}
	compareBin := ""
	if o.compare != "" {
		if compareBin, err = filepath.Abs(o.compare); err != nil {
			return err
		}
	}
	for _, b := range builds {
		cmd := exec.Command("go", "build", "-ldflags", "-s -w", "-o", b.out, b.pkg)
		cmd.Dir = repo
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s: %w", b.pkg, err)
		}
	}

	maxVol := cycleVolumes
	for _, n := range o.volCounts {
		maxVol = max(maxVol, n)
	}
	rootfs, sd, err := makeBundles(dir, rtPath, maxVol)
	if err != nil {
		return err
	}
	plain, err := sd.write("bundle", bundleOpts{})
	if err != nil {
		return err
	}
	mapped, err := sd.write("bundle-map", bundleOpts{annotations: mapAnnotation()})
	if err != nil {
		return err
	}
	mapped10, err := sd.write("bundle-map-10vol", bundleOpts{annotations: mapAnnotation(), volumes: cycleVolumes})
	if err != nil {
		return err
	}
	plain10, err := sd.write("bundle-10vol", bundleOpts{volumes: cycleVolumes})
	if err != nil {
		return err
	}
	userns, err := sd.write("bundle-userns", bundleOpts{userns: true})
	if err != nil {
		return err
	}

	// The stub runtime is busybox's true: it exits at once, so calls through
	// it show what a wrapper itself costs, without the runtime's own noise.
	stubPath := filepath.Join(dir, "stub", "true")
	if err := os.MkdirAll(filepath.Dir(stubPath), 0o755); err != nil {
		return err
	}
	if err := os.Symlink(filepath.Join(rootfs, "bin", "busybox"), stubPath); err != nil {
		return err
	}

	rtName := filepath.Base(rtPath)
	mk := &maker{dir: dir, stateRoot: stateRoot}
	type def struct {
		name, desc, bin string
		b               bundleFile
	}
	mkSet := func(set, rt string, defs []def) ([]*variant, error) {
		var vs []*variant
		for _, v := range defs {
			nv, err := mk.variant(set, v.name, v.desc, v.bin, rt, v.b)
			if err != nil {
				return nil, err
			}
			vs = append(vs, nv)
		}
		return vs, nil
	}
	defs := []def{
		{"bare", rtName + " itself", rtPath, plain},
		{"noop", "do-nothing Go exec wrapper over " + rtName, noopBin, plain},
		{"shim", "userns-shim passthrough (no mapping source)", shimBin, plain},
		{"shim+map", "userns-shim with annotation " + annotationUIDMappings + "=" + benchMapping + " (user namespace; the directory rootfs ID-mapped by the shim)", shimBin, mapped},
		{"shim+map+rootfs+10vol", fmt.Sprintf("shim+map plus %d bind-mount volumes (a directory with one file each) that the shim ID-maps", cycleVolumes), shimBin, mapped10},
		{"bare+userns", rtName + " itself with the same mapping in config.json (user namespace, no ID-mapped mounts)", rtPath, userns},
		{"bare+10vol", fmt.Sprintf("%s itself with the same %d bind-mount volumes, no user namespace", rtName, cycleVolumes), rtPath, plain10},
		{afterShimWork, fmt.Sprintf("bare+10vol, each cycle preceded (untimed) by a stub-runtime cycle of shim+map+rootfs+10vol: %s's create right after the shim's own work, as inside a shim create", rtName), rtPath, plain10},
	}
	if compareBin != "" {
		defs = append(defs, def{"shim-b", "`" + o.compare + "` passthrough (-compare)", compareBin, plain})
	}
	// The stub runs bare's command line with busybox true as the binary;
	// the other bare variants would only repeat it.
	var stubDefs []def
	for _, d := range defs {
		if d.bin == rtPath {
			if d.name != "bare" {
				continue
			}
			d.bin = stubPath
		}
		stubDefs = append(stubDefs, d)
	}
	vs, err := mkSet("real", rtPath, defs)
	if err != nil {
		return err
	}
	stubs, err := mkSet("stub", stubPath, stubDefs)
	if err != nil {
		return err
	}
	// The runtime's create is slower right after other work than right
	// after the previous cycle (caches, the page allocator): inside a shim
	// create it always follows the shim's own work. This variant gives bare
	// runc the same start.
	for _, v := range vs {
		if v.name != afterShimWork {
			continue
		}
		for _, st := range stubs {
			if st.name == "shim+map+rootfs+10vol" {
				v.before = func() error { _, err := st.stubCycle(); return err }
			}
		}
	}

	// The container's init is orphaned when create returns; as a subreaper
	// the bench gets it as a child, watches it with a pidfd and reaps it.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("PR_SET_CHILD_SUBREAPER: %w", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)

	// Check every variant once, with a readable error, before timing anything.
	check := func(vs []*variant) error {
		for _, v := range vs {
			if _, err := v.cycle(); err != nil {
				return fmt.Errorf("variant %s does not work: %w", v.name, err)
			}
		}
		return nil
	}
	if o.parts["cycle"] || o.parts["stub"] || o.parts["memory"] {
		if err := check(vs); err != nil {
			return err
		}
	}

	rng := rand.New(rand.NewPCG(o.seed, 0x75736e73))
	rounds := func(what string, vs []*variant, n, warmup int, step func(*variant) (sample, error)) (map[string][]sample, error) {
		samples := make(map[string][]sample)
		start := time.Now()
		for r := 0; r < warmup+n; r++ {
			select {
			case s := <-sigs:
				return nil, fmt.Errorf("%s: stopped by %v after %d rounds", what, s, r)
			default:
			}
			for _, i := range rng.Perm(len(vs)) {
				v := vs[i]
				s, err := step(v)
				if err != nil {
					return nil, fmt.Errorf("%s: round %d, variant %s: %w", what, r, v.name, err)
				}
				if r >= warmup {
					s.round = r - warmup
					samples[v.name] = append(samples[v.name], s)
				}
			}
			if (r+1)%max(1, (warmup+n)/4) == 0 {
				fmt.Fprintf(os.Stderr, "bench: %s: %d/%d rounds (%.0fs)\n", what, r+1, warmup+n, time.Since(start).Seconds())
			}
		}
		return samples, nil
	}
	res := &results{vs: vs, stubs: stubs, rtName: rtName, warmup: o.warmup, began: began, loadBegan: loadavg()}
	timed := func(part string, f func() error) error {
		if !o.parts[part] {
			return nil
		}
		t := time.Now()
		err := f()
		res.durations = append(res.durations, partTime{part, time.Since(t)})
		res.residues = append(res.residues, residue{part, procsOf(shimBin)})
		return err
	}
	if err := timed("cycle", func() (err error) {
		res.samples, err = rounds("containers", vs, o.rounds, o.warmup, (*variant).cycle)
		return err
	}); err != nil {
		return err
	}
	if err := timed("stub", func() (err error) {
		res.stub, err = rounds("stub runtime", stubs, o.stubRounds, o.warmup, (*variant).stubCycle)
		return err
	}); err != nil {
		return err
	}
	if err := timed("memory", func() (err error) {
		res.mem, err = runMemory(o, dir, stubs, vs, rng)
		return err
	}); err != nil {
		return err
	}
	if err := timed("volumes", func() (err error) {
		res.vol, err = runVolumes(o, mk, sd, rtPath, shimBin, stubPath, check, rounds)
		return err
	}); err != nil {
		return err
	}
	if err := timed("rootfs", func() (err error) {
		res.rfs, err = runRootfs(o, mk, sd, repo, dir, rootfs, rtPath, shimBin, rng, sigs, check, rounds)
		return err
	}); err != nil {
		return err
	}
	if err := timed("concurrency", func() (err error) {
		res.conc, err = runConcurrency(o, mk, sd, rtPath, shimBin)
		return err
	}); err != nil {
		return err
	}
	if err := timed("cri", func() (err error) {
		res.cri, err = runCRI(o, repo, dir, stateRoot, shimBin, noopBin, rng, sigs)
		// The daemons the e2e scripts started were orphaned to the bench
		// (a subreaper): reap what stopped.
		reapStrays()
		return err
	}); err != nil {
		return err
	}
	if err := timed("podman", func() (err error) {
		res.pm, err = runPodman(o, repo, dir, stateRoot, shimBin, rng, sigs)
		reapStrays()
		return err
	}); err != nil {
		return err
	}
	if err := timed("micro", func() (err error) {
		res.micro, err = runMicro(o, repo)
		return err
	}); err != nil {
		return err
	}
	if left := mountsBelow(stateRoot); len(left) > 0 {
		return fmt.Errorf("the shim left mounts in its state dir: %s", strings.Join(left, ", "))
	}

	info := machineInfo(rtPath, shimBin, noopBin)
	var files []string
	if o.out != "" {
		outDir := filepath.Dir(o.out)
		if files, err = writeArtifacts(outDir, res); err != nil {
			return err
		}
		res.artifacts = files
	}
	report := render(o, info, res)
	fmt.Print(report)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "bench: wrote %s (%.1f min run)\n", strings.Join(append([]string{o.out}, files...), ", "), time.Since(began).Minutes())
	}
	if o.raw != "" {
		if err := writeRaw(o.raw, res); err != nil {
			return err
		}
	}
	return nil
}

// maker makes variants: each its own directory, --root, shim.toml (with
// state_dir on the bench's tmpfs) and output log.
type maker struct {
	dir, stateRoot string
}

func (mk *maker) variant(set, name, desc, bin, rt string, b bundleFile) (*variant, error) {
	return mk.variantTOML(set, name, desc, bin, rt, b, "")
}

// variantTOML is variant with more TOML (mode, [allocate]) in shim.toml.
func (mk *maker) variantTOML(set, name, desc, bin, rt string, b bundleFile, extra string) (*variant, error) {
	vd := filepath.Join(mk.dir, set+"-"+idName(name))
	if err := os.MkdirAll(vd, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(vd, "shim.toml")
	toml := fmt.Sprintf("runtime = %q\nstate_dir = %q\n%s", rt, filepath.Join(mk.stateRoot, set+"-"+idName(name)), extra)
	if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(vd, "output.log"))
	if err != nil {
		return nil, err
	}
	return &variant{
		name: name, desc: desc, bin: bin, cfg: cfg,
		env:    append(os.Environ(), "NOOP_WRAPPER_RUNTIME="+rt, "USERNS_SHIM_CONFIG="+cfg),
		root:   filepath.Join(vd, "root"),
		bundle: b.dir, config: b.data,
		pid: filepath.Join(vd, "init.pid"),
		log: log,
	}, nil
}

type partTime struct {
	part string
	d    time.Duration
}

// results is everything one run measured; parts that did not run are empty.
type results struct {
	rtName        string
	vs, stubs     []*variant
	samples, stub map[string][]sample
	vol           *volumeResult
	rfs           *rootfsResult
	durations     []partTime
	residues      []residue // shim processes left after each part
	mem           *memoryResult
	warmup        int
	conc          *concResult
	cri           *criResult
	pm            *podmanResult
	micro         *microResult
	began         time.Time // the run's start, for its total duration
	loadBegan     string    // /proc/loadavg then: other jobs on the machine add noise
	artifacts     []string  // files written next to -o
}

type roundsFunc func(what string, vs []*variant, n, warmup int, step func(*variant) (sample, error)) (map[string][]sample, error)

// mountsBelow returns the mount points below dir, deepest last.
func mountsBelow(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountBelow unmounts (lazily) everything mounted below dir, last mounted
// first, naming what is not one of the bench's own mounts. It reports
// whether something could not be unmounted.
func unmountBelow(dir string) (left bool) {
	mps := mountsBelow(dir)
	for i := len(mps) - 1; i >= 0; i-- {
		mp := mps[i]
		own := mp == filepath.Join(dir, "run") || mp == filepath.Join(dir, "img")
		if !own {
			fmt.Fprintln(os.Stderr, "bench: unmounting leftover", mp)
		}
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			fmt.Fprintf(os.Stderr, "bench: umount %s: %v\n", mp, err)
			left = true
		}
	}
	return left || len(mountsBelow(dir)) > 0
}

// intList parses "1,2,3" into distinct ints >= min, sorted.
func intList(s string, min int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		if n < min {
			return nil, fmt.Errorf("%d is less than %d", n, min)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// cycle runs create, start, wait for exit and delete of a fresh container.
func (v *variant) cycle() (s sample, err error) {
	v.ids++
	id := fmt.Sprintf("bench-%s-%d", idName(v.name), v.ids)
	// Outside the timing: the original config.json, no old pid file, the
	// rootfs mounted if the variant mounts one.
	if err := os.WriteFile(filepath.Join(v.bundle, "config.json"), v.config, 0o644); err != nil {
		return s, err
	}
	os.Remove(v.pid)
	if v.before != nil {
		if err := v.before(); err != nil {
			return s, err
		}
	}
	created := false
	defer func() {
		if err != nil && created {
			v.call("delete", "--force", id) //nolint:errcheck // best effort
		}
		reapStrays()
		if v.after != nil {
			if aerr := v.after(); aerr != nil && err == nil {
				err = aerr
			}
		}
	}()

	var cpu [3]float64
	if s.create, cpu[0], err = v.call("create", "--bundle", v.bundle, "--pid-file", v.pid, id); err != nil {
		return s, err
	}
	created = true
	pid, pidfd, err := v.initPidfd()
	if err != nil {
		return s, err
	}
	defer unix.Close(pidfd)
	if s.start, cpu[1], err = v.call("start", id); err != nil {
		return s, err
	}
	t := time.Now()
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 10_000)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return s, fmt.Errorf("poll pidfd of %d: %w", pid, err)
		}
		if n == 0 {
			return s, fmt.Errorf("container %s (pid %d) still runs 10 s after start", id, pid)
		}
		break
	}
	s.wait = time.Since(t).Seconds()
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil && !errors.Is(err, unix.ECHILD) {
		return s, fmt.Errorf("reap container init %d: %w", pid, err)
	}
	if s.destroy, cpu[2], err = v.call("delete", id); err != nil {
		return s, err
	}
	created = false
	s.cpu = cpu[0] + cpu[1] + cpu[2]
	return s, nil
}

// stubCycle runs create, start and delete against the stub runtime: the
// same command lines and config.json as a real cycle, no container.
func (v *variant) stubCycle() (s sample, err error) {
	v.ids++
	id := fmt.Sprintf("stub-%s-%d", idName(v.name), v.ids)
	if err := os.WriteFile(filepath.Join(v.bundle, "config.json"), v.config, 0o644); err != nil {
		return s, err
	}
	var cpu [3]float64
	if s.create, cpu[0], err = v.call("create", "--bundle", v.bundle, "--pid-file", v.pid, id); err != nil {
		return s, err
	}
	if s.start, cpu[1], err = v.call("start", id); err != nil {
		return s, err
	}
	if s.destroy, cpu[2], err = v.call("delete", id); err != nil {
		return s, err
	}
	s.cpu = cpu[0] + cpu[1] + cpu[2]
	return s, nil
}

func (v *variant) initPidfd() (int, int, error) {
	data, err := os.ReadFile(v.pid)
	if err != nil {
		return 0, -1, fmt.Errorf("pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, -1, fmt.Errorf("pid file %s: %w", v.pid, err)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return pid, -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	return pid, fd, nil
}

// call runs one runtime command through the variant and returns its wall
// time and CPU time (user+sys, with the children it waited for) in seconds.
// Output goes to a file (no pipe, no copying goroutine).
func (v *variant) call(args ...string) (wall, cpu float64, err error) {
	argv := append([]string{"--root", v.root}, args...)
	cmd := exec.Command(v.bin, argv...)
	if len(v.wrap) > 0 && args[0] == "create" {
		cmd = exec.Command(v.wrap[0], append(append(v.wrap[1:], v.bin), argv...)...)
	}
	cmd.Env = v.env
	cmd.Stdout, cmd.Stderr = v.log, v.log
	if err := v.log.Truncate(0); err != nil {
		return 0, 0, err
	}
	if _, err := v.log.Seek(0, 0); err != nil {
		return 0, 0, err
	}
	t := time.Now()
	err = cmd.Run()
	wall = time.Since(t).Seconds()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru != nil {
		cpu = tv(ru.Utime) + tv(ru.Stime)
	}
	if err != nil {
		out, _ := os.ReadFile(v.log.Name())
		return wall, cpu, fmt.Errorf("%s %s: %w: %s", v.bin, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return wall, cpu, nil
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// reapStrays reaps any other orphan handed to the subreaper. It runs
// between cycles, when the bench has no child of its own.
func reapStrays() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

type bundleFile struct {
	dir  string
	data []byte
}

// makeBundles makes one busybox-static rootfs, with mount points /vol/0 ..
// /vol/<volumes-1> and as many volume directories (one file each) below
// dir/volumes, and the spec its bundles share (see specDoc.write).
func makeBundles(dir, rtPath string, volumes int) (rootfs string, sd *specDoc, err error) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return "", nil, fmt.Errorf("busybox: %w (apt-get install busybox-static)", err)
	}
	rootfs = filepath.Join(dir, "rootfs")
	if err := populateRootfs(rootfs, bb); err != nil {
		return "", nil, err
	}
	sd = &specDoc{dir: dir, rootfs: rootfs}
	for i := 0; i < volumes; i++ {
		src := filepath.Join(dir, "volumes", strconv.Itoa(i))
		if err := os.MkdirAll(src, 0o755); err != nil {
			return "", nil, err
		}
		if err := os.WriteFile(filepath.Join(src, "file"), []byte("volume "+strconv.Itoa(i)+"\n"), 0o644); err != nil {
			return "", nil, err
		}
		if err := os.MkdirAll(filepath.Join(rootfs, "vol", strconv.Itoa(i)), 0o755); err != nil {
			return "", nil, err
		}
		sd.volumes = append(sd.volumes, src)
	}

	// config.json from `runc spec` (crun's if runc is missing).
	gen := "runc"
	if _, err := exec.LookPath(gen); err != nil {
		gen = rtPath
	}
	tmp := filepath.Join(dir, "spec")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", nil, err
	}
	if out, err := exec.Command(gen, "spec", "--bundle", tmp).CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("%s spec: %w: %s", gen, err, out)
	}
	if sd.raw, err = os.ReadFile(filepath.Join(tmp, "config.json")); err != nil {
		return "", nil, err
	}
	return rootfs, sd, nil
}

// populateRootfs makes a busybox-static rootfs at root: /bin/busybox and a
// few applets, the directories a runtime mounts on, and the /etc files a
// user-namespaced container cannot create in a rootfs it does not own.
func populateRootfs(root, busybox string) error {
	for _, d := range []string{"bin", "proc", "sys", "dev", "etc", "tmp", "root", "run"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	os.Chmod(filepath.Join(root, "tmp"), 0o1777)
	data, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0o755); err != nil {
		return err
	}
	for _, c := range []string{"sh", "true", "echo", "cat", "ls", "id", "sleep"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", c)); err != nil {
			return err
		}
	}
	for f, content := range map[string]string{
		"etc/hosts": "127.0.0.1 localhost\n", "etc/hostname": "bench\n", "etc/resolv.conf": "",
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "etc/group": "root:x:0:\n",
	} {
		if err := os.WriteFile(filepath.Join(root, f), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// specDoc is the `runc spec` document every bundle starts from.
type specDoc struct {
	dir     string
	rootfs  string   // the shared busybox rootfs
	volumes []string // volume sources, mounted at /vol/<i>
	raw     []byte
}

// bundleOpts says how one bundle differs from the plain one (runc's spec,
// /bin/true, no terminal, the shared rootfs).
type bundleOpts struct {
	annotations map[string]string
	volumes     int    // bind-mount the first volumes volumes at /vol/<i>
	userns      bool   // a user namespace with benchMapping in config.json itself
	rootfs      string // root.path instead of the shared rootfs
}

func mapAnnotation() map[string]string {
	return map[string]string{annotationUIDMappings: benchMapping}
}

// write makes bundle dir/name and returns its directory and config.json
// (which the caller writes before every cycle).
func (sd *specDoc) write(name string, bo bundleOpts) (bundleFile, error) {
	var doc map[string]any
	if err := json.Unmarshal(sd.raw, &doc); err != nil {
		return bundleFile{}, err
	}
	proc, ok := doc["process"].(map[string]any)
	root, ok2 := doc["root"].(map[string]any)
	linux, ok3 := doc["linux"].(map[string]any)
	if !ok || !ok2 || !ok3 {
		return bundleFile{}, errors.New("spec has no process, root or linux")
	}
	proc["args"] = []string{"/bin/true"}
	proc["terminal"] = false
	root["path"] = sd.rootfs
	if bo.rootfs != "" {
		root["path"] = bo.rootfs
	}
	if bo.annotations != nil {
		doc["annotations"] = bo.annotations
	}
	if bo.volumes > len(sd.volumes) {
		return bundleFile{}, fmt.Errorf("bundle %s: %d volumes, only %d made", name, bo.volumes, len(sd.volumes))
	}
	mounts, _ := doc["mounts"].([]any)
	for i := 0; i < bo.volumes; i++ {
		mounts = append(mounts, map[string]any{
			"destination": "/vol/" + strconv.Itoa(i), "type": "bind", "source": sd.volumes[i],
			"options": []string{"rbind", "rprivate", "rw"},
		})
	}
	doc["mounts"] = mounts
	if bo.userns {
		m := []map[string]any{{"containerID": 0, "hostID": benchHostID, "size": benchSize}}
		nss, _ := linux["namespaces"].([]any)
		linux["namespaces"] = append(nss, map[string]any{"type": "user"})
		linux["uidMappings"], linux["gidMappings"] = m, m
	}

	b := filepath.Join(sd.dir, name)
	if err := os.MkdirAll(b, 0o755); err != nil {
		return bundleFile{}, err
	}
	// No HTML escaping: a \u escape makes the shim decode the spec.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "\t")
	if err := enc.Encode(doc); err != nil {
		return bundleFile{}, err
	}
	return bundleFile{dir: b, data: buf.Bytes()}, nil
}

type info struct {
	date, kernel, runtime, goVersion, cpu string
	cpus                                  int
	shimSize, noopSize                    int64
	clients                               []string // versions of crun, podman, conmon
}

func machineInfo(rtPath, shimBin, noopBin string) info {
	var in info
	in.date = time.Now().UTC().Format("2006-01-02 15:04 UTC")
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		in.kernel = unix.ByteSliceToString(u.Release[:])
	}
	if out, err := exec.Command(rtPath, "--version").Output(); err == nil {
		in.runtime, _, _ = strings.Cut(string(out), "\n")
	}
	if out, err := exec.Command("go", "version").Output(); err == nil {
		in.goVersion = strings.TrimSpace(string(out))
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				in.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	in.cpus = runtime.NumCPU()
	for _, c := range [][]string{{"crun", "--version"}, {"podman", "--version"}, {"conmon", "--version"}} {
		if out, err := exec.Command(c[0], c[1:]...).Output(); err == nil {
			first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
			in.clients = append(in.clients, first)
		}
	}
	if st, err := os.Stat(shimBin); err == nil {
		in.shimSize = st.Size()
	}
	if st, err := os.Stat(noopBin); err == nil {
		in.noopSize = st.Size()
	}
	return in
}

// loadavg is the first three fields of /proc/loadavg.
func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], ", ")
	}
	return "unknown"
}

// quantile returns the q-quantile of xs (linear interpolation).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (pos-float64(i))*(s[i+1]-s[i])
}

func ms(x float64) float64 { return x * 1000 }

func metric(ss []sample, f func(sample) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

// paired returns a's minus b's value of f, round by round.
func paired(a, b []sample, f func(sample) float64) []float64 {
	byRound := make(map[int]float64, len(b))
	for _, s := range b {
		byRound[s.round] = f(s)
	}
	var out []float64
	for _, s := range a {
		if x, ok := byRound[s.round]; ok {
			out = append(out, f(s)-x)
		}
	}
	return out
}

// spread formats median [p25 – p75] in milliseconds.
func spread(xs []float64) string {
	return fmt.Sprintf("%.2f [%.2f – %.2f]", ms(quantile(xs, .5)), ms(quantile(xs, .25)), ms(quantile(xs, .75)))
}

func signedSpread(xs []float64) string {
	return fmt.Sprintf("%+.2f [%+.2f – %+.2f]", ms(quantile(xs, .5)), ms(quantile(xs, .25)), ms(quantile(xs, .75)))
}

var calls = []struct {
	name string
	f    func(sample) float64
}{
	{"create", func(s sample) float64 { return s.create }},
	{"start", func(s sample) float64 { return s.start }},
	{"delete", func(s sample) float64 { return s.destroy }},
}

// pairedRatio returns a's value of f over b's, round by round.
func pairedRatio(a, b []sample, f func(sample) float64) []float64 {
	byRound := make(map[int]float64, len(b))
	for _, s := range b {
		byRound[s.round] = f(s)
	}
	var out []float64
	for _, s := range a {
		if x, ok := byRound[s.round]; ok && x > 0 {
			out = append(out, f(s)/x)
		}
	}
	return out
}

func render(o options, in info, res *results) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	vs, samples, stub := res.vs, res.samples, res.stub
	rtName := res.rtName
	cycle := func(s sample) float64 { return s.cycle() }
	cpu := func(s sample) float64 { return s.cpu }
	wait := func(s sample) float64 { return s.wait }

	p("# userns-shim benchmarks\n\n")
	p("Written by `make bench` (`go run ./hack/bench -o docs/benchmarks.md`) from the run below; rerun it on your node. Summary of the targets of issue 6 at the end ([Targets](#targets-reported-not-enforced)).\n\n")
	p("- date: %s\n", in.date)
	p("- kernel: %s; CPU: %s × %d\n", in.kernel, in.cpu, in.cpus)
	p("- runtime: %s (`%s`)", in.runtime, vs[0].bin)
	for _, c := range in.clients {
		p("; %s", c)
	}
	p("\n")
	p("- %s; binaries built with `-ldflags \"-s -w\"`: userns-shim %.2f MiB, noop wrapper %.2f MiB\n",
		in.goVersion, float64(in.shimSize)/(1<<20), float64(in.noopSize)/(1<<20))
	if o.shim != "" {
		p("- userns-shim: the prebuilt binary `%s` (-shim), not built from this tree\n", o.shim)
	}
	p("- parts run:")
	for i, d := range res.durations {
		if i > 0 {
			p(",")
		}
		p(" %s (%.0f s)", d.part, d.d.Seconds())
	}
	p("; the whole run %.1f min (building the shim included; make bench adds a few seconds for go run's build and the install check); the shims' `state_dir` is on a tmpfs (as `/run` is on a node)\n", time.Since(res.began).Minutes())
	p("- load average (1, 5, 15 min) at the start: %s, at the end: %s (2 CPUs shared with other jobs: the wider the brackets, the busier the machine was)\n", res.loadBegan, loadavg())
	p("- %d container rounds and %d stub-runtime rounds, each after %d warm-up rounds; every round runs each variant once, in a shuffled order (seed %d)\n",
		o.rounds, o.stubRounds, o.warmup, o.seed)
	p("- cycle = `create --bundle B --pid-file P ID` + `start ID` + wait for the container's init to exit + `delete ID`. ")
	p("The bench is a child subreaper: the orphaned init becomes its child, it waits with a pidfd and reaps the init before `delete`, so every delete finds the same stopped container. ")
	p("Each cycle a fresh ID, each variant its own `--root`, config.json restored before every cycle (untimed).\n")
	p("- figures: median [p25 – p75], ms. CPU = user+sys of the calls and of the children they waited for.\n\n")
	if samples != nil || stub != nil {
		p("Variants: ")
		for i, v := range vs {
			if i > 0 {
				p("; ")
			}
			p("**%s**: %s", v.name, v.desc)
		}
		p(".\n\n")
	}

	bare := quantile(metric(samples["bare"], cycle), .5)
	if samples != nil {
		p("## Container cycle (%s)\n\n", rtName)
		bareCPU := quantile(metric(samples["bare"], cpu), .5)
		p("| variant | cycle ms | × bare | cycle CPU ms | CPU × bare | create ms | start ms | wait for exit ms | delete ms |\n")
		p("|---|---|---|---|---|---|---|---|---|\n")
		for _, v := range vs {
			ss := samples[v.name]
			p("| %s | %s | %.3f | %s | %.3f | %s | %s | %s | %s |\n", v.name, spread(metric(ss, cycle)),
				quantile(metric(ss, cycle), .5)/bare, spread(metric(ss, cpu)), quantile(metric(ss, cpu), .5)/bareCPU,
				spread(metric(ss, calls[0].f)), spread(metric(ss, calls[1].f)),
				spread(metric(ss, wait)), spread(metric(ss, calls[2].f)))
		}
	}

	type pair struct{ a, b, label string }
	pairs := []pair{
		{"noop", "bare", "noop − bare (Go start-up floor)"},
		{"shim", "noop", "shim − noop (the shim's own passthrough work)"},
		{"shim+map", "shim", "shim+map − shim (cost of the mapping)"},
		{"bare+userns", "bare", "bare+userns − bare (the runtime's own user namespace)"},
		{"shim+map", "bare+userns", "shim+map − bare+userns (the shim's mapping work beyond the runtime's user namespace)"},
		{"shim+map+rootfs+10vol", "shim+map", fmt.Sprintf("shim+map+rootfs+10vol − shim+map (%d ID-mapped volumes)", cycleVolumes)},
		{"bare+10vol", "bare", fmt.Sprintf("bare+10vol − bare (the runtime's own %d bind mounts)", cycleVolumes)},
		{"shim+map+rootfs+10vol", "bare+10vol", "shim+map+rootfs+10vol − bare+10vol (the same volumes without the shim)"},
		{afterShimWork, "bare+10vol", afterShimWork + " − bare+10vol (the runtime's create right after other work: no shim in the timed calls)"},
		{"shim+map+rootfs+10vol", afterShimWork, "shim+map+rootfs+10vol − " + afterShimWork + " (the shim's own work, the runtime started alike)"},
	}
	if _, ok := samples["shim-b"]; ok {
		pairs = append(pairs, pair{"shim-b", "noop", "shim-b − noop"}, pair{"shim-b", "shim", "shim-b − shim"})
	}
	diffTable := func(set map[string][]sample, withCycle bool) {
		p("| difference | create | start | delete |")
		if withCycle {
			p(" cycle |")
		}
		p(" CPU |\n|---|---|---|---|")
		if withCycle {
			p("---|")
		}
		p("---|\n")
		for _, pr := range pairs {
			a, bb := set[pr.a], set[pr.b]
			if len(a) == 0 || len(bb) == 0 {
				continue
			}
			p("| %s |", pr.label)
			for _, c := range calls {
				p(" %s |", signedSpread(paired(a, bb, c.f)))
			}
			if withCycle {
				p(" %s |", signedSpread(paired(a, bb, cycle)))
			}
			p(" %s |\n", signedSpread(paired(a, bb, cpu)))
		}
	}
	if samples != nil {
		p("\nPer-round paired differences, ms (same round, so slow phases of the machine cancel):\n\n")
		diffTable(samples, true)
	}

	if stub != nil {
		p("\n## Per call against a stub runtime\n\n")
		p("The same command lines and config.json, with the runtime replaced by busybox `true` (exits at once): ")
		p("what each wrapper costs per call, without the real runtime's own variance.\n\n")
		p("| variant | create ms | start ms | delete ms | CPU of the 3 calls ms |\n|---|---|---|---|---|\n")
		for _, v := range res.stubs {
			ss := stub[v.name]
			p("| %s | %s | %s | %s | %s |\n", v.name, spread(metric(ss, calls[0].f)), spread(metric(ss, calls[1].f)),
				spread(metric(ss, calls[2].f)), spread(metric(ss, cpu)))
		}
		p("\nPer-round paired differences, ms:\n\n")
		diffTable(stub, false)
	}

	rng := rand.New(rand.NewPCG(o.seed, 0x63697321))
	if res.vol != nil {
		p("\n%s", res.vol.render(rng))
	}
	if res.rfs != nil {
		p("\n%s", res.rfs.render(rng))
	}
	if res.conc != nil {
		p("\n%s", res.conc.render(rng))
	}
	if res.cri != nil {
		perCall := 0.0
		if stub != nil {
			for _, c := range calls {
				perCall += ms(quantile(paired(stub["shim"], stub["bare"], c.f), .5)) / float64(len(calls))
			}
		}
		p("\n%s", res.cri.render(rng, perCall))
	}
	if res.pm != nil {
		p("\n%s", res.pm.render(rng))
	}
	if res.micro != nil {
		p("\n%s", res.micro.render())
	}
	if res.mem != nil || len(res.residues) > 0 {
		p("\n%s", renderMemory(res))
	}
	if len(res.artifacts) > 0 {
		p("\nFiles written with this report: ")
		for i, f := range res.artifacts {
			if i > 0 {
				p(", ")
			}
			p("`%s`", filepath.Base(f))
		}
		p(".\n")
	}

	p("\n## Targets (reported, not enforced)\n\n")
	p("Brackets: 95%% bootstrap interval (rounds resampled whole, %d times). The per-call verdict uses the stub runtime, whose figures are tight; the container-cycle figure is shown beside it.\n\n", bootstrapN)
	p("| target | measured | result |\n|---|---|---|\n")
	interval := func(format string, set map[string][]sample, f func(map[string][]sample) float64) string {
		lo, hi := bootstrap(rng, set, f)
		return fmt.Sprintf("["+format+" – "+format+"]", lo, hi)
	}
	ratioTo := func(a, base string) func(map[string][]sample) float64 {
		return func(m map[string][]sample) float64 {
			return quantile(metric(m[a], cycle), .5) / quantile(metric(m[base], cycle), .5)
		}
	}
	ratioOf := func(a string) func(map[string][]sample) float64 { return ratioTo(a, "bare") }
	targets := []string{"shim"}
	if _, ok := samples["shim-b"]; ok || stub["shim-b"] != nil {
		targets = append(targets, "shim-b")
	}
	for _, name := range targets {
		if samples != nil {
			ratio := ratioOf(name)(samples)
			p("| %s passthrough cycle ≤ %.2f × bare %s (ratio of medians) | %.3f × %s; noop floor %.3f × %s | %s |\n",
				name, targetCycleRatio, rtName, ratio, interval("%.3f", samples, ratioOf(name)),
				ratioOf("noop")(samples), interval("%.3f", samples, ratioOf("noop")), verdict(ratio <= targetCycleRatio))
		}
		if stub == nil {
			continue
		}
		for _, c := range calls {
			diff := func(m map[string][]sample) float64 { return ms(quantile(paired(m[name], m["noop"], c.f), .5)) }
			d := diff(stub)
			inCycle := "no container cycles run"
			if samples != nil {
				inCycle = fmt.Sprintf("%+.2f ms %s in the container cycle", diff(samples), interval("%+.2f", samples, diff))
			}
			p("| %s passthrough − noop floor ≤ %.0f ms per `%s` call | %+.2f ms %s against the stub; %s | %s |\n",
				name, targetPerCallMs, c.name, d, interval("%+.2f", stub, diff), inCycle, verdict(d <= targetPerCallMs))
		}
	}
	if samples != nil {
		const v10 = "shim+map+rootfs+10vol"
		ratio := ratioOf(v10)(samples)
		p("| user namespace + rootfs + %d volumes (%s) cycle ≤ %.2f × bare %s | %.3f × %s | %s |\n",
			cycleVolumes, v10, targetVolCycleRatio, rtName, ratio, interval("%.3f", samples, ratioOf(v10)), verdict(ratio <= targetVolCycleRatio))
		r2 := ratioTo(v10, "bare+10vol")
		ratio2 := r2(samples)
		p("| the same against bare+10vol (%s with the same %d volumes, no user namespace) ≤ %.2f × | %.3f × %s | %s |\n",
			rtName, cycleVolumes, targetVolCycleRatio, ratio2, interval("%.3f", samples, r2), verdict(ratio2 <= targetVolCycleRatio))
		if _, ok := samples[afterShimWork]; ok {
			r3 := ratioTo(v10, afterShimWork)
			ratio3 := r3(samples)
			p("| context, not the target: the same against %s (bare+10vol whose create, like the shim's, follows the shim's own work) ≤ %.2f × | %.3f × %s | %s |\n",
				afterShimWork, targetVolCycleRatio, ratio3, interval("%.3f", samples, r3), verdict(ratio3 <= targetVolCycleRatio))
		}
	}
	if res.rfs != nil {
		p("%s", res.rfs.targetRows(rng))
	}
	if res.cri != nil {
		p("%s", res.cri.targetRows(rng))
	}
	if res.pm != nil {
		p("%s", res.pm.targetRows(rng))
	}
	if res.conc != nil {
		p("%s", res.conc.targetRows())
	}
	p("%s", memoryTargetRows(res))
	return b.String()
}

const bootstrapN = 1000

// bootstrap returns the 2.5%% and 97.5%% quantiles of stat over resamples of
// the rounds. A round is resampled whole, so paired differences stay paired.
func bootstrap(rng *rand.Rand, set map[string][]sample, stat func(map[string][]sample) float64) (lo, hi float64) {
	n := -1
	for _, ss := range set {
		if n < 0 || len(ss) < n {
			n = len(ss)
		}
	}
	if n <= 0 {
		return 0, 0
	}
	stats := make([]float64, bootstrapN)
	re := make(map[string][]sample, len(set))
	for i := range stats {
		idx := make([]int, n)
		for j := range idx {
			idx[j] = rng.IntN(n)
		}
		for name, ss := range set {
			out := re[name][:0]
			for j, k := range idx {
				s := ss[k]
				s.round = j
				out = append(out, s)
			}
			re[name] = out
		}
		stats[i] = stat(re)
	}
	return quantile(stats, .025), quantile(stats, .975)
}

// medianRatio is the median of f over set[a] ÷ that over set[b], with its
// 95% bootstrap interval (rounds resampled whole, so pairs stay paired).
func medianRatio(rng *rand.Rand, set map[string][]sample, a, b string, f func(sample) float64) (ratio, lo, hi float64) {
	stat := func(m map[string][]sample) float64 {
		return quantile(metric(m[a], f), .5) / quantile(metric(m[b], f), .5)
	}
	two := map[string][]sample{a: set[a], b: set[b]}
	lo, hi = bootstrap(rng, two, stat)
	return stat(two), lo, hi
}

// sectionHead writes a report section's title into b and, for a part that
// could not run, SKIPPED with the reason; it reports whether the part ran.
func sectionHead(b *strings.Builder, title, skipped string) bool {
	fmt.Fprintf(b, "%s\n\n", title)
	if skipped != "" {
		fmt.Fprintf(b, "SKIPPED: %s.\n", skipped)
		return false
	}
	return true
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// writeRaw writes every container and stub sample to path, and the rootfs
// part's samples to path with "-rootfs" before its extension.
func writeRaw(path string, res *results) error {
	var b strings.Builder
	b.WriteString("set,variant,round,create_ms,start_ms,wait_ms,delete_ms,cycle_ms,cpu_ms\n")
	type set struct {
		name string
		vs   []*variant
		m    map[string][]sample
	}
	sets := []set{{"container", res.vs, res.samples}, {"stub", res.stubs, res.stub}}
	if v := res.vol; v != nil {
		sets = append(sets, set{"volumes", v.vs, v.samples}, set{"volumes-stub", v.stubs, v.stub})
	}
	if r := res.rfs; r != nil {
		sets = append(sets, set{"rootfs-e2e", r.e2eVariants, r.e2e})
	}
	for _, set := range sets {
		for _, v := range set.vs {
			for _, s := range set.m[v.name] {
				fmt.Fprintf(&b, "%s,%s,%d,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f\n", set.name, v.name, s.round,
					ms(s.create), ms(s.start), ms(s.wait), ms(s.destroy), ms(s.cycle()), ms(s.cpu))
			}
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return err
	}
	if res.rfs != nil {
		ext := filepath.Ext(path)
		return os.WriteFile(strings.TrimSuffix(path, ext)+"-rootfs"+ext, res.rfs.rawCSV(), 0o644)
	}
	return nil
}
