// Package e2e runs the shim under real container clients (podman with
// conmon today; containerd and CRI-O tests can join this package and reuse
// the helpers below). Root-only: the tests skip with a reason when not root
// or when a client is missing (hack/e2e/install-deps.sh installs them), and
// fail instead of skipping when CI is set, so that a missing install step
// cannot pass as green.
//
// Test images come from hack/e2e/images.sh, built once into
// USERNS_SHIM_E2E_CACHE (default <repo>/.cache/e2e-images).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// shimBin is the shim built once for the whole package.
var shimBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		// Every test skips with its reason; no shim is needed.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "userns-shim-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// 0755: the mapped root of a container never needs it, but a wrapper
	// script in it must be executable by whoever conmon runs as (root).
	os.Chmod(dir, 0o755)
	shimBin = filepath.Join(dir, "userns-shim")
	start := time.Now()
	build := exec.Command("go", "build", "-o", shimBin, "../cmd/userns-shim")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build shim:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "e2e: built %s in %v\n", shimBin, time.Since(start).Round(time.Millisecond))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// missing skips the test, or fails it under CI, where everything must be
// installed (make e2e runs hack/e2e/install-deps.sh first).
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set: run hack/e2e/install-deps.sh in the CI script)", msg)
	}
	t.Skip(msg)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a container client, user namespaces and mounts")
	}
}

// requireTools skips (or under CI fails) the test unless every program is on
// PATH, and returns their paths in order.
func requireTools(t *testing.T, names ...string) []string {
	t.Helper()
	var paths, lack []string
	for _, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			lack = append(lack, n)
			continue
		}
		paths = append(paths, p)
	}
	if len(lack) > 0 {
		missing(t, "%s not installed: run hack/e2e/install-deps.sh", strings.Join(lack, ", "))
	}
	return paths
}

// Images are the test images built by hack/e2e/images.sh.
type Images struct {
	BusyboxImage   string // localhost/userns-shim/busybox:e2e
	BusyboxOCI     string // OCI layout with tag: oci:<this> for skopeo
	BusyboxArchive string // docker-archive tarball named BusyboxImage
	BusyboxRootfs  string // unpacked rootfs (plain OCI bundles)
	PauseImage     string // localhost/userns-shim/pause:e2e, entrypoint /pause
	PauseOCI       string
	PauseArchive   string
	PauseRootfs    string
}

var (
	imagesOnce sync.Once
	imagesVal  Images
	imagesErr  error
)

// testImages builds (once per cache dir and script version: a no-op when up
// to date) and returns the test images.
func testImages(t *testing.T) Images {
	t.Helper()
	requireRoot(t)
	requireTools(t, "umoci", "skopeo", "gcc", "busybox")
	imagesOnce.Do(func() {
		cache := os.Getenv("USERNS_SHIM_E2E_CACHE")
		if cache == "" {
			cache = filepath.Join("..", ".cache", "e2e-images")
		}
		start := time.Now()
		cmd := exec.Command("../hack/e2e/images.sh", cache)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			imagesErr = fmt.Errorf("hack/e2e/images.sh %s: %v\n%s", cache, err, stderr.String())
			return
		}
		vals := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				vals[k] = v
			}
		}
		imagesVal = Images{
			BusyboxImage: vals["BUSYBOX_IMAGE"], BusyboxOCI: vals["BUSYBOX_OCI"],
			BusyboxArchive: vals["BUSYBOX_ARCHIVE"], BusyboxRootfs: vals["BUSYBOX_ROOTFS"],
			PauseImage: vals["PAUSE_IMAGE"], PauseOCI: vals["PAUSE_OCI"],
			PauseArchive: vals["PAUSE_ARCHIVE"], PauseRootfs: vals["PAUSE_ROOTFS"],
		}
		if imagesVal.BusyboxArchive == "" || imagesVal.PauseArchive == "" {
			imagesErr = fmt.Errorf("hack/e2e/images.sh printed no image paths:\n%s", stdout.String())
			return
		}
		fmt.Fprintf(os.Stderr, "e2e: images ready in %v: %s\n", time.Since(start).Round(time.Millisecond),
			strings.TrimSpace(stderr.String()))
	})
	if imagesErr != nil {
		t.Fatal(imagesErr)
	}
	return imagesVal
}

// Result is one command's outcome.
type Result struct {
	Cmd            string
	Code           int
	Stdout, Stderr string
	Took           time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("%s: exit %d after %v\nstdout:\n%s\nstderr:\n%s", r.Cmd, r.Code, r.Took.Round(time.Millisecond), r.Stdout, r.Stderr)
}

