package enginecache_test

import (
	"fmt"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/volumes"
)

// setSnapshotCut plays the CSI snapshotter at the cut: creationTime set, not ready yet (the
// upload to S3 goes on), restoreSize known.
func (e *env) setSnapshotCut(name string, created time.Time) {
	e.T.Helper()
	e.setSnapshotStatusWith(name, func(st *snapshotv1.VolumeSnapshotStatus) {
		st.CreationTime = ptr.To(metav1.NewTime(created))
		st.ReadyToUse = ptr.To(false)
		st.RestoreSize = ptr.To(resourceQuantity("20Gi"))
	})
}

// setSnapshotStatusWith changes a snapshot's status as the snapshotter would.
func (e *env) setSnapshotStatusWith(name string, mutate func(*snapshotv1.VolumeSnapshotStatus)) {
	e.T.Helper()
	eventually(e.T, "snapshot status of "+name, func() error {
		s := &snapshotv1.VolumeSnapshot{}
		if err := kube.Get(e.T.Context(), types.NamespacedName{Namespace: e.Namespace, Name: name}, s); err != nil {
			return err
		}
		if s.Status == nil {
			s.Status = &snapshotv1.VolumeSnapshotStatus{}
		}
		mutate(s.Status)
		return kube.Status().Update(e.T.Context(), s)
	})
}

// nodeEventCount counts the occurrences of Events of reason on a Node: the recorder folds
// identical Events into one object with a count, so the objects alone would hide repeats.
func nodeEventCount(t testing.TB, node, reason string) int {
	t.Helper()
	list := &corev1.EventList{}
	if err := kube.List(t.Context(), list); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range list.Items {
		if ev.InvolvedObject.Kind == "Node" && ev.InvolvedObject.Name == node && ev.Reason == reason {
			n += int(max(ev.Count, 1))
		}
	}
	return n
}

// snapshotEvents lists the notes of Events of reason on a snapshot of the test namespace.
func (e *env) snapshotEvents(name, reason string) []string {
	e.T.Helper()
	list := &corev1.EventList{}
	if err := kube.List(e.T.Context(), list, client.InNamespace(e.Namespace)); err != nil {
		e.T.Fatal(err)
	}
	var out []string
	for _, ev := range list.Items {
		if ev.InvolvedObject.Kind == "VolumeSnapshot" && ev.InvolvedObject.Name == name && ev.Reason == reason {
			out = append(out, ev.Message)
		}
	}
	return out
}

// saveUntilCopied takes node through commit, engine stop and the copy Job, and returns the save
// PVC and the snapshot the save made (not cut yet).
func (e *env) saveUntilCopied(node, pool string) (*corev1.PersistentVolumeClaim, snapshotv1.VolumeSnapshot) {
	e.T.Helper()
	e.committedAndStopped(node, pool)
	pvc := &corev1.PersistentVolumeClaim{}
	e.waitExists(volumes.SaveName(node), pvc)
	e.runJob(volumes.SaveName(node), 0, volumes.JobResult{Result: volumes.ResultSaved, Bytes: 1 << 20, Files: 10, Architecture: "amd64", EngineVersion: engineVersion})
	return pvc, e.waitSnapshot(node)
}

