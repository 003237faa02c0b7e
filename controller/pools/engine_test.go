package pools_test

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/controller/operator/operatortest"
	"warmpool.io/warmpool/controller/pools"
	"warmpool.io/warmpool/nodepools"
)

// engineConfig is a config whose cache-enabled pool a has the engine section engineA;
// extra pools follow.
func engineConfig(engineA, extra string) string {
	return fmt.Sprintf(`apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  role: KarpenterNodeRole-test
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: test}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: test}}]
pools:
  - name: a
    nvme: {minSizeGB: 100}
    engine: %s
    cache: {enabled: true}
%s`, engineA, extra)
}

// engineNames lists the engine objects of kind (DaemonSet or ConfigMap) in the namespace.
func engineNames(t *testing.T, namespace string, list client.ObjectList) []string {
	t.Helper()
	if err := kube.List(t.Context(), list, client.InNamespace(namespace), client.MatchingLabels{"app.kubernetes.io/name": "dagger-engine"}); err != nil {
		t.Fatal(err)
	}
	var names []string
	switch l := list.(type) {
	case *appsv1.DaemonSetList:
		for _, o := range l.Items {
			// A cache pool's hold DaemonSet carries the engine labels too (so it is pruned with
			// them); holdNames lists those.
			if o.DeletionTimestamp == nil && !strings.HasPrefix(o.Name, nodepools.NamePrefix+"hold-") {
				names = append(names, o.Name)
			}
		}
	case *corev1.ConfigMapList:
		for _, o := range l.Items {
			if o.DeletionTimestamp == nil {
				names = append(names, o.Name)
			}
		}
	}
	sort.Strings(names)
	return names
}

// holdNames lists the hold DaemonSets in the namespace.
func holdNames(t *testing.T, namespace string) []string {
	t.Helper()
	list := &appsv1.DaemonSetList{}
	if err := kube.List(t.Context(), list, client.InNamespace(namespace)); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range list.Items {
		if o.DeletionTimestamp == nil && strings.HasPrefix(o.Name, nodepools.NamePrefix+"hold-") {
			names = append(names, o.Name)
		}
	}
	sort.Strings(names)
	return names
}

func waitEngines(t *testing.T, namespace string, want ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("engine objects %v", want), func() error {
		if got := engineNames(t, namespace, &appsv1.DaemonSetList{}); !slices.Equal(got, want) {
			return fmt.Errorf("DaemonSets %v", got)
		}
		if got := engineNames(t, namespace, &corev1.ConfigMapList{}); !slices.Equal(got, want) {
			return fmt.Errorf("engine ConfigMaps %v", got)
		}
		return nil
	})
}

func getDaemonSet(t *testing.T, namespace, name string) *appsv1.DaemonSet {
	t.Helper()
	ds := &appsv1.DaemonSet{}
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: namespace, Name: name}, ds); err != nil {
		t.Fatal(err)
	}
	return ds
}

// initContainers are the parts of a pod's init containers warmpool sets and the API server
// does not default.
func initContainers(spec corev1.PodSpec) []string {
	var out []string
	for _, c := range spec.InitContainers {
		out = append(out, fmt.Sprintf("%s image=%s command=%q mounts=%v securityContext=%s", c.Name, c.Image, c.Command, c.VolumeMounts, c.SecurityContext))
	}
	return out
}

