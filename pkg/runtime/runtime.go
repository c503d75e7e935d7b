// Package runtime finds the real OCI runtime and hands over to it: by exec(2)
// for everything that passes through, as a child for the calls whose outcome
// the shim must see.
package runtime

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Resolve returns the absolute path of the real runtime: name (a name on
// PATH or an absolute path), or crun, else runc when name is empty. It
// refuses the shim's own binary, which would otherwise exec itself forever
// when installed under a runtime's name.
func Resolve(name string) (string, error) {
	candidates := []string{name}
	if name == "" {
		candidates = []string{"crun", "runc"}
	}
	var lastErr error
	for _, c := range candidates {
		p, err := lookPath(c)
		if err != nil {
			lastErr = err
			continue
		}
		if p, err = filepath.Abs(p); err != nil {
			return "", err
		}
		if isSelf(p) {
			lastErr = fmt.Errorf("%s is userns-shim itself", p)
			continue
		}
		return p, nil
	}
	if name == "" {
		return "", fmt.Errorf("no real runtime found: neither crun nor runc is on PATH (%v); set runtime in the config file", lastErr)
	}
	return "", fmt.Errorf("real runtime %q: %w", name, lastErr)
}

// defaultPath is searched when the shim gets no PATH at all: conmon runs the
// runtime with an empty environment.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func lookPath(name string) (string, error) {
	if os.Getenv("PATH") != "" || strings.Contains(name, "/") {
		return exec.LookPath(name)
	}
	for _, dir := range filepath.SplitList(defaultPath) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: not found in %s (PATH is empty)", name, defaultPath)
}

func isSelf(p string) bool {
	var a, b unix.Stat_t
	if unix.Stat(p, &a) != nil || unix.Stat("/proc/self/exe", &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// Exec replaces the shim with the runtime. argv, environment and every
// inherited file descriptor (conmon's sync pipes, console sockets) reach it
// untouched: Go opens its own descriptors close-on-exec.
func Exec(path string, args []string) error {
	argv := append([]string{path}, args...)
	err := unix.Exec(path, argv, os.Environ())
	return &os.PathError{Op: "exec", Path: path, Err: err}
}

// Run starts the runtime as a child and waits for it, forwarding the signals
// a caller uses to stop it. Inherited descriptors pass as with Exec. It
// returns the exit status to pass on: the child's own, or 128+signal.
func Run(path string, args []string) (int, error) {
	// syscall.ForkExec, not os.StartProcess: the os package first forks a
	// throwaway child to check clone(CLONE_PIDFD) (about 0.3 ms here). Until
	// the child is reaped its PID cannot be reused, so signals by PID are safe.
	pid, err := syscall.ForkExec(path, append([]string{path}, args...), &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
	})
	if err != nil {
		return 0, &os.PathError{Op: "start", Path: path, Err: err}
	}
	// Set up after the fork: a fresh process's first signal.Notify costs
	// about 0.4 ms, which the child's own start-up now hides. A signal in
	// between acts as before the fork (the shim dies, the runtime goes on).
	// Never stopped: signal.Stop spins until Go's signal loop is idle, 0.1
	// to 1.5 ms measured after a runc delete, and the shim exits soon after
	// Run anyway. Until then a signal lands in the unread channel, so the
	// shim finishes its cleanup instead of dying half-way through it.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = unix.Kill(pid, s.(syscall.Signal))
			case <-done:
				return
			}
		}
	}()
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, 0, nil)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	close(done)
	if err != nil {
		return 0, fmt.Errorf("wait for %s: %w", path, os.NewSyscallError("wait4", err))
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// Output runs the runtime with args and returns its standard output.
func Output(path string, args ...string) ([]byte, error) {
	cmd := exec.Command(path, args...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			return out, fmt.Errorf("%s %v: %w: %s", path, args, err, firstLine(ee.Stderr))
		}
		return out, fmt.Errorf("%s %v: %w", path, args, err)
	}
	return out, nil
}

func firstLine(b []byte) string {
	for i, c := range b {
		if c == '\n' {
			return string(b[:i])
		}
	}
	return string(b)
}
