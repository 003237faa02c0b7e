package nodesim

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

const (
	// Set by external-provisioner on the PVs it creates; KCM's PV controller then leaves
	// their deletion to the provisioner.
	annProvisionedBy = "pv.kubernetes.io/provisioned-by"
	// Set by the scheduler (or, for pods with nodeName, by whoever creates the PVC) on a
	// WaitForFirstConsumer claim; external-provisioner waits for it.
	annSelectedNode = "volume.kubernetes.io/selected-node"
	// The snapshot-controller's finalizer on a bound VolumeSnapshot.
	finalizerSnapshotBound = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"

	retry = 500 * time.Millisecond
)

// provisioner plays external-provisioner for Driver.
type provisioner struct{ *Sim }

func (p provisioner) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	pvc := &corev1.PersistentVolumeClaim{}
	if err := p.client.Get(ctx, req.NamespacedName, pvc); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if pvc.DeletionTimestamp != nil || pvc.Spec.VolumeName != "" || pvc.Spec.StorageClassName == nil {
		return reconcile.Result{}, nil
	}
	sc := &storagev1.StorageClass{}
	if err := p.client.Get(ctx, client.ObjectKey{Name: *pvc.Spec.StorageClassName}, sc); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if sc.Provisioner != Driver {
		return reconcile.Result{}, nil
	}
	node := pvc.Annotations[annSelectedNode]
	if ptr.Deref(sc.VolumeBindingMode, storagev1.VolumeBindingImmediate) == storagev1.VolumeBindingWaitForFirstConsumer && node == "" {
		return reconcile.Result{}, nil // waits for its first consumer, like the real one
	}

	pvName := "pvc-" + string(pvc.UID)
	dir := p.VolumePath(pvName)
	from := ""
	if ds := pvc.Spec.DataSource; ds != nil {
		if ds.Kind != "VolumeSnapshot" || ptr.Deref(ds.APIGroup, "") != snapshotv1.GroupName {
			return reconcile.Result{}, fmt.Errorf("PVC %s: unsupported dataSource %s", req, ds.Kind)
		}
		handle, err := p.readySnapshotHandle(ctx, pvc.Namespace, ds.Name)
		if err != nil || handle == "" {
			return reconcile.Result{RequeueAfter: retry}, err
		}
		from = handle
		if err := copyTreeOnce(p.SnapshotPath(handle), dir); err != nil {
			return reconcile.Result{}, fmt.Errorf("provisioning %s from snapshot %s: %w", pvName, handle, err)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return reconcile.Result{}, err
	}

	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName, Annotations: map[string]string{annProvisionedBy: Driver}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: pvc.Spec.Resources.Requests[corev1.ResourceStorage]},
			AccessModes: pvc.Spec.AccessModes,
			ClaimRef: &corev1.ObjectReference{
				APIVersion: "v1", Kind: "PersistentVolumeClaim",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
			},
			PersistentVolumeReclaimPolicy: ptr.Deref(sc.ReclaimPolicy, corev1.PersistentVolumeReclaimDelete),
			StorageClassName:              sc.Name,
			VolumeMode:                    pvc.Spec.VolumeMode,
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				CSI: &corev1.CSIPersistentVolumeSource{Driver: Driver, VolumeHandle: pvName},
			},
		},
	}
	// KCM's PV controller binds the claim to this pre-bound volume.
	if err := p.client.Create(ctx, pv); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("creating PV %s: %w", pvName, err)
	}
	p.record(Event{Kind: VolumeProvisioned, Node: node, Object: pvName, Detail: from})
	return reconcile.Result{}, nil
}

// readySnapshotHandle returns the snapshot handle of a ready VolumeSnapshot, "" while it is
// not ready.
func (s *Sim) readySnapshotHandle(ctx context.Context, namespace, name string) (string, error) {
	vs := &snapshotv1.VolumeSnapshot{}
	if err := s.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, vs); err != nil {
		return "", client.IgnoreNotFound(err)
	}
	if vs.Status == nil || !ptr.Deref(vs.Status.ReadyToUse, false) || vs.Status.BoundVolumeSnapshotContentName == nil {
		return "", nil
	}
	content := &snapshotv1.VolumeSnapshotContent{}
	if err := s.client.Get(ctx, client.ObjectKey{Name: *vs.Status.BoundVolumeSnapshotContentName}, content); err != nil {
		return "", client.IgnoreNotFound(err)
	}
	if content.Status == nil || content.Status.SnapshotHandle == nil {
		return "", nil
	}
	return *content.Status.SnapshotHandle, nil
}

