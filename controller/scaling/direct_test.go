package scaling_test

import (
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
	"warmpool.io/warmpool/controller/state"
	"warmpool.io/warmpool/nodepools"
)

// direct drives the scaling reconciler by hand, without a manager, against the real API
// server and with a fake clock: protocol tests step by step. Its pool has one queue source,
// "ci". start makes a new process (a new controller and tracker, nothing kept in memory).
type direct struct {
	t       testing.TB
	clk     *clocktesting.FakeClock
	kc      client.Client
	ns      string
	pool    string
	cfg     *config.Config
	tracker *queue.Tracker
	c       *scaling.Controller
}

// newDirect parses a config of one pool with the ci source and the given scaling line, and
// starts the first process. funcs, when set, intercept the controller's client calls.
func newDirect(t testing.TB, pool, scalingLine string, funcs *interceptor.Funcs) *direct {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "warmpool-scaling-"}}
	if err := kube.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupCluster(t) })
	cfg, err := config.Parse([]byte(configYAML(poolYAML(pool, ciSource, scalingLine))))
	if err != nil {
		t.Fatal(err)
	}
	d := &direct{t: t, clk: clocktesting.NewFakeClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)), kc: kube, ns: ns.Name, pool: pool, cfg: cfg}
	if funcs != nil {
		watching, err := client.NewWithWatch(restConfig, client.Options{Scheme: kube.Scheme()})
		if err != nil {
			t.Fatal(err)
		}
		d.kc = interceptor.NewClient(watching, *funcs)
	}
	d.start()
	return d
}

// start begins a new process: its tracker knows nothing of the queue yet.
func (d *direct) start() {
	d.tracker = queue.NewTracker(d.clk, time.Hour)
	d.tracker.SetSources(map[string][]string{d.pool: {"ci"}})
	cluster := state.NewCluster(d.kc)
	cluster.SetConfig(d.t.Context(), d.cfg)
	d.c = scaling.NewController(d.kc, &record.FakeRecorder{}, d.clk, d.tracker, cluster, d.ns)
	d.c.SetInterval(time.Hour)
}

func (d *direct) record(c queue.Counts) {
	d.tracker.Record(queue.Key{Pool: d.pool, Source: "ci"}, c, nil)
}

// evaluate runs one reconcile of the pool.
func (d *direct) evaluate() reconcile.Result {
	d.t.Helper()
	res, err := d.c.Reconcile(d.t.Context(), reconcile.Request{NamespacedName: types.NamespacedName{Name: d.pool}})
	if err != nil {
		d.t.Fatal(err)
	}
	return res
}

// replicas reads the headroom Deployment's replicas from the API server.
func (d *direct) replicas() int32 {
	d.t.Helper()
	dep := &appsv1.Deployment{}
	if err := kube.Get(d.t.Context(), client.ObjectKey{Namespace: d.ns, Name: nodepools.HeadroomName(d.pool)}, dep); err != nil {
		d.t.Fatal(err)
	}
	return *dep.Spec.Replicas
}

// wantReplicas evaluates and checks the headroom.
func (d *direct) wantReplicas(what string, want int32) reconcile.Result {
	d.t.Helper()
	res := d.evaluate()
	if got := d.replicas(); got != want {
		d.t.Fatalf("%s: headroom %d, want %d", what, got, want)
	}
	return res
}
