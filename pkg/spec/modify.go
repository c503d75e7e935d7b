package spec

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/userns-shim/userns-shim/pkg/fsutil"
	"github.com/userns-shim/userns-shim/pkg/mapping"
)

// Namespace returns the spec's namespace entry of type t, or nil.
func Namespace(s *specs.Spec, t specs.LinuxNamespaceType) *specs.LinuxNamespace {
	if s.Linux == nil {
		return nil
	}
	for i := range s.Linux.Namespaces {
		if s.Linux.Namespaces[i].Type == t {
			return &s.Linux.Namespaces[i]
		}
	}
	return nil
}

// SpecMapping returns the mapping in linux.uidMappings/gidMappings.
func SpecMapping(s *specs.Spec) mapping.Mapping {
	if s.Linux == nil {
		return mapping.Mapping{}
	}
	return mapping.Mapping{UIDs: s.Linux.UIDMappings, GIDs: s.Linux.GIDMappings}
}

// SetUserNamespace makes the container run in a new user namespace with m,
// keeping an existing user namespace entry (and its path) if there is one.
func SetUserNamespace(s *specs.Spec, m mapping.Mapping) {
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	if Namespace(s, specs.UserNamespace) == nil {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	}
	s.Linux.UIDMappings = slices.Clone(m.UIDs)
	s.Linux.GIDMappings = slices.Clone(m.GIDs)
}

// HostNamespaceChecker tells whether a namespace path refers to the host's
// own namespace of that type (see nsexec.IsHostNamespace).
type HostNamespaceChecker func(t specs.LinuxNamespaceType, path string) (bool, error)

// isolated are the namespaces a user-namespaced container must not share with
// the host: sharing them would hand the host's network, processes or IPC to
// a root that the user namespace is meant to confine.
var isolated = []specs.LinuxNamespaceType{specs.NetworkNamespace, specs.PIDNamespace, specs.IPCNamespace}

// CheckHostNamespaces refuses a user-namespaced container that shares the
// host's network, PID or IPC namespace, by omission (no entry means the
// runtime's own namespace) or by a path to the host's namespace. A type
// listed twice is refused first: the shim judges the first entry only, and
// a runtime that honoured the second could join the host's namespace.
func CheckHostNamespaces(s *specs.Spec, isHost HostNamespaceChecker) error {
	if s.Linux != nil {
		seen := map[specs.LinuxNamespaceType]int{}
		var twice []string
		for _, n := range s.Linux.Namespaces {
			if seen[n.Type]++; seen[n.Type] == 2 {
				twice = append(twice, string(n.Type))
			}
		}
		if len(twice) > 0 {
			return fmt.Errorf("linux.namespaces lists the %s namespace more than once: a runtime must refuse that, and the shim cannot tell which entry it would use", strings.Join(twice, ", "))
		}
	}
	var p []string
	for _, t := range isolated {
		ns := Namespace(s, t)
		switch {
		case ns == nil:
			p = append(p, fmt.Sprintf("it shares the host's %s namespace (no %q entry in linux.namespaces)", t, t))
		case ns.Path != "":
			host, err := isHost(t, ns.Path)
			if err != nil {
				p = append(p, fmt.Sprintf("%s namespace path %s: %v", t, ns.Path, err))
			} else if host {
				p = append(p, fmt.Sprintf("its %s namespace path %s is the host's", t, ns.Path))
			}
		}
	}
	if len(p) > 0 {
		return fmt.Errorf("a container in a user namespace must not share the host's network, PID or IPC namespace: %s", strings.Join(p, "; "))
	}
	return nil
}

// Pod identity annotations written by the CRI runtimes.
const (
	AnnotationPodUID           = "io.kubernetes.pod.uid"
	AnnotationContainerdPodUID = "io.kubernetes.cri.sandbox-uid"
	AnnotationCRIOLabels       = "io.kubernetes.cri-o.Labels"
)

// PodUID returns the Kubernetes pod UID the bundle names, or "". A value that
// could not be a UID (path separators, "..") is an error, since the UID is
// used as a directory name under the kubelet's root.
func PodUID(ann map[string]string) (string, error) {
	uid := ann[AnnotationPodUID]
	if uid == "" {
		uid = ann[AnnotationContainerdPodUID]
	}
	if uid == "" && ann[AnnotationCRIOLabels] != "" {
		var labels map[string]string
		if json.Unmarshal([]byte(ann[AnnotationCRIOLabels]), &labels) == nil {
			uid = labels[AnnotationPodUID]
		}
	}
	if uid == "" {
		return "", nil
	}
	if !fsutil.IsName(uid, 128, "_.-") || uid[0] == '.' || strings.Contains(uid, "..") {
		return "", fmt.Errorf("pod UID %q is not a valid UID", uid)
	}
	return uid, nil
}

// Pod identity annotations written by the CRI runtimes.
const (
	AnnotationCRIOContainerType       = "io.kubernetes.cri-o.ContainerType"
	AnnotationCRIOSandboxID           = "io.kubernetes.cri-o.SandboxID"
	AnnotationContainerdContainerType = "io.kubernetes.cri.container-type"
	AnnotationContainerdSandboxID     = "io.kubernetes.cri.sandbox-id"
)

// Pod names the pod a container belongs to.
type Pod struct {
	ID      string // the sandbox ID; for a bundle of no pod, the container's own ID
	UID     string // the Kubernetes pod UID, when the bundle names it
	Sandbox bool   // the container is the pod's sandbox (pause) container
	CRI     string // "cri-o", "containerd", or "" for podman and plain OCI bundles
}

// PodOf finds the pod of container id from the CRI runtimes' annotations.
// A bundle with none of them (podman, plain OCI) is a pod of its own. The pod
// ID becomes a directory name in the state dir, so it is checked like a
// container ID.
func PodOf(ann map[string]string, id string) (Pod, error) {
	p := Pod{ID: id}
	var err error
	if p.UID, err = PodUID(ann); err != nil {
		return p, err
	}
	switch {
	case ann[AnnotationCRIOContainerType] != "" || ann[AnnotationCRIOSandboxID] != "":
		p.CRI = "cri-o"
		p.Sandbox = ann[AnnotationCRIOContainerType] == "sandbox"
		if sid := ann[AnnotationCRIOSandboxID]; sid != "" {
			p.ID = sid
		}
	case ann[AnnotationContainerdContainerType] != "" || ann[AnnotationContainerdSandboxID] != "":
		p.CRI = "containerd"
		p.Sandbox = ann[AnnotationContainerdContainerType] == "sandbox"
		if sid := ann[AnnotationContainerdSandboxID]; sid != "" {
			p.ID = sid
		}
	}
	if !fsutil.IsName(p.ID, 1024, "_+-.") {
		return p, fmt.Errorf("pod sandbox ID %q is not a valid ID", p.ID)
	}
	return p, nil
}
