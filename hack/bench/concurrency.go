package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/userns-shim/userns-shim/pkg/spec"
)

const (
	// concPoolStart is the allocate pool of the concurrency part: clear of
	// benchMapping, of the e2e and integration tests' pools, and a multiple
	// of 65536.
	concPoolStart      = 2415919104 // 0x90000000
	annotationPodUID   = "io.kubernetes.pod.uid"
	annotationCtrdUID  = "io.kubernetes.cri.sandbox-uid"
	targetCollisions   = 0
	concSettleDeadline = 30 * time.Second
)

// concResult is the concurrency part: batches of n sandbox creates started
// at once through the shim in mode allocate.
type concResult struct {
	levels      []int
	rounds      int
	rtName      string
	lat         map[int][]float64 // seconds per create, every round
	wall        map[int][]float64 // seconds from the batch's start to its last create's end
	collisions  map[int]int       // pairs of pods sharing a host ID in /proc/<pid>/uid_map
	regOverlaps map[int]int       // the same in `shim pods --json`
	pods        map[int]int       // pods checked
	shimAlive   map[int]int       // shim processes while the batch's pods lived
	failures    []string
}

// concPod is one slot: a bundle whose sandbox container is its own pod.
type concPod struct {
	id, bundle, pid, out string
	config               []byte
}

func runConcurrency(o options, mk *maker, sd *specDoc, rtPath, shimBin string) (*concResult, error) {
	maxN := slices.Max(o.concLevels)
	extra := fmt.Sprintf("mode = \"allocate\"\n[allocate]\nstart = %d\nlength = %d\n", concPoolStart, 2*maxN*benchSize)
	tmpl, err := mk.variantTOML("conc", "allocate", "shim in mode allocate", shimBin, rtPath, bundleFile{}, extra)
	if err != nil {
		return nil, err
	}
	pods := make([]concPod, maxN)
	for j := range pods {
		id := fmt.Sprintf("conc-%02d", j)
		// Half containerd's sandbox annotations, half CRI-O's: the shim must
		// see a pod either way.
		ann := map[string]string{spec.AnnotationContainerdContainerType: "sandbox", spec.AnnotationContainerdSandboxID: id,
			annotationCtrdUID: fmt.Sprintf("c0ffee00-0000-4000-8000-%012d", j)}
		if j%2 == 1 {
			ann = map[string]string{spec.AnnotationCRIOContainerType: "sandbox", spec.AnnotationCRIOSandboxID: id,
				annotationPodUID: fmt.Sprintf("c0ffee00-0000-4000-8000-%012d", j)}
		}
		b, err := sd.write("bundle-"+id, bundleOpts{annotations: ann})
		if err != nil {
			return nil, err
		}
		pods[j] = concPod{id: id, bundle: b.dir, config: b.data,
			pid: filepath.Join(b.dir, "init.pid"), out: filepath.Join(b.dir, "output.log")}
	}
	cfg := tmpl.cfg
	r := &concResult{levels: o.concLevels, rounds: o.concRounds, rtName: filepath.Base(rtPath),
		lat: map[int][]float64{}, wall: map[int][]float64{}, collisions: map[int]int{}, regOverlaps: map[int]int{},
		pods: map[int]int{}, shimAlive: map[int]int{}}
	call := func(p concPod, args ...string) (float64, error) {
		out, err := os.Create(p.out)
		if err != nil {
			return 0, err
		}
		defer out.Close()
		cmd := exec.Command(shimBin, append([]string{"--root", tmpl.root}, args...)...)
		cmd.Env = tmpl.env
		cmd.Stdout, cmd.Stderr = out, out
		t := time.Now()
		err = cmd.Run()
		d := time.Since(t).Seconds()
		if err != nil {
			msg, _ := os.ReadFile(p.out)
			return d, fmt.Errorf("%s %s: %w: %s", p.id, strings.Join(args, " "), err, strings.TrimSpace(string(msg)))
		}
		return d, nil
	}
	// A warm-up batch of one, not recorded: the first create makes the
	// state dir and pays for cold caches.
	levels := append([]int{1}, o.concLevels...)
	for li, n := range levels {
		rounds := o.concRounds
		if li == 0 {
			rounds = 1
		}
		for round := 0; round < rounds; round++ {
			batch := pods[:n]
			for _, p := range batch {
				if err := os.WriteFile(filepath.Join(p.bundle, "config.json"), p.config, 0o644); err != nil {
					return nil, err
				}
				os.Remove(p.pid)
			}
			lat := make([]float64, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			gate := make(chan struct{})
			for j, p := range batch {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-gate
					lat[j], errs[j] = call(p, "create", "--bundle", p.bundle, "--pid-file", p.pid, p.id)
				}()
			}
			t := time.Now()
			close(gate)
			wg.Wait()
			wall := time.Since(t).Seconds()
			var failed []string
			for _, e := range errs {
				if e != nil {
					failed = append(failed, e.Error())
				}
			}
			if li > 0 {
				r.lat[n] = append(r.lat[n], lat...)
				r.wall[n] = append(r.wall[n], wall)
				r.failures = append(r.failures, failed...)
				coll, checked, probs := procCollisions(batch)
				r.collisions[n] += coll
				r.pods[n] += checked
				r.failures = append(r.failures, probs...)
				reg, err := registryOverlaps(shimBin, cfg)
				if err != nil {
					r.failures = append(r.failures, err.Error())
				}
				r.regOverlaps[n] += reg
				r.shimAlive[n] += len(procsOf(shimBin))
			}
			// Untimed: every pod deleted at once, as a node drains.
			derrs := make([]error, n)
			var dwg sync.WaitGroup
			for j, p := range batch {
				dwg.Add(1)
				go func() {
					defer dwg.Done()
					_, derrs[j] = call(p, "delete", "--force", p.id)
				}()
			}
			dwg.Wait()
			for j, e := range derrs {
				if e != nil && errs[j] == nil {
					r.failures = append(r.failures, e.Error())
				}
			}
			reapStrays()
			if err := waitNoPods(shimBin, cfg); err != nil {
				return nil, err
			}
			if len(failed) > 0 && li == 0 {
				return nil, fmt.Errorf("concurrency: %s", failed[0])
			}
		}
		if li > 0 {
			fmt.Fprintf(os.Stderr, "bench: concurrency: %d pods at once, %d rounds: p50 %.0f ms\n", n, rounds, ms(quantile(r.lat[n], .5)))
		}
	}
	return r, nil
}

