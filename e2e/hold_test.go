package e2e_test

import (
	"context"
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/e2e/nodesim"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// holdPodOn is the hold pod of the cached pool on node, nil when there is none.
func holdPodOn(ctx context.Context, node string) (*corev1.Pod, error) {
	pods := &corev1.PodList{}
	if err := local.Client.List(ctx, pods, client.InNamespace(scenario.Namespace), client.MatchingLabels(nodepools.HoldSelector(cachedPool))); err != nil {
		return nil, err
	}
	for i := range pods.Items {
		if pods.Items[i].Spec.NodeName == node {
			return &pods.Items[i], nil
		}
	}
	return nil, nil
}

// TestHoldSavesANodeConsolidatedWhileTheControllerIsDown is issue #11's outage: the real
// controller binary is killed (SIGKILL, by its PID) before Karpenter consolidates an empty
// cache node. Karpenter drains the node with nothing of warmpool's running: its runner is gone,
// and it evicts the DaemonSet pods, the engine (which stops cleanly through its drain hook) and
// the hold, whose preStop hook keeps the node while no guard exists. A controller started
// seconds later finds the node still there, guards it, saves its cache and releases the hold;
// the next node starts warm from that cache, byte for byte.
func TestHoldSavesANodeConsolidatedWhileTheControllerIsDown(t *testing.T) {
	ctx, kube, sim := t.Context(), local.Client, local.Nodesim
	expectNodesStayReady(t)
	if err := scenario.SetConfig(ctx, kube, cacheConfig); err != nil {
		t.Fatal(err)
	}
	logSimEvents(t)
	first := startController(t, "hold-first")
	defer cleanupCachedPool(t)

	r1, nodeA := runCacheRunner(t, "hold-runner-1")
	t.Logf("node A: %s", nodeA)
	waitFor(t, "the engine on A to start", func(context.Context) (bool, error) {
		return sim.Count(nodesim.EngineColdStart, nodeA) == 1, nil
	})
	waitFor(t, "the hold pod to run on A", func(ctx context.Context) (bool, error) {
		p, err := holdPodOn(ctx, nodeA)
		return p != nil && p.Status.Phase == corev1.PodRunning, err
	})

	// The outage: the controller dies, then the node becomes empty.
	first.kill()
	down := time.Now()
	if err := kube.Delete(ctx, r1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Karpenter to drain A: its engine stopped, its hold waiting", func(ctx context.Context) (bool, error) {
		n := &corev1.Node{}
		if err := kube.Get(ctx, client.ObjectKey{Name: nodeA}, n); err != nil {
			return false, err
		}
		hold, err := holdPodOn(ctx, nodeA)
		return n.DeletionTimestamp != nil && sim.Count(nodesim.EngineStopped, nodeA) == 1 && hold != nil && hold.DeletionTimestamp != nil, err
	})
	// Nothing of warmpool's runs, and the node stays: the hold keeps Karpenter's drain waiting.
	time.Sleep(5 * time.Second)
	if err := kube.Get(ctx, client.ObjectKey{Name: nodeA}, &corev1.Node{}); err != nil {
		t.Fatalf("node A went while the controller was down (%v): its cache is lost", err)
	}
	if exists := kube.Get(ctx, client.ObjectKey{Namespace: scenario.Namespace, Name: volumes.GuardName(nodeA)}, &corev1.Pod{}); exists == nil {
		t.Fatal("a guard exists although no controller ran")
	}

	startController(t, "hold-second")
	t.Logf("controller down for %s", time.Since(down).Round(time.Second))
	waitFor(t, "the save on A to run", func(context.Context) (bool, error) {
		return savesOn(sim, nodeA, volumes.ResultSaved) == 1, nil
	})
	waitFor(t, "node A to be gone", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKey{Name: nodeA}, &corev1.Node{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	released := false
	for _, e := range sim.Events() {
		if e.Kind == nodesim.HoldPreStop && e.Node == nodeA {
			released = e.ExitCode == 0 && strings.Contains(e.Detail, "concluded the save")
			t.Logf("A's hold: %s", e.Detail)
		}
	}
	if !released {
		t.Error("A's hold was not released by the save's outcome")
	}
	expectNodeEvent(t, nodeA, enginecache.ReasonSaved)
	if e := findNodeEvent(t, nodeA, enginecache.ReasonLost); e != nil {
		t.Errorf("CacheLost on A: %s", e.Message)
	}
	snaps := &snapshotv1.VolumeSnapshotList{}
	if err := kube.List(ctx, snaps, client.InNamespace(scenario.Namespace), client.MatchingLabels{
		volumes.LabelPool: cachedPool, volumes.LabelSourceNode: volumes.LabelValue(nodeA),
	}); err != nil || len(snaps.Items) != 1 {
		t.Fatalf("A's snapshots: %d (%v), want 1", len(snaps.Items), err)
	}
	waitFor(t, "A's snapshot readyToUse", func(ctx context.Context) (bool, error) {
		s := &snapshotv1.VolumeSnapshot{}
		err := kube.Get(ctx, client.ObjectKeyFromObject(&snaps.Items[0]), s)
		return err == nil && s.Status != nil && ptr.Deref(s.Status.ReadyToUse, false), err
	})
	filesA := cacheDigest(t, sim.NodePath(nodeA, cachedHostPath))

	// The next node restores A's cache and its engine keeps it.
	_, nodeB := runCacheRunner(t, "hold-runner-2")
	t.Logf("node B: %s", nodeB)
	waitFor(t, "the engine on B to start warm from the restored cache", func(context.Context) (bool, error) {
		return sim.Count(nodesim.EngineWarmStart, nodeB) == 1, nil
	})
	expectNodeEvent(t, nodeB, enginecache.ReasonRestored)
	sameFiles(t, "B's cache", cacheDigest(t, sim.NodePath(nodeB, cachedHostPath)), filesA)
}
