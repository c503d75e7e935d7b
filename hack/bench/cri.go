package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const (
	targetPodStartRatio = 1.05       // pod start through the shim / the same stack without it
	criHostID           = 2147483648 // the CRI pods' user-namespace mapping: 0 -> 2^31, 65536 IDs
	criTimeout          = 2 * time.Minute
)

// criKinds are the CRI runtimes of the cri part, with the hack/e2e script
// that starts each (the end-to-end tests' own).
// Each gets a CNI bridge and subnet of its own, apart from the e2e tests'
// (which may run at the same time).
var criKinds = []struct{ kind, script, title, bridge, subnet string }{
	{"containerd2", "containerd2.sh", "containerd 2.4", "bench-ctrd2", "10.99.12.0/24"},
	{"crio", "crio.sh", "CRI-O 1.34", "bench-crio", "10.99.13.0/24"},
}

// criVariant is one handler with or without hostUsers:false.
type criVariant struct {
	name, handler string
	userns        bool
	shim          bool
	rt            string // runc or crun
	err           string // why it cannot run pods here, when it cannot
	seq           int
	wrapper       string // the handler's wrapper script (shim and noop handlers)
	calls         string // the runtime calls of one pod start, by verb
	nCalls        int
}

// criDaemonResult is one CRI runtime's pod starts.
type criDaemonResult struct {
	kind, title, version string
	vs                   []*criVariant
	samples              map[string][]sample // create=runp, start=create, wait=start, destroy=stop+rm+stopp+rmp
}

// criResult is the cri part; skipped says why it did not run.
type criResult struct {
	rounds  int
	warmup  int
	skipped string
	daemons []*criDaemonResult
}

// podStart is runp + create + start of a criDaemonResult sample.
func podStart(s sample) float64 { return s.create + s.start + s.wait }
func podStop(s sample) float64  { return s.destroy }

// e2eVars runs a hack/e2e script that prints NAME=VALUE lines and returns them.
func e2eVars(repo string, env []string, script string, args ...string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(repo, "hack", "e2e", script), args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("hack/e2e/%s %s: %w: %s", script, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	vars := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			vars[k] = v
		}
	}
	return vars, nil
}

// shimWrapper writes a shim config for the real runtime rt and a script
// that runs the shim with it.
func shimWrapper(dir, shimBin, rt, stateDir, extra string) (string, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	cfg := filepath.Join(dir, "shim.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("runtime = %q\nstate_dir = %q\n%s", rt, stateDir, extra)), 0o644); err != nil {
		return "", "", err
	}
	w, err := envWrapper(filepath.Join(dir, "userns-shim"), "USERNS_SHIM_CONFIG", cfg, shimBin)
	return w, cfg, err
}

// envWrapper writes a script at path that runs bin with name=value in its
// environment: CRI runtimes and conmon pass the runtime none of theirs.
// While path.count-on exists, it also appends its arguments to path.calls
// (the cri part counts the runtime calls of one pod start so).
func envWrapper(path, name, value, bin string) (string, error) {
	script := fmt.Sprintf("#!/bin/sh\n[ ! -e %[1]s.count-on ] || echo \"$*\" >>%[1]s.calls\n%[2]s=%[3]s\nexport %[2]s\nexec %[4]s \"$@\"\n",
		path, name, value, bin)
	return path, os.WriteFile(path, []byte(script), 0o755)
}

// runtimeVerbs counts the runtime subcommands in a wrapper's calls file:
// the first argument that is no flag and no flag's value.
func runtimeVerbs(calls string) (map[string]int, int) {
	data, _ := os.ReadFile(calls)
	verbs, total := map[string]int{}, 0
	withValue := map[string]bool{"--root": true, "--log": true, "--log-format": true, "--criu": true, "--rootless": true}
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(l)
		for i := 0; i < len(f); i++ {
			if withValue[f[i]] {
				i++
				continue
			}
			if !strings.HasPrefix(f[i], "-") {
				verbs[f[i]]++
				total++
				break
			}
		}
	}
	return verbs, total
}

