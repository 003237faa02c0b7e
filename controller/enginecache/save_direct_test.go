package enginecache_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/volumes"
)

// The save protocol stepped one reconcile at a time (expect_test.go): each reconcile's effect is
// asserted as soon as it returns. The manager-run tests (save_test.go) keep what needs watches.

// expectEngineRunning asserts the node's engine pod was not evicted.
func (d *direct) expectEngineRunning(node string) {
	d.T.Helper()
	p := &corev1.Pod{}
	d.expectExists("engine-"+node, p)
}

// expectNoSaveObjects asserts the node has no save volume, Job or snapshot.
func (d *direct) expectNoSaveObjects(node string) {
	d.T.Helper()
	if err := d.noSaveObjects(node); err != nil {
		d.T.Fatal(err)
	}
}

// expectOneSnapshot returns the one snapshot saved from node.
func (d *direct) expectOneSnapshot(node string) snapshotv1.VolumeSnapshot {
	d.T.Helper()
	list := d.snapshotsOf(node)
	if len(list) != 1 {
		d.T.Fatalf("%d snapshots of %s, want 1", len(list), node)
	}
	return list[0]
}

// Hold on the tentative disruption, engine left alone; on the commitment, the engine stopped
// once the guard runs, the copy started once the engine is gone, the snapshot cut from the
// copy, and only then the node released, with one report; a concluded save never restarts.
func TestSaveHappyPath(t *testing.T) {
	pool, node := unique("save"), unique("save-node")
	d := newDirect(t, poolYAML(pool))
	newNode(t, node, pool, "arm64", runnerTaint(pool))
	newNodeClaim(t, node, pool, nil)
	d.newEnginePod(node, pool)

	// Disruption marked, not committed: the node is held, its engine left alone.
	markDisrupted(t, node)
	for range 2 {
		expectNotRequeued(t, d.save(node)) // the commitment is a watch event
		guard := &corev1.Pod{}
		d.expectExists(volumes.GuardName(node), guard)
		if guard.Spec.NodeName != node || guard.Annotations[karpv1.DoNotDisruptAnnotationKey] != "true" || guard.Spec.Containers[0].Image != "pause:test" {
			t.Fatalf("guard %s: node %q annotations %v image %s", guard.Name, guard.Spec.NodeName, guard.Annotations, guard.Spec.Containers[0].Image)
		}
		d.expectEvent(node, enginecache.ReasonGuarded, "disruption Empty")
		d.expectEngineRunning(node)
		d.expectNoSaveObjects(node)
	}

	// Committed: the engine is left running until the guard runs...
	deleteNodeClaim(t, node)
	expectRequeued(t, d.save(node), 15*time.Second)
	d.expectEngineRunning(node)
	d.expectNoEvent(node, enginecache.ReasonEngineStopped)
	guard := &corev1.Pod{}
	d.expectExists(volumes.GuardName(node), guard)
	if guard.Annotations[enginecache.AnnotationDeadline] == "" {
		t.Fatalf("guard annotations %v: no deadline recorded", guard.Annotations)
	}
	// ...then evicted, and the copy starts only once it is gone.
	d.runGuard(node)
	expectRequeued(t, d.save(node), 15*time.Second)
	engine := &corev1.Pod{}
	get(t, "engine-"+node, d.Namespace, engine)
	if engine.DeletionTimestamp == nil {
		t.Fatal("engine pod not evicted once the guard ran")
	}
	d.expectEvent(node, enginecache.ReasonEngineStopped, "engine-"+node)
	d.expectNoSaveObjects(node)
	d.finishEviction(node)

	expectRequeued(t, d.save(node), 15*time.Second) // the Job's end is polled too
	pvc := &corev1.PersistentVolumeClaim{}
	d.expectExists(volumes.SaveName(node), pvc)
	if *pvc.Spec.StorageClassName != "sim" || pvc.Annotations[volumes.SelectedNodeAnnotation] != node || pvc.Spec.Resources.Requests.Storage().String() != "10Gi" {
		t.Fatalf("save PVC %+v", pvc)
	}
	job := &batchv1.Job{}
	d.expectExists(volumes.SaveName(node), job)
	args := job.Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "arm64") || !slices.Contains(args, engineVersion) || job.Spec.Template.Spec.Containers[0].Image != "copier:test" {
		t.Fatalf("save job args %v image %s", args, job.Spec.Template.Spec.Containers[0].Image)
	}
	if ads := *job.Spec.ActiveDeadlineSeconds; ads > 3600 || ads < 3400 {
		t.Fatalf("activeDeadlineSeconds %d, want about an hour (the pool's grace) minus the margin", ads)
	}

	// The copy takes 90 s on the protocol's clock; its result makes the snapshot.
	d.clk.Step(90 * time.Second)
	d.runJob(job.Name, 0, volumes.JobResult{Result: volumes.ResultSaved, Bytes: 1 << 30, Files: 1234, DurationSeconds: 42, Architecture: "arm64", EngineVersion: engineVersion})
	expectRequeued(t, d.save(node), 15*time.Second)
	snap := d.expectOneSnapshot(node)
	if snap.Labels[volumes.LabelPool] != pool || snap.Labels[volumes.LabelArch] != "arm64" || snap.Labels[volumes.LabelEngineVersion] != engineVersion ||
		snap.Annotations[volumes.AnnotationBytes] != "1073741824" || *snap.Spec.Source.PersistentVolumeClaimName != pvc.Name || *snap.Spec.VolumeSnapshotClassName != "sim-snap" {
		t.Fatalf("snapshot labels %v annotations %v spec %+v", snap.Labels, snap.Annotations, snap.Spec)
	}
	// The guard holds until the snapshot is cut, however often the node is looked at.
	expectRequeued(t, d.save(node), 15*time.Second)
	d.expectExists(guard.Name, &corev1.Pod{})
	d.expectNoEvent(node, enginecache.ReasonSaved)
	d.expectAnnotation(node, enginecache.AnnotationSaveOutcome, "")

	// Cut: released, reported once, cleaned up.
	d.setSnapshotStatus(snap.Name, true, d.clk.Now())
	expectNotRequeued(t, d.save(node))
	d.expectGone(guard.Name, &corev1.Pod{})
	d.expectGone(job.Name, &batchv1.Job{})
	d.expectGone(pvc.Name, &corev1.PersistentVolumeClaim{})
	d.expectEvent(node, enginecache.ReasonSaved, snap.Name, "a full copy", "1073741824 bytes", "1234 files", "save 1m30s", "node released")
	expectMetric(t, "warmpool_cache_saves_total", map[string]string{"pool": pool, "result": "saved"}, 1)
	expectMetric(t, "warmpool_cache_save_bytes", map[string]string{"pool": pool}, 1)
	expectMetric(t, "warmpool_cache_save_duration_seconds", map[string]string{"pool": pool}, 1)
	d.expectAnnotation(node, enginecache.AnnotationSaveOutcome, "saved")
	d.expectAnnotation(node, "warmpool.io/cache-save-report", "") // delivered

	// The node is still terminating: the concluded save must not start again.
	for range 2 {
		expectNotRequeued(t, d.save(node))
		d.expectGone(guard.Name, &corev1.Pod{})
		d.expectGone(pvc.Name, &corev1.PersistentVolumeClaim{})
		d.expectExists(snap.Name, &snapshotv1.VolumeSnapshot{})
		d.expectOneSnapshot(node)
		d.expectEvent(node, enginecache.ReasonSaved)
		d.expectEvent(node, enginecache.ReasonGuarded)
		expectMetric(t, "warmpool_cache_saves_total", map[string]string{"pool": pool, "result": "saved"}, 1)
	}
}

