package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	awsv1 "github.com/aws/karpenter-provider-aws/pkg/apis/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/nodepools"
)

// The whole tier shares one local cluster: start-up is the expensive part.
var local *cluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	setRootLogger()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{Log: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the local cluster (run `make tools` first):", err)
		return 1
	}
	local = c
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the local cluster:", err)
		code = 1
	}
	if code == 0 {
		// Keep the component logs only when something failed.
		os.RemoveAll(c.WorkDir)
	} else {
		// Only the logs: the simulated volumes and snapshots take gigabytes per run.
		removeAllBut(c.WorkDir, "logs")
		fmt.Fprintln(os.Stderr, "component logs:", filepath.Join(c.WorkDir, "logs"))
	}
	return code
}

// removeAllBut removes every entry of dir except keep.
func removeAllBut(dir, keep string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != keep {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

func localConfig(t testing.TB) string {
	t.Helper()
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "deploy", "examples", "local.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// waitFor polls cond every 250 ms for up to 3 minutes. Karpenter's own batching and
// consolidation delays are tens of seconds; no duration is asserted, only the outcome.
func waitFor(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	waitForWithin(t, 3*time.Minute, what, cond)
}

// waitForWithin is waitFor with its own bound, for a step made of several (a drain, a save).
func waitForWithin(t *testing.T, within time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	var lastErr error
	for {
		ok, err := cond(ctx)
		if ok {
			return
		}
		lastErr = err
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s (last error: %v)", what, lastErr)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// TestRunnerPodGetsNVMeNodeFromWarmpoolNodePool is the foundation's end-to-end check: warmpool
// turns the ConfigMap into a NodePool, real Karpenter provisions an NVMe node from it for a
// runner pod, and consolidates the node away once the pod is gone.
func TestRunnerPodGetsNVMeNodeFromWarmpoolNodePool(t *testing.T) {
	ctx := t.Context()
	kube := local.Client
	wp, err := scenario.StartWarmpool(ctx, local.Config, kube, localConfig(t), scenario.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := wp.Stop(); err != nil {
			t.Errorf("warmpool: %v", err)
		}
	})
	timeline := scenario.StartTimeline(ctx, kube, nil)
	t.Cleanup(func() {
		for _, e := range timeline.Entries() {
			t.Log(e)
		}
	})

	const pool = "dagger"
	np := &karpv1.NodePool{}
	waitFor(t, "warmpool's NodePool", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKey{Name: nodepools.Name(pool)}, np)
		return err == nil, err
	})
	if np.Spec.Template.Spec.NodeClassRef.Kind != "KWOKNodeClass" {
		t.Fatalf("NodePool references %v, want the KWOKNodeClass", np.Spec.Template.Spec.NodeClassRef)
	}

	// An owned runner: its node is one Karpenter has just registered (see RunnerReplicaSet).
	runner := scenario.RunnerReplicaSet(pool, "job-1")
	if err := kube.Create(ctx, runner); err != nil {
		t.Fatal(err)
	}
	timeline.Note("runner job-1", "submitted")

	claim := &karpv1.NodeClaim{}
	waitFor(t, "a NodeClaim from warmpool's NodePool", func(ctx context.Context) (bool, error) {
		claims := &karpv1.NodeClaimList{}
		if err := kube.List(ctx, claims, client.MatchingLabels{karpv1.NodePoolLabelKey: nodepools.Name(pool)}); err != nil {
			return false, err
		}
		if len(claims.Items) == 0 {
			return false, nil
		}
		*claim = claims.Items[0]
		return true, nil
	})

	node := &corev1.Node{}
	waitFor(t, "the runner pod Running on a Ready node", func(ctx context.Context) (bool, error) {
		pods := &corev1.PodList{}
		if err := kube.List(ctx, pods, client.InNamespace(runner.Namespace), client.MatchingLabels(runner.Spec.Selector.MatchLabels)); err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				return true, kube.Get(ctx, client.ObjectKey{Name: p.Spec.NodeName}, node)
			}
		}
		return false, fmt.Errorf("%d runner pods, none Running", len(pods.Items))
	})
	// The node is of an NVMe type above the pool's minimum, with the pool's label and taint.
	nvme, err := strconv.Atoi(node.Labels[awsv1.LabelInstanceLocalNVME])
	if err != nil || nvme <= 200 {
		t.Errorf("node %s has %s=%q, want > 200", node.Name, awsv1.LabelInstanceLocalNVME, node.Labels[awsv1.LabelInstanceLocalNVME])
	}
	if node.Labels[nodepools.LabelPool] != pool {
		t.Errorf("node %s labels %v, want %s=%s", node.Name, node.Labels, nodepools.LabelPool, pool)
	}
	if !hasTaint(node, "warmpool.io/runner", pool) {
		t.Errorf("node %s taints %v, want the runner taint", node.Name, node.Spec.Taints)
	}
	t.Logf("runner pod runs on %s (%s, %d GB NVMe)", node.Name, node.Labels[corev1.LabelInstanceTypeStable], nvme)

	if err := kube.Delete(ctx, runner, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	timeline.Note("runner job-1", "deleted")
	deleted := time.Now()
	waitFor(t, "Karpenter to consolidate the empty node", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKeyFromObject(claim), &karpv1.NodeClaim{})
		if client.IgnoreNotFound(err) != nil {
			return false, err
		}
		gone := err != nil
		if err := kube.Get(ctx, client.ObjectKeyFromObject(node), &corev1.Node{}); client.IgnoreNotFound(err) != nil || err == nil {
			return false, err
		}
		return gone, nil
	})
	t.Logf("node consolidated %.0fs after the runner pod was deleted", time.Since(deleted).Seconds())
}

func hasTaint(n *corev1.Node, key, value string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key && t.Value == value && t.Effect == corev1.TaintEffectNoSchedule {
			return true
		}
	}
	return false
}
