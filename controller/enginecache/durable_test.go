package enginecache_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// These tests kill the controller between a decision and its report: no manager runs, the
// reconcilers are called directly (expect_test.go), and a write the controller makes
// fails as if the process had died just before it. Calling the reconciler again is the
// restarted controller.

// crashingClient fails the controller's Event creates while crash is set: the process "dies"
// before its report reaches the API server.
type crashingClient struct {
	client.Client
	crash atomic.Bool
}

var errKilled = errors.New("killed (test)")

func (c *crashingClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if _, ok := obj.(*corev1.Event); ok && c.crash.Load() {
		return errKilled
	}
	return c.Client.Create(ctx, obj, opts...)
}

// killedThenRestarted reconciles with the process dying at its report (which must fail), then
// again as the restarted process, then once more.
func (d *direct) killedThenRestarted(r reconcile.Reconciler, node string, between func()) {
	d.T.Helper()
	d.kube.crash.Store(true)
	if _, err := d.reconcile(r, node); !errors.Is(err, errKilled) {
		d.T.Fatalf("first reconcile = %v, want it killed at its report", err)
	}
	d.kube.crash.Store(false)
	between()
	for i := 0; i < 2; i++ {
		if _, err := d.reconcile(r, node); err != nil {
			d.T.Fatalf("reconcile after the restart: %v", err)
		}
	}
}

func annotation(t testing.TB, obj client.Object, key string) (string, bool) {
	t.Helper()
	v, ok := obj.GetAnnotations()[key]
	return v, ok
}

// A save that concluded (a timeout here) just before the controller died is reported by the
// next one, once: its outcome and its report were recorded together.
func TestSaveOutcomeReportedOnceAcrossAKill(t *testing.T) {
	pool, node := unique("durable-save"), unique("durable-save-node")
	d := newDirect(t, poolYAML(pool))
	newNode(t, node, pool, "amd64")
	past := d.clk.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	newNodeClaim(t, node, pool, func(nc *karpv1.NodeClaim) {
		nc.Annotations = map[string]string{karpv1.NodeClaimTerminationTimestampAnnotationKey: past}
	})
	deleteNodeClaim(t, node)
	lost := map[string]string{"pool": pool, "reason": "timeout"}

	d.killedThenRestarted(d.ctrls.Save, node, func() {
		n := &corev1.Node{}
		get(t, node, "", n)
		if n.Annotations[enginecache.AnnotationSaveOutcome] != "timeout" {
			t.Fatalf("outcome %q after the kill, want the decision recorded", n.Annotations[enginecache.AnnotationSaveOutcome])
		}
		if _, ok := annotation(t, n, "warmpool.io/cache-save-report"); !ok {
			t.Fatal("the decision was recorded without its report")
		}
		if got := nodeEvents(t, node, enginecache.ReasonSaveTimedOut); len(got) != 0 || metric(t, "warmpool_cache_lost_total", lost) != 0 {
			t.Fatalf("reported before the kill: events %q, lost %v", got, metric(t, "warmpool_cache_lost_total", lost))
		}
	})

	reportedOnce(t, node, enginecache.ReasonSaveTimedOut, "warmpool_cache_lost_total", lost)
	n := &corev1.Node{}
	get(t, node, "", n)
	if _, ok := annotation(t, n, "warmpool.io/cache-save-report"); ok {
		t.Error("the delivered report was left on the Node")
	}
	if exists(t, volumes.GuardName(node), d.Namespace, &corev1.Pod{}) {
		t.Error("guard left after the save concluded")
	}
}

