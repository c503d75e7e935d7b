package integration

// Escape containment, seen from the host (issue 7, item 5): one container
// per runtime is given every capability an attacker would want (CAP_SYS_ADMIN,
// CAP_SYS_MODULE, CAP_MKNOD, CAP_DAC_OVERRIDE, ...) and tries to use them
// against the host: read a root-only host directory it got without ID
// mapping, load a module, make a device node, mount over host paths, give a
// file a host owner outside 0-65535. Each attempt is a table row; each row
// that must fail has a control (the same kind of action that must work) so
// that a failure for an unrelated reason (a missing mount, a missing
// capability) cannot pass for containment. TestEscapeSymlinkSwap swaps a
// volume's source for a symlink while containers are created from it.

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// esHost returns the host ID range start of a runtime's container, distinct
// from the other tests' ranges.
func esHost(rtIndex, test int) uint32 {
	return uint32(90_000_000 + rtIndex*1_000_000 + test*100_000)
}

// esCaps is what the container is granted in every capability set.
var esCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID",
	"CAP_MKNOD", "CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_KILL", "CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE",
}

// Capability bit numbers (linux/capability.h) the rows look for in CapEff.
const (
	esCapDACOverride = 1
	esCapMknod       = 27
	esCapSysModule   = 16
	esCapSysAdmin    = 21
)

// esFixture is the running container and the host paths it was given.
type esFixture struct {
	e    *Env
	id   string
	pid  int
	host uint32
	// secret, askedSecret and mappedSecret are root-owned 0700 host dirs
	// holding secret-file, at /secret (unmapped: userns-shim.io/no-idmap),
	// /asked-secret (listed there too, but its mount carries uidMappings as
	// a CRI runtime writes them) and /mapped-secret (ID-mapped: the control).
	secret, askedSecret, mappedSecret string
	// vol is an ID-mapped volume (0777, root-file and user-file) at /vol;
	// roVol another, bound read-only at /ro-vol.
	vol, roVol string
	// shared and sharedRaw are host dirs that are shared mounts, bound
	// with rshared at /shared (ID-mapped) and /shared-raw (unmapped).
	shared, sharedRaw string
	// modules: whether this kernel loads modules at all (see esModules).
	modules bool
}

// esSecretDir makes a volume dir (imVolume) root-only: mode 0700, with a
// root-owned 0600 secret-file.
func esSecretDir(t *testing.T) string {
	t.Helper()
	dir := imVolume(t)
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret-file"), []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// esSharedDir makes a volume dir (imVolume) with a subdir "sub", bind-
// mounted on itself and made a shared mount, the kind of host path whose
// mounts propagate to its peers; it is unmounted when the test ends.
func esSharedDir(t *testing.T) string {
	t.Helper()
	dir := imVolume(t)
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s on itself: %v", dir, err)
	}
	imUnmountAtCleanup(t, dir)
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatalf("make %s shared: %v", dir, err)
	}
	return dir
}

// esModules reports whether this kernel loads modules: host root tries to
// load a file that is no module (busybox), which fails with ENOSYS only
// when the kernel has no module support, and loads nothing either way.
func esModules(t *testing.T, notAModule string) bool {
	t.Helper()
	out, err := exec.Command("busybox", "insmod", notAModule).CombinedOutput()
	if err == nil {
		t.Fatalf("host root loaded %s as a module: %s", notAModule, out)
	}
	t.Logf("host root: busybox insmod %s: %s", notAModule, strings.TrimSpace(string(out)))
	return !strings.Contains(string(out), "kernel does not support requested operation")
}

