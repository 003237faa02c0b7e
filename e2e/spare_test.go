package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/nodepools"
)

// sparePool is the pool of TestSpareNodesAheadOfArrivals; no other test uses the name.
const sparePool = "spare"

// spareConfig is a webhook-fed pool with a floor of one node and an adaptive spare whose knobs
// are shrunk to fit a test: the shortest rate window there is (1m, so the rate is known after
// 30 s), a boot of 6 s (a KWOK node's), and a median (50%) target, so a stream of one job every
// 3 s (λ·boot = 2) asks for 2 spare nodes, under the max of 3, and none a minute after it stops.
var spareConfig = `apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  role: KarpenterNodeRole-local
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: local}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: local}}]
webhook:
  secretRef: {name: warmpool-github, key: webhook-secret}
pools:
  - name: ` + sparePool + `
    architectures: [amd64]
    nvme: {minSizeGB: 200}
    limits: {nodes: 8}
    disruption: {consolidationPolicy: WhenEmpty, consolidateAfter: 5s}
    engine: {version: v0.19.7}
    queue:
      sources:
        - githubWebhook: {labels: [self-hosted, ` + sparePool + `]}
    scaling:
      jobsPerNode: 1
      runnerRequests: {cpu: "1", memory: 2Gi}
      warmMinimum: 1
      scaleDownStabilization: 10s
      spare: {mode: adaptive, window: 1m, bootTime: 6s, probability: 50, max: 3}
      burstHold: {percent: 0}
`

var spareLabels = []string{"self-hosted", sparePool, "linux"}

