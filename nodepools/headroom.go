package nodepools

import (
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
)

const (
	// HeadroomPriorityClass is the negative priority of placeholder pods: any real pod preempts
	// them, and they never preempt anything.
	HeadroomPriorityClass = "warmpool-headroom"
	HeadroomPriority      = -1000
	// LabelHeadroom marks placeholder pods, so they are never counted as work.
	LabelHeadroom = "warmpool.io/headroom"
	// PauseImage is what placeholder pods run: nothing.
	PauseImage = "registry.k8s.io/pause:3.10"
)

// defaultHeadroomRequests size a placeholder when the pool states no runner requests: enough
// that Karpenter does not pick the smallest instance, small enough to fit any NVMe type.
var defaultHeadroomRequests = corev1.ResourceList{
	corev1.ResourceCPU:    resource.MustParse("1"),
	corev1.ResourceMemory: resource.MustParse("2Gi"),
}

// HeadroomName names a pool's placeholder Deployment.
func HeadroomName(pool string) string { return NamePrefix + "headroom-" + pool }

// HeadroomPriorityClassObject is the PriorityClass every pool's placeholders share.
func HeadroomPriorityClassObject() *schedulingv1.PriorityClass {
	return &schedulingv1.PriorityClass{
		TypeMeta:         metav1.TypeMeta{APIVersion: schedulingv1.SchemeGroupVersion.String(), Kind: "PriorityClass"},
		ObjectMeta:       metav1.ObjectMeta{Name: HeadroomPriorityClass, Labels: map[string]string{LabelManagedBy: ManagedBy}},
		Value:            HeadroomPriority,
		PreemptionPolicy: ptr.To(corev1.PreemptNever),
		Description:      "warmpool placeholder pods: keep runner nodes booted ahead of CI jobs; any real pod preempts them.",
	}
}

// HeadroomDeployment renders a pool's placeholder Deployment with replicas pods. Each pod
// asks for one node's worth of runner capacity and, by required anti-affinity, lands on a
// node of its own, so N replicas make Karpenter keep N nodes of this pool. A runner pod that
// needs the room preempts the placeholder on its node.
func HeadroomDeployment(p *config.Pool, namespace string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{LabelManagedBy: ManagedBy, LabelPool: p.Name, LabelHeadroom: "true"}
	selector := map[string]string{LabelPool: p.Name, LabelHeadroom: "true"}
	tolerations := []corev1.Toleration{{Key: p.Taint.Key, Operator: corev1.TolerationOpEqual, Value: p.Taint.Value, Effect: p.Taint.Effect}}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: appsv1.SchemeGroupVersion.String(), Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: HeadroomName(p.Name), Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			// Placeholders are interchangeable: replace them all at once on a template change.
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					PriorityClassName:             HeadroomPriorityClass,
					NodeSelector:                  map[string]string{LabelPool: p.Name},
					Tolerations:                   tolerations,
					TerminationGracePeriodSeconds: ptr.To[int64](0),
					AutomountServiceAccountToken:  ptr.To(false),
					EnableServiceLinks:            ptr.To(false),
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
							LabelSelector: &metav1.LabelSelector{MatchLabels: selector},
							TopologyKey:   corev1.LabelHostname,
						}},
					}},
					Containers: []corev1.Container{{
						Name:      "pause",
						Image:     PauseImage,
						Resources: corev1.ResourceRequirements{Requests: HeadroomRequests(p)},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							RunAsNonRoot:             ptr.To(true),
							RunAsUser:                ptr.To[int64](65535),
							ReadOnlyRootFilesystem:   ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
				},
			},
		},
	}
}

// HeadroomRequests is one node's worth of runner work: the runner pod's requests times the
// jobs a node runs, so Karpenter launches an instance type the jobs will fit on.
func HeadroomRequests(p *config.Pool) corev1.ResourceList {
	if len(p.Scaling.RunnerRequests) == 0 {
		return defaultHeadroomRequests.DeepCopy()
	}
	jobs := max(p.Scaling.JobsPerNode, 1)
	out := corev1.ResourceList{}
	for name, q := range p.Scaling.RunnerRequests {
		total := q.DeepCopy()
		total.Mul(int64(jobs))
		out[name] = total
	}
	return out
}

// BlockingBudget stops Karpenter from consolidating a pool's nodes (empty or underutilized)
// while it has queued or running jobs or is in a warm window; drift keeps its own budgets.
var BlockingBudget = karpv1.Budget{
	Nodes:   "0",
	Reasons: []karpv1.DisruptionReason{karpv1.DisruptionReasonEmpty, karpv1.DisruptionReasonUnderutilized},
}

// BusyBudget is what the scaling controller decided for a pool's first budget.
type BusyBudget struct {
	// Busy: the pool has queued or running jobs or is in a warm window.
	Busy bool
	// Disruptable is how many nodes Karpenter may consolidate while busy: 0 blocks them all
	// (scaling.busyBudget block), the nodes beyond desired in surplus mode (policy.Surplus).
	Disruptable int
}

// Budget is the budget a busy pool carries first: BlockingBudget with Disruptable as its nodes.
func (b BusyBudget) Budget() karpv1.Budget {
	out := *BlockingBudget.DeepCopy()
	out.Nodes = strconv.Itoa(max(0, b.Disruptable))
	return out
}

// Budgets are the pool's disruption budgets: the configured ones, plus the busy budget while
// the pool is busy. Karpenter applies the most restrictive budget that matches.
func Budgets(p *config.Pool, b BusyBudget) []karpv1.Budget {
	out := make([]karpv1.Budget, 0, len(p.Disruption.Budgets)+1)
	if b.Busy {
		out = append(out, b.Budget())
	}
	for _, b := range p.Disruption.Budgets {
		out = append(out, *b.DeepCopy())
	}
	return out
}