// The second save of a key clones the first one's snapshot, sized to fit it; a newer snapshot
// that is quarantined, failed or still uploading is never the base; the first save, with no
// snapshot of its key yet, starts empty.
func TestSaveClonesThePreviousSnapshotOfItsKey(t *testing.T) {
	pool := unique("incr")
	first, second := unique("incr-node-1"), unique("incr-node-2")
	e := newEnv(t, poolYAML(pool))

	pvc1, snap1 := e.saveUntilCopied(first, pool)
	if pvc1.Spec.DataSource != nil || pvc1.Annotations[volumes.AnnotationBaseSnapshot] != "" {
		t.Fatalf("the first save of a key has a base: dataSource %+v, annotations %v", pvc1.Spec.DataSource, pvc1.Annotations)
	}
	if got := pvc1.Spec.Resources.Requests.Storage().String(); got != "10Gi" {
		t.Fatalf("first save volume %s, want the pool's 10Gi", got)
	}
	if _, ok := snap1.Annotations[volumes.AnnotationBaseSnapshot]; ok {
		t.Fatalf("a full save's snapshot names a base: %v", snap1.Annotations)
	}
	e.setSnapshotStatus(snap1.Name, true, e.clk.Now().Add(-time.Hour)) // cut and uploaded: restoreSize 20Gi
	e.waitGone(volumes.GuardName(first), &corev1.Pod{})

	// Newer snapshots of the same key that must not be cloned.
	now := e.clk.Now()
	e.newSnapshot("newer-quarantined", pool, "amd64", engineVersion, now.Add(-30*time.Minute), true)
	update(t, &snapshotv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace}}, "newer-quarantined", func(s *snapshotv1.VolumeSnapshot) {
		volumes.Quarantine(s, "the engine discarded it")
	})
	e.newSnapshot("newer-failed", pool, "amd64", engineVersion, now.Add(-20*time.Minute), true)
	update(t, &snapshotv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace}}, "newer-failed", func(s *snapshotv1.VolumeSnapshot) {
		s.Annotations = map[string]string{volumes.AnnotationSnapshotFailed: "failed after its cut"}
	})
	e.newSnapshot("newer-uploading", pool, "amd64", engineVersion, now.Add(-10*time.Minute), false)
	e.newSnapshot("other-arch", pool, "arm64", engineVersion, now.Add(-5*time.Minute), true)

	pvc2, snap2 := e.saveUntilCopied(second, pool)
	ds := pvc2.Spec.DataSource
	if ds == nil || ds.Kind != "VolumeSnapshot" || ptr.Deref(ds.APIGroup, "") != snapshotv1.GroupName || ds.Name != snap1.Name {
		t.Fatalf("second save volume dataSource %+v, want VolumeSnapshot %s", ds, snap1.Name)
	}
	if got := pvc2.Spec.Resources.Requests.Storage().String(); got != "20Gi" {
		t.Fatalf("second save volume %s, want the base's restoreSize 20Gi (the pool's is 10Gi)", got)
	}
	job := &batchv1.Job{}
	get(t, volumes.SaveName(second), e.Namespace, job)
	if pvc2.Annotations[volumes.AnnotationBaseSnapshot] != snap1.Name || job.Annotations[volumes.AnnotationBaseSnapshot] != snap1.Name || snap2.Annotations[volumes.AnnotationBaseSnapshot] != snap1.Name {
		t.Fatalf("base not recorded: pvc %v, job %v, snapshot %v", pvc2.Annotations, job.Annotations, snap2.Annotations)
	}
	e.setSnapshotCut(snap2.Name, e.clk.Now())
	waitNodeEvent(t, second, enginecache.ReasonSaved, "incremental, cloned from "+snap1.Name)
}

