package integration

// Refusals: every mapping rule and every command-line or bundle error makes
// `create` fail the way the contract says (design.md, "Contract", Errors):
// a non-zero exit, exactly one `userns-shim: ` line on stderr, the same
// message as a runc-format JSON error line appended to the --log file,
// config.json byte-identical, no file added, changed or removed in
// state_dir (records, locks, pins, the pod registry and so its ranges), no
// mount made or removed under the test's directories, no temporary file in
// the bundle, and no container in the real runtime. The runtime is never reached, so runc alone is enough.
// Bundle and command-line errors run under mode passthrough (the default)
// and again under mode require.
//
// TestRelaxedRules checks the other direction on every runtime: a cluster
// that relaxes [validation] gets a mapping the defaults refuse.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// rfID is the container ID of every refused create.
const rfID = "rf-refused"

// rfGood is a mapping every default rule accepts: a whole 65536 block above
// the host's IDs.
const rfGood = "0:100000:65536"

// rfCtx is what a case's setup may change: the bundle, and the kubelet root
// named in the case's config.
type rfCtx struct {
	t       *testing.T
	b       *Bundle
	kubelet string
	env     *Env // the shim's setup, for a case that needs a live pod
}

// rfCase is one refusal.
type rfCase struct {
	name string
	// toml is appended to the shim config (after runtime, state_dir and
	// kubelet_root): top-level keys first, then any [validation] table.
	toml string
	// setup mutates the bundle before config.json is snapshotted.
	setup func(c rfCtx)
	// argv is the command after the global flags; nil means
	// create --bundle <bundle> rfID.
	argv func(c rfCtx) []string
	// want is a substring of the stderr line specific to the rule.
	want string
	// notWant must not be in the stderr line (a message that would mislead).
	notWant string
	// bothModes runs the case under the default mode (passthrough) and
	// again under mode = "require": a bundle error must be refused whatever
	// the mode.
	bothModes bool
}

// rfEdit loads config.json, lets fn change the spec and saves it.
func rfEdit(fn func(s *specs.Spec)) func(rfCtx) {
	return func(c rfCtx) {
		c.b.Load(c.t)
		fn(c.b.Spec)
		c.b.Save(c.t)
	}
}

// rfAnnotate sets the shim's mapping annotations; "" leaves one out.
func rfAnnotate(uids, gids string) func(rfCtx) {
	return rfEdit(func(s *specs.Spec) { rfSetAnnotations(s, uids, gids) })
}

func rfSetAnnotations(s *specs.Spec, uids, gids string) {
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	if uids != "" {
		s.Annotations["userns-shim.io/uid-mappings"] = uids
	}
	if gids != "" {
		s.Annotations["userns-shim.io/gid-mappings"] = gids
	}
}

// rfRanges parses "c:h:n[,c:h:n]" for building specs; test data only.
func rfRanges(s string) []specs.LinuxIDMapping {
	var out []specs.LinuxIDMapping
	for _, f := range strings.Split(s, ",") {
		var m specs.LinuxIDMapping
		if _, err := fmt.Sscanf(f, "%d:%d:%d", &m.ContainerID, &m.HostID, &m.Size); err != nil {
			panic(fmt.Sprintf("rfRanges %q: %v", s, err))
		}
		out = append(out, m)
	}
	return out
}

// rfSetNamespace sets (path != "") or replaces the entry of type t.
func rfSetNamespace(s *specs.Spec, t specs.LinuxNamespaceType, path string) {
	for i := range s.Linux.Namespaces {
		if s.Linux.Namespaces[i].Type == t {
			s.Linux.Namespaces[i].Path = path
			return
		}
	}
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: t, Path: path})
}

func rfDropNamespace(s *specs.Spec, t specs.LinuxNamespaceType) {
	var keep []specs.LinuxNamespace
	for _, ns := range s.Linux.Namespaces {
		if ns.Type != t {
			keep = append(keep, ns)
		}
	}
	s.Linux.Namespaces = keep
}

// rfBindMount is a bind mount of the host's /tmp carrying uidMappings (the
// create is refused, so it is never made).
func rfBindMount(dst, uids string) specs.Mount {
	return specs.Mount{
		Destination: dst, Type: "bind", Source: "/tmp", Options: []string{"rbind", "rw"},
		UIDMappings: rfRanges(uids), GIDMappings: rfRanges(uids),
	}
}

// rfNamespacePath gives the container the good mapping by annotation and
// its namespace of type t the path.
func rfNamespacePath(t specs.LinuxNamespaceType, path string) func(rfCtx) {
	return rfEdit(func(s *specs.Spec) {
		rfSetAnnotations(s, rfGood, "")
		rfSetNamespace(s, t, path)
	})
}

// rfUserNamespacePath joins the user namespace at path, with the good
// mapping listed in the spec when withMappings.
func rfUserNamespacePath(path string, withMappings bool) func(rfCtx) {
	return rfEdit(func(s *specs.Spec) {
		rfSetNamespace(s, specs.UserNamespace, path)
		if withMappings {
			s.Linux.UIDMappings, s.Linux.GIDMappings = rfRanges(rfGood), rfRanges(rfGood)
		}
	})
}

// rfKubeletRecord writes the kubelet's userns record for pod uid and names
// the pod in the spec.
func rfKubeletRecord(uid, record string) func(rfCtx) {
	return func(c rfCtx) {
		dir := filepath.Join(c.kubelet, "pods", uid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			c.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "userns"), []byte(record), 0o644); err != nil {
			c.t.Fatal(err)
		}
		rfEdit(func(s *specs.Spec) {
			if s.Annotations == nil {
				s.Annotations = map[string]string{}
			}
			s.Annotations["io.kubernetes.pod.uid"] = uid
		})(c)
	}
}

// rfWriteConfig replaces config.json with raw bytes.
func rfWriteConfig(raw func(orig []byte) []byte) func(rfCtx) {
	return func(c rfCtx) {
		if err := os.WriteFile(c.b.ConfigPath(), raw(c.b.Raw(c.t)), 0o644); err != nil {
			c.t.Fatal(err)
		}
	}
}

func rfCreate(bundle, id string) []string { return []string{"create", "--bundle", bundle, id} }

