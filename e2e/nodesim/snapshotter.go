package nodesim

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// snapshotter plays the snapshot-controller and the CSI snapshotter sidecar for Driver, with
// EBS's timing: the snapshot is cut at once (status.creationTime set, readyToUse false; the
// volume's data is copied to the snapshot dir during the upload), and becomes ready only after an upload whose
// length is the bytes changed since the snapshot the volume was created from, at the upload
// rate (Options.SnapshotUploadBytesPerSecond, or the class's ParameterUploadBytesPerSecond).
// While it is not ready its source PVC carries the pvc-as-source-protection finalizer. A
// snapshot whose VolumeSnapshot or source node carries AnnotationFailSnapshot fails at the end
// of its upload instead: status.error set, never ready, as an EBS snapshot in error state.
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
	if vs.Spec.Source.PersistentVolumeClaimName == nil {
		return reconcile.Result{}, nil // pre-provisioned snapshots are not simulated
	}
	source := *vs.Spec.Source.PersistentVolumeClaimName
	if vs.Status != nil && ptr.Deref(vs.Status.ReadyToUse, false) {
		// Ready: the source is free (the snapshot-controller's checkandRemovePVCFinalizer).
		return reconcile.Result{}, s.setPVCFinalizer(ctx, vs.Namespace, source, finalizerPVCAsSource, false)
	}
	content := &snapshotv1.VolumeSnapshotContent{}
	err := s.client.Get(ctx, client.ObjectKey{Name: contentName}, content)
	switch {
	case err == nil && content.Status != nil && content.Status.CreationTime != nil:
		return s.upload(ctx, vs, content, class)
	case err != nil && !apierrors.IsNotFound(err):
		return reconcile.Result{}, err
	}
	return s.cut(ctx, vs, class, contentName, handle)
}

// cut takes the snapshot: the source volume's data as it is now, under the snapshot handle.
func (s snapshotter) cut(ctx context.Context, vs *snapshotv1.VolumeSnapshot, class *snapshotv1.VolumeSnapshotClass, contentName, handle string) (reconcile.Result, error) {
	req := vs.Namespace + "/" + vs.Name
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
	if !controllerutil.ContainsFinalizer(pvc, finalizerPVCAsSource) {
		if pvc.DeletionTimestamp != nil {
			// ensurePVCFinalizer refuses a claim being deleted: this snapshot is never cut.
			s.logf("snapshot %s: cannot add finalizer on claim %s because it is being deleted", req, pvc.Name)
			return reconcile.Result{RequeueAfter: retry}, nil
		}
		controllerutil.AddFinalizer(pvc, finalizerPVCAsSource)
		if err := s.client.Update(ctx, pvc); err != nil {
			return reconcile.Result{}, err
		}
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
	// The cut is point-in-time and instant, as EBS's: what it uploads is counted now, and the
	// data is copied during the upload (upload), from a volume that nothing writes any more
	// and that pvc-as-source-protection keeps until the snapshot is ready.
	volume := s.VolumePath(pv.Spec.CSI.VolumeHandle)
	base := ""
	if h := pv.Annotations[annSourceSnapshot]; h != "" {
		base = s.SnapshotPath(h)
	}
	changed, err := ChangedBytes(volume, base)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("snapshot %s: %w", req, err)
	}

	size := pv.Spec.Capacity[corev1.ResourceStorage]
	created := time.Now()
	content := &snapshotv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: contentName, Annotations: map[string]string{
			annUploadBytes: strconv.FormatInt(changed, 10),
			annSourceNode:  pvc.Annotations[annSelectedNode],
		}},
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
		ReadyToUse:     ptr.To(false),
	}
	if err := s.client.Status().Update(ctx, content); err != nil {
		return reconcile.Result{}, fmt.Errorf("updating %s status: %w", contentName, err)
	}
	vs.Status = &snapshotv1.VolumeSnapshotStatus{
		BoundVolumeSnapshotContentName: &content.Name,
		CreationTime:                   ptr.To(metav1.NewTime(created)),
		ReadyToUse:                     ptr.To(false),
		RestoreSize:                    ptr.To(resource.MustParse(size.String())),
	}
	if err := s.client.Status().Update(ctx, vs); err != nil {
		return reconcile.Result{}, fmt.Errorf("updating snapshot %s status: %w", req, err)
	}
	s.record(Event{Kind: SnapshotCut, Node: pvc.Annotations[annSelectedNode], Object: req, Detail: fmt.Sprintf("%s: %d bytes to upload", handle, changed)})
	return reconcile.Result{RequeueAfter: s.uploadTime(changed, class)}, nil
}

