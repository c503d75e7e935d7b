package runtime

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go/features"
)

// Info is what `<runtime> --version` says.
type Info struct {
	Name    string // crun, runc
	Version string
	Commit  string
	Spec    string   // the runtime-spec version it implements
	Flags   []string // crun's +SECCOMP +APPARMOR ... line
}

// ParseVersion reads runc's and crun's --version output:
//
//	crun version 1.8.1
//	commit: f8a0...
//	spec: 1.0.0
//	+SYSTEMD +SELINUX ...
func ParseVersion(out []byte) (Info, error) {
	var inf Info
	for i, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case i == 0:
			name, ver, ok := strings.Cut(line, " version ")
			if !ok {
				return inf, fmt.Errorf("unexpected --version output %q", line)
			}
			inf.Name, inf.Version = name, ver
		case strings.HasPrefix(line, "commit: "):
			inf.Commit = strings.TrimPrefix(line, "commit: ")
		case strings.HasPrefix(line, "spec: "):
			inf.Spec = strings.TrimPrefix(line, "spec: ")
		case strings.HasPrefix(line, "+") || strings.HasPrefix(line, "-"):
			inf.Flags = strings.Fields(line)
		}
	}
	return inf, nil
}

// VersionText renders the shim's --version in runc's three-line format, which
// go-runc and the CRI runtimes parse ("NAME version X", "commit: ", "spec: "),
// naming the real runtime on the first line.
func VersionText(shimVersion, shimCommit, runtimePath string, rt Info) string {
	return fmt.Sprintf("userns-shim version %s (runtime %s %s at %s)\ncommit: %s\nspec: %s\n",
		shimVersion, rt.Name, rt.Version, runtimePath, shimCommit, rt.Spec)
}

// Features returns the features document for the shim over the runtime at
// path: the runtime's own answer when it has a `features` command, else one
// built from what its --version says. Either way "user" is listed among the
// namespaces; idmap is enabled when the shim makes ID-mapped mounts itself
// (shimIDMap) or the runtime says it does.
func Features(path string, rt Info, shimIDMap bool) ([]byte, error) {
	if out, err := Output(path, "features"); err == nil && json.Valid(out) {
		return patchFeatures(out, shimIDMap)
	}
	doc, err := json.Marshal(builtFeatures(rt))
	if err != nil {
		return nil, err
	}
	return patchFeatures(doc, shimIDMap)
}

// patchFeatures edits the document as a generic tree so that fields this
// version of specs-go does not know survive.
func patchFeatures(doc []byte, shimIDMap bool) ([]byte, error) {
	var f map[string]any
	if err := json.Unmarshal(doc, &f); err != nil {
		return nil, fmt.Errorf("runtime features: %w", err)
	}
	linux := child(f, "linux")
	var ns []string
	if raw, ok := linux["namespaces"].([]any); ok {
		for _, v := range raw {
			if s, ok := v.(string); ok {
				ns = append(ns, s)
			}
		}
	}
	if !slices.Contains(ns, "user") {
		ns = append(ns, "user")
	}
	linux["namespaces"] = ns
	idmap := child(child(linux, "mountExtensions"), "idmap")
	runtimeIDMap, _ := idmap["enabled"].(bool)
	idmap["enabled"] = shimIDMap || runtimeIDMap
	child(f, "annotations")["io.github.userns-shim.version"] = "userns-shim"
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "    ")
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func child(m map[string]any, key string) map[string]any {
	c, ok := m[key].(map[string]any)
	if !ok {
		c = map[string]any{}
		m[key] = c
	}
	return c
}

// builtFeatures describes a runtime that has no `features` command (crun
// before 1.9) from its --version line and the kernel's capability count.
func builtFeatures(rt Info) features.Features {
	t, f := true, false
	has := func(flag string) *bool {
		if slices.Contains(rt.Flags, "+"+flag) {
			return &t
		}
		return &f
	}
	spec := rt.Spec
	if spec == "" {
		spec = "1.0.0"
	}
	return features.Features{
		OCIVersionMin: "1.0.0",
		OCIVersionMax: spec,
		Hooks:         []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"},
		MountOptions: []string{"async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
			"iversion", "lazytime", "loud", "mand", "noatime", "nodev", "nodiratime", "noexec", "noiversion",
			"nolazytime", "nomand", "norelatime", "nostrictatime", "nosuid", "private", "rbind", "relatime",
			"remount", "ro", "rprivate", "rshared", "rslave", "runbindable", "rw", "shared", "silent", "slave",
			"strictatime", "suid", "sync", "tmpcopyup", "unbindable"},
		Linux: &features.Linux{
			Namespaces:   []string{"cgroup", "ipc", "mount", "network", "pid", "user", "uts"},
			Capabilities: capabilities(),
			Cgroup:       &features.Cgroup{V1: &t, V2: &t, Systemd: has("SYSTEMD"), SystemdUser: has("SYSTEMD")},
			Seccomp:      &features.Seccomp{Enabled: has("SECCOMP")},
			Apparmor:     &features.Apparmor{Enabled: has("APPARMOR")},
			Selinux:      &features.Selinux{Enabled: has("SELINUX")},
		},
	}
}

var capNames = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
	"CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
	"CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
	"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
	"CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"}

// capabilities lists the capabilities this kernel knows.
func capabilities() []string {
	last := len(capNames) - 1
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n < last {
			last = n
		}
	}
	return slices.Clone(capNames[:last+1])
}
