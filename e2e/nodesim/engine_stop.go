package nodesim

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// terminate plays the kubelet stopping the engine container of a deleted pod, then confirms
// the deletion: the preStop hook (for real, within the grace period), then SIGTERM, upon which
// the engine's graceful stop waits for every attached client with no bound of its own; if
// the grace period ends first, SIGKILL: no clean record, the lock file stays.
func (e engineSim) terminate(ctx context.Context, proc *engineProc, pod *corev1.Pod) {
	key := proc.key
	// The API server set deletionTimestamp to the end of the grace period.
	deadline := pod.DeletionTimestamp.Time
	kill := func(why string) {
		e.mu.Lock()
		ended := proc.ended
		proc.release()
		if e.engines[key] == proc {
			delete(e.engines, key)
		}
		e.mu.Unlock()
		if !ended {
			e.record(Event{Kind: EngineKilled, Node: proc.node, Object: key, Detail: why})
		}
	}
	finish := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.confirmDeletion(cctx, pod); err != nil {
			e.logf("%s: %v", key, err)
		}
	}
	if pod.Annotations[AnnotationUncleanStop] == "true" {
		kill("unclean stop requested")
		finish()
		return
	}
	hookCtx, cancel := context.WithDeadline(ctx, deadline)
	res := e.runPreStop(hookCtx, pod, proc.metrics.addr)
	cancel()
	if res.ran {
		e.record(Event{Kind: EnginePreStop, Node: proc.node, Object: key, Detail: res.detail, ExitCode: res.code})
	}
	if ctx.Err() != nil {
		kill("killed before its graceful stop: " + context.Cause(ctx).Error())
		return // the simulator stopped, or the pod was force-deleted and already handled
	}
	// SIGTERM: the engine waits for its clients; the kubelet waits for the engine until
	// the grace period ends (at least sigtermMinimum after the hook).
	termDeadline := deadline
	if floor := time.Now().Add(sigtermMinimum); termDeadline.Before(floor) {
		termDeadline = floor
	}
	for {
		n := e.engineClients(proc.node)
		if n == 0 {
			break
		}
		if !time.Now().Before(termDeadline) {
			kill(fmt.Sprintf("grace period ended with %d clients attached (SIGKILL)", n))
			finish()
			return
		}
		select {
		case <-ctx.Done():
			kill("killed before its graceful stop: " + context.Cause(ctx).Error())
			return
		case <-time.After(clientPoll):
		}
	}
	e.mu.Lock()
	if proc.ended {
		e.mu.Unlock()
		return
	}
	err := proc.exit()
	if e.engines[key] == proc {
		delete(e.engines, key)
	}
	e.mu.Unlock()
	if err != nil {
		e.logf("%s: %v", key, err)
		e.record(Event{Kind: EngineKilled, Node: proc.node, Object: key, Detail: "graceful stop failed: " + err.Error()})
	} else {
		e.record(Event{Kind: EngineStopped, Node: proc.node, Object: key})
	}
	finish()
}

// engineClients counts the pods on node that are attached to its engine
// (AnnotationEngineClient): Running, from the informer cache.
func (s *Sim) engineClients(node string) int {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	pods := &corev1.PodList{}
	if err := s.client.List(ctx, pods, client.MatchingFields{podNodeIndex: node}); err != nil {
		s.logf("listing the pods on %s: %v", node, err)
		return -1 // unknown: neither "idle" to a drain nor a reason to stop
	}
	n := 0
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Annotations[AnnotationEngineClient] == "true" && p.Status.Phase == corev1.PodRunning {
			n++
		}
	}
	return n
}
