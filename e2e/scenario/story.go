package scenario

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/e2e/nodesim"
	"warmpool.io/warmpool/volumes"
)

// StoryPool is the one pool of the whole-story scenario.
const StoryPool = "story"

// StoryConfig is a cache-enabled pool fed by GitHub webhooks, on nodesim's storage and snapshot
// classes: one job per node, no warm minimum, short windows so the story fits in minutes. It
// keeps no spare and no burst hold, so the drained pool is consolidated however long the story
// took to get there (an adaptive spare sizes itself once two minutes of arrivals were seen; the
// default hold keeps 45% of the burst's nodes for 25 minutes). Its second burst's node restores
// although its job already waits for it (whenJobsWait: restore): by default that node would start
// cold at once rather than keep the job waiting for the copy, and the story shows the restore.
const StoryConfig = `apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  role: KarpenterNodeRole-local
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: local}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: local}}]
webhook:
  secretRef: {name: warmpool-github, key: webhook-secret}
pools:
  - name: ` + StoryPool + `
    architectures: [amd64]
    instance: {categories: {in: [c, m]}, minGeneration: 6}
    nvme: {minSizeGB: 200}
    capacityTypes: [on-demand]
    limits: {nodes: 4}
    disruption: {consolidationPolicy: WhenEmpty, consolidateAfter: 5s}
    engine: {version: v0.21.8}
    cache:
      enabled: true
      storageClassName: ` + nodesim.ClassName + `
      snapshotClassName: ` + nodesim.ClassName + `
      size: 1Gi
      restore: {whenJobsWait: restore}
    queue:
      sources:
        - githubWebhook: {labels: [self-hosted, story]}
    scaling:
      jobsPerNode: 1
      runnerRequests: {cpu: "1", memory: 2Gi}
      scaleDownStabilization: 10s
      spare: {mode: "off"}
      burstHold: {percent: 0}
`

// Story plays warmpool's whole story on a local cluster, as a user would see it: a queue burst
// boots nodes before runner pods exist, the runners run, the queue drains and Karpenter
// consolidates the nodes while their engine caches are saved to snapshots, and the next burst's
// node starts with a cache restored. The test tier asserts on it; `make demo` narrates it.
type Story struct {
	Kube     client.Client
	GitHub   *GitHub
	Sim      *nodesim.Sim
	Timeline *Timeline
	// Out gets one line per step (nil: quiet).
	Out io.Writer
}

// StoryResult is what happened, for assertions.
type StoryResult struct {
	// BurstNodes were booted for the first burst; each was consolidated after its cache was saved.
	BurstNodes []string
	// Snapshots are the ready VolumeSnapshots the drain produced.
	Snapshots []string
	// WarmNode is the second burst's node, which started with a restored cache.
	WarmNode string
}

// storyWait bounds each step; Karpenter's batching and consolidation take tens of seconds.
const storyWait = 4 * time.Minute

// StoryLabels are the runner labels of the story's jobs.
var StoryLabels = []string{"self-hosted", StoryPool, "linux"}

