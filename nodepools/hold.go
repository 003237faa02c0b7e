package nodepools

import (
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/volumes"
)

// The hold DaemonSet of a cache-enabled pool (package volumes/hold): one small pod per node whose
// preStop hook keeps a node being deleted until warmpool concluded the save of its cache, so a
// controller that is down or failing over when Karpenter starts a disruption still finds the node
// and saves it. It is a DaemonSet of its own, not a second container of the engine pod: the
// kubelet publishes a terminating pod's container states only once all of its containers have
// stopped (SyncTerminatingPod sets the status before killPod and after it, in
// pkg/kubelet/kubelet.go), so a sibling container holding the engine pod would hide the engine's
// exit, which the save waits for before it copies; a pod of its own leaves the engine pod to
// vanish as before. It also keeps engine rollouts (config or version changes) from waiting on the
// hold, and serves pools with an existing engine DaemonSet alike.
const (
	// HoldContainer is the hold pod's container.
	HoldContainer = "warmpool-hold"
	// HoldAppName is the hold pods' app.kubernetes.io/name, apart from the engine's.
	HoldAppName = "warmpool-hold"
	// HoldServiceAccount is the hold pods' ServiceAccount, which the chart creates in warmpool's
	// namespace with get on nodes and nothing else (a pod reads its own Node; RBAC cannot name
	// it, since resourceNames are fixed).
	HoldServiceAccount = "warmpool-hold"
	// HoldNodeEnv carries the pod's node name (downward API spec.nodeName) to the hold.
	HoldNodeEnv = "NODE_NAME"
	// holdInterval is how often the hook reads its Node.
	holdInterval = 2 * time.Second
)

// HoldName names a pool's hold DaemonSet.
func HoldName(pool string) string { return NamePrefix + "hold-" + pool }

// HoldSelector selects a pool's hold pods.
func HoldSelector(pool string) map[string]string {
	return map[string]string{volumes.LabelEngineName: HoldAppName, LabelPool: pool}
}

// HoldCommand is the hold container's process: check it may read its Node, then idle.
func HoldCommand() []string {
	return []string{toolsImageBinary, "engine", "hold"}
}

// HoldWaitCommand is the hold container's preStop hook: hold for up to maxWait seconds.
func HoldWaitCommand(maxWait int64) []string {
	return []string{toolsImageBinary, "engine", "hold", "--wait", "--max-wait", strconv.FormatInt(maxWait, 10)}
}

// HoldDaemonSet renders the pool's hold DaemonSet, nil when the pool's cache is off (nothing is
// saved, so nothing may hold a disruption). It runs warmpool's own image (toolsImage, ""
// is DefaultToolsImage) and:
//   - tolerates the runner taint only: not karpenter.sh/disrupted (Karpenter neither evicts nor
//     waits for a pod that tolerates it), and not the cache-restore startup taint (a node still
//     restoring runs no engine, so it has no cache to save);
//   - has no priorityClassName, so it is drained with the engine, after every runner pod;
//   - is given the pool's terminationGracePeriod as its own, and as the hook's --max-wait: the
//     NodeClaim's grace period is the save's deadline, past which Karpenter terminates the
//     instance anyway. Karpenter deletes a pod whose grace period would outlast the node's at the
//     start of the drain; for the hold that only starts its wait early, which stops nothing;
//   - runs as the image's non-root user, with no capability and a read-only root filesystem: it
//     only reads its Node through the API server.
//
// The DaemonSet carries the engine objects' labels, so the pools controller prunes it with them
// when the pool's cache is turned off; its pods carry HoldSelector, which the save controller's
// engine selector does not match.
func HoldDaemonSet(p *config.Pool, namespace, toolsImage string) *appsv1.DaemonSet {
	if !p.Cache.Enabled || p.TerminationGracePeriod == nil {
		return nil
	}
	if toolsImage == "" {
		toolsImage = DefaultToolsImage
	}
	grace := int64(p.TerminationGracePeriod.Duration / time.Second)
	podLabels := HoldSelector(p.Name)
	podLabels[LabelManagedBy] = ManagedBy
	container := corev1.Container{
		Name:    HoldContainer,
		Image:   toolsImage,
		Command: HoldCommand(),
		Env: []corev1.EnvVar{{Name: HoldNodeEnv, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "spec.nodeName"},
		}}},
		Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
			Exec: &corev1.ExecAction{Command: HoldWaitCommand(grace)},
		}},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr.To[int64](toolsUser),
			RunAsGroup:               ptr.To[int64](toolsUser),
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		// The idle process and, while the node drains, the hook: two small Go processes with an
		// API client (about 30 MB resident each) in one cgroup.
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("5m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
	}
	return &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: appsv1.SchemeGroupVersion.String(), Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: HoldName(p.Name), Labels: engineLabels(p.Name)},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: HoldSelector(p.Name)},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{
					NodeSelector:                  map[string]string{LabelPool: p.Name},
					Tolerations:                   []corev1.Toleration{RunnerToleration(p.Taint)},
					TerminationGracePeriodSeconds: ptr.To(grace),
					ServiceAccountName:            HoldServiceAccount,
					Containers:                    []corev1.Container{container},
				},
			},
		},
	}
}
