package enginecache_test

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// guardKubelets holds, per test env, how the kubelet admits a new guard pod: the status it
// reports (nil: leave it Pending). The default runs it, as a kubelet with room does.
var guardKubelets sync.Map // *env -> func(*corev1.Pod) *corev1.PodStatus

func runGuard(*corev1.Pod) *corev1.PodStatus {
	now := metav1.Now()
	return &corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &now}
}

// setGuardKubelet changes how the env's kubelet admits guards from now on.
func (e *env) setGuardKubelet(admit func(*corev1.Pod) *corev1.PodStatus) {
	guardKubelets.Store(e, admit)
}

// playGuards plays the kubelet for guard pods: each new one (not started yet) gets the status the
// env's admission gives it, Running by default. It stops with the test.
func (e *env) playGuards() {
	e.setGuardKubelet(runGuard)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	e.T.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			pods := &corev1.PodList{}
			if err := kube.List(ctx, pods, client.InNamespace(e.Namespace), client.MatchingLabels{
				volumes.LabelOp: volumes.OpGuard, nodepools.LabelManagedBy: nodepools.ManagedBy,
			}); err == nil {
				v, _ := guardKubelets.Load(e)
				admit := v.(func(*corev1.Pod) *corev1.PodStatus)
				for i := range pods.Items {
					p := &pods.Items[i]
					if p.Status.StartTime != nil || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil {
						continue
					}
					if st := admit(p); st != nil {
						p.Status = *st
						_ = kube.Status().Update(ctx, p) // a conflict is retried on the next pass
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
}
