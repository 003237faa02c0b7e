package operator

import (
	"testing"
	"time"

	"github.com/awslabs/operatorpkg/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	resourcehelper "k8s.io/component-helpers/resource"
	"k8s.io/utils/ptr"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/nodewatch"
	"warmpool.io/warmpool/volumes"
)

// A trimmed Pod keeps every field the controllers read, and what the scheduler reserves for
// it (resourcehelper.PodRequests, which the scaling controller uses) is unchanged.
func TestTrimPodKeepsWhatControllersRead(t *testing.T) {
	requests := corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")}}
	always := corev1.ContainerRestartPolicyAlways
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "runner", Namespace: "ci",
			Labels:          map[string]string{"app": "runner"},
			Annotations:     map[string]string{"warmpool.io/deadline": "2025-01-01T00:00:00Z", corev1.LastAppliedConfigAnnotation: "{...}"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "DaemonSet", Name: "engine"}},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
			Finalizers:      []string{"f"},
		},
		Spec: corev1.PodSpec{
			NodeName:     "node-1",
			NodeSelector: map[string]string{"warmpool.io/pool": "a"},
			Tolerations:  []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Overhead:     corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")},
			Volumes:      []corev1.Volume{{Name: "work"}},
			Affinity:     &corev1.Affinity{},
			InitContainers: []corev1.Container{{Name: "sidecar", Image: "s", RestartPolicy: &always, Resources: requests,
				Env: []corev1.EnvVar{{Name: "A", Value: "b"}}}},
			Containers: []corev1.Container{{Name: "runner", Image: "r", Resources: requests, Command: []string{"run"},
				VolumeMounts: []corev1.VolumeMount{{Name: "work", MountPath: "/w"}}, ReadinessProbe: &corev1.Probe{}}},
			TerminationGracePeriodSeconds: ptr.To[int64](30),
		},
		Status: corev1.PodStatus{
			Phase:   corev1.PodFailed,
			Reason:  "Evicted",
			Message: "The node was low on resource: ephemeral-storage.",
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, Reason: "PodCompleted", Message: "long"},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, Reason: "PodCompleted"},
			},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "runner", Ready: true, RestartCount: 2,
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Message: "result", ExitCode: 3, Reason: "Error"}},
				Image: "registry/runner:1", ImageID: "sha256:abc", ContainerID: "containerd://1",
				VolumeMounts: []corev1.VolumeMountStatus{{Name: "work", MountPath: "/w"}}}},
			InitContainerStatuses: []corev1.ContainerStatus{{Name: "sidecar", Image: "s"}},
			PodIP:                 "10.0.0.1",
			PodIPs:                []corev1.PodIP{{IP: "10.0.0.1"}},
			HostIP:                "10.1.0.1",
		},
	}
	want := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
	full := pod.DeepCopy()

	out, err := trimPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Pod)
	if r := resourcehelper.PodRequests(got, resourcehelper.PodResourcesOptions{}); !equality.Semantic.DeepEqual(r, want) {
		t.Errorf("requests after trimming %v, before %v", r, want)
	}
	kept := map[string]bool{
		"labels":           equality.Semantic.DeepEqual(got.Labels, full.Labels),
		"deadline":         got.Annotations["warmpool.io/deadline"] == full.Annotations["warmpool.io/deadline"],
		"owners":           equality.Semantic.DeepEqual(got.OwnerReferences, full.OwnerReferences),
		"finalizers":       equality.Semantic.DeepEqual(got.Finalizers, full.Finalizers),
		"nodeName":         got.Spec.NodeName == "node-1",
		"nodeSelector":     equality.Semantic.DeepEqual(got.Spec.NodeSelector, full.Spec.NodeSelector),
		"phase and reason": got.Status.Phase == full.Status.Phase && got.Status.Reason == full.Status.Reason && got.Status.Message == full.Status.Message,
		"ready condition":  len(got.Status.Conditions) == 1 && got.Status.Conditions[0].Type == corev1.PodReady && got.Status.Conditions[0].Status == corev1.ConditionTrue && got.Status.Conditions[0].Reason == "PodCompleted",
	}
	expectAll(t, "trimming lost the pod's", kept)
	dropped := map[string]bool{
		"managedFields": got.ManagedFields == nil,
		"last-applied":  got.Annotations[corev1.LastAppliedConfigAnnotation] == "",
		"volumes":       got.Spec.Volumes == nil,
		"affinity":      got.Spec.Affinity == nil,
		"containers": len(got.Spec.Containers) == 1 && got.Spec.Containers[0].Name == "" && got.Spec.Containers[0].Image == "" &&
			got.Spec.Containers[0].Resources.Limits == nil && got.Spec.InitContainers == nil && got.Spec.Overhead == nil,
		"addresses":          got.Status.PodIP == "" && got.Status.PodIPs == nil && got.Status.HostIP == "",
		"container statuses": got.Status.ContainerStatuses == nil,
		"init statuses":      got.Status.InitContainerStatuses == nil,
		"condition messages": got.Status.Conditions[0].Message == "",
		"other conditions":   len(got.Status.Conditions) == 1,
		"tolerations":        got.Spec.Tolerations == nil,
	}
	expectAll(t, "trimming kept the pod's", dropped)
	// Idempotent: an informer may hand an object it already transformed.
	again, _ := trimPod(got.DeepCopy())
	if !equality.Semantic.DeepEqual(again, got) {
		t.Error("trimming a trimmed pod changed it")
	}
}