// TestSpareNodesAheadOfArrivals: a steady stream of signed webhook jobs makes warmpool keep
// spare nodes, sized from the arrival rate it observed, Ready ahead of the next jobs; a new
// job's runner runs on a node that was Ready before the job was queued. When the stream stops
// the spare goes, and Karpenter consolidates the pool to its floor, keeping the node that ran
// jobs: the placeholders on the cold nodes were deleted first (pod-deletion-cost).
func TestSpareNodesAheadOfArrivals(t *testing.T) {
	ctx := t.Context()
	kube := local.Client
	began := time.Now()
	if err := scenario.EnsureWebhookSecret(ctx, kube); err != nil {
		t.Fatal(err)
	}
	if err := scenario.SetConfig(ctx, kube, spareConfig); err != nil {
		t.Fatal(err)
	}
	// Registered before the controller starts, so it runs after the controller is killed.
	t.Cleanup(func() { cleanupSparePool(t) })
	wp := startController(t, "warmpool")
	waitFor(t, "warmpool to lead", func(ctx context.Context) (bool, error) { return wp.leading(ctx), nil })
	gh := &scenario.GitHub{URL: "http://" + wp.WebhookAddr + "/webhooks/github", Secret: scenario.WebhookSecret}
	waitFor(t, "the webhook to verify signed deliveries", func(ctx context.Context) (bool, error) {
		return gh.Ping(ctx) == nil, nil
	})
	waitFor(t, "the floor: 1 Ready node in pool "+sparePool, func(ctx context.Context) (bool, error) {
		n, err := readyNodes(ctx, sparePool)
		return n == 1, err
	})
	t.Logf("floor up after %s", time.Since(began).Round(time.Second))

	stream := &jobStream{kube: kube, gh: gh, ran: map[string]bool{}, done: make(chan struct{})}
	streamCtx, stopStream := context.WithCancel(ctx)
	go stream.run(streamCtx, 3*time.Second, 4*time.Second)
	// A failed test stops its stream too; its jobs end before the pool is cleaned up.
	t.Cleanup(func() { stopStream(); stream.wait() })

	// The spare comes from the arrival rate, once a half window of arrivals was observed, and
	// its nodes are Ready and idle while the stream goes on.
	waitFor(t, "a spare from the arrival rate, on idle Ready nodes", func(ctx context.Context) (bool, error) {
		if err := stream.err(); err != nil {
			return false, err
		}
		samples, err := scrape(ctx, wp.MetricsAddr, "warmpool_spare_nodes", "warmpool_spare_from")
		if err != nil {
			return false, err
		}
		spare := sampleValue(samples, "warmpool_spare_nodes", map[string]string{"pool": sparePool})
		fromRate := sampleValue(samples, "warmpool_spare_from", map[string]string{"pool": sparePool, "from": string(policy.SpareArrivalRate)})
		idle, err := idleReadyNodes(ctx, kube)
		return spare >= 1 && fromRate == 1 && len(idle) >= 1, err
	})
	t.Logf("spare from the arrival rate after %s", time.Since(began).Round(time.Second))

	// The next job: the nodes Ready now, before it is queued, are where its runner must run.
	readyBefore, err := readyNodeNames(ctx, kube)
	if err != nil {
		t.Fatal(err)
	}
	probe := stream.job(ctx, 4*time.Second)
	if probe.err != nil {
		t.Fatal(probe.err)
	}
	if !slices.Contains(readyBefore, probe.node) {
		t.Errorf("job %d's runner ran on %s, which was not Ready when the job was queued (Ready then: %v): it waited for a boot",
			probe.id, probe.node, readyBefore)
	}
	t.Logf("job %d ran on %s, Ready before it was queued (%v); %d jobs so far", probe.id, probe.node, readyBefore, stream.count())

	// The stream stops: every job completes and its runner goes.
	stopStream()
	stream.wait()
	if err := stream.err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stream stopped after %s, %d jobs on nodes %v", time.Since(began).Round(time.Second), stream.count(), slices.Sorted(maps.Keys(stream.nodes())))
	ran, stopped := stream.nodes(), time.Now()

	// The headroom shrinks to the floor; which placeholders go is the ReplicaSet's choice by
	// their deletion cost. Remember where they were before the last shrink.
	var before, prev []placeholderAt
	var spareGone, floorHeadroom time.Time
	lastReplicas := int32(-1)
	waitFor(t, "no spare, and pool "+sparePool+" consolidated to its floor of 1 node", func(ctx context.Context) (bool, error) {
		d := &appsv1.Deployment{}
		if err := kube.Get(ctx, client.ObjectKey{Namespace: scenario.Namespace, Name: nodepools.HeadroomName(sparePool)}, d); err != nil {
			return false, err
		}
		cur, err := placeholders(ctx, kube)
		if err != nil {
			return false, err
		}
		if *d.Spec.Replicas < lastReplicas && len(prev) >= 2 {
			// As they were when the headroom shrank, if there was a choice: a shrink that only
			// drops a pending placeholder (deleted first, having no node) chooses nothing.
			before = prev
		}
		prev, lastReplicas = cur, *d.Spec.Replicas
		samples, err := scrape(ctx, wp.MetricsAddr, "warmpool_spare_nodes")
		if err != nil {
			return false, err
		}
		nodes := nodeNames(ctx, t, sparePool)
		spare := sampleValue(samples, "warmpool_spare_nodes", map[string]string{"pool": sparePool})
		if spare == 0 && spareGone.IsZero() {
			spareGone = time.Now()
		}
		if lastReplicas == 1 && floorHeadroom.IsZero() {
			floorHeadroom = time.Now()
		}
		return spare == 0 && len(nodes) == 1 && lastReplicas == 1 && len(cur) == 1 && cur[0].node == nodes[0], nil
	})
	t.Logf("after the stream stopped: spare 0 at +%s, headroom at the floor at +%s", spareGone.Sub(stopped).Round(time.Second), floorHeadroom.Sub(stopped).Round(time.Second))
	t.Logf("at the floor after %s", time.Since(began).Round(time.Second))
	survivor := nodeNames(ctx, t, sparePool)[0]
	checkKeptWarm(t, before, survivor, ran)
}

