package scaling_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"warmpool.io/warmpool/controller/queue"
)

// TestHoldThatRunsOutWhileActuatingRequeuesAtOnce: a drained queue is held by the
// stabilization window, and the window runs out while the evaluation actuates (the clock steps
// inside the read of the headroom Deployment, as a slow apiserver would make it). The
// evaluation must ask to run again at once, not at the next periodic evaluation (an hour
// here); the next one then scales down. The spare is off: its arrival-rate estimate has
// deadlines of its own (policy.NextChange), which this test is not about.
func TestHoldThatRunsOutWhileActuatingRequeuesAtOnce(t *testing.T) {
	const window = time.Minute
	// stepOnRead, when set, is how far the clock moves during the next read of the headroom.
	var stepOnRead atomic.Int64
	var d *direct
	d = newDirect(t, poolName("requeue"), `scaling: {burstHold: {percent: 0}, jobsPerNode: 1, scaleDownStabilization: 1m, spare: {mode: "off"}}`, &interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*appsv1.Deployment); ok {
				d.clk.Step(time.Duration(stepOnRead.Swap(0)))
			}
			return c.Get(ctx, k, obj, opts...)
		},
	})

	d.record(queue.Counts{Queued: 1})
	if res := d.wantReplicas("one queued job", 1); res.RequeueAfter != time.Hour {
		t.Errorf("steady at 1 node: requeue after %v, want the interval", res.RequeueAfter)
	}

	// The job is gone half a window later; the window runs out during the evaluation.
	d.record(queue.Counts{})
	d.clk.Step(window / 2)
	stepOnRead.Store(int64(window))
	res := d.wantReplicas("inside the stabilization window", 1)
	if res.RequeueAfter <= 0 || res.RequeueAfter >= window {
		t.Fatalf("hold that ran out during the evaluation: requeue after %v, want at once (the periodic interval is an hour)", res.RequeueAfter)
	}

	// The requeue it asked for scales the pool down.
	d.clk.Step(res.RequeueAfter)
	d.wantReplicas("after the window ran out", 0)
}