func TestEngineDaemonSetsApplied(t *testing.T) {
	doc := twoPools(100, poolB)
	// The engine pods install their drain hook from warmpool's own image: the one the cache
	// Jobs run.
	const image = "ghcr.io/warmpool/warmpool:pools-test"
	e := newEnv(t, doc, func(o *operator.Options) { o.CopierImage = image })
	waitEngines(t, e.Namespace, "warmpool-engine-a", "warmpool-engine-b")
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		want := nodepools.EngineDaemonSet(p, e.Namespace, image)
		got := getDaemonSet(t, e.Namespace, want.Name)
		if !equality.Semantic.DeepEqual(got.Labels, want.Labels) || !equality.Semantic.DeepEqual(got.Spec.Selector, want.Spec.Selector) {
			t.Errorf("%s labels %v selector %v, want %v %v", got.Name, got.Labels, got.Spec.Selector, want.Labels, want.Spec.Selector)
		}
		gotPod, wantPod := got.Spec.Template, want.Spec.Template
		if !equality.Semantic.DeepEqual(gotPod.Labels, wantPod.Labels) || !equality.Semantic.DeepEqual(gotPod.Annotations, wantPod.Annotations) {
			t.Errorf("%s pod metadata %v %v, want %v %v", got.Name, gotPod.Labels, gotPod.Annotations, wantPod.Labels, wantPod.Annotations)
		}
		for what, pair := range map[string][2]any{
			"tolerations":                   {gotPod.Spec.Tolerations, wantPod.Spec.Tolerations},
			"nodeSelector":                  {gotPod.Spec.NodeSelector, wantPod.Spec.NodeSelector},
			"terminationGracePeriodSeconds": {gotPod.Spec.TerminationGracePeriodSeconds, wantPod.Spec.TerminationGracePeriodSeconds},
			"volumes":                       {gotPod.Spec.Volumes, wantPod.Spec.Volumes},
			"preStop":                       {gotPod.Spec.Containers[0].Lifecycle, wantPod.Spec.Containers[0].Lifecycle},
			"image":                         {gotPod.Spec.Containers[0].Image, wantPod.Spec.Containers[0].Image},
			"initContainers":                {initContainers(gotPod.Spec), initContainers(wantPod.Spec)},
			"volumeMounts":                  {gotPod.Spec.Containers[0].VolumeMounts, wantPod.Spec.Containers[0].VolumeMounts},
		} {
			if !equality.Semantic.DeepEqual(pair[0], pair[1]) {
				t.Errorf("%s %s: stored %+v, rendered %+v", got.Name, what, pair[0], pair[1])
			}
		}
		if mf := got.GetManagedFields(); !slices.ContainsFunc(mf, func(f metav1.ManagedFieldsEntry) bool {
			return f.Manager == config.FieldManager && f.Operation == metav1.ManagedFieldsOperationApply
		}) {
			t.Errorf("%s was not server-side applied by field manager warmpool: %v", got.Name, mf)
		}
		cm := &corev1.ConfigMap{}
		if err := kube.Get(t.Context(), client.ObjectKey{Namespace: e.Namespace, Name: want.Name}, cm); err != nil {
			t.Fatal(err)
		}
		if cm.Data["engine.json"] != nodepools.EngineConfigJSON(p) || cm.Labels[nodepools.LabelManagedBy] != nodepools.ManagedBy {
			t.Errorf("ConfigMap %s: data %v labels %v", cm.Name, cm.Data, cm.Labels)
		}
	}
	e.waitEvent(pools.ReasonApplied, "pool a", "ConfigMap/warmpool-engine-a", "DaemonSet/warmpool-engine-a")
	// Only a pool that saves its cache gets a hold DaemonSet, the one nodepools renders.
	var wantHolds []string
	for i := range cfg.Pools {
		if hold := nodepools.HoldDaemonSet(&cfg.Pools[i], e.Namespace, image); hold != nil {
			wantHolds = append(wantHolds, hold.Name)
		}
	}
	eventually(t, fmt.Sprintf("hold DaemonSets %v", wantHolds), func() error {
		if got := holdNames(t, e.Namespace); !slices.Equal(got, wantHolds) {
			return fmt.Errorf("hold DaemonSets %v", got)
		}
		return nil
	})

	// Applying again changes nothing: no new generation, no write, so no watch event and no
	// reconcile loop.
	before := map[string]string{}
	for _, name := range []string{"warmpool-engine-a", "warmpool-engine-b"} {
		ds := getDaemonSet(t, e.Namespace, name)
		if ds.Generation != 1 {
			t.Errorf("%s generation %d, want 1: a re-apply changed its spec", name, ds.Generation)
		}
		before[name] = ds.ResourceVersion
	}
	reconciles := reconcileTotal(t)
	e.Mgr.Pools.Refresh()
	eventually(t, "another reconcile", func() error {
		if n := reconcileTotal(t); n <= reconciles {
			return fmt.Errorf("%v reconciles", n)
		}
		return nil
	})
	for name, rv := range before {
		if got := getDaemonSet(t, e.Namespace, name).ResourceVersion; got != rv {
			t.Errorf("%s written again by an unchanged config (resourceVersion %s -> %s)", name, rv, got)
		}
	}
}

