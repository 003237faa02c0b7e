package enginecache_test

import (
	"fmt"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/volumes"
)

func resourceQuantity(s string) resource.Quantity { return resource.MustParse(s) }

func runnerTaint(pool string) corev1.Taint {
	return corev1.Taint{Key: "warmpool.io/runner", Value: pool, Effect: corev1.TaintEffectNoSchedule}
}

// snapshotsOf lists the test namespace's snapshots saved from node.
func (e *env) snapshotsOf(node string) []snapshotv1.VolumeSnapshot {
	e.T.Helper()
	list := &snapshotv1.VolumeSnapshotList{}
	if err := kube.List(e.T.Context(), list, client.InNamespace(e.Namespace), client.MatchingLabels{volumes.LabelSourceNode: node}); err != nil {
		e.T.Fatal(err)
	}
	return list.Items
}

// waitSnapshot waits for the one snapshot saved from node.
func (e *env) waitSnapshot(node string) snapshotv1.VolumeSnapshot {
	e.T.Helper()
	var s snapshotv1.VolumeSnapshot
	eventually(e.T, "snapshot of "+node, func() error {
		list := e.snapshotsOf(node)
		if len(list) != 1 {
			return fmt.Errorf("%d snapshots", len(list))
		}
		s = list[0]
		return nil
	})
	return s
}

// commit plays Karpenter committing to remove a node: NodeClaim deleted, node tainted.
func commit(t testing.TB, node string) {
	t.Helper()
	deleteNodeClaim(t, node)
	update(t, &corev1.Node{}, node, func(n *corev1.Node) {
		for _, tt := range n.Spec.Taints {
			if tt.Key == karpv1.DisruptedTaintKey {
				return
			}
		}
		n.Spec.Taints = append(n.Spec.Taints, karpv1.DisruptedNoScheduleTaint)
	})
}

func (e *env) noSaveObjects(node string) error {
	if exists(e.T, volumes.SaveName(node), e.Namespace, &corev1.PersistentVolumeClaim{}) {
		return fmt.Errorf("save PVC exists")
	}
	if exists(e.T, volumes.SaveName(node), e.Namespace, &batchv1.Job{}) {
		return fmt.Errorf("save Job exists")
	}
	if n := len(e.snapshotsOf(node)); n != 0 {
		return fmt.Errorf("%d snapshots", n)
	}
	return nil
}

func engineRunning(e *env, node string) error {
	p := &corev1.Pod{}
	if !exists(e.T, "engine-"+node, e.Namespace, p) {
		return fmt.Errorf("engine pod of %s was evicted", node)
	}
	return nil
}

func TestSaveUncleanMakesNoSnapshot(t *testing.T) {
	pool, node := unique("unclean"), unique("unclean-node")
	e := newEnv(t, poolYAML(pool))
	e.committedAndStopped(node, pool)
	e.runJob(volumes.SaveName(node), volumes.ExitUnclean, volumes.JobResult{Result: volumes.ResultUnclean, Reason: "engine lock held"})

	e.waitGone(volumes.GuardName(node), &corev1.Pod{})
	waitNodeEvent(t, node, enginecache.ReasonUnclean, "engine lock held")
	e.waitGone(volumes.SaveName(node), &batchv1.Job{})
	e.waitGone(volumes.SaveName(node), &corev1.PersistentVolumeClaim{})
	if err := e.noSaveObjects(node); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, "warmpool_cache_saves_total", map[string]string{"pool": pool, "result": "unclean"}, 1)
	waitMetric(t, "warmpool_cache_lost_total", map[string]string{"pool": pool, "reason": "unclean"}, 1)
}

func TestSaveFailedJob(t *testing.T) {
	pool, node := unique("failed"), unique("failed-node")
	e := newEnv(t, poolYAML(pool))
	newNode(t, node, pool, "amd64")
	newNodeClaim(t, node, pool, nil)
	commit(t, node) // no engine pod at all: nothing to stop
	e.runJob(volumes.SaveName(node), 1, volumes.JobResult{Result: volumes.ResultFailed, Reason: "no space left on device"})
	waitNodeEvent(t, node, enginecache.ReasonSaveFailed, "no space left on device")
	e.waitGone(volumes.GuardName(node), &corev1.Pod{})
	eventually(t, "no save objects", func() error { return e.noSaveObjects(node) })
}