// Past the node's deadline (Karpenter's termination timestamp, less the margin) the save is
// given up and the node released: the save looks again by the deadline without any event, and
// the clock stepped past it concludes the save as timed out.
func TestSaveDeadlineReleasesNode(t *testing.T) {
	pool, node := unique("deadline"), unique("deadline-node")
	d := newDirect(t, poolYAML(pool))
	newNode(t, node, pool, "amd64")
	deadline := d.clk.Now().Add(10 * time.Minute)
	newNodeClaim(t, node, pool, func(nc *karpv1.NodeClaim) {
		nc.Annotations = map[string]string{karpv1.NodeClaimTerminationTimestampAnnotationKey: deadline.UTC().Format(time.RFC3339)}
	})
	d.newEnginePod(node, pool)
	commit(t, node)

	expectRequeued(t, d.save(node), 15*time.Second) // guarded, waiting for the guard to run
	guard := &corev1.Pod{}
	d.expectExists(volumes.GuardName(node), guard)
	if got := guard.Annotations[enginecache.AnnotationDeadline]; got != deadline.UTC().Format(time.RFC3339) {
		t.Fatalf("deadline on the guard %q, want the termination timestamp %s", got, deadline.UTC().Format(time.RFC3339))
	}
	d.runGuard(node)
	expectRequeued(t, d.save(node), 15*time.Second) // engine evicted
	d.finishEviction(node)
	expectRequeued(t, d.save(node), 15*time.Second) // volume and Job made
	job := &batchv1.Job{}
	d.expectExists(volumes.SaveName(node), job)
	// Bounded by Karpenter's termination timestamp minus the 30 s margin.
	if ads := *job.Spec.ActiveDeadlineSeconds; ads > 570 || ads < 500 {
		t.Fatalf("activeDeadlineSeconds %d, want just under 570", ads)
	}

	// 5 s before the deadline less its margin, the save looks again at the deadline at the latest.
	d.clk.Step(9*time.Minute + 25*time.Second)
	expectRequeued(t, d.save(node), 5*time.Second)
	d.expectExists(guard.Name, &corev1.Pod{})
	d.expectNoEvent(node, enginecache.ReasonSaveTimedOut)

	d.clk.Step(35 * time.Second)
	expectNotRequeued(t, d.save(node))
	d.expectGone(guard.Name, &corev1.Pod{})
	d.expectGone(job.Name, &batchv1.Job{})
	d.expectGone(volumes.SaveName(node), &corev1.PersistentVolumeClaim{})
	note := d.expectEvent(node, enginecache.ReasonSaveTimedOut, "deadline", "released the node")
	if !strings.Contains(note, deadline.UTC().Format(time.RFC3339)) {
		t.Errorf("timeout note %q does not name the deadline", note)
	}
	d.expectAnnotation(node, enginecache.AnnotationSaveOutcome, volumes.LostTimeout)
	expectMetric(t, "warmpool_cache_lost_total", map[string]string{"pool": pool, "reason": "timeout"}, 1)
	expectMetric(t, "warmpool_cache_saves_total", map[string]string{"pool": pool, "result": "timeout"}, 1)
	if n := len(d.snapshotsOf(node)); n != 0 {
		t.Fatalf("%d snapshots after a timeout", n)
	}
	// Reported once, however often the node is looked at after.
	expectNotRequeued(t, d.save(node))
	d.expectEvent(node, enginecache.ReasonSaveTimedOut)
	expectMetric(t, "warmpool_cache_lost_total", map[string]string{"pool": pool, "reason": "timeout"}, 1)
}

