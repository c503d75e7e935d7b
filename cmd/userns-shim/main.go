// Command userns-shim is an OCI runtime that runs containers in user
// namespaces and hands over to the real runtime (crun or runc).
package main

import (
	"os"

	"github.com/userns-shim/userns-shim/pkg/shim"
)

func main() {
	os.Exit(shim.Main(os.Args))
}