func rfCases() []rfCase {
	return []rfCase{
		// --- the mapping rules, mapping from the annotations ---
		{name: "size 0", setup: rfAnnotate("0:100000:0", ""), want: "size 0"},
		{name: "size not a multiple of 65536", setup: rfAnnotate("0:100000:65537", ""), want: "size 65537 is not a multiple of 65536"},
		{name: "host id 0", setup: rfAnnotate("0:0:65536", ""), want: "host IDs below 65536 belong to the host"},
		{name: "host id 1000 below min_host_id", setup: rfAnnotate("0:1000:65536", ""), want: "host IDs below 65536 belong to the host"},
		{name: "host range past 2^32", setup: rfAnnotate("0:4294901760:131072", ""), want: "host range reaches past 4294967294"},
		// The kernel refuses a range that includes ID 4294967295 ((uid_t)-1):
		// a range may end at 2^32-1, not at 2^32.
		{name: "host range ending exactly at 2^32", setup: rfAnnotate("0:4294901760:65536", ""), want: "host range"},
		{name: "container range past 2^32", setup: rfAnnotate("0:100000:65536,4294967295:300000:65536", ""), want: "container range reaches past 4294967294"},
		{name: "container range ending exactly at 2^32", setup: rfAnnotate("0:100000:65536,4294901760:300000:65536", ""), want: "container range"},
		{name: "container 0 unmapped", setup: rfAnnotate("1:100000:65536", ""), want: "leaves container ID 0 unmapped"},
		{name: "overlapping host ranges", setup: rfAnnotate("0:100000:131072,131072:165536:65536", ""), want: "overlap on the host side"},
		{name: "overlapping container ranges", setup: rfAnnotate("0:100000:131072,65536:300000:65536", ""), want: "overlap on the container side"},
		{name: "uid mapping differs from gid mapping", setup: rfAnnotate(rfGood, "0:200000:65536"), want: "differs from gid mapping"},
		{name: "garbage annotation", setup: rfAnnotate("zero:lots:many", ""), want: `"zero" is not a number`},
		{name: "annotation with two fields", setup: rfAnnotate("0:100000", ""), want: "want containerID:hostID:size"},
		{name: "empty gid annotation", setup: rfAnnotate(rfGood, " "), want: "empty mapping"},
		{name: "annotation with a number past 2^32", setup: rfAnnotate("0:4294967296:65536", ""), want: `"4294967296" is not a number from 0 to 4294967295`},
		{name: "critest mapping under the default rules", setup: rfAnnotate("0:1000:100000", ""),
			want: "uid range 0:1000:100000: size 100000 is not a multiple of 65536"},
		{name: "relaxed rules still refuse below min_host_id", toml: "[validation]\nmin_host_id = 1000\nsize_multiple = 1\n",
			setup: rfAnnotate("0:999:100000", ""), want: "host IDs below 1000 belong to the host"},

		// --- the process's IDs inside the mapping ---
		{name: "process uid outside the range", setup: rfEdit(func(s *specs.Spec) {
			rfSetAnnotations(s, rfGood, "")
			s.Process.User.UID = 70000
		}), want: "process.user.uid 70000 is outside the uid mapping"},
		{name: "process gid outside the range", setup: rfEdit(func(s *specs.Spec) {
			rfSetAnnotations(s, rfGood, "")
			s.Process.User.GID = 65536
		}), want: "process.user.gid 65536 is outside the gid mapping"},
		{name: "additionalGids outside the range", setup: rfEdit(func(s *specs.Spec) {
			rfSetAnnotations(s, rfGood, "")
			s.Process.User.AdditionalGids = []uint32{10, 4000000}
		}), want: "process.user.additionalGids 4000000 is outside the gid mapping"},

		// --- host namespaces ---
		{name: "no network namespace entry", setup: rfEdit(func(s *specs.Spec) {
			rfSetAnnotations(s, rfGood, "")
			rfDropNamespace(s, specs.NetworkNamespace)
		}), want: `shares the host's network namespace (no "network" entry`},
		// /proc/1/ns may be unreadable even for root (an init that may not be
		// inspected): then the shim cannot tell, and refuses naming the path.
		{name: "network namespace path is /proc/1/ns/net", setup: rfNamespacePath(specs.NetworkNamespace, "/proc/1/ns/net"), want: "network namespace path /proc/1/ns/net"},
		{name: "network namespace path is the host's via /proc/self", setup: rfNamespacePath(specs.NetworkNamespace, "/proc/self/ns/net"), want: "network namespace path /proc/self/ns/net is the host's"},
		{name: "ipc namespace path is the host's via /proc/thread-self", setup: rfNamespacePath(specs.IPCNamespace, "/proc/thread-self/ns/ipc"), want: "ipc namespace path /proc/thread-self/ns/ipc is the host's"},
		{name: "pid namespace path is the host's via /proc/self", setup: rfNamespacePath(specs.PIDNamespace, "/proc/self/ns/pid"), want: "pid namespace path /proc/self/ns/pid is the host's"},
		{name: "no ipc namespace entry", setup: rfEdit(func(s *specs.Spec) {
			rfSetAnnotations(s, rfGood, "")
			rfDropNamespace(s, specs.IPCNamespace)
		}), want: `shares the host's ipc namespace (no "ipc" entry`},
		{name: "network namespace path that does not exist", setup: rfNamespacePath(specs.NetworkNamespace, "/nonexistent/ns/net"), want: "/nonexistent/ns/net"},
		{name: "user namespace path is /proc/1/ns/user", setup: rfUserNamespacePath("/proc/1/ns/user", false), want: "/proc/1/ns/user"},
		{name: "user namespace path is /proc/1/ns/user, with mappings", setup: rfUserNamespacePath("/proc/1/ns/user", true), want: "/proc/1/ns/user"},
		// The test process runs in the host's user namespace: its maps are
		// readable, and its namespace is the shim's own.
		{name: "user namespace path is the host's via /proc/<test pid>", setup: rfUserNamespacePath(fmt.Sprintf("/proc/%d/ns/user", os.Getpid()), false), want: fmt.Sprintf("user namespace path /proc/%d/ns/user is the host's user namespace", os.Getpid())},
		{name: "user namespace path is the host's via /proc/self, with mappings", setup: rfUserNamespacePath("/proc/self/ns/user", true), want: "user namespace path /proc/self/ns/user is the host's user namespace"},
		{name: "user namespace path /proc/self/ns/user, no mappings", setup: rfUserNamespacePath("/proc/self/ns/user", false), want: "/proc/self/ns/user is the host's user namespace"},

		// --- the other sources are validated too ---
		{name: "spec mapping breaks a rule", setup: rfEdit(func(s *specs.Spec) {
			rfSetNamespace(s, specs.UserNamespace, "")
			s.Linux.UIDMappings, s.Linux.GIDMappings = rfRanges("0:1000:65536"), rfRanges("0:1000:65536")
		}), want: "spec mapping refused"},
		{name: "spec mapping shares the host network", setup: rfEdit(func(s *specs.Spec) {
			rfSetNamespace(s, specs.UserNamespace, "")
			s.Linux.UIDMappings, s.Linux.GIDMappings = rfRanges(rfGood), rfRanges(rfGood)
			rfDropNamespace(s, specs.NetworkNamespace)
		}), want: `shares the host's network namespace`},
		{name: "mounts disagree on uidMappings", setup: rfEdit(func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, rfBindMount("/a", rfGood), rfBindMount("/b", "0:200000:65536"))
		}), want: "mounts /a and /b carry different ID mappings"},
		{name: "mount mapping breaks a rule", setup: rfEdit(func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, rfBindMount("/a", "0:0:65536"))
		}), want: "mounts mapping refused"},
		{name: "kubelet record breaks a rule", setup: rfKubeletRecord("rf-pod-1",
			`{"uidMappings":[{"hostId":0,"containerId":0,"length":65536}],"gidMappings":[{"hostId":0,"containerId":0,"length":65536}]}`),
			want: "kubelet mapping refused"},
		{name: "kubelet record is not JSON", setup: rfKubeletRecord("rf-pod-2", `{"uidMappings":`), want: "kubelet userns record"},
		{name: "pod uid is a path", setup: rfEdit(func(s *specs.Spec) {
			s.Annotations = map[string]string{"io.kubernetes.pod.uid": "../../etc"}
		}), want: `pod UID "../../etc" is not a valid UID`},

		// --- refusals that come after the first staging mount ---
		{name: "symlinked mount source after a mapped one", setup: func(c rfCtx) {
			dir := filepath.Join(c.t.TempDir(), "vol")
			if err := os.Mkdir(dir, 0o755); err != nil {
				c.t.Fatal(err)
			}
			link := filepath.Join(c.t.TempDir(), "link")
			if err := os.Symlink(dir, link); err != nil {
				c.t.Fatal(err)
			}
			rfEdit(func(s *specs.Spec) {
				rfSetAnnotations(s, rfGood, "")
				s.Mounts = append(s.Mounts,
					specs.Mount{Destination: "/data", Type: "bind", Source: dir, Options: []string{"rbind", "rw"}},
					specs.Mount{Destination: "/link", Type: "bind", Source: link, Options: []string{"rbind", "rw"}})
			})(c)
		}, want: "is a symlink: the shim will not ID-map"},
		{name: "overlay volume with on_unsupported_fs fail", setup: func(c rfCtx) {
			ov := rfOverlay(c.t)
			dir := filepath.Join(c.t.TempDir(), "vol")
			if err := os.Mkdir(dir, 0o755); err != nil {
				c.t.Fatal(err)
			}
			rfEdit(func(s *specs.Spec) {
				rfSetAnnotations(s, rfGood, "")
				s.Mounts = append(s.Mounts,
					specs.Mount{Destination: "/data", Type: "bind", Source: dir, Options: []string{"rbind", "rw"}},
					specs.Mount{Destination: "/overlay", Type: "bind", Source: ov, Options: []string{"rbind", "rw"}})
			})(c)
		}, want: "mount /overlay (host source"},

		// --- mode ---
		{name: "mode require with no mapping", toml: "mode = \"require\"\n", want: "mode is require and no mapping was found"},
		{name: "mode allocate with a pool too small for one pod", toml: "mode = \"allocate\"\n[allocate]\nstart = 2147483648\nlength = 65536\nids_per_pod = 131072\n", want: "smaller than one pod's range"},

		// --- run is refused like create, and crun's -b spelling is parsed ---
		{name: "run with a bad mapping", setup: rfAnnotate("0:0:65536", ""),
			argv: func(c rfCtx) []string { return []string{"run", "--bundle", c.b.Dir, "--detach", rfID} },
			want: "host IDs below 65536"},
		{name: "create -bBUNDLE with a bad mapping", setup: rfAnnotate("0:0:65536", ""),
			argv: func(c rfCtx) []string { return []string{"create", "-b" + c.b.Dir, rfID} },
			want: "host IDs below 65536"},

		// --- the command line ---
		{name: "empty container id", bothModes: true, argv: func(c rfCtx) []string { return rfCreate(c.b.Dir, "") }, want: "container id cannot be empty"},
		{name: "no container id", argv: func(c rfCtx) []string { return []string{"create", "--bundle", c.b.Dir} }, want: "container id cannot be empty"},
		{name: "container id ..", bothModes: true, argv: func(c rfCtx) []string { return rfCreate(c.b.Dir, "..") }, want: `invalid container id ".."`},
		{name: "container id with a slash", bothModes: true, argv: func(c rfCtx) []string { return rfCreate(c.b.Dir, "a/../b") }, want: `invalid container id "a/../b"`},
		{name: "two container ids", argv: func(c rfCtx) []string { return []string{"create", "--bundle", c.b.Dir, "a", "b"} }, want: "expected one container id"},

		// --- the bundle ---
		{name: "missing bundle", bothModes: true, argv: func(c rfCtx) []string { return rfCreate(filepath.Join(c.b.Dir, "missing"), rfID) }, want: "does not exist"},
		{name: "bundle is a file", bothModes: true, setup: func(c rfCtx) {
			if err := os.WriteFile(filepath.Join(c.b.Dir, "afile"), []byte("x"), 0o644); err != nil {
				c.t.Fatal(err)
			}
		}, argv: func(c rfCtx) []string { return rfCreate(filepath.Join(c.b.Dir, "afile"), rfID) }, want: "is not a directory"},
		{name: "missing config.json", bothModes: true, setup: func(c rfCtx) {
			if err := os.Remove(c.b.ConfigPath()); err != nil {
				c.t.Fatal(err)
			}
		}, want: "config.json"},
		{name: "config.json is a directory", bothModes: true, setup: func(c rfCtx) {
			if err := os.Remove(c.b.ConfigPath()); err != nil {
				c.t.Fatal(err)
			}
			if err := os.Mkdir(c.b.ConfigPath(), 0o755); err != nil {
				c.t.Fatal(err)
			}
		}, want: "not a regular file"},
		{name: "config.json is a symlink", bothModes: true, setup: func(c rfCtx) {
			real := filepath.Join(c.b.Dir, "real-config.json")
			if err := os.Rename(c.b.ConfigPath(), real); err != nil {
				c.t.Fatal(err)
			}
			if err := os.Symlink("real-config.json", c.b.ConfigPath()); err != nil {
				c.t.Fatal(err)
			}
		}, want: "symlink"},
		{name: "config.json is a symlink to a spec without user fields", bothModes: true, setup: func(c rfCtx) {
			// No "user" key anywhere: the document itself asks for nothing.
			real := filepath.Join(c.b.Dir, "real-config.json")
			if err := os.WriteFile(real, []byte(`{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{}}`), 0o644); err != nil {
				c.t.Fatal(err)
			}
			if err := os.Remove(c.b.ConfigPath()); err != nil {
				c.t.Fatal(err)
			}
			if err := os.Symlink("real-config.json", c.b.ConfigPath()); err != nil {
				c.t.Fatal(err)
			}
		}, want: "symlink"},
		{name: "malformed JSON: a stray comma", bothModes: true, setup: rfWriteConfig(func(orig []byte) []byte {
			return []byte(strings.Replace(string(orig), "{", "{,", 1))
		}), want: "not valid JSON"},
		{name: "malformed JSON: not JSON at all", bothModes: true, setup: rfWriteConfig(func([]byte) []byte {
			return []byte("this is not json\n")
		}), want: "not valid JSON"},
		{name: "truncated JSON", bothModes: true, setup: rfWriteConfig(func(orig []byte) []byte {
			return orig[:len(orig)/2]
		}), want: "config.json"},
		{name: "empty config.json", bothModes: true, setup: rfWriteConfig(func([]byte) []byte { return nil }), want: "config.json"},
		{name: "JSON that is not a spec", bothModes: true, setup: rfWriteConfig(func([]byte) []byte { return []byte(`{"hello":"world"}`) }),
			want: "not an OCI runtime spec"},
	}
}

