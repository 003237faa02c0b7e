package scenario

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
)

// NotReady is one Node whose Ready condition left True: to False, to Unknown (the node
// lifecycle controller's verdict on a missed heartbeat), or gone from the status.
type NotReady struct {
	Node   string
	At     time.Time
	Status corev1.ConditionStatus // False, Unknown, or "" when the condition vanished
	Reason string
	// Message is the condition's message (kube-controller-manager's "Kubelet stopped posting
	// node status.").
	Message string
	// Deleting says the Node was already being deleted: Karpenter deletes a NotReady node it
	// drains at once, so even then it is a flap that decides a test.
	Deleting bool
}

func (n NotReady) String() string {
	deleting := ""
	if n.Deleting {
		deleting = " (while being deleted)"
	}
	return fmt.Sprintf("node %s Ready=%s at %s%s: %s: %s", n.Node, n.Status, n.At.Format("15:04:05.000"), deleting, n.Reason, n.Message)
}

// ReadyWatch records every transition of a Node's Ready condition from True to anything else,
// for as long as it runs. In the local cluster no node dies of a lost heartbeat (kwok keeps
// them, kube-controller-manager's grace period is long), so any such transition is a flap of
// the harness, and a test that holds a node would pass or fail by luck.
//
// It watches (an informer, not polling), so a NotReady that lasts less than a poll interval is
// seen too.
type ReadyWatch struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	seen []NotReady
}

// WatchNodeReady starts watching every Node and returns once the watch has synced. Stop it
// to read what it saw.
func WatchNodeReady(ctx context.Context, cfg *rest.Config) (*ReadyWatch, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building a client for the node watch, %w", err)
	}
	// Its own context: a test's context ends before its cleanups run, and the watch must
	// cover what they do (a pool's cleanup takes its nodes down).
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w := &ReadyWatch{cancel: cancel, done: make(chan struct{})}
	factory := informers.NewSharedInformerFactory(cs, 0)
	inf := factory.Core().V1().Nodes().Informer()
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		UpdateFunc: func(oldObj, newObj any) {
			old, ok1 := oldObj.(*corev1.Node)
			n, ok2 := newObj.(*corev1.Node)
			if ok1 && ok2 {
				w.observe(old, n)
			}
		},
	}); err != nil {
		cancel()
		return nil, fmt.Errorf("watching nodes, %w", err)
	}
	factory.Start(runCtx.Done())
	go func() {
		defer close(w.done)
		<-runCtx.Done()
		factory.Shutdown()
	}()
	syncCtx, syncCancel := context.WithTimeout(ctx, time.Minute)
	defer syncCancel()
	if !toolscache.WaitForCacheSync(syncCtx.Done(), inf.HasSynced) {
		w.Stop()
		return nil, fmt.Errorf("node watch did not sync within a minute")
	}
	return w, nil
}

// observe records a Ready condition that was True in old and is not in n.
func (w *ReadyWatch) observe(old, n *corev1.Node) {
	was, _ := readyCondition(old)
	if was != corev1.ConditionTrue {
		return
	}
	now, cond := readyCondition(n)
	if now == corev1.ConditionTrue {
		return
	}
	rec := NotReady{Node: n.Name, At: time.Now(), Status: now, Deleting: n.DeletionTimestamp != nil}
	if cond != nil {
		rec.Reason, rec.Message = cond.Reason, cond.Message
		if !cond.LastTransitionTime.IsZero() {
			rec.At = cond.LastTransitionTime.Time
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, rec)
}

func readyCondition(n *corev1.Node) (corev1.ConditionStatus, *corev1.NodeCondition) {
	for i := range n.Status.Conditions {
		if c := &n.Status.Conditions[i]; c.Type == corev1.NodeReady {
			return c.Status, c
		}
	}
	return "", nil
}

// Transitions is what was seen so far.
func (w *ReadyWatch) Transitions() []NotReady {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]NotReady(nil), w.seen...)
}

// Stop ends the watch and returns every transition it saw. It is idempotent.
func (w *ReadyWatch) Stop() []NotReady {
	w.cancel()
	<-w.done
	return w.Transitions()
}
