#!/bin/sh
# Installs what `make demo` and `make test` need on a Debian machine, only
# when missing. Run as root.
set -eu

need=""
have() { command -v "$1" >/dev/null 2>&1; }
have runc || need="$need runc"
have crun || need="$need crun"
have busybox || need="$need busybox-static"
have jq || need="$need jq"
have unshare || need="$need util-linux"
have gcc || need="$need gcc"
have rsvg-convert || need="$need librsvg2-bin"  # make bench: PNG plots
if [ -n "$need" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "missing:$need; run as root or install them: apt-get install$need" >&2
		exit 1
	fi
	echo "installing:$need"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q $need >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q $need >/dev/null; }
fi
if ! have go; then
	echo "Go is not installed: install Go 1.26 (https://go.dev/dl) into /usr/local/go" >&2
	exit 1
fi
