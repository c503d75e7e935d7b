package integration

// TestRuntimeToolsPassthrough is the passthrough conformance check: the OCI
// runtime-tools validation suite gives, program by program and assertion by
// assertion, the same result through the shim in passthrough mode as with the
// bare runtime. The bare runtimes already fail some assertions on this kind of
// host (cgroups, capset, rlimits, apparmor), so the check is differential:
// only a difference between the two fails the test.
//
// hack/runtime-tools.sh builds the suite (Go module proxy, cached in
// .cache/runtime-tools). The whole test takes several minutes: run it with a
// longer -timeout than go test's default 10m, for example
//
//	go test -v -timeout 30m -run TestRuntimeToolsPassthrough ./integration
//
// One program, one runtime: -run 'TestRuntimeToolsPassthrough/runc/hooks_stdin$'.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rttTimeout bounds one run of one validation program.
const rttTimeout = 60 * time.Second

// rttSuite builds (or finds in the cache) the validation programs and returns
// the directory holding them, runtimetest and the rootfs tarball.
func rttSuite(t *testing.T) string {
	t.Helper()
	start := time.Now()
	cmd := exec.Command("../hack/runtime-tools.sh")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ee.ExitCode() == 3:
		t.Skipf("runtime-tools could not be downloaded from the Go module proxy (no network?): hack/runtime-tools.sh: %s", errb.String())
	case err != nil:
		t.Fatalf("hack/runtime-tools.sh: %v\n%s", err, errb.String())
	}
	dir := strings.TrimSpace(out.String())
	if _, err := os.Stat(filepath.Join(dir, "runtimetest")); err != nil {
		t.Fatalf("hack/runtime-tools.sh printed %q, which holds no runtimetest: %v", dir, err)
	}
	t.Logf("runtime-tools suite in %s (script took %v)", dir, time.Since(start).Round(time.Millisecond))
	return dir
}

// rttAssertion is one TAP test line.
type rttAssertion struct {
	Key    string // "N - description", normalised
	Status string // ok, not ok, skip
	Diag   string // the YAML block that followed it, if any
}

// rttRun is one run of one validation program.
type rttRun struct {
	Exit     string // "exit N", "timeout" or "error: ..."
	Plan     string
	Asserts  []rttAssertion
	Orphans  []string // diagnostics attached to no test line (hooks report failures this way)
	Stdout   string
	Stderr   string
	Duration time.Duration
}

// results is the comparable outcome: key -> status, including the exit
// status, the plan and the orphan diagnostics as pseudo-assertions.
func (r *rttRun) results() map[string]string {
	m := map[string]string{"(exit status)": r.Exit, "(plan)": r.Plan}
	for _, a := range r.Asserts {
		m[a.Key] = a.Status
	}
	for i, o := range r.Orphans {
		m[fmt.Sprintf("(diagnostic #%d)", i+1)] = o
	}
	return m
}

func (r *rttRun) count(status string) int {
	n := 0
	for _, a := range r.Asserts {
		if a.Status == status {
			n++
		}
	}
	return n
}

func (r *rttRun) summary() string {
	s := fmt.Sprintf("%d ok, %d not ok", r.count("ok"), r.count("not ok"))
	if n := r.count("skip"); n > 0 {
		s += fmt.Sprintf(", %d skip", n)
	}
	if len(r.Orphans) > 0 {
		s += fmt.Sprintf(", %d diag", len(r.Orphans))
	}
	return s + ", " + r.Exit
}

// diag returns the diagnostic block of the assertion with key, for reports.
func (r *rttRun) diag(key string) string {
	for _, a := range r.Asserts {
		if a.Key == key {
			return a.Diag
		}
	}
	return ""
}

var (
	rttTestLine = regexp.MustCompile(`^(not )?ok (\d+)(?: -? ?(.*?))?(?:\s+#\s*(?i:(skip|todo))\b.*)?$`)
	rttUUID     = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)
	rttOCITest  = regexp.MustCompile(`ocitest[0-9]+`)
	rttTime     = regexp.MustCompile(`time="[^"]*"`)
)

