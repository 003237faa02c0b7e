package status_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"warmpool.io/warmpool/cmd/warmpool/status"
	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/controller/pools"
	"warmpool.io/warmpool/controller/scaling"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/deploy/helm"
	"warmpool.io/warmpool/nodepools"
)

// metricsText is what the leader's /metrics says about the story pool's source.
func metricsText(pool string) string {
	return fmt.Sprintf(`# TYPE warmpool_queue_jobs gauge
warmpool_queue_jobs{pool=%q,source="github-webhook",state="queued"} 1
warmpool_queue_jobs{pool=%q,source="github-webhook",state="running"} 0
# TYPE warmpool_source_staleness_seconds gauge
warmpool_source_staleness_seconds{source="%s/github-webhook"} 4
`, pool, pool, pool)
}

func gather(t *testing.T, s *story, opts status.Options) *status.Report {
	t.Helper()
	if opts.Namespace == "" {
		opts.Namespace = s.namespace
	}
	opts.ConfigMap, opts.Now = "warmpool", time.Now()
	rep, err := status.Gather(t.Context(), kube, opts)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func findPool(t *testing.T, rep *status.Report, name string) *status.Pool {
	t.Helper()
	for i := range rep.Pools {
		if rep.Pools[i].Name == name {
			return &rep.Pools[i]
		}
	}
	t.Fatalf("no pool %s in %+v", name, rep.Pools)
	return nil
}

// After a story run, status names the pool, its NodePool and node class, the nodes desired and
// spare as recorded on the headroom, the busy state and its budget, the source's reading, the
// snapshots newest first with the base of the incremental one, the last save and the warm
// restore, the cold start, and the Events.
func TestStatusNamesWhatTheStoryDid(t *testing.T) {
	s := newStory(t)
	m, err := status.ParseMetrics(strings.NewReader(metricsText(s.pool)))
	if err != nil {
		t.Fatal(err)
	}
	rep := gather(t, s, status.Options{Metrics: m, MetricsSource: "http://127.0.0.1:8080/metrics"})
	if len(rep.Unknown) != 0 {
		t.Errorf("unknown with admin rights: %+v", rep.Unknown)
	}
	if !rep.Config.Found || rep.Config.Error != "" {
		t.Errorf("config %+v", rep.Config)
	}
	if got := []string{rep.Pools[0].Name, rep.Pools[1].Name}; !slices.Equal(got, []string{s.pool, s.idle}) {
		t.Errorf("pools %v, want the config's order", got)
	}
	p := findPool(t, rep, s.pool)
	if p.NodePool == nil || p.NodePool.Name != nodepools.Name(s.pool) || p.NodePool.NodeClass != "KWOKNodeClass/"+nodepools.Name(s.pool) || !p.NodePool.NodeClassFound {
		t.Errorf("NodePool %+v", p.NodePool)
	}
	if p.NodePool.Busy != "true" || len(p.NodePool.Budgets) == 0 || p.NodePool.Budgets[0].Nodes != "0" {
		t.Errorf("busy %q with budgets %+v, want busy with the blocking budget first", p.NodePool.Busy, p.NodePool.Budgets)
	}
	if p.Nodes.Current != 1 || p.Nodes.Ready != 1 || !slices.Equal(p.Nodes.Names, []string{s.warmNode}) {
		t.Errorf("nodes %+v", p.Nodes)
	}
	if p.Scaling.Desired == nil || *p.Scaling.Desired != 1 || p.Scaling.Spare == nil || *p.Scaling.Spare != 1 ||
		p.Scaling.HeadroomReplicas == nil || *p.Scaling.HeadroomReplicas != 0 ||
		p.Scaling.RecordedAt == nil || !p.Scaling.RecordedAt.Equal(s.recorded) {
		t.Errorf("scaling %+v", p.Scaling)
	}
	if len(p.Sources) != 1 || p.Sources[0].Name != "github-webhook" || p.Sources[0].Kind != "githubWebhook" ||
		p.Sources[0].Queued == nil || *p.Sources[0].Queued != 1 || *p.Sources[0].Running != 0 || *p.Sources[0].StalenessSeconds != 4 {
		t.Errorf("sources %+v", p.Sources)
	}
	c := p.Cache
	if !c.Enabled || c.Total != 2 || len(c.Snapshots) != 2 || c.Snapshots[0].Name != s.snapshots[1] || c.Snapshots[0].Base != s.snapshots[0] ||
		!c.Snapshots[0].Good || c.Snapshots[0].EngineVersion != engineVersion || c.Snapshots[0].Bytes == nil || *c.Snapshots[0].Bytes != 2<<30 {
		t.Errorf("snapshots %+v", c.Snapshots)
	}
	if c.LastSave == nil || c.LastSave.Result != "saved" || c.LastSave.Snapshot == "" || !slices.Contains(s.burst, c.LastSave.Node) {
		t.Errorf("last save %+v", c.LastSave)
	}
	if c.LastRestore == nil || c.LastRestore.Result != "warm" || c.LastRestore.Node != s.warmNode || c.LastRestore.Snapshot != s.snapshots[1] ||
		c.LastRestore.Reason != enginecache.ReasonRestored {
		t.Errorf("last restore %+v", c.LastRestore)
	}
	if len(c.ColdStarts) != 1 || c.ColdStarts[0].Node != s.burst[0] || c.ColdStarts[0].Result != enginecache.ColdNoSnapshot {
		t.Errorf("cold starts %+v", c.ColdStarts)
	}
	var reasons []string
	for _, e := range p.Events {
		reasons = append(reasons, e.Reason)
	}
	for _, want := range []string{scaling.ReasonScaledUp, enginecache.ReasonSaved, enginecache.ReasonRestored, enginecache.ReasonColdStart, "FailedDraining", pools.ReasonApplyFailed} {
		if !slices.Contains(reasons, want) {
			t.Errorf("events %v lack %s", reasons, want)
		}
	}
	if n := len(slices.DeleteFunc(slices.Clone(p.Events), func(e status.Event) bool { return e.Reason != pools.ReasonApplyFailed })); n != 1 {
		t.Errorf("%d ApplyFailed Events for pool %s, want its own one only: %+v", n, s.pool, p.Events)
	}
	if slices.Contains(reasons, "NodeRegistrationHealthy") {
		t.Errorf("events %v hold Karpenter's Normal condition Events without AllEvents", reasons)
	}
	all := findPool(t, gather(t, s, status.Options{AllEvents: true}), s.pool)
	if !slices.ContainsFunc(all.Events, func(e status.Event) bool { return e.Reason == "NodeRegistrationHealthy" }) {
		t.Errorf("AllEvents: %+v", all.Events)
	}
	idle := findPool(t, rep, s.idle)
	if idle.Scaling.Headroom != "" || idle.Cache.Enabled || len(idle.Events) != 0 {
		t.Errorf("idle pool %+v", idle)
	}
	// Its NodePool has no busy annotation (the scaling controller writes none for a pool that
	// was never busy): undecided while nothing records an evaluation, idle once its headroom
	// records one.
	if idle.NodePool == nil || idle.NodePool.Busy != "" {
		t.Errorf("idle pool's NodePool %+v before an evaluation, want busy undecided", idle.NodePool)
	}
	evaluated, err := json.Marshal(policy.State{LastEvaluation: s.recorded})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(configYAML(s.pool, s.idle)))
	if err != nil {
		t.Fatal(err)
	}
	d := nodepools.HeadroomDeployment(&cfg.Pools[1], s.namespace, 0)
	d.Annotations = map[string]string{scaling.AnnotationState: string(evaluated)}
	if err := kube.Create(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	if idle := findPool(t, gather(t, s, status.Options{}), s.idle); idle.NodePool == nil || idle.NodePool.Busy != "false" {
		t.Errorf("idle pool's NodePool %+v once evaluated, want busy \"false\"", idle.NodePool)
	}

	var out strings.Builder
	if err := status.Render(&out, rep); err != nil {
		t.Fatal(err)
	}
	contains(t, out.String(), "Pool "+s.pool, nodepools.Name(s.pool), "KWOKNodeClass/"+nodepools.Name(s.pool),
		"1 current (1 Ready), 1 desired (1 spare), headroom 0", s.snapshots[0], s.snapshots[1],
		"warm on node "+s.warmNode, "VolumeSnapshot "+s.namespace+"/"+s.snapshots[1], s.burst[0]+" ("+enginecache.ColdNoSnapshot+")", "ScaledUp", "github-webhook")
	t.Log("\n" + out.String())

	// One pool only; an unknown one is an error that lists the known ones.
	one := gather(t, s, status.Options{Pool: s.idle})
	if len(one.Pools) != 1 || one.Pools[0].Name != s.idle {
		t.Errorf("status %s gave %+v", s.idle, one.Pools)
	}
	_, err = status.Gather(t.Context(), kube, status.Options{Namespace: s.namespace, ConfigMap: "warmpool", Pool: "nope", Now: time.Now()})
	var nf *status.PoolNotFoundError
	if !errors.As(err, &nf) || !strings.Contains(err.Error(), s.pool) {
		t.Errorf("unknown pool: %v", err)
	}
}

// Without a metrics endpoint, the sources' readings are unknown and said to be.
func TestStatusWithoutMetricsSaysSourcesAreUnknown(t *testing.T) {
	s := newStory(t)
	rep := gather(t, s, status.Options{})
	p := findPool(t, rep, s.pool)
	if p.Sources[0].Queued != nil || !slices.Contains(p.Unknown, "sources") {
		t.Errorf("sources %+v, unknown %v", p.Sources, p.Unknown)
	}
	if len(rep.Unknown) != 0 {
		t.Errorf("no metrics endpoint asked for is not a failed read: %+v", rep.Unknown)
	}
	// A standby's endpoint has no source series: not a queue of zero.
	m, err := status.ParseMetrics(strings.NewReader("# TYPE warmpool_build_info gauge\nwarmpool_build_info{version=\"dev\"} 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	rep = gather(t, s, status.Options{Metrics: m, MetricsSource: "http://standby/metrics"})
	if len(rep.Unknown) != 1 || rep.Unknown[0].What != "metrics" || findPool(t, rep, s.pool).Sources[0].Queued != nil {
		t.Errorf("standby metrics: unknown %+v", rep.Unknown)
	}
}

// A namespace without warmpool is a clear error, not an empty report.
func TestStatusWithoutWarmpool(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "no-warmpool-"}}
	if err := kube.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	_, err := status.Gather(t.Context(), kube, status.Options{Namespace: ns.Name, ConfigMap: "warmpool", Now: time.Now()})
	var ni *status.NotInstalledError
	if !errors.As(err, &ni) || !strings.Contains(err.Error(), ns.Name+"/warmpool") {
		t.Errorf("got %v, want a NotInstalledError naming the ConfigMap", err)
	}
}

// viewerRole is the chart's warmpool-viewer ClusterRole's rules, one verb and resource each.
func viewerRole(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	_, objs, err := helm.Render("warmpool", "warmpool", map[string]any{"nodeClass": "kwok"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() != "ClusterRole" || o.GetName() != "warmpool-viewer" {
			continue
		}
		role := &rbacv1.ClusterRole{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, role); err != nil {
			t.Fatal(err)
		}
		var atoms []rbacv1.PolicyRule
		for _, r := range role.Rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						atoms = append(atoms, rbacv1.PolicyRule{APIGroups: []string{g}, Resources: []string{res}, Verbs: []string{v}, ResourceNames: r.ResourceNames})
					}
				}
			}
		}
		return atoms
	}
	t.Fatal("the chart renders no warmpool-viewer ClusterRole")
	return nil
}

