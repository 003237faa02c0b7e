package nodesim

import (
	"context"
	"fmt"
	"os"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
	// The snapshot-controller's finalizer on the source PVC of a snapshot that is not ready yet
	// (common-controller ensurePVCFinalizer / checkandRemovePVCFinalizer): the PVC may be
	// deleted at the cut, but it stays until its snapshots are ready, or deleted.
	finalizerPVCAsSource = "snapshot.storage.kubernetes.io/pvc-as-source-protection"
	// external-provisioner's finalizer on a VolumeSnapshot it is creating a volume from
	// (setSnapshotFinalizer, removed once the volume exists): a snapshot being deleted that
	// carries it is still cloned, one without it is refused.
	finalizerProvisionerSource = "provisioner.storage.kubernetes.io/volumesnapshot-as-source-protection"

	// annSourceSnapshot on a PV nodesim provisioned from a snapshot: that snapshot's handle,
	// what a later snapshot of the volume is incremental to.
	annSourceSnapshot = "nodesim.warmpool.io/source-snapshot-handle"
	// Annotations on a VolumeSnapshotContent, set at the cut: the bytes its upload carries, and
	// the node the source volume was attached to (for AnnotationFailSnapshot).
	annUploadBytes = "nodesim.warmpool.io/upload-bytes"
	annSourceNode  = "nodesim.warmpool.io/source-node"

	// ParameterUploadBytesPerSecond in a VolumeSnapshotClass's parameters overrides
	// Options.SnapshotUploadBytesPerSecond for its snapshots (a decimal number of bytes).
	ParameterUploadBytesPerSecond = "uploadBytesPerSecond"

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
	if node != "" {
		// external-provisioner's topology step: a volume for a node needs the node's CSINode
		// to list the driver (the node plugin registered).
		why, err := p.csiNodeMissing(ctx, node)
		if err != nil {
			return reconcile.Result{}, err
		}
		if why != "" {
			p.provisioningFailed(ctx, pvc, sc.Name, "error generating accessibility requirements: "+why)
			return reconcile.Result{RequeueAfter: retry}, nil
		}
	}
	model, err := p.volumeModel(ctx, pvc, sc)
	if err != nil {
		// CreateVolume refused: external-provisioner reports it and retries with backoff; the
		// claim stays Pending.
		p.provisioningFailed(ctx, pvc, sc.Name, fmt.Sprintf("rpc error: code = InvalidArgument desc = Could not create volume %q: %v", pvName, err))
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}
	dir := p.VolumePath(pvName)
	from := ""
	if ds := pvc.Spec.DataSource; ds != nil {
		if ds.Kind != "VolumeSnapshot" || ptr.Deref(ds.APIGroup, "") != snapshotv1.GroupName {
			return reconcile.Result{}, fmt.Errorf("PVC %s: unsupported dataSource %s", req, ds.Kind)
		}
		handle, why, err := p.cloneSource(ctx, pvc.Namespace, ds.Name)
		if err != nil {
			return reconcile.Result{}, err
		}
		if handle == "" {
			// external-provisioner reports ProvisioningFailed and retries; the claim stays Pending.
			p.logf("provisioning %s for %s: %s; retrying", pvName, req, why)
			return reconcile.Result{RequeueAfter: retry}, nil
		}
		from = handle
		if err := copyTreeOnce(p.SnapshotPath(handle), dir); err != nil {
			return reconcile.Result{}, fmt.Errorf("provisioning %s from snapshot %s: %w", pvName, handle, err)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return reconcile.Result{}, err
	}
	if err := p.addVolume(req.String(), pvName, model); err != nil {
		return reconcile.Result{}, fmt.Errorf("provisioning %s: %w", pvName, err)
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
	if from != "" {
		pv.Annotations[annSourceSnapshot] = from
	}
	// KCM's PV controller binds the claim to this pre-bound volume.
	if err := p.client.Create(ctx, pv); err != nil && !apierrors.IsAlreadyExists(err) {
		return reconcile.Result{}, fmt.Errorf("creating PV %s: %w", pvName, err)
	} else if err == nil {
		p.record(Event{Kind: VolumeProvisioned, Node: node, Object: pvName, Detail: from})
	}
	if ds := pvc.Spec.DataSource; ds != nil {
		// The volume exists: the snapshot is no longer needed to make it.
		if err := p.setFinalizer(ctx, pvc.Namespace, ds.Name, finalizerProvisionerSource, false); err != nil {
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{}, nil
}

// volumeModel is the EBS model of the volume a claim asks for: the class's parameters, and
// whether it is created from a snapshot (with Fast Snapshot Restore, when that snapshot
// carries AnnotationFastSnapshotRestore). An error is CreateVolume's refusal.
func (p provisioner) volumeModel(ctx context.Context, pvc *corev1.PersistentVolumeClaim, sc *storagev1.StorageClass) (volumeModel, error) {
	fromSnapshot, fsr := pvc.Spec.DataSource != nil, false
	if fromSnapshot {
		vs := &snapshotv1.VolumeSnapshot{}
		err := p.client.Get(ctx, client.ObjectKey{Namespace: pvc.Namespace, Name: pvc.Spec.DataSource.Name}, vs)
		if client.IgnoreNotFound(err) != nil {
			return volumeModel{}, err
		}
		fsr = err == nil && vs.Annotations[AnnotationFastSnapshotRestore] == "true"
	}
	return p.ebs.modelFor(sc.Parameters, fromSnapshot, fsr)
}

// provisioningFailed reports a failed provisioning as external-provisioner does: a Warning
// Event ProvisioningFailed on the claim (once per distinct message; the real one's
// recorder aggregates the repeats).
func (s *Sim) provisioningFailed(ctx context.Context, pvc *corev1.PersistentVolumeClaim, class, detail string) {
	msg := fmt.Sprintf("failed to provision volume with StorageClass %q: %s", class, detail)
	key := string(pvc.UID) + "\x00" + msg
	s.volMu.Lock()
	seen := s.provFailed[key]
	s.provFailed[key] = true
	s.volMu.Unlock()
	if seen {
		return
	}
	s.record(Event{Kind: VolumeProvisioningFailed, Node: pvc.Annotations[annSelectedNode], Object: pvc.Namespace + "/" + pvc.Name, Detail: msg})
	s.emit(ctx, pvc, "PersistentVolumeClaim", corev1.EventTypeWarning, "ProvisioningFailed", msg, Driver+"_nodesim")
}

// emit writes a core/v1 Event about obj, as a component's event recorder does.
func (s *Sim) emit(ctx context.Context, obj client.Object, kind, eventType, reason, msg, component string) {
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: obj.GetName() + ".",
			Namespace:    obj.GetNamespace(),
		},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: "v1", Kind: kind, Namespace: obj.GetNamespace(), Name: obj.GetName(),
			UID: obj.GetUID(), ResourceVersion: obj.GetResourceVersion(),
		},
		Reason: reason, Message: msg, Type: eventType,
		Source:         corev1.EventSource{Component: component},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	if ev.Namespace == "" {
		ev.Namespace = metav1.NamespaceDefault
	}
	if err := s.client.Create(ctx, ev); err != nil {
		s.logf("recording event %s on %s %s: %v", reason, kind, obj.GetName(), err)
	}
}

// cloneSource does what external-provisioner's getSnapshotSource and setSnapshotFinalizer do
// before a volume is created from a VolumeSnapshot: a snapshot that does not exist, or that is
// being deleted without the provisioner's source-protection finalizer (so provisioning had not
// started), or that is not ready or bound, is refused with the reason; otherwise the finalizer
// is put on it and its handle returned.
func (s *Sim) cloneSource(ctx context.Context, namespace, name string) (handle, why string, err error) {
	vs := &snapshotv1.VolumeSnapshot{}
	if err := s.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, vs); err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Sprintf("error getting snapshot %s from api server: not found", name), nil
		}
		return "", "", err
	}
	if vs.DeletionTimestamp != nil && !controllerutil.ContainsFinalizer(vs, finalizerProvisionerSource) {
		return "", fmt.Sprintf("snapshot %s is being deleted", name), nil
	}
	if vs.Status == nil || vs.Status.BoundVolumeSnapshotContentName == nil {
		return "", fmt.Sprintf("snapshot %s not bound", name), nil
	}
	if !ptr.Deref(vs.Status.ReadyToUse, false) {
		return "", fmt.Sprintf("snapshot %s is not Ready", name), nil
	}
	content := &snapshotv1.VolumeSnapshotContent{}
	if err := s.client.Get(ctx, client.ObjectKey{Name: *vs.Status.BoundVolumeSnapshotContentName}, content); err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Sprintf("error getting snapshotcontent %s for snapshot %s", *vs.Status.BoundVolumeSnapshotContentName, name), nil
		}
		return "", "", err
	}
	if content.Status == nil || content.Status.SnapshotHandle == nil {
		return "", fmt.Sprintf("snapshot handle %s is not available", name), nil
	}
	if err := s.setFinalizer(ctx, namespace, name, finalizerProvisionerSource, true); err != nil {
		return "", "", err
	}
	return *content.Status.SnapshotHandle, "", nil
}