// A cache Job's pod keeps what its result is read from (volumes.PodResult: the copier
// container's termination state and message), which other pods lose.
func TestTrimPodKeepsCacheJobResult(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "save-x", Namespace: "warmpool", Labels: map[string]string{volumes.LabelOp: "save"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: volumes.CopierContainer, Image: "warmpool"}}},
		Status: corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{
			Name: volumes.CopierContainer, Image: "warmpool", ImageID: "sha256:abc",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 6, Reason: "Error",
				Message: `{"result":"no-space","reason":"the cache (12 GiB) does not fit the volume (10 GiB)"}`}},
		}}},
	}
	want, wantDone := volumes.PodResult(pod)
	if !wantDone || want.Result != volumes.ResultNoSpace {
		t.Fatalf("test pod's result %+v, done %v: want a NoSpace result", want, wantDone)
	}
	out, _ := trimPod(pod.DeepCopy())
	got := out.(*corev1.Pod)
	if r, done := volumes.PodResult(got); !done || r != want {
		t.Errorf("result after trimming %+v (done %v), before %+v", r, done, want)
	}
	if cs := got.Status.ContainerStatuses; len(cs) != 1 || cs[0].Image != "" || cs[0].ImageID != "" {
		t.Errorf("container statuses after trimming %+v: want the copier's, without its image", cs)
	}

	delete(pod.Labels, volumes.LabelOp)
	out, _ = trimPod(pod)
	if out.(*corev1.Pod).Status.ContainerStatuses != nil {
		t.Error("a pod that is not a cache Job's kept its container statuses")
	}
}

// expectAll reports every check that is false, naming it after prefix.
func expectAll(t *testing.T, prefix string, checks map[string]bool) {
	t.Helper()
	for what, ok := range checks {
		if !ok {
			t.Errorf("%s %s", prefix, what)
		}
	}
}

