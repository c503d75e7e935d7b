//go:build failpoints

package failpoint

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestHitKills runs this test binary again with the variable set, and
// checks that the child dies by SIGKILL at the named hit and not before.
func TestHitKills(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") != "" {
		Hit(StagingMount) // 1st
		os.Stdout.WriteString("passed first\n")
		Hit(StagingMount) // 2nd: killed here with :2
		os.Stdout.WriteString("passed second\n")
		return
	}
	for _, c := range []struct {
		env, want string
		killed    bool
	}{
		{StagingMount + ":2", "passed first\n", true},
		{StagingMount, "", true},
		{StagingMount + ":3", "passed first\npassed second\n", false},
		{Pinned, "passed first\npassed second\n", false},
	} {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestHitKills$")
		cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", Env+"="+c.env)
		out, err := cmd.Output()
		var ee *exec.ExitError
		killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
		if killed != c.killed {
			t.Errorf("%s: killed %v (err %v), want %v", c.env, killed, err, c.killed)
		}
		if got := string(out); !c.killed && !strings.HasPrefix(got, c.want) || c.killed && got != c.want {
			t.Errorf("%s: output %q, want %q", c.env, got, c.want)
		}
	}
}
