# The userns-shim image: the static binary and the example configuration, for
# a DaemonSet that copies them onto each node (deploy/kubernetes, issue 5).
# It builds offline: `make build` first makes bin/userns-shim (static, no cgo),
# then `podman build -t userns-shim .` needs no base image.
FROM scratch
COPY bin/userns-shim /usr/local/bin/userns-shim
COPY deploy/config.toml.example /etc/userns-shim/config.toml.example
ENTRYPOINT ["/usr/local/bin/userns-shim"]