// The chart's viewer role is enough for the whole report, and every rule of it is needed: with
// any one left out, the report names what it could not read.
func TestViewerRoleIsExactlyWhatStatusReads(t *testing.T) {
	s := newStory(t)
	atoms := viewerRole(t)
	user := unique("viewer")
	grant(t, user, atoms)
	rep, err := status.Gather(t.Context(), impersonating(t, user), status.Options{Namespace: s.namespace, ConfigMap: "warmpool", Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Unknown) != 0 {
		t.Errorf("the viewer role leaves unread: %+v", rep.Unknown)
	}
	if p := findPool(t, rep, s.pool); p.Cache.LastRestore == nil || len(p.Cache.Snapshots) != 2 {
		t.Errorf("the viewer reads %+v", p.Cache)
	}
	if _, _, err := status.ListSnapshots(t.Context(), impersonating(t, user), s.namespace, ""); err != nil {
		t.Errorf("the viewer cannot list snapshots: %v", err)
	}

	for i, dropped := range atoms {
		without := slices.Delete(slices.Clone(atoms), i, i+1)
		u := unique("viewer-without")
		grant(t, u, without)
		rep, err := status.Gather(t.Context(), impersonating(t, u), status.Options{Namespace: s.namespace, ConfigMap: "warmpool", Now: time.Now()})
		if err != nil {
			t.Errorf("without %v %v: %v", dropped.Verbs, dropped.Resources, err)
			continue
		}
		if len(rep.Unknown) == 0 {
			t.Errorf("the viewer role grants %v on %v, which status never needs", dropped.Verbs, dropped.Resources)
		}
	}
}

// A user who may not list VolumeSnapshots gets the rest of the report, with the snapshots
// marked unknown and the Forbidden named.
func TestStatusForbiddenKindIsNamedAndTheRestShown(t *testing.T) {
	s := newStory(t)
	atoms := slices.DeleteFunc(viewerRole(t), func(r rbacv1.PolicyRule) bool { return r.Resources[0] == "volumesnapshots" })
	user := unique("restricted")
	grant(t, user, atoms)
	rep, err := status.Gather(t.Context(), impersonating(t, user), status.Options{Namespace: s.namespace, ConfigMap: "warmpool", Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Unknown) != 1 || rep.Unknown[0].What != "VolumeSnapshot" || !strings.Contains(rep.Unknown[0].Reason, "forbidden") {
		t.Fatalf("unknown %+v, want the VolumeSnapshot Forbidden", rep.Unknown)
	}
	p := findPool(t, rep, s.pool)
	if p.NodePool == nil || p.Nodes.Current != 1 || p.Cache.LastRestore == nil || !slices.Contains(p.Unknown, "snapshots") || p.Cache.Total != 0 {
		t.Errorf("pool %+v", p)
	}
	var out strings.Builder
	if err := status.Render(&out, rep); err != nil {
		t.Fatal(err)
	}
	contains(t, out.String(), "Pool "+s.pool, "Cache:", "unknown (snapshots could not be read)",
		"NOT READ", "volumesnapshots in namespace "+s.namespace+": forbidden")
}
