package e2e_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/controller/pools"
	"warmpool.io/warmpool/controller/scaling"
	"warmpool.io/warmpool/deploy/helm"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/nodepools"
)

// TestWholeStoryWithChartIdentity is the product end to end, as installed by the chart: the real
// binary runs with the chart's ServiceAccount (a token for it, not admin), a real Prometheus
// scrapes it, and the whole story plays on real Karpenter: burst -> scale-up -> drain -> cache
// saved -> new burst -> warm restore. Then every query of the Grafana dashboard must return
// data from that Prometheus, and the Events must tell the same story.
func TestWholeStoryWithChartIdentity(t *testing.T) {
	ctx := t.Context()
	kube := local.Client

	if err := scenario.EnsureWebhookSecret(ctx, kube); err != nil {
		t.Fatal(err)
	}
	// The chart's identity: its ServiceAccount, roles and bindings, and a token for them.
	_, objs, err := helm.Render("warmpool", scenario.Namespace, nil)
	if err != nil {
		t.Fatal(err)
	}
	saConfig, err := helm.ServiceAccountConfig(ctx, local.Config, objs)
	if err != nil {
		t.Fatal(err)
	}
	saKubeconfig := filepath.Join(t.TempDir(), "sa.kubeconfig")
	if err := writeKubeconfig(saKubeconfig, saConfig); err != nil {
		t.Fatal(err)
	}

	if err := scenario.SetConfig(ctx, kube, scenario.StoryConfig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupStoryPool(t) })
	wp := startController(t, "warmpool", "--kubeconfig", saKubeconfig, "--copier-image", "ghcr.io/warmpool/warmpool:e2e")
	prom, err := cluster.StartPrometheus(ctx, cluster.PrometheusOptions{Targets: map[string][]string{"warmpool": {wp.MetricsAddr}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := prom.Stop(); err != nil {
			t.Errorf("stopping prometheus: %v", err)
		}
	})
	waitFor(t, "warmpool to lead and serve webhooks", func(ctx context.Context) (bool, error) {
		return wp.leading(ctx), nil
	})

	timeline := scenario.StartTimeline(ctx, kube, nil)
	t.Cleanup(func() {
		if t.Failed() {
			for _, e := range timeline.Entries() {
				t.Log(e)
			}
			for _, e := range local.Nodesim.Events() {
				t.Log(e)
			}
		}
	})
	gh := &scenario.GitHub{URL: "http://" + wp.WebhookAddr + "/webhooks/github", Secret: scenario.WebhookSecret}
	// The route is served as soon as the process leads; the secret follows the config.
	waitFor(t, "the webhook to verify signed deliveries", func(ctx context.Context) (bool, error) {
		return gh.Ping(ctx) == nil, nil
	})
	story := &scenario.Story{
		Kube:     kube,
		GitHub:   gh,
		Sim:      local.Nodesim,
		Timeline: timeline,
	}
	res, err := story.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("burst nodes %v saved to %v; %s started warm", res.BurstNodes, res.Snapshots, res.WarmNode)
	if len(res.BurstNodes) != 2 {
		t.Errorf("the burst of 2 jobs at 1 job per node booted %v, want 2 nodes", res.BurstNodes)
	}

	// The Events say it in words, with the reasons the docs list.
	for _, reason := range []string{pools.ReasonApplied, scaling.ReasonScaledUp, scaling.ReasonScaledDown,
		enginecache.ReasonColdStart, enginecache.ReasonSaved, enginecache.ReasonRestored} {
		waitFor(t, "an Event with reason "+reason, func(ctx context.Context) (bool, error) {
			return hasEvent(ctx, reason)
		})
	}

	// Prometheus has scraped the restore, so every panel has something to show.
	waitFor(t, "Prometheus to see the warm restore", func(ctx context.Context) (bool, error) {
		v, err := prom.Query(ctx, `sum(warmpool_cache_restores_total{result="warm"})`)
		vec, ok := v.(model.Vector)
		return err == nil && ok && len(vec) == 1 && vec[0].Value >= 1, err
	})
	checkDashboard(t, prom)

	// --- warmpool status (issue 14): the operator's view names what the story did, read
	// while the second burst's job is still queued.
	checkStatusAfterStory(t, wp.MetricsAddr, res)
	// --- end of warmpool status.

	if err := story.Finish(ctx); err != nil {
		t.Error(err)
	}

	// --- A node a job waits for skips its restore (issue 13, cache.restore.whenJobsWait's
	// default): with the pool drained, a queued job's new node starts cold at once although a
	// snapshot is ready, rather than keep the job waiting for the copy.
	if err := scenario.SetConfig(ctx, kube, strings.Replace(scenario.StoryConfig, "whenJobsWait: restore", "whenJobsWait: cold", 1)); err != nil {
		t.Fatal(err)
	}
	waitForWithin(t, 5*time.Minute, "the story pool drained (its last node saved and gone)", func(ctx context.Context) (bool, error) {
		nodes := &corev1.NodeList{}
		err := kube.List(ctx, nodes, client.MatchingLabels{nodepools.LabelPool: scenario.StoryPool})
		return err == nil && len(nodes.Items) == 0, err
	})
	if err := gh.Job(ctx, 4, "queued", scenario.StoryLabels...); err != nil {
		t.Fatal(err)
	}
	var cold string
	waitFor(t, "the new node waited for by a job to start cold (jobs-waiting)", func(ctx context.Context) (bool, error) {
		events := &corev1.EventList{}
		if err := kube.List(ctx, events, client.MatchingFields{"reason": enginecache.ReasonColdStart}); err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name != res.WarmNode && !slices.Contains(res.BurstNodes, e.InvolvedObject.Name) &&
				strings.Contains(e.Message, enginecache.ColdJobsWaiting) {
				cold = e.InvolvedObject.Name + ": " + e.Message
				return true, nil
			}
		}
		return false, nil
	})
	t.Logf("cold start for a waiting job: %s", cold)
	for _, want := range []string{"1 jobs of pool " + scenario.StoryPool, "its 0 usable nodes have 0", "whenJobsWait: restore"} {
		if !strings.Contains(cold, want) {
			t.Errorf("the cold start's note %q does not say %q", cold, want)
		}
	}
	if err := gh.Job(ctx, 4, "completed", scenario.StoryLabels...); err != nil {
		t.Error(err)
	}
}

