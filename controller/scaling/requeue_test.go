package scaling_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/controller/scaling"
	"warmpool.io/warmpool/nodepools"
)

// TestHoldThatRunsOutWhileActuatingRequeuesAtOnce drives the reconciler by hand with a fake
// clock: a drained queue is held by the stabilization window, and the window runs out while
// the evaluation actuates (the clock steps inside the read of the headroom Deployment, as a
// slow apiserver would make it). The evaluation must ask to run again at once, not at the
// next periodic evaluation (an hour here); the next one then scales down.
func TestHoldThatRunsOutWhileActuatingRequeuesAtOnce(t *testing.T) {
	const (
		window   = time.Minute
		interval = time.Hour
	)
	pool := poolName("requeue")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "warmpool-scaling-"}}
	if err := kube.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupCluster(t) })
	cfg, err := config.Parse([]byte(configYAML(poolYAML(pool, ciSource, "scaling: {jobsPerNode: 1, scaleDownStabilization: 1m}"))))
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	tracker := queue.NewTracker(clk, 0)
	tracker.SetSources(map[string][]string{pool: {"ci"}})
	key := queue.Key{Pool: pool, Source: "ci"}

	// stepOnRead, when set, is how far the clock moves during the next read of the headroom.
	var stepOnRead atomic.Int64
	watching, err := client.NewWithWatch(restConfig, client.Options{Scheme: kube.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	kc := interceptor.NewClient(watching, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*appsv1.Deployment); ok {
				clk.Step(time.Duration(stepOnRead.Swap(0)))
			}
			return c.Get(ctx, k, obj, opts...)
		},
	})
	c := scaling.NewController(kc, &record.FakeRecorder{}, clk, tracker, ns.Name, func() *config.Config { return cfg }, nil)
	c.SetInterval(interval)
	req := reconcile.Request{NamespacedName: types.NamespacedName{Name: pool}}
	evaluate := func() reconcile.Result {
		t.Helper()
		res, err := c.Reconcile(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	replicas := func() int32 {
		t.Helper()
		d := &appsv1.Deployment{}
		if err := kube.Get(t.Context(), client.ObjectKey{Namespace: ns.Name, Name: nodepools.HeadroomName(pool)}, d); err != nil {
			t.Fatal(err)
		}
		return *d.Spec.Replicas
	}

	tracker.Record(key, queue.Counts{Queued: 1}, nil)
	if res := evaluate(); res.RequeueAfter != interval {
		t.Errorf("steady at 1 node: requeue after %v, want the interval %v", res.RequeueAfter, interval)
	}
	if got := replicas(); got != 1 {
		t.Fatalf("headroom %d with one queued job, want 1", got)
	}

	// The job is gone half a window later; the window runs out during the evaluation.
	tracker.Record(key, queue.Counts{}, nil)
	clk.Step(window / 2)
	stepOnRead.Store(int64(window))
	res := evaluate()
	if got := replicas(); got != 1 {
		t.Fatalf("headroom %d inside the stabilization window, want 1 (held)", got)
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter >= window {
		t.Fatalf("hold that ran out during the evaluation: requeue after %v, want at once (the periodic interval is %v)", res.RequeueAfter, interval)
	}

	// The requeue it asked for scales the pool down.
	clk.Step(res.RequeueAfter)
	evaluate()
	if got := replicas(); got != 0 {
		t.Errorf("headroom %d after the window ran out, want 0", got)
	}
}
