package operator

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
)

// Informer transforms: what the manager's cache keeps of each object. Every Pod and Node of
// the cluster is cached (runner pods live in any namespace; the scaling and cache controllers
// must see every node of a pool and the pods on it), and most of what the API server sends
// for them is never read by warmpool. Dropping it at the informer keeps the cache a fraction of
// the size. Nothing may write back a transformed object whole (Update): warmpool patches what
// it changes, and a merge patch between two transformed copies carries only the change.

// lastApplied is kubectl's copy of the whole object in an annotation, never read by warmpool.
const lastApplied = corev1.LastAppliedConfigAnnotation

// stripManagedFields drops the server-side apply bookkeeping of every cached object: often
// the largest part of an object's metadata, and read by no controller.
func stripManagedFields(in any) (any, error) {
	if o, err := meta.Accessor(in); err == nil {
		o.SetManagedFields(nil)
	}
	return in, nil
}

// trimPod keeps what the scaling controller (the pod's node, its pool's nodeSelector, owners,
// phase, what the scheduler reserves for it: resourcehelper.PodRequests) and the cache
// controllers (labels, annotations, phase, the Ready condition, the copier container's state
// and termination message) read. Volumes, environment, commands, probes, affinity,
// tolerations, images, addresses, the other conditions and the like go: in the footprint
// benchmark (5000 pods) pods were most of the heap, and each pod's two default tolerations
// and four conditions besides Ready were a tenth of it.
func trimPod(in any) (any, error) {
	p, ok := in.(*corev1.Pod)
	if !ok {
		return stripManagedFields(in)
	}
	trimMeta(&p.ObjectMeta)
	s := &p.Spec
	s.Volumes = nil
	s.Affinity = nil
	s.Tolerations = nil
	s.TopologySpreadConstraints = nil
	s.SecurityContext = nil
	s.HostAliases = nil
	s.ImagePullSecrets = nil
	s.ReadinessGates = nil
	s.DNSConfig = nil
	s.EphemeralContainers = nil
	s.SchedulingGates = nil
	s.ResourceClaims = nil
	trimContainers(s.Containers)
	trimContainers(s.InitContainers)
	st := &p.Status
	st.PodIP, st.PodIPs, st.HostIP, st.HostIPs, st.NominatedNodeName = "", nil, "", nil, ""
	st.InitContainerStatuses, st.EphemeralContainerStatuses, st.ResourceClaimStatuses = nil, nil, nil
	st.Conditions = readyOnly(st.Conditions)
	for i := range st.ContainerStatuses {
		cs := &st.ContainerStatuses[i]
		st.ContainerStatuses[i] = corev1.ContainerStatus{
			Name: cs.Name, State: cs.State, Ready: cs.Ready, Started: cs.Started, RestartCount: cs.RestartCount,
		}
	}
	return p, nil
}

// readyOnly is the pod's Ready condition alone (without its message), in a slice of its own
// so the others' memory goes: the controllers read no other pod condition.
func readyOnly(cs []corev1.PodCondition) []corev1.PodCondition {
	for _, c := range cs {
		if c.Type == corev1.PodReady {
			return []corev1.PodCondition{{Type: c.Type, Status: c.Status, LastTransitionTime: c.LastTransitionTime, Reason: c.Reason}}
		}
	}
	return nil
}

// trimContainers keeps each container's name, resources and restart policy (a sidecar's
// requests count differently): what resourcehelper.PodRequests reads.
func trimContainers(cs []corev1.Container) {
	for i := range cs {
		c := &cs[i]
		cs[i] = corev1.Container{
			Name: c.Name, Resources: c.Resources, ResizePolicy: c.ResizePolicy, RestartPolicy: c.RestartPolicy,
		}
	}
}

// trimNode keeps a Node's metadata, spec, allocatable and its conditions' types and statuses
// (nodewatch reads those). The image list (up to 50 images, often the bulk of a Node), the
// volumes, addresses, capacity, system info and the conditions' messages go: nothing reads them.
func trimNode(in any) (any, error) {
	n, ok := in.(*corev1.Node)
	if !ok {
		return stripManagedFields(in)
	}
	trimMeta(&n.ObjectMeta)
	st := &n.Status
	st.Images, st.VolumesInUse, st.VolumesAttached = nil, nil, nil
	st.Addresses, st.Capacity, st.NodeInfo = nil, nil, corev1.NodeSystemInfo{}
	st.DaemonEndpoints, st.Config, st.RuntimeHandlers, st.Features = corev1.NodeDaemonEndpoints{}, nil, nil, nil
	for i := range st.Conditions {
		st.Conditions[i].Message, st.Conditions[i].Reason = "", ""
	}
	return n, nil
}

func trimMeta(m *metav1.ObjectMeta) {
	m.ManagedFields = nil
	delete(m.Annotations, lastApplied)
}

var (
	_ toolscache.TransformFunc = stripManagedFields
	_ toolscache.TransformFunc = trimPod
	_ toolscache.TransformFunc = trimNode
)
