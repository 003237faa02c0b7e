package scaling

// What wakes the controller: Enqueue (queue readings and config changes, wake.go), the pool's
// nodes, its headroom Deployment (not its status, nor its own applies: package echo) and the
// pods on its nodes changing, its NodePool appearing, and each reconcile's requeue at the
// pool's next change on the clock (next.go).

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/counted"
	"warmpool.io/warmpool/nodepools"
)

// nodeNameField indexes pods by node, so counting a pool's busy nodes reads only its pods.
const nodeNameField = "spec.nodeName"

// nodePoolField indexes nodes by their pool label, so reading a pool's nodes does not walk
// every node of the cluster (a label selector on the cache does).
const nodePoolField = "metadata.labels.pool"

// Register wires the controller: requests come from Enqueue (queue changes, config changes),
// from the pool's nodes, its headroom Deployment and the pods on its nodes changing, from its
// NodePool appearing, and from each reconcile's requeue.
func (c *Controller) Register(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, nodeNameField, func(o client.Object) []string {
		return []string{o.(*corev1.Pod).Spec.NodeName}
	}); err != nil {
		return fmt.Errorf("indexing pods by node, %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Node{}, nodePoolField, func(o client.Object) []string {
		if pool := o.GetLabels()[nodepools.LabelPool]; pool != "" {
			return []string{pool}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing nodes by pool, %w", err)
	}
	c.nodesIndexed = true
	// Pods: a runner pod landing on (or leaving) a node changes the pool's busy nodes, so its
	// headroom should follow at once, not on the next periodic evaluation. This reuses the
	// full-object Pod informer the busy-node count above already needs (spec.nodeName, phase,
	// owners, all namespaces: runners live anywhere), so it costs no second cache. A
	// metadata-only watch would add an informer of its own and still could not tell which node
	// a pod is on; a label filter cannot name runner pods, which carry no warmpool label.
	//
	// NodePools: the busy state is recorded on the pool's NodePool once it exists, and the
	// pools controller may create it after the pool's first evaluation. Only creations wake
	// the pool; the informer is the one the pools controller already runs.
	return ctrl.NewControllerManagedBy(mgr).
		Named("scaling").
		WatchesRawSource(c.wake).
		Watches(&corev1.Node{}, toPools, builder.WithPredicates(nodeChanged)).
		Watches(&appsv1.Deployment{}, toPools, builder.WithPredicates(predicate.NewPredicateFuncs(hasPoolLabel), headroomChanged, c.written.NotOurs("Deployment"))).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(c.podPool), builder.WithPredicates(podMoved)).
		Watches(&karpv1.NodePool{}, toPools, builder.WithPredicates(predicate.NewPredicateFuncs(hasPoolLabel), created)).
		// Pools are independent (each one's state is its own, the shared parts lock): a cold
		// start or a config change evaluates every pool, each waiting on a few API round trips.
		WithOptions(controller.Options{MaxConcurrentReconciles: 8}).
		Complete(counted.Reconciler("scaling", c))
}

func hasPoolLabel(o client.Object) bool { return o.GetLabels()[nodepools.LabelPool] != "" }

// toPools wakes the pool an object is labelled with, and on an update also the pool it was
// labelled with before: a node relabelled out of a pool leaves that pool's fleet, and nothing
// else would tell it.
var toPools = handler.Funcs{
	CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		addPool(q, e.Object)
	},
	UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		addPool(q, e.ObjectOld)
		addPool(q, e.ObjectNew)
	},
	DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		addPool(q, e.Object)
	},
	GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		addPool(q, e.Object)
	},
}

func addPool(q workqueue.TypedRateLimitingInterface[reconcile.Request], o client.Object) {
	if o == nil {
		return
	}
	if pool := o.GetLabels()[nodepools.LabelPool]; pool != "" {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: pool}})
	}
}

// headroomChanged passes what an evaluation acts on in a headroom Deployment: its creation and
// deletion, its spec (the generation: a hand edit is put back), labels and annotations (the
// state it records, read back after a restart), and its deletion starting. Not its status,
// which the Deployment controller rewrites as each placeholder is created, scheduled and
// ready, two to four times per change of replicas: the evaluation never reads it, and the
// placeholders themselves are watched as pods (podMoved).
var headroomChanged = predicate.Or[client.Object](
	predicate.GenerationChangedPredicate{},
	predicate.LabelChangedPredicate{},
	predicate.AnnotationChangedPredicate{},
	predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return (e.ObjectOld.GetDeletionTimestamp() == nil) != (e.ObjectNew.GetDeletionTimestamp() == nil)
		},
	},
)

// created passes creations only.
var created = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return true },
	UpdateFunc:  func(event.UpdateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
}

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
		if err := c.kubeClient.Get(ctx, types.NamespacedName{Name: p.Spec.NodeName}, n, client.UnsafeDisableDeepCopy); err == nil {
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
