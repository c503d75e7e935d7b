package integration

// TestRuntimeToolsPassthrough is the passthrough conformance check: the OCI
// runtime-tools validation suite gives, program by program and assertion by
// assertion, the same result through the shim in passthrough mode as with the
// bare runtime. The bare runtimes already fail some assertions on this kind of
// host (cgroups, capset, rlimits, apparmor), so the check is differential:
// only a difference between the two fails the test.
//
// Each of the 58 programs runs with RUNTIME set to the bare runtime, then to
// a script that runs the shim over it, each in its own mount namespace and
// temp dir. Results are compared by description (the programs number some
// checks in Go map order), with the exit status, the plan, runtimetest's own
// TAP embedded in diagnostics, and diagnostics attached to no test line. A
// pair that differs is run again (crun's hooks race: SIGPIPE now and then,
// bare or not); any agreeing attempt passes and is reported as flaky. Two
// programs carry their own user-namespace mapping onto host IDs 1000+, which
// the shim refuses whatever the mode (rttRefusedByPolicy): for them the test
// checks the refusal instead.
//
// hack/runtime-tools.sh builds the suite (Go module proxy, cached in
// .cache/runtime-tools; about 30 s the first time). The test takes about 5.5
// minutes for runc and crun on the CI machine: run it with a longer -timeout
// than go test's default 10m when other tests run too, for example
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
	"slices"
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

// rttAssertion is one result of a program: a TAP test line, a test line of
// runtimetest's own TAP (which the programs embed in a diagnostic's
// "stdout"), or a diagnostic attached to no test line (hooks tests report
// their failures this way).
type rttAssertion struct {
	Kind   string // "test", "inside" or "diagnostic"
	Key    string // the normalised description, prefixed by the kind unless a test
	Status string // ok, not ok, skip, todo; "reported" for a diagnostic
	Diag   string // the YAML block that followed the test line, if any
}

// rttRun is one run of one validation program.
type rttRun struct {
	Exit      string // "exit N", "timeout after ..." or "error: ..."
	Plan      string
	Asserts   []rttAssertion
	Stdout    string
	Stderr    string
	Duration  time.Duration
	Leftovers []string // containers still there after the program ended (force-deleted)
}

// results is the comparable outcome, independent of the order and numbering
// of the test lines (several programs number their checks in Go map order):
// description -> the sorted statuses of the lines with that description,
// plus the exit status and the plan as pseudo-assertions.
func (r *rttRun) results() map[string]string {
	multi := map[string][]string{}
	for _, a := range r.Asserts {
		multi[a.Key] = append(multi[a.Key], a.Status)
	}
	m := map[string]string{"(exit status)": r.Exit, "(plan)": r.Plan}
	for k, v := range multi {
		sort.Strings(v)
		m[k] = strings.Join(v, ", ")
	}
	return m
}

func (r *rttRun) count(kind, status string) int {
	n := 0
	for _, a := range r.Asserts {
		if a.Kind == kind && (status == "" || a.Status == status) {
			n++
		}
	}
	return n
}

func (r *rttRun) summary() string {
	s := fmt.Sprintf("%d ok, %d not ok", r.count("test", "ok"), r.count("test", "not ok"))
	if n := r.count("test", "skip"); n > 0 {
		s += fmt.Sprintf(", %d skip", n)
	}
	if n := r.count("inside", ""); n > 0 {
		s += fmt.Sprintf(", inside %d/%d ok", r.count("inside", "ok"), n)
	}
	if n := r.count("diagnostic", ""); n > 0 {
		s += fmt.Sprintf(", %d diag", n)
	}
	return s + ", " + r.Exit
}

// diag returns the diagnostic block of the first assertion with key, for reports.
func (r *rttRun) diag(key string) string {
	for _, a := range r.Asserts {
		if a.Key == key {
			return a.Diag
		}
	}
	return ""
}

var (
	rttTestLine  = regexp.MustCompile(`^(not )?ok ([0-9]+)\b\s*(.*)$`)
	rttDirective = regexp.MustCompile(`(?i)(?:^|\s)#\s*(skip|todo)\b\s*(.*)$`)
	rttUUID      = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)
	rttTempName  = regexp.MustCompile(`([A-Za-z])[0-9]{4,}`) // os.MkdirTemp names: ocitest123456789, target400197106
	rttTime      = regexp.MustCompile(`time="[^"]*"`)
)