// criTools builds or finds crictl, containerd 2.4 and CRI-O 1.34 (hack/e2e/tools.sh)
// and the images (hack/e2e/images.sh); the reason is set when they cannot be had.
func criTools(repo string) (tools, images map[string]string, reason string) {
	for _, t := range []string{"conmon", "skopeo", "umoci", "gcc"} {
		if _, err := exec.LookPath(t); err != nil {
			return nil, nil, t + " is not installed (hack/e2e/install-deps.sh and install-deps-clients.sh install it)"
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		return nil, nil, "the CNI plugins are not in /usr/lib/cni (hack/e2e/install-deps-clients.sh installs them)"
	}
	fmt.Fprintln(os.Stderr, "bench: cri: hack/e2e/tools.sh (about 5 minutes the first time on a machine)")
	tools, err := e2eVars(repo, nil, "tools.sh")
	if err != nil {
		return nil, nil, err.Error()
	}
	images, err = e2eVars(repo, nil, "images.sh")
	if err != nil {
		return nil, nil, err.Error()
	}
	return tools, images, ""
}

func runCRI(o options, repo, dir, stateRoot, shimBin, noopBin string, rng *rand.Rand, sigs chan os.Signal) (*criResult, error) {
	r := &criResult{rounds: o.criRounds, warmup: o.warmup}
	tools, images, reason := criTools(repo)
	if reason != "" {
		r.skipped = reason
		fmt.Fprintln(os.Stderr, "bench: cri: SKIPPED:", reason)
		return r, nil
	}
	for _, k := range criKinds {
		net := []string{"CNI_BRIDGE=" + k.bridge, "CNI_SUBNET=" + k.subnet}
		d, err := runCRIDaemon(o, repo, filepath.Join(dir, "cri-"+k.kind), stateRoot, shimBin, noopBin, k.kind, k.script, k.title, net, tools, images, rng, sigs)
		if err != nil {
			return nil, err
		}
		r.daemons = append(r.daemons, d)
	}
	return r, nil
}

func runCRIDaemon(o options, repo, dir, stateRoot, shimBin, noopBin, kind, script, title string, net []string, tools, images map[string]string,
	rng *rand.Rand, sigs chan os.Signal) (_ *criDaemonResult, retErr error) {
	d := &criDaemonResult{kind: kind, title: title, samples: map[string][]sample{}}
	ddir := filepath.Join(dir, "d")
	if err := os.MkdirAll(ddir, 0o711); err != nil {
		return nil, err
	}
	// The real runtimes behind the shim are the ones the daemon's own runc
	// and crun handlers use (for CRI-O, its oom_score_adj clamp wrappers).
	real := map[string]string{"runc": "/usr/sbin/runc", "crun": filepath.Join(repo, "hack", "crun-hybrid")}
	if kind == "crio" {
		real = map[string]string{"runc": filepath.Join(ddir, "runc-oomclamp"), "crun": filepath.Join(ddir, "crun-oomclamp")}
	}
	var handlers []string
	wrappers := map[string]string{}
	for _, rt := range []string{"runc", "crun"} {
		w, _, err := shimWrapper(filepath.Join(dir, "shim-"+rt), shimBin, real[rt], filepath.Join(stateRoot, "cri-"+kind+"-"+rt), "")
		if err != nil {
			return nil, err
		}
		handlers = append(handlers, "userns-shim-"+rt+"="+w)
		wrappers["userns-shim-"+rt] = w
	}
	// The floor of any Go exec wrapper behind the same kind of script.
	noop, err := envWrapper(filepath.Join(dir, "noop-runc"), "NOOP_WRAPPER_RUNTIME", real["runc"], noopBin)
	if err != nil {
		return nil, err
	}
	handlers = append(handlers, "noop-runc="+noop)
	wrappers["noop-runc"] = noop
	env := append([]string{"SHIM_HANDLERS=" + strings.Join(handlers, " ")}, net...)
	for _, k := range []string{"CRICTL", "CRITEST", "CONTAINERD", "CONTAINERD_SHIM", "CTR", "CRIO", "PINNS", "E2E_BIN"} {
		env = append(env, k+"="+tools[k])
	}
	fmt.Fprintf(os.Stderr, "bench: cri: starting %s (hack/e2e/%s)\n", title, script)
	denv, err := e2eVars(repo, env, script, "start", ddir)
	if err != nil {
		// A daemon that did not start may still have left a half-started state.
		e2eVars(repo, env, script, "stop", ddir) //nolint:errcheck // best effort
		return nil, err
	}
	// Stopped whatever happened: it removes pods, conmons, mounts and the bridge.
	defer func() {
		if _, err := e2eVars(repo, env, script, "stop", ddir); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()
	crictl := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), criTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, tools["CRICTL"], append([]string{"--config", denv["CRICTL_CONFIG"]}, args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return strings.TrimSpace(string(out)), nil
	}
	for _, img := range []struct{ name, archive string }{{images["BUSYBOX_IMAGE"], images["BUSYBOX_ARCHIVE"]}, {images["PAUSE_IMAGE"], images["PAUSE_ARCHIVE"]}} {
		var cmd *exec.Cmd
		if kind == "containerd2" {
			cmd = exec.Command(tools["CTR"], "-a", denv["CONTAINERD_ADDRESS"], "-n", "k8s.io", "images", "import", img.archive)
		} else {
			cmd = exec.Command("skopeo", "copy", "--quiet", "docker-archive:"+img.archive, "containers-storage:["+denv["CRIO_STORAGE"]+"]"+img.name)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%s: load %s: %w: %s", title, img.name, err, out)
		}
	}
	if v, err := crictl("version"); err == nil {
		for _, l := range strings.Split(v, "\n") {
			if k, val, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "RuntimeVersion" {
				d.version = strings.TrimSpace(val)
			}
		}
	}

	for _, rt := range []string{"runc", "crun"} {
		for _, shim := range []bool{false, true} {
			for _, userns := range []bool{false, true} {
				v := &criVariant{handler: rt, rt: rt, shim: shim, userns: userns, name: rt}
				if shim {
					v.handler, v.name = "userns-shim-"+rt, "shim-"+rt
				}
				if userns {
					v.name += "+userns"
				}
				d.vs = append(d.vs, v)
			}
			if rt == "runc" && !shim {
				d.vs = append(d.vs, &criVariant{handler: "noop-runc", name: "noop-runc", rt: rt})
			}
		}
	}
	for _, v := range d.vs {
		v.wrapper = wrappers[v.handler]
	}
	podsDir := filepath.Join(dir, "pods")
	cycle := func(v *criVariant, check bool) (s sample, err error) {
		v.seq++
		name := fmt.Sprintf("%s-%d", idName(v.name), v.seq)
		name = strings.ReplaceAll(name, "+", "-")
		pd := filepath.Join(podsDir, name)
		if err := os.MkdirAll(filepath.Join(pd, "logs"), 0o755); err != nil {
			return s, err
		}
		ns := map[string]any{"network": 0, "ipc": 0, "pid": 1}
		if v.userns {
			m := []map[string]any{{"host_id": criHostID, "container_id": 0, "length": benchSize}}
			ns["userns_options"] = map[string]any{"mode": 0, "uids": m, "gids": m}
		}
		podCfg, err := writeJSON(filepath.Join(pd, "pod.json"), map[string]any{
			"metadata":      map[string]any{"name": name, "namespace": "bench", "uid": name + "-uid", "attempt": 0},
			"hostname":      name,
			"log_directory": filepath.Join(pd, "logs"),
			"linux": map[string]any{
				"cgroup_parent":    "/bench-" + name,
				"security_context": map[string]any{"namespace_options": ns},
			},
		})
		if err != nil {
			return s, err
		}
		ctrCfg, err := writeJSON(filepath.Join(pd, "ctr.json"), map[string]any{
			"metadata": map[string]any{"name": "box", "attempt": 0},
			"image":    map[string]any{"image": images["BUSYBOX_IMAGE"]},
			"command":  []string{"sleep", "3600"},
			"log_path": "box.log",
			"linux":    map[string]any{"security_context": map[string]any{"namespace_options": ns}},
		})
		if err != nil {
			return s, err
		}
		var pod, cid string
		counting := check && v.wrapper != ""
		if counting {
			os.Remove(v.wrapper + ".calls")
			if err := os.WriteFile(v.wrapper+".count-on", nil, 0o644); err != nil {
				return s, err
			}
		}
		defer func() {
			if err != nil && pod != "" {
				crictl("rmp", "-f", pod) //nolint:errcheck // best effort after a failure
			}
			os.RemoveAll(pd)
		}()
		t := time.Now()
		if pod, err = crictl("runp", "--runtime", v.handler, podCfg); err != nil {
			return s, err
		}
		s.create = time.Since(t).Seconds()
		t = time.Now()
		if cid, err = crictl("create", pod, ctrCfg, podCfg); err != nil {
			return s, err
		}
		s.start = time.Since(t).Seconds()
		t = time.Now()
		if _, err = crictl("start", cid); err != nil {
			return s, err
		}
		s.wait = time.Since(t).Seconds()
		if counting {
			os.Remove(v.wrapper + ".count-on")
			verbs, total := runtimeVerbs(v.wrapper + ".calls")
			var parts []string
			for _, k := range []string{"create", "start", "state", "features", "--version"} {
				if verbs[k] > 0 {
					parts = append(parts, fmt.Sprintf("%s %d", k, verbs[k]))
					delete(verbs, k)
				}
			}
			for k, n := range verbs {
				parts = append(parts, fmt.Sprintf("%s %d", k, n))
			}
			v.calls = fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
			v.nCalls = total
		}
		if check {
			if err := criCheckUserns(crictl, cid, v.userns); err != nil {
				return s, err
			}
		}
		t = time.Now()
		for _, args := range [][]string{{"stop", "-t", "0", cid}, {"rm", cid}, {"stopp", pod}, {"rmp", pod}} {
			if _, err = crictl(args...); err != nil {
				return s, err
			}
		}
		s.destroy = time.Since(t).Seconds()
		return s, nil
	}
	// One untimed pod per variant: a variant that cannot run pods here is
	// reported with the daemon's error, not timed.
	var ok []*criVariant
	for _, v := range d.vs {
		if _, err := cycle(v, true); err != nil {
			v.err = err.Error()
			fmt.Fprintf(os.Stderr, "bench: cri: %s %s does not work: %v\n", title, v.name, err)
			continue
		}
		ok = append(ok, v)
	}
	start := time.Now()
	for round := 0; round < o.warmup+o.criRounds; round++ {
		select {
		case s := <-sigs:
			return nil, fmt.Errorf("cri: stopped by %v", s)
		default:
		}
		for _, i := range rng.Perm(len(ok)) {
			v := ok[i]
			s, err := cycle(v, false)
			if err != nil {
				return nil, fmt.Errorf("%s: %s, round %d: %w", title, v.name, round, err)
			}
			if round >= o.warmup {
				s.round = round - o.warmup
				d.samples[v.name] = append(d.samples[v.name], s)
			}
		}
		if (round+1)%max(1, (o.warmup+o.criRounds)/4) == 0 {
			fmt.Fprintf(os.Stderr, "bench: cri: %s: %d/%d rounds (%.0fs)\n", title, round+1, o.warmup+o.criRounds, time.Since(start).Seconds())
		}
	}
	return d, nil
}

func writeJSON(path string, v any) (string, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, b, 0o644)
}

