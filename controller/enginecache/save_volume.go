package enginecache

import (
	"context"
	"fmt"
	"slices"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"warmpool.io/warmpool/controller/enginecache/steps"
	"warmpool.io/warmpool/volumes"
)

// makeVolume creates the PVC the cache is copied onto: cloned from the newest good snapshot
// of the same key when there is one (the copy then writes only what changed since, and the EBS
// snapshot uploads only the changed blocks), else empty. A save that already fell back
// (annotationBaseFallback) starts empty. Before it is made, its storage is checked
// (checkSaveStorage); a volume the cache turned out not to fit is made anew to fit (checkFit).
func (c *SaveController) makeVolume(ctx context.Context, s *saveState) (steps.Exit, error) {
	if s.pvc != nil {
		return c.checkFit(ctx, s)
	}
	if s.job != nil || s.snapshot != nil {
		return steps.Stop, c.conclude(ctx, s, outcomeFailed, "the save volume was deleted mid-save")
	}
	// The volume a fallback deleted may still be going (its finalizers wait for the pod of the
	// Job deleted with it): a create would find it and take it for the new one.
	old := &corev1.PersistentVolumeClaim{}
	if err := c.live.Get(ctx, types.NamespacedName{Namespace: c.namespace(), Name: volumes.SaveName(s.name)}, old); err == nil {
		return steps.WaitFor(time.Second), nil
	} else if !apierrors.IsNotFound(err) {
		return steps.Stop, fmt.Errorf("reading save volume %s, %w", volumes.SaveName(s.name), err)
	}
	if ok, err := c.checkSaveStorage(ctx, s); !ok || err != nil {
		return steps.Stop, err
	}
	t := c.saveTarget(s)
	var base *snapshotv1.VolumeSnapshot
	if s.guard.Annotations[annotationBaseFallback] == "" {
		var err error
		if base, err = c.baseSnapshot(ctx, t); err != nil {
			return steps.Stop, err
		}
	}
	baseName := ""
	if base != nil {
		baseName = base.Name
	}
	pvc := volumes.SavePVC(t, s.pool.Cache.StorageClassName, c.saveVolumeSize(s, base), baseName)
	pvc.Annotations[AnnotationStarted] = stamp(c.clk.Now())
	if err := c.create(ctx, pvc); err != nil {
		return steps.Stop, err
	}
	s.pvc = pvc
	if base != nil {
		log.FromContext(ctx).Info("save volume cloned from the previous snapshot", "base", base.Name)
	}
	return steps.Next, nil
}

// baseSnapshot is the snapshot a save of t clones: the one a restore of that key would choose.
func (c *SaveController) baseSnapshot(ctx context.Context, t volumes.Target) (*snapshotv1.VolumeSnapshot, error) {
	key := volumes.SnapshotKey{Pool: t.Pool, Arch: t.Arch, EngineVersion: t.EngineVersion}
	if key.Arch == "" || key.EngineVersion == "" {
		return nil, nil
	}
	list := &snapshotv1.VolumeSnapshotList{}
	if err := c.kube.List(ctx, list, client.InNamespace(c.namespace()), client.MatchingLabels{
		volumes.LabelPool: key.Pool, volumes.LabelArch: key.Arch, volumes.LabelEngineVersion: key.EngineVersion,
	}); err != nil {
		return nil, fmt.Errorf("listing snapshots of %+v, %w", key, err)
	}
	return volumes.ChooseSnapshot(list.Items, key), nil
}