// reconcileTotal is controller-runtime's count of finished pools reconciles.
func reconcileTotal(t *testing.T) float64 {
	t.Helper()
	return operatortest.Reconciles(t, "pools")
}

func TestEngineConfigChangeRollsPods(t *testing.T) {
	e := newEnv(t, engineConfig("{version: v0.19.7}", ""), nil)
	waitEngines(t, e.Namespace, "warmpool-engine-a")
	before := getDaemonSet(t, e.Namespace, "warmpool-engine-a").Spec.Template.Annotations[nodepools.AnnotationEngineConfig]
	e.SetConfig(engineConfig("{version: v0.19.7, gc: {maxUsedSpace: 80%}}", ""))
	eventually(t, "engine.json updated", func() error {
		cm := &corev1.ConfigMap{}
		if err := kube.Get(t.Context(), client.ObjectKey{Namespace: e.Namespace, Name: "warmpool-engine-a"}, cm); err != nil {
			return err
		}
		if !strings.Contains(cm.Data["engine.json"], `"maxUsedSpace": "80%"`) {
			return fmt.Errorf("engine.json %q", cm.Data["engine.json"])
		}
		return nil
	})
	eventually(t, "pod template changed", func() error {
		if after := getDaemonSet(t, e.Namespace, "warmpool-engine-a").Spec.Template.Annotations[nodepools.AnnotationEngineConfig]; after == before {
			return fmt.Errorf("checksum annotation still %s", after)
		}
		return nil
	})
}

func TestEnginePruned(t *testing.T) {
	e := newEnv(t, engineConfig("{version: v0.19.7}", poolB), nil)
	waitEngines(t, e.Namespace, "warmpool-engine-a", "warmpool-engine-b")
	// Something else warmpool owns in its namespace is not an engine, and is never pruned.
	other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: "warmpool-other",
		Labels: map[string]string{nodepools.LabelManagedBy: nodepools.ManagedBy, nodepools.LabelPool: "b"}}}
	if err := kube.Create(t.Context(), other); err != nil {
		t.Fatal(err)
	}

	e.SetConfig(engineConfig("{version: v0.19.7}", ""))
	waitEngines(t, e.Namespace, "warmpool-engine-a")
	e.waitEvent(pools.ReasonPruned, "pool b no longer has a generated engine: deleted DaemonSet warmpool-engine-b")
	e.waitEvent(pools.ReasonPruned, "pool b no longer has a generated engine: deleted ConfigMap warmpool-engine-b")

	// Pool a now names its own engine DaemonSet: warmpool's goes.
	e.SetConfig(engineConfig("{version: v0.19.7, existingDaemonSet: {matchLabels: {app: none-such}}}", ""))
	waitEngines(t, e.Namespace)
	e.waitEvent(pools.ReasonPruned, "pool a no longer has a generated engine: deleted DaemonSet warmpool-engine-a")
	if got := owned(t, "NodePool"); !slices.Equal(got, []string{"warmpool-a"}) {
		t.Errorf("NodePools %v, want pool a's kept", got)
	}
	if err := kube.Get(t.Context(), client.ObjectKeyFromObject(other), &corev1.ConfigMap{}); err != nil {
		t.Errorf("a ConfigMap warmpool owns that is not an engine's was touched: %v", err)
	}
}

