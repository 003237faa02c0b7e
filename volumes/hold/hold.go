// Package hold keeps a node of a cache-enabled pool from vanishing before warmpool saved its
// engine cache, without warmpool having to be running when the node's disruption starts.
//
// Every such node runs a small pod of warmpool's hold DaemonSet (nodepools.HoldDaemonSet).
// Karpenter drains DaemonSet pods after every other pod, and does not finish a node's drain, nor
// terminate its instance, while a drainable pod is still on it: the hold pod's preStop hook
// (`warmpool engine hold --wait`) blocks until warmpool marks the node's save concluded (the
// Node annotation AnnotationSaveOutcome), so a controller that was down, restarting or failing
// over when the disruption began finds the node still there and saves it. Being a DaemonSet pod,
// it never makes a node look busy to consolidation; and it is bounded with nothing alive to
// release it: by --max-wait, by the pod's terminationGracePeriodSeconds (the kubelet kills the
// hook then) and by Karpenter, which stops waiting for a pod terminating past its grace period
// and terminates the instance at the NodeClaim's terminationGracePeriod.
//
// The decision (what one read of the Node means) is pure and driven by an injected clock;
// reading the Node is one function the caller supplies.
package hold

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
)

// AnnotationSaveOutcome on a Node records that warmpool's save of its cache concluded (saved,
// unclean, failed, timeout, ...): the hold's release mark. The save controller writes it
// (controller/enginecache), once, and never removes it.
const AnnotationSaveOutcome = "warmpool.io/cache-save"

// Verdict is what one read of the Node means for the hold.
type Verdict struct {
	// Release: the hold may end now.
	Release bool
	// Reason says why, for the hook's output.
	Reason string
}

// Decide reads the hold's verdict from the Node (nil: it no longer exists).
//
//   - gone: nothing is left to hold;
//   - not being deleted: the hold pod was deleted for another reason (a rollout of the hold
//     DaemonSet, the pool's cache turned off, a manual delete). Karpenter deletes a Node before
//     it drains it (its node termination controller runs only on a Node with a deletion
//     timestamp), so a drain always shows here;
//   - saved, or its save concluded any other way: released;
//   - otherwise the node is going and warmpool has not concluded its save: wait.
func Decide(n *corev1.Node) Verdict {
	switch {
	case n == nil:
		return Verdict{Release: true, Reason: "the node is gone"}
	case n.DeletionTimestamp == nil:
		return Verdict{Release: true, Reason: "the node is not being deleted: nothing to hold it for"}
	case n.Annotations[AnnotationSaveOutcome] != "":
		return Verdict{Release: true, Reason: "warmpool concluded the save of the node's cache (" + n.Annotations[AnnotationSaveOutcome] + ")"}
	}
	return Verdict{Reason: "the node is being deleted and warmpool has not concluded the save of its cache"}
}

// Options bound a hold.
type Options struct {
	// MaxWait is how long the hold waits at most (the pool's termination grace period: past
	// it Karpenter terminates the instance anyway).
	MaxWait time.Duration
	// Interval is the time between two reads of the Node.
	Interval time.Duration
}

// Validate rejects options the loop cannot run with.
func (o Options) Validate() error {
	switch {
	case o.MaxWait < 0:
		return fmt.Errorf("max wait %s is negative", o.MaxWait)
	case o.Interval <= 0:
		return fmt.Errorf("interval %s must be positive", o.Interval)
	}
	return nil
}

// ErrDenied wraps a read the API server refused (401, 403): the hold's ServiceAccount may not
// read its Node, so it can never see its release. Waiting would hold every drained node for the
// whole bound, so the hold gives up at once and says what is missing.
var ErrDenied = errors.New("not allowed to read the node")

// ErrTimedOut: MaxWait ran out before the release.
var ErrTimedOut = errors.New("gave up holding the node")

// Read reads the Node the hold is for: nil, nil when it no longer exists; an error wrapping
// ErrDenied when the API server refuses the read.
type Read func(ctx context.Context) (*corev1.Node, error)

// Run holds until Decide releases, MaxWait runs out (ErrTimedOut), the read is denied
// (ErrDenied) or ctx ends (the kubelet killed the hook, or SIGTERM). A read that fails for
// another reason (the API server unreachable) is retried: without a release the node must stay.
func Run(ctx context.Context, clk clock.Clock, o Options, read Read, out io.Writer) error {
	if err := o.Validate(); err != nil {
		return err
	}
	start := clk.Now()
	var lastErr error
	for {
		n, err := read(ctx)
		switch {
		case errors.Is(err, ErrDenied):
			return err
		case err != nil:
			if lastErr == nil || lastErr.Error() != err.Error() {
				fmt.Fprintf(out, "reading the node failed, retrying: %v\n", err)
			}
			lastErr = err
		default:
			lastErr = nil
			if v := Decide(n); v.Release {
				fmt.Fprintf(out, "released after %s: %s\n", clk.Since(start).Round(time.Second), v.Reason)
				return nil
			}
		}
		left := o.MaxWait - clk.Since(start)
		if left <= 0 {
			if lastErr != nil {
				return fmt.Errorf("%w after %s: the node could not be read (%w)", ErrTimedOut, o.MaxWait, lastErr)
			}
			return fmt.Errorf("%w after %s: %s", ErrTimedOut, o.MaxWait, Decide(n).Reason)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hold stopped after %s before its release: %w", clk.Since(start).Round(time.Second), context.Cause(ctx))
		case <-clk.After(min(o.Interval, left)):
		}
	}
}
