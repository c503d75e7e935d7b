// Package runcargs parses the command lines that CRI runtimes, conmon and
// containerd's runc shim give runc or crun. Parsing is a pure function: it
// never touches the file system, so every odd command line is a table test.
package runcargs

import (
	"errors"
	"fmt"
	"strings"

	"github.com/userns-shim/userns-shim/pkg/fsutil"
)

// Command names the shim treats specially. Everything else passes through.
const (
	CmdCreate = "create"
	CmdRun    = "run"
	CmdShim   = "shim" // the shim's own verbs; no OCI runtime uses this word
)

// Global holds the runtime's global flags, as given before the subcommand.
type Global struct {
	Root          string
	Log           string
	LogFormat     string
	Debug         bool
	SystemdCgroup bool
	Version       bool // --version, -v, -V
	Help          bool // --help, -h
}

// Invocation is one parsed command line.
type Invocation struct {
	Args    []string // argv without argv[0], exactly as received
	Global  Global
	Command string // the subcommand; "" for a bare --version/--help
	// CommandArgs are the tokens after the subcommand: nil when there is
	// none, not even an empty token.
	CommandArgs []string

	// Set for create and run only.
	ContainerID   string
	Bundle        string // as given; "" means the current directory
	ConfigFile    string // crun's --config/-f; "" means config.json
	PidFile       string
	ConsoleSocket string
	Detach        bool // run -d: the runtime returns once the container started
	Keep          bool // run --keep: the container is not deleted when it exits
}

// GlobalArgs returns the tokens before the subcommand, to reuse for another
// call to the runtime with the same --root, --log and so on.
func (inv *Invocation) GlobalArgs() []string {
	// Not Command == "": an empty token can stand where the command goes.
	if inv.CommandArgs == nil {
		return inv.Args
	}
	return inv.Args[:len(inv.Args)-len(inv.CommandArgs)-1]
}

// Rewrites reports whether the invocation is one whose bundle the shim rewrites.
func (inv *Invocation) Rewrites() bool {
	return inv.Command == CmdCreate || inv.Command == CmdRun
}

type flagKind int

const (
	boolFlag flagKind = iota
	valueFlag
)

// globalFlags are runc's and crun's global flags. The value-taking ones
// matter most: their values must not be mistaken for the subcommand.
var globalFlags = map[string]flagKind{
	"root": valueFlag, "log": valueFlag, "log-format": valueFlag, "log-level": valueFlag,
	"criu": valueFlag, "rootless": valueFlag, "cgroup-manager": valueFlag,
	"debug": boolFlag, "systemd-cgroup": boolFlag,
	"help": boolFlag, "h": boolFlag, "version": boolFlag, "v": boolFlag, "V": boolFlag,
	"usage": boolFlag,
}

// createFlags are the flags of runc and crun create/run.
var createFlags = map[string]flagKind{
	"bundle": valueFlag, "b": valueFlag, "config": valueFlag, "f": valueFlag,
	"console-socket": valueFlag, "pid-file": valueFlag, "preserve-fds": valueFlag,
	"pidfd-socket": valueFlag,
	"no-pivot":     boolFlag, "no-new-keyring": boolFlag, "no-subreaper": boolFlag,
	"detach": boolFlag, "d": boolFlag, "keep": boolFlag,
	"help": boolFlag, "h": boolFlag,
}

// shortAttached are one-letter value flags that crun (argp) also accepts
// with the value glued on: -b/path.
var shortAttached = map[string]bool{"b": true, "f": true}

// ErrUsage marks command lines the shim refuses before any side effect.
var ErrUsage = errors.New("usage")

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, a...))
}

// splitFlag recognises -x, --x, -x=v and --x=v. ok is false for a
// positional token (including "-" alone).
func splitFlag(tok string) (name, value string, hasValue, ok bool) {
	if len(tok) < 2 || tok[0] != '-' {
		return "", "", false, false
	}
	name = strings.TrimPrefix(strings.TrimPrefix(tok, "-"), "-")
	if name == "" {
		return "", "", false, false
	}
	if i := strings.IndexByte(name, '='); i >= 0 {
		return name[:i], name[i+1:], true, true
	}
	return name, "", false, true
}

