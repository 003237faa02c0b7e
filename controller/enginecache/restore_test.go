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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// newSnapshot creates a VolumeSnapshot as a save would have, then gives it the status the
// snapshotter would (ready or not, taken at created).
func (e *env) newSnapshot(name, pool, arch, version string, created time.Time, ready bool) {
	e.T.Helper()
	s := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: name, Labels: map[string]string{
			nodepools.LabelManagedBy: nodepools.ManagedBy, volumes.LabelPool: pool, volumes.LabelArch: arch,
			volumes.LabelEngineVersion: version, volumes.LabelSourceNode: "old-" + name,
		}},
		Spec: snapshotv1.VolumeSnapshotSpec{Source: snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To("warmpool-save-old-" + name)}},
	}
	if err := kube.Create(e.T.Context(), s); err != nil {
		e.T.Fatal(err)
	}
	e.setSnapshotStatus(name, ready, created)
}

func startupTaint() corev1.Taint { return nodepools.StartupTaint }

// waitReleased waits for the startup taint to go, and checks every other taint stayed.
func waitReleased(t testing.TB, node string, keep ...corev1.Taint) {
	t.Helper()
	eventually(t, "startup taint removed from "+node, func() error {
		n := &corev1.Node{}
		get(t, node, "", n)
		for _, tt := range n.Spec.Taints {
			if tt.Key == nodepools.StartupTaintKey {
				return fmt.Errorf("still tainted")
			}
		}
		for _, k := range keep {
			if !slices.ContainsFunc(n.Spec.Taints, func(tt corev1.Taint) bool { return tt.MatchTaint(&k) }) {
				return fmt.Errorf("taint %v was removed too", k)
			}
		}
		return nil
	})
}

func TestRestorePicksNewestMatchingSnapshot(t *testing.T) {
	pool, node := unique("restore"), unique("restore-node")
	e := newEnv(t, poolYAML(pool))
	now := e.clk.Now()
	e.newSnapshot("older", pool, "amd64", engineVersion, now.Add(-2*time.Hour), true)
	e.newSnapshot("newest", pool, "amd64", engineVersion, now.Add(-time.Hour), true)
	e.newSnapshot("other-arch", pool, "arm64", engineVersion, now.Add(-10*time.Minute), true)
	e.newSnapshot("other-version", pool, "amd64", "v0.20.0", now.Add(-5*time.Minute), true)
	e.newSnapshot("not-ready", pool, "amd64", engineVersion, now.Add(-time.Minute), false)

	runner := runnerTaint(pool)
	newNode(t, node, pool, "amd64", startupTaint(), runner)
	pvc := &corev1.PersistentVolumeClaim{}
	e.waitExists(volumes.RestoreName(node), pvc)
	if pvc.Spec.DataSource == nil || pvc.Spec.DataSource.Name != "newest" {
		t.Fatalf("restore PVC data source %+v, want snapshot newest", pvc.Spec.DataSource)
	}
	// The snapshot's restore size (20Gi) beats the pool's 10Gi.
	if got := pvc.Spec.Resources.Requests.Storage().String(); got != "20Gi" || pvc.Annotations[volumes.SelectedNodeAnnotation] != node {
		t.Fatalf("restore PVC size %s annotations %v", got, pvc.Annotations)
	}
	job := &batchv1.Job{}
	e.waitExists(volumes.RestoreName(node), job)
	if args := job.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "restore") || !slices.Contains(args, "/host/dagger-"+pool) {
		t.Fatalf("restore args %v", args)
	}
	consistently(t, "the node stays tainted while restoring", func() error {
		n := &corev1.Node{}
		get(t, node, "", n)
		if !slices.ContainsFunc(n.Spec.Taints, func(tt corev1.Taint) bool { return tt.Key == nodepools.StartupTaintKey }) {
			return fmt.Errorf("taint removed before the restore finished")
		}
		return nil
	})

	if id := argAfter(job.Spec.Template.Spec.Containers[0].Args, "--restore-id"); !strings.HasPrefix(id, "newest@") {
		t.Fatalf("restore id %q, want the snapshot and the node's UID", id)
	}
	e.runJob(job.Name, 0, volumes.JobResult{Result: volumes.ResultRestored, Bytes: 2048, Files: 7, DurationSeconds: 3})
	waitReleased(t, node, runner)
	waitNodeEvent(t, node, enginecache.ReasonRestoreCopied, "newest", "2048 bytes")
	e.waitGone(job.Name, &batchv1.Job{})
	e.waitGone(pvc.Name, &corev1.PersistentVolumeClaim{})
	waitMetric(t, "warmpool_cache_restore_duration_seconds", map[string]string{"pool": pool}, 1)
	// Copied is not warm: only the engine's verdict counts (verify_test.go).
	if got := metric(t, "warmpool_cache_restores_total", map[string]string{"pool": pool, "result": volumes.ResultWarm}); got != 0 || len(nodeEvents(t, node, enginecache.ReasonRestored)) != 0 {
		t.Fatalf("restore counted warm (%v) before the engine said so", got)
	}
	if got := metric(t, "warmpool_cold_starts_total", map[string]string{"pool": pool, "reason": enginecache.ColdNoSnapshot}); got != 0 {
		t.Fatalf("cold start counted for a warm restore")
	}
}