// The node is released when its snapshot is cut, not when it is ready: guard, Job and PVC go
// and the outcome is recorded while readyToUse is still false. When the snapshot then fails,
// it is reported (CacheSnapshotFailed, on the snapshot and the node, and counted), never
// restored even if it turns ready later, and retention keeps the older good snapshot past its
// max age while the failed one is there, and deletes the failed one once it is old enough.
func TestSaveReleasesAtTheCutAndReportsALaterFailure(t *testing.T) {
	pool, node := unique("cut"), unique("cut-node")
	e := newEnv(t, poolYAML(pool))
	// Within the pool's max age (7 days) by an hour, until the clock moves below.
	e.newSnapshot("older-good", pool, "amd64", engineVersion, e.clk.Now().Add(-7*24*time.Hour+time.Hour), true)

	pvc, snap := e.saveUntilCopied(node, pool)
	guard := volumes.GuardName(node)
	consistently(t, "the guard holds until the cut", func() error {
		if !exists(t, guard, e.Namespace, &corev1.Pod{}) {
			return fmt.Errorf("guard released before the snapshot was cut")
		}
		return nil
	})

	e.setSnapshotCut(snap.Name, e.clk.Now())
	e.waitGone(guard, &corev1.Pod{})
	e.waitGone(volumes.SaveName(node), &batchv1.Job{})
	e.waitGone(pvc.Name, &corev1.PersistentVolumeClaim{})
	waitNodeEvent(t, node, enginecache.ReasonSaved, snap.Name, "snapshot cut")
	waitMetric(t, "warmpool_cache_saves_total", map[string]string{"pool": pool, "result": "saved"}, 1)
	n := &corev1.Node{}
	get(t, node, "", n)
	if n.Annotations[enginecache.AnnotationSaveOutcome] != "saved" {
		t.Fatalf("node outcome %q, want saved at the cut", n.Annotations[enginecache.AnnotationSaveOutcome])
	}
	s := &snapshotv1.VolumeSnapshot{}
	if !exists(t, snap.Name, e.Namespace, s) || volumes.Ready(s) {
		t.Fatalf("the snapshot must be kept, still uploading: %+v", s.Status)
	}

	// The upload fails after the node was released.
	e.setSnapshotStatusWith(snap.Name, func(st *snapshotv1.VolumeSnapshotStatus) {
		st.Error = &snapshotv1.VolumeSnapshotError{Time: ptr.To(metav1.NewTime(e.clk.Now())), Message: ptr.To("Failed to check and update snapshot content: snapshot in error state")}
	})
	eventually(t, "snapshot marked failed", func() error {
		get(t, snap.Name, e.Namespace, s)
		if !volumes.Failed(s) {
			return fmt.Errorf("annotations %v", s.Annotations)
		}
		if ev := e.snapshotEvents(snap.Name, enginecache.ReasonSnapshotFailed); len(ev) != 1 {
			return fmt.Errorf("CacheSnapshotFailed events on the snapshot: %q", ev)
		}
		return nil
	})
	waitNodeEvent(t, node, enginecache.ReasonSnapshotFailed, snap.Name, "snapshot in error state")
	waitMetric(t, "warmpool_cache_lost_total", map[string]string{"pool": pool, "reason": "snapshot-failed"}, 1)

	// Even if the snapshotter later calls it ready, a new node restores the older good one.
	e.setSnapshotStatus(snap.Name, true, e.clk.Now())
	restoreNode := unique("cut-restore-node")
	newNode(t, restoreNode, pool, "amd64", startupTaint())
	restore := &corev1.PersistentVolumeClaim{}
	e.waitExists(volumes.RestoreName(restoreNode), restore)
	if got := volumes.SnapshotSourceOf(restore); got != "older-good" {
		t.Fatalf("restore volume made from %q, want older-good (the newer one failed)", got)
	}
	e.runJob(volumes.RestoreName(restoreNode), 1, volumes.JobResult{Result: volumes.ResultFailed, Reason: "test over"})
	waitReleased(t, restoreNode)

	// Two hours on, the older good snapshot is past its max age, but a newer save of its key
	// did not become good: it stays, and so does the failed one, for inspection.
	e.clk.Step(2 * time.Hour)
	e.poke(snap.Name)
	consistently(t, "retention keeps the only good snapshot while the newer one failed", func() error {
		for _, name := range []string{"older-good", snap.Name} {
			if !exists(t, name, e.Namespace, &snapshotv1.VolumeSnapshot{}) {
				return fmt.Errorf("%s deleted", name)
			}
		}
		return nil
	})
	// Once older than notReadyMaxAge (a day), the failed snapshot goes.
	e.clk.Step(enginecache.DefaultNotReadyMaxAge)
	e.poke(snap.Name)
	e.waitGone(snap.Name, &snapshotv1.VolumeSnapshot{})
	if got := nodeEventCount(t, node, enginecache.ReasonSnapshotFailed); got != 1 {
		t.Fatalf("%d CacheSnapshotFailed events on the node, want 1", got)
	}
}

// poke changes a snapshot's annotations so the controllers watching snapshots look again (after
// a clock step: a fake clock fires no requeue). A snapshot already gone needs no poke: a watch
// event of the controllers' own writes woke them first.
func (e *env) poke(name string) {
	e.T.Helper()
	eventually(e.T, "poking snapshot "+name, func() error {
		s := &snapshotv1.VolumeSnapshot{}
		err := kube.Get(e.T.Context(), types.NamespacedName{Namespace: e.Namespace, Name: name}, s)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations["cache.test.warmpool.io/poke"] = fmt.Sprint(time.Now().UnixNano())
		return client.IgnoreNotFound(kube.Update(e.T.Context(), s))
	})
}

