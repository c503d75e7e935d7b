// Command noopwrapper is the floor of any Go exec wrapper around an OCI
// runtime: it only execs the runtime named by NOOP_WRAPPER_RUNTIME with its
// own arguments. hack/bench compares userns-shim's passthrough with it. It is
// not shipped.
package main

import (
	"os"
	"syscall"
)

func main() {
	rt := os.Getenv("NOOP_WRAPPER_RUNTIME")
	if rt == "" {
		os.Stderr.WriteString("noopwrapper: NOOP_WRAPPER_RUNTIME is not set\n")
		os.Exit(1)
	}
	err := syscall.Exec(rt, append([]string{rt}, os.Args[1:]...), os.Environ())
	os.Stderr.WriteString("noopwrapper: exec " + rt + ": " + err.Error() + "\n")
	os.Exit(127)
}
