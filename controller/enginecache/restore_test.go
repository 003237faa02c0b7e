package enginecache_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// newSnapshot creates a VolumeSnapshot as a save would have, then gives it the status the
// snapshotter would (ready or not, taken at created).
func (e *env) newSnapshot(name, pool, arch, version string, created time.Time, ready bool) {
	e.T.Helper()
	s := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: name, Labels: map[string]string{
			nodepools.LabelManagedBy: nodepools.ManagedBy, volumes.LabelPool: pool, volumes.LabelArch: arch,
			volumes.LabelEngineVersion: version, volumes.LabelSourceNode: "old-" + name,
		}},
		Spec: snapshotv1.VolumeSnapshotSpec{Source: snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To("warmpool-save-old-" + name)}},
	}
	if err := kube.Create(e.T.Context(), s); err != nil {
		e.T.Fatal(err)
	}
	e.setSnapshotStatus(name, ready, created)
}

func startupTaint() corev1.Taint { return nodepools.StartupTaint }

// waitReleased waits for the startup taint to go, and checks every other taint stayed.
func waitReleased(t testing.TB, node string, keep ...corev1.Taint) {
	t.Helper()
	eventually(t, "startup taint removed from "+node, func() error {
		n := &corev1.Node{}
		get(t, node, "", n)
		for _, tt := range n.Spec.Taints {
			if tt.Key == nodepools.StartupTaintKey {
				return fmt.Errorf("still tainted")
			}
		}
		for _, k := range keep {
			if !slices.ContainsFunc(n.Spec.Taints, func(tt corev1.Taint) bool { return tt.MatchTaint(&k) }) {
				return fmt.Errorf("taint %v was removed too", k)
			}
		}
		return nil
	})
}

func TestRestoreWaitsForReadyNode(t *testing.T) {
	pool, node := unique("notready"), unique("notready-node")
	newEnv(t, poolYAML(pool))
	// A Node that registered but is not Ready yet (no Ready condition).
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{
			nodepools.LabelPool: pool, corev1.LabelArchStable: "amd64", testLabel: "true",
		}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{startupTaint()}},
	}
	if err := kube.Create(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	// With no snapshot, a Ready node would be released at once: the taint staying shows the wait.
	consistently(t, "a node that is not Ready keeps its startup taint", func() error {
		get(t, node, "", n)
		if !slices.ContainsFunc(n.Spec.Taints, func(tt corev1.Taint) bool { return tt.Key == nodepools.StartupTaintKey }) {
			return fmt.Errorf("released before Ready")
		}
		return nil
	})
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if err := kube.Status().Update(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	waitReleased(t, node)
	waitNodeEvent(t, node, enginecache.ReasonColdStart, "no-snapshot")
}

func TestRestoreWithoutSnapshotAPIStartsCold(t *testing.T) {
	pool, node := unique("nosnapapi"), unique("nosnapapi-node")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "warmpool-nosnap-"}}
	if err := kube.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	// What operator.New registers when the cluster serves no VolumeSnapshot API.
	startControllers(t, ns.Name, clocktesting.NewFakeClock(time.Now()), configHeader+poolYAML(pool),
		func(cc *enginecache.Controllers, mgr ctrl.Manager) error { return cc.Register(mgr) },
		func(o *enginecache.Options) { o.NoSnapshotAPI = true })
	newNode(t, node, pool, "amd64", startupTaint())
	waitReleased(t, node)
	waitNodeEvent(t, node, enginecache.ReasonColdStart, enginecache.ColdNoSnapshotAPI)
}