// runCmd runs name with args and env (added to this process's), output in
// files, not pipes: a detached container started by the command may inherit
// and hold them. It fails the test only when the command cannot start or
// takes longer than timeout.
func runCmd(t *testing.T, timeout time.Duration, env []string, name string, args ...string) Result {
	t.Helper()
	dir, err := os.MkdirTemp("", "e2e-out-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	outF, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer outF.Close()
	errF, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errF.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = outF, errF
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Run()
	r := Result{Cmd: strings.Join(append([]string{name}, args...), " "), Took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.Code = -1
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", r.Cmd, err)
	}
	stdout, _ := os.ReadFile(outF.Name())
	stderr, _ := os.ReadFile(errF.Name())
	r.Stdout, r.Stderr = string(stdout), string(stderr)
	if r.Code == -1 {
		t.Fatalf("timed out after %v: %s", timeout, r)
	}
	return r
}

// Runtime is a real OCI runtime behind the shim.
type Runtime struct {
	Name string
	Path string // absolute: what the shim's config names as runtime
}

// runtimes returns runc and crun (through the hybrid-cgroup wrapper when this
// host needs it), by absolute path: conmon gives the runtime no PATH at all.
// crunHybrid is hack/crun-hybrid: crun behind the hybrid-cgroup workaround,
// also what the e2e daemons' crun handlers run.
func crunHybrid(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../hack/crun-hybrid")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func runtimes(t *testing.T) []Runtime {
	t.Helper()
	var rts []Runtime
	if p, err := exec.LookPath("runc"); err == nil {
		rts = append(rts, Runtime{Name: "runc", Path: p})
	}
	if _, err := exec.LookPath("crun"); err == nil {
		rts = append(rts, Runtime{Name: "crun", Path: crunHybrid(t)})
	}
	if len(rts) == 0 {
		missing(t, "neither runc nor crun is installed (apt-get install runc crun)")
	}
	return rts
}

// The allocator pool the tests give the shim: clear of the default pool (a
// shim on this host may use it) and small.
const (
	poolStart  = 3221225472 // 3 * 2^30
	poolLength = 16 * 65536
)

// Shim is one test's shim setup: its config, state dir and a wrapper script
// that a client can call as its runtime (clients pass the runtime no
// environment of theirs, so the wrapper sets USERNS_SHIM_CONFIG).
type Shim struct {
	t        *testing.T
	RT       Runtime
	Dir      string
	Config   string
	StateDir string
	Wrapper  string // <Dir>/bin/userns-shim: the runtime's name is the wrapper's base name
}

// newShim writes a shim config in dir for rt with mode and extra TOML (after
// the top-level keys), and the wrapper.
func newShim(t *testing.T, dir string, rt Runtime, mode, extra string) *Shim {
	t.Helper()
	s := &Shim{t: t, RT: rt, Dir: dir, Config: filepath.Join(dir, "shim.toml"),
		StateDir: filepath.Join(dir, "shim-state"), Wrapper: filepath.Join(dir, "bin", "userns-shim")}
	cfg := fmt.Sprintf("runtime = %q\nstate_dir = %q\nmode = %q\n%s\n[allocate]\nstart = %d\nlength = %d\n",
		rt.Path, s.StateDir, mode, extra, poolStart, poolLength)
	if err := os.WriteFile(s.Config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(s.Wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	wrapper := fmt.Sprintf("#!/bin/sh\nUSERNS_SHIM_CONFIG=%s\nexport USERNS_SHIM_CONFIG\nexec %s \"$@\"\n", s.Config, shimBin)
	if err := os.WriteFile(s.Wrapper, []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

// Run runs the shim with its config (the `shim` verbs, for example).
func (s *Shim) Run(args ...string) Result {
	s.t.Helper()
	return runCmd(s.t, time.Minute, []string{"USERNS_SHIM_CONFIG=" + s.Config}, shimBin, args...)
}

// ShimPod is one entry of `userns-shim shim pods --json`.
type ShimPod struct {
	ID          string   `json:"id"`
	Source      string   `json:"source"`
	Allocated   bool     `json:"allocated"`
	Containers  []string `json:"containers"`
	Pin         string   `json:"pin"`
	HostRange   string   `json:"hostRange"`
	UsernsInode uint64   `json:"usernsInode"`
	Mapping     struct {
		UIDMappings []IDMap `json:"uidMappings"`
		GIDMappings []IDMap `json:"gidMappings"`
	} `json:"mapping"`
}

// IDMap is one mapping range, as the shim writes it.
type IDMap struct {
	ContainerID uint32 `json:"containerID"`
	HostID      uint32 `json:"hostID"`
	Size        uint32 `json:"size"`
}

// Pods returns `shim pods --json`.
func (s *Shim) Pods() []ShimPod {
	s.t.Helper()
	r := s.Run("shim", "pods", "--json")
	if r.Code != 0 {
		s.t.Fatalf("shim pods: %s", r)
	}
	var pods []ShimPod
	if err := json.Unmarshal([]byte(r.Stdout), &pods); err != nil {
		s.t.Fatalf("shim pods --json: %v\n%s", err, r.Stdout)
	}
	return pods
}

// Leftovers lists what the shim still has in its state dir: mounts (pins,
// staging), container records and pod directories. Empty when every
// container it knew is gone.
func (s *Shim) Leftovers() []string {
	s.t.Helper()
	var left []string
	for _, m := range mountsUnder(s.t, s.StateDir) {
		left = append(left, "mount "+m)
	}
	for _, sub := range []string{"containers", "pods", "staging"} {
		entries, err := os.ReadDir(filepath.Join(s.StateDir, sub))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			s.t.Fatal(err)
		}
		for _, e := range entries {
			left = append(left, filepath.Join(sub, e.Name()))
		}
	}
	if _, err := os.Stat(filepath.Join(s.StateDir, "pods.json")); err == nil {
		left = append(left, "pods.json")
	}
	return left
}

// mountsUnder returns the mount points at or below dir in this process's
// mount namespace (the host's: the shim mounts there).
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
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

// unmountUnder detaches every mount at or below dir, deepest first: the
// clean-up of a test whose client left mounts (a failed test).
func unmountUnder(t *testing.T, dir string) {
	t.Helper()
	mps := mountsUnder(t, dir)
	for i := len(mps) - 1; i >= 0; i-- {
		if err := unix.Unmount(mps[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Logf("unmount %s: %v", mps[i], err)
		}
	}
}

// shortTempDir makes a temporary directory with a short path (conmon's
// sockets live below the client's directories and sun_path has 108 bytes),
// mode 0711: the shim's state dir is made in it, and a container's mapped
// root must be able to traverse the way to its staging mounts, as it can to
// /run/userns-shim. Removed after the test, once no process started for it
// runs (conmon and the `podman container cleanup` it starts when a
// container exits outlive the podman command) and nothing is mounted below
// it.
func shortTempDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		waitProcsGone(t, dir, 30*time.Second)
		unmountUnder(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("remove %s: %v", dir, err)
		}
	})
	return dir
}

// procsMentioning returns the PIDs and command lines of processes (not
// this one) whose command line contains s.
func procsMentioning(s string) map[int]string {
	found := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if c := string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})); strings.Contains(c, s) {
			found[pid] = c
		}
	}
	return found
}

