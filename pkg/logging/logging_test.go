package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/userns-shim/userns-shim/pkg/runcargs"
)

func TestFailWritesStderrLineAndJSONLogLine(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "log.json")
	var stderr bytes.Buffer
	l := Open(runcargs.Global{Log: logPath, LogFormat: "json"}, &stderr)
	l.Fail(errors.New("first problem\nsecond problem"))
	l.Close()

	assert.Equal(t, "userns-shim: first problem; second problem\n", stderr.String(), "exactly one line")
	data, err := os.ReadFile(logPath)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	require.Len(t, lines, 1)
	var entry map[string]string
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &entry))
	assert.Equal(t, "error", entry["level"])
	assert.Equal(t, "userns-shim: first problem; second problem", entry["msg"])
	assert.NotEmpty(t, entry["time"])
}

func TestDebugOnlyWithDebugFlag(t *testing.T) {
	dir := t.TempDir()
	for _, debug := range []bool{false, true} {
		p := filepath.Join(dir, "log")
		os.Remove(p)
		l := Open(runcargs.Global{Log: p, LogFormat: "json", Debug: debug}, &bytes.Buffer{})
		l.Debug("decision")
		l.Close()
		data, _ := os.ReadFile(p)
		assert.Equal(t, debug, strings.Contains(string(data), `"msg":"decision"`), "debug=%v", debug)
	}
}

func TestUnopenableLogFileIsReported(t *testing.T) {
	var stderr bytes.Buffer
	l := Open(runcargs.Global{Log: "/nonexistent-dir/log.json"}, &stderr)
	l.Fail(errors.New("boom"))
	assert.Contains(t, stderr.String(), "open log file")
	assert.Contains(t, stderr.String(), "userns-shim: boom")
}
