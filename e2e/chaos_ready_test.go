package e2e_test

import (
	"testing"

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
