package scaling_test

import (
	"fmt"
	"strconv"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/controller/scaling"
	"warmpool.io/warmpool/nodepools"
)

// busyWith is the budgets of a busy pool whose busy budget lets n nodes be consolidated.
func busyWith(n int, configured []karpv1.Budget) []karpv1.Budget {
	first := karpv1.Budget{Nodes: strconv.Itoa(n), Reasons: []karpv1.DisruptionReason{karpv1.DisruptionReasonEmpty, karpv1.DisruptionReasonUnderutilized}}
	return append([]karpv1.Budget{first}, configured...)
}

// TestBusyBudgetSurplus: with scaling.busyBudget surplus, a busy pool's first budget lets
// Karpenter consolidate exactly the nodes beyond desired (current - desired, never below 0),
// following both the queue and the node count; the default block mode keeps it at "0" through
// the same changes. Idle, both carry their configured budgets alone.
func TestBusyBudgetSurplus(t *testing.T) {
	surplus, block := poolName("surplus"), poolName("block")
	// No stabilization window (0s) lets desired follow the queue down at once.
	e := newEnv(t, configYAML(
		poolYAML(surplus, ciSource, "scaling: {burstHold: {percent: 0}, jobsPerNode: 1, scaleDownStabilization: 0s, busyBudget: surplus}"),
		poolYAML(block, ciSource, "scaling: {burstHold: {percent: 0}, jobsPerNode: 1, scaleDownStabilization: 0s, busyBudget: block}"),
	))
	e.waitReplicas(surplus, 0)
	e.waitReplicas(block, 0)
	for _, pool := range []string{surplus, block} {
		for i := 1; i <= 5; i++ {
			newNode(t, fmt.Sprintf("%s-%d", pool, i), pool)
		}
		waitGauge(t, nodesGauge, pool, 5)
		checkBudgets(t, pool, defaultBudgets)
	}

	steps := []struct {
		what         string
		queued       int
		addNode      bool
		wantSurplus  int // nodes the surplus pool's busy budget allows
		wantDesired  float64
		wantPoolSize float64
	}{
		{"2 queued on 5 nodes", 2, false, 3, 2, 5},
		{"4 queued on 5 nodes", 4, false, 1, 4, 5},
		{"a 6th node joins", 4, true, 2, 4, 6},
		{"more queued than nodes", 9, false, 0, 9, 6},
		{"back to 1 queued", 1, false, 5, 1, 6},
	}
	for _, s := range steps {
		for _, pool := range []string{surplus, block} {
			if s.addNode {
				newNode(t, pool+"-6", pool)
			}
			e.record(pool, queue.Counts{Queued: s.queued}, nil)
			waitGauge(t, desiredGauge, pool, s.wantDesired)
			waitGauge(t, nodesGauge, pool, s.wantPoolSize)
		}
		waitBudgets(t, surplus, busyWith(s.wantSurplus, defaultBudgets))
		if got := e.Mgr.State.BusyBudget(surplus); got != (nodepools.BusyBudget{Busy: true, Disruptable: s.wantSurplus}) {
			t.Errorf("%s: BusyBudget(%s) = %+v, want busy with %d disruptable", s.what, surplus, got, s.wantSurplus)
		}
		// The block pool was evaluated on the same inputs (its gauges above): "0" throughout.
		// (The first step waits for the render that follows the pool turning busy.)
		if s.what == steps[0].what {
			waitBudgets(t, block, busyWith(0, defaultBudgets))
		}
		checkBudgets(t, block, busyWith(0, defaultBudgets))
		if got := e.Mgr.State.BusyBudget(block); got != (nodepools.BusyBudget{Busy: true}) {
			t.Errorf("%s: BusyBudget(%s) = %+v, want busy with 0 disruptable", s.what, block, got)
		}
	}
	waitEvent(t, surplus, scaling.ReasonBudgetsBlocked, "consolidation limited to the nodes beyond desired (3 now)")
	waitEvent(t, block, scaling.ReasonBudgetsBlocked, "consolidation blocked")
	if !equality.Semantic.DeepEqual(busyWith(0, defaultBudgets)[0], nodepools.BlockingBudget) {
		t.Errorf("block mode's budget %+v is not BlockingBudget %+v", busyWith(0, defaultBudgets)[0], nodepools.BlockingBudget)
	}

	for _, pool := range []string{surplus, block} {
		e.record(pool, queue.Counts{}, nil)
	}
	waitBudgets(t, surplus, defaultBudgets)
	waitBudgets(t, block, defaultBudgets)
}
