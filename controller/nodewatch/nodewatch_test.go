package nodewatch

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

func node() *corev1.Node {
	at := metav1.NewTime(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{"warmpool.io/pool": "p"}, ResourceVersion: "1"},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "warmpool.io/cache-restore", Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: at}},
		},
	}
}

func TestChanged(t *testing.T) {
	cases := []struct {
		name   string
		change func(n *corev1.Node)
		want   bool
	}{
		{"heartbeat only", func(n *corev1.Node) {
			n.ResourceVersion = "2"
			n.Status.Conditions[0].LastHeartbeatTime = metav1.NewTime(n.Status.Conditions[0].LastHeartbeatTime.Add(10 * time.Second))
			n.Status.Images = []corev1.ContainerImage{{Names: []string{"pause"}}}
		}, false},
		{"ready flips", func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }, true},
		{"taint removed", func(n *corev1.Node) { n.Spec.Taints = nil }, true},
		{"label added", func(n *corev1.Node) { n.Labels["x"] = "y" }, true},
		{"annotation added", func(n *corev1.Node) { n.Annotations = map[string]string{"warmpool.io/save-outcome": "saved"} }, true},
		{"deleting", func(n *corev1.Node) { now := metav1.Now(); n.DeletionTimestamp = &now }, true},
		{"finalizer", func(n *corev1.Node) { n.Finalizers = []string{"karpenter.sh/termination"} }, true},
		{"allocatable", func(n *corev1.Node) { n.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse("8") }, true},
		{"new condition", func(n *corev1.Node) {
			n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionTrue})
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old, cur := node(), node()
			tc.change(cur)
			if got := Changed.Update(event.UpdateEvent{ObjectOld: old, ObjectNew: cur}); got != tc.want {
				t.Errorf("Changed = %v, want %v", got, tc.want)
			}
		})
	}
	if !Changed.Create(event.CreateEvent{Object: node()}) || !Changed.Delete(event.DeleteEvent{Object: node()}) {
		t.Error("creates and deletes must pass")
	}
}

func TestReady(t *testing.T) {
	with := func(conds ...corev1.NodeCondition) *corev1.Node {
		return &corev1.Node{Status: corev1.NodeStatus{Conditions: conds}}
	}
	for name, tt := range map[string]struct {
		node *corev1.Node
		want bool
	}{
		"Ready True":             {with(corev1.NodeCondition{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse}, corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue}), true},
		"Ready False":            {with(corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionFalse}), false},
		"Ready Unknown":          {with(corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionUnknown}), false},
		"no Ready condition yet": {with(), false},
	} {
		if got := Ready(tt.node); got != tt.want {
			t.Errorf("%s: Ready %v, want %v", name, got, tt.want)
		}
	}
}
