package scaling

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/nodepools"
)

func poolNode() *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{nodepools.LabelPool: "p"},
			Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0"}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
}

// TestNodeChanged: what an evaluation reads of a node wakes its pool; what the cluster rewrites
// for itself does not.
func TestNodeChanged(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(n *corev1.Node)
		want   bool
	}{
		{"nothing", func(*corev1.Node) {}, false},
		{"the controller-manager's TTL annotation", func(n *corev1.Node) { n.Annotations["node.alpha.kubernetes.io/ttl"] = "30" }, false},
		{"a taint", func(n *corev1.Node) { n.Spec.Taints = []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}} }, false},
		{"another label", func(n *corev1.Node) { n.Labels["topology.kubernetes.io/zone"] = "a" }, false},
		{"the pool label", func(n *corev1.Node) { n.Labels[nodepools.LabelPool] = "q" }, true},
		{"out of the pool", func(n *corev1.Node) { delete(n.Labels, nodepools.LabelPool) }, true},
		{"deleted", func(n *corev1.Node) { n.DeletionTimestamp = &metav1.Time{} }, true},
		{"not Ready", func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }, true},
		{"allocatable", func(n *corev1.Node) { n.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse("8") }, true},
		{"restore verdict", func(n *corev1.Node) { n.Annotations[enginecache.AnnotationRestore] = "warm" }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, cur := poolNode(), poolNode()
			tc.change(cur)
			if got := nodeChanged.Update(event.UpdateEvent{ObjectOld: old, ObjectNew: cur}); got != tc.want {
				t.Errorf("passes %t, want %t", got, tc.want)
			}
		})
	}
	other := poolNode()
	delete(other.Labels, nodepools.LabelPool)
	if nodeChanged.Create(event.CreateEvent{Object: other}) {
		t.Error("a node in no pool passes")
	}
	if !nodeChanged.Create(event.CreateEvent{Object: poolNode()}) {
		t.Error("a new node of a pool does not pass")
	}
}

// TestHeadroomChanged: what an evaluation reads of its headroom Deployment wakes the pool; the
// status the Deployment controller keeps rewriting does not.
func TestHeadroomChanged(t *testing.T) {
	base := func() *appsv1.Deployment {
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "warmpool-headroom-p", Generation: 3, ResourceVersion: "10",
				Labels:      map[string]string{nodepools.LabelPool: "p"},
				Annotations: map[string]string{AnnotationState: "s1"}},
			Spec:   appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 2},
		}
	}
	for _, tc := range []struct {
		name   string
		change func(d *appsv1.Deployment)
		want   bool
	}{
		{"the status", func(d *appsv1.Deployment) {
			d.Status.ReadyReplicas, d.Status.AvailableReplicas, d.Status.UpdatedReplicas = 2, 2, 2
		}, false},
		{"a resync", func(*appsv1.Deployment) {}, false},
		{"the spec", func(d *appsv1.Deployment) { d.Generation, d.Spec.Replicas = 4, ptr.To[int32](7) }, true},
		{"the recorded state", func(d *appsv1.Deployment) { d.Annotations[AnnotationState] = "s2" }, true},
		{"a label", func(d *appsv1.Deployment) { d.Labels["team"] = "ci" }, true},
		{"deletion started", func(d *appsv1.Deployment) { d.DeletionTimestamp = &metav1.Time{} }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, cur := base(), base()
			tc.change(cur)
			cur.ResourceVersion = "11"
			if got := headroomChanged.Update(event.UpdateEvent{ObjectOld: old, ObjectNew: cur}); got != tc.want {
				t.Errorf("update passed: %v, want %v", got, tc.want)
			}
		})
	}
	if !headroomChanged.Create(event.CreateEvent{Object: base()}) || !headroomChanged.Delete(event.DeleteEvent{Object: base()}) {
		t.Error("a headroom Deployment created or deleted did not wake its pool")
	}
}