// checkDashboard runs every query of deploy/dashboards/warmpool.json against prom, with the
// dashboard's variables set as Grafana would for "All" pools, and fails on an error or an empty
// result. A panel that shows nothing after the whole story is a broken panel.
func checkDashboard(t *testing.T, prom *cluster.Prometheus) {
	t.Helper()
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "deploy", "dashboards", "warmpool.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$pool", ".*", "$__rate_interval", "1m", "$__range", "1h", "$__interval", "15s")
	queries := 0
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			queries++
			expr := vars.Replace(target.Expr)
			v, err := prom.Query(t.Context(), expr)
			switch {
			case err != nil:
				t.Errorf("panel %q: %s: %v", p.Title, expr, err)
			case isEmpty(v):
				t.Errorf("panel %q: %s returned no series", p.Title, expr)
			}
		}
	}
	if queries < 15 {
		t.Errorf("the dashboard has %d queries; the check found too few to be reading it right", queries)
	}
	// The pool variable lists the story's pool.
	for _, v := range dash.Templating.List {
		if v.Name != "pool" {
			continue
		}
		if v.Definition != "label_values(warmpool_desired_nodes, pool)" {
			t.Errorf("pool variable %q: update this check with it", v.Definition)
		}
		values, _, err := prom.API.LabelValues(t.Context(), "pool", []string{"warmpool_desired_nodes"}, time.Now().Add(-time.Hour), time.Now())
		if err != nil || !slices.Contains(values, model.LabelValue(scenario.StoryPool)) {
			t.Errorf("pool variable values %v (%v), want %s among them", values, err, scenario.StoryPool)
		}
	}
}

func isEmpty(v model.Value) bool {
	switch v := v.(type) {
	case model.Vector:
		return len(v) == 0
	case model.Matrix:
		return len(v) == 0
	case nil:
		return true
	default:
		return false
	}
}

func hasEvent(ctx context.Context, reason string) (bool, error) {
	list := &corev1.EventList{}
	if err := local.Client.List(ctx, list, client.MatchingFields{"reason": reason}); err != nil {
		return false, err
	}
	return len(list.Items) > 0, nil
}

// writeKubeconfig writes a kubeconfig for cfg's server and bearer token.
func writeKubeconfig(path string, cfg *rest.Config) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData, CertificateAuthority: cfg.CAFile}
	kc.AuthInfos["warmpool"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["warmpool"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "warmpool"}
	kc.CurrentContext = "warmpool"
	return clientcmd.WriteToFile(*kc, path)
}

// cleanupStoryPool removes what the story left, after its controller is gone: runners, the
// NodePool (Karpenter then removes its nodes), the engine DaemonSet, the cache protocol's
// objects and the snapshots. The next test's controller applies its own config.
func cleanupStoryPool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	kube := local.Client
	pool := client.MatchingLabels{nodepools.LabelPool: scenario.StoryPool}
	ns := client.InNamespace(scenario.Namespace)
	for _, del := range []struct {
		obj  client.Object
		opts []client.DeleteAllOfOption
	}{
		{&corev1.Pod{}, []client.DeleteAllOfOption{ns, pool}}, // runners, guards, cache pods, engines
		{&batchv1.Job{}, []client.DeleteAllOfOption{ns, pool, client.PropagationPolicy(metav1.DeletePropagationBackground)}},
		{&appsv1.DaemonSet{}, []client.DeleteAllOfOption{ns, pool}},
		{&corev1.PersistentVolumeClaim{}, []client.DeleteAllOfOption{ns, pool}},
		{&snapshotv1.VolumeSnapshot{}, []client.DeleteAllOfOption{ns, pool}},
		{&karpv1.NodePool{}, []client.DeleteAllOfOption{pool}},
	} {
		if err := kube.DeleteAllOf(ctx, del.obj, del.opts...); err != nil {
			t.Errorf("cleanup %T: %v", del.obj, err)
		}
	}
	for ctx.Err() == nil {
		nodes := &corev1.NodeList{}
		if err := kube.List(ctx, nodes, pool); err == nil && len(nodes.Items) == 0 {
			return
		}
		// The pool's hold pods keep a deleted node until a save concludes, and this cleanup
		// saves nothing: take them (and any pod the DaemonSets' deletion left) away at once.
		_ = kube.DeleteAllOf(ctx, &corev1.Pod{}, ns, pool, client.GracePeriodSeconds(0))
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("the story pool's nodes were not removed: %v", ctx.Err())
}
