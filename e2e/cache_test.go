package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller"
	cachectrl "warmpool.io/warmpool/controller/cache"
	"warmpool.io/warmpool/e2e/nodesim"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/copier"
)

const (
	cachedPool     = "cached"
	cachedHostPath = "/mnt/k8s-disks/0/dagger-cached"
)

// cacheConfig is the local config with one cache-enabled pool on nodesim's classes.
const cacheConfig = `apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  role: KarpenterNodeRole-local
  subnetSelectorTerms:
    - tags: {karpenter.sh/discovery: local}
  securityGroupSelectorTerms:
    - tags: {karpenter.sh/discovery: local}
pools:
  - name: ` + cachedPool + `
    architectures: [amd64]
    instance:
      categories: {in: [c, m]}
      minGeneration: 6
    nvme:
      minSizeGB: 200
    capacityTypes: [on-demand]
    limits:
      nodes: 3
    disruption:
      consolidationPolicy: WhenEmpty
      consolidateAfter: 5s
    engine:
      version: ` + simEngineVersion + `
      hostPath: ` + cachedHostPath + `
    cache:
      enabled: true
      storageClassName: ` + nodesim.ClassName + `
      snapshotClassName: ` + nodesim.ClassName + `
      size: 1Gi
`

// startCacheWarmpool runs the controller manager in this process as scenario.StartWarmpool
// does, plus a copier image for the cache Jobs (nodesim runs the real binary for them; the
// image name only has to be valid). Its log is printed if the test fails.
func startCacheWarmpool(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	if err := scenario.SetConfig(ctx, local.Client, cacheConfig); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "warmpool.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(logFile)))
	mgr, err := controller.New(local.Config, controller.Options{
		Namespace:                    scenario.Namespace,
		ConfigMap:                    "warmpool",
		NodeClass:                    nodepools.KWOKNodeClass,
		MetricsAddr:                  "0",
		ProbeAddr:                    "0",
		SkipControllerNameValidation: true,
		CopierImage:                  "ghcr.io/warmpool/warmpool:e2e",
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("warmpool: %v", err)
		}
		logFile.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			lines := strings.Split(string(out), "\n")
			t.Logf("warmpool log (last 80 lines):\n%s", strings.Join(lines[max(0, len(lines)-80):], "\n"))
		}
	})
}

