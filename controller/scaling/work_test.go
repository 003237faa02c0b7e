package scaling

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// TestIsWork: only runner work makes a node busy; warmpool's own pods, node agents and pods
// that are done or going never do.
func TestIsWork(t *testing.T) {
	owned := func(kind string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: "x", UID: "u", Controller: ptr.To(true)}}
	}
	cacheOp := func(op string) map[string]string {
		// As volumes renders them: the owner's labels plus pool, node and op.
		return map[string]string{nodepools.LabelManagedBy: nodepools.ManagedBy, volumes.LabelPool: "p", volumes.LabelNode: "n", volumes.LabelOp: op}
	}
	for _, tc := range []struct {
		name     string
		pod      corev1.Pod
		work     bool
		relevant bool // a create of it, bound to a node, wakes the controller
	}{
		{name: "runner pod", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: owned("ReplicaSet")}}, work: true, relevant: true},
		{name: "bare runner pod", work: true, relevant: true},
		{name: "finished runner pod", pod: corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded}}, relevant: true},
		{name: "failed runner pod", pod: corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed}}, relevant: true},
		{name: "runner pod being deleted", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: ptr.To(metav1.Now()), Finalizers: []string{"f"}}}, relevant: true},
		{name: "DaemonSet pod", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: owned("DaemonSet")}}, relevant: true},
		{name: "engine DaemonSet pod", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: owned("DaemonSet"), Labels: map[string]string{nodepools.LabelManagedBy: nodepools.ManagedBy}}}, relevant: true},
		{name: "static pod", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{mirrorPodAnnotation: "abc"}}}, relevant: true},
		// Not work, but a placeholder landing on a node wakes its pool: it needs its node's
		// deletion cost (keepwarm.go).
		{name: "placeholder", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: owned("ReplicaSet"), Labels: map[string]string{nodepools.LabelManagedBy: nodepools.ManagedBy, nodepools.LabelPool: "p", nodepools.LabelHeadroom: "true"}}}, relevant: true},
		{name: "guard pod", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: cacheOp(volumes.OpGuard)}}},
		{name: "save pod", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: owned("Job"), Labels: cacheOp(volumes.OpSave)}}},
		{name: "restore pod", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: owned("Job"), Labels: cacheOp(volumes.OpRestore)}}},
		{name: "verify pod", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: owned("Job"), Labels: cacheOp(volumes.OpVerify)}}},
		{name: "cache op pod without managed-by", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{volumes.LabelOp: volumes.OpRestore}}}},
		{name: "other pod managed by warmpool", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{nodepools.LabelManagedBy: nodepools.ManagedBy}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.pod.DeepCopy()
			p.Spec.NodeName = "n"
			if got := isWork(p); got != tc.work {
				t.Errorf("isWork = %t, want %t", got, tc.work)
			}
			if got := podMoved.Create(event.CreateEvent{Object: p}); got != tc.relevant {
				t.Errorf("a bound pod created wakes the controller: %t, want %t", got, tc.relevant)
			}
		})
	}
}
