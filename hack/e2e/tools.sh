#!/bin/sh
# shellcheck disable=SC2034,SC2154 # want_*/bins_* are read through eval in fresh()
# Builds the CRI clients the end-to-end tests use, from the Go module proxy, once
# per machine, and prints where they are.
#
# Usage: hack/e2e/tools.sh [CACHE_DIR]
#   CACHE_DIR: $1, else $E2E_CACHE, else /var/cache/userns-shim-e2e (outside the
#   repo on purpose: CI runs in a fresh clone on the same machine, so a cache
#   there survives between runs).
#
# Builds into CACHE_DIR/bin:
#   crictl                    sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0 (go install)
#   critest                   go test -c ./cmd/critest inside cri-tools v1.37.0
#   containerd, containerd-shim-runc-v2, ctr
#                             github.com/containerd/containerd/v2/cmd/...@v2.4.2 (go install)
#   crio                      ./cmd/crio of github.com/cri-o/cri-o@v1.34.0 (go mod download:
#                             the proxy refuses the version list, so no go install)
#   pinns                     make -C pinns of the same CRI-O module
#
# Prints NAME=PATH lines on stdout (eval "$(hack/e2e/tools.sh)" sets them):
#   E2E_BIN CRICTL CRITEST CONTAINERD CONTAINERD_SHIM CTR CRIO PINNS
# Everything else (progress, build times) goes to stderr; build times are also
# appended to CACHE_DIR/build.log.
#
# Idempotent: CACHE_DIR/stamps/<tool> records what was built (module, version,
# flags). A rerun with every stamp matching only prints the paths (no go, no
# network). Delete a stamp (or the whole CACHE_DIR) to force a rebuild. Concurrent
# runs serialise on CACHE_DIR/.lock.
#
# Needs Go (PATH or /usr/local/go/bin). CRI-O needs gcc, make, pkg-config and
# libseccomp-dev; they are installed with apt-get when missing (root).
#
# Exit codes: 0 ok, 3 go mod download failed for cri-tools or CRI-O (no network
# and not in the module cache), 1 anything else (a go install that cannot
# download also ends here).
set -eu

CRITOOLS_MOD=sigs.k8s.io/cri-tools
CRITOOLS_VER=v1.37.0
CONTAINERD_MOD=github.com/containerd/containerd/v2
CONTAINERD_VER=v2.4.2
CRIO_MOD=github.com/cri-o/cri-o
CRIO_VER=v1.34.0
CRIO_TAGS="containers_image_openpgp containers_image_ostree_stub exclude_graphdriver_btrfs exclude_graphdriver_devicemapper seccomp"

cache=${1:-${E2E_CACHE:-/var/cache/userns-shim-e2e}}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
bin=$cache/bin
stamps=$cache/stamps

# What each stamp must say. Change a line here and that tool is rebuilt.
want_crictl="$CRITOOLS_MOD/cmd/crictl@$CRITOOLS_VER"
want_critest="$CRITOOLS_MOD/cmd/critest@$CRITOOLS_VER test-c"
want_containerd="$CONTAINERD_MOD/cmd/{containerd,containerd-shim-runc-v2,ctr}@$CONTAINERD_VER"
want_crio="$CRIO_MOD/cmd/crio@$CRIO_VER tags=$CRIO_TAGS"
want_pinns="$CRIO_MOD/pinns@$CRIO_VER"

bins_crictl="crictl"
bins_critest="critest"
bins_containerd="containerd containerd-shim-runc-v2 ctr"
bins_crio="crio"
bins_pinns="pinns"

TOOLS="crictl critest containerd crio pinns"

fresh() { # tool: stamp matches and its binaries are there
	eval "w=\$want_$1 b=\$bins_$1"
	[ -f "$stamps/$1" ] && [ "$(cat "$stamps/$1")" = "$w" ] || return 1
	for x in $b; do [ -x "$bin/$x" ] || return 1; done
}

print_paths() {
	echo "E2E_BIN=$bin"
	echo "CRICTL=$bin/crictl"
	echo "CRITEST=$bin/critest"
	echo "CONTAINERD=$bin/containerd"
	echo "CONTAINERD_SHIM=$bin/containerd-shim-runc-v2"
	echo "CTR=$bin/ctr"
	echo "CRIO=$bin/crio"
	echo "PINNS=$bin/pinns"
}

all_fresh() {
	for t in $TOOLS; do fresh "$t" || return 1; done
}

# Fast path: nothing to do, nothing started.
if all_fresh; then
	print_paths
	exit 0
fi

log() { echo "tools.sh: $*" >&2; }
die() { log "$*"; exit 1; }

mkdir -p "$bin" "$stamps"
exec 9>"$cache/.lock"
flock 9
# Another run may have built everything while we waited.
if all_fresh; then
	print_paths
	exit 0
fi

export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null 2>&1 || die "go is not installed (expected /usr/local/go/bin/go)"
# Never fetch a toolchain, never use a workspace, ignore the caller's GOFLAGS.
export GOTOOLCHAIN=local GOWORK=off GO111MODULE=on GOFLAGS=-buildvcs=false
unset GOBIN GOOS GOARCH

now() { date +%s; }
timed() { # tool: record how long the build of TOOL took
	t_end=$(now)
	msg="$1 built in $((t_end - t_start)) s ($(go env GOVERSION), $(date -u +%Y-%m-%dT%H:%M:%SZ))"
	log "$msg"
	echo "$msg" >>"$cache/build.log"
}
stamp() { eval "w=\$want_$1"; printf '%s\n' "$w" >"$stamps/$1"; }

