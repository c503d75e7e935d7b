//go:build failpoints

package failpoint

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

var (
	mu   sync.Mutex
	hits = map[string]int{}
)

// Hit SIGKILLs the process if USERNS_SHIM_FAILPOINT names this hit of the
// point: a signal, not an exit, so that no deferred cleanup runs, exactly as
// when the OOM killer or a node's shutdown stops the shim.
func Hit(name string) {
	want, nth, ok := strings.Cut(os.Getenv(Env), ":")
	if want != name {
		return
	}
	n := 1
	if ok {
		var err error
		if n, err = strconv.Atoi(nth); err != nil {
			return
		}
	}
	mu.Lock()
	hits[name]++
	count := hits[name]
	mu.Unlock()
	if count == n {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is delivered before Kill returns; never go on
	}
}