// rttNormalise removes what legitimately changes from run to run: the temp
// dir, temp names, container IDs and log timestamps.
func rttNormalise(s, tmp string) string {
	if tmp != "" {
		s = strings.ReplaceAll(s, tmp, "$TMPDIR")
	}
	s = rttUUID.ReplaceAllString(s, "<uuid>")
	s = rttTempName.ReplaceAllString(s, "${1}<N>")
	s = rttTime.ReplaceAllString(s, `time="<t>"`)
	return s
}

// rttParseTAP reads the TAP the validation programs print (tap-go): test
// lines, indented YAML blocks (JSON in fact) and a plan. A block right after
// a test line is that line's diagnostic; any other block is a result of its
// own (see rttAssertion). inside is the key prefix for runtimetest's TAP.
func rttParseTAP(out, tmp, inside string) (plan string, asserts []rttAssertion) {
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
			raw := strings.Join(block, "\n")
			if lastWasTest {
				asserts[len(asserts)-1].Diag = rttNormalise(raw, tmp)
			} else {
				asserts = append(asserts, rttBlock(raw, tmp, inside)...)
			}
			lastWasTest = false
		case rttTestLine.MatchString(line):
			m := rttTestLine.FindStringSubmatch(line)
			status := "ok"
			if m[1] != "" {
				status = "not ok"
			}
			desc := m[3]
			// "ok 7 # SKIP reason" (tap-go), "ok 7 - desc # TODO reason"
			if d := rttDirective.FindStringSubmatchIndex(desc); d != nil {
				status = strings.ToLower(desc[d[2]:d[3]])
				reason := desc[d[4]:d[5]]
				if desc = strings.TrimSpace(desc[:d[0]]); desc == "" {
					desc = reason
				}
			}
			desc = strings.TrimPrefix(desc, "- ")
			kind := "test"
			if inside != "" {
				kind = "inside"
			}
			asserts = append(asserts, rttAssertion{Kind: kind, Key: inside + rttNormalise(desc, tmp), Status: status})
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
	return plan, asserts
}

// rttBlock turns a diagnostic attached to no test line into results: the
// test lines of runtimetest's TAP in its "stdout", the first line of its
// "error", else the names of its fields. Runtime stderr in it carries
// timestamps and PIDs, so it is not compared.
func rttBlock(raw, tmp, inside string) []rttAssertion {
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return []rttAssertion{{Kind: "diagnostic", Key: "(diagnostic) " + rttNormalise(strings.TrimSpace(raw), tmp), Status: "reported"}}
	}
	var out []rttAssertion
	if so, ok := m["stdout"].(string); ok && inside == "" && strings.Contains(so, "TAP version") {
		_, nested := rttParseTAP(so, tmp, "(inside) ")
		out = append(out, nested...)
	}
	if e, ok := m["error"].(string); ok {
		out = append(out, rttAssertion{Kind: "diagnostic", Key: "(diagnostic) error: " + rttNormalise(strings.SplitN(e, "\n", 2)[0], tmp), Status: "reported", Diag: rttNormalise(raw, tmp)})
	}
	if len(out) == 0 && !(inside == "" && m["stdout"] != nil) {
		var fields []string
		for k := range m {
			fields = append(fields, k)
		}
		sort.Strings(fields)
		out = append(out, rttAssertion{Kind: "diagnostic", Key: "(diagnostic) fields: " + strings.Join(fields, ", "), Status: "reported", Diag: rttNormalise(raw, tmp)})
	}
	return out
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
	run.Plan, run.Asserts = rttParseTAP(run.Stdout, bundles, "")
	// Containers a failed or killed program left behind, then the bundles
	// (their mounts went with the mount namespace; some programs' cleanup fails).
	run.Leftovers = rttDeleteLeftovers(runtime, tmp)
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
	sort.Strings(diff) // pseudo-assertions, "(...)", first
	return diff
}

