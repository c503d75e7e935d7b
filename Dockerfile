# The userns-shim image: the static binary and the example configuration, for
# a DaemonSet that copies them onto each node (deploy/kubernetes, issue 5).
# It builds offline: `make image` first makes bin/userns-shim (static, no cgo)
# and copies Debian's static busybox to bin/busybox (the DaemonSet's install
# step runs it: a scratch image has no shell), then `podman build` needs no
# base image.
FROM scratch
COPY bin/busybox /bin/busybox
COPY bin/userns-shim /usr/local/bin/userns-shim
COPY deploy/config.toml.example /etc/userns-shim/config.toml.example
ENTRYPOINT ["/usr/local/bin/userns-shim"]
