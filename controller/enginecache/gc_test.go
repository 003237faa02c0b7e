package enginecache_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/controller/operator/operatortest"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// startGC runs the GC controller alone: the save and restore controllers also clean up after
// vanished nodes, and would hide whether GC does.
func startGC(t *testing.T, namespace string, clk *clocktesting.FakeClock, cfgYAML string, opts ...func(*enginecache.Options)) *enginecache.Controllers {
	t.Helper()
	return startControllers(t, namespace, clk, cfgYAML, func(cc *enginecache.Controllers, mgr ctrl.Manager) error { return cc.GC.Register(mgr) }, opts...)
}

// startControllers runs the cache controllers register picks on a static config, without the
// rest of warmpool's manager.
func startControllers(t *testing.T, namespace string, clk *clocktesting.FakeClock, cfgYAML string, register func(*enginecache.Controllers, ctrl.Manager) error, opts ...func(*enginecache.Options)) *enginecache.Controllers {
	t.Helper()
	cfg, err := config.Parse([]byte(cfgYAML))
	if err != nil {
		t.Fatal(err)
	}
	scheme, err := operator.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	o := enginecache.Options{ConfigMap: types.NamespacedName{Namespace: namespace, Name: "warmpool"}}
	for _, f := range opts {
		f(&o)
	}
	cc := enginecache.New(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetEventRecorderFor("warmpool"), clk, //nolint:staticcheck
		func() *config.Config { return cfg }, o)
	if err := register(cc, mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
		cleanupCluster(t)
	})
	return cc
}

// snapshotNames lists the names of the namespace's snapshots that are not being deleted.
func snapshotNames(t testing.TB, namespace string) []string {
	t.Helper()
	list := &snapshotv1.VolumeSnapshotList{}
	if err := kube.List(t.Context(), list, client.InNamespace(namespace)); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range list.Items {
		if s.DeletionTimestamp == nil {
			out = append(out, s.Name)
		}
	}
	sort.Strings(out)
	return out
}

func owned(pool, op, node string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: "warmpool-" + op + "-" + node, Labels: map[string]string{
		nodepools.LabelManagedBy: nodepools.ManagedBy, volumes.LabelPool: pool, volumes.LabelOp: op, volumes.LabelNode: node,
	}}
}

