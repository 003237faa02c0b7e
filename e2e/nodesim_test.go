package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/e2e/nodesim"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/copier"
	"warmpool.io/warmpool/volumes/engine"
)

const (
	simPool          = "dagger"
	simEngineVersion = "v0.21.8"
	simArch          = "amd64"
)

// TestNodesimPlaysKubeletCSIAndEngine checks the node simulator on the real local cluster,
// with hand-made objects shaped as the cache controller makes them: an engine pod on a KWOK
// node cold-starts; a save Job while it runs is refused as unclean; deleted, the engine
// leaves a clean cache; a save pod runs the real warmpool
// binary into a provisioned volume; a VolumeSnapshot of it becomes ready; a claim restored
// from the snapshot holds the same files; a restore pod puts them on the node, where the
// next engine warm-starts.
func TestNodesimPlaysKubeletCSIAndEngine(t *testing.T) {
	ctx := t.Context()
	kube := local.Client
	sim := local.Nodesim
	wp, err := scenario.StartWarmpool(ctx, local.Config, kube, localConfig(t), scenario.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := wp.Stop(); err != nil {
			t.Errorf("warmpool: %v", err)
		}
	})
	logSimEvents(t)

	// A KWOK node from warmpool's NodePool, as in production.
	runner := scenario.RunnerPod(simPool, "nodesim-runner")
	if err := kube.Create(ctx, runner); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the runner pod Running", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKeyFromObject(runner), runner)
		return err == nil && runner.Status.Phase == corev1.PodRunning, err
	})
	node := runner.Spec.NodeName
	defer releaseNode(t, runner, node)
	t.Logf("node %s", node)

	// 1. The engine: cold start on an empty disk, lock held while running.
	const hostPath = "/mnt/k8s-disks/0/dagger-nodesim"
	cacheDir := sim.NodePath(node, hostPath)
	eng := enginePod("nodesim-engine-1", node, hostPath)
	if err := kube.Create(ctx, eng); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the engine to cold-start", func(context.Context) (bool, error) {
		return simCount(nodesim.EngineColdStart, eng) == 1, nil
	})
	contract, err := engine.ForVersion(simEngineVersion)
	if err != nil {
		t.Fatal(err)
	}
	if err := copier.CheckCleanShutdown(cacheDir, contract); !errors.Is(err, copier.ErrEngineRunning) {
		t.Errorf("running engine's cache: %v, want %v", err, copier.ErrEngineRunning)
	}

	// 2. A save Job while the engine still runs is refused (exit 3, unclean, nothing copied):
	// kwok's stages leave the Job's pod alone, so the real binary's outcome is what the Job
	// controller sees. The claim is on the node (selected-node set by its creator, as the
	// pod uses nodeName).
	save := claim("nodesim-save", node, nil)
	if err := kube.Create(ctx, save); err != nil {
		t.Fatal(err)
	}
	saveDir := boundVolumeDir(t, save)
	saveArgs := []string{"cache", "save", "--cache-dir", volumes.CacheMountPath, "--volume-dir", volumes.VolumeMountPath}
	cacheVolume := corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostPath, Type: ptr.To(corev1.HostPathDirectory)}}}
	early := cachePod("nodesim-early-save", node, volumes.OpSave, saveArgs, cacheVolume, volumes.CacheMountPath, save.Name, false)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: scenario.Namespace, Name: early.Name, Labels: early.Labels},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			Template:     corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: early.Labels}, Spec: early.Spec},
		},
	}
	if err := kube.Create(ctx, job); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the early save Job to fail", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKeyFromObject(job), job)
		return err == nil && job.Status.Failed == 1, err
	})
	jobPods := &corev1.PodList{}
	if err := kube.List(ctx, jobPods, client.InNamespace(job.Namespace), client.MatchingLabels{batchv1.JobNameLabel: job.Name}); err != nil || len(jobPods.Items) != 1 {
		t.Fatalf("the Job's pods: %d, %v", len(jobPods.Items), err)
	}
	if term := jobPods.Items[0].Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != volumes.ExitUnclean {
		t.Errorf("early save container %+v, want exit %d", term, volumes.ExitUnclean)
	} else if res, err := volumes.ParseJobResult(term.Message); err != nil || res.Result != volumes.ResultUnclean {
		t.Errorf("early save result %+v, %v; want unclean", res, err)
	}
	if _, err := copier.ReadManifest(saveDir); !errors.Is(err, copier.ErrNoManifest) {
		t.Errorf("a refused save left a manifest: %v", err)
	}
	if err := kube.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	waitGone(t, &jobPods.Items[0])

	if err := kube.Delete(ctx, eng); err != nil {
		t.Fatal(err)
	}
	waitGone(t, eng)
	if err := copier.CheckCleanShutdown(cacheDir, contract); err != nil {
		t.Fatalf("engine deleted, but its cache is not clean: %v", err)
	}
	if n := simCount(nodesim.EngineStopped, eng); n != 1 {
		t.Errorf("%d clean stops of %s recorded, want 1", n, eng.Name)
	}
	engineFiles := digest(t, cacheDir)

	// 3. Save, once the engine has stopped: a cache pod running `warmpool cache save`.
	savePod := cachePod("nodesim-save", node, volumes.OpSave, saveArgs, cacheVolume, volumes.CacheMountPath, save.Name, false)
	res := runCachePod(t, savePod)
	if res.Result != volumes.ResultSaved || res.Files == 0 || res.EngineVersion != simEngineVersion {
		t.Fatalf("save pod result %+v, want saved", res)
	}
	if m, err := copier.Verify(saveDir); err != nil || m.SourceNode != node {
		t.Fatalf("saved volume: manifest %+v, %v", m.SourceNode, err)
	}
	sameFiles(t, "saved volume", digest(t, saveDir), engineFiles)

	// 4. Snapshot it.
	snap := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Namespace: scenario.Namespace, Name: "nodesim-snap"},
		Spec: snapshotv1.VolumeSnapshotSpec{
			Source:                  snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: &save.Name},
			VolumeSnapshotClassName: ptr.To(nodesim.ClassName),
		},
	}
	if err := kube.Create(ctx, snap); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the VolumeSnapshot readyToUse", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKeyFromObject(snap), snap)
		return err == nil && snap.Status != nil && ptr.Deref(snap.Status.ReadyToUse, false), err
	})
	st := snap.Status
	if st.BoundVolumeSnapshotContentName == nil || st.CreationTime == nil || st.RestoreSize == nil || st.RestoreSize.Cmp(resource.MustParse("1Gi")) != 0 {
		t.Errorf("snapshot status %+v, want a bound content, a creation time and restoreSize 1Gi", st)
	}
	content := &snapshotv1.VolumeSnapshotContent{}
	if err := kube.Get(ctx, client.ObjectKey{Name: ptr.Deref(st.BoundVolumeSnapshotContentName, "")}, content); err != nil {
		t.Fatal(err)
	}
	if content.Status == nil || content.Status.SnapshotHandle == nil || !ptr.Deref(content.Status.ReadyToUse, false) ||
		content.Spec.VolumeSnapshotRef.UID != snap.UID || content.Spec.DeletionPolicy != snapshotv1.VolumeSnapshotContentDelete {
		t.Fatalf("content %s: spec %+v status %+v", content.Name, content.Spec, content.Status)
	}
	snapDir := sim.SnapshotPath(*content.Status.SnapshotHandle)
	sameFiles(t, "snapshot", digest(t, snapDir), engineFiles)

	// 5. A claim restored from the snapshot holds the same files, and the manifest verifies.
	restore := claim("nodesim-restore", node, &corev1.TypedLocalObjectReference{
		APIGroup: ptr.To(snapshotv1.GroupName), Kind: "VolumeSnapshot", Name: snap.Name,
	})
	if err := kube.Create(ctx, restore); err != nil {
		t.Fatal(err)
	}
	restoreDir := boundVolumeDir(t, restore)
	if _, err := copier.Verify(restoreDir); err != nil {
		t.Fatalf("restored claim does not verify: %v", err)
	}
	sameFiles(t, "restored claim", digest(t, restoreDir), engineFiles)

	// 6. A restore pod puts it on the node beside another engine's dir; that engine warm-starts.
	const restoredPath = "/mnt/k8s-disks/0/dagger-nodesim-restored"
	restorePod := cachePod("nodesim-restore", node, volumes.OpRestore,
		[]string{"cache", "restore", "--volume-dir", volumes.VolumeMountPath, "--cache-dir", volumes.HostMountPath + "/" + filepath.Base(restoredPath)},
		corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: filepath.Dir(restoredPath), Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}},
		volumes.HostMountPath, restore.Name, true)
	if res := runCachePod(t, restorePod); res.Result != volumes.ResultRestored {
		t.Fatalf("restore pod result %+v, want restored", res)
	}
	sameFiles(t, "restored cache dir", digest(t, sim.NodePath(node, restoredPath)), engineFiles)
	eng2 := enginePod("nodesim-engine-2", node, restoredPath)
	if err := kube.Create(ctx, eng2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second engine to warm-start", func(context.Context) (bool, error) {
		return simCount(nodesim.EngineWarmStart, eng2) == 1, nil
	})
	if n := simCount(nodesim.EngineColdStart, eng2); n != 0 {
		t.Errorf("%d cold starts of %s, want 0", n, eng2.Name)
	}
	if err := kube.Delete(ctx, eng2); err != nil {
		t.Fatal(err)
	}
	waitGone(t, eng2)

	// 7. Clean-up as the controller does it: the snapshot (policy Delete) takes its content
	// and data with it; released volumes are deleted with their data.
	for _, o := range []client.Object{savePod, restorePod, snap} {
		if err := kube.Delete(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range []client.Object{savePod, restorePod, snap, content} {
		waitGone(t, o)
	}
	if _, err := os.Stat(snapDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("snapshot data %s left behind: %v", snapDir, err)
	}
	for _, c := range []*corev1.PersistentVolumeClaim{save, restore} {
		pv := c.Spec.VolumeName
		if err := kube.Delete(ctx, c); err != nil {
			t.Fatal(err)
		}
		waitGone(t, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: pv}})
		if _, err := os.Stat(sim.VolumePath(pv)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("volume data of %s left behind: %v", pv, err)
		}
	}
	for _, p := range []*corev1.Pod{&jobPods.Items[0], savePod, restorePod} {
		if n := simCount(nodesim.CacheJobFinished, p); n != 1 {
			t.Errorf("cache pod %s finished %d times, want once", p.Name, n)
		}
	}
}

