package helm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/util/retry"

	"github.com/go-logr/logr"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"
	"sigs.k8s.io/yaml"

	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// syncBuffer collects log lines from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// chartEnv is a real apiserver on which the chart's ServiceAccount, roles, ConfigMap and the
// webhook Secret are installed, and the controller runs with that ServiceAccount's token only.
type chartEnv struct {
	admin client.Client
	logs  *syncBuffer
	pool  string
	// engineVersion is the pool's engine version, which keys its snapshots.
	engineVersion string
	pod           *corev1.Pod
}

// startWithChartRBAC runs the controller with nothing but the chart's ServiceAccount token, so
// every request goes through the apiserver's RBAC authorizer with the chart's roles. The config
// is deploy/examples/local.yaml with its pool's cache on; edit may change it further.
func startWithChartRBAC(t *testing.T, opts operator.Options) *chartEnv {
	t.Helper()
	logs := &syncBuffer{}
	logger := zap.New(zap.WriteTo(logs))
	ctrl.SetLogger(logger)
	// Reflectors report list/watch errors through klog, not the manager's logger.
	klog.SetLogger(logger)
	t.Cleanup(func() { klog.SetLogger(logr.Discard()) })

	api := cluster.StartTestAPIServer(t)
	admin := api.Client
	ctx := t.Context()
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "examples", "local.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	pool := cfg["pools"].([]any)[0].(map[string]any)
	// A restore budget of seconds: the 10Gi snapshot below takes 5 s at 2Gi/s, so the restore
	// (which never runs: no kubelet) times out 9.5 s after it starts.
	pool["cache"] = map[string]any{"enabled": true, "storageClassName": "warmpool-sim", "snapshotClassName": "warmpool-sim", "size": "10Gi",
		"restore": map[string]any{"throughput": "2Gi", "maxWait": "12s", "provisioningSlack": "2s"}}
	pool["terminationGracePeriod"] = "1h"
	pool["scaling"].(map[string]any)["warmMinimum"] = 1
	// The controller must create the PriorityClass itself here; the chart's copy is tested apart.
	_, objs := render(t, map[string]any{"nodeClass": "kwok", "config": cfg, "priorityClass": map[string]any{"create": false}})

	saConfig, err := ServiceAccountConfig(ctx, api.Config, objs)
	if err != nil {
		t.Fatal(err)
	}
	// What `helm install` creates besides the identity: the config ConfigMap; and what the user
	// does: the webhook Secret the config names; and the pod this replica runs in.
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetName() == "warmpool" {
			if err := admin.Create(ctx, o.DeepCopy()); err != nil {
				t.Fatal(err)
			}
		}
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "warmpool-github"}, StringData: map[string]string{"webhook-secret": "s3cret"}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "warmpool-0", Labels: map[string]string{"app.kubernetes.io/name": "warmpool"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "controller", Image: "warmpool"}}},
	}
	for _, o := range []client.Object{secret, pod} {
		if err := admin.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	opts.Namespace, opts.ConfigMap, opts.NodeClass = namespace, "warmpool", nodepools.KWOKNodeClass
	opts.MetricsAddr, opts.ProbeAddr, opts.WebhookAddr = "0", "0", "127.0.0.1:0"
	opts.LeaderElection, opts.PodName, opts.SkipControllerNameValidation = true, pod.Name, true
	opts.CopierImage = "ghcr.io/warmpool/warmpool:test"
	mgr, err := operator.New(saConfig, opts)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	engineVersion := pool["engine"].(map[string]any)["version"].(string)
	return &chartEnv{admin: admin, logs: logs, pool: pool["name"].(string), engineVersion: engineVersion, pod: pod}
}

// checkNoRefusals fails the test on any request the apiserver refused the controller.
func (e *chartEnv) checkNoRefusals(t *testing.T) {
	t.Helper()
	if strings.Contains(strings.ToLower(e.logs.String()), "forbidden") {
		t.Errorf("the controller was refused requests with the chart's RBAC:\n%s", forbiddenLines(e.logs.String()))
	}
}