// waitProcsGone waits until no process mentions dir in its command line,
// and logs the ones still there after timeout.
func waitProcsGone(t *testing.T, dir string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		procs := procsMentioning(dir)
		if len(procs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes still running for %s after %v: %v", dir, timeout, procs)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ProcIDs is what the host sees of a process's user namespace and owner.
type ProcIDs struct {
	UIDMap, GIDMap []IDMap
	UID, GID       [4]uint32 // real, effective, saved, filesystem (/proc/PID/status)
	UsernsInode    uint64
}

// procIDs reads pid's uid_map, gid_map, Uid and Gid lines and userns inode.
func procIDs(t *testing.T, pid int) ProcIDs {
	t.Helper()
	var p ProcIDs
	var err error
	if p.UIDMap, err = readIDMap(fmt.Sprintf("/proc/%d/uid_map", pid)); err != nil {
		t.Fatal(err)
	}
	if p.GIDMap, err = readIDMap(fmt.Sprintf("/proc/%d/gid_map", pid)); err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		var dst *[4]uint32
		switch k {
		case "Uid":
			dst = &p.UID
		case "Gid":
			dst = &p.GID
		default:
			continue
		}
		for i, f := range strings.Fields(v) {
			if i < 4 {
				n, _ := strconv.ParseUint(f, 10, 32)
				dst[i] = uint32(n)
			}
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/user", pid), &st); err != nil {
		t.Fatal(err)
	}
	p.UsernsInode = st.Ino
	return p
}

func readIDMap(path string) ([]IDMap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m []IDMap
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("%s: bad line %q", path, line)
		}
		var v [3]uint64
		for i := range f {
			if v[i], err = strconv.ParseUint(f[i], 10, 32); err != nil {
				return nil, fmt.Errorf("%s: %v", path, err)
			}
		}
		m = append(m, IDMap{ContainerID: uint32(v[0]), HostID: uint32(v[1]), Size: uint32(v[2])})
	}
	return m, nil
}

// owner returns path's uid and gid on disk (not following a symlink).
func owner(t *testing.T, path string) (uint32, uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid, st.Gid
}

// lsOwners parses `ls -ln` output into name -> "uid:gid".
func lsOwners(out string) map[string]string {
	owners := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || f[0] == "total" {
			continue
		}
		name := f[len(f)-1]
		if len(f) >= 11 && f[len(f)-2] == "->" {
			name = f[len(f)-3]
		}
		owners[name] = f[2] + ":" + f[3]
	}
	return owners
}

// timed logs how long a step took, for the timings in the test output.
func timed(t *testing.T, what string, start time.Time) {
	t.Helper()
	t.Logf("timing: %s: %v", what, time.Since(start).Round(time.Millisecond))
}