// procCollisions reads each created container's uid_map from /proc and
// counts pairs of pods whose host ranges overlap; a container without a
// user namespace of its own is a problem too.
func procCollisions(batch []concPod) (collisions, checked int, probs []string) {
	type span struct {
		id     string
		lo, hi uint64
	}
	var spans []span
	for _, p := range batch {
		data, err := os.ReadFile(p.pid)
		if err != nil {
			probs = append(probs, fmt.Sprintf("%s: no pid file: %v", p.id, err))
			continue
		}
		m, err := readUIDMap("/proc/" + strings.TrimSpace(string(data)) + "/uid_map")
		if err != nil {
			probs = append(probs, fmt.Sprintf("%s: %v", p.id, err))
			continue
		}
		checked++
		for _, x := range m {
			if x.HostID == 0 {
				probs = append(probs, fmt.Sprintf("%s: uid_map maps host root: %v", p.id, m))
			}
			spans = append(spans, span{p.id, uint64(x.HostID), uint64(x.HostID) + uint64(x.Size)})
		}
	}
	for i := range spans {
		for j := i + 1; j < len(spans); j++ {
			if spans[i].id != spans[j].id && spans[i].lo < spans[j].hi && spans[j].lo < spans[i].hi {
				collisions++
			}
		}
	}
	return collisions, checked, probs
}

func readUIDMap(path string) ([]specs.LinuxIDMapping, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []specs.LinuxIDMapping
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 {
			return nil, fmt.Errorf("%s: bad line %q", path, l)
		}
		var v [3]uint64
		for i := range f {
			if v[i], err = strconv.ParseUint(f[i], 10, 32); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
		}
		out = append(out, specs.LinuxIDMapping{ContainerID: uint32(v[0]), HostID: uint32(v[1]), Size: uint32(v[2])})
	}
	return out, nil
}

// shimPods is `userns-shim shim pods --json`, as much as the bench reads.
func shimPods(shimBin, cfg string) ([][]specs.LinuxIDMapping, error) {
	cmd := exec.Command(shimBin, "shim", "pods", "--json")
	cmd.Env = append(os.Environ(), "USERNS_SHIM_CONFIG="+cfg)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("shim pods --json: %w", err)
	}
	var pods []struct {
		Mapping struct {
			UIDMappings []specs.LinuxIDMapping `json:"uidMappings"`
		} `json:"mapping"`
	}
	if err := json.Unmarshal(out, &pods); err != nil {
		return nil, fmt.Errorf("shim pods --json: %w: %s", err, out)
	}
	var maps [][]specs.LinuxIDMapping
	for _, p := range pods {
		maps = append(maps, p.Mapping.UIDMappings)
	}
	return maps, nil
}