// checkKeptWarm: of the nodes that held placeholders before the headroom last shrank, the one
// left is one of the most valuable by its placeholder's deletion cost, and it ran jobs when any
// did.
func checkKeptWarm(t *testing.T, before []placeholderAt, survivor string, ran map[string]bool) {
	t.Helper()
	t.Logf("placeholders before the last shrink: %v; kept %s", before, survivor)
	if len(before) < 2 {
		t.Fatalf("the headroom shrank with %d placeholders bound (%v): nothing to choose from", len(before), before)
	}
	best, anyRan := before[0], false
	for _, p := range before {
		if p.cost > best.cost {
			best = p
		}
		anyRan = anyRan || ran[p.node]
		if tier, _ := policy.CacheOfCost(p.costText); ran[p.node] && tier != policy.CacheWorked {
			t.Errorf("placeholder on %s, which ran jobs, costs %s (%v), want the worked tier", p.node, p.costText, tier)
		}
	}
	// Nodes of one cache tier created in the same minute cost the same (policy.DeletionCost):
	// the ReplicaSet controller breaks the tie, and any of them is right.
	if !slices.ContainsFunc(before, func(p placeholderAt) bool { return p.node == survivor && p.cost == best.cost }) {
		t.Errorf("kept %s, want %s or another whose placeholder cost as much (%v)", survivor, best.node, before)
	}
	if anyRan && !ran[survivor] {
		t.Errorf("kept %s, which ran no job, though placeholders sat on nodes that did (%v)", survivor, before)
	}
}

// placeholderAt is a placeholder of the pool bound to a node, with its deletion cost.
type placeholderAt struct {
	node     string
	costText string
	cost     int64
}

func (p placeholderAt) String() string { return p.node + "=" + p.costText }

// placeholders lists the pool's placeholders bound to a node and not being deleted.
func placeholders(ctx context.Context, kube client.Client) ([]placeholderAt, error) {
	pods := &corev1.PodList{}
	if err := kube.List(ctx, pods, client.InNamespace(scenario.Namespace), client.MatchingLabels{nodepools.LabelHeadroom: "true", nodepools.LabelPool: sparePool}); err != nil {
		return nil, err
	}
	var out []placeholderAt
	for _, p := range pods.Items {
		if p.Spec.NodeName == "" || p.DeletionTimestamp != nil {
			continue
		}
		at := placeholderAt{node: p.Spec.NodeName, costText: p.Annotations[policy.AnnotationDeletionCost]}
		_, _ = fmt.Sscan(at.costText, &at.cost)
		out = append(out, at)
	}
	return out, nil
}

// readyNodeNames are the pool's Ready nodes not being deleted.
func readyNodeNames(ctx context.Context, kube client.Client) ([]string, error) {
	nodes := &corev1.NodeList{}
	if err := kube.List(ctx, nodes, client.MatchingLabels{nodepools.LabelPool: sparePool}); err != nil {
		return nil, err
	}
	var names []string
	for _, n := range nodes.Items {
		if n.DeletionTimestamp == nil && nodeIsReady(&n) {
			names = append(names, n.Name)
		}
	}
	return names, nil
}

// idleReadyNodes are the pool's Ready nodes that no runner pod is bound to.
func idleReadyNodes(ctx context.Context, kube client.Client) ([]string, error) {
	ready, err := readyNodeNames(ctx, kube)
	if err != nil {
		return nil, err
	}
	pods := &corev1.PodList{}
	if err := kube.List(ctx, pods, client.InNamespace(scenario.Namespace), client.MatchingLabels{"app": "ci-runner", nodepools.LabelPool: sparePool}); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(ready, func(n string) bool {
		return slices.ContainsFunc(pods.Items, func(p corev1.Pod) bool { return p.Spec.NodeName == n })
	}), nil
}

func nodeIsReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// scrape reads the named families from a controller's /metrics.
func scrape(ctx context.Context, addr string, families ...string) ([]metricSample, error) {
	body, err := httpBody(ctx, "http://"+addr+"/metrics")
	if err != nil {
		return nil, err
	}
	return parseSamples(body, families), nil
}

// sampleValue is the value of the series of family whose labels include match; -1 if none.
func sampleValue(samples []metricSample, family string, match map[string]string) float64 {
	for _, s := range samples {
		if s.name == family && labelsMatch(s.labels, match) {
			return s.value
		}
	}
	return -1
}