// TestCacheSurvivesConsolidation is issue #4's story on the local cluster with real Karpenter:
// a runner gets node A, whose engine starts cold; the runner goes, Karpenter consolidates A,
// the guard holds it while the engine stops cleanly and the save Job copies its cache (the real
// binary, run by nodesim) into a snapshot; A goes; the next runner gets node B, which starts
// with the cache-restore taint, gets A's cache restored, loses the taint, and its engine starts
// warm on A's files.
func TestCacheSurvivesConsolidation(t *testing.T) {
	ctx := t.Context()
	kube := local.Client
	sim := local.Nodesim
	startCacheWarmpool(t)
	logSimEvents(t)
	defer cleanupCachedPool(t)

	// Node A: no snapshot yet, so the restore controller lifts the taint at once (cold).
	r1 := scenario.RunnerPod(cachedPool, "cache-runner-1")
	if err := kube.Create(ctx, r1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "runner 1 Running", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKeyFromObject(r1), r1)
		return err == nil && r1.Status.Phase == corev1.PodRunning, err
	})
	nodeA := r1.Spec.NodeName
	t.Logf("node A: %s", nodeA)
	waitFor(t, "the engine on A to start cold", func(context.Context) (bool, error) {
		return sim.Count(nodesim.EngineColdStart, nodeA) == 1, nil
	})
	expectNodeEvent(t, nodeA, cachectrl.ReasonColdStart)
	claimA := nodeClaimOf(t, nodeA)

	// Karpenter consolidates A; the guard holds it.
	if err := kube.Delete(ctx, r1); err != nil {
		t.Fatal(err)
	}
	guard := &corev1.Pod{}
	waitFor(t, "the guard to hold node A while its NodeClaim is deleted", func(ctx context.Context) (bool, error) {
		if err := kube.Get(ctx, client.ObjectKey{Namespace: scenario.Namespace, Name: volumes.GuardName(nodeA)}, guard); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		c := &karpv1.NodeClaim{}
		if err := kube.Get(ctx, client.ObjectKey{Name: claimA}, c); err != nil {
			return false, err
		}
		return c.DeletionTimestamp != nil && guard.Spec.NodeName == nodeA, nil
	})
	if guard.Annotations[karpv1.DoNotDisruptAnnotationKey] != "true" {
		t.Errorf("guard annotations %v, want %s", guard.Annotations, karpv1.DoNotDisruptAnnotationKey)
	}
	waitFor(t, "the save on A to run", func(context.Context) (bool, error) {
		return savesOn(sim, nodeA, volumes.ResultSaved) == 1, nil
	})
	if n := sim.Count(nodesim.EngineStopped, nodeA); n != 1 {
		t.Errorf("%d clean engine stops on A before the save, want 1", n)
	}

	snap := &snapshotv1.VolumeSnapshot{}
	waitFor(t, "A's VolumeSnapshot readyToUse", func(ctx context.Context) (bool, error) {
		list := &snapshotv1.VolumeSnapshotList{}
		if err := kube.List(ctx, list, client.InNamespace(scenario.Namespace), client.MatchingLabels{
			volumes.LabelPool: cachedPool, volumes.LabelSourceNode: volumes.LabelValue(nodeA),
		}); err != nil || len(list.Items) != 1 {
			return false, err
		}
		*snap = list.Items[0]
		return snap.Status != nil && ptr.Deref(snap.Status.ReadyToUse, false), nil
	})
	if snap.Labels[volumes.LabelArch] != simArch || snap.Labels[volumes.LabelEngineVersion] != simEngineVersion {
		t.Errorf("snapshot labels %v, want arch %s and engine %s", snap.Labels, simArch, simEngineVersion)
	}
	for _, a := range []string{volumes.AnnotationBytes, volumes.AnnotationFiles, volumes.AnnotationDuration} {
		if v := snap.Annotations[a]; v == "" || v == "0" {
			t.Errorf("snapshot annotation %s = %q", a, v)
		}
	}
	waitFor(t, "node A to be gone", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKey{Name: nodeA}, &corev1.Node{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	for _, o := range []client.Object{
		&corev1.Pod{}, &batchv1.Job{}, &corev1.PersistentVolumeClaim{},
	} {
		name := volumes.SaveName(nodeA)
		if _, ok := o.(*corev1.Pod); ok {
			name = volumes.GuardName(nodeA)
		}
		if err := kube.Get(ctx, client.ObjectKey{Namespace: scenario.Namespace, Name: name}, o); !apierrors.IsNotFound(err) {
			t.Errorf("%T %s still there after the save (%v)", o, name, err)
		}
	}
	filesA := digest(t, sim.NodePath(nodeA, cachedHostPath))

	// Node B: the restore runs before its engine starts.
	r2 := scenario.RunnerPod(cachedPool, "cache-runner-2")
	if err := kube.Create(ctx, r2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "runner 2 Running", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKeyFromObject(r2), r2)
		return err == nil && r2.Status.Phase == corev1.PodRunning, err
	})
	nodeB := r2.Spec.NodeName
	t.Logf("node B: %s", nodeB)
	if nodeB == nodeA {
		t.Fatal("runner 2 landed on node A")
	}
	claimB := &karpv1.NodeClaim{}
	if err := kube.Get(ctx, client.ObjectKey{Name: nodeClaimOf(t, nodeB)}, claimB); err != nil {
		t.Fatal(err)
	}
	if !hasStartupTaint(claimB.Spec.StartupTaints) {
		t.Errorf("node B's NodeClaim startup taints %v, want %s", claimB.Spec.StartupTaints, nodepools.StartupTaintKey)
	}
	if n := restoresOn(sim, nodeB, volumes.ResultRestored); n != 1 {
		t.Fatalf("%d restores on B, want 1", n)
	}
	expectNodeEvent(t, nodeB, cachectrl.ReasonRestored)
	waitFor(t, "the engine on B to start warm from the restored cache", func(context.Context) (bool, error) {
		return sim.Count(nodesim.EngineWarmStart, nodeB) == 1, nil
	})
	if n := sim.Count(nodesim.EngineColdStart, nodeB); n != 0 {
		t.Errorf("%d cold starts on B, want 0", n)
	}
	for _, e := range sim.Events() {
		if e.Kind == nodesim.EngineWarmStart && e.Node == nodeB && e.Detail != "restored" {
			t.Errorf("B's warm start: %q, want from a restored copy", e.Detail)
		}
	}
	nodeBObj := &corev1.Node{}
	if err := kube.Get(ctx, client.ObjectKey{Name: nodeB}, nodeBObj); err != nil {
		t.Fatal(err)
	}
	for _, taint := range nodeBObj.Spec.Taints {
		if taint.Key == nodepools.StartupTaintKey {
			t.Errorf("node B still carries %v", taint)
		}
	}
	// The engine rewrote its state database at start and holds its lock: everything else is
	// A's cache, byte for byte.
	filesB := digest(t, sim.NodePath(nodeB, cachedHostPath))
	for _, f := range []string{copier.EngineStateDB, copier.EngineLockFile} {
		delete(filesA, f)
		delete(filesB, f)
	}
	sameFiles(t, "B's cache", filesB, filesA)
	origin, err := os.ReadFile(filepath.Join(sim.NodePath(nodeB, cachedHostPath), "worker/executor/origin"))
	if err != nil || strings.TrimSpace(string(origin)) != nodeA {
		t.Errorf("B's cache was built on %q (%v), want node A", origin, err)
	}
}

