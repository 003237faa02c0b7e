package nodesim

import (
	"errors"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestAdmitAsTheKubelet(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{"pool": "runners"}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{
			{Key: "karpenter.sh/disrupted", Effect: corev1.TaintEffectNoSchedule},
		}},
		Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi"), corev1.ResourcePods: resource.MustParse("3"),
		}},
	}
	pod := func(cpu, mem string) *corev1.Pod {
		p := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}}
		req := corev1.ResourceList{}
		if cpu != "" {
			req[corev1.ResourceCPU] = resource.MustParse(cpu)
		}
		if mem != "" {
			req[corev1.ResourceMemory] = resource.MustParse(mem)
		}
		p.Spec.Containers[0].Resources.Requests = req
		return p
	}
	withInit := pod("100m", "")
	withInit.Spec.InitContainers = []corev1.Container{{Name: "tools", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m")}}}}
	noExecute := node.DeepCopy()
	noExecute.Spec.Taints = append(noExecute.Spec.Taints, corev1.Taint{Key: "node.kubernetes.io/unreachable", Effect: corev1.TaintEffectNoExecute})
	gpu := func(n string) *corev1.Pod {
		p := pod("", "")
		p.Spec.Containers[0].Resources.Requests["example.com/gpu"] = resource.MustParse(n)
		return p
	}
	withGPU := node.DeepCopy()
	withGPU.Status.Allocatable["example.com/gpu"] = resource.MustParse("1")
	affinity := pod("", "")
	affinity.Spec.NodeSelector = map[string]string{"pool": "builders"}

	for _, tc := range []struct {
		name       string
		pod        *corev1.Pod
		node       *corev1.Node
		others     []*corev1.Pod
		reason     string
		msgContain string
	}{
		{name: "fits", pod: pod("1", "1Gi"), others: []*corev1.Pod{pod("500m", "1Gi")}},
		{name: "no requests on a full node's cpu", pod: pod("", ""), others: []*corev1.Pod{pod("2", "")}},
		{name: "admitted under the disrupted NoSchedule taint", pod: pod("100m", "")},
		{name: "out of cpu", pod: pod("1", ""), others: []*corev1.Pod{pod("1500m", "")}, reason: "OutOfcpu",
			msgContain: "Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000"},
		{name: "out of memory", pod: pod("", "3Gi"), others: []*corev1.Pod{pod("", "2Gi")}, reason: "OutOfmemory"},
		{name: "out of pods", pod: pod("", ""), others: []*corev1.Pod{pod("", ""), pod("", ""), pod("", "")}, reason: "OutOfpods",
			msgContain: "pods, requested: 1, used: 3, capacity: 3"},
		{name: "an init container's requests count", pod: withInit, others: []*corev1.Pod{pod("1", "")}, reason: "OutOfcpu"},
		{name: "an untolerated NoExecute taint", pod: pod("", ""), node: noExecute, reason: "TaintToleration"},
		{name: "node affinity", pod: affinity, reason: "NodeAffinity"},
		{name: "out of an extended resource the node lists", pod: gpu("1"), node: withGPU, others: []*corev1.Pod{gpu("1")}, reason: "OutOfexample.com/gpu",
			msgContain: "example.com/gpu, requested: 1, used: 1, capacity: 1"},
		{name: "an extended resource the node does not list is not checked", pod: gpu("1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := node
			if tc.node != nil {
				n = tc.node
			}
			reason, msg := admit(tc.pod, n, tc.others)
			if reason != tc.reason || !strings.Contains(msg, tc.msgContain) {
				t.Errorf("admit = %q %q, want %q with %q", reason, msg, tc.reason, tc.msgContain)
			}
		})
	}
}

// TestActivePodsAsTheKubeletCounts: the pods an admission counts are those admitted and not
// ended, including one admitted here whose status the cache has not shown yet, but not one
// admitted here that the cache no longer lists (a preempted victim already deleted), nor a
// namesake recreated since.
func TestActivePodsAsTheKubeletCounts(t *testing.T) {
	mk := func(name, uid, hostIP string, phase corev1.PodPhase) corev1.Pod {
		return corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(uid)},
			Status:     corev1.PodStatus{HostIP: hostIP, Phase: phase},
		}
	}
	self := mk("preemptor", "u-self", "", "")
	listed := []corev1.Pod{
		self,
		mk("running", "u-run", "127.0.0.1", corev1.PodRunning),
		mk("done", "u-done", "127.0.0.1", corev1.PodSucceeded),
		mk("admitted-here", "u-here", "", ""),   // status patch not in the cache yet
		mk("not-admitted", "u-pending", "", ""), // bound, not admitted anywhere
		mk("recreated", "u-new", "", ""),        // a namesake of a pod admitted here
	}
	here := map[string]*corev1.Pod{
		"ns/admitted-here": {ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "admitted-here", UID: "u-here"}},
		"ns/victim":        {ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "victim", UID: "u-victim"}}, // deleted
		"ns/recreated":     {ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "recreated", UID: "u-old"}},
	}
	var got []string
	for _, p := range active(listed, here, &self) {
		got = append(got, p.Name)
	}
	want := []string{"running", "admitted-here"}
	if !slices.Equal(got, want) {
		t.Errorf("active = %v, want %v", got, want)
	}
}

// TestAdmitRechecksAffinityLive: a rejection whose only reason is the node affinity is decided
// again on the node read live (a label the cache has not shown yet admits the pod), a failed
// read keeps it, and other rejections are not read again.
func TestAdmitRechecksAffinityLive(t *testing.T) {
	cached := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n"},
		Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourcePods: resource.MustParse("10"),
		}},
	}
	labelled := cached.DeepCopy()
	labelled.Labels = map[string]string{"pool": "builders"}
	tainted := cached.DeepCopy()
	tainted.Spec.Taints = []corev1.Taint{{Key: "node.kubernetes.io/unreachable", Effect: corev1.TaintEffectNoExecute}}
	selecting := func(cpu string) *corev1.Pod {
		p := &corev1.Pod{Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"pool": "builders"},
			Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}}},
		}}
		return p
	}
	for _, tc := range []struct {
		name       string
		pod        *corev1.Pod
		node       *corev1.Node
		live       *corev1.Node
		liveErr    error
		wantReason string
		wantReads  int
	}{
		{name: "label only on the live node", pod: selecting("1"), node: cached, live: labelled, wantReads: 1},
		{name: "live node lacks it too", pod: selecting("1"), node: cached, live: cached, wantReason: "NodeAffinity", wantReads: 1},
		{name: "live read fails", pod: selecting("1"), node: cached, liveErr: errors.New("connection refused"), wantReason: "NodeAffinity", wantReads: 1},
		{name: "out of cpu is not read again", pod: selecting("3"), node: cached, live: labelled, wantReason: "OutOfcpu"},
		{name: "a NoExecute taint fails too", pod: selecting("1"), node: tainted, live: labelled, wantReason: "NodeAffinity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reads := 0
			_, reason, _ := admitRechecking(tc.pod, tc.node, nil, func() (*corev1.Node, error) {
				reads++
				return tc.live, tc.liveErr
			})
			if reason != tc.wantReason || reads != tc.wantReads {
				t.Errorf("reason %q after %d live reads, want %q after %d", reason, reads, tc.wantReason, tc.wantReads)
			}
		})
	}
}
