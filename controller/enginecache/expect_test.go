package enginecache_test

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/controller/operator/operatortest"
	"warmpool.io/warmpool/controller/state"
	"warmpool.io/warmpool/volumes"
)

// The direct harness: the save and restore reconcilers called one reconcile at a time, as
// Karpenter's suites call theirs (pkg/test/expectations: ExpectObjectReconciled), instead of a
// manager whose effects are polled for. The reconcilers get the suite's API server through a
// plain client (no informer cache: every read sees the writes before it), a fake clock, and a
// recorder that keeps what they recorded. A test steps the protocol: reconcile, assert what that
// reconcile must have made, play the kubelet's, Karpenter's or the CSI driver's part, step the
// clock, reconcile again. Nothing runs between two reconciles, so every assertion is immediate
// and a reconcile that should have acted but waited fails the test at once.
//
// What only a manager checks (which watch wakes which reconcile, predicates, a hold against a
// real Node deletion, restarts) stays with the tests that run one (newEnv).

// direct is one test's namespace, config, fake clock, recorder and reconcilers, without a
// manager. Its env (with no manager: Env.Stop is a no-op) lends it the suite's helpers that play
// the other components' parts (newEnginePod, runJob, setSnapshotStatus, newSnapshot...).
type direct struct {
	*env
	// kube is the reconcilers' client; crash (durable_test.go) fails their Event creates.
	kube   *crashingClient
	events *eventLog
	ctrls  *enginecache.Controllers
	// jobs is the pools' job demand the restore controller reads, as the scaling controller
	// would record it (empty: no reading yet).
	jobs *state.Cluster
}

func newDirect(t *testing.T, pools ...string) *direct {
	t.Helper()
	ns := &corev1.Namespace{}
	ns.GenerateName = "warmpool-direct-"
	if err := kube.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(configHeader + strings.Join(pools, "")))
	if err != nil {
		t.Fatal(err)
	}
	// What the manager does when it puts a config in force (operator.cacheFollower).
	enginecache.InitMetrics(cfg)
	// The clock starts on a whole second: the protocol stamps times in RFC 3339 (whole seconds),
	// so durations measured from a stamp come out exact.
	d := &direct{
		env:    &env{Env: &operatortest.Env{T: t, Namespace: ns.Name}, clk: clocktesting.NewFakeClock(time.Now().Truncate(time.Second))},
		kube:   &crashingClient{Client: kube},
		events: &eventLog{},
		jobs:   state.NewCluster(kube),
	}
	// live is the plain client too: without a cache, the reconcilers' cached and live reads are
	// the same reads.
	d.ctrls = enginecache.New(d.kube, kube, d.events, d.clk, func() *config.Config { return cfg }, enginecache.Options{
		ConfigMap: types.NamespacedName{Namespace: ns.Name, Name: operatortest.ConfigMapName}, CopierImage: "copier:test", GuardImage: "pause:test",
		Jobs: d.jobs,
	})
	t.Cleanup(func() { cleanupCluster(t) })
	return d
}

// reconcile runs r for node once and returns what it returned.
func (d *direct) reconcile(r reconcile.Reconciler, node string) (reconcile.Result, error) {
	d.T.Helper()
	return r.Reconcile(d.T.Context(), reconcile.Request{NamespacedName: types.NamespacedName{Name: node}})
}

// expectReconciled runs r for node once, failing the test on an error (Karpenter's
// ExpectObjectReconciled).
func (d *direct) expectReconciled(r reconcile.Reconciler, node string) reconcile.Result {
	d.T.Helper()
	res, err := d.reconcile(r, node)
	if err != nil {
		d.T.Fatalf("reconcile of %s: %v", node, err)
	}
	return res
}

// save and restore reconcile node once with the save or the restore controller.
func (d *direct) save(node string) reconcile.Result {
	d.T.Helper()
	return d.expectReconciled(d.ctrls.Save, node)
}

func (d *direct) restore(node string) reconcile.Result {
	d.T.Helper()
	return d.expectReconciled(d.ctrls.Restore, node)
}

// expectRequeued asserts the reconcile asked to look again without an event within at most
// (the protocol polls what no watch reports, and always before a deadline it waits for).
func expectRequeued(t testing.TB, res reconcile.Result, atMost time.Duration) {
	t.Helper()
	if res.RequeueAfter <= 0 || res.RequeueAfter > atMost {
		t.Fatalf("reconcile result %+v, want a requeue within %s", res, atMost)
	}
}

// expectNotRequeued asserts the reconcile ended without a requeue: the protocol concluded, or
// waits for a watch event.
func expectNotRequeued(t testing.TB, res reconcile.Result) {
	t.Helper()
	if res != (reconcile.Result{}) {
		t.Fatalf("reconcile result %+v, want no requeue", res)
	}
}