// registryOverlaps counts pairs of the shim's pods whose host ranges overlap.
func registryOverlaps(shimBin, cfg string) (int, error) {
	maps, err := shimPods(shimBin, cfg)
	n := 0
	for i := range maps {
		for j := i + 1; j < len(maps); j++ {
			for _, a := range maps[i] {
				for _, b := range maps[j] {
					if uint64(a.HostID) < uint64(b.HostID)+uint64(b.Size) && uint64(b.HostID) < uint64(a.HostID)+uint64(a.Size) {
						n++
					}
				}
			}
		}
	}
	return n, err
}

// waitNoPods waits until the shim lists no pod: every range freed.
func waitNoPods(shimBin, cfg string) error {
	deadline := time.Now().Add(concSettleDeadline)
	for {
		maps, err := shimPods(shimBin, cfg)
		if err == nil && len(maps) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("concurrency: the shim still lists %d pods %v after every container was deleted (%v)", len(maps), maps, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *concResult) render(rng *rand.Rand) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("## Concurrency: pods created at once in mode allocate\n\n")
	p("N sandbox containers (half with containerd's annotations `%s=sandbox`, half with CRI-O's `%s=sandbox`, each its own pod) are created at once through the shim in `mode = \"allocate\"` over %s, one process per create, all started together; ",
		spec.AnnotationContainerdContainerType, spec.AnnotationCRIOContainerType, r.rtName)
	p("each gets an ID-mapped rootfs and a range from the pool. %d batches per N after one warm-up batch; then all deleted at once (untimed). ", r.rounds)
	p("Latency: one `create` call, start to exit. Throughput: N ÷ the batch's wall time. Collisions: pairs of pods sharing a host ID, in each container's `/proc/<pid>/uid_map` and in `userns-shim shim pods --json`.\n\n")
	p("| pods at once | creates | throughput pods/s | p50 ms | p99 ms | max ms | batch wall ms | uid_map collisions | `shim pods` collisions | shim processes while the pods ran |\n")
	p("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range r.levels {
		lat, wall := r.lat[n], r.wall[n]
		tp := func(w []float64) float64 { return float64(n) / quantile(w, .5) }
		lo, hi := bootstrap2(rng, len(wall), 1, func(i1, _ []int) float64 { return tp(pick(wall, i1)) })
		p("| %d | %d | %.1f [%.1f – %.1f] | %.1f | %.1f | %.1f | %s | %d | %d | %d |\n", n, r.pods[n], tp(wall), lo, hi,
			ms(quantile(lat, .5)), ms(quantile(lat, .99)), ms(slices.Max(lat)), spread(wall), r.collisions[n], r.regOverlaps[n], r.shimAlive[n])
	}
	p("\nThroughput brackets: 95%% bootstrap interval over the batches. ")
	if len(r.failures) == 0 {
		p("Every create succeeded and every container ran in a user namespace of its own range.\n")
	} else {
		p("%d problems:\n\n", len(r.failures))
		for _, f := range r.failures {
			p("- %s\n", f)
		}
	}
	return b.String()
}

func (r *concResult) targetRows() string {
	top := slices.Max(r.levels)
	c := r.collisions[top] + r.regOverlaps[top]
	return fmt.Sprintf("| %d collisions at %d concurrent pods (allocate mode; `/proc/<pid>/uid_map` and `shim pods --json`, %d pods checked) | %d, %d failed creates or checks | %s |\n",
		targetCollisions, top, r.pods[top], c, len(r.failures), verdict(c == targetCollisions && len(r.failures) == 0))
}

// chart plots create latency against the pods created at once.
func (r *concResult) chart() chart {
	var xs []float64
	for _, n := range r.levels {
		xs = append(xs, float64(n))
	}
	line := func(name, color string, q float64) series {
		s := series{name: name, color: color, xs: xs, labels: true}
		for _, n := range r.levels {
			s.ys = append(s.ys, ms(quantile(r.lat[n], q)))
		}
		return s
	}
	return chart{
		title:  "Sandbox creates at once through the shim (mode allocate)",
		xlabel: "pods created at once",
		ylabel: "create latency, ms",
		logX:   true, logY: true,
		series: []series{line("p99", "#d62728", .99), line("p50", "#1f77b4", .5)},
	}
}
