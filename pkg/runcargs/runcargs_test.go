package runcargs

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		argv string
		want Invocation // Args is filled in from argv
	}{
		{"bare version", "--version", Invocation{Global: Global{Version: true}}},
		{"short version", "-v", Invocation{Global: Global{Version: true}}},
		{"help", "--help", Invocation{Global: Global{Help: true}}},
		{"empty", "", Invocation{}},
		{
			"containerd runc shim", "--root /run/containerd/runc/k8s.io --log /b/log.json --log-format json create --bundle /b --pid-file /b/init.pid abc",
			Invocation{Global: Global{Root: "/run/containerd/runc/k8s.io", Log: "/b/log.json", LogFormat: "json"},
				Command: "create", ContainerID: "abc", Bundle: "/b", PidFile: "/b/init.pid"},
		},
		{
			"conmon (CRI-O) equals form", "--root=/run/runc create --bundle /b --pid-file /p/pid abc",
			Invocation{Global: Global{Root: "/run/runc"}, Command: "create", ContainerID: "abc", Bundle: "/b", PidFile: "/p/pid"},
		},
		{
			"podman with console socket", "--log-format=json --log /l create --bundle /b --pid-file /p --console-socket /s abc",
			Invocation{Global: Global{Log: "/l", LogFormat: "json"}, Command: "create", ContainerID: "abc", Bundle: "/b", PidFile: "/p", ConsoleSocket: "/s"},
		},
		{
			"bool globals", "--debug --systemd-cgroup --rootless false --criu /usr/sbin/criu create -b /b x",
			Invocation{Global: Global{Debug: true, SystemdCgroup: true}, Command: "create", ContainerID: "x", Bundle: "/b"},
		},
		{
			"bool global with value", "--debug=false --systemd-cgroup=true run x",
			Invocation{Global: Global{SystemdCgroup: true}, Command: "run", ContainerID: "x"},
		},
		{"bundle as the last token", "create x --bundle /b", Invocation{Command: "create", ContainerID: "x", Bundle: "/b"}},
		{"-b=x", "create -b=/b x", Invocation{Command: "create", ContainerID: "x", Bundle: "/b"}},
		{"crun -bPATH", "create -b/b x", Invocation{Command: "create", ContainerID: "x", Bundle: "/b"}},
		{"single dash long", "create -bundle /b x", Invocation{Command: "create", ContainerID: "x", Bundle: "/b"}},
		{"crun --config", "create --config other.json -f=/c.json x", Invocation{Command: "create", ContainerID: "x", ConfigFile: "/c.json"}},
		{"run detached", "run -d --keep --no-pivot --preserve-fds 2 x", Invocation{Command: "run", ContainerID: "x", Detach: true, Keep: true}},
		{"run detach=false", "run --detach=false x", Invocation{Command: "run", ContainerID: "x"}},
		{"new flag with equals", "create --future-flag=1 x", Invocation{Command: "create", ContainerID: "x"}},
		{"double dash before id", "create --bundle /b -- x", Invocation{Command: "create", ContainerID: "x", Bundle: "/b"}},
		{"create help", "create --help", Invocation{Global: Global{Help: true}, Command: "create"}},
		// Not create: a container named "create" being deleted.
		{"delete create", "delete create", Invocation{Command: "delete"}},
		{"delete --force", "--root /r delete --force abc", Invocation{Global: Global{Root: "/r"}, Command: "delete"}},
		{"exec", "exec --pid-file /p --process /f --detach abc", Invocation{Command: "exec"}},
		{"kill", "kill abc 15", Invocation{Command: "kill"}},
		{"start", "start abc", Invocation{Command: "start"}},
		{"state", "state abc", Invocation{Command: "state"}},
		{"features", "features", Invocation{Command: "features"}},
		{"ps", "ps --format json abc", Invocation{Command: "ps"}},
		{"update from stdin", "update --resources - abc", Invocation{Command: "update"}},
		{"shim verb", "shim inspect abc", Invocation{Command: "shim"}},
		{"unknown global before passthrough", "--cgroup-manager cgroupfs state abc", Invocation{Global: Global{}, Command: "state"}},
		{"value that looks like a command", "--root create delete x", Invocation{Global: Global{Root: "create"}, Command: "delete"}},
		{"log value that is run", "--log run create x", Invocation{Global: Global{Log: "run"}, Command: "create", ContainerID: "x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := strings.Fields(tc.argv)
			got, err := Parse(args)
			require.NoError(t, err)
			want := tc.want
			want.Args = args
			// CommandArgs is everything after the command token.
			if got.Command != "" {
				assert.Equal(t, args[len(args)-len(got.CommandArgs)-1], got.Command)
			}
			got.CommandArgs = nil
			assert.Equal(t, &want, got)
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		argv    string
		wantErr string
	}{
		{"create", "container id cannot be empty"},
		{"create --bundle /b", "container id cannot be empty"},
		{"run --bundle", "needs a value"},
		{"create --bundle /b a b", "expected one container id, got 2"},
		{"create ../x", "invalid container id"},
		{"create a/b", "invalid container id"},
		{"create ..", "invalid container id"},
		{"create .", "invalid container id"},
		{"--root", "needs a value"},
		{"create --mystery /b x", "unknown create flag"},
		{"--mystery value create x", "unknown global flag"},
	}
	for _, tc := range tests {
		t.Run(tc.argv, func(t *testing.T) {
			inv, err := Parse(strings.Fields(tc.argv))
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrUsage))
			assert.Contains(t, err.Error(), tc.wantErr)
			assert.NotNil(t, inv, "globals must survive an error so it can be logged")
		})
	}
}