func TestHandEditedEngineDaemonSetReverted(t *testing.T) {
	e := newEnv(t, engineConfig("{version: v0.19.7}", ""), nil)
	waitEngines(t, e.Namespace, "warmpool-engine-a")
	ds := getDaemonSet(t, e.Namespace, "warmpool-engine-a")
	ds.Spec.Template.Spec.Tolerations = append(ds.Spec.Template.Spec.Tolerations, corev1.Toleration{Operator: corev1.TolerationOpExists})
	if err := kube.Update(t.Context(), ds); err != nil {
		t.Fatal(err)
	}
	eventually(t, "blanket toleration removed", func() error {
		if tols := getDaemonSet(t, e.Namespace, "warmpool-engine-a").Spec.Template.Spec.Tolerations; len(tols) != 1 {
			return fmt.Errorf("tolerations %v", tols)
		}
		return nil
	})
}

// TestExistingDaemonSetContract: a pool naming its own engine DaemonSet (here in another
// namespace) gets none generated; each contract violation of the DaemonSet is a Warning Event,
// a conforming one yields none, and the next reconcile checks a changed DaemonSet again.
func TestExistingDaemonSetContract(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "dagger-"}}
	if err := kube.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	app := "byo-" + ns.Name
	doc := engineConfig(fmt.Sprintf("{version: v0.19.7, existingDaemonSet: {matchLabels: {app: %s}}}", app), "")
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	// A conforming DaemonSet: warmpool's own rendering, under the user's name and labels.
	ds := nodepools.EngineDaemonSet(&cfg.Pools[0], ns.Name, "")
	ds.Name, ds.Labels = "dagger-engine", map[string]string{"app": app}
	if err := kube.Create(t.Context(), ds); err != nil {
		t.Fatal(err)
	}

	e := newEnv(t, doc, nil)
	e.waitEvent(pools.ReasonApplied, "pool a", "NodePool/warmpool-a")
	if got := engineNames(t, e.Namespace, &appsv1.DaemonSetList{}); len(got) != 0 {
		t.Errorf("engine DaemonSets generated for a pool with its own: %v", got)
	}

	// Break it twice over; only these two are reported, so the conforming state reported nothing.
	ds = getDaemonSet(t, ns.Name, "dagger-engine")
	ds.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](300)
	ds.Spec.Template.Spec.Tolerations = append(ds.Spec.Template.Spec.Tolerations, corev1.Toleration{Key: "karpenter.sh/disrupted", Operator: corev1.TolerationOpExists})
	if err := kube.Update(t.Context(), ds); err != nil {
		t.Fatal(err)
	}
	e.Mgr.Pools.Refresh()
	prefix := fmt.Sprintf("pool a: DaemonSet %s/dagger-engine: ", ns.Name)
	want := []string{
		prefix + "spec.template.spec.terminationGracePeriodSeconds: is 300, want >= 330 (engine.stopSeconds 300 + 30 s to exit): the engine does not bound its own stop, so one still stopping when the grace period ends is SIGKILLed and loses its cache",
		prefix + "spec.template.spec.tolerations[1]: tolerates karpenter.sh/disrupted:NoSchedule: Karpenter never evicts such a pod, so the engine is killed with its node instead of stopping cleanly",
	}
	for _, w := range want {
		e.waitEvent(pools.ReasonEngineContractViolation, w)
	}
	if got := e.events(pools.ReasonEngineContractViolation); !slices.Equal(sorted(got), want) {
		t.Errorf("violation events:\n  %s\nwant exactly:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	assertWarnings(t, e)

	// Fixed: reported once as met.
	ds = getDaemonSet(t, ns.Name, "dagger-engine")
	ds.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](900)
	ds.Spec.Template.Spec.Tolerations = ds.Spec.Template.Spec.Tolerations[:1]
	if err := kube.Update(t.Context(), ds); err != nil {
		t.Fatal(err)
	}
	e.Mgr.Pools.Refresh()
	e.waitEvent(pools.ReasonEngineContractMet, "pool a: the engine DaemonSet now keeps the engine contract")

	// Gone: nothing runs the engine on the pool's nodes.
	if err := kube.Delete(t.Context(), ds); err != nil {
		t.Fatal(err)
	}
	e.Mgr.Pools.Refresh()
	e.waitEvent(pools.ReasonEngineContractViolation, "pool a: no DaemonSet matches engine.existingDaemonSet (app="+app+")")

	// Not watched (it may be in any namespace), so the config is reconciled again on a timer.
	res, err := e.Mgr.Pools.Reconcile(t.Context(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.ConfigMap)})
	if err != nil || res.RequeueAfter != pools.EngineRecheckInterval {
		t.Errorf("Reconcile = %+v, %v; want a requeue after %v", res, err, pools.EngineRecheckInterval)
	}
	e.SetConfig(engineConfig("{version: v0.19.7}", ""))
	waitEngines(t, e.Namespace, "warmpool-engine-a")
	if res, err := e.Mgr.Pools.Reconcile(t.Context(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.ConfigMap)}); err != nil || res.RequeueAfter != 0 {
		t.Errorf("Reconcile without existing DaemonSets = %+v, %v; want no requeue", res, err)
	}
}