// A snapshot that never becomes ready after its cut is reported failed once the bound passes,
// and retention deletes it once it is older than notReadyMaxAge.
func TestSnapshotNeverReadyIsFailedThenPruned(t *testing.T) {
	pool, node := unique("never"), unique("never-node")
	e := newEnv(t, poolYAML(pool))
	_, snap := e.saveUntilCopied(node, pool)
	e.setSnapshotCut(snap.Name, e.clk.Now())
	e.waitGone(volumes.GuardName(node), &corev1.Pod{})
	consistently(t, "an upload within its time is not a failure", func() error {
		if got := nodeEventCount(t, node, enginecache.ReasonSnapshotFailed); got != 0 {
			return fmt.Errorf("%d CacheSnapshotFailed events", got)
		}
		return nil
	})

	e.clk.Step(enginecache.DefaultSnapshotReadyTimeout)
	e.poke(snap.Name)
	waitNodeEvent(t, node, enginecache.ReasonSnapshotFailed, "not ready 6h0m0s after its cut")

	e.clk.Step(enginecache.DefaultNotReadyMaxAge)
	e.poke(snap.Name)
	e.waitGone(snap.Name, &snapshotv1.VolumeSnapshot{})
	if got := nodeEventCount(t, node, enginecache.ReasonSnapshotFailed); got != 1 {
		t.Fatalf("%d CacheSnapshotFailed events, want 1", got)
	}
}

// The base snapshot is deleted while the save volume is being cloned from it: the volume would
// stay Pending and the copy never start. The save falls back, once, to an empty volume, says so,
// and saves a full copy.
func TestSaveFallsBackWhenTheBaseVanishesMidClone(t *testing.T) {
	pool, node := unique("fallback"), unique("fallback-node")
	e := newEnv(t, poolYAML(pool))
	cloned := e.clonedSaveVolume(node, pool)
	if volumes.SnapshotSourceOf(cloned) != "base" {
		t.Fatalf("save volume dataSource %+v, want base", cloned.Spec.DataSource)
	}
	job := &batchv1.Job{}
	e.waitExists(volumes.SaveName(node), job)

	if err := kube.Delete(t.Context(), &snapshotv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: "base"}}); err != nil {
		t.Fatal(err)
	}
	touch(t, node)
	waitNodeEvent(t, node, enginecache.ReasonSaveBaseLost, "base snapshot base was deleted", "empty volume")
	e.waitGone(job.Name, &batchv1.Job{})
	// Play kube-controller-manager's pvc-protection controller: no pod uses the old volume.
	e.releaseVolume(cloned)

	empty := &corev1.PersistentVolumeClaim{}
	eventually(t, "an empty save volume", func() error {
		if !exists(t, volumes.SaveName(node), e.Namespace, empty) {
			return fmt.Errorf("no save volume")
		}
		if empty.UID == cloned.UID {
			return fmt.Errorf("still the cloned volume")
		}
		return nil
	})
	if empty.Spec.DataSource != nil || empty.Annotations[volumes.AnnotationBaseSnapshot] != "" {
		t.Fatalf("fallback volume %+v, want no dataSource", empty.Spec)
	}
	e.runJob(volumes.SaveName(node), 0, volumes.JobResult{Result: volumes.ResultSaved, Bytes: 100, Files: 1, Architecture: "amd64", EngineVersion: engineVersion})
	snap := e.waitSnapshot(node)
	if _, ok := snap.Annotations[volumes.AnnotationBaseSnapshot]; ok {
		t.Fatalf("the fallback's snapshot names a base: %v", snap.Annotations)
	}
	e.setSnapshotCut(snap.Name, e.clk.Now())
	waitNodeEvent(t, node, enginecache.ReasonSaved, "a full copy onto an empty volume")
	if got := nodeEventCount(t, node, enginecache.ReasonSaveBaseLost); got != 1 {
		t.Fatalf("%d %s events, want 1", got, enginecache.ReasonSaveBaseLost)
	}
}

// A clone that stays Pending past its bound is given up the same way, once.
func TestSaveFallsBackWhenTheCloneStaysPending(t *testing.T) {
	pool, node := unique("pending"), unique("pending-node")
	e := newEnv(t, poolYAML(pool))
	cloned := e.clonedSaveVolume(node, pool)

	e.clk.Step(enginecache.DefaultSaveVolumeBindTimeout)
	touch(t, node)
	waitNodeEvent(t, node, enginecache.ReasonSaveBaseLost, "was still Pending after 5m")
	e.releaseVolume(cloned)
	empty := &corev1.PersistentVolumeClaim{}
	eventually(t, "an empty save volume", func() error {
		if !exists(t, volumes.SaveName(node), e.Namespace, empty) || empty.UID == cloned.UID {
			return fmt.Errorf("no new save volume")
		}
		return nil
	})
	if empty.Spec.DataSource != nil {
		t.Fatalf("fallback volume dataSource %+v", empty.Spec.DataSource)
	}
	// An empty volume has nothing to fall back from, however long it stays Pending.
	e.clk.Step(enginecache.DefaultSaveVolumeBindTimeout)
	touch(t, node)
	consistently(t, "no second fallback", func() error {
		if got := nodeEventCount(t, node, enginecache.ReasonSaveBaseLost); got != 1 {
			return fmt.Errorf("%d fallback events", got)
		}
		p := &corev1.PersistentVolumeClaim{}
		if !exists(t, volumes.SaveName(node), e.Namespace, p) || p.UID != empty.UID {
			return fmt.Errorf("the empty save volume was replaced")
		}
		return nil
	})
}