// criCheckUserns checks from the host that the container runs in a user
// namespace with the pod's mapping exactly when it asked for one.
func criCheckUserns(crictl func(...string) (string, error), cid string, userns bool) error {
	out, err := crictl("inspect", "-o", "go-template", "--template", "{{.info.pid}}", cid)
	if err != nil {
		return err
	}
	m, err := readUIDMap("/proc/" + out + "/uid_map")
	if err != nil {
		return err
	}
	inUserns := len(m) == 1 && m[0].HostID == criHostID && m[0].Size == benchSize
	identity := len(m) == 1 && m[0].HostID == 0 && m[0].ContainerID == 0
	if userns && !inUserns || !userns && !identity {
		return fmt.Errorf("container %s: uid_map %v, want a user namespace %v", cid, m, userns)
	}
	return nil
}

// criPairs are the comparisons of each runtime: the shim against the same
// stack without it.
func criPairs(rt string) []struct {
	a, b, label string
	target      bool
} {
	pairs := []struct {
		a, b, label string
		target      bool
	}{
		{"shim-" + rt, rt, "shim passthrough ÷ " + rt + " (same pod, hostUsers: true)", true},
		{"shim-" + rt + "+userns", rt + "+userns", "shim ÷ " + rt + "'s native user namespace (hostUsers: false)", true},
		{"shim-" + rt + "+userns", rt, "shim with hostUsers: false ÷ " + rt + " without a user namespace", false},
	}
	if rt == "runc" {
		pairs = append(pairs[:1], append([]struct {
			a, b, label string
			target      bool
		}{
			{"noop-runc", "runc", "noop Go wrapper ÷ runc (the floor of any Go exec wrapper)", false},
			{"shim-runc", "noop-runc", "shim passthrough ÷ noop Go wrapper (the shim's own work)", false},
		}, pairs[1:]...)...)
	}
	return pairs
}

