package nodesim_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/e2e/nodesim"
)

func TestChangedBytes(t *testing.T) {
	base, dir := t.TempDir(), t.TempDir()
	write := func(root, rel, data string, mtime time.Time) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, root := range []string{base, dir} {
		write(root, "same/a", "unchanged!", t0)          // 10 bytes, identical
		write(root, "touched", "same size", t0)          // mtime differs below
		write(root, "grown", "small", t0)                // size differs below
		write(root, "gone-from-dir", "deleted file", t0) // removed below
	}
	write(dir, "touched", "same size", t0.Add(time.Hour))
	write(dir, "grown", "now larger", t0)
	write(dir, "new/file", "brand new", t0)
	if err := os.Remove(filepath.Join(dir, "gone-from-dir")); err != nil {
		t.Fatal(err)
	}

	got, err := nodesim.ChangedBytes(dir, base)
	if err != nil {
		t.Fatal(err)
	}
	// touched (9) + grown (10) + new/file (9); the unchanged and the deleted files upload nothing.
	if want := int64(9 + 10 + 9); got != want {
		t.Errorf("ChangedBytes incremental = %d, want %d", got, want)
	}
	full, err := nodesim.ChangedBytes(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(10 + 9 + 10 + 9); full != want {
		t.Errorf("ChangedBytes without a base = %d, want every byte, %d", full, want)
	}
}

func TestUploadTime(t *testing.T) {
	for _, tc := range []struct {
		bytes int64
		rate  float64
		want  time.Duration
	}{
		{128 << 20, 128 << 20, time.Second},
		{1 << 30, 128 << 20, 8 * time.Second},
		{0, 1, 0},
		{100, 0, 0},  // no rate: ready at the cut
		{100, -1, 0}, // negative: ready at the cut
	} {
		if got := nodesim.UploadTime(tc.bytes, tc.rate); got != tc.want {
			t.Errorf("UploadTime(%d, %v) = %s, want %s", tc.bytes, tc.rate, got, tc.want)
		}
	}
}

// TestSnapshotsAreCutThenUploaded: against a real kube-apiserver, nodesim's CSI parts do what
// external-provisioner, the snapshot-controller and EBS do for a save volume: a snapshot is cut
// at once and ready only after its upload (here: a class so slow it never is), its source PVC
// protected meanwhile; a volume cloned from a ready snapshot uploads only what changed since;
// a clone of a snapshot that does not exist stays Pending; and a snapshot of a node annotated
// to fail does, after its cut, and is never ready.
func TestSnapshotsAreCutThenUploaded(t *testing.T) {
	ctx := t.Context()
	api := cluster.StartTestAPIServer(t)
	sim, err := nodesim.Start(ctx, nodesim.Options{Config: api.Config, Root: t.TempDir(), WarmpoolBinary: "/nonexistent/warmpool"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sim.Stop(); err != nil {
			t.Errorf("stopping nodesim: %v", err)
		}
	})
	t.Cleanup(func() {
		for _, e := range sim.Events() {
			t.Log(e)
		}
	})
	kube := api.Client
	for _, o := range []client.Object{
		&storagev1.StorageClass{
			ObjectMeta: metav1.ObjectMeta{Name: "sim"}, Provisioner: nodesim.Driver,
			ReclaimPolicy: ptr.To(corev1.PersistentVolumeReclaimDelete), VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
		},
		&snapshotv1.VolumeSnapshotClass{ObjectMeta: metav1.ObjectMeta{Name: "fast"}, Driver: nodesim.Driver, DeletionPolicy: snapshotv1.VolumeSnapshotContentDelete},
		// One byte a second: no upload of these test files ends while the test looks.
		&snapshotv1.VolumeSnapshotClass{ObjectMeta: metav1.ObjectMeta{Name: "slow"}, Driver: nodesim.Driver, DeletionPolicy: snapshotv1.VolumeSnapshotContentDelete,
			Parameters: map[string]string{nodesim.ParameterUploadBytesPerSecond: "1"}},
	} {
		if err := kube.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	createNode(t, kube, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "csi-node"}})
	createNode(t, kube, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "failing-node", Annotations: map[string]string{nodesim.AnnotationFailSnapshot: "EBS snapshot in error state"}}})

	// A full save volume: empty, then written by "the copier".
	vol1 := provision(t, kube, sim, "save-1", "csi-node", "")
	writeTree(t, vol1, map[string]string{"a": strings.Repeat("a", 1000), "b": strings.Repeat("b", 500)})
	snap1 := snapshot(t, kube, "snap-1", "save-1", "fast")
	poll(t, "snap-1 ready", func(ctx context.Context) (bool, error) {
		return ready(ctx, kube, snap1)
	})
	if got := uploadBytes(t, kube, snap1); got != 1500 {
		t.Errorf("full snapshot uploads %d bytes, want all 1500", got)
	}
	poll(t, "save-1's pvc-as-source-protection released once snap-1 is ready", func(ctx context.Context) (bool, error) {
		p := &corev1.PersistentVolumeClaim{}
		err := kube.Get(ctx, client.ObjectKey{Namespace: "default", Name: "save-1"}, p)
		return err == nil && !hasFinalizer(p.Finalizers, "snapshot.storage.kubernetes.io/pvc-as-source-protection"), err
	})

	// An incremental save volume cloned from snap-1: one file changes, one is added.
	vol2 := provision(t, kube, sim, "save-2", "csi-node", "snap-1")
	if data, err := os.ReadFile(filepath.Join(vol2, "a")); err != nil || len(data) != 1000 {
		t.Fatalf("the clone of snap-1 does not hold its data: %v", err)
	}
	writeTree(t, vol2, map[string]string{"b": strings.Repeat("B", 600), "c": "cc"})
	snap2 := snapshot(t, kube, "snap-2", "save-2", "slow")
	poll(t, "snap-2 cut", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKeyFromObject(snap2), snap2)
		return err == nil && snap2.Status != nil && snap2.Status.CreationTime != nil, err
	})
	if ptr.Deref(snap2.Status.ReadyToUse, true) || snap2.Status.RestoreSize == nil {
		t.Fatalf("snap-2 status at its cut %+v, want readyToUse false and a restoreSize", snap2.Status)
	}
	if got := uploadBytes(t, kube, snap2); got != 602 {
		t.Errorf("incremental snapshot uploads %d bytes, want 602 (the changed and the added file)", got)
	}
	// Deleted at the cut, the source volume stays while its snapshot uploads.
	if err := kube.Delete(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "save-2"}}); err != nil {
		t.Fatal(err)
	}
	p := &corev1.PersistentVolumeClaim{}
	if err := kube.Get(ctx, client.ObjectKey{Namespace: "default", Name: "save-2"}, p); err != nil || p.DeletionTimestamp == nil ||
		!hasFinalizer(p.Finalizers, "snapshot.storage.kubernetes.io/pvc-as-source-protection") {
		t.Fatalf("save-2 after its deletion: %v, finalizers %v", err, p.Finalizers)
	}

	// A clone of a snapshot that does not exist is never provisioned.
	missing := pvc("save-missing", "csi-node", "no-such-snapshot")
	if err := kube.Create(ctx, missing); err != nil {
		t.Fatal(err)
	}

	// A snapshot of the failing node fails after its cut.
	provision(t, kube, sim, "save-3", "failing-node", "")
	snap3 := snapshot(t, kube, "snap-3", "save-3", "fast")
	poll(t, "snap-3 failed", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKeyFromObject(snap3), snap3)
		return err == nil && snap3.Status != nil && snap3.Status.Error != nil, err
	})
	if snap3.Status.CreationTime == nil || ptr.Deref(snap3.Status.ReadyToUse, true) || !strings.Contains(ptr.Deref(snap3.Status.Error.Message, ""), "EBS snapshot in error state") {
		t.Errorf("snap-3 status %+v, want cut, not ready, with the node's error", snap3.Status)
	}
	if n := sim.Count(nodesim.SnapshotFailed, "failing-node"); n != 1 {
		t.Errorf("%d SnapshotFailed events for failing-node, want 1", n)
	}

	if err := kube.Get(ctx, client.ObjectKeyFromObject(missing), missing); err != nil {
		t.Fatal(err)
	}
	if missing.Spec.VolumeName != "" {
		t.Errorf("a clone of a missing snapshot was provisioned: %s", missing.Spec.VolumeName)
	}
	if err := kube.Get(ctx, client.ObjectKeyFromObject(snap2), snap2); err != nil || ptr.Deref(snap2.Status.ReadyToUse, false) {
		t.Errorf("snap-2 ready before its upload could end: %v", err)
	}
}

