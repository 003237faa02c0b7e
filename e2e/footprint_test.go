package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// Everything the footprint benchmark creates carries this label, so cleanup finds it all.
const (
	footprintLabel = "bench.warmpool-e2e.dev/footprint"
	// footprintRound is a pool label (so a NodePool template label) the config change bumps.
	footprintRound = "bench.warmpool-e2e.dev/round"
	footprintNode  = "fp-node-"
	// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat: 100 on every Linux
	// architecture Go supports, whatever the kernel's CONFIG_HZ.
	clockTicks = 100
)

// footprintSize is the simulated fleet; the sizes are the defaults, the environment
// can shrink them for a smaller machine.
type footprintSize struct {
	nodes, pools, pods int
	idle               time.Duration
	// enginePods lets the engine DaemonSets run a pod on every fleet node. Off by default:
	// nodesim plays each engine pod on disk (its init container installs a copy of the
	// binary, ~100 MB), and 1000 of them filled a 90 GB disk. Without them the fleet nodes
	// carry a taint the engine does not tolerate; the DaemonSets are still applied.
	enginePods bool
}

// estimateKnown is how long after the controller's start every pool's adaptive spare has
// observed enough to know its arrival rate (policy.minCoverage, 2 minutes), with a margin.
const estimateKnown = 2*time.Minute + 20*time.Second

// footprintNoEngine keeps the engine DaemonSets off the fleet nodes unless enginePods is set.
const footprintNoEngine = "bench.warmpool-e2e.dev/no-engine"

func footprintSizeFromEnv(b *testing.B) footprintSize {
	b.Helper()
	s := footprintSize{nodes: 1000, pools: 100, pods: 5000, idle: time.Minute}
	for env, dst := range map[string]*int{
		"WARMPOOL_FOOTPRINT_NODES": &s.nodes,
		"WARMPOOL_FOOTPRINT_POOLS": &s.pools,
		"WARMPOOL_FOOTPRINT_PODS":  &s.pods,
	} {
		if v := os.Getenv(env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				b.Fatalf("%s=%q: want a positive integer", env, v)
			}
			*dst = n
		}
	}
	if v := os.Getenv("WARMPOOL_FOOTPRINT_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.Fatalf("WARMPOOL_FOOTPRINT_IDLE=%q: want a positive duration", v)
		}
		s.idle = d
	}
	s.enginePods = os.Getenv("WARMPOOL_FOOTPRINT_ENGINE_PODS") == "1"
	if s.nodes < s.pools {
		b.Fatalf("%d nodes cannot spread over %d pools", s.nodes, s.pools)
	}
	return s
}

func footprintPool(i int) string { return fmt.Sprintf("fp-%03d", i) }

// footprintConfig has n pools on the KWOK node class with the cache off: even pools scale from
// GitHub webhooks, odd ones have no queue. round is written as a label of every pool.
func footprintConfig(n int, round string) string {
	var b strings.Builder
	b.WriteString(`apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  role: KarpenterNodeRole-local
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: local}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: local}}]
webhook:
  secretRef: {name: warmpool-github, key: webhook-secret}
pools:
`)
	for i := range n {
		name := footprintPool(i)
		fmt.Fprintf(&b, `  - name: %s
    architectures: [amd64]
    nvme: {minSizeGB: 200}
    capacityTypes: [on-demand]
    labels: {%s: %q}
    disruption: {consolidationPolicy: WhenEmpty, consolidateAfter: 5s}
    engine: {version: v0.19.7}
    cache: {enabled: false}
`, name, footprintRound, round)
		if i%2 == 0 {
			fmt.Fprintf(&b, `    queue:
      sources:
        - githubWebhook: {labels: [self-hosted, %s]}
    scaling:
      jobsPerNode: 2
      runnerRequests: {cpu: "1", memory: 2Gi}
      scaleDownStabilization: 15s
`, name)
		}
	}
	return b.String()
}