// checkBase falls back, once, to an empty volume when the snapshot the save volume is cloned
// from cannot be cloned: it was deleted (the provisioner fails "error getting snapshot"), or is
// being deleted before the provisioner protected it (external-provisioner refuses "snapshot ...
// is being deleted" unless its own volumesnapshot-as-source-protection finalizer is on it), or
// the volume stayed Pending past SaveVolumeBindTimeout. Either way the PVC would stay Pending
// and the copy never start, holding the node until the deadline for nothing. The Job (whose pod
// cannot have run without the volume) and the PVC are deleted; makeVolume makes an empty one.
func (c *SaveController) checkBase(ctx context.Context, s *saveState) (steps.Exit, error) {
	base := volumes.SnapshotSourceOf(s.pvc)
	if base == "" || s.node == nil || s.snapshot != nil || s.pvc.Status.Phase == corev1.ClaimBound || s.pvc.Spec.VolumeName != "" {
		// Without its node the save cannot copy anything any more: awaitCopy concludes it.
		return steps.Next, nil
	}
	if s.guard.Annotations[annotationBaseFallback] != "" {
		// Decided and reported already (a crash came before the deletions below).
		return c.dropVolume(ctx, s)
	}
	why := ""
	snap := &snapshotv1.VolumeSnapshot{}
	err := c.live.Get(ctx, types.NamespacedName{Namespace: c.namespace(), Name: base}, snap)
	switch {
	case apierrors.IsNotFound(err):
		why = fmt.Sprintf("its base snapshot %s was deleted before the volume was provisioned", base)
	case err != nil:
		return steps.Stop, fmt.Errorf("reading base snapshot %s, %w", base, err)
	case snap.DeletionTimestamp != nil && !slices.Contains(snap.Finalizers, provisionerSourceProtection):
		why = fmt.Sprintf("its base snapshot %s is being deleted and the provisioner had not started cloning it", base)
	}
	if why == "" {
		started := parseStamp(s.pvc.Annotations[AnnotationStarted])
		if started.IsZero() {
			started = s.pvc.CreationTimestamp.Time
		}
		pending := c.clk.Since(started)
		if pending < c.opts.SaveVolumeBindTimeout {
			return steps.Next, nil
		}
		why = fmt.Sprintf("the volume cloned from %s was still Pending after %s", base, pending.Round(time.Second))
	}
	patch := client.MergeFrom(s.guard.DeepCopy())
	s.guard.Annotations[annotationBaseFallback] = why
	if err := c.kube.Patch(ctx, s.guard, patch); err != nil {
		return steps.Stop, fmt.Errorf("recording the base fallback on guard %s, %w", s.guard.Name, err)
	}
	c.recorder.Eventf(nodeRef(s.name, s.node), corev1.EventTypeWarning, ReasonSaveBaseLost, msgSaveBaseLost, why)
	log.FromContext(ctx).Info("falling back to an empty save volume", "reason", why)
	return c.dropVolume(ctx, s)
}

// dropVolume deletes the save's Job and volume, for makeVolume to make the volume anew.
func (c *SaveController) dropVolume(ctx context.Context, s *saveState) (steps.Exit, error) {
	// Each is checked for nil before it becomes an interface: a nil *Job in a client.Object is
	// not nil, and removing it panicked when the fallback came before the Job was made.
	if s.job != nil {
		if err := c.remove(ctx, s.job); err != nil {
			return steps.Stop, err
		}
	}
	if s.pvc != nil {
		if err := c.remove(ctx, s.pvc); err != nil {
			return steps.Stop, err
		}
	}
	s.job, s.pvc = nil, nil
	return steps.WaitFor(time.Second), nil
}

// saveTarget is the node's target with the engine version of the cache being saved.
func (c *SaveController) saveTarget(s *saveState) volumes.Target {
	arch := ""
	if s.node != nil {
		arch = s.node.Labels[corev1.LabelArchStable]
	}
	t := c.target(s.pool, s.name, arch)
	if s.guard != nil && s.guard.Annotations[annotationEngineVersion] != "" {
		t.EngineVersion = s.guard.Annotations[annotationEngineVersion]
	}
	if s.job != nil && s.job.Annotations[annotationEngineVersion] != "" {
		t.EngineVersion = s.job.Annotations[annotationEngineVersion]
	}
	return t
}