// upload finishes a cut snapshot once its upload time has passed: ready, or failed when asked.
func (s snapshotter) upload(ctx context.Context, vs *snapshotv1.VolumeSnapshot, content *snapshotv1.VolumeSnapshotContent, class *snapshotv1.VolumeSnapshotClass) (reconcile.Result, error) {
	req := vs.Namespace + "/" + vs.Name
	if vs.Status == nil || vs.Status.CreationTime == nil {
		// The cut's status update on the VolumeSnapshot was lost (a conflict): the content's
		// status is the record, as the snapshot-controller's updateSnapshotStatus reads it.
		vs.Status = &snapshotv1.VolumeSnapshotStatus{
			BoundVolumeSnapshotContentName: &content.Name,
			CreationTime:                   ptr.To(metav1.NewTime(time.Unix(0, *content.Status.CreationTime))),
			ReadyToUse:                     ptr.To(false),
		}
		if n := content.Status.RestoreSize; n != nil {
			vs.Status.RestoreSize = resource.NewQuantity(*n, resource.BinarySI)
		}
		if err := s.client.Status().Update(ctx, vs); err != nil {
			return reconcile.Result{}, fmt.Errorf("updating snapshot %s status: %w", req, err)
		}
	}
	if content.Status.Error != nil {
		return reconcile.Result{}, nil // failed for good, as an EBS snapshot in error state
	}
	handle := ptr.Deref(content.Status.SnapshotHandle, "")
	if src := content.Spec.Source.VolumeHandle; src != nil {
		if err := copyTreeOnce(s.VolumePath(*src), s.SnapshotPath(handle)); err != nil {
			return reconcile.Result{}, fmt.Errorf("snapshot %s: copying volume %s: %w", req, *src, err)
		}
	}
	changed, _ := strconv.ParseInt(content.Annotations[annUploadBytes], 10, 64)
	readyAt := time.Unix(0, *content.Status.CreationTime).Add(s.uploadTime(changed, class))
	if wait := time.Until(readyAt); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	node := content.Annotations[annSourceNode]
	failure, err := s.failure(ctx, vs, node)
	if err != nil {
		return reconcile.Result{}, err
	}
	if failure != "" {
		now := metav1.Now()
		content.Status.Error = &snapshotv1.VolumeSnapshotError{Time: &now, Message: ptr.To(failure)}
		if err := s.client.Status().Update(ctx, content); err != nil {
			return reconcile.Result{}, fmt.Errorf("updating %s status: %w", content.Name, err)
		}
		vs.Status.Error = &snapshotv1.VolumeSnapshotError{Time: &now, Message: ptr.To(failure)}
		if err := s.client.Status().Update(ctx, vs); err != nil {
			return reconcile.Result{}, fmt.Errorf("updating snapshot %s status: %w", req, err)
		}
		s.record(Event{Kind: SnapshotFailed, Node: node, Object: req, Detail: handle + ": " + failure})
		return reconcile.Result{}, nil
	}
	content.Status.ReadyToUse = ptr.To(true)
	if err := s.client.Status().Update(ctx, content); err != nil {
		return reconcile.Result{}, fmt.Errorf("updating %s status: %w", content.Name, err)
	}
	vs.Status.ReadyToUse = ptr.To(true)
	if err := s.client.Status().Update(ctx, vs); err != nil {
		return reconcile.Result{}, fmt.Errorf("updating snapshot %s status: %w", req, err)
	}
	if err := s.setPVCFinalizer(ctx, vs.Namespace, *vs.Spec.Source.PersistentVolumeClaimName, finalizerPVCAsSource, false); err != nil {
		return reconcile.Result{}, err
	}
	s.record(Event{Kind: SnapshotReady, Node: node, Object: req, Detail: handle})
	return reconcile.Result{}, nil
}

// failure is the error a snapshot fails with, "" unless AnnotationFailSnapshot is on the
// VolumeSnapshot or on the node its source volume was attached to.
func (s snapshotter) failure(ctx context.Context, vs *snapshotv1.VolumeSnapshot, node string) (string, error) {
	msg, ok := vs.Annotations[AnnotationFailSnapshot]
	if !ok && node != "" {
		n := &corev1.Node{}
		if err := s.client.Get(ctx, client.ObjectKey{Name: node}, n); client.IgnoreNotFound(err) != nil {
			return "", err
		}
		msg, ok = n.Annotations[AnnotationFailSnapshot]
	}
	if !ok {
		return "", nil
	}
	if msg == "" || msg == "true" {
		msg = "snapshot in error state"
	}
	return msg, nil
}

// uploadTime is how long uploading bytes takes at the class's (else the simulator's) rate.
func (s *Sim) uploadTime(bytes int64, class *snapshotv1.VolumeSnapshotClass) time.Duration {
	rate := s.uploadRate
	if v, ok := class.Parameters[ParameterUploadBytesPerSecond]; ok {
		if r, err := strconv.ParseFloat(v, 64); err == nil && r > 0 {
			rate = r
		} else {
			s.logf("VolumeSnapshotClass %s: ignoring %s=%q (want a positive number)", class.Name, ParameterUploadBytesPerSecond, v)
		}
	}
	return UploadTime(bytes, rate)
}

// UploadTime is bytes at rate bytes per second; a rate of 0 or less uploads at once.
func UploadTime(bytes int64, rate float64) time.Duration {
	if rate <= 0 || bytes <= 0 {
		return 0
	}
	return time.Duration(float64(bytes) / rate * float64(time.Second))
}

// ChangedBytes is what an EBS snapshot of the volume at dir uploads, incremental to the
// snapshot at base (a directory; "" for none, a full snapshot): the bytes of every regular
// file that is new or differs from base in size, mtime or mode. This approximates EBS's
// changed blocks at file level: the copier rewrites a changed file whole and leaves an
// unchanged one (and its blocks) alone. Deleted files upload nothing.
func ChangedBytes(dir, base string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if base != "" {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			if old, err := os.Lstat(filepath.Join(base, rel)); err == nil && old.Mode().IsRegular() &&
				old.Size() == fi.Size() && old.ModTime().Equal(fi.ModTime()) && old.Mode() == fi.Mode() {
				return nil
			}
		}
		total += fi.Size()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("counting the changed bytes of %s: %w", dir, err)
	}
	return total, nil
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
	if src := vs.Spec.Source.PersistentVolumeClaimName; src != nil {
		// removeSnapshotFinalizer frees the source PVC first: once the VolumeSnapshot is gone
		// nothing would.
		if err := s.setPVCFinalizer(ctx, vs.Namespace, *src, finalizerPVCAsSource, false); err != nil {
			return reconcile.Result{}, err
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
