package enginecache_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/controller/operator/operatortest"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/storagecheck"
)

// The restore protocol stepped one reconcile at a time (expect_test.go). The manager-run tests
// (restore_test.go, storage_test.go) keep what needs watches: the node's Ready condition, the
// CSI driver's registration, the Job's end.

// in is d for the subtest t: the same namespace, clock and reconcilers, failing t.
func (d *direct) in(t *testing.T) *direct {
	c := *d
	c.env = &env{Env: &operatortest.Env{T: t, Namespace: d.Namespace}, clk: d.clk}
	return &c
}

// expectTainted asserts the node still waits for its restore (startup taint) or was released
// with every other taint kept.
func (d *direct) expectTainted(node string, tainted bool, keep ...corev1.Taint) {
	d.T.Helper()
	n := d.node(node)
	if has := slices.ContainsFunc(n.Spec.Taints, func(tt corev1.Taint) bool { return tt.Key == nodepools.StartupTaintKey }); has != tainted {
		d.T.Fatalf("node %s startup taint present: %v, want %v (taints %v)", node, has, tainted, n.Spec.Taints)
	}
	for _, k := range keep {
		if !slices.ContainsFunc(n.Spec.Taints, func(tt corev1.Taint) bool { return tt.MatchTaint(&k) }) {
			d.T.Fatalf("taint %v was removed too", k)
		}
	}
}

func TestRestorePicksNewestMatchingSnapshot(t *testing.T) {
	pool, node := unique("restore"), unique("restore-node")
	d := newDirect(t, poolYAML(pool))
	now := d.clk.Now()
	d.newSnapshot("older", pool, "amd64", engineVersion, now.Add(-2*time.Hour), true)
	d.newSnapshot("newest", pool, "amd64", engineVersion, now.Add(-time.Hour), true)
	d.newSnapshot("other-arch", pool, "arm64", engineVersion, now.Add(-10*time.Minute), true)
	d.newSnapshot("other-version", pool, "amd64", "v0.20.0", now.Add(-5*time.Minute), true)
	d.newSnapshot("not-ready", pool, "amd64", engineVersion, now.Add(-time.Minute), false)

	runner := runnerTaint(pool)
	newNode(t, node, pool, "amd64", startupTaint(), runner)
	expectRequeued(t, d.restore(node), 15*time.Second) // the Job's end is polled too
	pvc := &corev1.PersistentVolumeClaim{}
	d.expectExists(volumes.RestoreName(node), pvc)
	if pvc.Spec.DataSource == nil || pvc.Spec.DataSource.Name != "newest" {
		t.Fatalf("restore PVC data source %+v, want snapshot newest", pvc.Spec.DataSource)
	}
	// The snapshot's restore size (20Gi) beats the pool's 10Gi.
	if got := pvc.Spec.Resources.Requests.Storage().String(); got != "20Gi" || pvc.Annotations[volumes.SelectedNodeAnnotation] != node {
		t.Fatalf("restore PVC size %s annotations %v", got, pvc.Annotations)
	}
	job := &batchv1.Job{}
	d.expectExists(volumes.RestoreName(node), job)
	args := job.Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "restore") || !slices.Contains(args, "/host/dagger-"+pool) {
		t.Fatalf("restore args %v", args)
	}
	if id := argAfter(args, "--restore-id"); !strings.HasPrefix(id, "newest@") {
		t.Fatalf("restore id %q, want the snapshot and the node's UID", id)
	}
	d.expectAnnotation(node, "warmpool.io/restore-from", "newest")

	// The node stays tainted while restoring, however often it is looked at.
	d.clk.Step(30 * time.Second)
	expectRequeued(t, d.restore(node), 15*time.Second)
	d.expectTainted(node, true, runner)
	d.expectExists(pvc.Name, &corev1.PersistentVolumeClaim{})

	d.runJob(job.Name, 0, volumes.JobResult{Result: volumes.ResultRestored, Bytes: 2048, Files: 7, DurationSeconds: 3})
	expectNotRequeued(t, d.restore(node))
	d.expectTainted(node, false, runner)
	d.expectEvent(node, enginecache.ReasonRestoreCopied, "newest", "2048 bytes", "7 files", "restore 30s")
	d.expectGone(job.Name, &batchv1.Job{})
	d.expectGone(pvc.Name, &corev1.PersistentVolumeClaim{})
	d.expectAnnotation(node, enginecache.AnnotationRestore, "verifying")
	d.expectAnnotation(node, enginecache.AnnotationRestoreSnapshot, "newest")
	d.expectAnnotation(node, "warmpool.io/cache-restore-report", "") // delivered
	expectMetric(t, "warmpool_cache_restore_duration_seconds", map[string]string{"pool": pool}, 1)
	// Copied is not warm: only the engine's verdict counts (verify_test.go).
	expectMetric(t, "warmpool_cache_restores_total", map[string]string{"pool": pool, "result": volumes.ResultWarm}, 0)
	d.expectNoEvent(node, enginecache.ReasonRestored)
	d.expectNoEvent(node, enginecache.ReasonColdStart)
	expectMetric(t, "warmpool_cold_starts_total", map[string]string{"pool": pool, "reason": enginecache.ColdNoSnapshot}, 0)
}