// releaseNode deletes what the test left (every pod on the node, so Karpenter sees it empty,
// Jobs, claims and snapshots) and waits until Karpenter has removed the node, so the next
// test starts from an empty pool.
func releaseNode(t *testing.T, runner *corev1.Pod, node string) {
	t.Helper()
	ctx, kube := t.Context(), local.Client
	ns := client.InNamespace(scenario.Namespace)
	for _, o := range []client.Object{&batchv1.Job{}, &snapshotv1.VolumeSnapshot{}} {
		if err := kube.DeleteAllOf(ctx, o, ns, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
			t.Error(err)
		}
	}
	pods := &corev1.PodList{}
	if err := kube.List(ctx, pods, ns); err != nil {
		t.Error(err)
		return
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if owner := metav1.GetControllerOf(p); owner != nil && owner.Kind == "DaemonSet" {
			continue // Karpenter does not count it
		}
		if p.Spec.NodeName == node || p.Name == runner.Name {
			if err := kube.Delete(ctx, p); client.IgnoreNotFound(err) != nil {
				t.Error(err)
			}
		}
	}
	if err := kube.DeleteAllOf(ctx, &corev1.PersistentVolumeClaim{}, ns); err != nil {
		t.Error(err)
	}
	waitFor(t, "Karpenter to remove node "+node, func(ctx context.Context) (bool, error) {
		claims := &karpv1.NodeClaimList{}
		if err := local.Client.List(ctx, claims); err != nil {
			return false, err
		}
		for _, c := range claims.Items {
			if c.Status.NodeName == node {
				return false, nil
			}
		}
		err := local.Client.Get(ctx, client.ObjectKey{Name: node}, &corev1.Node{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
}

// logSimEvents logs, at the end of the test, what nodesim did during it.
func logSimEvents(t *testing.T) {
	began := time.Now()
	t.Cleanup(func() {
		for _, e := range local.Nodesim.Events() {
			if !e.Time.Before(began) {
				t.Log(e)
			}
		}
	})
}

// simCount counts what nodesim recorded for one object.
func simCount(kind nodesim.EventKind, o client.Object) int {
	n := 0
	for _, e := range local.Nodesim.Events() {
		if e.Kind == kind && e.Object == o.GetNamespace()+"/"+o.GetName() {
			n++
		}
	}
	return n
}

// enginePod is an engine pod as the generated DaemonSet makes them, reduced to what nodesim
// reads. Its pool label is not the pool's, or the pool's engine DaemonSet would adopt it
// (and delete it as a second engine on the node).
func enginePod(name, node, hostPath string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: scenario.Namespace, Name: name, Labels: map[string]string{
			volumes.LabelEngineName: volumes.EngineName, volumes.LabelPool: "nodesim-test", volumes.LabelEngineVersion: simEngineVersion,
		}},
		Spec: corev1.PodSpec{
			NodeName: node,
			Containers: []corev1.Container{{
				Name: volumes.EngineContainer, Image: "registry.dagger.io/engine:" + simEngineVersion,
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: nodesim.EngineDataPath}},
			}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: hostPath, Type: ptr.To(corev1.HostPathDirectoryOrCreate),
			}}}},
			TerminationGracePeriodSeconds: ptr.To[int64](900),
		},
	}
}

