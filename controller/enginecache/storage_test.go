package enginecache_test

import (
	"context"
	"fmt"
	"slices"
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
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/storagecheck"
)

// testDriver is the CSI driver of the "sim" classes poolYAML names.
const testDriver = "csi.test.warmpool.io"

// createStorageClasses makes the classes every test pool uses: the StorageClass "sim" and the
// VolumeSnapshotClass "sim-snap" of testDriver, as a cluster with a CSI driver has them.
func createStorageClasses(kube client.Client) {
	ctx := context.Background()
	for _, o := range []client.Object{
		&storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "sim"}, Provisioner: testDriver,
			VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer)},
		&snapshotv1.VolumeSnapshotClass{ObjectMeta: metav1.ObjectMeta{Name: "sim-snap"}, Driver: testDriver, DeletionPolicy: snapshotv1.VolumeSnapshotContentDelete},
	} {
		if err := kube.Create(ctx, o); err != nil {
			panic(fmt.Sprintf("creating %T %s: %v", o, o.GetName(), err))
		}
	}
}

// registerCSIDriver plays the kubelet registering the CSI node plugin of testDriver on a node.
func registerCSIDriver(t testing.TB, node string) {
	t.Helper()
	n := &storagev1.CSINode{
		ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{testLabel: "true"}},
		Spec:       storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: testDriver, NodeID: "i-" + node}}},
	}
	if err := kube.Create(t.Context(), n); err != nil {
		t.Fatal(err)
	}
}

// cleanupStorage removes the CSINodes and StorageClasses tests made (cluster-scoped).
func cleanupStorage(ctx context.Context) {
	_ = kube.DeleteAllOf(ctx, &storagev1.CSINode{}, client.HasLabels{testLabel})
	_ = kube.DeleteAllOf(ctx, &storagev1.StorageClass{}, client.HasLabels{testLabel})
}

// newUnregisteredNode is newNode on which the CSI node plugin has not registered (yet).
func newUnregisteredNode(t testing.TB, name, pool string, mutate func(*corev1.Node), taints ...corev1.Taint) {
	t.Helper()
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Finalizers: []string{karpv1.TerminationFinalizer}, Labels: map[string]string{
			nodepools.LabelPool: pool, corev1.LabelArchStable: "amd64", corev1.LabelHostname: name, testLabel: "true",
		}},
		Spec: corev1.NodeSpec{Taints: taints},
	}
	if err := kube.Create(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
	}}
	if mutate != nil {
		mutate(n)
	}
	if err := kube.Status().Update(t.Context(), n); err != nil {
		t.Fatal(err)
	}
}

// newSnapshotOf creates a ready snapshot of pool (amd64) whose save counted bytes of cache
// (volumes.AnnotationBytes, as the save records it), with a restoreSize of 20Gi.
func (e *env) newSnapshotOf(name, pool string, bytes int64) {
	e.T.Helper()
	s := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: name, Labels: map[string]string{
			nodepools.LabelManagedBy: nodepools.ManagedBy, volumes.LabelPool: pool, volumes.LabelArch: "amd64",
			volumes.LabelEngineVersion: engineVersion, volumes.LabelSourceNode: "old-" + name,
		}, Annotations: map[string]string{volumes.AnnotationBytes: fmt.Sprint(bytes)}},
		Spec: snapshotv1.VolumeSnapshotSpec{Source: snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To("warmpool-save-old-" + name)}},
	}
	if err := kube.Create(e.T.Context(), s); err != nil {
		e.T.Fatal(err)
	}
	e.setSnapshotStatus(name, true, e.clk.Now().Add(-time.Hour))
}

// The restore volume is not made before the node's CSINode lists the driver; the wait is part
// of the budget, and a driver that never registers starts the node cold at the deadline.
func TestRestoreWaitsForTheCSIDriver(t *testing.T) {
	pool := unique("csiwait")
	late, never := unique("csi-late"), unique("csi-never")
	e := newEnv(t, poolYAML(pool))
	e.newSnapshot("cache", pool, "amd64", engineVersion, e.clk.Now().Add(-time.Hour), true)

	newUnregisteredNode(t, late, pool, nil, startupTaint())
	newUnregisteredNode(t, never, pool, nil, startupTaint())
	consistently(t, "no restore volume before the driver registers", func() error {
		for _, n := range []string{late, never} {
			if exists(t, volumes.RestoreName(n), e.Namespace, &corev1.PersistentVolumeClaim{}) {
				return fmt.Errorf("restore volume made for %s", n)
			}
			node := &corev1.Node{}
			get(t, n, "", node)
			if !slices.ContainsFunc(node.Spec.Taints, func(tt corev1.Taint) bool { return tt.Key == nodepools.StartupTaintKey }) {
				return fmt.Errorf("%s released", n)
			}
		}
		return nil
	})
	registerCSIDriver(t, late)
	e.waitExists(volumes.RestoreName(late), &corev1.PersistentVolumeClaim{})

	// 20Gi (restoreSize) at 125 MiB/s: 163.84 s, with headroom 245.76 s, plus 2 min.
	e.clk.Step(6*time.Minute + 6*time.Second)
	touch(t, never)
	waitReleased(t, never)
	waitNodeEvent(t, never, enginecache.ReasonColdStart, enginecache.ColdNoCSIDriver, "has no CSINode", testDriver, "waited 6m", "the restore's whole budget")
	if exists(t, volumes.RestoreName(never), e.Namespace, &corev1.PersistentVolumeClaim{}) {
		t.Fatal("a restore volume was made for a node without the CSI driver")
	}
	waitMetric(t, "warmpool_cache_storage_check_failures_total", map[string]string{"pool": pool, "op": "restore", "check": storagecheck.CheckCSINode}, 1)
}