func TestRetentionAndOrphans(t *testing.T) {
	pool, other := unique("gc"), unique("gc-other")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "warmpool-gc-"}}
	if err := kube.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	e := &env{Env: &operatortest.Env{T: t, Namespace: ns.Name}, clk: clocktesting.NewFakeClock(time.Now())}
	now := e.clk.Now()
	h := time.Hour
	day := 24 * h
	for _, s := range []struct {
		name, pool, arch, version string
		age                       time.Duration
		ready                     bool
	}{
		{"a1", pool, "amd64", engineVersion, 1 * h, true},
		{"a2", pool, "amd64", engineVersion, 2 * h, true},
		{"a3", pool, "amd64", engineVersion, 3 * h, true},             // beyond keep (2)
		{"restoring", pool, "amd64", engineVersion, 4 * h, true},      // beyond keep, but a restore reads it
		{"stuck", pool, "amd64", engineVersion, 25 * h, false},        // never became ready
		{"pending", pool, "amd64", engineVersion, time.Minute, false}, // being cut
		{"r-only-good", pool, "arm64", engineVersion, 8 * day, true},  // past max age, but a newer save failed
		{"r-failed", pool, "arm64", engineVersion, 1 * h, false},      // the failed newer save
		{"old-version", pool, "amd64", "v0.18.0", 8 * day, true},      // past max age, nothing newer
		{"other-pool", other, "amd64", engineVersion, 30 * day, true}, // pool not in the config: untouched
	} {
		e.newSnapshot(s.name, s.pool, s.arch, s.version, now.Add(-s.age), s.ready)
	}

	live := unique("gc-live")
	newNode(t, live, pool, "amd64")
	gone, goneBusy := unique("gc-gone"), unique("gc-gone-busy")
	objs := []client.Object{
		&corev1.Pod{ObjectMeta: owned(pool, volumes.OpGuard, gone), Spec: corev1.PodSpec{NodeName: gone, Containers: []corev1.Container{{Name: "guard", Image: "pause"}}}},
		&batchv1.Job{ObjectMeta: owned(pool, volumes.OpSave, gone), Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: owned(pool, volumes.OpSave, gone).Labels},
			Spec:       corev1.PodSpec{NodeName: gone, RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "copier", Image: "copier"}}},
		}}},
		pvc(owned(pool, volumes.OpSave, gone), gone, ""),
		// The source of the pending snapshot: still needed though its node is gone.
		pvc(metav1.ObjectMeta{Name: "warmpool-save-old-pending", Labels: owned(pool, volumes.OpSave, goneBusy).Labels}, goneBusy, ""),
		// A restore under way on a live node, reading the "restoring" snapshot.
		pvc(owned(pool, volumes.OpRestore, live), live, "restoring"),
	}
	for _, o := range objs {
		o.SetNamespace(ns.Name)
		if err := kube.Create(t.Context(), o); err != nil {
			t.Fatal(err)
		}
	}

	cc := startGC(t, ns.Name, e.clk, configHeader+poolYAML(pool))
	cc.EnqueueAll()
	want := []string{"a1", "a2", "other-pool", "pending", "r-failed", "r-only-good", "restoring"}
	eventually(t, "retention", func() error {
		if got := snapshotNames(t, ns.Name); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("snapshots %v, want %v", got, want)
		}
		return nil
	})
	eventually(t, "SnapshotPruned events", func() error {
		list := &corev1.EventList{}
		if err := kube.List(t.Context(), list, client.InNamespace(ns.Name)); err != nil {
			return err
		}
		pruned := map[string]string{}
		for _, ev := range list.Items {
			if ev.Reason == enginecache.ReasonPruned {
				pruned[ev.InvolvedObject.Name] = ev.Message
			}
		}
		if len(pruned) != 3 || pruned["a3"] == "" || pruned["stuck"] == "" || pruned["old-version"] == "" {
			return fmt.Errorf("pruned events %v", pruned)
		}
		return nil
	})
	waitMetric(t, "warmpool_cache_snapshots", map[string]string{"pool": pool, "arch": "amd64", "engine_version": engineVersion}, 3)
	waitMetric(t, "warmpool_cache_snapshots", map[string]string{"pool": pool, "arch": "arm64", "engine_version": engineVersion}, 1)

	// Orphans are only removed once past the grace period.
	consistently(t, "young leftovers stay", func() error {
		if !exists(t, owned(pool, volumes.OpGuard, gone).Name, ns.Name, &corev1.Pod{}) {
			return fmt.Errorf("guard of a gone node deleted inside the grace period")
		}
		return nil
	})
	e.clk.Step(enginecache.DefaultOrphanGrace + time.Minute)
	cc.EnqueueAll()
	e.waitGone(owned(pool, volumes.OpGuard, gone).Name, &corev1.Pod{})
	e.waitGone(owned(pool, volumes.OpSave, gone).Name, &batchv1.Job{})
	e.waitGone(owned(pool, volumes.OpSave, gone).Name, &corev1.PersistentVolumeClaim{})
	consistently(t, "what still serves something stays", func() error {
		if !exists(t, "warmpool-save-old-pending", ns.Name, &corev1.PersistentVolumeClaim{}) {
			return fmt.Errorf("the source of a pending snapshot was deleted")
		}
		if !exists(t, owned(pool, volumes.OpRestore, live).Name, ns.Name, &corev1.PersistentVolumeClaim{}) {
			return fmt.Errorf("the restore volume of a live node was deleted")
		}
		if got := snapshotNames(t, ns.Name); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("snapshots %v, want %v", got, want)
		}
		return nil
	})
}

func pvc(meta metav1.ObjectMeta, node, snapshot string) *corev1.PersistentVolumeClaim {
	meta.Annotations = map[string]string{volumes.SelectedNodeAnnotation: node}
	p := &corev1.PersistentVolumeClaim{ObjectMeta: meta, Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
	}}
	if snapshot != "" {
		p.Spec.DataSource = &corev1.TypedLocalObjectReference{APIGroup: ptr.To(snapshotv1.GroupName), Kind: "VolumeSnapshot", Name: snapshot}
	}
	return p
}