// volumeReclaimer deletes released PVs of Driver with reclaim policy Delete, and their data.
type volumeReclaimer struct{ *Sim }

func (r volumeReclaimer) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	pv := &corev1.PersistentVolume{}
	if err := r.client.Get(ctx, req.NamespacedName, pv); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != Driver || pv.DeletionTimestamp != nil ||
		pv.Status.Phase != corev1.VolumeReleased || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		return reconcile.Result{}, nil
	}
	if err := os.RemoveAll(r.VolumePath(pv.Spec.CSI.VolumeHandle)); err != nil {
		return reconcile.Result{}, err
	}
	if err := r.client.Delete(ctx, pv); client.IgnoreNotFound(err) != nil {
		return reconcile.Result{}, fmt.Errorf("deleting PV %s: %w", pv.Name, err)
	}
	r.record(Event{Kind: VolumeDeleted, Object: pv.Name})
	return reconcile.Result{}, nil
}

// snapshotter plays the snapshot-controller and the CSI snapshotter sidecar for Driver.
type snapshotter struct{ *Sim }

func (s snapshotter) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	vs := &snapshotv1.VolumeSnapshot{}
	if err := s.client.Get(ctx, req.NamespacedName, vs); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if vs.Spec.VolumeSnapshotClassName == nil {
		return reconcile.Result{}, nil
	}
	class := &snapshotv1.VolumeSnapshotClass{}
	if err := s.client.Get(ctx, client.ObjectKey{Name: *vs.Spec.VolumeSnapshotClassName}, class); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if class.Driver != Driver {
		return reconcile.Result{}, nil
	}
	contentName := "snapcontent-" + string(vs.UID)
	handle := "snapshot-" + string(vs.UID)
	if vs.DeletionTimestamp != nil {
		return s.finalize(ctx, vs, contentName, handle)
	}
	if vs.Status != nil && ptr.Deref(vs.Status.ReadyToUse, false) {
		return reconcile.Result{}, nil
	}
	if vs.Spec.Source.PersistentVolumeClaimName == nil {
		return reconcile.Result{}, nil // pre-provisioned snapshots are not simulated
	}
	if !controllerutil.ContainsFinalizer(vs, finalizerSnapshotBound) {
		controllerutil.AddFinalizer(vs, finalizerSnapshotBound)
		if err := s.client.Update(ctx, vs); err != nil {
			return reconcile.Result{}, err
		}
	}
	pvc := &corev1.PersistentVolumeClaim{}
	if err := s.client.Get(ctx, client.ObjectKey{Namespace: vs.Namespace, Name: *vs.Spec.Source.PersistentVolumeClaimName}, pvc); err != nil {
		return reconcile.Result{RequeueAfter: retry}, client.IgnoreNotFound(err)
	}
	pv := &corev1.PersistentVolume{}
	if pvc.Spec.VolumeName == "" {
		return reconcile.Result{RequeueAfter: retry}, nil // the real controller waits for the claim to bind too
	}
	if err := s.client.Get(ctx, client.ObjectKey{Name: pvc.Spec.VolumeName}, pv); err != nil {
		return reconcile.Result{RequeueAfter: retry}, client.IgnoreNotFound(err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != Driver {
		return reconcile.Result{}, fmt.Errorf("snapshot %s: PV %s is not a %s volume", req, pv.Name, Driver)
	}
	if err := copyTreeOnce(s.VolumePath(pv.Spec.CSI.VolumeHandle), s.SnapshotPath(handle)); err != nil {
		return reconcile.Result{}, fmt.Errorf("snapshot %s: copying volume %s: %w", req, pv.Name, err)
	}

	size := pv.Spec.Capacity[corev1.ResourceStorage]
	created := time.Now()
	content := &snapshotv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: contentName},
		Spec: snapshotv1.VolumeSnapshotContentSpec{
			VolumeSnapshotRef: corev1.ObjectReference{
				APIVersion: snapshotv1.SchemeGroupVersion.String(), Kind: "VolumeSnapshot",
				Namespace: vs.Namespace, Name: vs.Name, UID: vs.UID,
			},
			DeletionPolicy:          class.DeletionPolicy,
			Driver:                  Driver,
			VolumeSnapshotClassName: &class.Name,
			Source:                  snapshotv1.VolumeSnapshotContentSource{VolumeHandle: &pv.Spec.CSI.VolumeHandle},
		},
	}
	if err := s.client.Create(ctx, content); err != nil && !apierrors.IsAlreadyExists(err) {
		return reconcile.Result{}, fmt.Errorf("creating %s: %w", contentName, err)
	}
	if err := s.client.Get(ctx, client.ObjectKey{Name: contentName}, content); err != nil {
		return reconcile.Result{}, err
	}
	content.Status = &snapshotv1.VolumeSnapshotContentStatus{
		SnapshotHandle: &handle,
		CreationTime:   ptr.To(created.UnixNano()),
		RestoreSize:    ptr.To(size.Value()),
		ReadyToUse:     ptr.To(true),
	}
	if err := s.client.Status().Update(ctx, content); err != nil {
		return reconcile.Result{}, fmt.Errorf("updating %s status: %w", contentName, err)
	}
	vs.Status = &snapshotv1.VolumeSnapshotStatus{
		BoundVolumeSnapshotContentName: &contentName,
		CreationTime:                   ptr.To(metav1.NewTime(created)),
		ReadyToUse:                     ptr.To(true),
		RestoreSize:                    ptr.To(resource.MustParse(size.String())),
	}
	if err := s.client.Status().Update(ctx, vs); err != nil {
		return reconcile.Result{}, fmt.Errorf("updating snapshot %s status: %w", req, err)
	}
	s.record(Event{Kind: SnapshotReady, Object: req.String(), Detail: handle})
	return reconcile.Result{}, nil
}