func pvc(name, node, source string) *corev1.PersistentVolumeClaim {
	p := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Annotations: map[string]string{"volume.kubernetes.io/selected-node": node}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ptr.To("sim"),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if source != "" {
		p.Spec.DataSource = &corev1.TypedLocalObjectReference{APIGroup: ptr.To(snapshotv1.GroupName), Kind: "VolumeSnapshot", Name: source}
	}
	return p
}

// provision creates a PVC and waits for nodesim's PV, then binds them as kube-controller-manager's
// PV controller would (this test runs none), and returns the volume's directory.
func provision(t *testing.T, kube client.Client, sim *nodesim.Sim, name, node, source string) string {
	t.Helper()
	p := pvc(name, node, source)
	if err := kube.Create(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	pv := &corev1.PersistentVolume{}
	poll(t, "PV of "+name, func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKey{Name: "pvc-" + string(p.UID)}, pv)
		return err == nil, client.IgnoreNotFound(err)
	})
	p.Spec.VolumeName = pv.Name
	if err := kube.Update(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	return sim.VolumePath(pv.Spec.CSI.VolumeHandle)
}

func snapshot(t *testing.T, kube client.Client, name, source, class string) *snapshotv1.VolumeSnapshot {
	t.Helper()
	s := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: snapshotv1.VolumeSnapshotSpec{
			Source: snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To(source)}, VolumeSnapshotClassName: ptr.To(class),
		},
	}
	if err := kube.Create(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	return s
}

func ready(ctx context.Context, kube client.Client, s *snapshotv1.VolumeSnapshot) (bool, error) {
	err := kube.Get(ctx, client.ObjectKeyFromObject(s), s)
	return err == nil && s.Status != nil && ptr.Deref(s.Status.ReadyToUse, false), err
}

// uploadBytes reads what nodesim recorded as the snapshot's upload.
func uploadBytes(t *testing.T, kube client.Client, s *snapshotv1.VolumeSnapshot) int64 {
	t.Helper()
	c := &snapshotv1.VolumeSnapshotContent{}
	if err := kube.Get(t.Context(), client.ObjectKey{Name: *s.Status.BoundVolumeSnapshotContentName}, c); err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(c.Annotations["nodesim.warmpool.io/upload-bytes"], 10, 64)
	if err != nil {
		t.Fatalf("content %s annotations %v: %v", c.Name, c.Annotations, err)
	}
	return n
}

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for rel, data := range files {
		if err := os.WriteFile(filepath.Join(root, rel), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func hasFinalizer(list []string, f string) bool {
	for _, x := range list {
		if x == f {
			return true
		}
	}
	return false
}
