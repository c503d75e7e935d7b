package shim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/config"
	"github.com/userns-shim/userns-shim/pkg/failpoint"
	"github.com/userns-shim/userns-shim/pkg/mapping"
	"github.com/userns-shim/userns-shim/pkg/nsexec"
	"github.com/userns-shim/userns-shim/pkg/runtime"
	"github.com/userns-shim/userns-shim/pkg/spec"
	"github.com/userns-shim/userns-shim/pkg/state"
)

// shimMakesUserNS reports whether the shim, not the CRI runtime, supplies the
// user namespace for a mapping from source: it then makes one per pod, pins
// it, and every container of the pod joins the pin.
func shimMakesUserNS(source mapping.Source) bool {
	return source != mapping.SourceSpec && source != mapping.SourceJoined
}

// joinPod decides the container's mapping and makes it a member of its pod
// in the registry, under the registry's lock: the first container of a pod
// fixes the pod's mapping (allocating one in mode allocate), passes the
// overlap guard and, when the shim supplies the namespace, pins it; later
// containers must have the same mapping and join the same namespace.
// Nothing is written when it fails.
func (s *Shim) joinPod(sp *specs.Spec, pod spec.Pod, src Sources, users *nsexec.UserNSCache, prefer uint32) (d Decision, p *state.Pod, err error) {
	id := s.Inv.ContainerID
	if err := s.clearDeadCreate(id); err != nil {
		return d, nil, err
	}
	var pinned string
	err = s.State.UpdatePods(func(r *state.Registry) error {
		existing := r.Pods[pod.ID]
		if d, err = Decide(sp, s.Cfg, src, existing); err != nil {
			return err
		}
		if d.Source == mapping.SourceNone {
			return errors.New("no mapping from any source") // passthrough is decided before
		}
		if existing != nil {
			if d.Source != mapping.SourcePod && !d.Mapping.Equal(existing.Mapping) {
				return fmt.Errorf("its mapping %s (from %s) differs from its pod %s's mapping %s: all containers of a pod share one user namespace",
					mapping.String(d.Mapping.UIDs), d.Source, pod.ID, mapping.String(existing.Mapping.UIDs))
			}
			p = existing
			if p.Pin != "" {
				ns, err := nsexec.OpenPinned(p.Pin)
				if err != nil {
					return fmt.Errorf("pod %s: %w", pod.ID, err)
				}
				users.Put(p.Mapping, ns)
			}
		} else {
			if d.Source == mapping.SourceAllocator {
				pool := mapping.Pool{Start: s.Cfg.Allocate.Start, Length: s.Cfg.Allocate.Length, Size: s.Cfg.Allocate.IDsPerPod}
				if d.Mapping, err = pool.Allocate(r.UsedSpans(""), prefer); err != nil {
					if errors.Is(err, mapping.ErrPreferredTaken) {
						holder := "another pod"
						if h, _ := r.Overlapping(mapping.Mapping{UIDs: []specs.LinuxIDMapping{{HostID: prefer, Size: pool.Size}}}, ""); h != nil {
							holder = "pod " + h.ID
						}
						return fmt.Errorf("its writable layer belongs to host IDs %d-%d from an earlier run, which %s now holds: it would see its own files as 65534; delete and re-create the container",
							prefer, uint64(prefer)+uint64(pool.Size)-1, holder)
					}
					return err
				}
				if err := mapping.Validate(d.Mapping, rulesOf(s.Cfg)); err != nil {
					return fmt.Errorf("allocated mapping refused (check [allocate] against [validation]): %w", err)
				}
			}
			if other, span := r.Overlapping(d.Mapping, pod.ID); other != nil {
				return fmt.Errorf("pod %s's host IDs %s overlap host IDs of pod %s (mapping %s, from %s): no two pods may share host IDs",
					pod.ID, span, other.ID, mapping.String(other.Mapping.UIDs), other.Source)
			}
			p = &state.Pod{ID: pod.ID, UID: pod.UID, CRI: pod.CRI, Source: d.Source, Allocated: d.Source == mapping.SourceAllocator,
				Mapping: d.Mapping, Created: time.Now().UTC()}
			if shimMakesUserNS(d.Source) {
				if pinned, err = s.pinPodUserNS(pod.ID, d.Mapping, users); err != nil {
					return err
				}
				p.Pin = pinned
				failpoint.Hit(failpoint.Pinned)
			} else if ns := spec.Namespace(sp, specs.UserNamespace); ns != nil {
				p.UserNS = ns.Path
			}
			r.Pods[pod.ID] = p
		}
		if !slices.Contains(p.Containers, id) {
			p.Containers = append(p.Containers, id)
		}
		return nil
	})
	if err != nil && pinned != "" {
		err = errors.Join(err, nsexec.Unpin(pinned))
	}
	return d, p, err
}