// setFinalizer adds (or removes) finalizer on the VolumeSnapshot namespace/name, if it exists.
func (s *Sim) setFinalizer(ctx context.Context, namespace, name, finalizer string, add bool) error {
	vs := &snapshotv1.VolumeSnapshot{}
	if err := s.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, vs); err != nil {
		return client.IgnoreNotFound(err)
	}
	changed := controllerutil.RemoveFinalizer(vs, finalizer)
	if add {
		changed = controllerutil.AddFinalizer(vs, finalizer)
	}
	if !changed {
		return nil
	}
	if err := s.client.Update(ctx, vs); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("updating finalizers of snapshot %s/%s: %w", namespace, name, err)
	}
	return nil
}

// setPVCFinalizer adds (or removes) finalizer on the PVC namespace/name, if it exists.
func (s *Sim) setPVCFinalizer(ctx context.Context, namespace, name, finalizer string, add bool) error {
	pvc := &corev1.PersistentVolumeClaim{}
	if err := s.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, pvc); err != nil {
		return client.IgnoreNotFound(err)
	}
	changed := controllerutil.RemoveFinalizer(pvc, finalizer)
	if add {
		changed = controllerutil.AddFinalizer(pvc, finalizer)
	}
	if !changed {
		return nil
	}
	if err := s.client.Update(ctx, pvc); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("updating finalizers of PVC %s/%s: %w", namespace, name, err)
	}
	return nil
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
	// The kubelet unmounted it when its pod ended; the mount goes before the data.
	if err := r.releaseVolume(pv.Spec.CSI.VolumeHandle); err != nil {
		return reconcile.Result{}, err
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
