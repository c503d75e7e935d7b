#!/bin/sh
# Builds the end-to-end test images offline (no registry is reachable here),
# once per CACHE_DIR: a rebuild happens only when this script, busybox, the
# pause program's source or the tools change.
#
#   hack/e2e/images.sh [CACHE_DIR]     (default: <repo>/.cache/e2e-images)
#
# Images:
#   localhost/userns-shim/busybox:e2e  Debian's busybox-static with every applet
#       linked in /bin, /proc /sys /dev /tmp /root, /etc/{hosts,hostname,
#       resolv.conf,passwd,group,mtab}, and /home/user/file owned by 1000:1000
#       (on-disk owners other than root, to check ID-mapped rootfs layers).
#       Default command: sh.
#   localhost/userns-shim/pause:e2e    /pause, a static C program that sleeps
#       until SIGTERM or SIGINT (and reaps children, like the real pause).
#
# Outputs in CACHE_DIR, printed as shell assignments on stdout (the only
# thing this script prints there; progress goes to stderr):
#   BUSYBOX_IMAGE=localhost/userns-shim/busybox:e2e
#   BUSYBOX_OCI=CACHE_DIR/busybox/oci:e2e        umoci OCI layout (oci:... for skopeo)
#   BUSYBOX_ARCHIVE=CACHE_DIR/busybox.tar        docker-archive, named BUSYBOX_IMAGE
#   BUSYBOX_ROOTFS=CACHE_DIR/busybox/rootfs      the same tree unpacked (plain OCI bundles)
#   PAUSE_IMAGE / PAUSE_OCI / PAUSE_ARCHIVE / PAUSE_ROOTFS  likewise
#
# Load them with, for example:
#   skopeo copy docker-archive:$BUSYBOX_ARCHIVE "containers-storage:[overlay@ROOT+RUNROOT]$BUSYBOX_IMAGE"
#   podman --root ROOT --runroot RUNROOT load -i $BUSYBOX_ARCHIVE
#   ctr -n k8s.io images import $BUSYBOX_ARCHIVE
# Needs root (file owners in the layers), umoci, skopeo, gcc with a static
# libc (hack/e2e/install-deps.sh installs them).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${1:-$repo/.cache/e2e-images}
TAG=e2e
BUSYBOX_IMAGE=localhost/userns-shim/busybox:$TAG
PAUSE_IMAGE=localhost/userns-shim/pause:$TAG

log() { echo "images.sh: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root: the image layers keep file owners (0 and 1000)"
for t in umoci skopeo gcc; do
	command -v "$t" >/dev/null 2>&1 || die "$t is missing: run hack/e2e/install-deps.sh"
done
bb=$(command -v busybox 2>/dev/null || true)
[ -n "$bb" ] || die "busybox is missing: apt-get install busybox-static"
# The image needs a static busybox: a dynamic one would need the host's libc.
if command -v file >/dev/null 2>&1; then
	file -L "$bb" | grep -q 'statically linked' || die "$bb is not statically linked: apt-get install busybox-static"
fi

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# Several test packages may call this at once: one builder at a time.
exec 9>"$cache/.lock"
flock 9

# The pause program. It is pid 1 of its container: it reaps children so that
# nothing it inherits stays a zombie, and exits 0 on SIGTERM/SIGINT.
pause_c='#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
	struct sigaction sa = {0};
	sa.sa_handler = quit;
	if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0) return 1;
	sa.sa_handler = reap;
	sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
	if (sigaction(SIGCHLD, &sa, NULL) < 0) return 1;
	for (;;) pause();
	return 42;
}
'

# Everything the outputs depend on: rebuild when any of it changes.
stamp=$( {
	cat "$0"
	sha256sum "$bb"
	umoci --version
	skopeo --version
	gcc --version | head -1
} | sha256sum | cut -d' ' -f1)

outputs() {
	cat <<EOF
BUSYBOX_IMAGE=$BUSYBOX_IMAGE
BUSYBOX_OCI=$cache/busybox/oci:$TAG
BUSYBOX_ARCHIVE=$cache/busybox.tar
BUSYBOX_ROOTFS=$cache/busybox/rootfs
PAUSE_IMAGE=$PAUSE_IMAGE
PAUSE_OCI=$cache/pause/oci:$TAG
PAUSE_ARCHIVE=$cache/pause.tar
PAUSE_ROOTFS=$cache/pause/rootfs
EOF
}