// rfSteps runs setup steps in order.
func rfSteps(steps ...func(rfCtx)) func(rfCtx) {
	return func(c rfCtx) {
		for _, f := range steps {
			f(c)
		}
	}
}

// rfMounts gives the container the good mapping by annotation and adds
// mounts, each made from a path the case's setup returns.
func rfMounts(mounts ...func(c rfCtx) specs.Mount) func(rfCtx) {
	return func(c rfCtx) {
		var add []specs.Mount
		for _, m := range mounts {
			add = append(add, m(c))
		}
		rfEdit(func(s *specs.Spec) {
			rfSetAnnotations(s, rfGood, "")
			s.Mounts = append(s.Mounts, add...)
		})(c)
	}
}

// rfBind is a volume bind of src at dst (src computed at setup).
func rfBind(dst string, src func(c rfCtx) string) func(rfCtx) specs.Mount {
	return func(c rfCtx) specs.Mount { return imBind(dst, src(c)) }
}

// rfPath is a fixed host path.
func rfPath(p string) func(rfCtx) string { return func(rfCtx) string { return p } }

// rfMappedBind is a bind of src that asks for an ID mapping with rfGood
// (uidMappings as containerd 2 and CRI-O write them).
func rfMappedBind(dst string, src func(c rfCtx) string) func(rfCtx) specs.Mount {
	return func(c rfCtx) specs.Mount {
		m := imBind(dst, src(c))
		m.UIDMappings, m.GIDMappings = rfRanges(rfGood), rfRanges(rfGood)
		return m
	}
}