// The controller died after its Event was created but before it removed the report's record: the
// next one delivers it again, which neither duplicates the Event nor counts it twice.
func TestSaveReportDeliveredAgainIsNotDuplicated(t *testing.T) {
	pool, node := unique("durable-twice"), unique("durable-twice-node")
	d := newDirect(t, poolYAML(pool))
	newNode(t, node, pool, "amd64")
	past := d.clk.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	newNodeClaim(t, node, pool, func(nc *karpv1.NodeClaim) {
		nc.Annotations = map[string]string{karpv1.NodeClaimTerminationTimestampAnnotationKey: past}
	})
	deleteNodeClaim(t, node)
	lost := map[string]string{"pool": pool, "reason": "timeout"}

	d.kube.crash.Store(true)
	if _, err := d.reconcile(d.ctrls.Save, node); !errors.Is(err, errKilled) {
		t.Fatalf("first reconcile = %v", err)
	}
	n := &corev1.Node{}
	get(t, node, "", n)
	record := n.Annotations["warmpool.io/cache-save-report"]
	d.kube.crash.Store(false)
	if _, err := d.reconcile(d.ctrls.Save, node); err != nil {
		t.Fatal(err)
	}
	// The record comes back as it was when the process died after delivering it.
	update(t, &corev1.Node{}, node, func(n *corev1.Node) { n.Annotations["warmpool.io/cache-save-report"] = record })
	if _, err := d.reconcile(d.ctrls.Save, node); err != nil {
		t.Fatal(err)
	}
	reportedOnce(t, node, enginecache.ReasonSaveTimedOut, "warmpool_cache_lost_total", lost)
}

// A cold start decided (the startup taint removed) just before the controller died is reported
// by the next one, once.
func TestColdStartReportedOnceAcrossAKill(t *testing.T) {
	pool, node := unique("durable-cold"), unique("durable-cold-node")
	d := newDirect(t, poolYAML(pool))
	newNode(t, node, pool, "amd64", nodepools.StartupTaint)
	cold := map[string]string{"pool": pool, "reason": enginecache.ColdNoSnapshot}

	d.killedThenRestarted(d.ctrls.Restore, node, func() {
		n := &corev1.Node{}
		get(t, node, "", n)
		for _, taint := range n.Spec.Taints {
			if taint.Key == nodepools.StartupTaintKey {
				t.Fatal("startup taint still there: the release was not decided before the kill")
			}
		}
		if _, ok := annotation(t, n, "warmpool.io/cache-restore-report"); !ok {
			t.Fatal("the release was recorded without its report")
		}
		if got := nodeEvents(t, node, enginecache.ReasonColdStart); len(got) != 0 {
			t.Fatalf("reported before the kill: %q", got)
		}
	})
	if got := nodeEvents(t, node, enginecache.ReasonColdStart); len(got) != 1 || !strings.Contains(got[0], enginecache.ColdNoSnapshot) {
		t.Fatalf("ColdStart events %q, want one (%s)", got, enginecache.ColdNoSnapshot)
	}
	if v := metric(t, "warmpool_cold_starts_total", cold); v != 1 {
		t.Fatalf("warmpool_cold_starts_total%v = %v, want 1", cold, v)
	}
}

// A restore's verdict recorded just before the controller died is reported by the next one,
// once.
func TestVerifyVerdictReportedOnceAcrossAKill(t *testing.T) {
	pool, node := unique("durable-verify"), unique("durable-verify-node")
	d := newDirect(t, poolYAML(pool))
	n := newNode(t, node, pool, "amd64")
	snap := "warmpool-" + pool + "-old"
	// Released on a restored copy long ago; the engine never became Ready.
	update(t, &corev1.Node{}, node, func(n *corev1.Node) {
		n.Annotations = map[string]string{
			enginecache.AnnotationRestore: "verifying", enginecache.AnnotationRestoreSnapshot: snap,
			enginecache.AnnotationRestoreID:       snap + "@" + string(n.UID),
			enginecache.AnnotationRestoreReleased: d.clk.Now().Add(-time.Hour).UTC().Format(time.RFC3339),
		}
	})
	_ = n
	unverified := map[string]string{"pool": pool, "result": "unverified"}

	d.killedThenRestarted(d.ctrls.Restore, node, func() {
		n := &corev1.Node{}
		get(t, node, "", n)
		if n.Annotations[enginecache.AnnotationRestore] != "unverified" {
			t.Fatalf("verdict %q after the kill, want it recorded", n.Annotations[enginecache.AnnotationRestore])
		}
		if _, ok := annotation(t, n, "warmpool.io/cache-verify-report"); !ok {
			t.Fatal("the verdict was recorded without its report")
		}
	})
	reportedOnce(t, node, enginecache.ReasonRestoreUnverified, "warmpool_cache_restores_total", unverified)
}

