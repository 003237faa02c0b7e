// Package scenario drives warmpool on a local cluster: it runs the controller manager against the
// cluster, submits runner pods, and records what Karpenter and the cluster do as a timeline.
// The e2e tests and `make demo` share it, so the demo shows exactly what the tests check.
package scenario

import (
	"context"
	"fmt"
	"io"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/controller/operator/operatortest"
	"warmpool.io/warmpool/nodepools"
)

// Namespace holds warmpool's ConfigMap and the runner pods of a scenario.
const Namespace = "warmpool"

// Warmpool is a controller manager running in this process against a local cluster.
type Warmpool struct{ *operatortest.Running }

// Options for StartWarmpool.
type Options struct {
	// Log receives the manager's logs; nil discards them. It becomes controller-runtime's root
	// logger, which a process takes once: where one was set before (the e2e tests set theirs
	// in TestMain), Log has no effect.
	Log io.Writer
	// MetricsAddr, e.g. "127.0.0.1:0"; empty disables the metrics server.
	MetricsAddr string
	// WebhookAddr, e.g. "127.0.0.1:0"; empty disables the GitHub webhook endpoint.
	WebhookAddr string
}

// StartWarmpool writes cfg into the warmpool ConfigMap (creating the namespace) and starts the
// manager with the KWOK node class, as `warmpool controller --node-class kwok` would.
func StartWarmpool(ctx context.Context, restConfig *rest.Config, kube client.Client, cfg string, opts Options) (*Warmpool, error) {
	if err := SetConfig(ctx, kube, cfg); err != nil {
		return nil, err
	}
	logger := logr.Discard()
	if opts.Log != nil {
		logger = zap.New(zap.WriteTo(opts.Log))
	}
	ctrl.SetLogger(logger)
	metricsAddr := opts.MetricsAddr
	if metricsAddr == "" {
		metricsAddr = "0"
	}
	r, err := operatortest.Start(restConfig, operator.Options{
		Namespace:   Namespace,
		ConfigMap:   "warmpool",
		NodeClass:   nodepools.KWOKNodeClass,
		MetricsAddr: metricsAddr,
		WebhookAddr: opts.WebhookAddr,
		ProbeAddr:   "0",
		// nodesim runs the real binary for cache Jobs; the image name only has to be valid.
		CopierImage: "ghcr.io/warmpool/warmpool:local",
		// One manager per test process is the rule, but a test may restart it.
		SkipControllerNameValidation: true,
	})
	if err != nil {
		return nil, err
	}
	return &Warmpool{r}, nil
}

func ensureNamespace(ctx context.Context, kube client.Client) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}
	if err := kube.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s, %w", Namespace, err)
	}
	// The chart creates the hold pods' ServiceAccount; without it the API server refuses every
	// hold pod, and a scenario would run its cache pools without the hold.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: nodepools.HoldServiceAccount}}
	if err := kube.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating service account %s/%s, %w", Namespace, sa.Name, err)
	}
	return ensureHoldRBAC(ctx, kube)
}

// ensureHoldRBAC grants the hold's ServiceAccount what the chart grants it
// (deploy/helm/warmpool/templates/hold-rbac.yaml: get on nodes, nothing else). nodesim runs
// the hold's preStop as that ServiceAccount, so a hold that needs more fails here too.
func ensureHoldRBAC(ctx context.Context, kube client.Client) error {
	const name = "warmpool-e2e-hold"
	for _, o := range []client.Object{
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get"},
		}}},
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: Namespace, Name: nodepools.HoldServiceAccount}},
		},
	} {
		if err := kube.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating the hold's RBAC %s, %w", o.GetName(), err)
		}
	}
	return nil
}

// SetConfig creates or replaces the warmpool ConfigMap's config.yaml (and its namespace).
func SetConfig(ctx context.Context, kube client.Client, cfg string) error {
	if err := ensureNamespace(ctx, kube); err != nil {
		return err
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: "warmpool"}}
	_, err := ctrl.CreateOrUpdate(ctx, kube, cm, func() error {
		cm.Data = map[string]string{config.ConfigMapKey: cfg}
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing config map, %w", err)
	}
	return nil
}

// RunnerPod is a CI runner pod for pool: it selects the pool's nodes and tolerates the pool's
// runner taint, as an ARC or GitLab runner configured for warmpool would.
func RunnerPod(pool, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name, Labels: map[string]string{"app": "ci-runner", nodepools.LabelPool: pool}},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{nodepools.LabelPool: pool},
			Tolerations: []corev1.Toleration{{
				Key: config.DefaultTaintKey, Operator: corev1.TolerationOpEqual, Value: pool, Effect: corev1.TaintEffectNoSchedule,
			}},
			Containers: []corev1.Container{{
				Name:  "runner",
				Image: "ghcr.io/actions/actions-runner:latest",
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("1"),
					corev1.ResourceMemory: resource.MustParse("2Gi"),
				}},
			}},
			TerminationGracePeriodSeconds: new(int64),
		},
	}
}

// RunnerReplicaSet is a ReplicaSet of one RunnerPod, for a test whose runner lands on a node
// Karpenter has just registered: the controller manager's taint-eviction controller can delete
// a pod bound in the instant Karpenter lifts its NoExecute karpenter.sh/unregistered taint
// (kubernetes/kubernetes#139992), and an owned runner is replaced, as on a cluster. Its pods
// carry the label "runner": name.
func RunnerReplicaSet(pool, name string) *appsv1.ReplicaSet {
	pod := RunnerPod(pool, name)
	pod.Labels["runner"] = name
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: new(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"runner": name}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels}, Spec: pod.Spec},
		},
	}
}