// A cache measured larger than its save volume gets a volume that fits, once, made only once the
// first one is gone; a cache that does not fit that either is not saved.
func TestSaveVolumeSizedToFitTheCache(t *testing.T) {
	pool, node := unique("savefit"), unique("savefit-node")
	d := newDirect(t, poolYAML(pool))
	newNode(t, node, pool, "amd64", runnerTaint(pool))
	newNodeClaim(t, node, pool, nil)
	d.newEnginePod(node, pool)
	commit(t, node)
	expectRequeued(t, d.save(node), 15*time.Second) // guarded
	d.runGuard(node)
	expectRequeued(t, d.save(node), 15*time.Second) // engine evicted
	d.finishEviction(node)
	expectRequeued(t, d.save(node), 15*time.Second) // volume and Job made
	first := &corev1.PersistentVolumeClaim{}
	d.expectExists(volumes.SaveName(node), first)
	if got := first.Spec.Resources.Requests.Storage().String(); got != "10Gi" {
		t.Fatalf("first save volume %s, want the pool's 10Gi", got)
	}
	firstJob := &batchv1.Job{}
	d.expectExists(volumes.SaveName(node), firstJob)

	// The Job measured 50 GiB in 100000 inodes and refused to copy: the size that fits is
	// recorded on the guard, and the Job and the volume go.
	d.runJob(firstJob.Name, volumes.ExitNoSpace, volumes.JobResult{Result: volumes.ResultNoSpace, Reason: "does not fit", Bytes: 50 << 30, Files: 100000})
	expectRequeued(t, d.save(node), time.Second)
	d.expectEvent(node, enginecache.ReasonSaveVolumeResized, "50Gi", "100000 inodes", "save volume of 10Gi", "making one of 58Gi")
	guard := &corev1.Pod{}
	d.expectExists(volumes.GuardName(node), guard)
	if got := guard.Annotations["warmpool.io/save-volume-size"]; got != "58Gi" {
		t.Fatalf("save size on the guard %q, want 58Gi", got)
	}
	d.expectGone(firstJob.Name, &batchv1.Job{})
	d.expectGone(first.Name, &corev1.PersistentVolumeClaim{})

	// The first volume is still going (its protection finalizer): no new one is made under its
	// name until it is gone.
	expectRequeued(t, d.save(node), time.Second)
	cur := &corev1.PersistentVolumeClaim{}
	get(t, first.Name, d.Namespace, cur)
	if cur.UID != first.UID {
		t.Fatal("a new save volume was made while the first one was still being deleted")
	}
	d.releaseVolume(first)
	expectRequeued(t, d.save(node), 15*time.Second)
	second := &corev1.PersistentVolumeClaim{}
	d.expectExists(volumes.SaveName(node), second)
	if got := second.Spec.Resources.Requests.Storage().String(); second.UID == first.UID || got != "58Gi" {
		t.Fatalf("save volume %s (uid %s, first %s), want a new one of 58Gi", got, second.UID, first.UID)
	}
	secondJob := &batchv1.Job{}
	d.expectExists(volumes.SaveName(node), secondJob)
	if secondJob.UID == firstJob.UID {
		t.Fatal("no new save job")
	}

	// The new Job refuses again. (envtest runs no garbage collector: the first Job's pod is
	// deleted here, as the Job's background deletion would.)
	d.deletePod(firstJob.Name + "-pod")
	d.runJob(secondJob.Name, volumes.ExitNoSpace, volumes.JobResult{Result: volumes.ResultNoSpace, Reason: "still does not fit", Bytes: 80 << 30, Files: 100000})
	expectNotRequeued(t, d.save(node))
	d.expectEvent(node, enginecache.ReasonLost, "no-space", "58Gi", "still does not fit")
	d.expectEvent(node, enginecache.ReasonSaveVolumeResized) // still the one
	d.expectGone(volumes.GuardName(node), &corev1.Pod{})
	d.expectGone(volumes.SaveName(node), &batchv1.Job{})
	d.expectAnnotation(node, enginecache.AnnotationSaveOutcome, "no-space")
	expectMetric(t, "warmpool_cache_lost_total", map[string]string{"pool": pool, "reason": "no-space"}, 1)
}