// clearDeadCreate makes way for a create of container id, under its create
// lock. A container the runtime already has (a create retried after one
// killed once the runtime had made it) is refused: the runtime's failure
// would make this create forget the live container (record, staging, place
// in its pod) and free its pod's range and pin while it runs. The runtime
// is asked only when there is a record, which every container the shim
// handed over has. Otherwise what a killed create of this ID left in its
// staging dir goes: no live container owns it, and a new target there
// would collide with it.
func (s *Shim) clearDeadCreate(id string) error {
	if s.State.Has(id) && s.runtimeKnows(id) {
		return errors.New("the runtime already has a container with this ID: delete it before creating it again")
	}
	if err := removeStaging(s.stagingDir(id)); err != nil {
		return fmt.Errorf("staging left by an earlier create: %w", err)
	}
	return nil
}

// checkRuncJoins refuses, for runc, a container that joins the pod's pinned
// user namespace and also another namespace by path that a different user
// namespace owns: runc joins the user namespace first and then lacks the
// rights to join the other ("failed to setns into net namespace: Operation
// not permitted", reported by runc as an EOF). containerd before 1.7 makes
// pod network namespaces in the host's user namespace; crun joins them first
// and works.
func (s *Shim) checkRuncJoins(sp *specs.Spec, pin string) error {
	if pin == "" || sp.Linux == nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(pin, &st); err != nil {
		return &os.PathError{Op: "stat", Path: pin, Err: err}
	}
	for _, ns := range sp.Linux.Namespaces {
		if ns.Path == "" || ns.Type == specs.UserNamespace {
			continue
		}
		owner, err := nsexec.OwningUserNS(ns.Path)
		if err != nil {
			return err
		}
		if owner == st.Ino {
			continue
		}
		// Which runtime it is matters only now: ask it (one call, in this
		// rare case) rather than trust the binary's name.
		if out, err := runtime.Output(s.RuntimePath, "--version"); err != nil {
			return err
		} else if inf, _ := runtime.ParseVersion(out); inf.Name == "runc" {
			return fmt.Errorf("runc joins the pod's user namespace before the %s namespace %s, which another user namespace owns (containerd before 1.7 makes pod network namespaces in the host's): runc cannot do that; put crun behind the shim, or use a CRI runtime that makes the pod's user namespace itself (containerd >= 2, CRI-O)",
				ns.Type, ns.Path)
		}
	}
	return nil
}

// pinPodUserNS makes the pod's user namespace and pins it under the state
// dir. A pin left by a shim killed before it recorded the pod is replaced:
// no container can have joined it.
func (s *Shim) pinPodUserNS(podID string, m mapping.Mapping, users *nsexec.UserNSCache) (string, error) {
	ns, err := users.Get(m)
	if err != nil {
		return "", err
	}
	pin := filepath.Join(s.State.PodDir(podID), "userns")
	if err := nsexec.Unpin(pin); err != nil {
		return "", fmt.Errorf("remove stale pin: %w", err)
	}
	if err := nsexec.Pin(ns, pin); err != nil {
		return "", err
	}
	return pin, nil
}

// leavePod removes container id from its pod; the pod's last container takes
// the pod with it: its pin and its range.
func (s *Shim) leavePod(id string) error {
	return s.State.UpdatePods(func(r *state.Registry) error {
		p := r.PodOfContainer(id)
		if p == nil {
			return nil
		}
		p.Containers = slices.DeleteFunc(p.Containers, func(c string) bool { return c == id })
		if len(p.Containers) > 0 {
			return nil
		}
		return s.dropPod(r, p)
	})
}

// dropPod removes a pod that has no container left: its pin, its directory
// and its registry entry (and so its range).
func (s *Shim) dropPod(r *state.Registry, p *state.Pod) error {
	if p.Pin != "" {
		if err := nsexec.Unpin(p.Pin); err != nil {
			return fmt.Errorf("pod %s: %w", p.ID, err)
		}
	}
	if err := os.Remove(s.State.PodDir(p.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pod %s: %w", p.ID, err)
	}
	delete(r.Pods, p.ID)
	return nil
}

// rulesOf is the configuration's mapping rules.
func rulesOf(cfg config.Config) mapping.Rules {
	return mapping.Rules{MinHostID: cfg.Validation.MinHostID, SizeMultiple: cfg.Validation.SizeMultiple}
}
