package enginecache

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/enginecache/steps"
	"warmpool.io/warmpool/volumes"
)

// awaitRunners keeps the engine running while CI work on the node may still use it. No engine
// release bounds its graceful stop while a client is attached (v0.21+ waits for every client;
// before, the gRPC stop ahead of the capped one does), so an engine stopped under a running job
// either outlives its grace period and is SIGKILLed, which wipes the cache, or cuts the job off.
// Karpenter evicts these pods first (DaemonSet pods go last), so the wait is normally short; it
// is bounded by the latest moment the engine can still stop and leave time for a copy. Past
// that the engine is stopped anyway and the outcome (unclean, most likely) is reported.
func (c *SaveController) awaitRunners(ctx context.Context, s *saveState) (steps.Exit, error) {
	if s.job != nil || s.pvc != nil || s.node == nil || !volumes.EngineStoppable(s.signals) {
		return steps.Next, nil
	}
	engines, err := c.enginePods(ctx, s.pool, s.name)
	if err != nil {
		return steps.Stop, err
	}
	if len(engines) == 0 {
		return steps.Next, nil
	}
	for _, p := range engines {
		if p.DeletionTimestamp != nil {
			return steps.Next, nil // already told to stop: waiting now changes nothing
		}
	}
	pods := &corev1.PodList{}
	// Read live with the API server's own spec.nodeName selector: this runs only for nodes
	// being saved, and needs no pod index in the cache.
	if err := c.live.List(ctx, pods, client.MatchingFields{"spec.nodeName": s.name}); err != nil {
		return steps.Stop, fmt.Errorf("listing pods on node %s, %w", s.name, err)
	}
	var busy []string
	for i := range pods.Items {
		if isWork(&pods.Items[i]) && !slices.ContainsFunc(engines, func(e *corev1.Pod) bool { return e.UID == pods.Items[i].UID }) {
			busy = append(busy, pods.Items[i].Namespace+"/"+pods.Items[i].Name)
		}
	}
	if len(busy) == 0 {
		return steps.Next, nil
	}
	now := c.clk.Now()
	by := c.window().EngineStopBy(s.deadline, engineStopReserve(s.pool))
	if !now.Before(by) {
		c.recorder.Eventf(s.node, corev1.EventTypeWarning, ReasonRunnersOutlived, msgRunnersOutlived,
			len(busy), strings.Join(firstN(busy, 3), ", "), stamp(by))
		return steps.Next, nil
	}
	if s.guard.Annotations[annotationAwaitingRunners] == "" {
		patch := client.MergeFrom(s.guard.DeepCopy())
		s.guard.Annotations[annotationAwaitingRunners] = stamp(now)
		if err := c.kube.Patch(ctx, s.guard, patch); err != nil {
			return steps.Stop, fmt.Errorf("recording the wait for runners on guard %s, %w", s.guard.Name, err)
		}
		c.recorder.Eventf(s.node, corev1.EventTypeNormal, ReasonAwaitingRunners, msgAwaitingRunners,
			len(busy), strings.Join(firstN(busy, 3), ", "), stamp(by))
	}
	log.FromContext(ctx).V(1).Info("waiting for work pods before stopping the engine", "pods", busy, "until", by)
	return steps.WaitFor(min(runnerPoll, max(by.Sub(now), time.Second))), nil
}

// engineStopReserve is the time the engine's own stop needs once no client is attached (prune,
// persist its cache, close the bolt DBs, syncfs), plus SIGTERM delivery: warmpool reserves it,
// the engine enforces nothing.
func engineStopReserve(p *config.Pool) time.Duration {
	return time.Duration(p.Engine.StopSecondsOrDefault()+config.EngineExitSeconds) * time.Second
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}

// stopEngine evicts the node's engine pod so its preStop and graceful exit write the clean
// shutdown marker, and waits until it is gone. Karpenter would not evict it while the guard
// holds the drain (DaemonSet pods go in a later drain group), and the DaemonSet controller does
// not put it back because it does not tolerate the disrupted taint.
func (c *SaveController) stopEngine(ctx context.Context, s *saveState) (steps.Exit, error) {
	if s.job != nil || s.pvc != nil {
		return steps.Next, nil
	}
	if s.node == nil {
		return steps.Stop, c.conclude(ctx, s, volumes.LostNodeGone, "the node went before its engine stopped")
	}
	if !volumes.EngineStoppable(s.signals) {
		// Karpenter taints the node as soon as its finalizer runs.
		return steps.WaitFor(c.poll(s)), nil
	}
	engines, err := c.enginePods(ctx, s.pool, s.name)
	if err != nil {
		return steps.Stop, err
	}
	if len(engines) == 0 {
		return steps.Next, nil
	}
	if v := engines[0].Labels[volumes.LabelEngineVersion]; v != "" && s.guard.Annotations[annotationEngineVersion] != v {
		// The cache is the running engine's, which may predate a config change of the version.
		patch := client.MergeFrom(s.guard.DeepCopy())
		s.guard.Annotations[annotationEngineVersion] = v
		if err := c.kube.Patch(ctx, s.guard, patch); err != nil {
			return steps.Stop, fmt.Errorf("recording engine version on guard %s, %w", s.guard.Name, err)
		}
	}
	for _, p := range engines {
		if p.DeletionTimestamp != nil {
			continue
		}
		ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}}
		if err := c.kube.SubResource("eviction").Create(ctx, p, ev); err != nil {
			if apierrors.IsTooManyRequests(err) {
				log.FromContext(ctx).Info("engine eviction blocked by a disruption budget, retrying", "pod", p.Name)
				continue
			}
			if !apierrors.IsNotFound(err) {
				return steps.Stop, fmt.Errorf("evicting engine pod %s/%s, %w", p.Namespace, p.Name, err)
			}
		}
		c.recorder.Eventf(s.node, corev1.EventTypeNormal, ReasonEngineStopped, msgEngineStopped, p.Namespace, p.Name)
	}
	return steps.WaitFor(c.poll(s)), nil
}