// BenchmarkControllerFootprint measures the real `warmpool controller` process against a fleet
// of kwok nodes with runner pods on them (issue #5): the cold full reconcile of every pool, one
// full reconcile after a config change touching every pool, the settled RSS and the CPU it
// burns while idle. It measures one process lifetime whatever b.N; run it with -benchtime 1x.
// With WARMPOOL_FOOTPRINT_PROFILES=dir it saves the controller's CPU profiles of the cold start,
// the config change and the idle window, its heap after the cold start and the idle window, and
// the logs of both of its processes.
//
// The nodes are created directly, not by Karpenter: they carry neither karpenter.sh/nodepool
// nor the KWOKNodeClass label and have no NodeClaim, so Karpenter treats them as unmanaged (no
// disruption, no termination finalizer); the benchmark checks at the end that they are intact.
func BenchmarkControllerFootprint(b *testing.B) {
	size := footprintSizeFromEnv(b)
	ctx := b.Context()
	kube := local.Client
	b.Logf("fleet: %d nodes, %d pools, %d pods, engine pods %v; idle window %s", size.nodes, size.pools, size.pods, size.enginePods, size.idle)

	if err := scenario.EnsureWebhookSecret(ctx, kube); err != nil {
		b.Fatal(err)
	}
	if err := scenario.SetConfig(ctx, kube, footprintConfig(size.pools, "1")); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cleanupFleet(b) })

	start := time.Now()
	if err := parallel(ctx, size.nodes, 8, func(ctx context.Context, i int) error {
		return createNode(ctx, kube, i, footprintPool(i%size.pools), size.enginePods)
	}); err != nil {
		b.Fatal(err)
	}
	if err := parallel(ctx, size.pods, 8, func(ctx context.Context, i int) error {
		return createPod(ctx, kube, i, i%size.nodes, footprintPool((i%size.nodes)%size.pools))
	}); err != nil {
		b.Fatal(err)
	}
	settle(b, "every node Ready and every pod Running", 10*time.Minute, func(ctx context.Context) (bool, error) {
		nodes, err := readyFleetNodes(ctx)
		if err != nil || nodes < size.nodes {
			return false, fmt.Errorf("%d/%d nodes Ready (%v)", nodes, size.nodes, err)
		}
		pods, err := runningPods(ctx, client.MatchingLabels{footprintLabel: "true"})
		return pods == size.pods, fmt.Errorf("%d/%d pods Running (%v)", pods, size.pods, err)
	})
	b.Logf("setup: fleet created and Running in %s", time.Since(start).Round(time.Second))

	awaitQuiet(b, "cold full reconcile", 20*time.Second, 10*time.Minute)

	// (a) Cold full reconcile: process start until every pool has its NodePool and has been
	// evaluated by the scaling controller (a warmpool_desired_nodes series per pool). It
	// includes taking the (free) leader Lease and filling the informer caches.
	prof := newProfiler(b)
	coldApplies := applyRequests(b)
	b.ResetTimer()
	started, machine0 := time.Now(), machineCPU(b)
	// A Lease that survives a slow API server: on a loaded machine the default 10 s renew
	// deadline ran out and the controller exited mid-benchmark (leader election lost).
	args := append([]string{"--leader-elect-lease-duration=2m", "--leader-elect-renew-deadline=90s"}, prof.args()...)
	p := startController(b, "warmpool-footprint", args...)
	prof.cpu(b, "cpu-cold", 30*time.Second)
	// Registered after startController so it runs first: the controller removes its 100
	// NodePools and engine DaemonSets itself before its process is killed.
	b.Cleanup(func() { restoreConfig(b, size.pools) })
	settle(b, "every pool's NodePool and scaling evaluation", 10*time.Minute, func(ctx context.Context) (bool, error) {
		n, err := nodePoolsWithRound(ctx, size.pools, "1")
		if err != nil || n < size.pools {
			return false, fmt.Errorf("%d/%d NodePools (%v)", n, size.pools, err)
		}
		return p.evaluatedAll(ctx, size.pools)
	})
	cold := time.Since(started)
	logCPUShare(b, "cold full reconcile", cold, machine0, machineCPU(b))
	coldMetrics, _ := httpBody(ctx, "http://"+p.MetricsAddr+"/metrics")
	logReconciles(b, "cold full reconcile", "", coldMetrics)
	b.Logf("cold full reconcile: server-side applies by resource: %s", appliesSince(coldApplies, applyRequests(b)))
	logGoMemory(b, "cold full reconcile", coldMetrics)
	prof.heap(b, "heap-cold")

	// The engine DaemonSets put one engine pod on every node; wait for them so the rest
	// measures a settled cluster, not the DaemonSet controller's roll-out.
	if size.enginePods {
		settle(b, "an engine pod Running on every node", 10*time.Minute, func(ctx context.Context) (bool, error) {
			n, err := runningPods(ctx, client.MatchingLabels{volumes.LabelEngineName: volumes.EngineName})
			return n >= size.nodes, fmt.Errorf("%d/%d engine pods Running (%v)", n, size.nodes, err)
		})
	}

	// (b) One full reconcile after a config change touching every pool's NodePool.
	awaitQuiet(b, "config change", 20*time.Second, 10*time.Minute)
	prof.wait()
	beforeChange, _ := httpBody(ctx, "http://"+p.MetricsAddr+"/metrics")
	prof.cpu(b, "cpu-change", 10*time.Second)
	changed, machine0 := time.Now(), machineCPU(b)
	if err := scenario.SetConfig(ctx, kube, footprintConfig(size.pools, "2")); err != nil {
		b.Fatal(err)
	}
	settle(b, "every NodePool to carry the new label", 10*time.Minute, func(ctx context.Context) (bool, error) {
		n, err := nodePoolsWithRound(ctx, size.pools, "2")
		return n == size.pools, fmt.Errorf("%d/%d NodePools updated (%v)", n, size.pools, err)
	})
	full := time.Since(changed)
	logCPUShare(b, "config change", full, machine0, machineCPU(b))
	afterChange, _ := httpBody(ctx, "http://"+p.MetricsAddr+"/metrics")
	logReconciles(b, "config change", beforeChange, afterChange)

	// (c), (d): let the change's echoes (status updates, requeues) and the cluster's own
	// settling die down, then measure a window with nothing happening but its heartbeats.
	time.Sleep(30 * time.Second)
	awaitQuiet(b, "idle window", 20*time.Second, 10*time.Minute)
	// Two minutes after its first evaluation an adaptive pool's arrival estimate becomes known
	// (policy.minCoverage), and every pool is evaluated once for it: a step of the start, not
	// idle work.
	if d := time.Until(started.Add(estimateKnown)); d > 0 {
		b.Logf("before the idle window: waiting %s more for the pools' arrival estimates to become known", d.Round(time.Second))
		time.Sleep(d)
	}
	memBefore := procMemory(b, p.PID())
	before, err := httpBody(ctx, "http://"+p.MetricsAddr+"/metrics")
	if err != nil {
		b.Fatal(err)
	}
	prof.wait()
	changes := countChanges(b)
	cpu0 := procCPU(b, p.PID())
	prof.cpu(b, "cpu-idle", size.idle)
	time.Sleep(size.idle)
	cpu1 := procCPU(b, p.PID())
	b.Logf("idle window: the API server sent %s", changes.stop())
	mem := procMemory(b, p.PID())
	after, err := httpBody(ctx, "http://"+p.MetricsAddr+"/metrics")
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	idleCPU := (cpu1 - cpu0) / size.idle.Minutes()
	// What the idle CPU went on, for whoever reads the numbers.
	logReconciles(b, "idle window", before, after)
	logGoMemory(b, "idle window", after)
	prof.wait()
	prof.heap(b, "heap-idle")
	if log, err := os.ReadFile(p.logPath); err == nil {
		b.Logf("controller log: %d lines mention client-side throttling", strings.Count(string(log), "client-side throttling"))
	}

	// (e) A restart, as an upgrade's rollout or a new leader makes one: SIGTERM (the Lease is
	// released), a new process, until every pool is evaluated again. The objects are already
	// applied from the config in force, so it should apply nothing (package controller/unchanged).
	appliesBefore := applyRequests(b)
	b.StartTimer()
	if err := p.terminate(b); err != nil {
		b.Fatalf("controller exit on SIGTERM: %v", err)
	}
	prof.keepLog(b, "controller", p.logPath)
	restarted := time.Now()
	p = startController(b, "warmpool-footprint-restarted", args...)
	// Runs before this process is killed, as the first one's did (that one then finds nothing
	// left to wait for).
	b.Cleanup(func() { restoreConfig(b, size.pools) })
	settle(b, "every pool evaluated by the restarted controller", 10*time.Minute, func(ctx context.Context) (bool, error) {
		return p.evaluatedAll(ctx, size.pools)
	})
	restart := time.Since(restarted)
	b.StopTimer()
	restartMetrics, _ := httpBody(ctx, "http://"+p.MetricsAddr+"/metrics")
	prof.keepLog(b, "controller-restarted", p.logPath)
	logReconciles(b, "restart", "", restartMetrics)
	b.Logf("restart: server-side applies by resource: %s", appliesSince(appliesBefore, applyRequests(b)))
	b.Logf("restart: %s until every pool was evaluated, %d NodePools of the config in force", restart.Round(10*time.Millisecond), mustNodePools(b, size.pools, "2"))

	checkFleetUntouched(b, size.nodes)

	b.ReportMetric(cold.Seconds(), "reconcile_s")
	b.ReportMetric(full.Seconds(), "full_reconcile_s")
	b.ReportMetric(restart.Seconds(), "restart_s")
	b.ReportMetric(mem.rss, "rss_MiB")
	b.ReportMetric(mem.hwm, "rss_peak_MiB")
	b.ReportMetric(idleCPU, "idle_cpu_s/min")
	b.Logf("cold full reconcile %.2fs, full reconcile after a config change %.2fs, RSS %s (%s before the idle window, peak %.1f MiB), idle CPU %.3f s/min, restart %.2fs",
		cold.Seconds(), full.Seconds(), mem, memBefore, mem.hwm, idleCPU, restart.Seconds())
}