complete() {
	[ "$(cat "$cache/stamp" 2>/dev/null)" = "$stamp" ] || return 1
	for f in busybox.tar pause.tar busybox/oci/index.json pause/oci/index.json busybox/rootfs/bin/busybox pause/rootfs/pause; do
		[ -e "$cache/$f" ] || return 1
	done
}

if complete; then
	log "up to date in $cache"
	outputs
	exit 0
fi

log "building in $cache"
rm -f "$cache/stamp"
work=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- busybox rootfs
r=$work/busybox/rootfs
mkdir -p "$r/bin" "$r/sbin" "$r/usr/bin" "$r/usr/sbin" "$r/etc" "$r/proc" "$r/sys" "$r/dev" \
	"$r/tmp" "$r/root" "$r/home/user" "$r/var/tmp" "$r/run"
cp "$bb" "$r/bin/busybox"
chmod 0755 "$r/bin/busybox"
for a in $("$bb" --list); do
	[ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"
done
for a in sh id ls cat sleep touch stat mkdir; do
	[ -L "$r/bin/$a" ] || die "busybox has no applet $a"
done
chmod 1777 "$r/tmp" "$r/var/tmp"
chmod 0700 "$r/root"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$r/etc/hosts"
echo e2e >"$r/etc/hostname"
: >"$r/etc/resolv.conf"
# As in Debian's and Alpine's images. Without it podman creates the symlink
# in the container's upper layer before create, as host root.
ln -s /proc/mounts "$r/etc/mtab"
cat >"$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$r/etc/group" <<'EOF'
root:x:0:
user:x:1000:
nogroup:x:65534:
EOF
echo "owned by 1000 on disk" >"$r/home/user/file"
chown -R 1000:1000 "$r/home/user"

# --- pause rootfs
p=$work/pause/rootfs
mkdir -p "$p/proc" "$p/sys" "$p/dev" "$p/etc"
printf '%s' "$pause_c" >"$work/pause.c"
gcc -static -Os -s -o "$p/pause" "$work/pause.c"
: >"$p/etc/hosts"
: >"$p/etc/hostname"
: >"$p/etc/resolv.conf"
# A pause container runs as 65535 in Kubernetes.
printf 'root:x:0:0:root:/:/pause\nnobody:x:65534:65534:nobody:/:/pause\n' >"$p/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$p/etc/group"

# --- OCI layouts (umoci) and docker-archives (skopeo)
# image NAME ROOTFS IMAGE_REF CONFIG_ARGS...
image() {
	name=$1 rootfs=$2 ref=$3
	shift 3
	layout=$work/$name/oci
	umoci init --layout "$layout"
	umoci new --image "$layout:$TAG"
	umoci insert --image "$layout:$TAG" "$rootfs" /
	umoci config --image "$layout:$TAG" --author userns-shim-e2e \
		--config.env PATH=/bin:/sbin:/usr/bin:/usr/sbin --config.workingdir / "$@"
	umoci gc --layout "$layout"
	rm -f "$work/$name.tar"
	skopeo copy --quiet "oci:$layout:$TAG" "docker-archive:$work/$name.tar:$ref" >&2
}
image busybox "$r" "$BUSYBOX_IMAGE" --config.cmd sh
image pause "$p" "$PAUSE_IMAGE" --config.entrypoint /pause

# Check what was built: owners kept in the layer, the archive names the image.
check=$work/check
umoci unpack --image "$work/busybox/oci:$TAG" "$check" >/dev/null
[ "$(stat -c %u:%g "$check/rootfs/home/user/file")" = 1000:1000 ] || die "busybox layer lost the owner of /home/user/file"
[ "$(stat -c %u "$check/rootfs/bin/busybox")" = 0 ] || die "busybox layer lost the owner of /bin/busybox"
rm -rf "$check"
skopeo inspect "docker-archive:$work/busybox.tar" >/dev/null || die "busybox.tar is not a docker-archive"

# Replace the previous outputs.
for n in busybox pause; do
	rm -rf "$cache/$n" "$cache/$n.tar"
	mv "$work/$n" "$cache/$n"
	mv "$work/$n.tar" "$cache/$n.tar"
done
echo "$stamp" >"$cache/stamp"
log "built $BUSYBOX_IMAGE and $PAUSE_IMAGE"
outputs
