#!/bin/sh
# Installs what the end-to-end tests (make e2e) need on a Debian machine, only
# when missing: everything hack/install-deps.sh installs, plus the image tools
# (umoci, skopeo, gcc for the static pause program) and podman with conmon and
# the CNI plugins. Run as root.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
"$here/../install-deps.sh"

need=""
have() { command -v "$1" >/dev/null 2>&1; }
have umoci || need="$need umoci"
have skopeo || need="$need skopeo"
have gcc || need="$need gcc"
# gcc -static needs the static C library (libc6-dev ships libc.a).
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -n "$(find /usr/lib -maxdepth 3 -name libc.a 2>/dev/null | head -1)" ] || need="$need libc6-dev"
have podman || need="$need podman"
have conmon || [ -x /usr/libexec/podman/conmon ] || [ -x /usr/bin/conmon ] || need="$need conmon"
[ -x /usr/lib/cni/bridge ] || [ -x /usr/libexec/cni/bridge ] || need="$need containernetworking-plugins"
if [ -n "$need" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "missing:$need; run as root or install them: apt-get install$need" >&2
		exit 1
	fi
	echo "installing:$need"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q --no-install-recommends $need >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $need >/dev/null; }
fi
