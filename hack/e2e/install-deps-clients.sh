#!/bin/sh
# Installs the Debian packages the CRI client tests (containerd 1.6 and 2.4,
# CRI-O 1.34, crictl, critest) need, only when missing. Run as root.
#
#   containerd                   containerd 1.6.20 (Debian), the 1.6 stack
#   runc, crun                   the runtimes behind the handlers
#   conmon                       CRI-O's monitor
#   containernetworking-plugins  bridge, host-local, loopback in /usr/lib/cni
#   gcc, make, pkg-config, libseccomp-dev
#                                building CRI-O (seccomp tag) and pinns
#                                (hack/e2e/tools.sh)
# Not needed: iptables (the bridge conflist has no ipMasq and no portmap),
# socat (containerd 2.x and CRI-O forward ports in Go; the tests do not
# port-forward). The Go tools themselves come from hack/e2e/tools.sh; podman,
# skopeo and umoci from hack/e2e/install-deps.sh.
set -eu

need=""
have() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

# containerd 1.6 from Debian: probe the package, not the command, because
# hack/e2e/tools.sh's containerd 2.4 may be first in PATH.
have_pkg containerd || [ -x /usr/bin/containerd ] || need="$need containerd"
have runc || [ -x /usr/sbin/runc ] || need="$need runc"
have crun || need="$need crun"
have conmon || [ -x /usr/bin/conmon ] || [ -x /usr/libexec/podman/conmon ] || need="$need conmon"
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] ||
	need="$need containernetworking-plugins"
have gcc || need="$need gcc"
have ip || [ -x /usr/sbin/ip ] || need="$need iproute2"  # lib.sh removes test bridges
have make || need="$need make"
have pkg-config || need="$need pkg-config"
{ have pkg-config && pkg-config --exists libseccomp; } || have_pkg libseccomp-dev || need="$need libseccomp-dev"

if [ -z "$need" ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "missing:$need; run as root or install them: apt-get install$need" >&2
	exit 1
fi
echo "installing:$need" >&2
export DEBIAN_FRONTEND=noninteractive
# There is no systemd here: the containerd package's service is not started.
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $need >/dev/null ||
	{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $need >/dev/null; }