// TestCacheUncleanEngineIsNotSnapshotted: an engine that does not stop cleanly (nodesim is
// told to skip its clean-shutdown record) leaves a cache the next engine would wipe, so the
// save Job refuses it (the real binary, exit 3), no snapshot is made, the node is reported
// CacheUnclean, and it still goes.
func TestCacheUncleanEngineIsNotSnapshotted(t *testing.T) {
	ctx := t.Context()
	kube := local.Client
	sim := local.Nodesim
	startCacheWarmpool(t)
	logSimEvents(t)
	defer cleanupCachedPool(t)

	runner := scenario.RunnerPod(cachedPool, "cache-runner-unclean")
	if err := kube.Create(ctx, runner); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the runner Running", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKeyFromObject(runner), runner)
		return err == nil && runner.Status.Phase == corev1.PodRunning, err
	})
	node := runner.Spec.NodeName
	engine := &corev1.Pod{}
	waitFor(t, "the engine on the node to start", func(ctx context.Context) (bool, error) {
		pods := &corev1.PodList{}
		if err := kube.List(ctx, pods, client.InNamespace(scenario.Namespace), client.MatchingLabels(nodepools.EngineSelector(cachedPool))); err != nil {
			return false, err
		}
		for i := range pods.Items {
			if p := &pods.Items[i]; p.Spec.NodeName == node && simCount(nodesim.EngineColdStart, p)+simCount(nodesim.EngineWarmStart, p) == 1 {
				*engine = *p
				return true, nil
			}
		}
		return false, nil
	})
	patch := client.MergeFrom(engine.DeepCopy())
	engine.Annotations = map[string]string{nodesim.AnnotationUncleanStop: "true"}
	if err := kube.Patch(ctx, engine, patch); err != nil {
		t.Fatal(err)
	}

	if err := kube.Delete(ctx, runner); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the save on the node to refuse the unclean cache", func(context.Context) (bool, error) {
		return savesOn(sim, node, volumes.ResultUnclean) == 1, nil
	})
	for _, e := range sim.Events() {
		if e.Kind == nodesim.CacheJobFinished && e.Node == node && e.ExitCode != volumes.ExitUnclean {
			t.Errorf("save pod exit %d, want %d", e.ExitCode, volumes.ExitUnclean)
		}
	}
	if n := simCount(nodesim.EngineKilled, engine); n != 1 {
		t.Errorf("engine %s: %d unclean stops, want 1", engine.Name, n)
	}
	expectNodeEvent(t, node, cachectrl.ReasonUnclean)
	waitFor(t, "the node to be gone", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKey{Name: node}, &corev1.Node{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	snaps := &snapshotv1.VolumeSnapshotList{}
	if err := kube.List(ctx, snaps, client.InNamespace(scenario.Namespace), client.MatchingLabels{volumes.LabelSourceNode: volumes.LabelValue(node)}); err != nil {
		t.Fatal(err)
	}
	if len(snaps.Items) != 0 {
		t.Errorf("%d snapshots of the unclean node's cache, want none", len(snaps.Items))
	}
}

// savesOn and restoresOn count the cache pods nodesim ran to the given result on node.
func savesOn(sim *nodesim.Sim, node, result string) int {
	return cacheRuns(sim, node, volumes.OpSave+" "+result)
}

func restoresOn(sim *nodesim.Sim, node, result string) int {
	return cacheRuns(sim, node, volumes.OpRestore+" "+result)
}

func cacheRuns(sim *nodesim.Sim, node, detail string) int {
	n := 0
	for _, e := range sim.Events() {
		if e.Kind == nodesim.CacheJobFinished && e.Node == node && (e.Detail == detail || strings.HasPrefix(e.Detail, detail+":")) {
			n++
		}
	}
	return n
}

func hasStartupTaint(taints []corev1.Taint) bool {
	for _, t := range taints {
		if t.Key == nodepools.StartupTaintKey && t.Effect == corev1.TaintEffectNoSchedule {
			return true
		}
	}
	return false
}

func nodeClaimOf(t *testing.T, node string) string {
	t.Helper()
	name := ""
	waitFor(t, "the NodeClaim of "+node, func(ctx context.Context) (bool, error) {
		claims := &karpv1.NodeClaimList{}
		if err := local.Client.List(ctx, claims); err != nil {
			return false, err
		}
		for _, c := range claims.Items {
			if c.Status.NodeName == node {
				name = c.Name
				return true, nil
			}
		}
		return false, nil
	})
	return name
}

// expectNodeEvent waits for an Event with reason on the Node.
func expectNodeEvent(t *testing.T, node, reason string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("Event %s on %s", reason, node), func(ctx context.Context) (bool, error) {
		events := &corev1.EventList{}
		if err := local.Client.List(ctx, events); err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == node && e.Reason == reason {
				return true, nil
			}
		}
		return false, nil
	})
}

// cleanupCachedPool removes the runners and waits for the pool's nodes to go (their saves
// run), then deletes the pool's snapshots, so later tests start from an empty cluster.
func cleanupCachedPool(t *testing.T) {
	t.Helper()
	ctx, kube := t.Context(), local.Client
	runners := scenario.RunnerPod(cachedPool, "").Labels
	if err := kube.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(scenario.Namespace), client.MatchingLabels(runners)); err != nil {
		t.Error(err)
	}
	waitFor(t, "the cached pool's nodes to go", func(ctx context.Context) (bool, error) {
		nodes := &corev1.NodeList{}
		err := kube.List(ctx, nodes, client.MatchingLabels{volumes.LabelPool: cachedPool})
		return err == nil && len(nodes.Items) == 0, err
	})
	err := kube.DeleteAllOf(ctx, &snapshotv1.VolumeSnapshot{}, client.InNamespace(scenario.Namespace), client.MatchingLabels{volumes.LabelPool: cachedPool})
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Error(err)
	}
}
