package integration

// Soak: many create/start/delete cycles of a pod (a sandbox and an app
// container sharing its pinned user namespace, allocated range, ID-mapped
// volumes and a tmpfs) through the shim, with what could leak sampled every
// 100 cycles: host mounts, the test process's fds, leftover processes,
// state dir entries and the registry's ranges. Long: `make soak` runs it
// (and `make test` through it); the plain integration run skips it.

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// soakEnv enables TestSoak (make soak sets it); soakCyclesEnv overrides the
// number of cycles per runtime (1000, or 100 with -short).
const (
	soakEnv       = "USERNS_SHIM_SOAK"
	soakCyclesEnv = "USERNS_SHIM_SOAK_CYCLES"
	soakEvery     = 100
)

// soakSample is what one sample counts.
type soakSample struct {
	Cycle      int
	Elapsed    time.Duration
	HostMounts int // lines of /proc/self/mountinfo
	OwnMounts  int // mounts below the test's directories (its tmpfs volumes)
	FDs        int // open fds of the test process
	Procs      int // shims, runtime calls with the test's --root, containers
	Cgroups    int // cgroup directories named after the soak's containers
	StateFiles int // entries below the state dir
	Ranges     int // pods in the registry
}

func soakCycles(t *testing.T) int {
	t.Helper()
	if os.Getenv(soakEnv) == "" {
		t.Skipf("long: `make soak` runs it (%s=1; %s=N cycles per runtime)", soakEnv, soakCyclesEnv)
	}
	n := 1000
	if testing.Short() {
		n = 100
	}
	if v := os.Getenv(soakCyclesEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", soakCyclesEnv, v)
		}
	}
	return n
}

// TestSoak: per runtime, N cycles of: sandbox create and start (mode
// allocate, a /dev/shm tmpfs volume), app container create (joining the
// sandbox's namespaces, two ext4 volumes and the tmpfs, all ID-mapped) and
// start, then delete --force of both, as a CRI runtime does. Each cycle is a
// new pod with new container IDs. It fails when a sample after the first
// cycle shows more mounts, fds, processes, state entries or ranges than the
// first, and prints every sample.
func TestSoak(t *testing.T) {
	cycles := soakCycles(t)
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		pool := pdPool{Start: uint32(3_500_000_000 + i*10_000_000), Length: 4 * lcSize, Size: lcSize}
		e := pdEnv(t, rt, pool.TOML(), true)
		root := filepath.Dir(filepath.Dir(e.StateDir)) // every temp dir of this test is below it
		marker := strconv.Itoa(86000 + i)              // the containers' sleep argument: finds them in /proc
		vols := kpNewVolumes(t, 3)

		sb := newBundle(t, "sleep", marker)
		kpMountVolumes(t, sb, vols[2:])
		app := newBundle(t, "sleep", marker)
		kpMountVolumes(t, app, vols)
		appSpec := app.Raw(t)
		pidFile := filepath.Join(t.TempDir(), "pid")

		var live []string
		t.Cleanup(func() {
			for _, id := range live {
				lcShim(e, "delete", "--force", id)
			}
		})
		must := func(args ...string) {
			if r := lcShim(e, args...); r.Code != 0 {
				t.Fatalf("userns-shim %s: exit %d\nstderr: %s", strings.Join(args, " "), r.Code, r.Stderr)
			}
		}
		cycle := func(n int) {
			pause, ctr := fmt.Sprintf("soak-%s-%d-pause", rt.Name, n), fmt.Sprintf("soak-%s-%d-app", rt.Name, n)
			uid := fmt.Sprintf("5a0c0000-0000-4000-8000-%012d", n)
			// A CRI runtime writes each container's config afresh.
			sb.Spec.Annotations = pdContainerd("sandbox", pause, uid, "")
			sb.Save(t)
			live = []string{pause}
			must("create", "--bundle", sb.Dir, "--pid-file", pidFile, pause)
			must("start", pause)
			pid := pdReadPid(pidFile)
			app.Spec = nil
			if err := os.WriteFile(app.ConfigPath(), appSpec, 0o644); err != nil {
				t.Fatal(err)
			}
			app.Load(t)
			app.Spec.Annotations = pdContainerd("container", pause, uid, "")
			pdJoin(t, app, pid, specs.NetworkNamespace, specs.IPCNamespace, specs.UTSNamespace)
			live = append(live, ctr)
			must("create", "--bundle", app.Dir, "--pid-file", pidFile, ctr)
			must("start", ctr)
			if n == 0 {
				// What the samples count as leftover containers and their
				// cgroups is found here (once started, a process execs
				// sleep soon after).
				for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
					got := soakContainers(marker)
					if len(got) == 2 {
						if soakCgroups("soak-"+rt.Name+"-") == 0 {
							t.Fatalf("cycle 0: no cgroup directory named after the running containers found")
						}
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("cycle 0: %d container processes `sleep %s` found (%v), want the 2 running", len(got), marker, got)
					}
				}
			}
			must("delete", "--force", ctr)
			must("delete", "--force", pause)
			live = nil
		}

		sample := func(n int, start time.Time) soakSample {
			reg, _ := pdReadRegistry(t, e)
			s := soakSample{Cycle: n, Elapsed: time.Since(start), HostMounts: len(pdMountPoints(t)),
				OwnMounts: len(pdMountsUnder(t, root)), FDs: soakCount("/proc/self/fd"),
				Procs:      len(pdShimProcs(e.bin())) + len(pdProcsWith(e.RootDir)) + len(soakContainers(marker)),
				StateFiles: soakEntries(e.StateDir), Cgroups: soakCgroups("soak-" + rt.Name + "-")}
			if reg != nil {
				s.Ranges = len(reg.Pods)
			}
			return s
		}
		// The first cycle makes what stays (the state dir's subdirectories,
		// the runtime facts cache): it is the baseline.
		start := time.Now()
		cycle(0)
		samples := []soakSample{sample(1, start)}
		for n := 1; n < cycles; n++ {
			cycle(n)
			if (n+1)%soakEvery == 0 || n+1 == cycles {
				samples = append(samples, sample(n+1, start))
			}
		}
		elapsed := time.Since(start)
		t.Logf("%s: %d cycles in %s, %.2f cycles/s (each: 2 creates, 2 starts, 2 deletes; 4 ID-mapped volume mounts, a pin and an allocated range)\n%s",
			rt.Name, cycles, elapsed.Round(time.Millisecond), float64(cycles)/elapsed.Seconds(), soakTable(samples))

		base := samples[0]
		for _, s := range samples[1:] {
			for _, c := range []struct {
				what      string
				got, base int
			}{
				{"mounts below the test's directories", s.OwnMounts, base.OwnMounts},
				{"open fds of the test process", s.FDs, base.FDs},
				{"leftover processes", s.Procs, base.Procs},
				{"cgroups of the soak's containers", s.Cgroups, base.Cgroups},
				{"state dir entries", s.StateFiles, base.StateFiles},
				{"registry ranges", s.Ranges, base.Ranges},
			} {
				if c.got > c.base {
					t.Errorf("after %d cycles: %d %s, %d after the first", s.Cycle, c.got, c.what, c.base)
				}
			}
			// The host's whole mount count is only reported: other work on the
			// machine mounts and unmounts meanwhile (a run beside the CRI
			// benchmark's daemons failed on it). Every mount the shim makes is
			// below the test's directories, counted above.
		}
		if base.Procs != 0 || base.Ranges != 0 || base.Cgroups != 0 {
			t.Errorf("after the first cycle: %d processes, %d ranges and %d cgroups left, want none", base.Procs, base.Ranges, base.Cgroups)
		}
		pdRequireStateClean(t, e)
		imRequireNoStaging(t, e, "after the soak")
	})
}