func TestRestoreColdStarts(t *testing.T) {
	warm, empty := unique("cold"), unique("cold-empty")
	d := newDirect(t, poolYAML(warm), poolYAML(empty))
	d.newSnapshot("cache", warm, "amd64", engineVersion, d.clk.Now().Add(-time.Hour), true)
	// Only another architecture has a snapshot in the empty pool.
	d.newSnapshot("arm-only", empty, "arm64", engineVersion, d.clk.Now().Add(-time.Hour), true)

	t.Run("no snapshot", func(t *testing.T) {
		d := d.in(t)
		node := unique("cold-none")
		newNode(t, node, empty, "amd64", startupTaint())
		expectNotRequeued(t, d.restore(node))
		d.expectTainted(node, false)
		d.expectEvent(node, enginecache.ReasonColdStart, enginecache.ColdNoSnapshot, "arch amd64")
		expectMetric(t, "warmpool_cold_starts_total", map[string]string{"pool": empty, "reason": enginecache.ColdNoSnapshot}, 1)
		d.expectGone(volumes.RestoreName(node), &corev1.PersistentVolumeClaim{})
	})

	// Each restore started, then its Job ends as given (or never, for the timeout).
	started := func(t *testing.T, node string) (*direct, *batchv1.Job) {
		t.Helper()
		d := d.in(t)
		newNode(t, node, warm, "amd64", startupTaint())
		expectRequeued(t, d.restore(node), 15*time.Second)
		job := &batchv1.Job{}
		d.expectExists(volumes.RestoreName(node), job)
		return d, job
	}

	t.Run("failure", func(t *testing.T) {
		node := unique("cold-fail")
		d, job := started(t, node)
		d.runJob(job.Name, 1, volumes.JobResult{Result: volumes.ResultFailed, Reason: "checksum mismatch"})
		expectNotRequeued(t, d.restore(node))
		d.expectTainted(node, false)
		d.expectEvent(node, enginecache.ReasonColdStart, enginecache.ColdFailed, "checksum mismatch")
		d.expectGone(volumes.RestoreName(node), &corev1.PersistentVolumeClaim{})
		d.expectGone(volumes.RestoreName(node), &batchv1.Job{})
		expectMetric(t, "warmpool_cold_starts_total", map[string]string{"pool": warm, "reason": enginecache.ColdFailed}, 1)
		expectMetric(t, "warmpool_cache_restores_total", map[string]string{"pool": warm, "result": "failed"}, 1)
	})

	t.Run("no cache in the volume", func(t *testing.T) {
		node := unique("cold-nocache")
		d, job := started(t, node)
		d.runJob(job.Name, volumes.ExitNoCache, volumes.JobResult{Result: volumes.ResultNoCache, Reason: "no manifest"})
		expectNotRequeued(t, d.restore(node))
		d.expectTainted(node, false)
		d.expectEvent(node, enginecache.ReasonColdStart, enginecache.ColdNoCache, "no manifest")
		expectMetric(t, "warmpool_cold_starts_total", map[string]string{"pool": warm, "reason": enginecache.ColdNoCache}, 1)
	})

	t.Run("timeout", func(t *testing.T) {
		node := unique("cold-timeout")
		d, job := started(t, node)
		// The snapshot's 20Gi at the default 125 MiB/s: 163.84 s, 245.76 s with headroom, plus
		// 2 min of provisioning slack.
		if ads := *job.Spec.ActiveDeadlineSeconds; ads > 366 || ads < 355 {
			t.Fatalf("restore activeDeadlineSeconds %d, want the restore's 366 s budget", ads)
		}
		// Within the budget the restore waits, and looks again by its end.
		d.clk.Step(6 * time.Minute)
		expectRequeued(t, d.restore(node), 6*time.Second)
		d.expectTainted(node, true)
		d.clk.Step(time.Minute)
		expectNotRequeued(t, d.restore(node))
		d.expectTainted(node, false)
		d.expectEvent(node, enginecache.ReasonColdStart, enginecache.ColdTimeout)
		d.expectGone(volumes.RestoreName(node), &batchv1.Job{})
		d.expectGone(volumes.RestoreName(node), &corev1.PersistentVolumeClaim{})
		expectMetric(t, "warmpool_cold_starts_total", map[string]string{"pool": warm, "reason": enginecache.ColdTimeout}, 1)
		expectMetric(t, "warmpool_cache_restores_total", map[string]string{"pool": warm, "result": "timeout"}, 1)
	})
}

