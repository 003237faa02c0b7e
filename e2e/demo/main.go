// Command demo shows warmpool's whole story on a local cluster with real Karpenter (KWOK
// provider) and a real Prometheus: the ConfigMap becomes a NodePool; a burst of queued GitHub
// jobs boots nodes before any runner pod exists; the queue drains and Karpenter consolidates the
// nodes while their Dagger engine caches are saved to snapshots; the next burst's node starts
// with a cache restored. `make demo` runs it; `make demo HOLD=1` keeps everything up afterwards
// for kubectl and Prometheus.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/cmd/warmpool/status"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/nodepools"
)

func main() {
	hold := flag.Bool("hold", false, "leave the cluster, warmpool and Prometheus running at the end, until Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *hold); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func run(ctx context.Context, hold bool) error {
	step("Starting a local cluster: etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kwok, Karpenter (KWOK provider) and nodesim (plays the kubelet for cache Jobs, the CSI driver and the Dagger engine)")
	c, err := cluster.Start(ctx, cluster.Options{Log: os.Stdout})
	if err != nil {
		return err
	}
	defer func() {
		step("Tearing down (logs stay in %s)", c.WorkDir)
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping cluster:", err)
		}
	}()

	step("Starting warmpool with the story config (one cache-enabled pool %q fed by GitHub webhooks)", scenario.StoryPool)
	logPath := filepath.Join(c.WorkDir, "logs", "warmpool.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	if err := scenario.EnsureWebhookSecret(ctx, c.Client); err != nil {
		return err
	}
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	wp, err := scenario.StartWarmpool(ctx, c.Config, c.Client, scenario.StoryConfig, scenario.Options{Log: logFile, MetricsAddr: metricsAddr, WebhookAddr: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	defer wp.Stop()
	prom, err := cluster.StartPrometheus(ctx, cluster.PrometheusOptions{Targets: map[string][]string{"warmpool": {metricsAddr}}})
	if err != nil {
		return err
	}
	defer prom.Stop()
	fmt.Printf("          Prometheus scrapes warmpool at %s: %s\n", metricsAddr, prom.URL)

	pools, err := waitNodePools(ctx, c.Client)
	if err != nil {
		return err
	}
	printNodePools(pools)

	select {
	case <-wp.Webhook.Bound:
	case <-ctx.Done():
		return ctx.Err()
	}
	gh := &scenario.GitHub{URL: "http://" + wp.Webhook.BoundAddr + "/webhooks/github", Secret: scenario.WebhookSecret}
	if err := waitUntil(ctx, time.Minute, func() bool { return gh.Ping(ctx) == nil }); err != nil {
		return fmt.Errorf("the webhook never verified a signed ping: %w", err)
	}
	timeline := scenario.StartTimeline(ctx, c.Client, os.Stdout)
	story := &scenario.Story{Kube: c.Client, GitHub: gh, Sim: c.Nodesim, Timeline: timeline, Out: os.Stdout}
	res, err := story.Run(ctx)
	if err != nil {
		return err
	}
	time.Sleep(time.Second) // one more timeline poll
	step("What the cluster's Events say (kubectl get events)")
	if err := printEvents(ctx, c.Client); err != nil {
		return err
	}
	step("What warmpool status says (warmpool status --namespace %s --metrics-url http://%s/metrics)", scenario.Namespace, metricsAddr)
	if err := printStatus(ctx, c.Client, metricsAddr); err != nil {
		return err
	}
	step("Done: %d nodes booted ahead of the burst, their caches saved to %d snapshots, and %s started warm", len(res.BurstNodes), len(res.Snapshots), res.WarmNode)

	if hold {
		step("Everything stays up until Ctrl-C. In another shell:\n    export KUBECONFIG=%s\n    kubectl get nodepools,nodeclaims,nodes\n    kubectl -n warmpool get pods,volumesnapshots,events\n    kubectl -n warmpool edit configmap warmpool   # change the pools; warmpool applies it\n    %s status --metrics-url http://%s/metrics   # what each pool is doing, and why\n  Prometheus: %s   (try warmpool_desired_nodes, warmpool_cache_saves_total; the dashboard's queries are in deploy/dashboards/warmpool.json)\n  warmpool metrics: http://%s/metrics\n  warmpool logs: %s", c.Kubeconfig, c.Warmpool, metricsAddr, prom.URL, metricsAddr, logPath)
		<-ctx.Done()
	}
	return story.Finish(context.Background())
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitNodePools(ctx context.Context, kube client.Client) ([]karpv1.NodePool, error) {
	var pools []karpv1.NodePool
	err := waitUntil(ctx, time.Minute, func() bool {
		list := &karpv1.NodePoolList{}
		if kube.List(ctx, list, client.MatchingLabels{nodepools.LabelManagedBy: nodepools.ManagedBy}) != nil || len(list.Items) == 0 {
			return false
		}
		pools = list.Items
		return true
	})
	return pools, err
}

func printNodePools(pools []karpv1.NodePool) {
	step("warmpool applied %d NodePool(s):", len(pools))
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  NAME\tNODECLASS\tREQUIREMENTS\tTAINTS\tSTARTUP TAINTS\tCONSOLIDATION")
	for _, np := range pools {
		var reqs, taints, startup []string
		for _, r := range np.Spec.Template.Spec.Requirements {
			reqs = append(reqs, fmt.Sprintf("%s %s %s", strings.TrimPrefix(r.Key, "karpenter.k8s.aws/"), r.Operator, strings.Join(r.Values, ",")))
		}
		for _, t := range np.Spec.Template.Spec.Taints {
			taints = append(taints, t.ToString())
		}
		for _, t := range np.Spec.Template.Spec.StartupTaints {
			startup = append(startup, t.ToString())
		}
		fmt.Fprintf(w, "  %s\t%s/%s\t%s\t%s\t%s\t%s after %s\n", np.Name, np.Spec.Template.Spec.NodeClassRef.Kind, np.Spec.Template.Spec.NodeClassRef.Name,
			strings.Join(reqs, "; "), strings.Join(taints, ","), strings.Join(startup, ","), np.Spec.Disruption.ConsolidationPolicy, np.Spec.Disruption.ConsolidateAfter.String())
	}
	w.Flush()
}

// printStatus prints what `warmpool status` prints for the demo's cluster: the same gathering
// and rendering, in this process.
func printStatus(ctx context.Context, kube client.Client, metricsAddr string) error {
	url := "http://" + metricsAddr + "/metrics"
	opts := status.Options{Namespace: scenario.Namespace, ConfigMap: "warmpool", MetricsSource: url, Now: time.Now()}
	m, err := status.FetchMetrics(ctx, url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading warmpool's metrics:", err)
		opts.MetricsSource = ""
	}
	opts.Metrics = m
	rep, err := status.Gather(ctx, kube, opts)
	if err != nil {
		return fmt.Errorf("warmpool status, %w", err)
	}
	return status.Render(os.Stdout, rep)
}

// printEvents lists warmpool's Events in time order, as `kubectl get events` would.
func printEvents(ctx context.Context, kube client.Client) error {
	list := &corev1.EventList{}
	if err := kube.List(ctx, list); err != nil {
		return err
	}
	events := slices.DeleteFunc(list.Items, func(e corev1.Event) bool {
		return e.Source.Component != "warmpool" && e.ReportingController != "warmpool"
	})
	slices.SortFunc(events, func(a, b corev1.Event) int { return a.LastTimestamp.Compare(b.LastTimestamp.Time) })
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  TYPE\tREASON\tOBJECT\tMESSAGE")
	for _, e := range events {
		msg := e.Message
		if len(msg) > 110 {
			msg = msg[:107] + "..."
		}
		fmt.Fprintf(w, "  %s\t%s\t%s/%s\t%s\n", e.Type, e.Reason, strings.ToLower(e.InvolvedObject.Kind), e.InvolvedObject.Name, msg)
	}
	return w.Flush()
}

func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return nil
}