// cleanupSparePool removes what the test left once its controller is gone: runners,
// placeholders, the NodePool (Karpenter then removes its nodes); it waits for the nodes to go,
// so the next test starts on a cluster without them.
func cleanupSparePool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kube := local.Client
	pool := client.MatchingLabels{nodepools.LabelPool: sparePool}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: scenario.Namespace, Name: nodepools.HeadroomName(sparePool)}}
	if err := kube.Delete(ctx, d, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
		t.Errorf("cleanup: %v", err)
	}
	for _, obj := range []client.Object{&corev1.Pod{}, &appsv1.DaemonSet{}} {
		if err := kube.DeleteAllOf(ctx, obj, client.InNamespace(scenario.Namespace), pool, client.GracePeriodSeconds(0)); err != nil {
			t.Errorf("cleanup %T: %v", obj, err)
		}
	}
	if err := kube.DeleteAllOf(ctx, &karpv1.NodePool{}, pool); err != nil {
		t.Errorf("cleanup NodePool: %v", err)
	}
	for ctx.Err() == nil {
		nodes := &corev1.NodeList{}
		if err := kube.List(ctx, nodes, pool); err == nil && len(nodes.Items) == 0 {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("the nodes of pool %s were not removed: %v", sparePool, ctx.Err())
}

// jobStream plays CI jobs of the pool: each is queued (a signed webhook), picked up by a runner
// pod (in_progress once it runs), and completed a while later, its runner deleted.
type jobStream struct {
	kube client.Client
	gh   *scenario.GitHub

	mu     sync.Mutex // guards the fields below and serializes deliveries
	lastID int64
	ran    map[string]bool
	jobs   int
	errs   []error
	wg     sync.WaitGroup
	done   chan struct{} // closed when run returns
}

// jobResult is one job: the node its runner ran on.
type jobResult struct {
	id   int64
	node string
	err  error
}

// run starts a job every interval until ctx ends; each runs for runFor once its runner runs.
// The jobs started are finished even after ctx ends (see wait).
func (s *jobStream) run(ctx context.Context, every, runFor time.Duration) {
	defer close(s.done)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if r := s.job(context.WithoutCancel(ctx), runFor); r.err != nil {
				s.mu.Lock()
				s.errs = append(s.errs, r.err)
				s.mu.Unlock()
			}
		}()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// job plays one job to its end.
func (s *jobStream) job(ctx context.Context, runFor time.Duration) (r jobResult) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	s.mu.Lock()
	s.lastID++
	r.id = s.lastID
	s.mu.Unlock()
	name := fmt.Sprintf("spare-runner-%d", r.id)
	if r.err = s.deliver(ctx, r.id, "queued"); r.err != nil {
		return r
	}
	pod := scenario.RunnerPod(sparePool, name)
	if r.err = s.kube.Create(ctx, pod); r.err != nil {
		return r
	}
	defer func() {
		err := s.kube.Delete(context.WithoutCancel(ctx), pod, client.GracePeriodSeconds(0))
		if client.IgnoreNotFound(err) != nil {
			r.err = errors.Join(r.err, err)
		}
	}()
	for pod.Status.Phase != corev1.PodRunning {
		select {
		case <-ctx.Done():
			r.err = fmt.Errorf("runner %s not Running (phase %q, node %q): %w", name, pod.Status.Phase, pod.Spec.NodeName, ctx.Err())
			return r
		case <-time.After(200 * time.Millisecond):
		}
		if err := s.kube.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil && !apierrors.IsNotFound(err) {
			r.err = err
			return r
		}
	}
	r.node = pod.Spec.NodeName
	s.mu.Lock()
	s.ran[r.node] = true
	s.jobs++
	s.mu.Unlock()
	if r.err = s.deliver(ctx, r.id, "in_progress"); r.err != nil {
		return r
	}
	select {
	case <-ctx.Done():
	case <-time.After(runFor):
	}
	r.err = s.deliver(ctx, r.id, "completed")
	return r
}

func (s *jobStream) deliver(ctx context.Context, id int64, action string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.gh.Job(ctx, id, action, spareLabels...); err != nil {
		return fmt.Errorf("job %d %s: %w", id, action, err)
	}
	return nil
}

// wait waits for run to return and every job started to end.
func (s *jobStream) wait() {
	<-s.done
	s.wg.Wait()
}

func (s *jobStream) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.errs...)
}

func (s *jobStream) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jobs
}

// nodes are the nodes runners ran on.
func (s *jobStream) nodes() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.ran)
}
