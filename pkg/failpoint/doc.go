// Package failpoint lets the kill-point tests SIGKILL the shim at a named
// step of a create. Only a binary built with `-tags failpoints` does
// anything: the shipped build compiles Hit to an empty function, so it has
// no cost and no behaviour an environment variable could trigger.
//
// With the tag, USERNS_SHIM_FAILPOINT=NAME kills the process at the first
// Hit(NAME), and NAME:N at the N-th (a step that repeats, such as one
// staging mount per volume).
package failpoint

// Env is the variable a failpoints build reads.
const Env = "USERNS_SHIM_FAILPOINT"

// The steps of a create, in order.
const (
	Pinned       = "pinned"        // the pod's user namespace pinned, registry not yet written
	Allocated    = "allocated"     // the pod registry written: range taken, container listed
	StagingMount = "staging-mount" // one volume's ID-mapped staging mount attached
	RootfsStaged = "rootfs-staged" // the rootfs prepared (its staging mount, for a directory)
	RecordSaved  = "record-saved"  // the container's record written
	ConfigSaved  = "config-saved"  // config.json rewritten
	// TempWritten + "/" + a file's name: the temporary file of an atomic
	// write of that file (pods.json, a record, config.json) complete, not
	// yet renamed over it.
	TempWritten = "temp-written"

	// The steps of the shim's cleanup of a container (delete, gc, a failed
	// create).
	Forget  = "forget"   // not begun: after the runtime's delete, for a delete
	LeftPod = "left-pod" // out of its pod (the pod's pin and range gone with its last container), record still there
)