// A snapshot that cannot be restored within the pool's cap is not attempted: the node starts
// cold at once, with the numbers, and no volume is made.
func TestRestoreOverBudgetStartsColdAtOnce(t *testing.T) {
	pool, node := unique("overbudget"), unique("overbudget-node")
	d := newDirect(t, poolYAMLWith(pool, "restore: {throughput: 10Mi, maxWait: 3m, provisioningSlack: 1m}"))
	d.newSnapshotOf("big", pool, 5<<30)
	newNode(t, node, pool, "amd64", startupTaint())
	expectNotRequeued(t, d.restore(node))
	d.expectTainted(node, false)
	d.expectEvent(node, enginecache.ReasonColdStart, enginecache.ColdOverBudget,
		"snapshot big (bytes of cache) holds 5Gi", "10Mi/s", "8m32s", "cap of 3m0s", "cache.restore.maxWait")
	d.expectGone(volumes.RestoreName(node), &corev1.PersistentVolumeClaim{})
	expectMetric(t, "warmpool_cold_starts_total", map[string]string{"pool": pool, "reason": enginecache.ColdOverBudget}, 1)
	expectMetric(t, "warmpool_cache_storage_check_failures_total", map[string]string{"pool": pool, "op": "restore", "check": storagecheck.CheckOverBudget}, 1)
}

// The restore's timeout is derived from the snapshot: slack plus its transfer with headroom,
// within the cap; the restore looks again by its end, and past it the node starts cold.
func TestRestoreTimeoutFromBudget(t *testing.T) {
	pool, node := unique("budget"), unique("budget-node")
	d := newDirect(t, poolYAMLWith(pool, "restore: {throughput: 100Mi, maxWait: 10m, provisioningSlack: 1m}"))
	// 10000 MiB at 100 MiB/s: 100 s, 150 s with headroom, plus 60 s of slack.
	d.newSnapshotOf("cache", pool, 10000<<20)
	newNode(t, node, pool, "amd64", startupTaint())
	expectRequeued(t, d.restore(node), 15*time.Second)
	job := &batchv1.Job{}
	d.expectExists(volumes.RestoreName(node), job)
	d.expectExists(volumes.RestoreName(node), &corev1.PersistentVolumeClaim{})
	if ads := *job.Spec.ActiveDeadlineSeconds; ads > 210 || ads < 200 {
		t.Fatalf("restore activeDeadlineSeconds %d, want the budget's 210 s", ads)
	}
	n := d.node(node)
	if n.Annotations["warmpool.io/restore-from"] != "cache" || !strings.Contains(n.Annotations["warmpool.io/restore-budget"], "9.8Gi at 100Mi/s takes 1m40s") {
		t.Fatalf("node annotations %v", n.Annotations)
	}
	if at, err := time.Parse(time.RFC3339, n.Annotations["warmpool.io/restore-deadline"]); err != nil || at.After(d.clk.Now().Add(210*time.Second)) || at.Before(d.clk.Now().Add(209*time.Second)) {
		t.Fatalf("restore deadline %q (%v), want 210 s from the start", n.Annotations["warmpool.io/restore-deadline"], err)
	}

	d.clk.Step(205 * time.Second)
	expectRequeued(t, d.restore(node), 5*time.Second)
	d.expectTainted(node, true)
	d.clk.Step(6 * time.Second)
	expectNotRequeued(t, d.restore(node))
	d.expectTainted(node, false)
	d.expectEvent(node, enginecache.ReasonColdStart, enginecache.ColdTimeout, "did not finish within its budget", "9.8Gi at 100Mi/s")
	d.expectGone(volumes.RestoreName(node), &corev1.PersistentVolumeClaim{})
	d.expectGone(volumes.RestoreName(node), &batchv1.Job{})
	expectMetric(t, "warmpool_cold_starts_total", map[string]string{"pool": pool, "reason": enginecache.ColdTimeout}, 1)
}