// render writes the part; perCallMs, when not 0, is what one call through
// the shim costs over the bare runtime against the stub (the stub part), for
// the expected pod-start overhead.
func (r *criResult) render(rng *rand.Rand, perCallMs float64) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	if !sectionHead(&b, "## Pod start through real CRI runtimes (crictl)", r.skipped) {
		return b.String()
	}
	p("Each daemon is private and started by the end-to-end tests' own script (`hack/e2e/containerd2.sh`, `hack/e2e/crio.sh`: bridge CNI, cgroupfs, its state in the bench's work dir), with the handlers `runc`, `crun` (Debian's crun 1.8.1 behind `hack/crun-hybrid`) and `userns-shim-runc`, `userns-shim-crun` (the shim, by a two-line sh wrapper that names its config, in passthrough mode, over the same runtime the daemon's own handler calls). ")
	p("A pod: `crictl runp` + `create` + `start` of a busybox `sleep 3600` container (**pod start**), then `stop -t 0` + `rm` + `stopp` + `rmp` (**teardown**), each a crictl process. ")
	p("**+userns** pods are `hostUsers: false`: `userns_options` (mode POD, 0 → %d, %d IDs) in the pod and container configs, so the mapping comes from the CRI runtime. ", criHostID, benchSize)
	p("One untimed pod per variant first, checked from the host (`/proc/<pid>/uid_map`); then %d rounds after %d warm-up rounds, every working variant once a round, shuffled. Median [p25 – p75], ms; ratios of medians with a 95%% bootstrap interval (rounds resampled whole). ", r.rounds, r.warmup)
	p("Runtime calls: what the handler's wrapper script saw during the checked pod's runp+create+start, by subcommand; each call through a wrapper pays the wrapper's start-up once more (the sh script and Go's runtime start; the noop-runc row is that floor without the shim's work).\n\n")
	for _, d := range r.daemons {
		p("### %s", d.title)
		if d.version != "" {
			p(" (%s)", d.version)
		}
		p("\n\n| variant | pod start ms | runp | create | start | teardown ms | runtime calls during one pod start |\n|---|---|---|---|---|---|---|\n")
		for _, v := range d.vs {
			if v.err != "" {
				p("| %s | does not work: %s | | | | | |\n", v.name, mdCell(criReason(v.err)))
				continue
			}
			ss := d.samples[v.name]
			p("| %s | %s | %s | %s | %s | %s | %s |\n", v.name, spread(metric(ss, podStart)), spread(metric(ss, func(s sample) float64 { return s.create })),
				spread(metric(ss, func(s sample) float64 { return s.start })), spread(metric(ss, func(s sample) float64 { return s.wait })), spread(metric(ss, podStop)), v.calls)
		}
		if perCallMs > 0 {
			for _, v := range d.vs {
				if v.name != "shim-runc" || v.nCalls == 0 || len(d.samples["runc"]) == 0 {
					continue
				}
				base := ms(quantile(metric(d.samples["runc"], podStart), .5))
				exp := float64(v.nCalls) * perCallMs
				p("\nExpected from the per-call cost (stub part: %.2f ms a call through the shim over the bare runtime, Go's start-up included) × %d calls: %.1f ms, %.1f%% of the median runc pod start here (%.0f ms), plus the wrapper script's own start-up on each call (the script only names the config; a node with /etc/userns-shim/config.toml needs none).\n",
					perCallMs, v.nCalls, exp, 100*exp/base, base)
			}
		}
		p("\n| comparison | pod start ratio | pod start difference ms (same round) | teardown ratio |\n|---|---|---|---|\n")
		for _, rt := range []string{"runc", "crun"} {
			for _, pr := range criPairs(rt) {
				ratio, lo, hi, ok := d.ratio(rng, pr.a, pr.b, podStart)
				if !ok {
					continue
				}
				tr, tlo, thi, _ := d.ratio(rng, pr.a, pr.b, podStop)
				p("| %s | %.3f [%.3f – %.3f] | %s | %.3f [%.3f – %.3f] |\n", pr.label, ratio, lo, hi,
					signedSpread(paired(d.samples[pr.a], d.samples[pr.b], podStart)), tr, tlo, thi)
			}
		}
		p("\n")
	}
	return b.String()
}

