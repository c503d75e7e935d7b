package runcargs

import (
	"strings"
	"testing"
)

func BenchmarkParseCreate(b *testing.B) {
	args := strings.Fields("--root /run/containerd/runc/k8s.io --log /b/log.json --log-format json create --bundle /b --pid-file /b/init.pid 0123456789abcdef")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(args); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParsePassthrough(b *testing.B) {
	args := strings.Fields("--root=/run/runc exec --pid-file /p --process /f --detach 0123456789abcdef")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(args); err != nil {
			b.Fatal(err)
		}
	}
}
