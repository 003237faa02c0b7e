package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/e2e/nodesim"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
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
func startCacheWarmpool(t *testing.T) { startCacheWarmpoolWith(t, cacheConfig, nil) }

// startCacheWarmpoolWith is startCacheWarmpool with another config, and tune (if not nil)
// adjusting the manager's options.
func startCacheWarmpoolWith(t *testing.T, config string, tune func(*operator.Options)) {
	t.Helper()
	ctx := t.Context()
	expectNodesStayReady(t) // every cache scenario (here and in engine_test.go) holds nodes
	if err := scenario.SetConfig(ctx, local.Client, config); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "warmpool.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	ctrlLog.to(logFile)
	opts := operator.Options{
		Namespace:                    scenario.Namespace,
		ConfigMap:                    "warmpool",
		NodeClass:                    nodepools.KWOKNodeClass,
		MetricsAddr:                  "0",
		ProbeAddr:                    "0",
		SkipControllerNameValidation: true,
		CopierImage:                  "ghcr.io/warmpool/warmpool:e2e",
	}
	if tune != nil {
		tune(&opts)
	}
	mgr, err := operator.New(local.Config, opts)
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
		ctrlLog.to(nil)
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
	r1, nodeA := runCacheRunner(t, "cache-runner-1")
	t.Logf("node A: %s", nodeA)
	waitFor(t, "the engine on A to start cold", func(context.Context) (bool, error) {
		return sim.Count(nodesim.EngineColdStart, nodeA) == 1, nil
	})
	expectNodeEvent(t, nodeA, enginecache.ReasonColdStart)
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
	filesA := cacheDigest(t, sim.NodePath(nodeA, cachedHostPath))

	// Node B: the restore runs before its engine starts.
	_, nodeB := runCacheRunner(t, "cache-runner-2")
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
	expectNodeEvent(t, nodeB, enginecache.ReasonRestored)
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
	// The engine rewrote its state database at start and holds its lock, and the restore left
	// its marker: everything else is A's cache, byte for byte, xattrs included.
	filesB := cacheDigest(t, sim.NodePath(nodeB, cachedHostPath))
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

	runner, node := runCacheRunner(t, "cache-runner-unclean")
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
	expectNodeEvent(t, node, enginecache.ReasonUnclean)
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

// Short save deadlines for TestCacheSaveDeadlineReleasesNode, without faking time. Validation
// keeps a pool's terminationGracePeriod above the engine's grace (>= 330s), so the pool's
// deadline is minutes away: Karpenter stamps the NodeClaim it deletes with
// nodeclaim-termination-timestamp = deletion + deadlineGrace. The controller keeps SaveMargin
// free before that deadline, so a margin of deadlineGrace - deadlineWindow makes the save's
// effective deadline fall deadlineWindow after the deletion, computed by the real code path
// from Karpenter's own annotation. MinSaveTime drops below the window, or the save would not
// start at all (reason no-time) instead of timing out.
const (
	deadlineGrace  = 6 * time.Minute
	deadlineWindow = 20 * time.Second
)

// cacheDeadlineConfig is cacheConfig with the smallest grace periods validation allows.
var cacheDeadlineConfig = strings.Replace(cacheConfig, "    engine:\n",
	"    terminationGracePeriod: 6m\n    engine:\n      terminationGracePeriodSeconds: 330\n", 1)

// TestCacheSaveDeadlineReleasesNode: a save that outlives its deadline (nodesim stalls the save
// pod, as a copy stuck on a slow volume) does not hold the node for ever: past the deadline
// the controller deletes the guard, the Job and the PVC, reports CacheSaveTimedOut and counts a
// cold loss (reason timeout), no snapshot is made, and Karpenter finishes taking the node.
func TestCacheSaveDeadlineReleasesNode(t *testing.T) {
	ctx := t.Context()
	kube := local.Client
	sim := local.Nodesim
	if !strings.Contains(cacheDeadlineConfig, "terminationGracePeriod: 6m") {
		t.Fatal("cacheDeadlineConfig: no engine section in cacheConfig to add grace periods to")
	}
	startCacheWarmpoolWith(t, cacheDeadlineConfig, func(o *operator.Options) {
		o.SaveMargin = deadlineGrace - deadlineWindow
		o.MinSaveTime = 5 * time.Second
	})
	logSimEvents(t)
	defer cleanupCachedPool(t)
	lostBefore := cacheLost(t, cachedPool, volumes.LostTimeout)

	runner, node := runCacheRunner(t, "cache-runner-deadline")
	t.Logf("node: %s", node)
	waitFor(t, "the engine on the node to start", func(context.Context) (bool, error) {
		return sim.Count(nodesim.EngineColdStart, node) == 1, nil
	})
	claimName := nodeClaimOf(t, node)
	annotateNode(t, node, nodesim.AnnotationStallCacheJobs, "true")

	// Karpenter consolidates the node; the guard holds it and the save starts, then stalls.
	if err := kube.Delete(ctx, runner); err != nil {
		t.Fatal(err)
	}
	claim := &karpv1.NodeClaim{}
	waitFor(t, "the save on the node to stall while the guard holds it", func(ctx context.Context) (bool, error) {
		if err := kube.Get(ctx, client.ObjectKey{Name: claimName}, claim); err != nil {
			return false, err
		}
		return claim.DeletionTimestamp != nil && sim.Count(nodesim.CacheJobStalled, node) == 1, nil
	})
	guard := &corev1.Pod{}
	if err := kube.Get(ctx, client.ObjectKey{Namespace: scenario.Namespace, Name: volumes.GuardName(node)}, guard); err != nil {
		t.Fatalf("guard while the save runs: %v", err)
	}
	job := &batchv1.Job{}
	if err := kube.Get(ctx, client.ObjectKey{Namespace: scenario.Namespace, Name: volumes.SaveName(node)}, job); err != nil {
		t.Fatalf("save Job while the save runs: %v", err)
	}
	// The deadline is Karpenter's, the Job is bounded by what is left of the window.
	karpDeadline := claim.Annotations[karpv1.NodeClaimTerminationTimestampAnnotationKey]
	if karpDeadline == "" || guard.Annotations[enginecache.AnnotationDeadline] != karpDeadline {
		t.Errorf("guard deadline %q, want the NodeClaim's termination timestamp %q",
			guard.Annotations[enginecache.AnnotationDeadline], karpDeadline)
	}
	deadline, err := time.Parse(time.RFC3339, guard.Annotations[enginecache.AnnotationDeadline])
	if err != nil {
		t.Fatalf("guard deadline: %v", err)
	}
	effective := deadline.Add(-(deadlineGrace - deadlineWindow))
	if ads := ptr.Deref(job.Spec.ActiveDeadlineSeconds, 0); ads < 1 || ads > int64(deadlineWindow/time.Second) {
		t.Errorf("save Job activeDeadlineSeconds %d, want 1..%d", ads, int64(deadlineWindow/time.Second))
	}
	t.Logf("NodeClaim deleted %s, effective save deadline %s", claim.DeletionTimestamp.UTC().Format(time.RFC3339), effective.Format(time.RFC3339))

	// Past the deadline the guard goes, with the Job and PVC.
	waitFor(t, "the guard to be released", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKeyFromObject(guard), &corev1.Pod{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	for _, o := range []client.Object{&batchv1.Job{}, &corev1.PersistentVolumeClaim{}} {
		err := kube.Get(ctx, client.ObjectKey{Namespace: scenario.Namespace, Name: volumes.SaveName(node)}, o)
		if err == nil && o.GetDeletionTimestamp() == nil {
			t.Errorf("%T %s not deleted with the guard", o, volumes.SaveName(node))
		} else if client.IgnoreNotFound(err) != nil {
			t.Error(err)
		}
	}
	timedOut := nodeEvent(t, node, enginecache.ReasonSaveTimedOut)
	// Events and the deadline have whole seconds; the release is not early.
	if at := timedOut.FirstTimestamp.Time; at.Before(effective) {
		t.Errorf("%s at %s, before the effective deadline %s", timedOut.Reason, at.UTC().Format(time.RFC3339), effective.Format(time.RFC3339))
	}
	nodeObj := &corev1.Node{}
	if err := kube.Get(ctx, client.ObjectKey{Name: node}, nodeObj); client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	} else if err == nil && nodeObj.Annotations[enginecache.AnnotationSaveOutcome] != volumes.LostTimeout {
		t.Errorf("node save outcome %q, want %q", nodeObj.Annotations[enginecache.AnnotationSaveOutcome], volumes.LostTimeout)
	}
	if got := cacheLost(t, cachedPool, volumes.LostTimeout) - lostBefore; got != 1 {
		t.Errorf("warmpool_cache_lost_total{reason=%q} rose by %v, want 1", volumes.LostTimeout, got)
	}

	// Karpenter finishes: the node goes, and nothing of the save is left.
	waitFor(t, "the node to be gone", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKey{Name: node}, &corev1.Node{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	waitFor(t, "the save Job and PVC to be gone", func(ctx context.Context) (bool, error) {
		for _, o := range []client.Object{&batchv1.Job{}, &corev1.PersistentVolumeClaim{}} {
			err := kube.Get(ctx, client.ObjectKey{Namespace: scenario.Namespace, Name: volumes.SaveName(node)}, o)
			if !apierrors.IsNotFound(err) {
				return false, client.IgnoreNotFound(err)
			}
		}
		return true, nil
	})
	snaps := &snapshotv1.VolumeSnapshotList{}
	if err := kube.List(ctx, snaps, client.InNamespace(scenario.Namespace), client.MatchingLabels{volumes.LabelSourceNode: volumes.LabelValue(node)}); err != nil {
		t.Fatal(err)
	}
	if len(snaps.Items) != 0 {
		t.Errorf("%d snapshots of the timed-out node's cache, want none", len(snaps.Items))
	}
	for _, e := range sim.Events() {
		if e.Node != node {
			continue
		}
		switch {
		case e.Kind == nodesim.CacheJobStarted && !strings.HasPrefix(e.Detail, volumes.OpSave+" "):
			t.Errorf("a cache pod other than the save ran on the node: %s", e)
		case e.Kind == nodesim.CacheJobFinished && e.Detail != volumes.OpSave:
			t.Errorf("the stalled save pod reported a result: %s", e)
		}
	}
	if n := savesOn(sim, node, volumes.ResultSaved); n != 0 {
		t.Errorf("%d completed saves on the node, want 0", n)
	}
	for _, reason := range []string{enginecache.ReasonSaved, enginecache.ReasonSaveFailed} {
		if e := findNodeEvent(t, node, reason); e != nil {
			t.Errorf("Event %s on the node: %s", reason, e.Message)
		}
	}
}

// cacheLost reads warmpool_cache_lost_total for pool and reason from the registry the
// in-process manager reports to (0 before the series exists).
func cacheLost(t *testing.T, pool, reason string) float64 {
	t.Helper()
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "warmpool_cache_lost_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["pool"] == pool && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
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
func expectNodeEvent(t *testing.T, node, reason string) { nodeEvent(t, node, reason) }

// nodeEvent waits for an Event with reason on the Node and returns it.
func nodeEvent(t *testing.T, node, reason string) *corev1.Event {
	t.Helper()
	var found *corev1.Event
	waitFor(t, fmt.Sprintf("Event %s on %s", reason, node), func(ctx context.Context) (bool, error) {
		e, err := nodeEventNow(ctx, node, reason)
		found = e
		return e != nil, err
	})
	return found
}

// findNodeEvent is the Event with reason on the Node, nil if there is none now.
func findNodeEvent(t *testing.T, node, reason string) *corev1.Event {
	t.Helper()
	e, err := nodeEventNow(t.Context(), node, reason)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func nodeEventNow(ctx context.Context, node, reason string) (*corev1.Event, error) {
	events := &corev1.EventList{}
	if err := local.Client.List(ctx, events); err != nil {
		return nil, err
	}
	for i, e := range events.Items {
		if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == node && e.Reason == reason {
			return &events.Items[i], nil
		}
	}
	return nil, nil
}

// cleanupCachedPool removes the cached pool's runners, nodes and snapshots (cleanupPool), so
// later tests start from an empty cluster.
func cleanupCachedPool(t *testing.T) { cleanupPool(t, cachedPool) }

// runCacheRunner creates a runner pod of the cached pool and waits until it runs; it returns
// the pod and the node Karpenter gave it.
func runCacheRunner(t *testing.T, name string) (*corev1.Pod, string) {
	t.Helper()
	pod := scenario.RunnerPod(cachedPool, name)
	if err := local.Client.Create(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	waitFor(t, name+" Running", func(ctx context.Context) (bool, error) {
		err := local.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return err == nil && pod.Status.Phase == corev1.PodRunning, err
	})
	return pod, pod.Spec.NodeName
}