// finalize deletes the content and its data (deletion policy Delete) once no claim is still
// being provisioned from the snapshot, then lets the VolumeSnapshot go.
func (s snapshotter) finalize(ctx context.Context, vs *snapshotv1.VolumeSnapshot, contentName, handle string) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(vs, finalizerSnapshotBound) {
		return reconcile.Result{}, nil
	}
	claims := &corev1.PersistentVolumeClaimList{}
	if err := s.client.List(ctx, claims, client.InNamespace(vs.Namespace)); err != nil {
		return reconcile.Result{}, err
	}
	if slices.ContainsFunc(claims.Items, func(c corev1.PersistentVolumeClaim) bool {
		return c.Spec.DataSource != nil && c.Spec.DataSource.Kind == "VolumeSnapshot" && c.Spec.DataSource.Name == vs.Name && c.Spec.VolumeName == "" && c.DeletionTimestamp == nil
	}) {
		return reconcile.Result{RequeueAfter: retry}, nil // source protection, as the real controller does
	}
	content := &snapshotv1.VolumeSnapshotContent{}
	err := s.client.Get(ctx, client.ObjectKey{Name: contentName}, content)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return reconcile.Result{}, err
	case content.Spec.DeletionPolicy == snapshotv1.VolumeSnapshotContentDelete:
		if err := os.RemoveAll(s.SnapshotPath(handle)); err != nil {
			return reconcile.Result{}, err
		}
		if err := s.client.Delete(ctx, content); client.IgnoreNotFound(err) != nil {
			return reconcile.Result{}, fmt.Errorf("deleting %s: %w", contentName, err)
		}
	}
	controllerutil.RemoveFinalizer(vs, finalizerSnapshotBound)
	if err := s.client.Update(ctx, vs); client.IgnoreNotFound(err) != nil {
		return reconcile.Result{}, err
	}
	s.record(Event{Kind: SnapshotDeleted, Object: vs.Namespace + "/" + vs.Name, Detail: handle})
	return reconcile.Result{}, nil
}

// copyTreeOnce copies src to dst with `cp -a` (hardlinks, modes, owners, nanosecond times,
// xattrs and holes kept, as a block-level snapshot would) through a temp dir, so dst exists
// only complete. An existing dst is taken as done.
func copyTreeOnce(src, dst string) error {
	if _, err := os.Stat(dst); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	tmp := dst + ".partial"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if out, err := exec.Command("cp", "-a", "--", src, tmp).CombinedOutput(); err != nil {
		return fmt.Errorf("cp -a %s %s: %w: %s", src, tmp, err, out)
	}
	return os.Rename(tmp, dst)
}