// TestSaveJobOutOfTimeIsTimeout: the Job controller stops a copy at the Job's own active
// deadline, which can come a moment before warmpool's; that copy ran out of time, and is
// reported as a timeout, not as a broken save.
func TestSaveJobOutOfTimeIsTimeout(t *testing.T) {
	pool, node := unique("outoftime"), unique("outoftime-node")
	e := newEnv(t, poolYAML(pool))
	newNode(t, node, pool, "amd64")
	deadline := e.clk.Now().Add(10 * time.Minute)
	newNodeClaim(t, node, pool, func(nc *karpv1.NodeClaim) {
		nc.Annotations = map[string]string{karpv1.NodeClaimTerminationTimestampAnnotationKey: deadline.UTC().Format(time.RFC3339)}
	})
	commit(t, node)
	job := &batchv1.Job{}
	e.waitExists(volumes.SaveName(node), job)
	// The Job started its full active deadline ago, as the Job controller would count it.
	started := metav1.NewTime(e.clk.Now().Add(-time.Duration(*job.Spec.ActiveDeadlineSeconds) * time.Second))
	job.Status.StartTime = &started
	if err := kube.Status().Update(t.Context(), job); err != nil {
		t.Fatal(err)
	}
	e.runJob(volumes.SaveName(node), 1, volumes.JobResult{Result: volumes.ResultFailed, Reason: "copy: context canceled"})

	waitNodeEvent(t, node, enginecache.ReasonSaveTimedOut, "ran out of time")
	e.waitGone(volumes.GuardName(node), &corev1.Pod{})
	waitMetric(t, "warmpool_cache_lost_total", map[string]string{"pool": pool, "reason": "timeout"}, 1)
	if got := metric(t, "warmpool_cache_lost_total", map[string]string{"pool": pool, "reason": "failed"}); got != 0 {
		t.Errorf("a copy stopped by its deadline was also counted as failed")
	}
}

func TestSaveWithdrawnReleasesGuard(t *testing.T) {
	pool, node := unique("withdrawn"), unique("withdrawn-node")
	e := newEnv(t, poolYAML(pool))
	newNode(t, node, pool, "amd64")
	newNodeClaim(t, node, pool, nil)
	e.newEnginePod(node, pool)
	markDisrupted(t, node)
	e.waitExists(volumes.GuardName(node), &corev1.Pod{})

	unmarkDisrupted(t, node)
	e.waitGone(volumes.GuardName(node), &corev1.Pod{})
	consistently(t, "no save after a withdrawn disruption", func() error {
		if err := engineRunning(e, node); err != nil {
			return err
		}
		if exists(t, volumes.GuardName(node), e.Namespace, &corev1.Pod{}) {
			return fmt.Errorf("guard came back")
		}
		return e.noSaveObjects(node)
	})
	if got := metric(t, "warmpool_cache_lost_total", map[string]string{"pool": pool, "reason": "timeout"}); got != 0 {
		t.Fatalf("a withdrawn disruption counted a lost cache")
	}
}

func TestSaveSpotInterruptionDoesNotStart(t *testing.T) {
	pool, node := unique("spot"), unique("spot-node")
	e := newEnv(t, poolYAML(pool))
	newNode(t, node, pool, "amd64")
	newNodeClaim(t, node, pool, func(nc *karpv1.NodeClaim) { nc.Labels[karpv1.CapacityTypeLabelKey] = karpv1.CapacityTypeSpot })
	e.newEnginePod(node, pool)
	// Karpenter's interruption controller publishes SpotInterrupted, then deletes the NodeClaim.
	karpenterSpotInterrupted(t, node)
	commit(t, node)
	waitNodeEvent(t, node, enginecache.ReasonLost, "spot-interruption")
	e.waitGone(volumes.GuardName(node), &corev1.Pod{})
	waitMetric(t, "warmpool_cache_lost_total", map[string]string{"pool": pool, "reason": "spot-interruption"}, 1)
	consistently(t, "no copy started", func() error {
		if err := engineRunning(e, node); err != nil {
			return err
		}
		return e.noSaveObjects(node)
	})
}

func TestSaveResumesAfterRestart(t *testing.T) {
	pool, node := unique("restart"), unique("restart-node")
	e := newEnv(t, poolYAML(pool))
	e.committedAndStopped(node, pool)
	job, pvc, guard := &batchv1.Job{}, &corev1.PersistentVolumeClaim{}, &corev1.Pod{}
	e.waitExists(volumes.SaveName(node), job)
	e.waitExists(volumes.SaveName(node), pvc)
	e.waitExists(volumes.GuardName(node), guard)

	// Restart with the Job running.
	e.Stop()
	e.Start()
	e.runJob(job.Name, 0, volumes.JobResult{Result: volumes.ResultSaved, Bytes: 100, Files: 1})
	snap := e.waitSnapshot(node)

	// Restart with the snapshot being cut.
	e.Stop()
	e.Start()
	touch(t, node)
	consistently(t, "a restarted controller reuses what exists", func() error {
		for _, o := range []struct {
			obj client.Object
			uid string
		}{{&batchv1.Job{}, string(job.UID)}, {&corev1.PersistentVolumeClaim{}, string(pvc.UID)}, {&corev1.Pod{}, string(guard.UID)}} {
			name := volumes.SaveName(node)
			if _, ok := o.obj.(*corev1.Pod); ok {
				name = volumes.GuardName(node)
			}
			get(t, name, e.Namespace, o.obj)
			if string(o.obj.GetUID()) != o.uid {
				return fmt.Errorf("%T %s was recreated", o.obj, name)
			}
		}
		if n := len(e.snapshotsOf(node)); n != 1 {
			return fmt.Errorf("%d snapshots", n)
		}
		return nil
	})
	e.setSnapshotStatus(snap.Name, true, e.clk.Now())
	e.waitGone(volumes.GuardName(node), &corev1.Pod{})
	waitNodeEvent(t, node, enginecache.ReasonSaved, snap.Name)
	if n := len(e.snapshotsOf(node)); n != 1 {
		t.Fatalf("%d snapshots, want exactly 1", n)
	}
}

