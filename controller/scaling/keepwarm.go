package scaling

// The keep-warm step: each placeholder carries the deletion cost of the node it holds
// (policy.DeletionCost), so when the headroom shrinks the ReplicaSet controller deletes the
// placeholders on the least valuable nodes first (no cache yet, newest) and Karpenter
// consolidates those, not the warm ones. Only pods-mode pools: a CapacityBuffer has no pods,
// and which nodes Karpenter keeps for it is Karpenter's choice.

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// member is one live node of the pool, with what its placeholders' deletion cost needs.
type member struct {
	node *corev1.Node
	// worked: a runner pod is, or was (finished or being deleted, still listed), bound to it.
	worked bool
	// placeholders are the pool's placeholder pods bound to the node, not being deleted.
	placeholders []*corev1.Pod
}

// observe takes in one pod bound to the member's node.
func (m *member) observe(p *corev1.Pod, pool, namespace string) {
	switch {
	case p.Namespace == namespace && p.Labels[nodepools.LabelHeadroom] == "true" && p.Labels[nodepools.LabelPool] == pool:
		if p.DeletionTimestamp == nil {
			m.placeholders = append(m.placeholders, p)
		}
	case ranWork(p):
		m.worked = true
	}
}

// ranWork says whether a pod is runner work, running or not: isWork without its "not finished
// and not being deleted", since a node that ran a job has its cache whether the job ended or not.
func ranWork(p *corev1.Pod) bool {
	return !isDaemon(p) && !isStatic(p) && !isWarmpools(p)
}

// nodeCache is what a node says of its engine cache: worked when it ran runner jobs, else its
// restore's verdict (the cache controller's annotation, set when it released the node to its
// engine): warm when the engine confirmed it kept the restored copy, restored while that is due
// or ran out unanswered, cold when it started cold (no verdict) or the engine discarded the copy.
func nodeCache(n *corev1.Node, worked bool) policy.NodeCache {
	if worked {
		return policy.CacheWorked
	}
	switch verdict := n.Annotations[enginecache.AnnotationRestore]; verdict {
	case volumes.ResultWarm:
		return policy.CacheWarm
	case "", volumes.ResultWiped:
		return policy.CacheCold
	default:
		return policy.CacheRestored
	}
}

// written is a deletion cost this process patched onto a placeholder, with the value the pod
// had before, so a cache that has not caught up with the patch is not patched again.
type written struct{ cost, before string }

// keepWarm writes each placeholder's deletion cost where it differs from its node's. A cost
// depends on its node alone (see policy.DeletionCost), so a steady pool is never patched: a
// placeholder is written once when it lands, and again only when its node's cache changes.
func (c *Controller) keepWarm(ctx context.Context, ps *poolState, ev *evaluation) error {
	if ev.pool.Scaling.Headroom == config.HeadroomCapacityBuffer {
		ps.worked, ps.costs = nil, nil
		return nil
	}
	worked := map[types.UID]bool{}
	costs := map[types.UID]written{}
	var errs []error
	for _, m := range ev.fleet.members {
		w := m.worked || ps.worked[m.node.UID]
		for _, p := range m.placeholders {
			// What an earlier process learned of the node (it ran jobs) is on its placeholder;
			// the pods that told it may be gone by now.
			if tier, ok := policy.CacheOfCost(p.Annotations[policy.AnnotationDeletionCost]); ok && tier == policy.CacheWorked {
				w = true
			}
		}
		if w {
			worked[m.node.UID] = true
		}
		value := policy.NodeValue{Cache: nodeCache(m.node, w), Created: m.node.CreationTimestamp.Time}
		want := policy.FormatCost(policy.DeletionCost(value))
		for _, p := range m.placeholders {
			cur := p.Annotations[policy.AnnotationDeletionCost]
			if cur == want {
				costs[p.UID] = written{cost: want, before: cur}
				continue
			}
			if last, ok := ps.costs[p.UID]; ok && last.cost == want && last.before == cur {
				costs[p.UID] = last // patched; the cache has not caught up yet
				continue
			}
			if err := c.setCost(ctx, p, want); err != nil {
				errs = append(errs, err)
				continue
			}
			costs[p.UID] = written{cost: want, before: cur}
			log.FromContext(ctx).V(1).Info("placeholder deletion cost", "pool", ev.pool.Name, "pod", p.Name, "node", m.node.Name,
				"cache", value.Cache.String(), "cost", want, "previous", cur)
		}
	}
	ps.worked, ps.costs = worked, costs
	return errors.Join(errs...)
}

// setCost patches one placeholder's deletion cost, and nothing else of it: the pod belongs to
// its ReplicaSet. A placeholder deleted meanwhile needs none.
func (c *Controller) setCost(ctx context.Context, p *corev1.Pod, cost string) error {
	patched := p.DeepCopy()
	if patched.Annotations == nil {
		patched.Annotations = map[string]string{}
	}
	patched.Annotations[policy.AnnotationDeletionCost] = cost
	if err := c.kubeClient.Patch(ctx, patched, client.MergeFrom(p)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("setting the deletion cost of placeholder %s/%s, %w", p.Namespace, p.Name, err)
	}
	return nil
}
