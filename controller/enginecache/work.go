package enginecache

import (
	corev1 "k8s.io/api/core/v1"

	"warmpool.io/warmpool/nodepools"
)

// mirrorPodAnnotation marks a static pod's mirror in the API server (kubelet types).
const mirrorPodAnnotation = "kubernetes.io/config.mirror"

// isWork says whether a pod on a node going away is CI work that may still use the node's
// engine: anything that has not finished, except DaemonSet pods (the engine itself and node
// agents, which Karpenter drains last), static pods, and what warmpool runs there itself
// (guard, save, restore and verify pods, headroom placeholders). A pod being evicted still
// counts: its process, and so its engine session, lives until the kubelet has stopped it.
func isWork(p *corev1.Pod) bool {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return false
	}
	if p.Annotations[mirrorPodAnnotation] != "" || p.Labels[nodepools.LabelManagedBy] == nodepools.ManagedBy {
		return false
	}
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" && o.Controller != nil && *o.Controller {
			return false
		}
	}
	return true
}