// rttAnyAgree returns a bare run and a shim run with the same results, if
// any pair agrees, else the given pair.
func rttAnyAgree(bares, shims []*rttRun, bare, shim *rttRun) (*rttRun, *rttRun) {
	for _, b := range bares {
		for _, s := range shims {
			if len(rttDiff(b, s)) == 0 {
				return b, s
			}
		}
	}
	return bare, shim
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
	const max = 12 // a refused create loses every assertion: show the first few
	for i, k := range diff {
		if i == max {
			fmt.Fprintf(&sb, "  ... and %d more\n", len(diff)-max)
			break
		}
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

// rttDeleteLeftovers force-deletes the containers whose bundle is below dir
// (only those: other tests may have containers of their own) and returns their IDs.
func rttDeleteLeftovers(runtime, dir string) []string {
	out, _ := exec.Command(runtime, "list", "--format", "json").Output()
	var list []struct {
		ID     string `json:"id"`
		Bundle string `json:"bundle"`
	}
	json.Unmarshal(out, &list)
	var ids []string
	for _, c := range list {
		if strings.HasPrefix(c.Bundle, dir+"/") {
			exec.Command(runtime, "delete", "--force", c.ID).Run()
			ids = append(ids, c.ID)
		}
	}
	return ids
}

// rttCleanCgroups removes, when the test ends, the empty cgroups the
// linux_cgroups_* programs leave on the host (/cgrouptest and
// testdir/cgrouptest: the runtimes delete the container's cgroup, not its
// parents), unless they were there before.
func rttCleanCgroups(t *testing.T) {
	t.Helper()
	glob := func() []string {
		var dirs []string
		for _, name := range []string{"cgrouptest", "testdir"} {
			m, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", name))
			dirs = append(dirs, m...)
		}
		return dirs
	}
	before := glob()
	t.Cleanup(func() {
		var removed []string
		for _, top := range glob() {
			if slices.Contains(before, top) {
				continue
			}
			var dirs []string
			filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			slices.Reverse(dirs) // children first
			for _, d := range dirs {
				if err := syscall.Rmdir(d); err != nil {
					t.Logf("cannot remove cgroup %s the programs left: %v", d, err)
				}
			}
			removed = append(removed, top)
		}
		if len(removed) > 0 {
			t.Logf("removed the cgroups the programs left: %v", removed)
		}
	})
}

type rttRow struct {
	prog       string
	bare, shim *rttRun
	equal      int // assertions (and pseudo-assertions) with the same result
	diff       []string
	flaky      []string // differed on an earlier attempt, not on the last
	attempts   int
	refused    bool // in rttRefusedByPolicy, and the shim refused as it must
}

// rttRefusedByPolicy are the programs whose spec carries its own user
// namespace mapping that the shim's validation refuses at every create,
// passthrough or not (a mapping is a mapping source, and host IDs below
// 65536 belong to the host): linux_ns_nopath maps 0:1000:1000,
// linux_uid_mappings maps uid 0:1000:2000 and gid 0:1000:3000. For them the
// shim must refuse with its own message instead of matching the bare runtime.
var rttRefusedByPolicy = map[string]string{
	"linux_ns_nopath":    "spec mapping refused",
	"linux_uid_mappings": "spec mapping refused",
}

// rttReruns is how many times a pair whose results differ is run again.
const rttReruns = 5

func rttAppendNew(list []string, add ...string) []string {
	for _, a := range add {
		if !slices.Contains(list, a) {
			list = append(list, a)
		}
	}
	return list
}

func rttShortList(keys []string) string {
	if len(keys) > 3 {
		return strings.Join(keys[:3], "; ") + fmt.Sprintf("; ... (%d more)", len(keys)-3)
	}
	return strings.Join(keys, "; ")
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
	rttCleanCgroups(t)
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
			var rows []*rttRow
			for _, prog := range progs {
				name := strings.TrimSuffix(prog, ".t")
				t.Run(name, func(t *testing.T) {
					row := &rttRow{prog: name}
					rows = append(rows, row)
					row.bare = rttRunProgram(t, suite, prog, rt.Path)
					row.shim = rttRunProgram(t, suite, prog, shim)
					row.diff = rttDiff(row.bare, row.shim)
					if want, ok := rttRefusedByPolicy[name]; ok {
						if !strings.Contains(row.shim.Stderr, "userns-shim: ") || !strings.Contains(row.shim.Stderr, want) {
							t.Errorf("%s: the shim must refuse this spec's own mapping (%q); its stderr:\n%s", name, want, row.shim.Stderr)
						}
						row.refused, row.diff = true, nil
						return
					}
					// A difference may be a race in the runtime itself (crun's
					// hooks get SIGPIPE now and then, bare or not): rerun the
					// pair, and take any agreeing attempt as a pass, reported
					// as flaky. A difference on every attempt fails.
					row.attempts = 1
					var bares, shims []*rttRun
					for len(row.diff) > 0 && row.attempts <= rttReruns {
						if row.attempts == 1 {
							t.Logf("%s: bare %s and shim differ on %d result(s); rerunning the pair (up to %d times):\n%s",
								name, rt.Name, len(row.diff), rttReruns, rttReport(row.bare, row.shim, row.diff))
						} else {
							t.Logf("%s: attempt %d differs too, on %d result(s): %s", name, row.attempts, len(row.diff), rttShortList(row.diff))
						}
						row.flaky = rttAppendNew(row.flaky, row.diff...)
						bares = append(bares, row.bare)
						shims = append(shims, row.shim)
						row.bare = rttRunProgram(t, suite, prog, rt.Path)
						row.shim = rttRunProgram(t, suite, prog, shim)
						row.diff = rttDiff(row.bare, row.shim)
						row.attempts++
						// A racy program (poststart on crun) gives several
						// outcomes bare too: the shim passes when any of its
						// runs gave one the bare runtime also gave.
						if len(row.diff) > 0 {
							row.bare, row.shim = rttAnyAgree(append(bares, row.bare), append(shims, row.shim), row.bare, row.shim)
							row.diff = rttDiff(row.bare, row.shim)
						}
					}
					switch {
					case len(row.diff) > 0:
						row.flaky = nil
						t.Errorf("%s: the shim differs from bare %s on %d result(s), on all %d attempts; the last one:\n%s",
							name, rt.Name, len(row.diff), row.attempts, rttReport(row.bare, row.shim, row.diff))
					case row.attempts > 1:
						t.Logf("%s: flaky: attempt %d gave the same results through the shim as bare %s", name, row.attempts, rt.Name)
					}
					row.equal = rttUnion(row.bare, row.shim) - len(row.diff)
					for _, r := range []*rttRun{row.bare, row.shim} {
						if len(r.Leftovers) > 0 {
							t.Logf("%s: force-deleted %d container(s) the program left behind: %v", name, len(r.Leftovers), r.Leftovers)
						}
					}
				})
			}

			var sb strings.Builder
			equal, differ, flaky, bareFail := 0, 0, 0, 0
			fmt.Fprintf(&sb, "runtime-tools through the shim (passthrough) vs bare %s, %d programs:\n", rt.Name, len(rows))
			fmt.Fprintf(&sb, "%-34s %-54s %-54s %s\n", "program", "bare "+rt.Name, "shim", "verdict")
			for _, r := range rows {
				verdict := "same"
				switch {
				case r.refused:
					verdict = "refused by the shim's mapping rules, as it must be"
				case len(r.diff) > 0:
					verdict = fmt.Sprintf("DIFFERENT (%d)", len(r.diff))
				case len(r.flaky) > 0:
					verdict = fmt.Sprintf("same on attempt %d (flaky: %s)", r.attempts, rttShortList(r.flaky))
				}
				fmt.Fprintf(&sb, "%-34s %-54s %-54s %s  [%v / %v]\n", r.prog, r.bare.summary(), r.shim.summary(), verdict,
					r.bare.Duration.Round(time.Millisecond), r.shim.Duration.Round(time.Millisecond))
				equal += r.equal
				differ += len(r.diff)
				if len(r.flaky) > 0 {
					flaky++
				}
				bareFail += r.bare.count("test", "not ok")
			}
			fmt.Fprintf(&sb, "results compared (assertions + exit status, plan, diagnostics per program): %d equal, %d different; %d program(s) flaky; bare %s fails %d assertion(s) itself\n",
				equal, differ, flaky, rt.Name, bareFail)
			fmt.Fprintf(&sb, "assertions bare %s fails (expected here, same through the shim unless reported above):\n", rt.Name)
			for _, r := range rows {
				for _, a := range r.bare.Asserts {
					switch {
					case a.Status == "not ok":
						fmt.Fprintf(&sb, "  %s: not ok - %s\n", r.prog, a.Key)
					case a.Kind == "diagnostic":
						fmt.Fprintf(&sb, "  %s: %s\n", r.prog, a.Key)
					}
				}
				if r.bare.Exit != "exit 0" {
					fmt.Fprintf(&sb, "  %s: %s\n", r.prog, r.bare.Exit)
				}
			}
			fmt.Fprintf(&sb, "%s took %v", rt.Name, time.Since(start).Round(time.Second))
			t.Log(sb.String())
		})
	}
	t.Logf("TestRuntimeToolsPassthrough took %v", time.Since(total).Round(time.Second))
}