func createNode(ctx context.Context, kube client.Client, i int, pool string, enginePods bool) error {
	name := fmt.Sprintf("%s%04d", footprintNode, i)
	// kwok plays the kubelet of nodes matching its selector.
	kwokKey, kwokValue, _ := strings.Cut(cluster.KWOKNodeLabelSelector, "=")
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				kwokKey:                        kwokValue,
				"type":                         "kwok",
				footprintLabel:                 "true",
				nodepools.LabelPool:            pool,
				corev1.LabelHostname:           name,
				corev1.LabelArchStable:         "amd64",
				corev1.LabelOSStable:           "linux",
				corev1.LabelInstanceTypeStable: "c6id.4xlarge",
				corev1.LabelTopologyZone:       "local-a",
				karpv1.CapacityTypeLabelKey:    karpv1.CapacityTypeOnDemand,
			},
			Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0"},
		},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: config.DefaultTaintKey, Value: pool, Effect: corev1.TaintEffectNoSchedule}}},
	}
	if !enginePods {
		// Runner pods are bound by name and pass; the DaemonSet controller places none.
		node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: footprintNoEngine, Effect: corev1.TaintEffectNoSchedule})
	}
	if err := kube.Create(ctx, node); err != nil {
		return fmt.Errorf("creating node %s, %w", name, err)
	}
	// A c6id.4xlarge after kubelet and system reserves. Whichever of this patch and kwok's
	// initialisation comes first, the node ends with these: kwok keeps allocatable it finds.
	before := node.DeepCopy()
	resources := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("15890m"),
		corev1.ResourceMemory:           resource.MustParse("27Gi"),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("17Gi"),
	}
	node.Status.Capacity, node.Status.Allocatable = resources, resources
	if err := kube.Status().Patch(ctx, node, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("setting allocatable of node %s, %w", name, err)
	}
	return nil
}

