package scaling

// The fleet step: what the pool's nodes say (how many, how many run real work, what each
// Ready one offers runner pods). Read through the manager's cache.

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	resourcehelper "k8s.io/component-helpers/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/nodewatch"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// fleet is what the pool's nodes say: how many there are, how many run real work, and what
// each Ready one offers runner pods.
type fleet struct {
	nodes, busy int
	shapes      []corev1.ResourceList
	// members are the live nodes with what the placeholders' deletion costs need (keepwarm.go).
	members []member
}

// poolNodes counts the pool's live nodes, and those running runner work (see isWork).
//
// It reads the cache through indexes (nodes by pool, pods by node), without copying what it
// reads: an evaluation only reads, and the few objects it writes (keepwarm.go) are copied
// before they are changed. On a large fleet these copies were most of an evaluation's cost.
// A client that is not a cache ignores UnsafeDisableDeepCopy.
func (c *Controller) poolNodes(ctx context.Context, pool string) (fleet, error) {
	var f fleet
	list := &corev1.NodeList{}
	var inPool client.ListOption = client.MatchingLabels{nodepools.LabelPool: pool}
	if c.nodesIndexed {
		inPool = client.MatchingFields{nodePoolField: pool}
	}
	if err := c.kubeClient.List(ctx, list, inPool, client.UnsafeDisableDeepCopy); err != nil {
		return f, fmt.Errorf("listing nodes of pool %s, %w", pool, err)
	}
	for i := range list.Items {
		n := &list.Items[i]
		if n.DeletionTimestamp != nil {
			continue
		}
		f.nodes++
		pods := &corev1.PodList{}
		if err := c.kubeClient.List(ctx, pods, client.MatchingFields{nodeNameField: n.Name}, client.UnsafeDisableDeepCopy); err != nil {
			return f, fmt.Errorf("listing pods on %s, %w", n.Name, err)
		}
		var daemons []corev1.ResourceList
		busy := false
		m := member{node: n}
		for j := range pods.Items {
			pod := &pods.Items[j]
			busy = busy || isWork(pod)
			m.observe(pod, pool, c.namespace)
			if isDaemon(pod) && !finished(pod) {
				daemons = append(daemons, podRequests(pod))
			}
		}
		if busy {
			f.busy++
		}
		f.members = append(f.members, m)
		if nodewatch.Ready(n) && len(n.Status.Allocatable) > 0 {
			f.shapes = append(f.shapes, policy.Available(n.Status.Allocatable, daemons...))
		}
	}
	return f, nil
}

func isDaemon(p *corev1.Pod) bool {
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" {
			return true
		}
	}
	return false
}

func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// podRequests is what the scheduler reserves for a pod: its containers' requests, or an init
// container's when larger (the engine pod's warmpool-tools init container is), plus sidecars
// and pod overhead, computed by the scheduler's own helper.
func podRequests(p *corev1.Pod) corev1.ResourceList {
	return resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{})
}

// mirrorPodAnnotation marks a static pod's mirror in the API server (kubelet types).
const mirrorPodAnnotation = "kubernetes.io/config.mirror"

// isWork says whether a pod makes its node busy for scaling: runner work, that is any pod that
// has not finished and is not being deleted, except node agents (DaemonSet and static pods)
// and what warmpool runs itself (placeholders; guard, save, restore and verify pods). A
// restore pod counted as work would shrink the headroom by the node it restores, deleting the
// placeholder that brought the node up, to recreate it when the restore ends.
func isWork(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && !finished(p) && !isDaemon(p) && !isStatic(p) && !isWarmpools(p)
}

// isWarmpools says whether warmpool runs the pod itself: a placeholder, a pod of the cache
// protocol, or any other pod labelled as managed by warmpool.
func isWarmpools(p *corev1.Pod) bool {
	if p.Labels[nodepools.LabelHeadroom] == "true" || p.Labels[nodepools.LabelManagedBy] == nodepools.ManagedBy {
		return true
	}
	_, op := p.Labels[volumes.LabelOp]
	return op
}

func isStatic(p *corev1.Pod) bool { return p.Annotations[mirrorPodAnnotation] != "" }
