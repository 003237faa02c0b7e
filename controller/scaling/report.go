package scaling

// The report step: every decision is an Event on the pool's NodePool and a metric.

import (
	"context"
	"fmt"
	"math"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/scaling/policy"
)

// Event reasons on the pool's NodePool.
const (
	ReasonScaledUp        = "ScaledUp"
	ReasonScaledDown      = "ScaledDown"
	ReasonBudgetsBlocked  = "ConsolidationBlocked"
	ReasonBudgetsRestored = "ConsolidationRestored"
	ReasonPolicyInvalid   = "ScalingPolicyInvalid"
	ReasonHeadroomFailed  = "HeadroomFailed"
	// ReasonResumed is the Event of a pool's first evaluation in a new process: where its
	// state came from and what the evaluation made of it.
	ReasonResumed = "ScalingResumed"
	// ReasonSpareChanged is the Event of a change of the spare (idle nodes above demand), at
	// most one per pool per spareEventEvery unless what sets it changes.
	ReasonSpareChanged = "SpareChanged"
)

// report sets the pool's gauges and records the evaluation's Events: where a new process
// resumed from, and any change of the desired nodes.
func (c *Controller) report(ctx context.Context, np *karpv1.NodePool, ev *evaluation) {
	name, d, counts := ev.pool.Name, ev.decision, ev.counts
	nodes, busyNodes, headroom := ev.fleet.nodes, ev.fleet.busy, ev.headroom()
	desiredNodes.WithLabelValues(name).Set(float64(d.Desired))
	headroomPods.WithLabelValues(name).Set(float64(headroom))
	poolNodes.WithLabelValues(name).Set(float64(nodes))
	poolBusy.WithLabelValues(name).Set(boolFloat(ev.busy.Busy))
	spareNodes.WithLabelValues(name).Set(float64(d.Spare))
	burstHoldNodes.WithLabelValues(name).Set(float64(d.BurstHold))
	for _, from := range policy.SpareSources() {
		spareFrom.WithLabelValues(name, string(from)).Set(boolFloat(d.SpareFrom == from))
	}
	rate := math.NaN()
	if d.ArrivalsKnown {
		rate = d.ArrivalRate
	}
	arrivalRate.WithLabelValues(name).Set(rate)
	if ev.spareEvent {
		c.recorder.Eventf(np, corev1.EventTypeNormal, ReasonSpareChanged, "spare nodes %d -> %d (%s): %s",
			ev.prevSpare, d.Spare, spareReason(d.SpareFrom), spareDetail(policy.SpareFromConfig(ev.pool.Scaling.Spare), d))
		log.FromContext(ctx).Info("spare changed", "pool", name, "spare", d.Spare, "previous", ev.prevSpare, "from", d.SpareFrom,
			"arrivalRatePerMinute", d.ArrivalRate, "arrivalsKnown", d.ArrivalsKnown)
	}
	if d.Direction != policy.DirectionNone {
		decisions.WithLabelValues(name, string(d.Direction), string(d.Reason)).Inc()
	}
	if ev.resumedFrom != "" {
		c.recorder.Eventf(np, corev1.EventTypeNormal, ReasonResumed, "scaling resumed at desired nodes %d from %s; now %d (%s): %d queued, %d running jobs (known: %t), %d nodes, %d busy, %d headroom pods",
			ev.prevDesired, ev.resumedFrom, d.Desired, d.Reason, counts.Queued, counts.Running, ev.known, nodes, busyNodes, headroom)
		log.FromContext(ctx).Info("scaling resumed", "pool", name, "desired", ev.prevDesired, "from", ev.resumedFrom, "now", d.Desired, "known", ev.known)
	}
	if d.Desired != ev.prevDesired {
		reason := ReasonScaledUp
		if d.Desired < ev.prevDesired {
			reason = ReasonScaledDown
		}
		c.recorder.Eventf(np, corev1.EventTypeNormal, reason, "desired nodes %d -> %d (%s): %d queued, %d running jobs, %d nodes, %d busy, %d headroom pods",
			ev.prevDesired, d.Desired, d.Reason, counts.Queued, counts.Running, nodes, busyNodes, headroom)
		log.FromContext(ctx).Info("scaling decision", "pool", name, "desired", d.Desired, "previous", ev.prevDesired, "reason", d.Reason, "queued", counts.Queued, "running", counts.Running, "known", ev.known)
	}
}

// spareReason names what set the spare; none when there is none.
func spareReason(from policy.SpareSource) string {
	if from == "" {
		return "none"
	}
	return string(from)
}

// spareDetail is the arrival rate and the limits behind a spare, for its Event.
func spareDetail(s policy.Spare, d policy.Decision) string {
	rate := "unknown"
	if d.ArrivalsKnown {
		rate = fmt.Sprintf("%.1f jobs/min", d.ArrivalRate)
	}
	if s.Probability == 0 {
		return fmt.Sprintf("arrival rate not used (spare mode not adaptive), constant %d, limit %d", s.Constant, s.Max)
	}
	return fmt.Sprintf("arrival rate %s over a %s window, boot time %s at %.0f%%, constant %d, limit %d",
		rate, s.Window, s.BootTime, s.Probability*100, s.Constant, s.Max)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
