package operator

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// LeaderLabel marks the pod of the replica that holds the leader Lease. The GitHub webhook
// server runs on the leader only, so the chart's webhook Service selects this label: a
// delivery sent to a standby would find no listener, or be counted by a tracker nobody reads.
const LeaderLabel = "warmpool.io/leader"

// leaderLabelRetry is how often a failed label patch is retried; the label must converge, and
// the apiserver being briefly unreachable is no reason to give up.
const leaderLabelRetry = 2 * time.Second

// LeaderLabeler keeps LeaderLabel on exactly the leader's pod. The label outlives a container
// restart (it is on the pod, not the process), so every replica first removes it from its own
// pod, and a new leader removes it from every other pod before labelling its own.
type LeaderLabeler struct {
	// Client patches pods; Reader lists them uncached (the label must be read as it is now).
	Client    client.Client
	Reader    client.Reader
	Namespace string
	PodName   string

	mu      sync.Mutex
	leading bool
}

// Register adds the two halves to the manager: the startup clean-up on every replica, and the
// labelling on the leader.
func (l *LeaderLabeler) Register(mgr manager.Manager) error {
	if err := mgr.Add(everyReplica{l}); err != nil {
		return fmt.Errorf("adding leader label clean-up, %w", err)
	}
	if err := mgr.Add(leaderRunnable{l}); err != nil {
		return fmt.Errorf("adding leader labeller, %w", err)
	}
	return nil
}

// clearOwn removes a label left on this pod by an earlier run of its container. It runs on
// every replica and does nothing once this replica leads (the two may race at startup).
func (l *LeaderLabeler) clearOwn(ctx context.Context) error {
	return l.retry(ctx, "clearing leader label", func(ctx context.Context) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.leading {
			return nil
		}
		return l.setLabel(ctx, l.PodName, false)
	})
}

// lead labels this pod as the leader's, after unlabelling every other pod, then holds until
// leadership ends and unlabels it (best effort: a crashed leader's label is cleared by the
// next leader, and by its own container's restart).
func (l *LeaderLabeler) lead(ctx context.Context) error {
	l.mu.Lock()
	l.leading = true
	l.mu.Unlock()
	if err := l.retry(ctx, "setting leader label", func(ctx context.Context) error {
		pods := &corev1.PodList{}
		if err := l.Reader.List(ctx, pods, client.InNamespace(l.Namespace), client.MatchingLabels{LeaderLabel: "true"}); err != nil {
			return fmt.Errorf("listing labelled pods, %w", err)
		}
		for i := range pods.Items {
			if name := pods.Items[i].Name; name != l.PodName {
				if err := l.setLabel(ctx, name, false); err != nil {
					return err
				}
			}
		}
		return l.setLabel(ctx, l.PodName, true)
	}); err != nil {
		return err
	}
	log.FromContext(ctx).Info("labelled leader pod", "pod", l.PodName, "label", LeaderLabel)
	<-ctx.Done()
	releaseCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.setLabel(releaseCtx, l.PodName, false); err != nil {
		log.FromContext(ctx).Info("could not remove leader label on stop; the next leader will", "error", err.Error())
	}
	return nil
}

// setLabel adds (or removes) LeaderLabel on a pod with a merge patch, so nothing else on the
// pod is touched. A pod that is gone needs no unlabelling.
func (l *LeaderLabeler) setLabel(ctx context.Context, pod string, on bool) error {
	value := "null"
	if on {
		value = `"true"`
	}
	patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"metadata":{"labels":{%q:%s}}}`, LeaderLabel, value))
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: l.Namespace, Name: pod}}
	if err := l.Client.Patch(ctx, p, patch); err != nil && (on || client.IgnoreNotFound(err) != nil) {
		return fmt.Errorf("patching label %s on pod %s/%s, %w", LeaderLabel, l.Namespace, pod, err)
	}
	return nil
}

// retry runs f until it succeeds or ctx ends; each failure is logged.
func (l *LeaderLabeler) retry(ctx context.Context, what string, f func(context.Context) error) error {
	err := wait.PollUntilContextCancel(ctx, leaderLabelRetry, true, func(ctx context.Context) (bool, error) {
		if err := f(ctx); err != nil {
			log.FromContext(ctx).Error(err, what)
			return false, nil
		}
		return true, nil
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("%s, %w", what, err)
	}
	return nil
}

// leaderRunnable runs lead on the elected replica only.
type leaderRunnable struct{ l *LeaderLabeler }

func (r leaderRunnable) Start(ctx context.Context) error { return r.l.lead(ctx) }
func (leaderRunnable) NeedLeaderElection() bool          { return true }

// everyReplica runs clearOwn on every replica; a bare RunnableFunc would wait for the Lease.
type everyReplica struct{ l *LeaderLabeler }

func (r everyReplica) Start(ctx context.Context) error { return r.l.clearOwn(ctx) }
func (everyReplica) NeedLeaderElection() bool          { return false }