// A snapshot marked failed after its cut just before the controller died is reported by the
// next one, once.
func TestSnapshotFailureReportedOnceAcrossAKill(t *testing.T) {
	pool, node := unique("durable-snap"), unique("durable-snap-node")
	d := newDirect(t, poolYAML(pool))
	newNode(t, node, pool, "amd64")
	snap := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: "warmpool-" + pool + "-broken", Labels: map[string]string{
			volumes.LabelPool: pool, volumes.LabelArch: "amd64", volumes.LabelEngineVersion: engineVersion,
			volumes.LabelSourceNode: node, nodepools.LabelManagedBy: nodepools.ManagedBy,
		}},
		Spec: snapshotv1.VolumeSnapshotSpec{Source: snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To("gone")}},
	}
	if err := kube.Create(t.Context(), snap); err != nil {
		t.Fatal(err)
	}
	snap.Status = &snapshotv1.VolumeSnapshotStatus{ReadyToUse: ptr.To(false), CreationTime: ptr.To(metav1.NewTime(d.clk.Now())),
		Error: &snapshotv1.VolumeSnapshotError{Message: ptr.To("upload failed")}}
	if err := kube.Status().Update(t.Context(), snap); err != nil {
		t.Fatal(err)
	}
	lost := map[string]string{"pool": pool, "reason": "snapshot-failed"}
	gc := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		return d.ctrls.GC.Reconcile(ctx, req)
	})
	// The GC controller records its failure as an Event on the ConfigMap too, which the kill
	// also fails: only the snapshot's mark matters here.
	d.kube.crash.Store(true)
	if _, err := d.reconcile(gc, "cache-gc"); err == nil {
		t.Fatal("first GC pass did not fail at its report")
	}
	got := &snapshotv1.VolumeSnapshot{}
	get(t, snap.Name, d.Namespace, got)
	if !volumes.Failed(got) {
		t.Fatal("snapshot not marked failed before the kill")
	}
	if _, ok := annotation(t, got, "warmpool.io/snapshot-failed-report"); !ok {
		t.Fatal("the mark was recorded without its report")
	}
	d.kube.crash.Store(false)
	for i := 0; i < 2; i++ {
		if _, err := d.reconcile(gc, "cache-gc"); err != nil {
			t.Fatal(err)
		}
	}
	reportedOnce(t, node, enginecache.ReasonSnapshotFailed, "warmpool_cache_lost_total", lost)
}

// A node that goes after its snapshot was cut, while no controller runs, was saved: the
// restarted controller reads the snapshot and reports it so, not as a loss.
func TestSaveNodeGoneAfterTheCutIsSaved(t *testing.T) {
	pool, node := unique("gonecut"), unique("gonecut-node")
	e := newEnv(t, poolYAML(pool))
	e.committedAndStopped(node, pool)
	job := &batchv1.Job{}
	e.waitExists(volumes.SaveName(node), job)
	e.runJob(job.Name, 0, volumes.JobResult{Result: volumes.ResultSaved, Bytes: 4096, Files: 3})
	snap := e.waitSnapshot(node)

	e.Stop()
	// Meanwhile the snapshot is cut and the instance goes.
	e.setSnapshotStatus(snap.Name, false, e.clk.Now())
	update(t, &corev1.Node{}, node, func(n *corev1.Node) { n.Finalizers = nil })
	if err := kube.Delete(t.Context(), nodeObj(node)); client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
	e.Start()

	waitNodeEvent(t, node, enginecache.ReasonSaved, snap.Name, "the node had gone already")
	waitMetric(t, "warmpool_cache_saves_total", map[string]string{"pool": pool, "result": "saved"}, 1)
	e.waitGone(volumes.GuardName(node), &corev1.Pod{})
	if got := nodeEvents(t, node, enginecache.ReasonLost); len(got) != 0 {
		t.Fatalf("CacheLost events %q for a node whose snapshot was cut", got)
	}
	if v := metric(t, "warmpool_cache_lost_total", map[string]string{"pool": pool, "reason": "node-gone"}); v != 0 {
		t.Fatalf("counted lost (node-gone) %v times", v)
	}
	if !exists(t, snap.Name, e.Namespace, &snapshotv1.VolumeSnapshot{}) {
		t.Fatal("the cut snapshot was deleted")
	}
}