// rfSpecialFile makes a node of mode (unix.S_IFIFO, S_IFSOCK, S_IFCHR with
// dev) in a temp dir and returns its path.
func rfSpecialFile(mode uint32, dev int) func(c rfCtx) string {
	return func(c rfCtx) string {
		p := filepath.Join(c.t.TempDir(), "node")
		if err := unix.Mknod(p, mode|0o666, dev); err != nil {
			c.t.Fatal(err)
		}
		return p
	}
}

// rfReplaceConfig puts a node made by mk where config.json was.
func rfReplaceConfig(mk func(path string) error) func(rfCtx) {
	return func(c rfCtx) {
		if err := os.Remove(c.b.ConfigPath()); err != nil {
			c.t.Fatal(err)
		}
		if err := mk(c.b.ConfigPath()); err != nil {
			c.t.Fatal(err)
		}
	}
}

// rfOverlayAt mounts an overlay (which cannot be ID-mapped) at
// base()+rel and returns that path.
func rfOverlayAt(base func(c rfCtx) string, rel string) func(c rfCtx) string {
	return func(c rfCtx) string {
		p := filepath.Join(base(c), rel)
		imOverlay(c.t, p)
		return p
	}
}

func rfKubelet(c rfCtx) string { return c.kubelet }
func rfTemp(c rfCtx) string    { return c.t.TempDir() }

// rfLiveID is the container of another pod that is live while a case runs;
// rfLiveMapping is its pod's mapping.
const (
	rfLiveID      = "rf-live"
	rfLiveMapping = "0:100000:65536"
)

// rfLivePod creates container rfLiveID (its own pod) with rfLiveMapping
// through the case's shim; it is deleted when the case ends.
func rfLivePod(c rfCtx) {
	other := newBundle(c.t, "sleep", "60")
	rfSetAnnotations(other.Spec, rfLiveMapping, "")
	other.Save(c.t)
	lcCreate(c.t, c.env, other, rfLiveID)
}

// rfRootfsLink points root.path at a symlink in the bundle to target.
func rfRootfsLink(target func(c rfCtx) string) func(rfCtx) {
	return func(c rfCtx) {
		if err := os.Symlink(target(c), filepath.Join(c.b.Dir, "rootfs-link")); err != nil {
			c.t.Fatal(err)
		}
		rfEdit(func(s *specs.Spec) {
			rfSetAnnotations(s, rfGood, "")
			s.Root.Path = "rootfs-link"
		})(c)
	}
}