// createPod binds a runner pod to a node, as the scheduler would have; kwok makes it Running.
func createPod(ctx context.Context, kube client.Client, i, node int, pool string) error {
	pod := scenario.RunnerPod(pool, fmt.Sprintf("fp-pod-%05d", i))
	pod.Labels[footprintLabel] = "true"
	pod.Spec.NodeName = fmt.Sprintf("%s%04d", footprintNode, node)
	if err := kube.Create(ctx, pod); err != nil {
		return fmt.Errorf("creating pod %s, %w", pod.Name, err)
	}
	return nil
}

// parallel runs do for 0..n-1 on workers goroutines and returns the first error.
func parallel(ctx context.Context, n, workers int, do func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := do(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// settle polls cond every 200 ms until it holds or timeout passes; cond's error says how far
// it got. Durations are measured by the caller, never asserted.
func settle(b *testing.B, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), timeout)
	defer cancel()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return
		}
		last = err
		select {
		case <-ctx.Done():
			b.Fatalf("timed out waiting for %s (last: %v)", what, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func readyFleetNodes(ctx context.Context) (int, error) {
	list := &corev1.NodeList{}
	if err := local.Client.List(ctx, list, client.MatchingLabels{footprintLabel: "true"}); err != nil {
		return 0, err
	}
	n := 0
	for i := range list.Items {
		for _, c := range list.Items[i].Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				n++
			}
		}
	}
	return n, nil
}

