package scaling

// Which Node events wake a pool: only those that change what an evaluation reads of a node. A
// large cluster rewrites its nodes for reasons of its own (the controller-manager's TTL
// annotation as the cluster grows, kubelet annotations, taints warmpool does not look at here),
// and every such write woke the node's pool: about 190 evaluations in the footprint benchmark's
// idle minute, once evaluations stopped hiding them behind a 10 s requeue.

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/controller/nodewatch"
	"warmpool.io/warmpool/nodepools"
)

// nodeChanged passes a pool's nodes appearing and going, and updates of what an evaluation
// reads of a node (fleet.go, keepwarm.go): its pool, its deletion, whether it is Ready, its
// allocatable, its restore verdict. An update passes when the node is in a pool before or
// after it, so a node relabelled out of a pool wakes that pool (toPools).
var nodeChanged = predicate.Funcs{
	CreateFunc:  func(e event.CreateEvent) bool { return hasPoolLabel(e.Object) },
	DeleteFunc:  func(e event.DeleteEvent) bool { return hasPoolLabel(e.Object) },
	GenericFunc: func(e event.GenericEvent) bool { return hasPoolLabel(e.Object) },
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*corev1.Node)
		cur, okNew := e.ObjectNew.(*corev1.Node)
		if !okOld || !okNew {
			return false
		}
		return (hasPoolLabel(old) || hasPoolLabel(cur)) && nodeReadChanged(old, cur)
	},
}

// nodeReadChanged says whether two versions of a node differ in what an evaluation reads.
func nodeReadChanged(old, cur *corev1.Node) bool {
	return old.Labels[nodepools.LabelPool] != cur.Labels[nodepools.LabelPool] ||
		(old.DeletionTimestamp == nil) != (cur.DeletionTimestamp == nil) ||
		nodewatch.Ready(old) != nodewatch.Ready(cur) ||
		!equality.Semantic.DeepEqual(old.Status.Allocatable, cur.Status.Allocatable) ||
		old.Annotations[enginecache.AnnotationRestore] != cur.Annotations[enginecache.AnnotationRestore]
}
