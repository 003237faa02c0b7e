// Package nodewatch filters Node events down to the changes warmpool's controllers act on, and
// reads the one Node condition they share (Ready).
// A kubelet re-posts its Node's status periodically (at least every nodeStatusReportFrequency,
// 5 min by default) just to renew heartbeat times; reconciling on each of those costs CPU in
// proportion to the fleet and decides nothing.
package nodewatch

import (
	"reflect"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// Changed passes creates, deletes and generic events, and updates that change what a
// controller can act on: labels, annotations, finalizers, deletion, the spec (taints,
// unschedulable), allocatable, or the status of a condition. Heartbeat-only updates are dropped.
var Changed = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, ok1 := e.ObjectOld.(*corev1.Node)
		cur, ok2 := e.ObjectNew.(*corev1.Node)
		if !ok1 || !ok2 {
			return true
		}
		return Differ(old, cur)
	},
}

// Differ reports whether two versions of a Node differ in anything but heartbeats and other
// status the controllers do not read (images, daemon endpoints, volumes in use).
func Differ(old, cur *corev1.Node) bool {
	switch {
	case !reflect.DeepEqual(old.Labels, cur.Labels),
		!reflect.DeepEqual(old.Annotations, cur.Annotations),
		!reflect.DeepEqual(old.Finalizers, cur.Finalizers),
		!equality.Semantic.DeepEqual(old.DeletionTimestamp, cur.DeletionTimestamp),
		!equality.Semantic.DeepEqual(old.Spec, cur.Spec),
		!equality.Semantic.DeepEqual(old.Status.Allocatable, cur.Status.Allocatable):
		return true
	}
	return conditionStatuses(old) != conditionStatuses(cur)
}

// conditionStatuses is the node's conditions as "Type=Status;..." in their listed order.
func conditionStatuses(n *corev1.Node) string {
	s := ""
	for _, c := range n.Status.Conditions {
		s += string(c.Type) + "=" + string(c.Status) + ";"
	}
	return s
}

// Ready reports whether the Node's Ready condition is True: the one status condition the
// controllers and warmpool status read.
func Ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
