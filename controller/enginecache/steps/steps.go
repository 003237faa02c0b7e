// Package steps runs a protocol written as an ordered list of named steps: the cache save, the
// restore and its verification (package enginecache) each are one. It is modelled on
// Karpenter's nodeclaim lifecycle controller, which runs its named sub-reconcilers in turn;
// unlike those, which all run and join their errors, a protocol stops at the first step that
// must wait or that concluded, because the steps after it depend on its outcome.
//
// Each step is idempotent: it looks at what exists, acts if it must, and says how it ended
// (Next, Stop, WaitFor). The runner keeps nothing between reconciles and touches no client:
// the objects in the cluster are the protocol's state, so a restarted controller resumes where
// they say.
package steps

import (
	"context"
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Exit is how a step ended: go on to the next step, or end this reconcile (to be woken by a
// watch event, or after a time).
type Exit struct {
	halt  bool
	after time.Duration
}

var (
	// Next: this step has nothing (more) to do; the following step runs.
	Next = Exit{}
	// Stop ends this reconcile without a requeue: the protocol concluded or let go of the
	// node, or it waits for a change that a watch event reports.
	Stop = Exit{halt: true}
)

// WaitFor ends this reconcile and looks again after d, even without an event. A non-positive
// d is a Stop.
func WaitFor(d time.Duration) Exit { return Exit{halt: true, after: max(d, 0)} }

// Step is one named step over the state S of one reconcile. The name (a verb, as the step's
// method is called) wraps the step's errors.
type Step[S any] struct {
	Name string
	Run  func(context.Context, *S) (Exit, error)
}

// List is a protocol: its steps in the order they run.
type List[S any] []Step[S]

// Run runs the steps in order until one ends the reconcile or fails. A step's error is returned
// wrapped with its name, and its exit ignored (controller-runtime retries an error with
// backoff and would ignore a requeue returned with it); the first exit that ends the reconcile
// becomes its result; running out of steps ends it without a requeue.
func (l List[S]) Run(ctx context.Context, s *S) (reconcile.Result, error) {
	for _, st := range l {
		e, err := st.Run(ctx, s)
		if err != nil {
			return reconcile.Result{}, fmt.Errorf("step %s, %w", st.Name, err)
		}
		if e.halt {
			return reconcile.Result{RequeueAfter: e.after}, nil
		}
	}
	return reconcile.Result{}, nil
}