// ratio is medianRatio of a and b; ok is false when either did not run.
func (d *criDaemonResult) ratio(rng *rand.Rand, a, b string, f func(sample) float64) (ratio, lo, hi float64, ok bool) {
	if len(d.samples[a]) == 0 || len(d.samples[b]) == 0 {
		return 0, 0, 0, false
	}
	ratio, lo, hi = medianRatio(rng, d.samples, a, b, f)
	return ratio, lo, hi, true
}

func (r *criResult) targetRows(rng *rand.Rand) string {
	var b strings.Builder
	if r.skipped != "" {
		fmt.Fprintf(&b, "| pod start through crictl ≤ %.2f × the same stack without the shim | skipped: %s | – |\n", targetPodStartRatio, mdCell(r.skipped))
		return b.String()
	}
	for _, d := range r.daemons {
		for _, rt := range []string{"runc", "crun"} {
			for _, pr := range criPairs(rt) {
				if !pr.target {
					continue
				}
				ratio, lo, hi, ok := d.ratio(rng, pr.a, pr.b, podStart)
				if !ok {
					continue
				}
				fmt.Fprintf(&b, "| %s pod start, %s ≤ %.2f × | %.3f × [%.3f – %.3f] | %s |\n", d.title, pr.label, targetPodStartRatio, ratio, lo, hi, verdict(ratio <= targetPodStartRatio))
			}
		}
	}
	return b.String()
}

// criReason is the daemon's own words from a failed crictl call: the last
// "desc = ..." of the gRPC error (crictl quotes it inside its log line),
// else the whole error.
func criReason(err string) string {
	i := strings.LastIndex(err, "desc = ")
	if i < 0 {
		return err
	}
	msg := strings.ReplaceAll(err[i+len("desc = "):], `\"`, "'")
	if j := strings.IndexAny(msg, "\"\n"); j >= 0 {
		msg = msg[:j]
	}
	return strings.TrimSpace(strings.TrimSuffix(msg, `\n`))
}

// mdCell makes s fit in one markdown table cell.
func mdCell(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", "\\|")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
