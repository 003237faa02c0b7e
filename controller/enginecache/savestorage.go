package enginecache

import (
	"context"
	"fmt"
	"strconv"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"warmpool.io/warmpool/controller/enginecache/steps"

	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/storagecheck"
)

// Save outcomes of the storage checks (AnnotationSaveOutcome, warmpool_cache_lost_total).
const (
	// outcomeStorage: the save StorageClass or VolumeSnapshotClass cannot work; nothing started.
	outcomeStorage = "storage-misconfigured"
	// outcomeNoCSIDriver: the node's CSINode does not list the save class's driver, so the
	// save volume could never be attached.
	outcomeNoCSIDriver = "csi-driver-not-registered"
	// outcomeNoSpace: the cache does not fit the save volume, even one made to fit it.
	outcomeNoSpace = volumes.ResultNoSpace
)

// checkSaveStorage checks, before the save volume is made, that it can be: the save class is a
// CSI class without volumeInitializationRate, the snapshot class shares its driver, and the
// node's CSINode lists that driver. The node is going away, so nothing is waited for: a save
// that could only time out is concluded at once, with the reason.
func (c *SaveController) checkSaveStorage(ctx context.Context, s *saveState) (bool, error) {
	vol, problems, err := c.checkVolume(ctx, storagecheck.RoleSave, s.pool)
	if err != nil {
		return false, err
	}
	outcome := outcomeStorage
	if len(problems) == 0 {
		csi, err := c.csiNode(ctx, s.name)
		if err != nil {
			return false, err
		}
		if p := storagecheck.CSINodeProblem(s.name, csi, vol.Driver); p != nil {
			problems, outcome = append(problems, *p), outcomeNoCSIDriver
		}
	}
	if len(problems) == 0 {
		return true, nil
	}
	if err := c.conclude(ctx, s, outcome, "the save was not started: "+describe(problems)); err != nil {
		return false, err
	}
	countProblems(s.poolName, volumes.OpSave, problems)
	return false, nil
}

// saveVolumeSize is the size of a new save volume: the pool's cache.size, or larger for the
// base snapshot it is cloned from (a volume cannot be smaller than its snapshot), for the cache
// that snapshot holds (what the copier counted then, so a growing cache does not first fail to
// fit), or for a cache the save measured as not fitting (annotationSaveSize).
func (c *SaveController) saveVolumeSize(s *saveState, base *snapshotv1.VolumeSnapshot) resource.Quantity {
	size := volumes.SaveSize(*s.pool.Cache.Size, base)
	grow := func(q resource.Quantity) {
		if q.Cmp(size) > 0 {
			size = q
		}
	}
	if base != nil {
		if n, err := strconv.ParseInt(base.Annotations[volumes.AnnotationBytes], 10, 64); err == nil && n > 0 {
			grow(storagecheck.VolumeSize(storagecheck.Usage{Bytes: n}))
		}
	}
	if q, err := resource.ParseQuantity(s.guard.Annotations[annotationSaveSize]); err == nil {
		grow(q)
	}
	return size
}

// checkFit acts on a save Job that refused to copy because the cache does not fit its volume
// (volumes.ResultNoSpace, decided before anything was copied): the first time, the volume is
// made anew at a size that fits (storagecheck.VolumeSize of what the Job measured); a cache that
// does not fit that either is not saved. Otherwise (the Job has not refused) the save goes on.
func (c *SaveController) checkFit(ctx context.Context, s *saveState) (steps.Exit, error) {
	if s.job == nil || s.snapshot != nil {
		return steps.Next, nil
	}
	r, finished, err := c.jobResult(ctx, s.job)
	if err != nil {
		return steps.Stop, err
	}
	if !finished || r.Result != volumes.ResultNoSpace {
		return steps.Next, nil
	}
	need := storagecheck.VolumeSize(storagecheck.Usage{Bytes: r.Bytes, Inodes: r.Files})
	have := s.pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if s.guard == nil || s.guard.Annotations[annotationSaveSize] != "" || need.Cmp(have) <= 0 {
		return steps.Stop, c.conclude(ctx, s, outcomeNoSpace, fmt.Sprintf("the cache does not fit its save volume of %s: %s", have.String(), r.Reason))
	}
	patch := client.MergeFrom(s.guard.DeepCopy())
	s.guard.Annotations[annotationSaveSize] = need.String()
	if err := c.kube.Patch(ctx, s.guard, patch); err != nil {
		return steps.Stop, fmt.Errorf("recording the save volume size on guard %s, %w", s.guard.Name, err)
	}
	c.recorder.Eventf(nodeRef(s.name, s.node), corev1.EventTypeNormal, ReasonSaveVolumeResized, msgSaveVolumeResized,
		storagecheck.FormatBytes(r.Bytes), r.Files, have.String(), need.String())
	log.FromContext(ctx).Info("save volume too small, making a larger one", "have", have.String(), "need", need.String())
	return c.dropVolume(ctx, s)
}
