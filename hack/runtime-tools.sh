#!/bin/sh
# Installs the OCI runtime-tools validation suite (opencontainers/runtime-tools)
# at a pinned pseudo-version and prints the directory holding the built
# programs.
#
# Usage: hack/runtime-tools.sh [CACHE_DIR]
#   CACHE_DIR defaults to $XDG_CACHE_HOME/userns-shim/runtime-tools when
#   XDG_CACHE_HOME is set, else <repo>/.cache/runtime-tools (gitignored).
#
# The source and its dependencies come from the Go module proxy (go mod
# download), never from a git clone (module zips carry no vendor tree, only
# vendor/modules.txt, so the dependencies are downloaded too, checked against
# the module's go.sum). The source is copied into CACHE_DIR (the module cache
# is read-only) and built there with CGO_ENABLED=0: no Debian package is needed
# beyond Go itself. The programs use
# tar, sh and unshare at run time (tar, dash and util-linux, all essential).
#
# The printed directory holds:
#   runtimetest            static binary the programs copy into each bundle
#   rootfs-<arch>.tar.gz   the rootfs the programs unpack into each bundle
#   <name>.t               one validation program per validation/<name>/<name>.go
# The programs find runtimetest and the rootfs in their working directory, so
# run them from the printed directory; they take the runtime from $RUNTIME.
#
# Idempotent: a stamp file records a finished build of this version; a second
# run only prints the directory.
#
# Exit codes: 0 ok (directory on stdout), 3 the module could not be downloaded
# (no network and not in the module cache), 1 anything else.
set -eu

MODULE=github.com/opencontainers/runtime-tools
# v0.9.0 does not build; newer versions emit ociVersion 1.3.0, which crun 1.8.1 rejects.
VERSION=v0.9.1-0.20250523060157-0ea5ed0382a2

repo=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -ge 1 ] && [ -n "$1" ]; then
	cache=$1
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
	cache=$XDG_CACHE_HOME/userns-shim/runtime-tools
else
	cache=$repo/.cache/runtime-tools
fi
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

top=$cache/$VERSION
bin=$top/bin
stamp=$bin/.built

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$MODULE@$VERSION" ]; then
	echo "$bin"
	exit 0
fi

command -v go >/dev/null 2>&1 || { echo "runtime-tools.sh: go is not installed" >&2; exit 1; }

log() { echo "runtime-tools.sh: $*" >&2; }

# Fetch (or find in the module cache) the module source. Run outside any main
# module (the cache dir may sit inside this repo) so no go.mod is touched.
export GOTOOLCHAIN=local GOWORK=off GOFLAGS=-buildvcs=false
json=$(cd / && GO111MODULE=on go mod download -json "$MODULE@$VERSION" 2>&1) || {
	log "cannot download $MODULE@$VERSION from the Go module proxy (no network?):"
	echo "$json" >&2
	exit 3
}
srcdir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
if [ -z "$srcdir" ] || [ ! -d "$srcdir" ]; then
	log "go mod download gave no source dir:"
	echo "$json" >&2
	# An error object without Dir is a download failure.
	if printf '%s\n' "$json" | grep -q '"Error"'; then exit 3; fi
	exit 1
fi

# Writable copy of the source (the module cache is read-only).
src=$top/src
rm -rf "$src" "$bin"
mkdir -p "$top"
cp -R "$srcdir" "$src.tmp"
chmod -R u+w "$src.tmp"
# Module zips hold only vendor/modules.txt: build in module mode instead.
rm -rf "$src.tmp/vendor"
mv "$src.tmp" "$src"
mkdir -p "$bin"

cd "$src"
export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
# Dependencies, verified against the module's go.sum.
go mod download >&2 || {
	log "cannot download the dependencies of $MODULE@$VERSION from the Go module proxy (no network?)"
	exit 3
}
ldflags="-X main.gitCommit=$VERSION -X main.version=$(cat VERSION)"

log "building runtimetest"
go build -tags "netgo osusergo" -ldflags "$ldflags" -o "$bin/runtimetest" ./cmd/runtimetest

n=0
for f in $(find ./validation -name '*.go' | grep -v util | sort); do
	name=$(basename "$f" .go)
	go build -ldflags "$ldflags" -o "$bin/$name.t" "$f"
	n=$((n + 1))
done
log "built $n validation programs"

cp rootfs-*.tar.gz "$bin/"
echo "$MODULE@$VERSION" >"$stamp"
echo "$bin"