# download MODULE@VERSION: prints the module's (read-only) source directory.
download() {
	json=$(cd / && go mod download -json "$1" 2>&1) || {
		log "cannot download $1 from the Go module proxy (no network?):"
		echo "$json" >&2
		exit 3
	}
	dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
	[ -n "$dir" ] && [ -d "$dir" ] || { echo "$json" >&2; die "go mod download $1 gave no source dir"; }
	echo "$dir"
}

# writable_src MODULE@VERSION NAME: a writable copy of the module source under
# CACHE_DIR/src/NAME, without its vendor tree (module zips keep only
# vendor/modules.txt, so build in module mode). Prints the directory.
writable_src() {
	d=$(download "$1")
	s=$cache/src/$2
	if [ ! -f "$s/.copied" ] || [ "$(cat "$s/.copied")" != "$1" ]; then
		rm -rf "$s" "$s.tmp"
		mkdir -p "$cache/src"
		cp -R "$d" "$s.tmp"
		chmod -R u+w "$s.tmp"
		rm -rf "$s.tmp/vendor"
		echo "$1" >"$s.tmp/.copied"
		mv "$s.tmp" "$s"
	fi
	echo "$s"
}

# go_install TOOL LDFLAGS PKG@VERSION...: go install into a scratch GOBIN, then
# move the binaries into bin (a half-built tool never looks built).
go_install() {
	tool=$1 ldf=$2
	shift 2
	gobin=$cache/tmp-$tool
	rm -rf "$gobin"
	mkdir -p "$gobin"
	(cd / && GOBIN=$gobin go install -trimpath -ldflags "$ldf" "$@") || {
		rm -rf "$gobin"
		die "go install $* failed (see above; no network and an empty module cache fails here too)"
	}
	for x in "$gobin"/*; do mv -f "$x" "$bin/"; done
	rmdir "$gobin"
}

apt_need() { # install Debian packages whose probe fails
	need=""
	command -v gcc >/dev/null 2>&1 || need="$need gcc"
	command -v make >/dev/null 2>&1 || need="$need make"
	command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
	pkg-config --exists libseccomp 2>/dev/null || need="$need libseccomp-dev"
	[ -z "$need" ] && return 0
	[ "$(id -u)" = 0 ] || die "missing:$need; run as root or: apt-get install$need"
	log "installing:$need"
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086
	apt-get install -y -q $need >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $need >/dev/null; } ||
		die "apt-get install$need failed"
}

if ! fresh crictl; then
	log "building crictl $CRITOOLS_VER"
	t_start=$(now)
	go_install crictl "-X $CRITOOLS_MOD/pkg/version.Version=${CRITOOLS_VER#v}" "$CRITOOLS_MOD/cmd/crictl@$CRITOOLS_VER"
	stamp crictl
	timed crictl
fi

if ! fresh critest; then
	log "building critest $CRITOOLS_VER"
	t_start=$(now)
	src=$(writable_src "$CRITOOLS_MOD@$CRITOOLS_VER" cri-tools-$CRITOOLS_VER)
	(cd "$src" && go mod download >&2) || { log "cannot download the dependencies of cri-tools"; exit 3; }
	(cd "$src" && GOFLAGS="-mod=mod -buildvcs=false" go test -c -trimpath \
		-ldflags "-X $CRITOOLS_MOD/pkg/version.Version=${CRITOOLS_VER#v}" \
		-o "$bin/critest.tmp" ./cmd/critest) || die "go test -c ./cmd/critest failed"
	mv -f "$bin/critest.tmp" "$bin/critest"
	stamp critest
	timed critest
fi

if ! fresh containerd; then
	log "building containerd $CONTAINERD_VER"
	t_start=$(now)
	go_install containerd \
		"-X $CONTAINERD_MOD/version.Version=$CONTAINERD_VER -X $CONTAINERD_MOD/version.Revision=go-module-proxy" \
		"$CONTAINERD_MOD/cmd/containerd@$CONTAINERD_VER" \
		"$CONTAINERD_MOD/cmd/containerd-shim-runc-v2@$CONTAINERD_VER" \
		"$CONTAINERD_MOD/cmd/ctr@$CONTAINERD_VER"
	stamp containerd
	timed containerd
fi

if ! fresh crio || ! fresh pinns; then
	apt_need
	src=$(writable_src "$CRIO_MOD@$CRIO_VER" cri-o-$CRIO_VER)
	if ! fresh crio; then
		log "building crio $CRIO_VER"
		t_start=$(now)
		(cd "$src" && go mod download >&2) || { log "cannot download the dependencies of cri-o"; exit 3; }
		(cd "$src" && CGO_ENABLED=1 GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath \
			-tags "$CRIO_TAGS" \
			-o "$bin/crio.tmp" ./cmd/crio) || die "building ./cmd/crio failed"
		mv -f "$bin/crio.tmp" "$bin/crio"
		stamp crio
		timed crio
	fi
	if ! fresh pinns; then
		log "building pinns $CRIO_VER"
		t_start=$(now)
		make -C "$src/pinns" >&2 || die "make -C pinns failed"
		cp -f "$src/pinns/pinns" "$bin/pinns.tmp" 2>/dev/null || cp -f "$src/bin/pinns" "$bin/pinns.tmp" ||
			die "make -C pinns made no pinns binary"
		mv -f "$bin/pinns.tmp" "$bin/pinns"
		stamp pinns
		timed pinns
	fi
fi

all_fresh || die "some tool is still missing after the build"
print_paths
