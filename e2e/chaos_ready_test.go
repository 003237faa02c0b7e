package e2e_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/e2e/scenario"
)

// expectNodesStayReady fails the test if any Node's Ready condition leaves True while it runs,
// its cleanups included (issue #11: kwok heartbeats every ~55 s, past kube-controller-manager's
// default 50 s grace, and Karpenter deletes a NotReady node it drains at once, so a scenario
// that holds a node would pass or fail by luck; e2e/cluster runs kube-controller-manager with
// a grace period that rules this out, and this is what holds it to that). Call it first, so
// its cleanup runs last.
func expectNodesStayReady(t *testing.T) {
	t.Helper()
	w, err := scenario.WatchNodeReady(t.Context(), local.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range w.Stop() {
			t.Errorf("the harness let a node flap: %s", n)
		}
	})
}

// TestNodeReadyWatchSeesAFlap holds the watch behind expectNodesStayReady to what it claims:
// a Node (of no pool, tainted so nothing lands on it) whose Ready goes True -> Unknown -> True
// within moments, as a missed heartbeat does, is seen once, with the condition's reason.
func TestNodeReadyWatchSeesAFlap(t *testing.T) {
	ctx, kube := t.Context(), local.Client
	w, err := scenario.WatchNodeReady(ctx, local.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "ready-watch-flap"},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "warmpool.io/test", Effect: corev1.TaintEffectNoSchedule}}},
	}
	if err := kube.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := kube.Delete(context.WithoutCancel(ctx), node); client.IgnoreNotFound(err) != nil {
			t.Error(err)
		}
	}()
	setReady := func(status corev1.ConditionStatus, reason string) {
		t.Helper()
		now := metav1.Now()
		// A patch, not an update: kube-controller-manager writes to a new Node too.
		patch := client.MergeFrom(node.DeepCopy())
		node.Status.Conditions = []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: status, Reason: reason, Message: "set by the test",
			LastHeartbeatTime: now, LastTransitionTime: now,
		}}
		if err := kube.Status().Patch(ctx, node, patch); err != nil {
			t.Fatal(err)
		}
	}
	setReady(corev1.ConditionTrue, "KubeletReady")
	setReady(corev1.ConditionUnknown, "NodeStatusUnknown")
	setReady(corev1.ConditionTrue, "KubeletReady")
	waitFor(t, "the watch to see the flap", func(context.Context) (bool, error) {
		for _, n := range w.Transitions() {
			if n.Node == node.Name {
				return true, nil
			}
		}
		return false, nil
	})
	var flaps []scenario.NotReady
	for _, n := range w.Stop() {
		if n.Node == node.Name {
			flaps = append(flaps, n)
		}
	}
	if len(flaps) != 1 || flaps[0].Status != corev1.ConditionUnknown || flaps[0].Reason != "NodeStatusUnknown" {
		t.Errorf("the watch saw %v, want one Ready=Unknown (NodeStatusUnknown) on %s", flaps, node.Name)
	}
}
