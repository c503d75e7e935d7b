//go:build !failpoints

package failpoint

import (
	"testing"
)

// TestHitIsInert: without the tag no environment makes Hit do anything;
// the test would die by SIGKILL if it did.
func TestHitIsInert(t *testing.T) {
	for _, v := range []string{Pinned, Allocated + ":1", StagingMount + ":2"} {
		t.Setenv(Env, v)
		Hit(Pinned)
		Hit(Allocated)
		Hit(StagingMount)
		Hit(StagingMount)
	}
}