// runningPods counts the Running pods in the scenario namespace matching sel on fleet nodes.
func runningPods(ctx context.Context, sel client.MatchingLabels) (int, error) {
	list := &corev1.PodList{}
	if err := local.Client.List(ctx, list, client.InNamespace(scenario.Namespace), sel); err != nil {
		return 0, err
	}
	n := 0
	for i := range list.Items {
		p := &list.Items[i]
		if strings.HasPrefix(p.Spec.NodeName, footprintNode) && p.Status.Phase == corev1.PodRunning {
			n++
		}
	}
	return n, nil
}

// nodePoolsWithRound counts the benchmark's NodePools whose node template has the round label.
func nodePoolsWithRound(ctx context.Context, pools int, round string) (int, error) {
	list := &karpv1.NodePoolList{}
	if err := local.Client.List(ctx, list); err != nil {
		return 0, err
	}
	want := map[string]bool{}
	for i := range pools {
		want[nodepools.Name(footprintPool(i))] = true
	}
	n := 0
	for _, np := range list.Items {
		if want[np.Name] && np.Spec.Template.Labels[footprintRound] == round {
			n++
		}
	}
	return n, nil
}

// evaluatedAll reports whether the process has evaluated all n of the benchmark's pools, for
// settle.
func (p *controllerProcess) evaluatedAll(ctx context.Context, n int) (bool, error) {
	body, err := httpBody(ctx, "http://"+p.MetricsAddr+"/metrics")
	if err != nil {
		return false, err
	}
	e := evaluatedPools(body)
	return e == n, fmt.Errorf("%d/%d pools evaluated", e, n)
}

// evaluatedPools counts the benchmark's pools with a warmpool_desired_nodes series: the
// scaling controller sets it at the end of a pool's first evaluation.
func evaluatedPools(metrics string) int {
	n := 0
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "warmpool_desired_nodes{") && strings.Contains(line, `pool="fp-`) {
			n++
		}
	}
	return n
}

// cpuTimes is CPU time in seconds, busy and in all, and that of each process this test
// started, by command name.
type cpuTimes struct {
	busy, total float64
	children    map[string]float64
}

// machineCPU is the CPU time every CPU of the machine spent since boot (/proc/stat's first
// line: user, nice, system, idle, iowait, irq, softirq, steal; busy is all but idle and
// iowait; guest time is already in user and nice, so it is not added again).
func machineCPU(b *testing.B) (cpu cpuTimes) {
	b.Helper()
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		b.Fatalf("/proc/stat begins %q", line)
	}
	for i, f := range fields[1:9] {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			b.Fatalf("/proc/stat: %v", err)
		}
		cpu.total += v / clockTicks
		if i != 3 && i != 4 { // idle, iowait
			cpu.busy += v / clockTicks
		}
	}
	cpu.children = childrenCPU()
	return cpu
}

// childrenCPU is the user+system CPU seconds of each process whose parent is this test process
// (the cluster's components and the controller), summed by command name. A process that ends
// between the listing and the read is left out.
func childrenCPU() map[string]float64 {
	out := map[string]float64{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		data, err := os.ReadFile(f)
		if err != nil {
			continue // the process ended
		}
		if st, err := parseProcStat(data); err == nil && st.ppid == os.Getpid() {
			out[st.comm] += st.cpu
		}
	}
	return out
}