func claim(name, node string, from *corev1.TypedLocalObjectReference) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: scenario.Namespace, Name: name,
			Annotations: map[string]string{"volume.kubernetes.io/selected-node": node}},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To(nodesim.ClassName),
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			DataSource:       from,
		},
	}
}

// boundVolumeDir waits until KCM has bound the claim to nodesim's volume and returns its dir.
func boundVolumeDir(t *testing.T, pvc *corev1.PersistentVolumeClaim) string {
	t.Helper()
	waitFor(t, "claim "+pvc.Name+" Bound", func(ctx context.Context) (bool, error) {
		err := local.Client.Get(ctx, client.ObjectKeyFromObject(pvc), pvc)
		return err == nil && pvc.Status.Phase == corev1.ClaimBound, err
	})
	pv := &corev1.PersistentVolume{}
	if err := local.Client.Get(t.Context(), client.ObjectKey{Name: pvc.Spec.VolumeName}, pv); err != nil {
		t.Fatal(err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != nodesim.Driver {
		t.Fatalf("claim %s bound to %s, not a %s volume", pvc.Name, pv.Name, nodesim.Driver)
	}
	return local.Nodesim.VolumePath(pv.Spec.CSI.VolumeHandle)
}

// cachePod is a save or restore Job's pod as the contract shapes it.
func cachePod(name, node, op string, args []string, host corev1.Volume, hostMount, claim string, readOnly bool) *corev1.Pod {
	args = append(args, "--pool", simPool, "--node", node, "--engine-version", simEngineVersion, "--arch", simArch)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: scenario.Namespace, Name: name, Labels: map[string]string{
			// No LabelNode: KWOK node names may exceed a label value's 63 bytes.
			volumes.LabelOp: op, volumes.LabelPool: simPool,
		}},
		Spec: corev1.PodSpec{
			NodeName:      node,
			RestartPolicy: corev1.RestartPolicyNever,
			Tolerations:   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name: volumes.CopierContainer, Image: "ghcr.io/warmpool/warmpool:dev", Args: args,
				// nodesim grants what this grants: without SYS_ADMIN the copier refuses.
				SecurityContext: volumes.CopierSecurityContext(),
				VolumeMounts: []corev1.VolumeMount{
					{Name: host.Name, MountPath: hostMount},
					{Name: "volume", MountPath: volumes.VolumeMountPath, ReadOnly: readOnly},
				},
			}},
			Volumes: []corev1.Volume{host, {Name: "volume", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim, ReadOnly: readOnly},
			}}},
		},
	}
}