// With the chart's RBAC every informer syncs (a forbidden list/watch would never sync), the
// pools, scaling and cache controllers start, the controller takes the leader Lease, labels its
// pod, applies the NodePool, node class, engine DaemonSet, headroom Deployment and
// PriorityClass, and records Events. Any "forbidden" in its logs (or client-go's) fails it.
func TestChartRBACSufficesForTheController(t *testing.T) {
	e := startWithChartRBAC(t, operator.Options{})
	ctx := t.Context()
	type want struct {
		what string
		obj  client.Object
		key  client.ObjectKey
		ok   func(client.Object) bool
	}
	exists := func(client.Object) bool { return true }
	nodePool := &unstructured.Unstructured{}
	nodePool.SetGroupVersionKind(nodepools.NodePoolGV.WithKind("NodePool"))
	nodeClass := &unstructured.Unstructured{}
	nodeClass.SetGroupVersionKind(nodepools.KWOKNodeClassGV.WithKind("KWOKNodeClass"))
	for _, w := range []want{
		{"leader Lease", &coordinationv1.Lease{}, client.ObjectKey{Namespace: namespace, Name: operator.LeaderElectionID}, exists},
		{"leader label", &corev1.Pod{}, client.ObjectKeyFromObject(e.pod), func(o client.Object) bool { return o.GetLabels()[operator.LeaderLabel] == "true" }},
		{"NodePool", nodePool, client.ObjectKey{Name: nodepools.Name(e.pool)}, exists},
		{"KWOKNodeClass", nodeClass, client.ObjectKey{Name: nodepools.Name(e.pool)}, exists},
		{"engine DaemonSet", &appsv1.DaemonSet{}, client.ObjectKey{Namespace: namespace, Name: nodepools.EngineName(e.pool)}, exists},
		{"headroom PriorityClass", &schedulingv1.PriorityClass{}, client.ObjectKey{Name: nodepools.HeadroomPriorityClass}, exists},
		{"headroom Deployment", &appsv1.Deployment{}, client.ObjectKey{Namespace: namespace, Name: nodepools.HeadroomName(e.pool)}, exists},
	} {
		waitFor(t, e.logs, w.what, func() bool {
			err := e.admin.Get(ctx, w.key, w.obj)
			return err == nil && w.ok(w.obj)
		})
	}
	waitFor(t, e.logs, "a NodePoolApplied Event from warmpool", func() bool { return hasEvent(t, e.admin, "NodePoolApplied") })
	e.checkNoRefusals(t)
}