// esStart creates and starts the container behind the shim.
func esStart(t *testing.T, rtIndex int, rt Runtime) *esFixture {
	t.Helper()
	f := &esFixture{e: newEnv(t, rt, ""), id: "es-" + rt.Name, host: esHost(rtIndex, 0)}
	f.secret, f.askedSecret, f.mappedSecret = esSecretDir(t), esSecretDir(t), esSecretDir(t)
	f.vol, f.roVol = imVolume(t), imVolume(t)
	f.shared, f.sharedRaw = esSharedDir(t), esSharedDir(t)
	b := newBundle(t, "sleep", "1000")
	f.modules = esModules(t, filepath.Join(b.Dir, "rootfs/bin/busybox"))
	b.Spec.Annotations = map[string]string{
		lcAnnUIDMappings: lcAnnotation(lcRange(f.host)),
		imAnnNoIDMap:     "/secret,/asked-secret,/shared-raw",
	}
	b.Spec.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding: esCaps, Effective: esCaps, Permitted: esCaps, Inheritable: esCaps,
	}
	b.Save(t)
	imAddMount(t, b, imBind("/secret", f.secret))
	asked := imBind("/asked-secret", f.askedSecret)
	asked.UIDMappings = []specs.LinuxIDMapping{lcRange(f.host)}
	asked.GIDMappings = asked.UIDMappings
	imAddMount(t, b, asked)
	imAddMount(t, b, imBind("/mapped-secret", f.mappedSecret))
	imAddMount(t, b, imBind("/vol", f.vol))
	imAddMount(t, b, imBind("/ro-vol", f.roVol, "rbind", "ro"))
	imAddMount(t, b, imBind("/shared", f.shared, "rbind", "rshared", "rw"))
	imAddMount(t, b, imBind("/shared-raw", f.sharedRaw, "rbind", "rshared", "rw"))
	f.pid = imCreateStart(t, f.e, b, f.id)
	return f
}

// esCapEff returns the CapEff bits of a /proc/<pid>/status text.
func esCapEff(t *testing.T, status string) uint64 {
	t.Helper()
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			bits, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatalf("CapEff %q: %v", v, err)
			}
			return bits
		}
	}
	t.Fatalf("no CapEff line in %q", status)
	return 0
}

// esRequireCaps fails unless bits has every capability of want.
func esRequireCaps(t *testing.T, who string, bits uint64, want ...int) {
	t.Helper()
	for _, c := range want {
		if bits&(1<<c) == 0 {
			t.Errorf("%s: CapEff %#x lacks capability %d: the row would prove nothing", who, bits, c)
		}
	}
}

// esOwner returns a host check: path (relative to the volume) is owned by owner.
func esOwner(name, owner string) func(t *testing.T, f *esFixture) {
	return func(t *testing.T, f *esFixture) {
		if got := imHostOwner(t, filepath.Join(f.vol, name)); got != owner {
			t.Errorf("on the host %s is owned by %s, want %s", filepath.Join(f.vol, name), got, owner)
		}
	}
}

// esCase is one attempt made inside the container by exec.
type esCase struct {
	name string
	user string // exec --user; "" is the container's root
	// argv is run inside; "{host}" in it stands for the pod's host root ID.
	argv []string
	// wantErr: the exec must fail and its stderr name wantErr; "" means it
	// must succeed and its stdout contain wantOut.
	wantErr, wantOut string
	// needModules: wantErr holds only on a kernel that loads modules.
	needModules bool
	// notOn names a runtime on which the row is a known limitation: its
	// outcome is logged and the row skipped there.
	notOn, why string
	// mountsOf names a host dir whose mounts must be the same after the
	// exec, and in which none of absent may exist.
	mountsOf  func(f *esFixture) string
	absent    []string
	hostCheck func(t *testing.T, f *esFixture)
	// check looks at the exec's stdout.
	check func(t *testing.T, f *esFixture, stdout string)
}

func esShared(f *esFixture) string    { return f.shared }
func esSharedRaw(f *esFixture) string { return f.sharedRaw }

// esMountInside is a row that mounts (busybox mount args) on target, a
// volume path inside, writes a file there if it can, lists it (shown must
// be in the list, "" means that file) and unmounts it; the host dir of the
// volume (dir) must have the same mounts afterwards, and neither name.
func esMountInside(name string, dir func(*esFixture) string, target, args, shown string) esCase {
	if shown == "" {
		shown = "in-mount"
	}
	rel := strings.TrimPrefix(target, "/shared-raw")
	rel = strings.TrimPrefix(strings.TrimPrefix(rel, "/shared"), "/")
	return esCase{
		name:     name + " stays inside",
		argv:     []string{"sh", "-c", fmt.Sprintf("busybox mount %s %s && { touch %s/in-mount; ls %s && busybox umount %s; }", args, target, target, target, target)},
		wantOut:  shown,
		mountsOf: dir,
		absent:   []string{filepath.Join(rel, "in-mount"), filepath.Join(rel, shown)},
	}
}

