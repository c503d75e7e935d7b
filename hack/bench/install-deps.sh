#!/bin/sh
# Installs what `make bench` needs on a Debian machine, only when missing:
# what make test and make e2e install (runtimes, busybox, podman, conmon,
# skopeo, umoci, CNI plugins, build tools for CRI-O) and GNU time (the memory
# part reads a create's peak RSS from it). crictl, containerd 2.4 and CRI-O
# 1.34 are built by hack/e2e/tools.sh when the cri part first runs. Run as
# root.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
"$here/../e2e/install-deps.sh"
"$here/../e2e/install-deps-clients.sh"
if [ ! -x /usr/bin/time ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "missing: time; run as root or install it: apt-get install time" >&2
		exit 1
	fi
	echo "installing: time"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q time >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q time >/dev/null; }
fi