func TestTrimNodeKeepsWhatControllersRead(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{"warmpool.io/pool": "a"}, Annotations: map[string]string{"a": "b"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}, Unschedulable: true},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")},
			Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")},
			Conditions: []corev1.NodeCondition{
				{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available"},
				{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status"},
			},
			Images:    []corev1.ContainerImage{{Names: []string{"big"}}},
			NodeInfo:  corev1.NodeSystemInfo{Architecture: "amd64", KernelVersion: "6.1"},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}},
		},
	}
	full := node.DeepCopy()
	out, err := trimNode(node)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Node)
	if !equality.Semantic.DeepEqual(got.ObjectMeta.Labels, full.Labels) || !equality.Semantic.DeepEqual(got.Annotations, full.Annotations) ||
		!equality.Semantic.DeepEqual(got.Spec, full.Spec) || !equality.Semantic.DeepEqual(got.Status.Allocatable, full.Status.Allocatable) {
		t.Errorf("trimming changed the labels, annotations, spec or allocatable:\n got %+v\nwant %+v", got, full)
	}
	if !nodewatch.Ready(got) || len(got.Status.Conditions) != 2 || got.Status.Conditions[0].Type != corev1.NodeMemoryPressure {
		t.Errorf("conditions after trimming %+v: want both, types and statuses kept", got.Status.Conditions)
	}
	for what, dropped := range map[string]bool{
		"managedFields":      got.ManagedFields == nil,
		"images":             got.Status.Images == nil,
		"capacity":           got.Status.Capacity == nil,
		"addresses":          got.Status.Addresses == nil,
		"nodeInfo":           got.Status.NodeInfo == corev1.NodeSystemInfo{},
		"condition messages": got.Status.Conditions[1].Message == "" && got.Status.Conditions[1].Reason == "",
	} {
		if !dropped {
			t.Errorf("trimming kept the node's %s", what)
		}
	}
	again, _ := trimNode(got.DeepCopy())
	if !equality.Semantic.DeepEqual(again, got) {
		t.Error("trimming a trimmed node changed it")
	}
}

// Objects of other kinds lose their managedFields only; what is not an object passes through.
func TestStripManagedFields(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}}, Data: map[string]string{"k": "v"}}
	out, err := stripManagedFields(cm)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.(*corev1.ConfigMap); got.ManagedFields != nil || got.Data["k"] != "v" {
		t.Errorf("got %+v", got)
	}
	if out, err := stripManagedFields("not an object"); err != nil || out != "not an object" {
		t.Errorf("a non-object: %v, %v", out, err)
	}
}

// A trimmed NodeClaim keeps what the cache controllers read of it: its pool label, UID,
// deletion, Karpenter's termination timestamp, its grace period, its node and the disruption
// reason.
func TestTrimNodeClaimKeepsWhatControllersRead(t *testing.T) {
	claim := launchedNodeClaim()
	now := metav1.Now()
	claim.DeletionTimestamp = &now
	claim.Annotations[karpv1.NodeClaimTerminationTimestampAnnotationKey] = "2026-12-05T14:00:00Z"
	claim.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "karpenter"}}
	claim.Status.Conditions = append(claim.Status.Conditions, status.Condition{Type: karpv1.ConditionTypeDisruptionReason,
		Status: metav1.ConditionTrue, Reason: "Underutilized", Message: "can be consolidated", LastTransitionTime: now})
	full := claim.DeepCopy()

	out, err := trimNodeClaim(claim)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*karpv1.NodeClaim)
	disruption := got.StatusConditions().Get(karpv1.ConditionTypeDisruptionReason)
	kept := map[string]bool{
		"labels":                equality.Semantic.DeepEqual(got.Labels, full.Labels),
		"termination timestamp": got.Annotations[karpv1.NodeClaimTerminationTimestampAnnotationKey] == "2026-12-05T14:00:00Z",
		"uid and deletion":      got.UID == full.UID && got.DeletionTimestamp.Equal(full.DeletionTimestamp),
		"grace period":          got.Spec.TerminationGracePeriod != nil && got.Spec.TerminationGracePeriod.Duration == time.Hour,
		"node name":             got.Status.NodeName == full.Status.NodeName,
		"disruption reason":     disruption.IsTrue() && disruption.Reason == "Underutilized",
		"conditions":            len(got.Status.Conditions) == len(full.Status.Conditions),
	}
	expectAll(t, "trimming lost the NodeClaim's", kept)
	dropped := map[string]bool{
		"managedFields":      got.ManagedFields == nil,
		"requirements":       got.Spec.Requirements == nil,
		"resources":          got.Spec.Resources.Requests == nil,
		"taints":             got.Spec.Taints == nil && got.Spec.StartupTaints == nil,
		"capacity":           got.Status.Capacity == nil && got.Status.Allocatable == nil,
		"condition messages": disruption.Message == "",
	}
	expectAll(t, "trimming kept the NodeClaim's", dropped)
	again, _ := trimNodeClaim(got.DeepCopy())
	if !equality.Semantic.DeepEqual(again, got) {
		t.Error("trimming a trimmed NodeClaim changed it")
	}
}