// rttNormalise removes what legitimately changes from run to run: the temp
// dir, bundle names, container IDs and log timestamps.
func rttNormalise(s, tmp string) string {
	if tmp != "" {
		s = strings.ReplaceAll(s, tmp, "$TMPDIR")
	}
	s = rttUUID.ReplaceAllString(s, "<uuid>")
	s = rttOCITest.ReplaceAllString(s, "ocitest<N>")
	s = rttTime.ReplaceAllString(s, `time="<t>"`)
	return s
}

// rttParseTAP reads the TAP the validation programs print (tap-go): test
// lines, each optionally followed by an indented YAML block, and a plan.
func rttParseTAP(out, tmp string) (plan string, asserts []rttAssertion, orphans []string) {
	lines := strings.Split(out, "\n")
	lastWasTest := false
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch {
		case strings.TrimSpace(line) == "---":
			var block []string
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "..."; i++ {
				block = append(block, lines[i])
			}
			text := rttNormalise(strings.Join(block, "\n"), tmp)
			if lastWasTest {
				asserts[len(asserts)-1].Diag = text
			} else {
				orphans = append(orphans, rttOrphanKey(text))
			}
			lastWasTest = false
		case rttTestLine.MatchString(line):
			m := rttTestLine.FindStringSubmatch(line)
			status := "ok"
			if m[1] != "" {
				status = "not ok"
			}
			if m[4] != "" {
				status = strings.ToLower(m[4])
			}
			asserts = append(asserts, rttAssertion{Key: rttNormalise(m[2]+" - "+m[3], tmp), Status: status})
			lastWasTest = true
		case strings.HasPrefix(line, "1.."):
			plan = line
			lastWasTest = false
		case strings.HasPrefix(line, "TAP version"), strings.TrimSpace(line) == "":
		default:
			lastWasTest = false
		}
	}
	if plan == "" {
		plan = "(none)"
	}
	return plan, asserts, orphans
}

// rttOrphanKey is what is compared of a diagnostic attached to no test line:
// the first line of its "error", else the whole block. Runtime stderr in it
// carries timestamps and PIDs, so it is left out.
func rttOrphanKey(block string) string {
	var m map[string]any
	if json.Unmarshal([]byte(block), &m) == nil {
		if e, ok := m["error"].(string); ok {
			return "error: " + strings.SplitN(e, "\n", 2)[0]
		}
	}
	return strings.TrimSpace(block)
}

