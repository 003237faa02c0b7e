package operator

import (
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// runnerPod is a Running CI runner pod as an informer receives it: an ARC-style runner with a
// Docker sidecar and an init container, scheduled and started.
func runnerPod() *corev1.Pod {
	req := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("8Gi")},
	}
	always := corev1.ContainerRestartPolicyAlways
	env := []corev1.EnvVar{{Name: "RUNNER_NAME", Value: "runner-abcde"}, {Name: "DOCKER_HOST", Value: "unix:///var/run/docker.sock"}, {Name: "RUNNER_WAIT_FOR_DOCKER_IN_SECONDS", Value: "120"}}
	mounts := []corev1.VolumeMount{{Name: "work", MountPath: "/home/runner/_work"}, {Name: "dind-sock", MountPath: "/var/run"}}
	now := metav1.Now()
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "arc-runner-set-abcde-runner-fghij", Namespace: "arc-runners", UID: "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
			ResourceVersion: "123456789", CreationTimestamp: now,
			Labels: map[string]string{"actions.github.com/scale-set-name": "arc-runner-set", "actions.github.com/scale-set-namespace": "arc-runners",
				"app.kubernetes.io/component": "runner", "app.kubernetes.io/part-of": "gha-runner-scale-set", "pod-template-hash": "5d8f7c9b6"},
			Annotations:     map[string]string{"actions.github.com/runner-group-name": "Default", "actions.github.com/patch-id": "0"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "actions.github.com/v1alpha1", Kind: "EphemeralRunner", Name: "arc-runner-set-abcde-runner-fghij", UID: "1b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", Controller: ptr.To(true)}},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "manager", Operation: metav1.ManagedFieldsOperationUpdate}, {Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status"}},
		},
		Spec: corev1.PodSpec{
			NodeName:     "ip-10-0-12-34.ec2.internal",
			NodeSelector: map[string]string{"warmpool.io/pool": "runners"},
			Tolerations: []corev1.Toleration{{Key: "warmpool.io/runner", Operator: corev1.TolerationOpEqual, Value: "runners", Effect: corev1.TaintEffectNoSchedule},
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)}},
			Volumes:        []corev1.Volume{{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}, {Name: "dind-sock", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			InitContainers: []corev1.Container{{Name: "init-dind-externals", Image: "ghcr.io/actions/actions-runner:2.321.0", Command: []string{"cp"}, Args: []string{"-r", "/home/runner/externals/.", "/home/runner/tmpDir/"}, VolumeMounts: mounts}, {Name: "dind", Image: "docker:dind", RestartPolicy: &always, Resources: req, SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}, VolumeMounts: mounts}},
			Containers:     []corev1.Container{{Name: "runner", Image: "ghcr.io/actions/actions-runner:2.321.0", Command: []string{"/home/runner/run.sh"}, Env: env, Resources: req, VolumeMounts: mounts}},
			TerminationGracePeriodSeconds: ptr.To[int64](30),
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, QOSClass: corev1.PodQOSBurstable, StartTime: &now, HostIP: "10.0.12.34", PodIP: "10.0.12.77", PodIPs: []corev1.PodIP{{IP: "10.0.12.77"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionTrue}, {Type: corev1.PodInitialized, Status: corev1.ConditionTrue},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue}, {Type: corev1.ContainersReady, Status: corev1.ConditionTrue}, {Type: corev1.PodScheduled, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "runner", Ready: true, Started: ptr.To(true), State: running, Image: "ghcr.io/actions/actions-runner:2.321.0", ImageID: "ghcr.io/actions/actions-runner@sha256:0123", ContainerID: "containerd://4567"}},
			InitContainerStatuses: []corev1.ContainerStatus{{Name: "init-dind-externals", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}},
				{Name: "dind", Ready: true, Started: ptr.To(true), State: running}},
		},
	}
}

// BenchmarkTrimmedPodHeap reports the heap one cached runner pod keeps after the informer's
// transform (bytes/pod): every Pod of the cluster is cached, so this times the cluster's pods
// is most of the controller's live heap.
func BenchmarkTrimmedPodHeap(b *testing.B) {
	const n = 5000
	src := runnerPod()
	for b.Loop() {
		pods := make([]any, n)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range pods {
			pods[i], _ = trimPod(src.DeepCopy())
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/pod")
		runtime.KeepAlive(pods)
	}
}
