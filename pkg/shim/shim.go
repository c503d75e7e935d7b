// Package shim wires one invocation together: argv, configuration, the
// decision about a container's user namespace, and the hand-over to the real
// runtime. cmd/userns-shim only calls Main.
package shim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/userns-shim/userns-shim/pkg/config"
	"github.com/userns-shim/userns-shim/pkg/idmount"
	"github.com/userns-shim/userns-shim/pkg/logging"
	"github.com/userns-shim/userns-shim/pkg/mapping"
	"github.com/userns-shim/userns-shim/pkg/nsexec"
	"github.com/userns-shim/userns-shim/pkg/runcargs"
	"github.com/userns-shim/userns-shim/pkg/runtime"
	"github.com/userns-shim/userns-shim/pkg/state"
)

// Set at build time with -ldflags -X.
var (
	Version = "0.1.0-dev"
	Commit  = "unknown"
)

// Main runs the shim with os.Args and returns the exit status.
func Main(args []string) int {
	inv, perr := runcargs.Parse(args[1:])
	cfg, cerr := config.Load(os.Getenv)

	// The common case first and with the least work: a call that passes
	// straight through is an exec, nothing more.
	if perr == nil && cerr == nil && passesThrough(inv, cfg) {
		path, err := runtime.Resolve(cfg.Runtime)
		if err == nil {
			err = runtime.Exec(path, inv.Args)
		}
		return fail(logging.Open(inv.Global, os.Stderr), err)
	}

	log := logging.Open(inv.Global, os.Stderr)
	defer log.Close()
	if err := errors.Join(perr, cerr); err != nil {
		return fail(log, err)
	}
	path, err := runtime.Resolve(cfg.Runtime)
	if err != nil {
		return fail(log, err)
	}
	s := &Shim{Cfg: cfg, Inv: inv, RuntimePath: path, Log: log, State: state.Dir(cfg.StateDir)}
	code, err := s.dispatch()
	if err != nil {
		return fail(log, err)
	}
	return code
}

func fail(log *logging.Logger, err error) int {
	log.Fail(err)
	log.Close()
	return 1
}

// passesThrough reports whether the invocation goes to the runtime by exec
// with no work by the shim.
func passesThrough(inv *runcargs.Invocation, cfg config.Config) bool {
	switch inv.Command {
	case runcargs.CmdCreate, runcargs.CmdRun, runcargs.CmdShim, "features":
		return false
	case "":
		return !inv.Global.Version
	case "delete":
		return !hasRecord(inv, cfg)
	}
	return true
}

// hasRecord reports whether the container a delete names has a shim record
// to remove. The container ID is the last token that is not a flag.
func hasRecord(inv *runcargs.Invocation, cfg config.Config) bool {
	id := containerArg(inv.CommandArgs)
	return runcargs.ValidateContainerID(id) == nil && state.Dir(cfg.StateDir).Has(id)
}

// Shim is one invocation that needs the shim's own work.
type Shim struct {
	Cfg         config.Config
	Inv         *runcargs.Invocation
	RuntimePath string
	Log         *logging.Logger
	State       state.Dir
}

func (s *Shim) dispatch() (int, error) {
	switch s.Inv.Command {
	case runcargs.CmdCreate, runcargs.CmdRun:
		if s.Inv.Global.Help {
			return 0, runtime.Exec(s.RuntimePath, s.Inv.Args)
		}
		return s.create()
	case "delete":
		return s.delete()
	case "features":
		return s.features()
	case runcargs.CmdShim:
		return s.verb()
	case "":
		return s.version()
	}
	return 0, runtime.Exec(s.RuntimePath, s.Inv.Args)
}

func (s *Shim) runtimeInfo() (runtime.Info, error) {
	out, err := runtime.Output(s.RuntimePath, "--version")
	if err != nil {
		return runtime.Info{}, err
	}
	return runtime.ParseVersion(out)
}

func (s *Shim) version() (int, error) {
	inf, err := s.runtimeInfo()
	if err != nil {
		return 0, err
	}
	fmt.Print(runtime.VersionText(Version, Commit, s.RuntimePath, inf))
	return 0, nil
}

func (s *Shim) features() (int, error) {
	inf, err := s.runtimeInfo()
	if err != nil {
		return 0, err
	}
	doc, err := runtime.Features(s.RuntimePath, inf, s.makesIDMaps())
	if err != nil {
		return 0, err
	}
	_, err = os.Stdout.Write(doc)
	return 0, err
}

// delete passes the delete to the runtime and removes the shim's record of
// the container once the runtime no longer knows it: after a successful
// delete, or a failed one for a container the runtime has no state of (a
// foreground run --keep that exited, a create that died half-way).
func (s *Shim) delete() (int, error) {
	id := containerArg(s.Inv.CommandArgs)
	tm := s.newTimings()
	defer tm.log(s.Log.WithField("id", id), "delete timings")
	code, err := runtime.Run(s.RuntimePath, s.Inv.Args)
	tm.lap("runtime")
	if err != nil {
		return code, err
	}
	if code != 0 {
		stateArgs := append(append([]string{}, s.Inv.GlobalArgs()...), "state", id)
		if _, serr := runtime.Output(s.RuntimePath, stateArgs...); serr == nil {
			return code, nil // it still exists: keep its record
		}
	}
	s.forget(id)
	tm.lap("cleanup")
	return code, nil
}

// containerArg is the container ID of a delete: its last token that is not a
// flag.
func containerArg(args []string) string {
	for i := len(args) - 1; i >= 0; i-- {
		if a := args[i]; a != "" && a[0] != '-' {
			return a
		}
	}
	return ""
}

// makesIDMaps reports whether the shim makes ID-mapped mounts on this node:
// it is configured to, and they really work on the filesystems of the
// state dir (a tmpfs, like secret and token volumes) and the kubelet's
// root (emptyDir and hostPath volumes), as a probe shows.
func (s *Shim) makesIDMaps() bool {
	if s.Cfg.IDMap == config.IDMapRuntime {
		return false
	}
	users := &nsexec.UserNSCache{}
	defer users.Close()
	p := idmount.NewProber(users, mapping.Mapping{})
	for _, dir := range []string{s.Cfg.StateDir, s.Cfg.KubeletRoot} {
		sup, err := p.Supports(existingAncestor(dir))
		if err != nil || !sup.OK {
			s.Log.WithError(err).WithField("dir", dir).Debug("ID-mapped mounts not supported")
			return false
		}
	}
	return true
}

// existingAncestor returns dir or its nearest existing parent.
func existingAncestor(dir string) string {
	for {
		if _, err := os.Stat(dir); err == nil || dir == "/" {
			return dir
		}
		dir = filepath.Dir(dir)
	}
}