// rfHostileCases is the hostile and malformed input corpus of issue 7
// beyond the mapping rules above: config.json that cannot be read or is too
// big or deep, annotations that try to weaken the policy, process IDs
// outside the mapping, other live pods' ranges, mount sources that are
// device nodes, sockets, /proc paths or fake kubelet volumes, and a rootfs
// that is a symlink.
func rfHostileCases() []rfCase {
	const originalAnn = "userns-shim.io/original"
	return []rfCase{
		// --- config.json that cannot be read as a file ---
		{name: "config.json is a FIFO", bothModes: true, setup: rfReplaceConfig(func(p string) error { return unix.Mkfifo(p, 0o644) }),
			want: "is not a regular file but a named pipe"},
		{name: "config.json is a socket", bothModes: true, setup: rfReplaceConfig(func(p string) error { return unix.Mknod(p, unix.S_IFSOCK|0o644, 0) }),
			want: "config.json: it is a socket; config.json must be a regular file"},
		{name: "config.json is a device node (/dev/null's)", bothModes: true,
			setup: rfReplaceConfig(func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))) }),
			want:  "is not a regular file but a device node"},
		// Mode 0000 stops nobody as root: a regular file whose read fails
		// does. /proc/<pid>/mem has nothing mapped at offset 0 (EIO).
		{name: "config.json whose read fails", bothModes: true, setup: func(c rfCtx) {
			if err := unix.Mount(fmt.Sprintf("/proc/%d/mem", os.Getpid()), c.b.ConfigPath(), "", unix.MS_BIND, ""); err != nil {
				c.t.Fatal(err)
			}
			imUnmountAtCleanup(c.t, c.b.ConfigPath())
		}, want: "config.json: input/output error"},
		// Valid JSON padded with blanks: the size alone is refused.
		{name: "config.json larger than 32 MiB", bothModes: true, setup: rfWriteConfig(func(orig []byte) []byte {
			return append(orig, make([]byte, 32<<20)...)
		}), want: "is larger than 32 MiB"},
		{name: "deeply nested JSON", bothModes: true, setup: rfWriteConfig(func([]byte) []byte {
			return []byte(`{"ociVersion":"1.0.2","process":` + strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20001))
		}), want: "exceeded max depth"},
		{name: "JSON array at the top", bothModes: true, setup: rfWriteConfig(func(orig []byte) []byte {
			return append(append([]byte("["), orig...), ']')
		}), want: "cannot unmarshal array"},
		{name: "two JSON documents", bothModes: true, setup: rfWriteConfig(func(orig []byte) []byte {
			return append(append(orig, '\n'), orig...)
		}), want: "not valid JSON"},

		// --- annotations cannot weaken the policy ---
		{name: "no-idmap on everything does not waive mode require", toml: "mode = \"require\"\n", setup: rfEdit(func(s *specs.Spec) {
			s.Annotations = map[string]string{imAnnNoIDMap: "/,*,/proc,/sys,/dev,/etc/hosts"}
		}), want: "mode is require and no mapping was found"},
		{name: "blank mapping annotation does not waive mode require", toml: "mode = \"require\"\n", setup: rfEdit(func(s *specs.Spec) {
			s.Annotations = map[string]string{"userns-shim.io/uid-mappings": ""}
		}), want: "empty mapping"},
		{name: "mapping annotation 'none'", toml: "mode = \"require\"\n", setup: rfAnnotate("none", ""),
			want: `range "none": want containerID:hostID:size`},
		{name: "mapping annotation with a negative ID", setup: rfAnnotate("-1:100000:65536", ""), want: `"-1" is not a number`},
		{name: "mapping annotation that is the host's own identity mapping", setup: rfAnnotate("0:0:4294967295", ""),
			want: "host IDs below 65536 belong to the host"},
		{name: "mapping annotation with 341 ranges", setup: rfAnnotate(strings.Repeat("0:100000:65536,", 340)+"0:100000:65536", ""),
			want: "341 ranges: at most 340 allowed"},
		{name: "annotation below min_host_id in mode allocate", toml: "mode = \"allocate\"\n", setup: rfAnnotate("0:1000:65536", ""),
			want: "host IDs below 65536 belong to the host"},
		// The shim's own record of a rewrite is honoured only when the spec
		// points into its state dir; a pod's forged one changes nothing.
		{name: "forged userns-shim.io/original cannot swap a bad spec mapping", setup: rfEdit(func(s *specs.Spec) {
			rfSetNamespace(s, specs.UserNamespace, "")
			s.Linux.UIDMappings, s.Linux.GIDMappings = rfRanges("0:1000:65536"), rfRanges("0:1000:65536")
			s.Annotations = map[string]string{originalAnn: `{"root":"rootfs","mounts":[],"userns":{"type":"user"},` +
				`"uidMappings":[{"containerID":0,"hostID":100000,"size":65536}],"gidMappings":[{"containerID":0,"hostID":100000,"size":65536}]}`}
		}), want: "spec mapping refused"},
		{name: "pod uid in CRI-O's labels is a path", setup: rfEdit(func(s *specs.Spec) {
			rfSetAnnotations(s, rfGood, "")
			s.Annotations["io.kubernetes.cri-o.Labels"] = `{"io.kubernetes.pod.uid":"../../etc"}`
		}), want: `pod UID "../../etc" is not a valid UID`},
		{name: "sandbox id is a path", setup: rfEdit(func(s *specs.Spec) {
			rfSetAnnotations(s, rfGood, "")
			s.Annotations["io.kubernetes.cri.sandbox-id"] = "../../run"
		}), want: `pod sandbox ID "../../run" is not a valid ID`},

		// --- namespaces the table above leaves out ---
		{name: "no pid namespace entry", setup: rfEdit(func(s *specs.Spec) {
			rfSetAnnotations(s, rfGood, "")
			rfDropNamespace(s, specs.PIDNamespace)
		}), want: `shares the host's pid namespace (no "pid" entry`},
		{name: "user namespace path that is no namespace", setup: rfUserNamespacePath("/etc/passwd", false), want: "user namespace /etc/passwd is joined by path but config.json has no uidMappings"},
		{name: "user namespace path that is no namespace, with mappings", setup: rfUserNamespacePath("/etc/passwd", true), want: "user namespace path: /etc/passwd is not a namespace"},
		{name: "network namespace path that is no namespace", setup: rfNamespacePath(specs.NetworkNamespace, "/etc/passwd"), want: "network namespace path /etc/passwd: /etc/passwd is not a namespace"},
		{name: "pid namespace path to a network namespace", setup: rfNamespacePath(specs.PIDNamespace, fmt.Sprintf("/proc/%d/ns/net", os.Getpid())), want: "is a network namespace, not a pid namespace"},

		// --- process IDs outside the mapping, from every source ---
		{name: "process uid one past the range", setup: rfEdit(func(s *specs.Spec) {
			rfSetAnnotations(s, rfGood, "")
			s.Process.User.UID = 65536
		}), want: "process.user.uid 65536 is outside the uid mapping"},
		{name: "process uid in the gap between two ranges", setup: rfEdit(func(s *specs.Spec) {
			rfSetAnnotations(s, "0:100000:65536,131072:300000:65536", "")
			s.Process.User.UID = 70000
		}), want: "process.user.uid 70000 is outside the uid mapping 0:100000:65536,131072:300000:65536"},
		{name: "process gid outside a spec mapping", setup: rfEdit(func(s *specs.Spec) {
			rfSetNamespace(s, specs.UserNamespace, "")
			s.Linux.UIDMappings, s.Linux.GIDMappings = rfRanges(rfGood), rfRanges(rfGood)
			s.Process.User.GID = 4294967294
		}), want: "process.user.gid 4294967294 is outside the gid mapping"},
		{name: "process uid outside a kubelet mapping", setup: rfSteps(
			rfKubeletRecord("rf-pod-3", `{"uidMappings":[{"hostId":100000,"containerId":0,"length":65536}],"gidMappings":[{"hostId":100000,"containerId":0,"length":65536}]}`),
			rfEdit(func(s *specs.Spec) { s.Process.User.UID = 100000 })),
			want: "process.user.uid 100000 is outside the uid mapping 0:100000:65536"},
		{name: "additionalGids outside a mounts mapping", setup: rfEdit(func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, rfBindMount("/a", rfGood))
			s.Process.User.AdditionalGids = []uint32{65536}
		}), want: "process.user.additionalGids 65536 is outside the gid mapping"},

		// --- other live pods ---
		{name: "host range overlapping a live pod's", setup: rfSteps(rfLivePod, rfAnnotate("0:131072:65536", "")),
			want: "overlap host IDs of pod " + rfLiveID},
		{name: "container of a live pod with another mapping", setup: rfSteps(rfLivePod, rfEdit(func(s *specs.Spec) {
			rfSetAnnotations(s, "0:300000:65536", "")
			s.Annotations["io.kubernetes.cri.container-type"] = "container"
			s.Annotations["io.kubernetes.cri.sandbox-id"] = rfLiveID
		})), want: "differs from its pod " + rfLiveID + "'s mapping " + rfLiveMapping},

		// --- mount sources ---
		{name: "device node source asking for an ID mapping", setup: rfMounts(rfMappedBind("/null", rfPath("/dev/null"))),
			want: "mount /null: source /dev/null is a device node and the mount asks for an ID mapping"},
		{name: "device node source with the idmap option", setup: rfMounts(func(c rfCtx) specs.Mount {
			return imBind("/sda", rfSpecialFile(unix.S_IFBLK, int(unix.Mkdev(8, 0)))(c), "rbind", "rw", "idmap")
		}), want: "is a device node and the mount asks for an ID mapping"},
		{name: "socket source asking for an ID mapping", setup: rfMounts(rfMappedBind("/sock", rfSpecialFile(unix.S_IFSOCK, 0))),
			want: "is neither a directory nor a regular file and the mount asks for an ID mapping"},
		{name: "source /proc/1/root", setup: rfMounts(rfBind("/host", rfPath("/proc/1/root"))),
			want: "source /proc/1/root is a symlink"},
		// /proc/1 may be closed even to root here: the test's own process
		// stands for another container's.
		{name: "source through /proc/<pid>/root/", setup: rfMounts(rfBind("/host", func(c rfCtx) string {
			return fmt.Sprintf("/proc/%d/root%s", os.Getpid(), c.t.TempDir())
		})), want: "goes through a /proc magic link"},
		{name: "source through /proc/self/root/", setup: rfMounts(rfBind("/host", func(c rfCtx) string { return "/proc/self/root" + c.t.TempDir() })),
			want: "/proc magic link"},
		{name: "source /proc/sys", setup: rfMounts(rfBind("/psys", rfPath("/proc/sys"))),
			want: "the shim will not ID-map procfs"},
		// warn leaves unsupported filesystems unmapped: procfs is a refusal, not that.
		{name: "source /proc/sys with on_unsupported_fs warn", toml: "on_unsupported_fs = \"warn\"\n",
			setup: rfMounts(rfBind("/psys", rfPath("/proc/sys"))), want: "the shim will not ID-map procfs"},
		// The kubelet-volume wording is given to paths under kubelet_root
		// only: the control names the volume, the fakes must not.
		{name: "unsupported kubelet volume (control)", setup: rfMounts(rfBind("/data",
			rfOverlayAt(rfKubelet, "pods/rf-pod-4/volumes/kubernetes.io~empty-dir/vol"))),
			want: `volume "vol" (kubernetes.io~empty-dir) at /data`},
		{name: "path outside kubelet_root that looks like a kubelet volume", setup: rfMounts(rfBind("/data",
			rfOverlayAt(rfTemp, "kubelet/pods/rf-pod-5/volumes/kubernetes.io~empty-dir/vol"))),
			want: "mount /data (host source ", notWant: `volume "`},
		{name: "path that leaves kubelet_root by ..", setup: rfMounts(rfBind("/data", func(c rfCtx) string {
			if err := os.MkdirAll(filepath.Join(c.kubelet, "pods"), 0o755); err != nil {
				c.t.Fatal(err)
			}
			p := rfOverlayAt(rfTemp, "pods/rf-pod-6/volumes/kubernetes.io~empty-dir/vol")(c)
			rel, err := filepath.Rel(filepath.Join(c.kubelet, "pods"), p)
			if err != nil {
				c.t.Fatal(err)
			}
			return c.kubelet + "/pods/" + rel
		})), want: "mount /data (host source ", notWant: `volume "`},

		// Refused after the pod's range was allocated and its user
		// namespace pinned: both must go again.
		{name: "symlinked rootfs in mode allocate", toml: "mode = \"allocate\"\n[allocate]\nstart = 2147483648\nlength = 655360\nids_per_pod = 65536\n",
			setup: rfSteps(rfRootfsLink(func(rfCtx) string { return "rootfs" }), rfEdit(func(s *specs.Spec) { s.Annotations = nil })),
			want:  "rootfs-link: it is a symlink"},

		// --- the rootfs ---
		{name: "rootfs that is a symlink", setup: rfRootfsLink(func(c rfCtx) string { return "rootfs" }), want: "rootfs-link: it is a symlink"},
		{name: "rootfs that is a symlink to the host's /", setup: rfRootfsLink(rfPath("/")), want: "rootfs-link: it is a symlink"},
	}
}

