package scaling

// What wakes the controller: Enqueue (queue readings and config changes), the pool's nodes,
// its headroom Deployment and the pods on its nodes changing, and each reconcile's requeue.

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"warmpool.io/warmpool/controller/counted"
	"warmpool.io/warmpool/controller/nodewatch"
	"warmpool.io/warmpool/nodepools"
)

// nodeNameField indexes pods by node, so counting a pool's busy nodes reads only its pods.
const nodeNameField = "spec.nodeName"

// Register wires the controller: requests come from Enqueue (queue changes, config changes),
// from the pool's nodes, its headroom Deployment and the pods on its nodes changing, and from
// each reconcile's requeue.
func (c *Controller) Register(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, nodeNameField, func(o client.Object) []string {
		return []string{o.(*corev1.Pod).Spec.NodeName}
	}); err != nil {
		return fmt.Errorf("indexing pods by node, %w", err)
	}
	toPool := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if pool := o.GetLabels()[nodepools.LabelPool]; pool != "" {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: pool}}}
		}
		return nil
	})
	hasPool := builder.WithPredicates(predicate.NewPredicateFuncs(hasPoolLabel))
	// Pods: a runner pod landing on (or leaving) a node changes the pool's busy nodes, so its
	// headroom should follow at once, not on the next periodic evaluation. This reuses the
	// full-object Pod informer the busy-node count above already needs (spec.nodeName, phase,
	// owners, all namespaces: runners live anywhere), so it costs no second cache. A
	// metadata-only watch would add an informer of its own and still could not tell which node
	// a pod is on; a label filter cannot name runner pods, which carry no warmpool label.
	return ctrl.NewControllerManagedBy(mgr).
		Named("scaling").
		WatchesRawSource(source.Channel(c.events, &handler.EnqueueRequestForObject{})).
		Watches(&corev1.Node{}, toPool, builder.WithPredicates(predicate.NewPredicateFuncs(hasPoolLabel), nodewatch.Changed)).
		Watches(&appsv1.Deployment{}, toPool, hasPool).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(c.podPool), builder.WithPredicates(podMoved)).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Complete(counted.Reconciler("scaling", c))
}

func hasPoolLabel(o client.Object) bool { return o.GetLabels()[nodepools.LabelPool] != "" }

// podPool maps a pod to its pool: the pool label of the node it is bound to, or, before it is
// bound, the pool its nodeSelector asks for.
func (c *Controller) podPool(ctx context.Context, o client.Object) []reconcile.Request {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return nil
	}
	pool := p.Spec.NodeSelector[nodepools.LabelPool]
	if p.Spec.NodeName != "" {
		// The typed Node informer this controller already watches answers this.
		n := &corev1.Node{}
		if err := c.kubeClient.Get(ctx, types.NamespacedName{Name: p.Spec.NodeName}, n); err == nil {
			pool = n.GetLabels()[nodepools.LabelPool]
		}
	}
	if pool == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: pool}}}
}

// podMoved passes the pod events that can change a pool's busy nodes or node shapes: a pod
// created bound or aimed at a pool, bound to a node, finished, being deleted, or gone.
// warmpool's own pods (placeholders, cache protocol pods) never count as work, and status
// churn of a running pod changes nothing, so neither wakes the controller. DaemonSet pods
// (the engine's included, though warmpool renders it) do: their requests shape what a node
// offers runner pods.
//
// A placeholder landing on a node passes too: it gets its node's deletion cost (keepwarm.go)
// at once, not at the next periodic evaluation, which a scale-down may come before.
var podMoved = predicate.Funcs{
	CreateFunc: func(e event.CreateEvent) bool { return podRelevant(e.Object) || placeholderBound(nil, e.Object) },
	DeleteFunc: func(e event.DeleteEvent) bool { return podRelevant(e.Object) },
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*corev1.Pod)
		cur, okNew := e.ObjectNew.(*corev1.Pod)
		if !okOld || !okNew {
			return false
		}
		if placeholderBound(old, cur) {
			return true
		}
		if !podRelevant(cur) {
			return false
		}
		return old.Spec.NodeName != cur.Spec.NodeName || finished(old) != finished(cur) ||
			(old.DeletionTimestamp == nil) != (cur.DeletionTimestamp == nil)
	},
	GenericFunc: func(event.GenericEvent) bool { return false },
}

func podRelevant(o client.Object) bool {
	p, ok := o.(*corev1.Pod)
	if !ok || isWarmpools(p) && !isDaemon(p) {
		return false
	}
	return p.Spec.NodeName != "" || p.Spec.NodeSelector[nodepools.LabelPool] != ""
}

// placeholderBound says whether a placeholder was bound to a node between old (nil: it was
// just created) and cur.
func placeholderBound(old *corev1.Pod, cur client.Object) bool {
	p, ok := cur.(*corev1.Pod)
	if !ok || p.Labels[nodepools.LabelHeadroom] != "true" || p.Spec.NodeName == "" {
		return false
	}
	return old == nil || old.Spec.NodeName == ""
}
