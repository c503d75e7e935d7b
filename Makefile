# userns-shim. As root on a fresh Debian machine:
#   make demo   build, then run a container through the shim with a mapping
#   make test   unit tests, then the root integration tests on real runtimes
#   make bench  benchmarks against the bare runtime (not part of make test)
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
PKG := github.com/userns-shim/userns-shim
VERSION ?= $(shell git describe --tags 2>/dev/null || echo 0.1.0-dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X $(PKG)/pkg/shim.Version=$(VERSION) -X $(PKG)/pkg/shim.Commit=$(COMMIT)
BIN := bin/userns-shim

.PHONY: all build deps demo test unit integration e2e e2e-deps soak bench fuzz clean install image

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/userns-shim

deps:
	@hack/install-deps.sh

demo: deps build
	hack/demo.sh $(BIN)

test: deps unit integration e2e soak

# The failpoints build (for the kill-point tests only) is vetted and tested too.
unit:
	$(GO) vet ./...
	$(GO) test -count=1 ./pkg/... ./cmd/...
	$(GO) vet -tags failpoints ./pkg/failpoint/ ./pkg/shim/
	$(GO) test -count=1 -tags failpoints ./pkg/failpoint/

# Root-only: real runc and crun, real user namespaces. Skips with a reason
# when not root.
integration: build
	$(GO) test -count=1 -timeout 60m -v ./integration/

# Root-only: 1000 create/start/delete cycles of a pod per runtime through
# the shim (SOAK_CYCLES=N for another count), failing on growth of mounts,
# fds, processes, state files or ranges; about 15 minutes here. The
# integration target skips it.
SOAK_CYCLES ?= 1000
soak: build
	USERNS_SHIM_SOAK=1 USERNS_SHIM_SOAK_CYCLES=$(SOAK_CYCLES) $(GO) test -count=1 -timeout 60m -v -run '^TestSoak$$' ./integration/

e2e-deps:
	@hack/e2e/install-deps.sh
	@hack/e2e/install-deps-clients.sh

# Root-only: real clients (podman/conmon, containerd 1.6 with crictl) with
# the shim as their runtime; images built offline by hack/e2e/images.sh into
# .cache/e2e-images; crictl and the other Go tools built once by
# hack/e2e/tools.sh into /var/cache/userns-shim-e2e (about 5 minutes cold).
e2e: e2e-deps build
	$(GO) test -count=1 -v -timeout 30m ./e2e/

# Root-only, not part of make test: every part of hack/bench (about 10
# minutes here, plus about 5 the first time on a machine for hack/e2e/tools.sh),
# then docs/benchmarks.md and the docs/bench-*.{svg,png,csv} it writes.
# BENCH_FLAGS="-parts cycle,stub -n 10" runs less.
bench:
	@hack/bench/install-deps.sh
	$(GO) run ./hack/bench -o docs/benchmarks.md $(BENCH_FLAGS)

# Each fuzz target (package:Target) in turn, FUZZTIME each, one worker: the
# inputs it finds stay in the Go build cache; make unit runs the seeds kept
# in each package's testdata/fuzz.
FUZZTIME ?= 60s
FUZZ_TARGETS := runcargs:FuzzParse mapping:FuzzParseRanges mapping:FuzzFromAnnotations spec:FuzzEncode shim:FuzzRewrite

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) -parallel 1 ./pkg/$${t%%:*}/; \
	done

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)/usr/local/bin/userns-shim
	install -D -m 0644 deploy/config.toml.example $(DESTDIR)/etc/userns-shim/config.toml.example

clean:
	rm -rf bin .cache

image: build
	cp "$$(command -v busybox)" bin/busybox
	podman build --pull=never -t userns-shim:$(VERSION) .
