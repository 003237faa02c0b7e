package operator

import (
	"fmt"
	goruntime "runtime"
	"testing"
	"time"

	"github.com/awslabs/operatorpkg/status"
	"k8s.io/apimachinery/pkg/runtime"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

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
			Volumes: []corev1.Volume{
				{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "dind-sock", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
			InitContainers: []corev1.Container{
				{Name: "init-dind-externals", Image: "ghcr.io/actions/actions-runner:2.321.0", Command: []string{"cp"},
					Args: []string{"-r", "/home/runner/externals/.", "/home/runner/tmpDir/"}, VolumeMounts: mounts},
				{Name: "dind", Image: "docker:dind", RestartPolicy: &always, Resources: req,
					SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}, VolumeMounts: mounts},
			},
			Containers: []corev1.Container{{Name: "runner", Image: "ghcr.io/actions/actions-runner:2.321.0",
				Command: []string{"/home/runner/run.sh"}, Env: env, Resources: req, VolumeMounts: mounts}},
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
// transform: every Pod of the cluster is cached, so this times the cluster's pods is most of
// the controller's live heap.
func BenchmarkTrimmedPodHeap(b *testing.B) { benchHeap(b, runnerPod(), trimPod) }

// benchHeap reports the heap each of 5000 copies of src keeps after trim, in bytes per object.
func benchHeap[T interface{ DeepCopyObject() runtime.Object }](b *testing.B, src T, trim func(any) (any, error)) {
	const n = 5000
	for b.Loop() {
		objs := make([]any, n)
		var before, after goruntime.MemStats
		goruntime.GC()
		goruntime.ReadMemStats(&before)
		for i := range objs {
			var err error
			if objs[i], err = trim(src.DeepCopyObject()); err != nil {
				b.Fatal(err)
			}
		}
		goruntime.GC()
		goruntime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/object")
		goruntime.KeepAlive(objs)
	}
}

// launchedNodeClaim is a NodeClaim as Karpenter leaves it once its node is up: the
// requirements it was launched from (the pool's, plus the instance types the scheduler found
// compatible, up to 60), requests, capacity, allocatable and its conditions.
func launchedNodeClaim() *karpv1.NodeClaim {
	types := make([]string, 60)
	for i := range types {
		types[i] = fmt.Sprintf("m%dgd.%dxlarge", 5+i%3, 1+i%24)
	}
	list := func(pairs ...string) corev1.ResourceList {
		l := corev1.ResourceList{}
		for i := 0; i < len(pairs); i += 2 {
			l[corev1.ResourceName(pairs[i])] = resource.MustParse(pairs[i+1])
		}
		return l
	}
	now := metav1.Now()
	cond := func(t, reason, msg string) status.Condition {
		return status.Condition{Type: t, Status: metav1.ConditionTrue, Reason: reason, Message: msg, LastTransitionTime: now, ObservedGeneration: 1}
	}
	return &karpv1.NodeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name: "runners-x7k2p", UID: "2b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", ResourceVersion: "987654321", Generation: 1, CreationTimestamp: now,
			Labels: map[string]string{karpv1.NodePoolLabelKey: "warmpool-runners", "warmpool.io/pool": "runners", corev1.LabelInstanceTypeStable: "m6gd.4xlarge",
				corev1.LabelTopologyZone: "us-east-1a", corev1.LabelArchStable: "arm64", corev1.LabelOSStable: "linux", karpv1.CapacityTypeLabelKey: "spot",
				"karpenter.k8s.aws/instance-category": "m", "karpenter.k8s.aws/instance-generation": "6", "karpenter.k8s.aws/instance-local-nvme": "950",
				"karpenter.k8s.aws/instance-family": "m6gd", "karpenter.k8s.aws/instance-size": "4xlarge", "karpenter.k8s.aws/ec2nodeclass": "warmpool-runners"},
			Annotations: map[string]string{"karpenter.sh/nodepool-hash": "4286548521316487321", "karpenter.sh/nodepool-hash-version": "v3",
				"karpenter.k8s.aws/ec2nodeclass-hash": "1246715316848651874", "karpenter.k8s.aws/ec2nodeclass-hash-version": "v4", "karpenter.k8s.aws/tagged": "true"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "karpenter.sh/v1", Kind: "NodePool", Name: "warmpool-runners", UID: "3b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", BlockOwnerDeletion: ptr.To(true)}},
			Finalizers:      []string{karpv1.TerminationFinalizer},
		},
		Spec: karpv1.NodeClaimSpec{
			Taints:        []corev1.Taint{{Key: "warmpool.io/runner", Value: "runners", Effect: corev1.TaintEffectNoSchedule}},
			StartupTaints: []corev1.Taint{{Key: "warmpool.io/cache-restore", Effect: corev1.TaintEffectNoSchedule}},
			Requirements: []karpv1.NodeSelectorRequirementWithMinValues{
				{Key: karpv1.NodePoolLabelKey, Operator: corev1.NodeSelectorOpIn, Values: []string{"warmpool-runners"}},
				{Key: corev1.LabelInstanceTypeStable, Operator: corev1.NodeSelectorOpIn, Values: types},
				{Key: karpv1.CapacityTypeLabelKey, Operator: corev1.NodeSelectorOpIn, Values: []string{"spot", "on-demand"}},
				{Key: corev1.LabelArchStable, Operator: corev1.NodeSelectorOpIn, Values: []string{"arm64"}},
				{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"us-east-1a", "us-east-1b", "us-east-1c"}},
				{Key: "karpenter.k8s.aws/instance-local-nvme", Operator: corev1.NodeSelectorOpGt, Values: []string{"99"}},
				{Key: "warmpool.io/pool", Operator: corev1.NodeSelectorOpIn, Values: []string{"runners"}},
			},
			Resources:              karpv1.ResourceRequirements{Requests: list("cpu", "3250m", "memory", "6Gi", "pods", "12")},
			NodeClassRef:           &karpv1.NodeClassReference{Group: "karpenter.k8s.aws", Kind: "EC2NodeClass", Name: "warmpool-runners"},
			TerminationGracePeriod: &metav1.Duration{Duration: time.Hour},
		},
		Status: karpv1.NodeClaimStatus{
			NodeName: "ip-10-0-12-34.ec2.internal", ProviderID: "aws:///us-east-1a/i-0123456789abcdef0", ImageID: "ami-0123456789abcdef0",
			Capacity:    list("cpu", "16", "memory", "63Gi", "ephemeral-storage", "950Gi", "pods", "234", "hugepages-1Gi", "0", "hugepages-2Mi", "0"),
			Allocatable: list("cpu", "15890m", "memory", "57Gi", "ephemeral-storage", "850Gi", "pods", "234", "hugepages-1Gi", "0", "hugepages-2Mi", "0"),
			Conditions: []status.Condition{cond("Launched", "Launched", ""), cond("Registered", "Registered", ""), cond("Initialized", "Initialized", ""),
				cond("Ready", "Ready", ""), cond("ConsistentStateFound", "ConsistentStateFound", ""),
				cond("Drifted", "NodePoolDrifted", "NodePool has drifted from the NodeClaim: the nodepool-hash annotation differs")},
			LastPodEventTime: now,
		},
	}
}

// BenchmarkTrimmedNodeClaimHeap reports the heap one cached NodeClaim keeps after the
// informer's transform (bytes/claim).
func BenchmarkTrimmedNodeClaimHeap(b *testing.B) { benchHeap(b, launchedNodeClaim(), trimNodeClaim) }