// runCachePod creates the pod, waits for it to finish and returns the result from its
// termination message, as the cache controller reads it.
func runCachePod(t *testing.T, pod *corev1.Pod) volumes.JobResult {
	t.Helper()
	if err := local.Client.Create(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cache pod "+pod.Name+" to finish", func(ctx context.Context) (bool, error) {
		err := local.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return err == nil && (pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed), err
	})
	if len(pod.Status.ContainerStatuses) != 1 || pod.Status.ContainerStatuses[0].State.Terminated == nil {
		t.Fatalf("pod %s finished without a terminated container: %+v", pod.Name, pod.Status)
	}
	term := pod.Status.ContainerStatuses[0].State.Terminated
	res, err := volumes.ParseJobResult(term.Message)
	if err != nil {
		t.Fatalf("pod %s (exit %d): %v", pod.Name, term.ExitCode, err)
	}
	wantPhase := corev1.PodSucceeded
	if term.ExitCode != 0 {
		wantPhase = corev1.PodFailed
	}
	if pod.Status.Phase != wantPhase {
		t.Errorf("pod %s exit %d, phase %s", pod.Name, term.ExitCode, pod.Status.Phase)
	}
	return res
}

func waitGone(t *testing.T, o client.Object) {
	t.Helper()
	obj := o.DeepCopyObject().(client.Object)
	waitFor(t, fmt.Sprintf("%T %s to be gone", o, o.GetName()), func(ctx context.Context) (bool, error) {
		err := local.Client.Get(ctx, client.ObjectKeyFromObject(o), obj)
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
}

func sameFiles(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(want) == 0 {
		t.Fatalf("%s: nothing to compare with", what)
	}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s: %s differs or is missing", what, p)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: unexpected %s", what, p)
		}
	}
}