func esCases() []esCase {
	return []esCase{
		{name: "root inside is the mapped host uid", argv: []string{"id"}, wantOut: "uid=0(root) gid=0(root)",
			hostCheck: func(t *testing.T, f *esFixture) { lcRequireHostIDs(t, f.pid, f.host) }},
		// What every row below relies on: the capabilities are really in
		// effect, inside (the exec'd process) and as the host sees the init.
		{name: "granted capabilities are effective", argv: []string{"cat", "/proc/self/status"},
			check: func(t *testing.T, f *esFixture, stdout string) {
				esRequireCaps(t, "exec'd process", esCapEff(t, stdout), esCapSysAdmin, esCapSysModule, esCapMknod, esCapDACOverride)
				status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", f.pid))
				if err != nil {
					t.Fatal(err)
				}
				esRequireCaps(t, "container init seen from the host", esCapEff(t, string(status)), esCapSysAdmin, esCapSysModule)
			}},

		// A root-owned 0700 host dir bound without ID mapping: its owner is
		// not mapped in the container, so root's CAP_DAC_OVERRIDE does not
		// apply to it, and "other" has no access.
		{name: "unmapped root-only host dir cannot be listed", argv: []string{"ls", "/secret"}, wantErr: "Permission denied"},
		{name: "unmapped root-only host file cannot be read", argv: []string{"cat", "/secret/secret-file"}, wantErr: "Permission denied"},
		// no-idmap leaves the mount without any ID mapping: the CRI
		// runtime's request (uidMappings) does not reach the runtime either.
		{name: "unmapped root-only host dir whose mount asked for a mapping cannot be read", argv: []string{"cat", "/asked-secret/secret-file"},
			wantErr: "Permission denied"},
		{name: "ID-mapped root-only host dir is readable (control)", argv: []string{"cat", "/mapped-secret/secret-file"}, wantOut: "host secret"},

		// CAP_SYS_MODULE is checked against the host's user namespace.
		// busybox is no module: host root gets ENOEXEC (or ENOSYS without
		// module support); only a missing capability gives EPERM.
		{name: "CAP_SYS_MODULE cannot load a module", argv: []string{"busybox", "insmod", "/bin/busybox"},
			wantErr: "Operation not permitted", needModules: true},
		// CAP_MKNOD likewise: a device node in a volume would be the host's disk.
		{name: "CAP_MKNOD cannot make a device node in a volume", argv: []string{"busybox", "mknod", "/vol/sda", "b", "8", "0"},
			wantErr: "Operation not permitted",
			hostCheck: func(t *testing.T, f *esFixture) {
				if _, err := os.Lstat(filepath.Join(f.vol, "sda")); err == nil {
					t.Errorf("a device node appeared in the volume on the host")
				}
			}},

		// CAP_SYS_ADMIN mounts inside the container's own mount namespace
		// (the mount works: the control is in the row's own output), but
		// over a volume whose host dir is a shared mount, asked for with
		// rshared, nothing reaches the host.
		esMountInside("tmpfs over an ID-mapped shared volume", esShared, "/shared", "-t tmpfs escape", ""),
		esMountInside("tmpfs over an unmapped shared volume", esSharedRaw, "/shared-raw", "-t tmpfs escape", ""),
		esMountInside("bind mount on an ID-mapped volume's subdir", esShared, "/shared/sub", "-o bind /proc", "self"),
		esMountInside("tmpfs on an unmapped volume's subdir", esSharedRaw, "/shared-raw/sub", "-t tmpfs escape", ""),

		// A read-only volume stays read-only: the shim's staging mount is
		// read-only before the runtime copies the mount namespace, so the
		// kernel locks the flag in the container's copy. crun 1.8.1 clones
		// the source with open_tree in the host's namespace instead (a
		// fresh mount: no copy, no lock).
		{name: "remount of the read-only ID-mapped volume read-write fails", mountsOf: func(f *esFixture) string { return f.roVol },
			argv:    []string{"sh", "-c", "busybox mount -o remount,rw,bind /ro-vol && touch /ro-vol/written"},
			wantErr: "permission denied", absent: []string{"written"},
			notOn: "crun", why: "crun 1.8.1 clones the staging mount with open_tree in the host's mount namespace, and the kernel locks no flag of such a clone"},
		{name: "remount of a writable volume works (control)", argv: []string{"sh", "-c", "busybox mount -o remount,ro,bind /vol && busybox mount -o remount,rw,bind /vol && echo remounted"},
			wantOut: "remounted"},

		// Through the ID-mapped volume, a file lands on disk with the owner
		// it has inside, always in 0-65535; an owner outside the mapping
		// cannot be set at all, not even the pod's own host root ID.
		{name: "file made by uid 0 is owned by 0 on disk", argv: []string{"touch", "/vol/by-0"}, hostCheck: esOwner("by-0", "0:0")},
		{name: "file made by uid 1000 is owned by 1000 on disk", user: "1000:1000", argv: []string{"touch", "/vol/by-1000"}, hostCheck: esOwner("by-1000", "1000:1000")},
		{name: "file made by uid 65535 is owned by 65535 on disk", user: "65535:65535", argv: []string{"touch", "/vol/by-65535"}, hostCheck: esOwner("by-65535", "65535:65535")},
		{name: "chown to 70000 fails", argv: []string{"busybox", "chown", "70000:70000", "/vol/by-0"}, wantErr: "Invalid argument", hostCheck: esOwner("by-0", "0:0")},
		{name: "chown to 65536 fails", argv: []string{"busybox", "chown", "65536:65536", "/vol/by-0"}, wantErr: "Invalid argument", hostCheck: esOwner("by-0", "0:0")},
		{name: "chown to the pod's own host root fails", argv: []string{"busybox", "chown", "{host}:{host}", "/vol/by-0"}, wantErr: "Invalid argument",
			hostCheck: esOwner("by-0", "0:0")},
		{name: "chown to 65534 works (control)", argv: []string{"busybox", "chown", "65534:65534", "/vol/by-1000"}, hostCheck: esOwner("by-1000", "65534:65534")},
		{name: "no file in the volume has a host owner outside 0-65535",
			hostCheck: func(t *testing.T, f *esFixture) {
				n := 0
				filepath.WalkDir(f.vol, func(p string, d fs.DirEntry, err error) error {
					if err != nil {
						t.Error(err)
						return nil
					}
					var st unix.Stat_t
					if err := unix.Lstat(p, &st); err != nil {
						t.Error(err)
						return nil
					}
					n++
					if st.Uid > 65535 || st.Gid > 65535 {
						t.Errorf("%s is owned by %d:%d on the host: outside 0-65535", p, st.Uid, st.Gid)
					}
					return nil
				})
				if n < 6 {
					t.Errorf("walked %d entries of %s, want the volume and its 5 files at least", n, f.vol)
				}
			}},
	}
}