// TestExistingChartDaemonSetReported: every violation of a typical Dagger chart install is one
// Event, exactly as the check function states it.
func TestExistingChartDaemonSetReported(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "dagger-"}}
	if err := kube.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	app := "chart-" + ns.Name
	labels := map[string]string{"name": "dagger-engine", "app": app}
	chart := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "dagger-dagger-helm-engine", Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					TerminationGracePeriodSeconds: ptr.To[int64](300),
					Containers: []corev1.Container{{
						Name: "dagger-engine", Image: "registry.dagger.io/engine:v0.19.7",
						VolumeMounts: []corev1.VolumeMount{{Name: "varlibdagger", MountPath: "/var/lib/dagger"}},
					}},
					Volumes: []corev1.Volume{{Name: "varlibdagger", VolumeSource: corev1.VolumeSource{
						HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/dagger-dagger-dagger-helm"}}}},
				},
			},
		},
	}
	if err := kube.Create(t.Context(), chart); err != nil {
		t.Fatal(err)
	}
	doc := engineConfig(fmt.Sprintf("{version: v0.19.7, existingDaemonSet: {matchLabels: {app: %s}}}", app), "")
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	stored := getDaemonSet(t, ns.Name, chart.Name)
	var want []string
	for _, v := range nodepools.CheckEngineDaemonSet(&cfg.Pools[0], stored) {
		want = append(want, fmt.Sprintf("pool a: DaemonSet %s/%s: %s", ns.Name, chart.Name, v))
	}
	if len(want) < 4 {
		t.Fatalf("test premise: the chart DaemonSet has %d violations, want several: %q", len(want), want)
	}

	e := newEnv(t, doc, nil)
	for _, w := range want {
		e.waitEvent(pools.ReasonEngineContractViolation, w)
	}
	if got := sorted(e.events(pools.ReasonEngineContractViolation)); !slices.Equal(got, sorted(want)) {
		t.Errorf("violation events:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	assertWarnings(t, e)
	// The user's DaemonSet is checked, never changed.
	if after := getDaemonSet(t, ns.Name, chart.Name); after.Generation != stored.Generation {
		t.Errorf("the user's DaemonSet was modified (generation %d -> %d)", stored.Generation, after.Generation)
	}
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: e.Namespace, Name: "warmpool-engine-a"}, &appsv1.DaemonSet{}); !apierrors.IsNotFound(err) {
		t.Errorf("warmpool-engine-a: %v, want not found", err)
	}
}

// assertWarnings checks every contract violation Event is a Warning.
func assertWarnings(t *testing.T, e *env) {
	t.Helper()
	list := &corev1.EventList{}
	if err := kube.List(t.Context(), list, client.InNamespace(e.Namespace)); err != nil {
		t.Fatal(err)
	}
	for _, ev := range list.Items {
		if ev.Reason == pools.ReasonEngineContractViolation && ev.Type != corev1.EventTypeWarning {
			t.Errorf("%s event of type %s: %s", ev.Reason, ev.Type, ev.Message)
		}
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