// logCPUShare logs how busy the machine was over a phase and how much of it each process
// used: a phase the controller ("warmpool") spends waiting on a saturated machine (the API
// server, Karpenter and the controller manager share its cores here) shows as a busy machine
// and a small share of the controller's.
func logCPUShare(b *testing.B, phase string, d time.Duration, m0, m1 cpuTimes) {
	b.Helper()
	busy := m1.busy - m0.busy
	b.Logf("%s: machine CPU %.0f%% busy over %s (%.1f CPU-s); by process: %s",
		phase, 100*busy/max(m1.total-m0.total, 1e-9), d.Round(10*time.Millisecond), busy, cpuByProcess(m0, m1))
}

// cpuByProcess lists the CPU seconds each of the test's processes used between m0 and m1,
// most first.
func cpuByProcess(m0, m1 cpuTimes) string {
	type use struct {
		name string
		cpu  float64
	}
	var uses []use
	for name, t := range m1.children {
		if d := t - m0.children[name]; d >= 0.005 {
			uses = append(uses, use{name, d})
		}
	}
	sort.Slice(uses, func(i, j int) bool { return uses[i].cpu > uses[j].cpu })
	parts := make([]string, len(uses))
	for i, u := range uses {
		parts[i] = fmt.Sprintf("%s %.2f", u.name, u.cpu)
	}
	return strings.Join(parts, ", ")
}

// procCPU is the user+system CPU seconds the process has used.
func procCPU(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	st, err := parseProcStat(data)
	if err != nil {
		b.Fatalf("/proc/%d/stat: %v", pid, err)
	}
	return st.cpu
}

// procStat is what the benchmark reads from a /proc/<pid>/stat line.
type procStat struct {
	comm string
	ppid int
	cpu  float64 // user+system seconds
}

// parseProcStat reads the command name, parent PID and CPU time (fields 2, 4, 14 and 15) of
// a /proc/<pid>/stat line; the fields are counted after the parenthesised command name,
// which may hold spaces and parentheses.
func parseProcStat(data []byte) (procStat, error) {
	s := string(data)
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < lp {
		return procStat{}, fmt.Errorf("no command name in %q", s)
	}
	// fields[0] is field 3 (state): ppid (4) is fields[1], utime (14) and stime (15)
	// fields[11] and fields[12].
	fields := strings.Fields(s[rp+1:])
	if len(fields) < 13 {
		return procStat{}, fmt.Errorf("%d fields after the command name, want at least 13", len(fields))
	}
	st := procStat{comm: s[lp+1 : rp]}
	var err error
	if st.ppid, err = strconv.Atoi(fields[1]); err != nil {
		return procStat{}, fmt.Errorf("ppid: %w", err)
	}
	for _, f := range fields[11:13] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("CPU time: %w", err)
		}
		st.cpu += float64(v) / clockTicks
	}
	return st, nil
}

// memory is a process's resident memory in MiB, from /proc/<pid>/status: rss is resident now
// (anon, the heap, stacks and runtime, plus file, the binary's pages it touched), hwm the peak.
type memory struct{ rss, anon, file, hwm float64 }

func (m memory) String() string {
	return fmt.Sprintf("%.1f MiB (anon %.1f, file %.1f)", m.rss, m.anon, m.file)
}

// applyRequests is the API server's count of server-side applies, by resource.
func applyRequests(b *testing.B) map[string]float64 {
	b.Helper()
	out := map[string]float64{}
	for _, r := range []string{"nodepools", "kwoknodeclasses", "ec2nodeclasses", "daemonsets", "configmaps", "deployments"} {
		n, err := cluster.Requests(b.Context(), local.Config, map[string]string{"verb": "APPLY", "resource": r})
		if err != nil {
			b.Fatal(err)
		}
		out[r] = n
	}
	return out
}

