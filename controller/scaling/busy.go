package scaling

// The busy-state step: a busy pool's NodePool blocks consolidation (or, in surplus mode,
// limits it to the nodes beyond desired). The budget decided here goes to the shared
// state.Cluster, which tells the pools controller to render it, and onto the NodePool as
// state.AnnotationBusy, which a restarted controller resumes from.

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/state"
	"warmpool.io/warmpool/nodepools"
)

// BusyFieldManager owns the busy annotation on NodePools. It is not config.FieldManager: the
// pools controller applies the rest of the NodePool as config.FieldManager, and an apply drops
// every field its manager owned but left out, so a shared manager would erase the annotation
// each render.
const BusyFieldManager = "warmpool-scaling"

// followBusy puts the evaluation's busy budget in force: in the shared state (the pools
// controller re-renders the NodePool's budgets when it changed) and as an Event when the
// pool's busy state flips.
func (c *Controller) followBusy(ctx context.Context, np *karpv1.NodePool, ev *evaluation) {
	c.cluster.SetBusyBudget(ev.pool.Name, ev.busy)
	if ev.busy.Busy != ev.prev.Busy {
		switch {
		case ev.busy.Busy && ev.pool.Scaling.BusyBudget == config.BusyBudgetSurplus:
			c.recorder.Eventf(np, corev1.EventTypeNormal, ReasonBudgetsBlocked, "consolidation limited to the nodes beyond desired (%d now): %d queued, %d running jobs (warm window: %t)", ev.busy.Disruptable, ev.counts.Queued, ev.counts.Running, ev.decision.WarmWindowActive)
		case ev.busy.Busy:
			c.recorder.Eventf(np, corev1.EventTypeNormal, ReasonBudgetsBlocked, "consolidation blocked: %d queued, %d running jobs (warm window: %t)", ev.counts.Queued, ev.counts.Running, ev.decision.WarmWindowActive)
		default:
			c.recorder.Eventf(np, corev1.EventTypeNormal, ReasonBudgetsRestored, "queue idle: configured disruption budgets restored")
		}
	}
	if ev.busy.Busy && ev.prev.Busy && ev.busy.Disruptable != ev.prev.Disruptable {
		log.FromContext(ctx).Info("busy budget", "pool", ev.pool.Name, "disruptable", ev.busy.Disruptable, "previous", ev.prev.Disruptable, "nodes", ev.fleet.nodes, "desired", ev.decision.Desired)
	}
}

// persistBusy records busy on the pool's NodePool np (as Reconcile read it), once the NodePool
// exists (the pools controller creates it, rendering its budgets from the shared state, which
// needs no annotation yet). A NodePool that could not be read has no UID: the annotation is
// left for the next evaluation. Only a change from what resume read is written, so an idle
// pool that was never busy is not (see resume).
func (c *Controller) persistBusy(ctx context.Context, np *karpv1.NodePool, ps *poolState, busy bool) error {
	want := strconv.FormatBool(busy)
	c.mu.Lock()
	done := ps.persisted == want
	c.mu.Unlock()
	if done || np.UID == "" {
		return nil
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(nodepools.NodePoolGV.WithKind("NodePool"))
	u.SetName(np.Name)
	u.SetAnnotations(map[string]string{state.AnnotationBusy: want})
	if err := c.kubeClient.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(BusyFieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("recording busy=%s on NodePool %s, %w", want, u.GetName(), err)
	}
	c.mu.Lock()
	ps.persisted = want
	c.mu.Unlock()
	return nil
}