func TestRefusals(t *testing.T) {
	requireRoot(t)
	var rt Runtime
	for _, r := range runtimes(t) {
		if r.Name == "runc" {
			rt = r
		}
	}
	if rt.Name == "" {
		t.Skip("runc is not installed (apt-get install runc): the refusals run behind runc")
	}
	for _, tc := range append(rfCases(), rfHostileCases()...) {
		if !tc.bothModes {
			t.Run(tc.name, func(t *testing.T) { rfRunRefusal(t, rt, tc) })
			continue
		}
		t.Run(tc.name+" (mode passthrough)", func(t *testing.T) { rfRunRefusal(t, rt, tc) })
		req := tc
		req.toml = "mode = \"require\"\n" + tc.toml
		t.Run(tc.name+" (mode require)", func(t *testing.T) { rfRunRefusal(t, rt, req) })
	}
}

func rfRunRefusal(t *testing.T, rt Runtime, tc rfCase) {
	kubelet := t.TempDir()
	// Every path of the case (bundle, state dir, volumes) is below the
	// test's own temp root: its mounts are the ones to compare.
	root := filepath.Dir(kubelet)
	env := newEnv(t, rt, fmt.Sprintf("kubelet_root = %q\n%s", kubelet, tc.toml))
	b := newBundle(t, "sleep", "10")
	c := rfCtx{t: t, b: b, kubelet: kubelet, env: env}
	if tc.setup != nil {
		tc.setup(c)
	}
	mountsBefore := pdMountsUnder(t, root)
	stateBefore := rfStateFiles(t, env.StateDir)
	argv := rfCreate(b.Dir, rfID)
	if tc.argv != nil {
		argv = tc.argv(c)
	}
	// Should the shim wrongly let the container through, it must not outlive the test.
	t.Cleanup(func() { rfForceDelete(env, rfID) })

	logFile := filepath.Join(t.TempDir(), "log.json")
	const before = `{"level":"info","msg":"written before the shim ran","time":"2024-01-01T00:00:00Z"}` + "\n"
	if err := os.WriteFile(logFile, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	snap := rfSnapshot(t, b.Dir)

	args := append([]string{"--root", env.RootDir, "--log", logFile, "--log-format", "json"}, argv...)
	r := env.Shim(args...)
	t.Logf("userns-shim %s\nexit %d\nstdout: %q\nstderr: %q", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)

	if r.Code == 0 {
		t.Errorf("exit 0: the shim accepted what it must refuse (%s)", tc.want)
	}
	line := rfCheckStderr(t, r.Stderr, tc.want)
	if tc.notWant != "" && strings.Contains(line, tc.notWant) {
		t.Errorf("stderr says %q, which is wrong here: %q", tc.notWant, line)
	}
	rfCheckLog(t, logFile, before, line)

	if after := rfSnapshot(t, b.Dir); !rfSameSnapshot(t, snap, after) {
		t.Errorf("the bundle changed: config.json must be byte-identical and no file may be left behind")
	}
	if tmps, _ := filepath.Glob(filepath.Join(b.Dir, ".config.json.userns-shim-*")); len(tmps) > 0 {
		t.Errorf("temporary files left in the bundle: %v", tmps)
	}
	rfCheckStateDir(t, env.StateDir, stateBefore)
	// No staging mount, pin or volume mount appeared or went.
	if after := pdMountsUnder(t, root); !slices.Equal(mountsBefore, after) {
		t.Errorf("mounts under %s changed by a refusal:\nbefore %v\nafter  %v", root, mountsBefore, after)
	}
	if _, err := os.Lstat(filepath.Join(env.RootDir, rfID)); err == nil {
		t.Errorf("the real runtime has a container %s: the refusal came too late", rfID)
	}
}

// rfCheckStderr checks that stderr is exactly one `userns-shim: ` line
// containing want, and returns it.
func rfCheckStderr(t *testing.T, stderr, want string) string {
	t.Helper()
	if !strings.HasSuffix(stderr, "\n") {
		t.Errorf("stderr does not end in a newline: %q", stderr)
	}
	line := strings.TrimSuffix(stderr, "\n")
	if strings.Contains(line, "\n") || line == "" {
		t.Errorf("stderr is not exactly one line: %q", stderr)
	}
	if !strings.HasPrefix(line, "userns-shim: ") {
		t.Errorf("stderr does not start with %q: %q", "userns-shim: ", line)
	}
	if !strings.Contains(line, want) {
		t.Errorf("stderr does not say why (want %q): %q", want, line)
	}
	return line
}

// rfCheckLog checks that the shim appended to the log (before is still its
// start) and that the last line is a runc-format error entry whose msg is
// the stderr line.
func rfCheckLog(t *testing.T, logFile, before, line string) {
	t.Helper()
	data, err := os.ReadFile(logFile)
	if err != nil {
		t.Errorf("read --log file: %v", err)
		return
	}
	if !strings.HasPrefix(string(data), before) {
		t.Errorf("--log file was not appended to (its earlier content is gone): %q", data)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	last := lines[len(lines)-1]
	if len(lines) < 2 {
		t.Errorf("nothing was appended to the --log file: %q", data)
		return
	}
	var entry map[string]any
	if err := json.Unmarshal([]byte(last), &entry); err != nil {
		t.Errorf("last --log line is not JSON: %v: %q", err, last)
		return
	}
	if entry["level"] != "error" {
		t.Errorf("last --log line: level %v, want error: %q", entry["level"], last)
	}
	if entry["msg"] != line {
		t.Errorf("last --log line: msg %q\nwant the stderr line %q", entry["msg"], line)
	}
	ts, ok := entry["time"].(string)
	if !ok {
		t.Errorf("last --log line has no time string: %q", last)
	} else if _, err := time.Parse(time.RFC3339, ts); err != nil {
		t.Errorf("last --log line: time %q is not RFC 3339: %v", ts, err)
	}
}

// rfSnapshot records the bundle's top-level entries (the rootfs dir by name
// only): a regular file by its bytes (or why it cannot be read), a symlink
// by its target, a directory by its name, anything else (a FIFO would block
// a read) by its type.
func rfSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	snap := map[string]string{}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		switch {
		case e.Type()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				t.Fatal(err)
			}
			snap[e.Name()] = "symlink -> " + target
		case e.IsDir():
			snap[e.Name()] = "dir"
		case !e.Type().IsRegular():
			snap[e.Name()] = "special: " + e.Type().String()
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				snap[e.Name()] = "unreadable: " + err.Error()
				continue
			}
			snap[e.Name()] = "file: " + string(data)
		}
	}
	return snap
}