func appliesSince(before, after map[string]float64) string {
	var parts []string
	for r, n := range after {
		parts = append(parts, fmt.Sprintf("%s %.0f", r, n-before[r]))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// mustNodePools counts the benchmark's NodePools of the given round.
func mustNodePools(b *testing.B, pools int, round string) int {
	b.Helper()
	n, err := nodePoolsWithRound(b.Context(), pools, round)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// procMemory reads VmRSS, RssAnon, RssFile and VmHWM.
func procMemory(b *testing.B, pid int) memory {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	var m memory
	fields := map[string]*float64{"VmRSS": &m.rss, "RssAnon": &m.anon, "RssFile": &m.file, "VmHWM": &m.hwm}
	for _, line := range strings.Split(string(data), "\n") {
		key, val, ok := strings.Cut(line, ":")
		dst := fields[key]
		if !ok || dst == nil {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 64)
		if err != nil {
			b.Fatalf("/proc/%d/status %s: %v", pid, key, err)
		}
		*dst = kb / 1024
	}
	if m.rss == 0 {
		b.Fatalf("/proc/%d/status has no VmRSS", pid)
	}
	return m
}

// checkFleetUntouched fails if anything (Karpenter above all) disrupted the unmanaged nodes.
func checkFleetUntouched(b *testing.B, nodes int) {
	b.Helper()
	list := &corev1.NodeList{}
	if err := local.Client.List(context.Background(), list, client.MatchingLabels{footprintLabel: "true"}); err != nil {
		b.Fatal(err)
	}
	if len(list.Items) != nodes {
		b.Errorf("%d of the %d fleet nodes are left", len(list.Items), nodes)
	}
	for i := range list.Items {
		n := &list.Items[i]
		if n.DeletionTimestamp != nil {
			b.Errorf("node %s is being deleted", n.Name)
		}
		for _, t := range n.Spec.Taints {
			if t.Key == karpv1.DisruptedTaintKey {
				b.Errorf("node %s has Karpenter's %s taint", n.Name, t.Key)
			}
		}
	}
}

// restoreConfig puts back the config the other e2e tests use and waits for the running
// controller to delete the benchmark's NodePools (and with them the engine DaemonSets).
func restoreConfig(b *testing.B, pools int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := scenario.SetConfig(ctx, local.Client, localConfig(b)); err != nil {
		b.Errorf("restoring the config: %v", err)
		return
	}
	for ctx.Err() == nil {
		left := 0
		for _, round := range []string{"1", "2"} {
			n, err := nodePoolsWithRound(ctx, pools, round)
			if err != nil {
				left = -1
				break
			}
			left += n
		}
		if left == 0 {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	b.Errorf("the benchmark's NodePools were not deleted after the config was restored")
}

// cleanupFleet deletes the runner pods and nodes, then force-deletes whatever pods are left on
// the nodes (engine pods whose DaemonSets are gone), as the pod GC would eventually. One
// request per object: a collection delete of 5000 pods outlives the apiserver's timeout.
func cleanupFleet(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	kube := local.Client
	for ctx.Err() == nil {
		pods := &corev1.PodList{}
		if err := kube.List(ctx, pods, client.InNamespace(scenario.Namespace)); err != nil {
			b.Errorf("listing pods: %v", err)
			return
		}
		var doomed []client.Object
		for i := range pods.Items {
			if p := &pods.Items[i]; p.Labels[footprintLabel] == "true" || strings.HasPrefix(p.Spec.NodeName, footprintNode) {
				doomed = append(doomed, p)
			}
		}
		nodes := &corev1.NodeList{}
		if err := kube.List(ctx, nodes, client.MatchingLabels{footprintLabel: "true"}); err != nil {
			b.Errorf("listing nodes: %v", err)
			return
		}
		if len(doomed) == 0 && len(nodes.Items) == 0 {
			return
		}
		for i := range nodes.Items {
			doomed = append(doomed, &nodes.Items[i])
		}
		if err := parallel(ctx, len(doomed), 8, func(ctx context.Context, i int) error {
			err := kube.Delete(ctx, doomed[i], client.GracePeriodSeconds(0))
			if client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("deleting %s, %w", doomed[i].GetName(), err)
			}
			return nil
		}); err != nil {
			b.Errorf("cleaning up: %v", err)
			return
		}
		time.Sleep(time.Second)
	}
	b.Errorf("pods or nodes of the benchmark were left behind")
}

// reconciles sums controller_runtime_reconcile_total by controller.
func reconciles(metrics string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(metrics, "\n") {
		rest, ok := strings.CutPrefix(line, `controller_runtime_reconcile_total{controller="`)
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(rest, `"`)
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			out[name] += v
		}
	}
	return out
}