// The fallback can come before the copy Job exists (its create failed, or a restart came
// between the two): it still drops the cloned volume and makes an empty one.
func TestSaveFallsBackBeforeTheCopyJobExists(t *testing.T) {
	pool, node := unique("pending-nojob"), unique("pending-nojob-node")
	e := newEnv(t, poolYAML(pool))
	cloned := e.clonedSaveVolume(node, pool)
	e.waitExists(volumes.SaveName(node), &batchv1.Job{})

	// The controller is down; the Job goes; the clone stays Pending past its timeout.
	e.Stop()
	if err := kube.Delete(t.Context(), &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: volumes.SaveName(node)}},
		client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	e.waitGone(volumes.SaveName(node), &batchv1.Job{})
	e.clk.Step(enginecache.DefaultSaveVolumeBindTimeout)
	e.Start()

	waitNodeEvent(t, node, enginecache.ReasonSaveBaseLost, "was still Pending after 5m")
	e.releaseVolume(cloned)
	eventually(t, "an empty save volume", func() error {
		p := &corev1.PersistentVolumeClaim{}
		if !exists(t, volumes.SaveName(node), e.Namespace, p) || p.UID == cloned.UID {
			return fmt.Errorf("no new save volume")
		}
		if p.Spec.DataSource != nil {
			return fmt.Errorf("fallback volume dataSource %+v", p.Spec.DataSource)
		}
		return nil
	})
}

// clonedSaveVolume commits the disruption of a new node of pool while a ready snapshot "base"
// exists, and returns the save volume cloned from it.
func (e *env) clonedSaveVolume(node, pool string) *corev1.PersistentVolumeClaim {
	e.T.Helper()
	e.newSnapshot("base", pool, "amd64", engineVersion, e.clk.Now().Add(-time.Hour), true)
	newNode(e.T, node, pool, "amd64")
	newNodeClaim(e.T, node, pool, nil)
	commit(e.T, node)
	cloned := &corev1.PersistentVolumeClaim{}
	e.waitExists(volumes.SaveName(node), cloned)
	return cloned
}

// releaseVolume removes a deleted PVC's finalizers, as kube-controller-manager's pvc-protection
// controller does once no pod uses it (envtest runs no controller manager).
func (e *env) releaseVolume(p *corev1.PersistentVolumeClaim) {
	e.T.Helper()
	eventually(e.T, "save volume "+p.Name+" deleted", func() error {
		cur := &corev1.PersistentVolumeClaim{}
		if err := kube.Get(e.T.Context(), client.ObjectKeyFromObject(p), cur); err != nil {
			return client.IgnoreNotFound(err)
		}
		if cur.UID != p.UID {
			return nil
		}
		if cur.DeletionTimestamp == nil {
			return fmt.Errorf("not deleted yet")
		}
		cur.Finalizers = nil
		return kube.Update(e.T.Context(), cur)
	})
}

// One CacheGuarded per hold, however often the save looks at the node: even while the guard it
// created is on its way out and invisible to the steps (a create then finds it), no second
// Event is recorded for it.
func TestOneGuardedEventPerHold(t *testing.T) {
	pool, node := unique("guarded"), unique("guarded-node")
	e := newEnv(t, poolYAML(pool))
	newNode(t, node, pool, "amd64")
	newNodeClaim(t, node, pool, nil)
	e.newEnginePod(node, pool)
	markDisrupted(t, node)
	guard := &corev1.Pod{}
	e.waitExists(volumes.GuardName(node), guard)
	for range 3 {
		touch(t, node)
	}
	// Deleted, the guard waits for its kubelet (bound to a node, it is deleted gracefully).
	if err := kube.Delete(t.Context(), guard); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		touch(t, node)
	}
	consistently(t, "one CacheGuarded", func() error {
		if got := nodeEventCount(t, node, enginecache.ReasonGuarded); got != 1 {
			return fmt.Errorf("%d CacheGuarded events", got)
		}
		return nil
	})
}
