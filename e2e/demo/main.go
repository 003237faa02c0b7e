// Command demo shows warmpool on a local cluster with real Karpenter (KWOK provider): the
// ConfigMap becomes a NodePool, a runner pod gets an NVMe node from it, and the node is
// consolidated away when the pod is gone. `make demo` runs it; `make demo HOLD=1` keeps the
// cluster up afterwards for kubectl.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/nodepools"
)

func main() {
	hold := flag.Bool("hold", false, "leave the cluster running at the end, until Ctrl-C")
	configPath := flag.String("config", "deploy/examples/local.yaml", "warmpool config to run")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *configPath, *hold); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func run(ctx context.Context, configPath string, hold bool) error {
	cfg, err := os.ReadFile(configPath)
	if err != nil {
		return err
	}
	step("Starting a local cluster: etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kwok, Karpenter (KWOK provider)")
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

	step("Starting warmpool with %s", configPath)
	logFile, err := os.Create(filepath.Join(c.WorkDir, "logs", "warmpool.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	if err := scenario.EnsureWebhookSecret(ctx, c.Client); err != nil {
		return err
	}
	wp, err := scenario.StartWarmpool(ctx, c.Config, c.Client, string(cfg), scenario.Options{Log: logFile, MetricsAddr: "127.0.0.1:0", WebhookAddr: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	defer wp.Stop()

	pools, err := waitNodePools(ctx, c.Client)
	if err != nil {
		return err
	}
	printNodePools(pools)

	pool := pools[0].Labels[nodepools.LabelPool]
	step("Submitting a CI runner pod for pool %q; the timeline follows", pool)
	timeline := scenario.StartTimeline(ctx, c.Client, os.Stdout)
	pod := scenario.RunnerPod(pool, "job-1")
	if err := c.Client.Create(ctx, pod); err != nil {
		return err
	}
	timeline.Note("pod job-1", "submitted")
	if err := waitUntil(ctx, 3*time.Minute, func() bool {
		_, ok := timeline.Find("pod job-1", "Running on "+pod.Spec.NodeName)
		p := &corev1.Pod{}
		return ok || (c.Client.Get(ctx, client.ObjectKeyFromObject(pod), p) == nil && p.Status.Phase == corev1.PodRunning)
	}); err != nil {
		return fmt.Errorf("runner pod never ran: %w", err)
	}
	if err := c.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
		return err
	}
	node := &corev1.Node{}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: pod.Spec.NodeName}, node); err != nil {
		return err
	}
	fmt.Printf("          the job runs on a %s with %s GB of NVMe\n", node.Labels[corev1.LabelInstanceTypeStable], node.Labels["karpenter.k8s.aws/instance-local-nvme"])

	time.Sleep(2 * time.Second) // let the reader see the running pod before it goes
	if err := c.Client.Delete(ctx, pod); err != nil {
		return err
	}
	timeline.Note("pod job-1", "deleted (job done)")
	if err := waitUntil(ctx, 3*time.Minute, func() bool {
		claims := &karpv1.NodeClaimList{}
		return c.Client.List(ctx, claims) == nil && len(claims.Items) == 0
	}); err != nil {
		return fmt.Errorf("node was never consolidated: %w", err)
	}
	time.Sleep(500 * time.Millisecond) // one more timeline poll, to print the node gone
	step("The empty node was consolidated away by Karpenter")

	if err := burst(ctx, c, wp, pool, timeline); err != nil {
		return err
	}
	step("Done")

	if hold {
		step("The cluster stays up until Ctrl-C. In another shell:\n    export KUBECONFIG=%s\n    kubectl get nodepools,nodeclaims,nodes\n    kubectl -n warmpool get events\n    kubectl -n warmpool edit configmap warmpool   # change the pools; warmpool applies it\n  warmpool logs: %s", c.Kubeconfig, filepath.Join(c.WorkDir, "logs", "warmpool.log"))
		<-ctx.Done()
	}
	return nil
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
	fmt.Fprintln(w, "  NAME\tNODECLASS\tREQUIREMENTS\tTAINTS\tCONSOLIDATION")
	for _, np := range pools {
		var reqs, taints []string
		for _, r := range np.Spec.Template.Spec.Requirements {
			reqs = append(reqs, fmt.Sprintf("%s %s %s", strings.TrimPrefix(r.Key, "karpenter.k8s.aws/"), r.Operator, strings.Join(r.Values, ",")))
		}
		for _, t := range np.Spec.Template.Spec.Taints {
			taints = append(taints, t.ToString())
		}
		fmt.Fprintf(w, "  %s\t%s/%s\t%s\t%s\t%s after %s\n", np.Name, np.Spec.Template.Spec.NodeClassRef.Kind, np.Spec.Template.Spec.NodeClassRef.Name,
			strings.Join(reqs, "; "), strings.Join(taints, ","), np.Spec.Disruption.ConsolidationPolicy, np.Spec.Disruption.ConsolidateAfter.String())
	}
	w.Flush()
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

// burst shows queue-driven scaling: webhook deliveries boot nodes before runner pods exist,
// runner pods take the placeholders' room, and the pool shrinks once the queue drains.
func burst(ctx context.Context, c *cluster.Cluster, wp *scenario.Warmpool, pool string, timeline *scenario.Timeline) error {
	select {
	case <-wp.Webhook.Bound:
	case <-ctx.Done():
		return ctx.Err()
	}
	gh := &scenario.GitHub{URL: "http://" + wp.Webhook.BoundAddr + "/webhooks/github", Secret: scenario.WebhookSecret}
	step("A burst: GitHub sends 4 workflow_job webhooks (queued, labels self-hosted,%s); 2 jobs per node", pool)
	for id := int64(1); id <= 4; id++ {
		if err := gh.Job(ctx, id, "queued", "self-hosted", pool); err != nil {
			return err
		}
	}
	timeline.Note("github", "4 jobs queued")
	if err := waitUntil(ctx, 3*time.Minute, func() bool { return readyNodes(ctx, c.Client, pool) == 2 }); err != nil {
		return fmt.Errorf("nodes never came up for the queued jobs: %w", err)
	}
	fmt.Println("          2 nodes are Ready before any runner pod exists (placeholder pods hold them)")
	step("Runner pods start the jobs; they preempt the placeholders")
	for id := int64(1); id <= 4; id++ {
		if err := c.Client.Create(ctx, scenario.RunnerPod(pool, fmt.Sprintf("job-b%d", id))); err != nil {
			return err
		}
		if err := gh.Job(ctx, id, "in_progress", "self-hosted", pool); err != nil {
			return err
		}
	}
	if err := waitUntil(ctx, 3*time.Minute, func() bool {
		pods := &corev1.PodList{}
		if c.Client.List(ctx, pods, client.InNamespace(scenario.Namespace), client.MatchingLabels{"app": "ci-runner"}) != nil {
			return false
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return running == 4
	}); err != nil {
		return fmt.Errorf("runner pods never ran: %w", err)
	}
	time.Sleep(2 * time.Second)
	step("The jobs complete; after the 15s scale-down window the pool is idle and Karpenter consolidates")
	for id := int64(1); id <= 4; id++ {
		if err := gh.Job(ctx, id, "completed", "self-hosted", pool); err != nil {
			return err
		}
		_ = c.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: scenario.Namespace, Name: fmt.Sprintf("job-b%d", id)}})
	}
	timeline.Note("github", "4 jobs completed")
	if err := waitUntil(ctx, 4*time.Minute, func() bool { return readyNodes(ctx, c.Client, pool) == 0 }); err != nil {
		return fmt.Errorf("the pool never shrank: %w", err)
	}
	time.Sleep(500 * time.Millisecond)
	return nil
}

func readyNodes(ctx context.Context, kube client.Client, pool string) int {
	n, err := scenario.ReadyNodes(ctx, kube, pool)
	if err != nil {
		return -1
	}
	return n
}
