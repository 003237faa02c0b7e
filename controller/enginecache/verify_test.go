package enginecache_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/volumes"
)

// argAfter returns the argument that follows flag, "" when there is none.
func argAfter(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// setReady plays the kubelet's readiness probe on a pod.
func (e *env) setReady(name string, ready bool) {
	e.T.Helper()
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p := &corev1.Pod{}
	get(e.T, name, e.Namespace, p)
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	if err := kube.Status().Update(e.T.Context(), p); err != nil {
		e.T.Fatal(err)
	}
}

// restoreOnto runs a restore of the pool's newest snapshot onto a new node up to its release:
// the copy Job succeeds, the taint goes, and the node waits for the engine's verdict.
func (e *env) restoreOnto(pool, node, wantSnapshot string) {
	e.T.Helper()
	newNode(e.T, node, pool, "amd64", startupTaint(), runnerTaint(pool))
	pvc := &corev1.PersistentVolumeClaim{}
	e.waitExists(volumes.RestoreName(node), pvc)
	if pvc.Spec.DataSource == nil || pvc.Spec.DataSource.Name != wantSnapshot {
		e.T.Fatalf("node %s restores from %+v, want %s", node, pvc.Spec.DataSource, wantSnapshot)
	}
	e.runJob(volumes.RestoreName(node), 0, volumes.JobResult{Result: volumes.ResultRestored, Bytes: 4096, Files: 9, DurationSeconds: 2})
	waitReleased(e.T, node)
	n := &corev1.Node{}
	get(e.T, node, "", n)
	if n.Annotations[enginecache.AnnotationRestore] != "verifying" || n.Annotations[enginecache.AnnotationRestoreSnapshot] != wantSnapshot {
		e.T.Fatalf("released node annotations %v", n.Annotations)
	}
}

// verifyJob waits for the node's verify Job and checks it reads this restore's marker.
func (e *env) verifyJob(node string) *batchv1.Job {
	e.T.Helper()
	job := &batchv1.Job{}
	e.waitExists(volumes.VerifyName(node), job)
	n := &corev1.Node{}
	get(e.T, node, "", n)
	args := job.Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "verify") || argAfter(args, "--restore-id") != n.Annotations[enginecache.AnnotationRestoreID] || job.Spec.Template.Spec.NodeName != node {
		e.T.Fatalf("verify job args %v on %q, node annotations %v", args, job.Spec.Template.Spec.NodeName, n.Annotations)
	}
	return job
}

func TestRestoreCountsWarmOnlyWhenTheEngineKeptIt(t *testing.T) {
	pool, node := unique("verify"), unique("verify-node")
	e := newEnv(t, poolYAML(pool))
	e.newSnapshot("snap", pool, "amd64", engineVersion, e.clk.Now().Add(-time.Hour), true)
	e.restoreOnto(pool, node, "snap")

	// The engine starts but is not Ready yet: its verdict is not on disk, so nothing is asked.
	engine := e.newEnginePod(node, pool)
	consistently(t, "no verify before the engine is Ready", func() error {
		if exists(t, volumes.VerifyName(node), e.Namespace, &batchv1.Job{}) {
			return fmt.Errorf("verify job created while the engine starts")
		}
		return nil
	})
	e.setReady(engine.Name, true)
	job := e.verifyJob(node)
	e.runJob(job.Name, 0, volumes.JobResult{Result: volumes.ResultWarm})
	waitNodeEvent(t, node, enginecache.ReasonRestored, "snap", "kept it")
	waitMetric(t, "warmpool_cache_restores_total", map[string]string{"pool": pool, "result": volumes.ResultWarm}, 1)
	e.waitGone(job.Name, &batchv1.Job{})
	n := &corev1.Node{}
	get(t, node, "", n)
	if n.Annotations[enginecache.AnnotationRestore] != volumes.ResultWarm {
		t.Fatalf("verdict %q", n.Annotations[enginecache.AnnotationRestore])
	}
	s := &snapshotv1.VolumeSnapshot{}
	get(t, "snap", e.Namespace, s)
	if volumes.Quarantined(s) {
		t.Fatal("a snapshot the engine kept was quarantined")
	}
	touch(t, node)
	consistently(t, "a concluded verification never runs again", func() error {
		if exists(t, job.Name, e.Namespace, &batchv1.Job{}) {
			return fmt.Errorf("verify job came back")
		}
		return nil
	})
}