func rfSameSnapshot(t *testing.T, before, after map[string]string) bool {
	t.Helper()
	same := true
	for name, v := range before {
		w, ok := after[name]
		switch {
		case !ok:
			t.Errorf("bundle: %s disappeared", name)
			same = false
		case v != w:
			t.Errorf("bundle: %s changed:\nbefore: %.300s\nafter:  %.300s", name, v, w)
			same = false
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("bundle: %s appeared", name)
			same = false
		}
	}
	return same
}

// rfStateFiles returns every file under stateDir with its bytes (a pin,
// an nsfs mount, by its type only). Directories are left out: the shim may
// make its own on the way and leave them, empty.
func rfStateFiles(t *testing.T, stateDir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	filepath.WalkDir(stateDir, func(p string, d os.DirEntry, err error) error {
		switch {
		case err != nil && !os.IsNotExist(err):
			t.Errorf("state_dir: %v", err)
		case err != nil || d.IsDir():
		case !d.Type().IsRegular():
			files[p] = d.Type().String()
		default:
			data, err := os.ReadFile(p)
			files[p] = fmt.Sprintf("%s%v", data, err)
		}
		return nil
	})
	return files
}

// rfCheckStateDir: a refusal adds, removes and changes no file in state_dir
// (no record, lock, pin, runtime cache or change to the pod registry, so
// no range), and leaves no staging directory for rfID.
func rfCheckStateDir(t *testing.T, stateDir string, before map[string]string) {
	t.Helper()
	after := rfStateFiles(t, stateDir)
	for p, v := range after {
		if w, ok := before[p]; !ok {
			t.Errorf("state_dir: %s left behind after a refusal", p)
		} else if v != w {
			t.Errorf("state_dir: %s changed by a refusal:\nbefore %.300s\nafter  %.300s", p, w, v)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("state_dir: %s removed by a refusal", p)
		}
	}
	if _, err := os.Lstat(filepath.Join(stateDir, "staging", rfID)); err == nil {
		t.Errorf("state_dir: staging directory of %s left behind", rfID)
	}
}

