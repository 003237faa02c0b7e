package operator

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	resourcehelper "k8s.io/component-helpers/resource"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/volumes"
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
// phase, what the scheduler reserves for it) and the cache controllers (labels, annotations,
// phase, reason and message, the Ready condition, a cache Job's copier container state and
// termination message) read. Every Pod of the cluster is cached, so each byte kept here is
// multiplied by the cluster's pods (BenchmarkTrimmedPodHeap measures it):
//   - the containers go, replaced by one unnamed container that requests what the pod does
//     (resourcehelper.PodRequests: containers, sidecars, init containers, overhead, pod-level
//     resources), so the scaling controller's PodRequests of the cached pod is unchanged. A
//     Container is 408 bytes before any of its fields, and its requests and limits are maps;
//   - container statuses go, except for cache Job pods (volumes.LabelOp): no controller reads
//     another pod's;
//   - volumes, tolerations, affinity, addresses, the other conditions and the like go.
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
	s.Containers = []corev1.Container{{Resources: corev1.ResourceRequirements{
		Requests: resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{}),
	}}}
	s.InitContainers, s.Overhead, s.Resources = nil, nil, nil
	st := &p.Status
	st.PodIP, st.PodIPs, st.HostIP, st.HostIPs, st.NominatedNodeName = "", nil, "", nil, ""
	st.InitContainerStatuses, st.EphemeralContainerStatuses, st.ResourceClaimStatuses = nil, nil, nil
	st.Conditions = readyOnly(st.Conditions)
	if _, job := p.Labels[volumes.LabelOp]; !job {
		st.ContainerStatuses = nil
	}
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

// trimNodeClaim keeps a NodeClaim's metadata, its termination grace period, node name and
// its conditions without their messages: what the cache controllers read (save.go,
// save_hold.go: the claim of a node, whether it is being deleted, Karpenter's disruption
// reason, the grace a save has). Its requirements (the instance types it may launch as, up to
// 60), resources, taints, capacity and allocatable go: every NodeClaim of the cluster is
// cached, one per Karpenter node.
func trimNodeClaim(in any) (any, error) {
	c, ok := in.(*karpv1.NodeClaim)
	if !ok {
		return stripManagedFields(in)
	}
	trimMeta(&c.ObjectMeta)
	c.Spec = karpv1.NodeClaimSpec{TerminationGracePeriod: c.Spec.TerminationGracePeriod}
	conds := c.Status.Conditions
	for i := range conds {
		conds[i].Message = ""
	}
	c.Status = karpv1.NodeClaimStatus{NodeName: c.Status.NodeName, Conditions: conds}
	return c, nil
}

func trimMeta(m *metav1.ObjectMeta) {
	m.ManagedFields = nil
	delete(m.Annotations, lastApplied)
}

var (
	_ toolscache.TransformFunc = stripManagedFields
	_ toolscache.TransformFunc = trimPod
	_ toolscache.TransformFunc = trimNode
	_ toolscache.TransformFunc = trimNodeClaim
)
