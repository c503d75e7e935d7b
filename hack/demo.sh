#!/bin/bash
# make demo: run a small busybox container through userns-shim on this node's
# own runtime (crun, else runc) with a mapping, and show what a user checks:
# the uid map, `id` inside, and the process owner seen from the host.
set -euo pipefail

shim=$(realpath "${1:-bin/userns-shim}")
work=/tmp/userns-shim-demo
id=userns-shim-demo-$$
host_id=${DEMO_HOST_ID:-1000000}

runtime=$(command -v crun || command -v runc || true)
[ -n "$runtime" ] || { echo "no crun or runc on PATH" >&2; exit 1; }
rm -rf "$work"
mkdir -p "$work"
chmod 755 "$work"

# Debian's crun 1.8.1 refuses the hybrid cgroup layout: hack/crun-hybrid runs
# it without the cgroup2 mount, in a private mount namespace of its own.
if [ "$(basename "$runtime")" = crun ]; then
	runtime=$(realpath "$(dirname "$0")/crun-hybrid")
	echo "note: crun runs through $runtime"
fi

cat >"$work/config.toml" <<EOF
runtime = "$runtime"
state_dir = "$work/state"
mode = "require"
EOF
export USERNS_SHIM_CONFIG=$work/config.toml

# A bundle with a busybox-static rootfs that nobody chowned.
b=$work/bundle
mkdir -p "$b"/rootfs/{bin,proc,sys,dev,etc,tmp,root,run}
cp "$(command -v busybox)" "$b/rootfs/bin/busybox"
for c in sh id ls cat sleep ps; do ln -s busybox "$b/rootfs/bin/$c"; done
touch "$b"/rootfs/etc/{hosts,hostname,resolv.conf}
echo 'root:x:0:0:root:/root:/bin/sh' >"$b/rootfs/etc/passwd"
echo 'root:x:0:' >"$b/rootfs/etc/group"
runc spec --bundle "$b" 2>/dev/null || (cd "$b" && crun spec)
jq --arg m "0:$host_id:65536" '.process.terminal=false | .process.args=["sleep","300"]
    | .annotations={"userns-shim.io/uid-mappings": $m}' "$b/config.json" >"$b/config.json.new"
mv "$b/config.json.new" "$b/config.json"

cleanup() { "$shim" --root "$work/root" delete --force "$id" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== userns-shim --version"
"$shim" --version
echo
echo "== create and start $id with annotation userns-shim.io/uid-mappings=0:$host_id:65536"
"$shim" --root "$work/root" create --bundle "$b" --pid-file "$work/pid" "$id"
"$shim" --root "$work/root" start "$id"
pid=$(cat "$work/pid")
echo
echo "== from the host: /proc/$pid/uid_map"
cat "/proc/$pid/uid_map"
echo "== from the host: owner of the container process"
ps -o uid,user,pid,cmd -p "$pid"
echo "== inside: id"
"$shim" --root "$work/root" exec "$id" id
echo "== what the shim recorded (userns-shim shim inspect $id)"
"$shim" shim inspect "$id"
echo
host_uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
if [ "$host_uid" = "$host_id" ]; then
	echo "OK: container root is host uid $host_uid, an unprivileged user"
else
	echo "FAIL: container root is host uid $host_uid, expected $host_id" >&2
	exit 1
fi