// expectExists reads the object name of the test's namespace into obj, failing if it does not
// exist (or is being deleted).
func (d *direct) expectExists(name string, obj client.Object) {
	d.T.Helper()
	if !exists(d.T, name, d.Namespace, obj) {
		d.T.Fatalf("%T %s does not exist", obj, name)
	}
}

// expectGone fails if the object name of the test's namespace exists (and is not being deleted).
func (d *direct) expectGone(name string, obj client.Object) {
	d.T.Helper()
	if exists(d.T, name, d.Namespace, obj) {
		d.T.Fatalf("%T %s still exists", obj, name)
	}
}

// node reads the Node name.
func (d *direct) node(name string) *corev1.Node {
	d.T.Helper()
	n := &corev1.Node{}
	get(d.T, name, "", n)
	return n
}

// expectAnnotation asserts the Node's annotation key is want ("" : absent).
func (d *direct) expectAnnotation(node, key, want string) {
	d.T.Helper()
	got, ok := d.node(node).Annotations[key]
	if got != want || (want == "" && ok) {
		d.T.Fatalf("node %s annotation %s = %q (set: %v), want %q", node, key, got, ok, want)
	}
}

// nodeEvents are the notes of the Events of reason on the Node node: those the reconcilers
// recorded (the recorder's, kept by eventLog) and those their reports created in the API server
// (report.go), which are what a user lists.
func (d *direct) nodeEvents(node, reason string) []string {
	d.T.Helper()
	return append(d.events.notes("Node", node, reason), nodeEvents(d.T, node, reason)...)
}

// expectEvent asserts exactly one Event of reason on the Node, whose note contains every fragment,
// and returns its note. Exactly one: each step records its Event once per node (a report once
// per decision), however often the node is reconciled.
func (d *direct) expectEvent(node, reason string, fragments ...string) string {
	d.T.Helper()
	notes := d.nodeEvents(node, reason)
	if len(notes) != 1 || !operatortest.ContainsAll(notes[0], fragments...) {
		d.T.Fatalf("%s events on node %s: %q, want exactly one containing %q", reason, node, notes, fragments)
	}
	return notes[0]
}

// expectNoEvent asserts no Event of reason on the Node.
func (d *direct) expectNoEvent(node, reason string) {
	d.T.Helper()
	if notes := d.nodeEvents(node, reason); len(notes) != 0 {
		d.T.Fatalf("%s events on node %s: %q, want none", reason, node, notes)
	}
}

// expectMetric asserts a counter's or gauge's value, or a histogram's sample count.
func expectMetric(t testing.TB, name string, labels map[string]string, want float64) {
	t.Helper()
	if got := metric(t, name, labels); got != want {
		t.Fatalf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// runGuard plays the kubelet starting the node's guard pod.
func (d *direct) runGuard(node string) {
	d.T.Helper()
	g := &corev1.Pod{}
	d.expectExists(volumes.GuardName(node), g)
	g.Status = *runGuard(g)
	if err := kube.Status().Update(d.T.Context(), g); err != nil {
		d.T.Fatal(err)
	}
}

// eventLog is a record.EventRecorder that keeps every Event with the object it is on, formatted
// as the core/v1 recorder formats it (fmt.Sprintf of the note), so a test reads back what a
// reconcile recorded as soon as it returns. (The real recorder sends asynchronously, and
// client-go's FakeRecorder drops the object's name.)
type eventLog struct {
	mu     sync.Mutex
	events []loggedEvent
}

type loggedEvent struct{ kind, name, eventType, reason, note string }

func (l *eventLog) Event(obj runtime.Object, eventType, reason, note string) {
	name := ""
	if m, err := meta.Accessor(obj); err == nil {
		name = m.GetName()
	}
	kind := obj.GetObjectKind().GroupVersionKind().Kind
	if kind == "" {
		// Typed objects carry no TypeMeta; the recorder looks their kind up in the scheme.
		kind = reflect.TypeOf(obj).Elem().Name()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, loggedEvent{kind: kind, name: name, eventType: eventType, reason: reason, note: note})
}

func (l *eventLog) Eventf(obj runtime.Object, eventType, reason, format string, args ...any) {
	l.Event(obj, eventType, reason, fmt.Sprintf(format, args...))
}

func (l *eventLog) AnnotatedEventf(obj runtime.Object, _ map[string]string, eventType, reason, format string, args ...any) {
	l.Eventf(obj, eventType, reason, format, args...)
}

// notes are the notes of the Events of reason on the object kind/name.
func (l *eventLog) notes(kind, name, reason string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		if e.kind == kind && e.name == name && e.reason == reason {
			out = append(out, e.note)
		}
	}
	return out
}