// TestEscape runs the attempts of esCases in one container per runtime.
func TestEscape(t *testing.T) {
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		f := esStart(t, i, rt)
		for _, tc := range esCases() {
			t.Run(tc.name, func(t *testing.T) { esRun(t, f, tc) })
		}
		imDelete(t, f.e, f.id)
	})
}

func esRun(t *testing.T, f *esFixture, tc esCase) {
	var before []string
	if tc.mountsOf != nil {
		before = pdMountsUnder(t, tc.mountsOf(f))
	}
	if len(tc.argv) > 0 {
		args := []string{"exec"}
		if tc.user != "" {
			args = append(args, "--user", tc.user)
		}
		args = append(args, f.id)
		var argv []string
		for _, a := range tc.argv {
			argv = append(argv, strings.ReplaceAll(a, "{host}", strconv.FormatUint(uint64(f.host), 10)))
		}
		r := lcShim(f.e, append(args, argv...)...)
		t.Logf("exec %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(argv, " "), r.Code, r.Stdout, r.Stderr)
		if tc.notOn == f.e.RT.Name {
			t.Skipf("known limitation on %s (the attempt above is logged, not checked): %s", tc.notOn, tc.why)
		}
		switch {
		case tc.wantErr == "" && r.Code != 0:
			t.Errorf("exec %s: exit %d, want success: %s", strings.Join(tc.argv, " "), r.Code, r.Stderr)
		case tc.wantErr == "":
			if !strings.Contains(r.Stdout, tc.wantOut) {
				t.Errorf("exec %s: stdout %q, want %q", strings.Join(tc.argv, " "), r.Stdout, tc.wantOut)
			}
		case r.Code == 0:
			t.Errorf("exec %s: exit 0: the container did what it must not (want %q)", strings.Join(tc.argv, " "), tc.wantErr)
		case tc.needModules && !f.modules:
			// The attempt failed, as it must; why cannot be told apart.
			defer t.Skipf("this kernel has no module support (host root gets ENOSYS too): EPERM cannot be shown; the attempt failed with %q", r.Stderr)
		case !strings.Contains(r.Stderr, tc.wantErr):
			t.Errorf("exec %s: stderr %q, want %q", strings.Join(tc.argv, " "), r.Stderr, tc.wantErr)
		}
		if tc.check != nil {
			tc.check(t, f, r.Stdout)
		}
	}
	if tc.mountsOf != nil {
		d := tc.mountsOf(f)
		if after := pdMountsUnder(t, d); !slices.Equal(before, after) {
			t.Errorf("host mounts under %s changed by a mount inside the container:\nbefore %v\nafter  %v", d, before, after)
		}
		for _, n := range tc.absent {
			if _, err := os.Lstat(filepath.Join(d, n)); err == nil {
				t.Errorf("the host sees %s, made inside the container", filepath.Join(d, n))
			}
		}
	}
	if tc.hostCheck != nil {
		tc.hostCheck(t, f)
	}
}

// TestEscapeSymlinkSwap: while a volume's source path is swapped, over and
// over and atomically, between a real directory and a symlink to another
// one (renameat2 RENAME_EXCHANGE), containers are run from it. Each create
// either is refused (the shim saw the symlink, at its check or when it
// opened the source: O_NOFOLLOW on the very object it then clones) or runs
// with the real directory; none ever sees the symlink's target.
func TestEscapeSymlinkSwap(t *testing.T) {
	const runs = 30
	lcForEachRuntime(t, func(t *testing.T, i int, rt Runtime) {
		e := newEnv(t, rt, "")
		b := newBundle(t, "cat", "/vol/marker")
		good, bad := imVolume(t), imVolume(t)
		imWrite(t, filepath.Join(good, "marker"), "good\n", 0, 0)
		imWrite(t, filepath.Join(bad, "marker"), "BAD: the symlink's target\n", 0, 0)
		dir := t.TempDir()
		imReachable(t, dir)
		src, link := filepath.Join(dir, "src"), filepath.Join(dir, "link")
		if err := os.Rename(good, src); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(bad, link); err != nil {
			t.Fatal(err)
		}
		b.Spec.Annotations = map[string]string{lcAnnUIDMappings: lcAnnotation(lcRange(esHost(i, 1)))}
		b.Save(t)
		imAddMount(t, b, imBind("/vol", src))

		stop := make(chan struct{})
		var wg sync.WaitGroup
		var once sync.Once
		// Also on a failed run's way out: the swapping must not outlive it.
		stopSwapping := func() { once.Do(func() { close(stop); wg.Wait() }) }
		t.Cleanup(stopSwapping)
		swaps := 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := unix.Renameat2(unix.AT_FDCWD, link, unix.AT_FDCWD, src, unix.RENAME_EXCHANGE); err != nil {
					t.Errorf("swap: %v", err)
					return
				}
				swaps++
			}
		}()
		ran, refused, atOpen := 0, 0, 0
		for n := range runs {
			id := fmt.Sprintf("es-swap-%s-%d", rt.Name, n)
			lcCleanup(t, e, id)
			r := lcShim(e, "run", "--bundle", b.Dir, id)
			switch {
			case strings.Contains(r.Stdout, "BAD"):
				t.Errorf("run %d: the container saw the symlink's target: %q", n, r.Stdout)
			case r.Code == 0 && r.Stdout == "good\n":
				ran++
			case r.Code != 0 && strings.Contains(r.Stderr, "symlink"):
				refused++
				// Swapped in after the shim's lstat, caught when it opened
				// the source (idmount.Clone's own check).
				if strings.Contains(r.Stderr, "must not be a symlink") {
					atOpen++
				}
			default:
				t.Errorf("run %d: exit %d, stdout %q, stderr %q: neither the real directory nor a refusal", n, r.Code, r.Stdout, r.Stderr)
			}
		}
		stopSwapping()
		t.Logf("%d swaps; %d runs saw the real directory, %d were refused (%d of them between check and open)", swaps, ran, refused, atOpen)
		// Both outcomes show that the swap really raced the creates.
		if ran == 0 || refused == 0 {
			t.Errorf("%d runs, %d refused: the swap did not race the creates, the test shows nothing", ran, refused)
		}
		imWaitNoStaging(t, e, "after the swapped runs")
	})
}