// rfOverlay mounts a small overlayfs (which cannot be ID-mapped) and
// returns its mount point; it is unmounted when the test ends.
func rfOverlay(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	merged := filepath.Join(dir, "merged")
	opts := fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work", dir, dir, dir)
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", opts, merged).CombinedOutput(); err != nil {
		t.Skipf("cannot mount an overlayfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", merged).Run() })
	return merged
}

// rfForceDelete removes a container the real runtime may hold under the
// env's --root; nothing to do when the root was never made.
func rfForceDelete(env *Env, id string) {
	if _, err := os.Stat(env.RootDir); err != nil {
		return
	}
	exec.Command(env.RT.Path, "--root", env.RootDir, "delete", "--force", id).Run()
}

// TestRelaxedRules: with [validation] relaxed, critest's mapping (container 0
// at host 1000, 100000 IDs) is accepted and the container really runs with
// it, on every runtime.
func TestRelaxedRules(t *testing.T) {
	requireRoot(t)
	const critest = "0:1000:100000"
	for _, rt := range runtimes(t) {
		t.Run(rt.Name, func(t *testing.T) {
			env := newEnv(t, rt, "[validation]\nmin_host_id = 1000\nsize_multiple = 1\n")
			b := newBundle(t, "sleep", "60")
			b.Spec.Annotations = map[string]string{"userns-shim.io/uid-mappings": critest}
			b.Save(t)
			id := "rf-relaxed-" + rt.Name
			pidFile := filepath.Join(t.TempDir(), "pid")
			logFile := filepath.Join(t.TempDir(), "log.json")
			t.Cleanup(func() { rfForceDelete(env, id) })

			r := env.Shim("--root", env.RootDir, "--log", logFile, "--log-format", "json",
				"create", "--bundle", b.Dir, "--pid-file", pidFile, id)
			if r.Code != 0 {
				log, _ := os.ReadFile(logFile)
				t.Fatalf("create with relaxed rules: exit %d\nstderr: %s\nlog: %s", r.Code, r.Stderr, log)
			}

			b.Load(t)
			if got := rfRangesString(b.Spec.Linux.UIDMappings); got != critest {
				t.Errorf("config.json uidMappings %s, want %s", got, critest)
			}
			if got := rfRangesString(b.Spec.Linux.GIDMappings); got != critest {
				t.Errorf("config.json gidMappings %s, want %s", got, critest)
			}
			pid, err := os.ReadFile(pidFile)
			if err != nil {
				t.Fatalf("pid file: %v", err)
			}
			for _, f := range []string{"uid_map", "gid_map"} {
				data, err := os.ReadFile(filepath.Join("/proc", strings.TrimSpace(string(pid)), f))
				if err != nil {
					t.Fatal(err)
				}
				if got := strings.Join(strings.Fields(string(data)), " "); got != "0 1000 100000" {
					t.Errorf("container %s: %q, want \"0 1000 100000\"", f, got)
				}
			}
			if insp := env.Shim("shim", "inspect", id); insp.Code != 0 || !strings.Contains(insp.Stdout, `"annotation"`) {
				t.Errorf("shim inspect: exit %d, stdout %s, stderr %s", insp.Code, insp.Stdout, insp.Stderr)
			}

			env.MustShim("--root", env.RootDir, "delete", "--force", id)
			if _, err := os.Lstat(filepath.Join(env.StateDir, "containers", id+".json")); !os.IsNotExist(err) {
				t.Errorf("record of %s still in state_dir after delete (%v)", id, err)
			}
			if st := env.Shim("--root", env.RootDir, "state", id); st.Code == 0 {
				t.Errorf("container %s still exists after delete: %s", id, st.Stdout)
			}
		})
	}
}

func rfRangesString(r []specs.LinuxIDMapping) string {
	parts := make([]string, len(r))
	for i, m := range r {
		parts[i] = fmt.Sprintf("%d:%d:%d", m.ContainerID, m.HostID, m.Size)
	}
	return strings.Join(parts, ",")
}
