package operator

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	resourcehelper "k8s.io/component-helpers/resource"
	"k8s.io/utils/ptr"
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
			Phase:             corev1.PodRunning,
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "runner", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Message: "result"}}}},
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
		"labels":       equality.Semantic.DeepEqual(got.Labels, full.Labels),
		"deadline":     got.Annotations["warmpool.io/deadline"] == full.Annotations["warmpool.io/deadline"],
		"owners":       equality.Semantic.DeepEqual(got.OwnerReferences, full.OwnerReferences),
		"finalizers":   equality.Semantic.DeepEqual(got.Finalizers, full.Finalizers),
		"nodeName":     got.Spec.NodeName == "node-1",
		"nodeSelector": equality.Semantic.DeepEqual(got.Spec.NodeSelector, full.Spec.NodeSelector),
		"tolerations":  equality.Semantic.DeepEqual(got.Spec.Tolerations, full.Spec.Tolerations),
		"images":       got.Spec.Containers[0].Image == "r" && got.Spec.InitContainers[0].Image == "s",
		"status":       equality.Semantic.DeepEqual(got.Status, full.Status),
	}
	for what, ok := range kept {
		if !ok {
			t.Errorf("trimming lost the pod's %s", what)
		}
	}
	dropped := map[string]bool{
		"managedFields": got.ManagedFields == nil,
		"last-applied":  got.Annotations[corev1.LastAppliedConfigAnnotation] == "",
		"volumes":       got.Spec.Volumes == nil,
		"affinity":      got.Spec.Affinity == nil,
		"env":           got.Spec.InitContainers[0].Env == nil,
		"command":       got.Spec.Containers[0].Command == nil && got.Spec.Containers[0].ReadinessProbe == nil,
		"volumeMounts":  got.Spec.Containers[0].VolumeMounts == nil,
	}
	for what, ok := range dropped {
		if !ok {
			t.Errorf("trimming kept the pod's %s", what)
		}
	}
	// Idempotent: an informer may hand an object it already transformed.
	again, _ := trimPod(got.DeepCopy())
	if !equality.Semantic.DeepEqual(again, got) {
		t.Error("trimming a trimmed pod changed it")
	}
}

func TestTrimNodeKeepsWhatControllersRead(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{"warmpool.io/pool": "a"}, Annotations: map[string]string{"a": "b"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			Images:      []corev1.ContainerImage{{Names: []string{"big"}}},
			NodeInfo:    corev1.NodeSystemInfo{Architecture: "amd64"},
		},
	}
	full := node.DeepCopy()
	out, err := trimNode(node)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Node)
	if got.ManagedFields != nil || got.Status.Images != nil {
		t.Errorf("managedFields %v, images %v: want both dropped", got.ManagedFields, got.Status.Images)
	}
	full.ManagedFields, full.Status.Images = nil, nil
	if !equality.Semantic.DeepEqual(got, full) {
		t.Errorf("trimming changed more than managedFields and images:\n got %+v\nwant %+v", got, full)
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