// Parse parses argv without argv[0]. It fails only where guessing could let
// a create slip past the shim; anything it does not understand and that is
// not a create or run is left for the real runtime to judge. On error the
// returned invocation still holds the global flags read so far, so the error
// can reach the --log file.
func Parse(args []string) (*Invocation, error) {
	inv := &Invocation{Args: args}
	i := 0
	for ; i < len(args); i++ {
		tok := args[i]
		if tok == "--" {
			i++
			break
		}
		name, value, hasValue, isFlag := splitFlag(tok)
		if !isFlag {
			break
		}
		kind, known := globalFlags[name]
		if !known {
			if !hasValue && containsRewriteCommand(args[i+1:]) {
				return inv, usageErr("unknown global flag %q before a create or run: write it as %s=VALUE so its value cannot be taken for the subcommand", tok, tok)
			}
			continue
		}
		if kind == valueFlag && !hasValue {
			if i+1 >= len(args) {
				return inv, usageErr("flag %s needs a value", tok)
			}
			i++
			value = args[i]
		}
		setGlobal(&inv.Global, name, value, hasValue)
	}
	if i >= len(args) {
		return inv, nil
	}
	inv.Command = args[i]
	inv.CommandArgs = args[i+1 : len(args) : len(args)] // never nil: see GlobalArgs
	if inv.Rewrites() {
		if err := parseCreate(inv); err != nil {
			return inv, err
		}
	}
	return inv, nil
}

func containsRewriteCommand(rest []string) bool {
	for _, t := range rest {
		if t == CmdCreate || t == CmdRun {
			return true
		}
	}
	return false
}

func setGlobal(g *Global, name, value string, hasValue bool) {
	on := !hasValue || value == "true" || value == "1"
	switch name {
	case "root":
		g.Root = value
	case "log":
		g.Log = value
	case "log-format":
		g.LogFormat = value
	case "debug":
		g.Debug = on
	case "systemd-cgroup":
		g.SystemdCgroup = on
	case "version", "v", "V":
		g.Version = on
	case "help", "h", "usage":
		g.Help = on
	}
}

func parseCreate(inv *Invocation) error {
	args := inv.CommandArgs
	var positional []string
	for i := 0; i < len(args); i++ {
		tok := args[i]
		if tok == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		name, value, hasValue, isFlag := splitFlag(tok)
		if !isFlag {
			positional = append(positional, tok)
			continue
		}
		kind, known := createFlags[name]
		if !known && len(name) > 1 && !strings.HasPrefix(tok, "--") && shortAttached[name[:1]] {
			// crun accepts -bPATH.
			kind, known, value, hasValue, name = valueFlag, true, name[1:], true, name[:1]
		}
		if !known {
			if hasValue {
				continue // --new-flag=value cannot hide the container ID
			}
			return usageErr("unknown %s flag %q: write it as %s=VALUE if it takes a value", inv.Command, tok, tok)
		}
		if kind == valueFlag && !hasValue {
			if i+1 >= len(args) {
				return usageErr("%s flag %s needs a value", inv.Command, tok)
			}
			i++
			value = args[i]
		}
		switch name {
		case "bundle", "b":
			inv.Bundle = value
		case "config", "f":
			inv.ConfigFile = value
		case "pid-file":
			inv.PidFile = value
		case "console-socket":
			inv.ConsoleSocket = value
		case "help", "h":
			inv.Global.Help = true
		case "detach", "d":
			inv.Detach = !hasValue || value == "true"
		case "keep":
			inv.Keep = !hasValue || value == "true"
		}
	}
	if inv.Global.Help {
		return nil
	}
	switch len(positional) {
	case 0:
		return usageErr("container id cannot be empty")
	case 1:
	default:
		return usageErr("%s: expected one container id, got %d arguments: %s", inv.Command, len(positional), strings.Join(positional, " "))
	}
	if err := ValidateContainerID(positional[0]); err != nil {
		return err
	}
	inv.ContainerID = positional[0]
	return nil
}

// ValidateContainerID refuses IDs that are empty, contain path separators or
// are "." or "..": the shim uses IDs as file names in its state dir.
func ValidateContainerID(id string) error {
	if id == "" {
		return usageErr("container id cannot be empty")
	}
	// runc's own rule for container IDs ([\w+-.]+); it also keeps IDs usable
	// as file names.
	if !fsutil.IsName(id, 1024, "_+-.") {
		return usageErr("invalid container id %q: use letters, digits and + - . _ only", id)
	}
	return nil
}