// soakTable renders the samples as a table.
func soakTable(samples []soakSample) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "cycles\telapsed\tcycles/s\thost mounts\town mounts\ttest fds\tprocesses\tcgroups\tstate entries\tranges\t")
	for _, s := range samples {
		fmt.Fprintf(tw, "%d\t%s\t%.2f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", s.Cycle, s.Elapsed.Round(100*time.Millisecond), float64(s.Cycle)/s.Elapsed.Seconds(),
			s.HostMounts, s.OwnMounts, s.FDs, s.Procs, s.Cgroups, s.StateFiles, s.Ranges)
	}
	tw.Flush()
	return b.String()
}

// soakCount counts the entries of dir.
func soakCount(dir string) int {
	ents, _ := os.ReadDir(dir)
	return len(ents)
}

// soakEntries counts every file and directory below dir.
func soakEntries(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(_ string, _ fs.DirEntry, err error) error {
		if err == nil {
			n++
		}
		return nil
	})
	return n - 1
}

// soakCgroups counts the cgroup directories (any controller, nested up to
// five levels: the runtime puts them below the caller's own) whose name
// starts with prefix, the soak's container IDs.
func soakCgroups(prefix string) int {
	n := 0
	filepath.WalkDir("/sys/fs/cgroup", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if strings.HasPrefix(d.Name(), prefix) {
			n++
		}
		if strings.Count(p, "/") > 8 {
			return filepath.SkipDir
		}
		return nil
	})
	return n
}

// soakContainers returns the pids of the soak's container processes, in any
// namespace: `sleep marker`.
func soakContainers(marker string) []int {
	want := []byte("sleep\x00" + marker + "\x00")
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if cmdline, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline")); err == nil && bytes.Equal(cmdline, want) {
			out = append(out, pid)
		}
	}
	return out
}