func TestGlobalArgs(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--root", "/r", "--log=/l", "delete", "--force", "x"}, []string{"--root", "/r", "--log=/l"}},
		{[]string{"--version"}, []string{"--version"}},
		{[]string{"--root", "/r", "--", "state"}, []string{"--root", "/r", "--"}},
		// FuzzParse: an empty token as the command was taken for no command,
		// and the command and its arguments for global flags.
		{[]string{"", ""}, []string{}},
		{[]string{"--debug", "", "x"}, []string{"--debug"}},
		{[]string{"--debug", ""}, []string{"--debug"}},
	}
	for _, tc := range tests {
		inv, err := Parse(tc.args)
		require.NoError(t, err)
		assert.Equal(t, tc.want, inv.GlobalArgs(), "%q", tc.args)
	}
}

func TestParseKeepsGlobalsOnError(t *testing.T) {
	inv, err := Parse(strings.Fields("--log /l --log-format json create --bundle /b"))
	require.Error(t, err)
	assert.Equal(t, "/l", inv.Global.Log)
	assert.Equal(t, "json", inv.Global.LogFormat)
}

// FuzzParse: a command line splits into global flags, the command and its
// arguments exactly as received; the global flags keep their meaning when
// reused for another call; a create or run names a valid container ID; and
// no reading of an unknown global flag could make a create the command
// without the shim taking it as one or refusing it.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"create --bundle /b x", "delete create", "--root /r run -d x", "-b=x", "create x --bundle",
		"--root /run/runc --log /l --log-format json create --bundle /b --pid-file /p abc",
		"--unknown v create x", "--unknown=v create x", "create -h", "--help create x", "--debug -- create x", "create -b/b -f=c.json --keep x",
		"--root\x00\x00create\x00 x", // NUL-separated: empty and spaced tokens
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// NUL separates tokens when present, so that empty tokens and
		// tokens with spaces occur; else whitespace does.
		args := strings.Fields(s)
		if strings.Contains(s, "\x00") {
			args = strings.Split(s, "\x00")
		}
		inv, err := Parse(args)
		if inv == nil {
			t.Fatal("nil invocation")
		}
		if err != nil {
			if !errors.Is(err, ErrUsage) {
				t.Fatalf("error %v is not a usage error", err)
			}
			return
		}
		global := inv.GlobalArgs()
		joined := append(append(slices.Clone(global), inv.Command), inv.CommandArgs...)
		if inv.CommandArgs == nil {
			joined = global
		}
		if !slices.Equal(joined, args) || !slices.Equal(inv.Args, args) {
			t.Fatalf("%q split as %q + %q + %q", args, global, inv.Command, inv.CommandArgs)
		}
		// The shim reuses the global flags for "state ID": they must mean
		// the same there.
		again, err := Parse(append(slices.Clone(global), "state", "x"))
		want := inv.Global
		if inv.Rewrites() {
			want.Help = again.Global.Help // create -h sets it too
		}
		if err != nil || again.Command != "state" || again.Global != want {
			t.Fatalf("global flags %q do not carry over: %+v, %v", global, again, err)
		}
		if inv.Rewrites() && !inv.Global.Help {
			if ValidateContainerID(inv.ContainerID) != nil {
				t.Fatalf("create accepted with invalid id %q", inv.ContainerID)
			}
			if !slices.Contains(inv.CommandArgs, inv.ContainerID) {
				t.Fatalf("container id %q is not one of %q", inv.ContainerID, inv.CommandArgs)
			}
		}
		// A create token at the command position is never passed through.
		if len(args) > 0 && (args[0] == "create" || args[0] == "run") && !inv.Rewrites() {
			t.Fatalf("leading %q not parsed as the command", args[0])
		}
		// The runtime might read an unknown global flag as taking a value:
		// if a create or run is its command then, the shim must see one too.
		if cmd := commandIfUnknownTakeValues(args); (cmd == CmdCreate || cmd == CmdRun) && !inv.Rewrites() {
			t.Fatalf("%q: a runtime could run %q, the shim passes %q through", args, cmd, inv.Command)
		}
	})
}

// commandIfUnknownTakeValues returns the command of args when every unknown
// global flag takes the next token as its value.
func commandIfUnknownTakeValues(args []string) string {
	for i := 0; i < len(args); i++ {
		name, _, hasValue, isFlag := splitFlag(args[i])
		if args[i] == "--" {
			if i+1 < len(args) {
				return args[i+1]
			}
			return ""
		}
		if !isFlag {
			return args[i]
		}
		kind, known := globalFlags[name]
		if !hasValue && (!known || kind == valueFlag) {
			i++
		}
	}
	return ""
}