func TestRestoreColdStarts(t *testing.T) {
	warm, empty := unique("cold"), unique("cold-empty")
	e := newEnv(t, poolYAML(warm), poolYAML(empty))
	e.newSnapshot("cache", warm, "amd64", engineVersion, e.clk.Now().Add(-time.Hour), true)
	// Only another architecture has a snapshot in the empty pool.
	e.newSnapshot("arm-only", empty, "arm64", engineVersion, e.clk.Now().Add(-time.Hour), true)

	t.Run("no snapshot", func(t *testing.T) {
		node := unique("cold-none")
		newNode(t, node, empty, "amd64", startupTaint())
		waitReleased(t, node)
		waitNodeEvent(t, node, enginecache.ReasonColdStart, "no-snapshot")
		waitMetric(t, "warmpool_cold_starts_total", map[string]string{"pool": empty, "reason": enginecache.ColdNoSnapshot}, 1)
		if exists(t, volumes.RestoreName(node), e.Namespace, &corev1.PersistentVolumeClaim{}) {
			t.Fatal("a restore volume was made without a snapshot")
		}
	})

	t.Run("failure", func(t *testing.T) {
		node := unique("cold-fail")
		newNode(t, node, warm, "amd64", startupTaint())
		e.runJob(volumes.RestoreName(node), 1, volumes.JobResult{Result: volumes.ResultFailed, Reason: "checksum mismatch"})
		waitReleased(t, node)
		waitNodeEvent(t, node, enginecache.ReasonColdStart, "restore-failed", "checksum mismatch")
		e.waitGone(volumes.RestoreName(node), &corev1.PersistentVolumeClaim{})
		waitMetric(t, "warmpool_cold_starts_total", map[string]string{"pool": warm, "reason": enginecache.ColdFailed}, 1)
		waitMetric(t, "warmpool_cache_restores_total", map[string]string{"pool": warm, "result": "failed"}, 1)
	})

	t.Run("no cache in the volume", func(t *testing.T) {
		node := unique("cold-nocache")
		newNode(t, node, warm, "amd64", startupTaint())
		e.runJob(volumes.RestoreName(node), volumes.ExitNoCache, volumes.JobResult{Result: volumes.ResultNoCache, Reason: "no manifest"})
		waitReleased(t, node)
		waitNodeEvent(t, node, enginecache.ReasonColdStart, "no-cache", "no manifest")
	})

	t.Run("timeout", func(t *testing.T) {
		node := unique("cold-timeout")
		newNode(t, node, warm, "amd64", startupTaint())
		job := &batchv1.Job{}
		e.waitExists(volumes.RestoreName(node), job)
		// The snapshot's 20Gi at the default 125 MiB/s: 163.84 s, 245.76 s with headroom, plus
		// 2 min of provisioning slack.
		if ads := *job.Spec.ActiveDeadlineSeconds; ads > 366 || ads < 355 {
			t.Fatalf("restore activeDeadlineSeconds %d, want the restore's 366 s budget", ads)
		}
		e.clk.Step(7 * time.Minute)
		touch(t, node)
		waitReleased(t, node)
		waitNodeEvent(t, node, enginecache.ReasonColdStart, "restore-timeout")
		e.waitGone(volumes.RestoreName(node), &batchv1.Job{})
		e.waitGone(volumes.RestoreName(node), &corev1.PersistentVolumeClaim{})
	})
}

func TestRestoreWaitsForReadyNode(t *testing.T) {
	pool, node := unique("notready"), unique("notready-node")
	newEnv(t, poolYAML(pool))
	// A Node that registered but is not Ready yet (no Ready condition).
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{
			nodepools.LabelPool: pool, corev1.LabelArchStable: "amd64", testLabel: "true",
		}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{startupTaint()}},
	}
	if err := kube.Create(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	// With no snapshot, a Ready node would be released at once: the taint staying shows the wait.
	consistently(t, "a node that is not Ready keeps its startup taint", func() error {
		get(t, node, "", n)
		if !slices.ContainsFunc(n.Spec.Taints, func(tt corev1.Taint) bool { return tt.Key == nodepools.StartupTaintKey }) {
			return fmt.Errorf("released before Ready")
		}
		return nil
	})
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if err := kube.Status().Update(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	waitReleased(t, node)
	waitNodeEvent(t, node, enginecache.ReasonColdStart, "no-snapshot")
}

func TestRestoreWithoutSnapshotAPIStartsCold(t *testing.T) {
	pool, node := unique("nosnapapi"), unique("nosnapapi-node")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "warmpool-nosnap-"}}
	if err := kube.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	// What operator.New registers when the cluster serves no VolumeSnapshot API.
	startControllers(t, ns.Name, clocktesting.NewFakeClock(time.Now()), configHeader+poolYAML(pool),
		func(cc *enginecache.Controllers, mgr ctrl.Manager) error { return cc.Register(mgr) },
		func(o *enginecache.Options) { o.NoSnapshotAPI = true })
	newNode(t, node, pool, "amd64", startupTaint())
	waitReleased(t, node)
	waitNodeEvent(t, node, enginecache.ReasonColdStart, enginecache.ColdNoSnapshotAPI)
}