func TestRestoreWipedByTheEngineQuarantinesTheSnapshot(t *testing.T) {
	pool, first, second := unique("wiped"), unique("wiped-node"), unique("wiped-next")
	e := newEnv(t, poolYAML(pool))
	e.newSnapshot("good", pool, "amd64", engineVersion, e.clk.Now().Add(-2*time.Hour), true)
	e.newSnapshot("bad", pool, "amd64", engineVersion, e.clk.Now().Add(-time.Hour), true)
	e.restoreOnto(pool, first, "bad")
	e.setReady(e.newEnginePod(first, pool).Name, true)
	job := e.verifyJob(first)
	reason := "the engine discarded the restored cache at start: worker/ was reset"
	e.runJob(job.Name, volumes.ExitWiped, volumes.JobResult{Result: volumes.ResultWiped, Reason: reason})

	waitNodeEvent(t, first, enginecache.ReasonColdStart, enginecache.ColdWiped, "bad", "worker/ was reset")
	waitNodeEvent(t, first, enginecache.ReasonQuarantined, "bad")
	waitMetric(t, "warmpool_cache_restores_total", map[string]string{"pool": pool, "result": volumes.ResultWiped}, 1)
	waitMetric(t, "warmpool_cold_starts_total", map[string]string{"pool": pool, "reason": enginecache.ColdWiped}, 1)
	eventually(t, "snapshot bad quarantined", func() error {
		s := &snapshotv1.VolumeSnapshot{}
		get(t, "bad", e.Namespace, s)
		if !volumes.Quarantined(s) || !strings.Contains(s.Annotations[volumes.AnnotationQuarantineReason], "worker/ was reset") {
			return fmt.Errorf("labels %v annotations %v", s.Labels, s.Annotations)
		}
		return nil
	})
	if got := metric(t, "warmpool_cache_restores_total", map[string]string{"pool": pool, "result": volumes.ResultWarm}); got != 0 {
		t.Fatalf("a wiped restore was counted warm")
	}

	// The next node gets the older good snapshot, never the quarantined one.
	e.restoreOnto(pool, second, "good")
}

// A restore that finds its volume does not match the volume's manifest quarantines the
// snapshot: the node starts cold at once, and neither the next restore nor a save (which takes
// its volume to be as the manifest says) uses the snapshot again.
func TestRestoreOfACorruptCopyQuarantinesTheSnapshot(t *testing.T) {
	pool, first, second := unique("corrupt"), unique("corrupt-node"), unique("corrupt-next")
	e := newEnv(t, poolYAML(pool))
	e.newSnapshot("good", pool, "amd64", engineVersion, e.clk.Now().Add(-2*time.Hour), true)
	e.newSnapshot("bad", pool, "amd64", engineVersion, e.clk.Now().Add(-time.Hour), true)
	newNode(t, first, pool, "amd64", startupTaint(), runnerTaint(pool))
	pvc := &corev1.PersistentVolumeClaim{}
	e.waitExists(volumes.RestoreName(first), pvc)
	if pvc.Spec.DataSource == nil || pvc.Spec.DataSource.Name != "bad" {
		t.Fatalf("node %s restores from %+v, want the newest snapshot", first, pvc.Spec.DataSource)
	}
	reason := "refusing to restore from /volume: copy does not match its manifest: worker/x.db: size 1, manifest says 4096"
	e.runJob(volumes.RestoreName(first), volumes.ExitCorrupt, volumes.JobResult{Result: volumes.ResultCorrupt, Reason: reason})

	waitReleased(t, first)
	waitNodeEvent(t, first, enginecache.ReasonColdStart, enginecache.ColdCorrupt, "bad", "worker/x.db")
	waitNodeEvent(t, first, enginecache.ReasonQuarantined, "bad", "worker/x.db")
	waitMetric(t, "warmpool_cache_restores_total", map[string]string{"pool": pool, "result": volumes.ResultCorrupt}, 1)
	waitMetric(t, "warmpool_cold_starts_total", map[string]string{"pool": pool, "reason": enginecache.ColdCorrupt}, 1)
	eventually(t, "snapshot bad quarantined", func() error {
		s := &snapshotv1.VolumeSnapshot{}
		get(t, "bad", e.Namespace, s)
		if !volumes.Quarantined(s) || !strings.Contains(s.Annotations[volumes.AnnotationQuarantineReason], "does not match its manifest") {
			return fmt.Errorf("labels %v annotations %v", s.Labels, s.Annotations)
		}
		return nil
	})
	n := &corev1.Node{}
	get(t, first, "", n)
	if n.Annotations[enginecache.AnnotationRestore] == "verifying" {
		t.Fatalf("a node whose restore was refused is verifying: %v", n.Annotations)
	}

	// The next node gets the older good snapshot.
	e.restoreOnto(pool, second, "good")
}

func TestRestoreUnverifiedWhenTheEngineNeverGetsReady(t *testing.T) {
	pool, node := unique("unverified"), unique("unverified-node")
	e := newEnv(t, poolYAML(pool))
	e.newSnapshot("snap", pool, "amd64", engineVersion, e.clk.Now().Add(-time.Hour), true)
	e.restoreOnto(pool, node, "snap")
	e.newEnginePod(node, pool) // never Ready

	e.clk.Step(enginecache.DefaultVerifyTimeout + time.Second)
	touch(t, node)
	waitNodeEvent(t, node, enginecache.ReasonRestoreUnverified, "not Ready")
	waitMetric(t, "warmpool_cache_restores_total", map[string]string{"pool": pool, "result": "unverified"}, 1)
	s := &snapshotv1.VolumeSnapshot{}
	get(t, "snap", e.Namespace, s)
	if volumes.Quarantined(s) {
		t.Fatal("a snapshot was quarantined without the engine's verdict")
	}
	if exists(t, volumes.VerifyName(node), e.Namespace, &batchv1.Job{}) {
		t.Fatal("verify job started after the verification gave up")
	}
}