// Run plays the story once. It leaves the second burst's job queued and its node up.
func (s *Story) Run(ctx context.Context) (StoryResult, error) {
	var res StoryResult
	s.say("A burst: GitHub sends 2 queued workflow_job webhooks for pool %q (1 job per node)", StoryPool)
	for id := int64(1); id <= 2; id++ {
		if err := s.GitHub.Job(ctx, id, "queued", StoryLabels...); err != nil {
			return res, err
		}
	}
	bad := &GitHub{URL: s.GitHub.URL, Secret: "not-the-secret"}
	if err := bad.Job(ctx, 99, "queued", StoryLabels...); err == nil {
		return res, fmt.Errorf("a wrongly signed delivery was accepted")
	}
	s.note("github", "2 jobs queued (and 1 forged delivery rejected)")
	if err := s.wait(ctx, "2 Ready nodes before any runner pod exists", func(ctx context.Context) (bool, error) {
		n, err := ReadyNodes(ctx, s.Kube, StoryPool)
		return n == 2, err
	}); err != nil {
		return res, err
	}
	nodes := &corev1.NodeList{}
	if err := s.Kube.List(ctx, nodes, client.MatchingLabels{volumes.LabelPool: StoryPool}); err != nil {
		return res, err
	}
	for _, n := range nodes.Items {
		res.BurstNodes = append(res.BurstNodes, n.Name)
	}

	s.say("Runner pods pick up the jobs; the engines on the new nodes started cold (no snapshot yet)")
	for id := int64(1); id <= 2; id++ {
		if err := s.Kube.Create(ctx, RunnerPod(StoryPool, storyRunner(id))); err != nil {
			return res, err
		}
		if err := s.GitHub.Job(ctx, id, "in_progress", StoryLabels...); err != nil {
			return res, err
		}
	}
	if err := s.wait(ctx, "both runners Running", func(ctx context.Context) (bool, error) {
		for id := int64(1); id <= 2; id++ {
			p := &corev1.Pod{}
			if err := s.Kube.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: storyRunner(id)}, p); err != nil || p.Status.Phase != corev1.PodRunning {
				return false, client.IgnoreNotFound(err)
			}
		}
		return true, nil
	}); err != nil {
		return res, err
	}

	s.say("The jobs complete and the queue drains: Karpenter consolidates the nodes; each is held until its cache is saved")
	for id := int64(1); id <= 2; id++ {
		if err := s.GitHub.Job(ctx, id, "completed", StoryLabels...); err != nil {
			return res, err
		}
		err := s.Kube.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: storyRunner(id)}})
		if client.IgnoreNotFound(err) != nil {
			return res, err
		}
	}
	s.note("github", "2 jobs completed")
	if err := s.wait(ctx, "every burst node saved to a ready snapshot and gone", func(ctx context.Context) (bool, error) {
		snaps, err := s.readySnapshots(ctx)
		if err != nil {
			return false, err
		}
		res.Snapshots = snaps
		for _, n := range res.BurstNodes {
			err := s.Kube.Get(ctx, client.ObjectKey{Name: n}, &corev1.Node{})
			if !apierrors.IsNotFound(err) {
				return false, client.IgnoreNotFound(err)
			}
		}
		return len(snaps) >= len(res.BurstNodes), nil
	}); err != nil {
		return res, err
	}
	s.say("Saved: %v", res.Snapshots)

	s.say("A new burst: 1 queued job; its new node gets the newest snapshot restored before the engine starts")
	// The simulator is shared with other tests' pools: only this pool's engines, started
	// after this burst, count.
	since := len(s.Sim.Events())
	if err := s.GitHub.Job(ctx, 3, "queued", StoryLabels...); err != nil {
		return res, err
	}
	s.note("github", "1 job queued")
	if err := s.wait(ctx, "a new node whose engine starts warm from a restored cache", func(ctx context.Context) (bool, error) {
		for _, e := range s.Sim.Events()[since:] {
			if e.Kind != nodesim.EngineWarmStart || slices.Contains(res.BurstNodes, e.Node) {
				continue
			}
			n := &corev1.Node{}
			if err := s.Kube.Get(ctx, client.ObjectKey{Name: e.Node}, n); err != nil {
				return false, client.IgnoreNotFound(err)
			}
			if n.Labels[volumes.LabelPool] == StoryPool {
				res.WarmNode = e.Node
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return res, err
	}
	s.say("Node %s started warm; warmpool asks the engine whether it kept the restored cache", res.WarmNode)
	var verdict string
	if err := s.wait(ctx, "the engine's verdict on the restored cache", func(ctx context.Context) (bool, error) {
		events := &corev1.EventList{}
		if err := s.Kube.List(ctx, events); err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == res.WarmNode &&
				(e.Reason == enginecache.ReasonRestored || e.Reason == enginecache.ReasonColdStart || e.Reason == enginecache.ReasonRestoreUnverified) {
				verdict = e.Reason + ": " + e.Message
				return e.Reason == enginecache.ReasonRestored, nil
			}
		}
		return false, nil
	}); err != nil {
		return res, fmt.Errorf("%w (verdict: %q)", err, verdict)
	}
	s.note("node "+res.WarmNode, "verified warm")
	s.say("Verified: %s", verdict)
	return res, nil
}

// Finish completes the second burst's job so the pool can drain.
func (s *Story) Finish(ctx context.Context) error {
	return s.GitHub.Job(ctx, 3, "completed", StoryLabels...)
}

func (s *Story) readySnapshots(ctx context.Context) ([]string, error) {
	list := &snapshotv1.VolumeSnapshotList{}
	if err := s.Kube.List(ctx, list, client.InNamespace(Namespace), client.MatchingLabels{volumes.LabelPool: StoryPool}); err != nil {
		return nil, err
	}
	var names []string
	for _, v := range list.Items {
		if v.Status != nil && ptr.Deref(v.Status.ReadyToUse, false) {
			names = append(names, v.Name)
		}
	}
	slices.Sort(names)
	return names, nil
}

func (s *Story) wait(ctx context.Context, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, storyWait)
	defer cancel()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last error: %v)", what, ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (s *Story) say(format string, args ...any) {
	if s.Out != nil {
		fmt.Fprintf(s.Out, "\n==> "+format+"\n", args...)
	}
}

func (s *Story) note(object, state string) {
	if s.Timeline != nil {
		s.Timeline.Note(object, state)
	}
}

func storyRunner(id int64) string { return fmt.Sprintf("story-runner-%d", id) }