func TestSaveNodeGoneMidCopy(t *testing.T) {
	pool, node := unique("gone"), unique("gone-node")
	e := newEnv(t, poolYAML(pool))
	newNode(t, node, pool, "amd64")
	newNodeClaim(t, node, pool, nil)
	commit(t, node)
	e.waitExists(volumes.SaveName(node), &batchv1.Job{})
	// The instance went (forcefully): Karpenter removes its finalizer and the Node goes.
	update(t, &corev1.Node{}, node, func(n *corev1.Node) { n.Finalizers = nil })
	if err := kube.Delete(t.Context(), nodeObj(node)); client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
	waitNodeEvent(t, node, enginecache.ReasonLost, "node-gone")
	e.waitGone(volumes.SaveName(node), &batchv1.Job{})
	e.waitGone(volumes.SaveName(node), &corev1.PersistentVolumeClaim{})
	e.waitGone(volumes.GuardName(node), &corev1.Pod{})
	waitMetric(t, "warmpool_cache_lost_total", map[string]string{"pool": pool, "reason": "node-gone"}, 1)
}

func nodeObj(name string) *corev1.Node {
	n := &corev1.Node{}
	n.Name = name
	return n
}

// newRunnerPod creates a running CI job pod on node, as a runner controller would.
func (e *env) newRunnerPod(name, node string) {
	e.T.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: name, Labels: map[string]string{"app": "ci-runner"}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "runner", Image: "runner"}}},
	}
	if err := kube.Create(e.T.Context(), p); err != nil {
		e.T.Fatal(err)
	}
	p.Status.Phase = corev1.PodRunning
	if err := kube.Status().Update(e.T.Context(), p); err != nil {
		e.T.Fatal(err)
	}
}

func TestSaveStopsTheEngineOnlyAfterTheJobsOnTheNode(t *testing.T) {
	pool, node := unique("runners"), unique("runners-node")
	e := newEnv(t, poolYAML(pool))
	newNode(t, node, pool, "amd64", runnerTaint(pool))
	newNodeClaim(t, node, pool, nil)
	e.newEnginePod(node, pool)
	e.newRunnerPod(node+"-job", node)

	commit(t, node)
	waitNodeEvent(t, node, enginecache.ReasonAwaitingRunners, node+"-job")
	consistently(t, "the engine runs while a job still uses it", func() error {
		if err := engineRunning(e, node); err != nil {
			return err
		}
		return e.noSaveObjects(node)
	})

	// The job ends: the engine is stopped, and the save goes on.
	p := &corev1.Pod{}
	get(t, node+"-job", e.Namespace, p)
	p.Status.Phase = corev1.PodSucceeded
	if err := kube.Status().Update(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	touch(t, node)
	e.finishEviction(node)
	e.waitExists(volumes.SaveName(node), &batchv1.Job{})
	if n := len(nodeEvents(t, node, enginecache.ReasonAwaitingRunners)); n != 1 {
		t.Fatalf("%d %s events, want one per hold", n, enginecache.ReasonAwaitingRunners)
	}
}

func TestSaveStopsTheEngineWhenJobsOutliveTheBound(t *testing.T) {
	pool, node := unique("outlived"), unique("outlived-node")
	e := newEnv(t, poolYAML(pool))
	newNode(t, node, pool, "amd64", runnerTaint(pool))
	newNodeClaim(t, node, pool, nil)
	e.newEnginePod(node, pool)
	e.newRunnerPod(node+"-job", node)

	commit(t, node)
	waitNodeEvent(t, node, enginecache.ReasonAwaitingRunners)
	// The pool's grace is an hour: past it less the margin, the engine's stop and the shortest
	// copy (30 s + 2 min + 5.5 min), the engine must stop although the job still runs.
	e.clk.Step(time.Hour - 7*time.Minute)
	touch(t, node)
	waitNodeEvent(t, node, enginecache.ReasonRunnersOutlived, node+"-job")
	e.finishEviction(node)
	e.waitExists(volumes.SaveName(node), &batchv1.Job{})
}
