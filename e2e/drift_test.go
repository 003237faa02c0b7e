package e2e_test

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/e2e/nodesim"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// TestEngineChangeReplacesNodesThroughDrift: a changed engine is never restarted in place on a
// node that still takes jobs (the DaemonSet is OnDelete). Real Karpenter sees the pool's node
// drifted (the engine's hash is on the NodePool's node template), launches a replacement that
// runs the new engine, and only then disrupts the old node: its engine stops once, cleanly,
// after the guard, and its cache is saved.
func TestEngineChangeReplacesNodesThroughDrift(t *testing.T) {
	ctx, kube, sim := t.Context(), local.Client, local.Nodesim
	startCacheWarmpool(t)
	logSimEvents(t)
	defer cleanupCachedPool(t)

	_, nodeA := runCacheRunner(t, "drift-runner-1")
	waitFor(t, "the engine on A to start", func(context.Context) (bool, error) {
		return sim.Count(nodesim.EngineColdStart, nodeA) == 1, nil
	})
	engineA := enginePodOn(t, nodeA)
	claimA := nodeClaimOf(t, nodeA)
	oldChecksum := engineA.Annotations[nodepools.AnnotationEngineConfig]

	// The engine's config changes (a GC bound): a new engine pod template.
	changed := strings.Replace(cacheConfig, "      hostPath: "+cachedHostPath+"\n",
		"      hostPath: "+cachedHostPath+"\n      gc: {maxUsedSpace: 5GB}\n", 1)
	if changed == cacheConfig {
		t.Fatal("the test's config edit matched nothing")
	}
	if err := scenario.SetConfig(ctx, kube, changed); err != nil {
		t.Fatal(err)
	}

	// Until Karpenter disrupts A, A keeps the engine it had: no restart in place.
	waitFor(t, "Karpenter to see A drifted and disrupt it", func(ctx context.Context) (bool, error) {
		n := &corev1.Node{}
		if err := kube.Get(ctx, client.ObjectKey{Name: nodeA}, n); err != nil {
			return false, err
		}
		disrupted := n.DeletionTimestamp != nil || hasTaintKey(n.Spec.Taints, karpv1.DisruptedTaintKey)
		if !disrupted {
			if got := findEnginePod(t, nodeA); got == nil || got.UID != engineA.UID {
				t.Fatalf("A's engine pod %s was deleted or replaced in place (now %v) before A was disrupted", engineA.UID, got)
			}
		}
		return disrupted, nil
	})
	c := &karpv1.NodeClaim{}
	if err := kube.Get(ctx, client.ObjectKey{Name: claimA}, c); err == nil {
		if cond := c.StatusConditions().Get(karpv1.ConditionTypeDrifted); cond == nil || !cond.IsTrue() {
			t.Errorf("A's NodeClaim is disrupted without a Drifted condition (%v)", c.Status.Conditions)
		}
	}

	waitFor(t, "A's cache saved", func(context.Context) (bool, error) {
		return savesOn(sim, nodeA, volumes.ResultSaved) == 1, nil
	})
	if stopped, killed := sim.Count(nodesim.EngineStopped, nodeA), sim.Count(nodesim.EngineKilled, nodeA); stopped != 1 || killed != 0 {
		t.Errorf("A's engine: %d clean stops, %d kills; want one clean stop", stopped, killed)
	}

	// The replacement runs the new engine template.
	waitFor(t, "a node of the pool running the new engine", func(ctx context.Context) (bool, error) {
		pods := &corev1.PodList{}
		if err := kube.List(ctx, pods, client.InNamespace(scenario.Namespace), client.MatchingLabels{volumes.LabelEngineName: volumes.EngineName, volumes.LabelPool: cachedPool}); err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Spec.NodeName != nodeA && p.Spec.NodeName != "" && p.Annotations[nodepools.AnnotationEngineConfig] != oldChecksum {
				return true, nil
			}
		}
		return false, nil
	})
}

// enginePodOn returns the engine pod of the cached pool on node (fails the test if none).
func enginePodOn(t *testing.T, node string) *corev1.Pod {
	t.Helper()
	p := findEnginePod(t, node)
	if p == nil {
		t.Fatalf("no engine pod on node %s", node)
	}
	return p
}

// findEnginePod returns the engine pod of the cached pool on node, nil if none.
func findEnginePod(t *testing.T, node string) *corev1.Pod {
	t.Helper()
	pods := &corev1.PodList{}
	if err := local.Client.List(t.Context(), pods, client.InNamespace(scenario.Namespace), client.MatchingLabels{volumes.LabelEngineName: volumes.EngineName, volumes.LabelPool: cachedPool}); err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		if pods.Items[i].Spec.NodeName == node {
			return &pods.Items[i]
		}
	}
	return nil
}

func hasTaintKey(taints []corev1.Taint, key string) bool {
	for _, t := range taints {
		if t.Key == key {
			return true
		}
	}
	return false
}
