// Package config loads the shim's TOML configuration. Every key is documented
// here, in docs/configuration.md and in deploy/config.toml.example.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/BurntSushi/toml"
)

// Environment variables the shim reads.
const (
	EnvConfig  = "USERNS_SHIM_CONFIG"
	EnvRuntime = "USERNS_SHIM_RUNTIME"
)

// DefaultPath is where the configuration lives unless USERNS_SHIM_CONFIG says otherwise.
const DefaultPath = "/etc/userns-shim/config.toml"

// Mode says what happens to a container that arrives with no mapping from any source.
type Mode string

const (
	ModePassthrough Mode = "passthrough" // run it as it is
	ModeRequire     Mode = "require"     // refuse it
	ModeAllocate    Mode = "allocate"    // give its pod a range from [allocate]
)

// IDMap says who makes ID-mapped mounts.
type IDMap string

const (
	IDMapAuto    IDMap = "auto"
	IDMapShim    IDMap = "shim"
	IDMapRuntime IDMap = "runtime"
)

// OnUnsupportedFS says what happens to a mount whose filesystem cannot be ID-mapped.
type OnUnsupportedFS string

const (
	UnsupportedFail OnUnsupportedFS = "fail"
	UnsupportedWarn OnUnsupportedFS = "warn"
)

// Config is the whole configuration file.
type Config struct {
	// Runtime is the real OCI runtime: a name looked up on PATH or an
	// absolute path. Empty means crun, else runc. USERNS_SHIM_RUNTIME overrides it.
	Runtime string `toml:"runtime"`

	// StateDir holds the shim's records (decisions per container). It should
	// be on a tmpfs so that it is empty after a reboot, like the runtimes' own state.
	StateDir string `toml:"state_dir"`

	// Mode: passthrough, require or allocate.
	Mode Mode `toml:"mode"`

	// Allocate is the pool that mode "allocate" takes pod ranges from.
	Allocate Allocate `toml:"allocate"`

	// IDMap: auto, shim or runtime.
	IDMap IDMap `toml:"idmap"`

	// OnUnsupportedFS: fail or warn.
	OnUnsupportedFS OnUnsupportedFS `toml:"on_unsupported_fs"`

	// KubeletRoot is the kubelet's root directory; its pods/<uid>/userns files
	// are one source of mappings.
	KubeletRoot string `toml:"kubelet_root"`

	// Validation holds the mapping rules a cluster may legitimately relax.
	Validation Validation `toml:"validation"`
}

// Allocate describes the allocator's pool of host IDs.
type Allocate struct {
	// Start is the first host ID of the pool.
	Start uint32 `toml:"start"`
	// Length is the number of host IDs in the pool.
	Length uint32 `toml:"length"`
	// IDsPerPod is the size of each pod's range, a multiple of 65536.
	IDsPerPod uint32 `toml:"ids_per_pod"`
}

// Validation holds relaxable mapping rules. The defaults are the safe ones.
type Validation struct {
	// MinHostID is the lowest host ID a mapping may use. The host keeps
	// 0..MinHostID-1 for its own users.
	MinHostID uint32 `toml:"min_host_id"`
	// SizeMultiple: every mapping range's size must be a multiple of it.
	SizeMultiple uint32 `toml:"size_multiple"`
}

// Default returns the configuration used when no file exists.
func Default() Config {
	return Config{
		StateDir: "/run/userns-shim",
		Mode:     ModePassthrough,
		Allocate: Allocate{
			// The upper half of the ID space: see docs/configuration.md for
			// why this avoids the kubelet's own pool in practice.
			Start:     1 << 31,
			Length:    1 << 30,
			IDsPerPod: 65536,
		},
		IDMap:           IDMapAuto,
		OnUnsupportedFS: UnsupportedFail,
		KubeletRoot:     "/var/lib/kubelet",
		Validation:      Validation{MinHostID: 65536, SizeMultiple: 65536},
	}
}

// Path returns the configuration file to read, honouring USERNS_SHIM_CONFIG.
func Path(getenv func(string) string) string {
	if p := getenv(EnvConfig); p != "" {
		return p
	}
	return DefaultPath
}

// Load reads the configuration. A missing file at the default path means the
// defaults; a file named explicitly by USERNS_SHIM_CONFIG must exist, so a
// typo does not silently drop policy.
func Load(getenv func(string) string) (Config, error) {
	path := Path(getenv)
	cfg := Default()
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && getenv(EnvConfig) == "":
		// defaults
	case err != nil:
		return cfg, fmt.Errorf("read config %s: %w", path, err)
	default:
		if err := Parse(data, &cfg); err != nil {
			return cfg, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if rt := getenv(EnvRuntime); rt != "" {
		cfg.Runtime = rt
	}
	return cfg, nil
}

// Parse decodes TOML over cfg (which holds defaults) and validates the result.
// Unknown keys are errors: a misspelt policy key must not be ignored.
func Parse(data []byte, cfg *Config) error {
	md, err := toml.Decode(string(data), cfg)
	if err != nil {
		return err
	}
	if und := md.Undecoded(); len(und) > 0 {
		return fmt.Errorf("unknown key %q", und[0].String())
	}
	return cfg.Validate()
}

// Validate checks values that TOML types alone cannot.
func (c *Config) Validate() error {
	switch c.Mode {
	case ModePassthrough, ModeRequire, ModeAllocate:
	default:
		return fmt.Errorf("mode %q: want passthrough, require or allocate", c.Mode)
	}
	switch c.IDMap {
	case IDMapAuto, IDMapShim, IDMapRuntime:
	default:
		return fmt.Errorf("idmap %q: want auto, shim or runtime", c.IDMap)
	}
	switch c.OnUnsupportedFS {
	case UnsupportedFail, UnsupportedWarn:
	default:
		return fmt.Errorf("on_unsupported_fs %q: want fail or warn", c.OnUnsupportedFS)
	}
	if c.StateDir == "" || c.StateDir[0] != '/' {
		return fmt.Errorf("state_dir %q: want an absolute path", c.StateDir)
	}
	if c.KubeletRoot == "" || c.KubeletRoot[0] != '/' {
		return fmt.Errorf("kubelet_root %q: want an absolute path", c.KubeletRoot)
	}
	a := c.Allocate
	if a.IDsPerPod == 0 || a.IDsPerPod%65536 != 0 {
		return fmt.Errorf("allocate.ids_per_pod %d: want a non-zero multiple of 65536", a.IDsPerPod)
	}
	if a.Start < 65536 {
		return fmt.Errorf("allocate.start %d: the host keeps IDs 0-65535", a.Start)
	}
	if uint64(a.Start)+uint64(a.Length) > 1<<32-1 {
		return fmt.Errorf("allocate: start %d + length %d passes the last ID 4294967294", a.Start, a.Length)
	}
	if a.Length < a.IDsPerPod {
		return fmt.Errorf("allocate.length %d: smaller than one pod's range (%d)", a.Length, a.IDsPerPod)
	}
	if c.Validation.MinHostID == 0 {
		return errors.New("validation.min_host_id 0: host root can never be a pod's ID")
	}
	if c.Validation.SizeMultiple == 0 {
		return errors.New("validation.size_multiple 0: want 1 or more")
	}
	return nil
}