// A controller that starts after Karpenter began a disruption (a failover, a crash loop) finds
// the node still there (its hold) with no guard, the engine already evicted by Karpenter's
// drain: it guards the node and saves it all the same.
func TestSaveOfANodeAlreadyDrainingWhenTheControllerStarts(t *testing.T) {
	pool, node := unique("failover"), unique("failover-node")
	e := newEnv(t, poolYAML(pool))
	e.Stop()
	newNode(t, node, pool, "amd64")
	newNodeClaim(t, node, pool, nil)
	// Karpenter: NodeClaim and Node deleted, node tainted, DaemonSet pods evicted and gone.
	commit(t, node)
	if err := kube.Delete(t.Context(), nodeObj(node)); err != nil {
		t.Fatal(err)
	}
	e.Start()

	guard := &corev1.Pod{}
	e.waitExists(volumes.GuardName(node), guard)
	job := &batchv1.Job{}
	e.waitExists(volumes.SaveName(node), job)
	e.runJob(job.Name, 0, volumes.JobResult{Result: volumes.ResultSaved, Bytes: 10, Files: 1})
	snap := e.waitSnapshot(node)
	e.setSnapshotStatus(snap.Name, false, e.clk.Now())
	waitNodeEvent(t, node, enginecache.ReasonSaved, snap.Name)
	e.waitGone(volumes.GuardName(node), &corev1.Pod{})
	// The hold's release mark.
	n := &corev1.Node{}
	get(t, node, "", n)
	if n.Annotations[enginecache.AnnotationSaveOutcome] != "saved" {
		t.Fatalf("outcome %q, want saved", n.Annotations[enginecache.AnnotationSaveOutcome])
	}
}

// A guard the kubelet refuses (OutOfpods on a full node) holds nothing: it is replaced, the
// refusal reported, and the engine is stopped only once a guard runs.
func TestRefusedGuardIsReplacedBeforeTheEngineStops(t *testing.T) {
	pool, node := unique("refused"), unique("refused-node")
	e := newEnv(t, poolYAML(pool))
	e.setGuardKubelet(func(p *corev1.Pod) *corev1.PodStatus {
		// The first guard and its first replacement are refused.
		if n := p.Annotations["warmpool.io/guard-replacements"]; n == "" || n == "1" {
			return &corev1.PodStatus{Phase: corev1.PodFailed, Reason: "OutOfpods", Message: "Node didn't have enough resource: pods, requested: 1, used: 110, capacity: 110"}
		}
		return nil // then admitted, but not started yet
	})
	newNode(t, node, pool, "amd64")
	newNodeClaim(t, node, pool, nil)
	e.newEnginePod(node, pool)
	commit(t, node)

	first := &corev1.Pod{}
	e.waitExists(volumes.GuardName(node), first)
	waitNodeEvent(t, node, enginecache.ReasonGuardFailed, "OutOfpods")
	var replacement corev1.Pod
	eventually(t, "guard replaced", func() error {
		if !exists(t, volumes.GuardName(node), e.Namespace, &replacement) {
			return fmt.Errorf("no guard")
		}
		if replacement.Status.Phase != corev1.PodFailed {
			return fmt.Errorf("replacement %q not refused yet", replacement.Annotations["warmpool.io/guard-replacements"])
		}
		return nil
	})
	// Refused again: replaced once the pace allows.
	e.clk.Step(10 * time.Second)
	touch(t, node)
	eventually(t, "guard replaced twice", func() error {
		if !exists(t, volumes.GuardName(node), e.Namespace, &replacement) {
			return fmt.Errorf("no guard")
		}
		if replacement.Annotations["warmpool.io/guard-replacements"] != "2" {
			return fmt.Errorf("replacements %q", replacement.Annotations["warmpool.io/guard-replacements"])
		}
		return nil
	})
	if replacement.Annotations[enginecache.AnnotationDeadline] == "" {
		t.Error("the replacement lost the deadline its predecessor recorded")
	}
	if got := nodeEvents(t, node, enginecache.ReasonGuardFailed); len(got) != 1 {
		t.Errorf("%d CacheGuardFailed events, want the first refusal only", len(got))
	}
	consistently(t, "engine left running while no guard runs", func() error { return engineRunning(e, node) })

	// The kubelet starts the guard: now the engine is stopped.
	replacement.Status = corev1.PodStatus{Phase: corev1.PodRunning, StartTime: ptr.To(metav1.Now())}
	if err := kube.Status().Update(t.Context(), &replacement); err != nil {
		t.Fatal(err)
	}
	e.finishEviction(node)
	e.waitExists(volumes.SaveName(node), &corev1.PersistentVolumeClaim{})
}