// TestRuntimeToolsParseTAP checks the TAP reading on the shapes the
// validation programs print; it needs neither root nor the suite.
func TestRuntimeToolsParseTAP(t *testing.T) {
	inner := "TAP version 13\nok 1 - has expected hostname\nnot ok 2 - shared root propagation exposes \"/target400197106/x\"\nok 3 # SKIP linux.sysctl not set\n1..3\n"
	stdout, _ := json.Marshal(map[string]string{"stdout": inner, "stderr": ""})
	out := "TAP version 13\n" +
		"  ---\n  {\"error\": \"Hooks MUST be called in the listed order\\nRefer to: x\"}\n  ...\n" +
		"ok 1 - create MUST create a new container\n  ---\n  {\n    \"container ID\": \"0e54256a-8438-49e7-b61e-8befa94f05c8\"\n  }\n  ...\n" +
		"  ---\n  " + string(stdout) + "\n  ...\n" +
		"not ok 2 - check root propagation: shared\n" +
		"ok 3 # SKIP hostname not set\n" +
		"ok 4 - mount /tmp/x/ocitest123456/a has expected type # TODO later\n" +
		"1..4\n"
	plan, asserts := rttParseTAP(out, "/tmp/x", "")
	if plan != "1..4" {
		t.Errorf("plan %q", plan)
	}
	var got []string
	for _, a := range asserts {
		got = append(got, a.Kind+"|"+a.Status+"|"+a.Key)
	}
	want := []string{
		"diagnostic|reported|(diagnostic) error: Hooks MUST be called in the listed order",
		"test|ok|create MUST create a new container",
		"inside|ok|(inside) has expected hostname",
		`inside|not ok|(inside) shared root propagation exposes "/target<N>/x"`,
		"inside|skip|(inside) linux.sysctl not set",
		"test|not ok|check root propagation: shared",
		"test|skip|hostname not set",
		"test|todo|mount $TMPDIR/ocitest<N>/a has expected type",
	}
	if !slices.Equal(got, want) {
		t.Errorf("parsed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if d := asserts[1].Diag; !strings.Contains(d, "<uuid>") {
		t.Errorf("diagnostic of test 1 not attached or not normalised: %q", d)
	}
	// Order and numbering do not matter; statuses of equal descriptions are a multiset.
	a := &rttRun{Exit: "exit 0", Plan: "1..2", Asserts: []rttAssertion{{Key: "m", Status: "ok"}, {Key: "m", Status: "not ok"}}}
	b := &rttRun{Exit: "exit 0", Plan: "1..2", Asserts: []rttAssertion{{Key: "m", Status: "not ok"}, {Key: "m", Status: "ok"}}}
	if d := rttDiff(a, b); len(d) != 0 {
		t.Errorf("reordered results differ: %v", d)
	}
	b.Asserts[0].Status = "ok"
	if d := rttDiff(a, b); !slices.Equal(d, []string{"m"}) {
		t.Errorf("diff %v, want [m]", d)
	}
}
