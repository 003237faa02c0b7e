package scaling

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// TestNodeCache: what a node's restore verdict and its history say of its cache.
func TestNodeCache(t *testing.T) {
	for _, tc := range []struct {
		name    string
		verdict string // "" : no annotation
		worked  bool
		want    policy.NodeCache
	}{
		{"started cold, or still restoring", "", false, policy.CacheCold},
		{"the engine discarded the restored copy", volumes.ResultWiped, false, policy.CacheCold},
		{"copied, the engine's answer due", "verifying", false, policy.CacheRestored},
		{"copied, the engine never answered", "unverified", false, policy.CacheRestored},
		{"the engine kept the restored cache", volumes.ResultWarm, false, policy.CacheWarm},
		{"ran jobs on a cold start", "", true, policy.CacheWorked},
		{"ran jobs after its restore was wiped", volumes.ResultWiped, true, policy.CacheWorked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &corev1.Node{}
			if tc.verdict != "" {
				n.Annotations = map[string]string{enginecache.AnnotationRestore: tc.verdict}
			}
			if got := nodeCache(n, tc.worked); got != tc.want {
				t.Errorf("nodeCache = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestMemberObserve: which pods on a node make it one that ran jobs, and which are its
// placeholders. A runner that finished or is going still ran there; warmpool's own pods and
// node agents did not run jobs, and another pool's placeholder is not this pool's.
func TestMemberObserve(t *testing.T) {
	placeholder := func(pool, ns string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Labels: map[string]string{
			nodepools.LabelManagedBy: nodepools.ManagedBy, nodepools.LabelPool: pool, nodepools.LabelHeadroom: "true"}}}
	}
	deleting := placeholder("p", "warmpool")
	deleting.DeletionTimestamp = ptr.To(metav1.Now())
	for _, tc := range []struct {
		name        string
		pod         *corev1.Pod
		worked      bool
		placeholder bool
	}{
		{"running runner", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}, true, false},
		{"finished runner", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded}}, true, false},
		{"runner being deleted", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: ptr.To(metav1.Now())}}, true, false},
		{"DaemonSet pod", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{{Kind: "DaemonSet"}}}}, false, false},
		{"restore pod", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{volumes.LabelOp: volumes.OpRestore}}}, false, false},
		{"the pool's placeholder", placeholder("p", "warmpool"), false, true},
		{"a placeholder being deleted", deleting, false, false},
		{"another pool's placeholder", placeholder("q", "warmpool"), false, false},
		{"a placeholder in another namespace", placeholder("p", "other"), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m member
			m.observe(tc.pod, "p", "warmpool")
			if m.worked != tc.worked || (len(m.placeholders) == 1) != tc.placeholder {
				t.Errorf("worked %t, placeholders %d; want worked %t, placeholder %t", m.worked, len(m.placeholders), tc.worked, tc.placeholder)
			}
		})
	}
}

// TestPlaceholderBoundWakes: a placeholder landing on a node wakes its pool (its deletion cost
// is due); its other changes (status, its cost being written) do not.
func TestPlaceholderBoundWakes(t *testing.T) {
	pending := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{nodepools.LabelHeadroom: "true", nodepools.LabelPool: "p"}}}
	bound := pending.DeepCopy()
	bound.Spec.NodeName = "n"
	costed := bound.DeepCopy()
	costed.Annotations = map[string]string{policy.AnnotationDeletionCost: "5"}
	running := costed.DeepCopy()
	running.Status.Phase = corev1.PodRunning
	for _, tc := range []struct {
		name     string
		old, cur *corev1.Pod
		want     bool
	}{
		{"bound", pending, bound, true},
		{"its cost written", bound, costed, false},
		{"Running", costed, running, false},
	} {
		if got := podMoved.Update(event.UpdateEvent{ObjectOld: tc.old, ObjectNew: tc.cur}); got != tc.want {
			t.Errorf("%s: wakes %t, want %t", tc.name, got, tc.want)
		}
	}
	if podMoved.Create(event.CreateEvent{Object: pending}) {
		t.Errorf("a pending placeholder created wakes the controller")
	}
}