// A restore class that cannot work starts each node cold at once, reported once per node
// however often the node is looked at; a snapshot larger than the node's disk likewise.
func TestRestoreRefusedForStorageReportedOnce(t *testing.T) {
	intree := unique("intree-gp2")
	if err := kube.Create(t.Context(), &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: intree, Labels: map[string]string{testLabel: "true"}}, Provisioner: "kubernetes.io/aws-ebs",
	}); err != nil {
		t.Fatal(err)
	}
	bad, small := unique("badclass"), unique("smalldisk")
	e := newEnv(t, poolYAMLWith(bad, "restoreStorageClassName: "+intree), poolYAML(small))
	e.newSnapshot("cache", bad, "amd64", engineVersion, e.clk.Now().Add(-time.Hour), true)
	e.newSnapshot("cache-small", small, "amd64", engineVersion, e.clk.Now().Add(-time.Hour), true)

	node := unique("badclass-node")
	newNode(t, node, bad, "amd64", startupTaint())
	waitReleased(t, node)
	waitNodeEvent(t, node, enginecache.ReasonColdStart, enginecache.ColdStorage, storagecheck.CheckNotCSI, "kubernetes.io/aws-ebs", "cache.restoreStorageClassName")
	for range 3 {
		touch(t, node)
	}
	consistently(t, "one Event for the node", func() error {
		if n := len(nodeEvents(t, node, enginecache.ReasonColdStart)); n != 1 {
			return fmt.Errorf("%d ColdStart Events", n)
		}
		return nil
	})
	if got := metric(t, "warmpool_cache_storage_check_failures_total", map[string]string{"pool": bad, "op": "restore", "check": storagecheck.CheckNotCSI}); got != 1 {
		t.Fatalf("storage check failures %v, want 1", got)
	}
	if exists(t, volumes.RestoreName(node), e.Namespace, &corev1.PersistentVolumeClaim{}) {
		t.Fatal("a restore volume was made in an in-tree class")
	}

	// The snapshot's 20Gi on a node with 16Gi of ephemeral storage.
	tiny := unique("smalldisk-node")
	newUnregisteredNode(t, tiny, small, func(n *corev1.Node) {
		n.Status.Allocatable = corev1.ResourceList{corev1.ResourceEphemeralStorage: resource.MustParse("16Gi")}
	}, startupTaint())
	registerCSIDriver(t, tiny)
	waitReleased(t, tiny)
	waitNodeEvent(t, tiny, enginecache.ReasonColdStart, enginecache.ColdNodeDisk, "holds 20Gi", "16Gi of NVMe")
	waitMetric(t, "warmpool_cache_storage_check_failures_total", map[string]string{"pool": small, "op": "restore", "check": storagecheck.CheckNodeDisk}, 1)
}

// A save class that EC2 would refuse for an empty volume is reported before any volume is made,
// and the node goes without its cache at once, once.
func TestSaveRefusedForStorage(t *testing.T) {
	initRate := unique("gp3-init")
	if err := kube.Create(t.Context(), &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: initRate, Labels: map[string]string{testLabel: "true"}}, Provisioner: testDriver,
		Parameters: map[string]string{"volumeInitializationRate": "300"},
	}); err != nil {
		t.Fatal(err)
	}
	pool, node := unique("savebad"), unique("savebad-node")
	e := newEnv(t, strings.Replace(poolYAML(pool), "storageClassName: sim", "storageClassName: "+initRate, 1))
	newNode(t, node, pool, "amd64", runnerTaint(pool))
	newNodeClaim(t, node, pool, nil)
	e.newEnginePod(node, pool)
	commit(t, node)
	runGuardOf(e, node)
	e.finishEviction(node)
	waitNodeEvent(t, node, enginecache.ReasonLost, "storage-misconfigured", storagecheck.CheckInitRate, "issue #2691")
	e.waitGone(volumes.GuardName(node), &corev1.Pod{})
	if err := e.noSaveObjects(node); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, "warmpool_cache_storage_check_failures_total", map[string]string{"pool": pool, "op": "save", "check": storagecheck.CheckInitRate}, 1)
	if n := len(nodeEvents(t, node, enginecache.ReasonLost)); n != 1 {
		t.Fatalf("%d Events, want one", n)
	}
}

// runGuardOf plays the kubelet starting a node's guard pod (the engine is stopped only once it
// runs). A local function, not an env method: the save tests own the guard's helpers.
var runGuardOf = func(e *env, node string) {
	e.T.Helper()
	g := &corev1.Pod{}
	e.waitExists(volumes.GuardName(node), g)
	eventually(e.T, "guard running", func() error {
		if err := kube.Get(e.T.Context(), client.ObjectKeyFromObject(g), g); err != nil {
			return err
		}
		g.Status.Phase = corev1.PodRunning
		return kube.Status().Update(e.T.Context(), g)
	})
}

// poolYAMLWith is poolYAML with extra fields in the cache section.
func poolYAMLWith(name, cacheFields string) string {
	return strings.Replace(poolYAML(name), "retention: {keep: 2, maxAge: 168h}}", "retention: {keep: 2, maxAge: 168h}, "+cacheFields+"}", 1)
}

// deletePod deletes a pod of the test namespace at once, if it exists.
func (e *env) deletePod(name string) {
	e.T.Helper()
	if err := kube.Delete(e.T.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: name}}, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
		e.T.Fatal(err)
	}
}