// rttRunProgram runs one validation program from suite with RUNTIME=runtime,
// in a private mount namespace (linux_rootfs_propagation leaks mounts
// otherwise) and with a temp dir of its own for its bundles.
func rttRunProgram(t *testing.T, suite, prog, runtime string) *rttRun {
	t.Helper()
	tmp, err := os.MkdirTemp(t.TempDir(), "run-")
	if err != nil {
		t.Fatal(err)
	}
	// Like /tmp: t.TempDir()'s 0700 would change what a container in a user
	// namespace can reach.
	for d := tmp; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	bundles := filepath.Join(tmp, "tmp")
	if err := os.Mkdir(bundles, 0o1777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(bundles, 0o1777)
	// Files, not pipes: a container left running would hold a pipe open.
	stdout, err := os.Create(filepath.Join(tmp, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(tmp, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()

	cmd := exec.Command("unshare", "-m", "--propagation", "private", filepath.Join(suite, prog))
	cmd.Dir = suite // the programs copy ./runtimetest and unpack ./rootfs-<arch>.tar.gz
	cmd.Env = append(os.Environ(), "RUNTIME="+runtime, "TMPDIR="+bundles)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	run := &rttRun{}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", prog, err)
	}
	timer := time.AfterFunc(rttTimeout, func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})
	err = cmd.Wait()
	timedOut := !timer.Stop()
	run.Duration = time.Since(start)
	var ee *exec.ExitError
	switch {
	case timedOut:
		run.Exit = fmt.Sprintf("timeout after %v", rttTimeout)
	case err == nil:
		run.Exit = "exit 0"
	case errors.As(err, &ee) && ee.Exited():
		run.Exit = "exit " + strconv.Itoa(ee.ExitCode())
	default:
		run.Exit = "error: " + err.Error()
	}
	o, _ := os.ReadFile(stdout.Name())
	e, _ := os.ReadFile(stderr.Name())
	run.Stdout, run.Stderr = string(o), string(e)
	run.Plan, run.Asserts, run.Orphans = rttParseTAP(run.Stdout, bundles)
	// The mounts went with the mount namespace; the bundles left behind
	// (some programs' cleanup fails) go now.
	os.RemoveAll(tmp)
	return run
}

// rttDiff lists the keys whose results differ between bare and shim.
func rttDiff(bare, shim *rttRun) []string {
	b, s := bare.results(), shim.results()
	keys := map[string]bool{}
	for k := range b {
		keys[k] = true
	}
	for k := range s {
		keys[k] = true
	}
	var diff []string
	for k := range keys {
		bv, ok1 := b[k]
		sv, ok2 := s[k]
		if !ok1 {
			bv = "(missing)"
		}
		if !ok2 {
			sv = "(missing)"
		}
		if bv != sv {
			diff = append(diff, k)
		}
	}
	sort.Strings(diff)
	return diff
}

// rttUnion counts the keys of both runs' results.
func rttUnion(bare, shim *rttRun) int {
	keys := bare.results()
	for k := range shim.results() {
		keys[k] = ""
	}
	return len(keys)
}

// rttReport describes the differences between two runs: per assertion both
// results and both diagnostics, then both stderrs.
func rttReport(bare, shim *rttRun, diff []string) string {
	b, s := bare.results(), shim.results()
	var sb strings.Builder
	for _, k := range diff {
		bv, sv := b[k], s[k]
		if bv == "" {
			bv = "(missing)"
		}
		if sv == "" {
			sv = "(missing)"
		}
		fmt.Fprintf(&sb, "  %s\n    bare: %s\n    shim: %s\n", k, bv, sv)
		if d := bare.diag(k); d != "" {
			fmt.Fprintf(&sb, "    bare diagnostic:\n%s\n", rttIndent(d, "      "))
		}
		if d := shim.diag(k); d != "" {
			fmt.Fprintf(&sb, "    shim diagnostic:\n%s\n", rttIndent(d, "      "))
		}
	}
	fmt.Fprintf(&sb, "  bare stderr:\n%s\n  shim stderr:\n%s", rttIndent(rttTail(bare.Stderr), "    "), rttIndent(rttTail(shim.Stderr), "    "))
	return sb.String()
}

func rttIndent(s, prefix string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return prefix + "(empty)"
	}
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

func rttTail(s string) string {
	const max = 3000
	if len(s) > max {
		return "..." + s[len(s)-max:]
	}
	return s
}

// rttShimWrapper writes the RUNTIME the programs call for the shim: the shim
// with a passthrough configuration over rt. The spec the programs write
// carries no mapping source the shim reads (annotations, kubelet records), so
// the shim must behave exactly like rt.
func rttShimWrapper(t *testing.T, rt Runtime) string {
	t.Helper()
	kubelet := t.TempDir() // empty: no kubelet userns records
	e := newEnv(t, rt, fmt.Sprintf("mode = \"passthrough\"\nkubelet_root = %q", kubelet))
	p := filepath.Join(t.TempDir(), "userns-shim-"+rt.Name)
	script := fmt.Sprintf("#!/bin/sh\nunset USERNS_SHIM_RUNTIME\nUSERNS_SHIM_CONFIG=%q exec %q \"$@\"\n", e.Config, shimBin)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// rttContainers lists the containers the runtime knows (its default --root,
// the one the programs use).
func rttContainers(runtime string) map[string]bool {
	out, _ := exec.Command(runtime, "list", "-q").Output()
	ids := map[string]bool{}
	for _, id := range strings.Fields(string(out)) {
		ids[id] = true
	}
	return ids
}

type rttRow struct {
	prog       string
	bare, shim *rttRun
	equal      int // assertions (and pseudo-assertions) with the same result
	diff       []string
	flaky      []string // differed on the first try, not on the rerun
}

func TestRuntimeToolsPassthrough(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("-short: the runtime-tools suite takes minutes per runtime")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare is not installed (util-linux)")
	}
	total := time.Now()
	suite := rttSuite(t)
	progs, err := filepath.Glob(filepath.Join(suite, "*.t"))
	if err != nil || len(progs) == 0 {
		t.Fatalf("no validation programs in %s (%v)", suite, err)
	}
	for i := range progs {
		progs[i] = filepath.Base(progs[i])
	}
	sort.Strings(progs)

	for _, rt := range runtimes(t) {
		t.Run(rt.Name, func(t *testing.T) {
			start := time.Now()
			shim := rttShimWrapper(t, rt)
			before := rttContainers(rt.Path)
			var rows []*rttRow
			for _, prog := range progs {
				name := strings.TrimSuffix(prog, ".t")
				t.Run(name, func(t *testing.T) {
					row := &rttRow{prog: name}
					rows = append(rows, row)
					row.bare = rttRunProgram(t, suite, prog, rt.Path)
					row.shim = rttRunProgram(t, suite, prog, shim)
					row.diff = rttDiff(row.bare, row.shim)
					if len(row.diff) > 0 {
						first := rttReport(row.bare, row.shim, row.diff)
						t.Logf("%s: bare %s and shim differ on %d result(s); rerunning the pair once:\n%s", name, rt.Name, len(row.diff), first)
						row.bare = rttRunProgram(t, suite, prog, rt.Path)
						row.shim = rttRunProgram(t, suite, prog, shim)
						again := rttDiff(row.bare, row.shim)
						if len(again) == 0 {
							row.flaky, row.diff = row.diff, nil
							t.Logf("%s: flaky: the rerun gave the same results through the shim as bare %s", name, rt.Name)
						} else {
							row.diff = again
							t.Errorf("%s: the shim differs from bare %s on %d result(s), also on the rerun:\n%s", name, rt.Name, len(again), rttReport(row.bare, row.shim, again))
						}
					}
					row.equal = rttUnion(row.bare, row.shim) - len(row.diff)
				})
			}

			// Containers a killed program left behind.
			for id := range rttContainers(rt.Path) {
				if !before[id] {
					t.Logf("deleting container %s left behind", id)
					exec.Command(rt.Path, "delete", "--force", id).Run()
				}
			}

			var sb strings.Builder
			equal, differ, flaky, bareFail := 0, 0, 0, 0
			fmt.Fprintf(&sb, "runtime-tools through the shim (passthrough) vs bare %s, %d programs:\n", rt.Name, len(rows))
			fmt.Fprintf(&sb, "%-36s %-40s %-40s %s\n", "program", "bare "+rt.Name, "shim", "verdict")
			for _, r := range rows {
				verdict := "same"
				switch {
				case len(r.diff) > 0:
					verdict = fmt.Sprintf("DIFFERENT (%d)", len(r.diff))
				case len(r.flaky) > 0:
					verdict = fmt.Sprintf("same on rerun (flaky: %s)", strings.Join(r.flaky, "; "))
				}
				fmt.Fprintf(&sb, "%-36s %-40s %-40s %s  [%v / %v]\n", r.prog, r.bare.summary(), r.shim.summary(), verdict,
					r.bare.Duration.Round(time.Millisecond), r.shim.Duration.Round(time.Millisecond))
				equal += r.equal
				differ += len(r.diff)
				if len(r.flaky) > 0 {
					flaky++
				}
				bareFail += r.bare.count("not ok")
			}
			fmt.Fprintf(&sb, "results compared (assertions + exit status, plan, diagnostics per program): %d equal, %d different; %d program(s) flaky; bare %s fails %d assertion(s) itself\n",
				equal, differ, flaky, rt.Name, bareFail)
			fmt.Fprintf(&sb, "assertions bare %s fails (expected here, same through the shim unless reported above):\n", rt.Name)
			for _, r := range rows {
				for _, a := range r.bare.Asserts {
					if a.Status == "not ok" {
						fmt.Fprintf(&sb, "  %s: not ok %s\n", r.prog, a.Key)
					}
				}
				for _, o := range r.bare.Orphans {
					fmt.Fprintf(&sb, "  %s: %s\n", r.prog, o)
				}
			}
			fmt.Fprintf(&sb, "%s took %v", rt.Name, time.Since(start).Round(time.Second))
			t.Log(sb.String())
		})
	}
	t.Logf("TestRuntimeToolsPassthrough took %v", time.Since(total).Round(time.Second))
}