// The cache protocol's requests pass the chart's RBAC too: a restore (snapshot list, PVC and
// Job create, then on timeout their delete, the Node taint patch and a ColdStart Event) and a
// save (guard pod create, engine pod eviction, PVC and Job create). No kubelet runs here, so the
// Jobs never run: the test stops at each protocol's copy step.
func TestChartRBACSufficesForTheCacheProtocol(t *testing.T) {
	e := startWithChartRBAC(t, operator.Options{})
	ctx := t.Context()
	// The cluster's CSI storage, which the controller checks (reads) before it makes a volume:
	// the classes the pool names, and the driver registered on both nodes below.
	const driver = "sim.warmpool.io"
	for _, o := range []client.Object{
		&storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "warmpool-sim"}, Provisioner: driver},
		&snapshotv1.VolumeSnapshotClass{ObjectMeta: metav1.ObjectMeta{Name: "warmpool-sim"}, Driver: driver, DeletionPolicy: snapshotv1.VolumeSnapshotContentDelete},
		&storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: "fresh"}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: driver, NodeID: "fresh"}}}},
		&storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: "old"}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: driver, NodeID: "old"}}}},
	} {
		if err := e.admin.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	labels := map[string]string{nodepools.LabelPool: e.pool, corev1.LabelArchStable: "amd64"}
	ready := []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}

	// Restore: a ready snapshot of the pool, and a new node carrying the startup taint.
	snap := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "warmpool-dagger-old", Labels: map[string]string{
			volumes.LabelPool: e.pool, volumes.LabelArch: "amd64", volumes.LabelEngineVersion: e.engineVersion, nodepools.LabelManagedBy: nodepools.ManagedBy,
		}},
		Spec: snapshotv1.VolumeSnapshotSpec{Source: snapshotv1.VolumeSnapshotSource{VolumeSnapshotContentName: ptr.To("snapcontent-old")}, VolumeSnapshotClassName: ptr.To("warmpool-sim")},
	}
	if err := e.admin.Create(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if err := setStatus(ctx, e.admin, snap, func() {
		snap.Status = &snapshotv1.VolumeSnapshotStatus{ReadyToUse: ptr.To(true), RestoreSize: ptr.To(resource.MustParse("10Gi")), CreationTime: ptr.To(metav1.Now())}
	}); err != nil {
		t.Fatal(err)
	}
	fresh := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "fresh", Labels: labels},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{nodepools.StartupTaint}},
	}
	if err := e.admin.Create(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	if err := setStatus(ctx, e.admin, fresh, func() { fresh.Status.Conditions = ready }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, e.logs, "restore PVC and Job", func() bool {
		return e.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: volumes.RestoreName("fresh")}, &batchv1.Job{}) == nil &&
			e.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: volumes.RestoreName("fresh")}, &corev1.PersistentVolumeClaim{}) == nil
	})
	waitFor(t, e.logs, "startup taint removed after the restore timeout", func() bool {
		n := &corev1.Node{}
		if err := e.admin.Get(ctx, client.ObjectKey{Name: "fresh"}, n); err != nil {
			t.Fatal(err)
		}
		for _, taint := range n.Spec.Taints {
			if taint.Key == nodepools.StartupTaintKey {
				return false
			}
		}
		return true
	})
	waitFor(t, e.logs, "a ColdStart Event", func() bool { return hasEvent(t, e.admin, "ColdStart") })

	// Save: a node of the pool going away, with its engine pod on it.
	// Karpenter's termination taints the node before it drains it; the engine is stopped only then.
	old := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "old", Labels: labels, Finalizers: []string{"warmpool.io/test"}},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: karpv1.DisruptedTaintKey, Effect: corev1.TaintEffectNoSchedule}}},
	}
	if err := e.admin.Create(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := setStatus(ctx, e.admin, old, func() { old.Status.Conditions = ready }); err != nil {
		t.Fatal(err)
	}
	engine := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "engine-old", Labels: map[string]string{volumes.LabelEngineName: volumes.EngineName, volumes.LabelPool: e.pool}},
		Spec:       corev1.PodSpec{NodeName: "old", Containers: []corev1.Container{{Name: volumes.EngineContainer, Image: "dagger"}}},
	}
	if err := e.admin.Create(ctx, engine); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	guard := &corev1.Pod{}
	waitFor(t, e.logs, "guard pod", func() bool {
		return e.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: volumes.GuardName("old")}, guard) == nil
	})
	// No kubelet: run the guard by hand (the engine is stopped only once the guard runs).
	if err := setStatus(ctx, e.admin, guard, func() { guard.Status.Phase = corev1.PodRunning }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, e.logs, "engine pod evicted", func() bool {
		p := &corev1.Pod{}
		err := e.admin.Get(ctx, client.ObjectKeyFromObject(engine), p)
		return apierrors.IsNotFound(err) || err == nil && p.DeletionTimestamp != nil
	})
	// No kubelet: finish the engine pod's graceful exit by hand.
	if err := e.admin.Delete(ctx, engine, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
	waitFor(t, e.logs, "save PVC and Job", func() bool {
		return e.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: volumes.SaveName("old")}, &batchv1.Job{}) == nil &&
			e.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: volumes.SaveName("old")}, &corev1.PersistentVolumeClaim{}) == nil
	})
	e.checkNoRefusals(t)
}

func hasEvent(t *testing.T, kube client.Client, reason string) bool {
	t.Helper()
	events := &corev1.EventList{}
	if err := kube.List(t.Context(), events); err != nil {
		t.Fatal(err)
	}
	for _, ev := range events.Items {
		if ev.Source.Component == "warmpool" && ev.Reason == reason {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds; on timeout it fails with the controller's refusals.
func waitFor(t *testing.T, logs *syncBuffer, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s never appeared with the chart's RBAC; refusals in the log:\n%s\nlast log lines:\n%s", what, forbiddenLines(logs.String()), lastLines(logs.String(), 15))
}

func forbiddenLines(logs string) string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(strings.ToLower(l), "forbidden") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func lastLines(logs string, n int) string {
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// setStatus plays a kubelet or CSI controller: it sets obj's status with set, re-reading
// obj and retrying when the controller under test wrote it meanwhile.
func setStatus(ctx context.Context, c client.Client, obj client.Object, set func()) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		set()
		return c.Status().Update(ctx, obj)
	})
}
