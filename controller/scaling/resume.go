package scaling

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/nodepools"
)

// AnnotationState on a pool's headroom object (the placeholder Deployment or the
// CapacityBuffer) records the scaling policy's state (policy.State as JSON: the desired count
// and the recommendations still holding it, the arrival-rate estimate and the adaptive spare) as
// of the last change of the desired count, of the end of its stabilization hold or of the
// adaptive spare, and at least every half window while nodes are desired.
// A restarted controller resumes from it, so a restart changes neither the headroom nor when a
// scale-down in progress completes.
const AnnotationState = "warmpool.io/scaling-state"

// actuated is what the headroom object of a pool says was last actuated.
type actuated struct {
	// object names it ("Deployment ns/name"); "" when the pool has none.
	object string
	// state is its AnnotationState ("" when absent); replicas its replicas (nil when unset).
	state    string
	replicas *int32
}

// resumeState is the policy state a pool starts from in a new process, from what its headroom
// object says was last actuated (pure: the caller reads the object):
//
//   - the recorded state, as it was: its history keeps holding what it held, and runs out
//     when it would have without the restart;
//   - else (an object written before states were recorded, or a state that does not parse)
//     the replicas plus the nodes busy now, which keeps the headroom as it is, with no history:
//     a known queue is trusted at once (limited by scaleDownStep);
//   - else (no object: a new pool, or one never actuated) 0.
//
// Never the pool's current node count: nodes that exist are no evidence of demand, and holding
// them for a window after each restart pinned idle nodes, forever in a crash loop.
func resumeState(a actuated, busyNodes int, now time.Time) (policy.State, string, error) {
	if a.state != "" {
		var s policy.State
		err := json.Unmarshal([]byte(a.state), &s)
		if err == nil && s.Desired < 0 {
			err = fmt.Errorf("desired %d is negative", s.Desired)
		}
		if err == nil {
			if s.LastEvaluation.IsZero() {
				s.LastEvaluation = now
			}
			return s, fmt.Sprintf("the state recorded on %s", a.object), nil
		}
		parseErr := fmt.Errorf("reading %s of %s, %w", AnnotationState, a.object, err)
		if a.replicas == nil {
			return policy.State{LastEvaluation: now}, "nothing (its recorded state is unreadable)", parseErr
		}
		return policy.State{Desired: int(max(*a.replicas, 0)) + busyNodes, LastEvaluation: now},
			fmt.Sprintf("the replicas of %s plus its busy nodes (its recorded state is unreadable)", a.object), parseErr
	}
	if a.replicas != nil {
		return policy.State{Desired: int(max(*a.replicas, 0)) + busyNodes, LastEvaluation: now},
			fmt.Sprintf("the replicas of %s plus its busy nodes", a.object), nil
	}
	return policy.State{LastEvaluation: now}, "nothing actuated before", nil
}

// resume seeds a pool's first evaluation in this process: its busy state from the NodePool's
// state.AnnotationBusy (into the shared state), its policy state from its headroom object (resumeState). It returns where
// the state came from.
func (c *Controller) resume(ctx context.Context, p *config.Pool, ps *poolState, busyNodes int) (string, error) {
	a, err := c.lastActuated(ctx, p)
	if err != nil {
		return "", err
	}
	state, from, err := resumeState(a, busyNodes, c.clk.Now())
	if err != nil {
		// A hand-edited annotation: resume from the replicas, and say so.
		log.FromContext(ctx).Error(err, "resuming the scaling state", "pool", p.Name, "from", from)
	}
	busy, raw := c.cluster.PersistedBusy(ctx, p.Name)
	c.cluster.SeedBusy(p.Name, busy)
	c.mu.Lock()
	defer c.mu.Unlock()
	if raw == "" {
		// A NodePool without the annotation reads as idle (PersistedBusy), so idle is what
		// it records: an idle pool that was never busy is not written. At a cold start that
		// was a second write of every NodePool, each one more reconcile for Karpenter.
		raw = strconv.FormatBool(false)
	}
	ps.persisted = raw
	ps.state, ps.desired = state, state.Desired
	if err == nil && a.state != "" {
		// Already recorded: the first apply need not write it again.
		ps.recorded, ps.recordedDesired, ps.recordedAt = a.state, state.Desired, state.LastEvaluation
		// What the record says of the spare and the burst hold, too: a first evaluation that
		// decides the same must not rewrite the record (on a Deployment any annotation change
		// bumps its generation).
		ps.recordedSlots, ps.recordedSpare, ps.recordedHold = state.SpareSlots, state.Spare, state.BurstHold
	}
	ps.seeded = true
	return from, nil
}

// lastActuated reads the pool's headroom object: the one its configured actuator writes, else
// the other one (the actuator was switched while warmpool was down).
func (c *Controller) lastActuated(ctx context.Context, p *config.Pool) (actuated, error) {
	readers := []func(context.Context, string) (actuated, error){c.lastDeployment, c.lastBuffer}
	if p.Scaling.Headroom == config.HeadroomCapacityBuffer {
		readers[0], readers[1] = readers[1], readers[0]
	}
	for _, read := range readers {
		a, err := read(ctx, p.Name)
		if err != nil || a.object != "" {
			return a, err
		}
	}
	return actuated{}, nil
}

// lastDeployment reads the placeholder Deployment through the cache (the controller watches it).
func (c *Controller) lastDeployment(ctx context.Context, pool string) (actuated, error) {
	d := &appsv1.Deployment{}
	key := types.NamespacedName{Namespace: c.namespace, Name: nodepools.HeadroomName(pool)}
	if err := c.kubeClient.Get(ctx, key, d); err != nil {
		if apierrors.IsNotFound(err) {
			return actuated{}, nil
		}
		return actuated{}, fmt.Errorf("reading the headroom Deployment of pool %s, %w", pool, err)
	}
	if d.DeletionTimestamp != nil {
		return actuated{}, nil
	}
	return actuated{object: "Deployment " + key.String(), state: d.Annotations[AnnotationState], replicas: d.Spec.Replicas}, nil
}

// lastBuffer reads the CapacityBuffer from the API server (unstructured reads are not cached:
// once per pool and process, a watch on a kind that may not be served is not worth it).
func (c *Controller) lastBuffer(ctx context.Context, pool string) (actuated, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(nodepools.CapacityBufferGV.WithKind("CapacityBuffer"))
	key := types.NamespacedName{Namespace: c.namespace, Name: nodepools.HeadroomName(pool)}
	if err := c.kubeClient.Get(ctx, key, u); err != nil {
		if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
			return actuated{}, nil
		}
		return actuated{}, fmt.Errorf("reading the CapacityBuffer of pool %s, %w", pool, err)
	}
	if u.GetDeletionTimestamp() != nil {
		return actuated{}, nil
	}
	a := actuated{object: "CapacityBuffer " + key.String(), state: u.GetAnnotations()[AnnotationState]}
	if r, found, err := unstructured.NestedInt64(u.Object, "spec", "replicas"); err == nil && found {
		a.replicas = ptr.To(int32(r))
	}
	return a, nil
}
