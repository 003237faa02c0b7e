package scaling

// Wake-ups from outside the informers: queue readings, config changes, a queue source's reading
// ageing out. A pool is evaluated only when something changed or its policy's next change is
// due, so a wake-up must never be dropped: a pool whose reading changed while the queue was not
// started yet waits in a set until it is, instead of in a bounded channel that overflows.

import (
	"context"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// wakeups is the source Enqueue feeds: the controller's work queue once it started, a set of
// pending pools before.
type wakeups struct {
	mu      sync.Mutex
	queue   workqueue.TypedRateLimitingInterface[reconcile.Request]
	pending map[string]struct{}
}

var _ source.Source = (*wakeups)(nil)

func (w *wakeups) add(pool string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.queue == nil {
		if w.pending == nil {
			w.pending = map[string]struct{}{}
		}
		w.pending[pool] = struct{}{}
		return
	}
	w.queue.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: pool}})
}

// Start hands over the pools woken before the queue existed. The queue is the controller's
// and lives as long as the process, so it is kept after ctx ends.
func (w *wakeups) Start(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.queue = q
	for pool := range w.pending {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: pool}})
	}
	w.pending = nil
	return nil
}

func (w *wakeups) String() string { return "scaling wake-ups" }

// Source is what Enqueue feeds; Register watches it. A test driving Reconcile by hand starts it
// on a queue of its own to see the wake-ups.
func (c *Controller) Source() source.Source { return c.wake }
