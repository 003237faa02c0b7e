package scenario

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/nodepools"
)

// Entry is one observed change.
type Entry struct {
	At     time.Duration // since the timeline started
	Object string        // "pod warmpool/job-1", "nodeclaim warmpool-e2e-abcde", "node ..."
	State  string        // "Pending", "Running", "Ready", "gone", ...
}

func (e Entry) String() string {
	return fmt.Sprintf("%+7.1fs  %-44s %s", e.At.Seconds(), e.Object, e.State)
}

// Timeline polls warmpool's pods, NodeClaims and nodes and records every change of their state.
// Polling (every 200 ms) rather than watching keeps it simple and sees exactly what a user's
// `kubectl get -w` would.
type Timeline struct {
	kube  client.Client
	out   io.Writer
	start time.Time

	mu      sync.Mutex
	entries []Entry
	last    map[string]string
}

// StartTimeline records until ctx ends; each entry is also printed to out (when not nil).
func StartTimeline(ctx context.Context, kube client.Client, out io.Writer) *Timeline {
	t := &Timeline{kube: kube, out: out, start: time.Now(), last: map[string]string{}}
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			t.poll(ctx)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return t
}

// Note adds a line of the scenario's own ("submitted job-1").
func (t *Timeline) Note(object, state string) {
	t.record(map[string]string{object: state}, true)
}

// Entries is a copy of what was recorded so far.
func (t *Timeline) Entries() []Entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Entry(nil), t.entries...)
}

// Find returns the first entry for an object with this prefix in state, if any.
func (t *Timeline) Find(objectPrefix, state string) (Entry, bool) {
	for _, e := range t.Entries() {
		if strings.HasPrefix(e.Object, objectPrefix) && e.State == state {
			return e, true
		}
	}
	return Entry{}, false
}

func (t *Timeline) poll(ctx context.Context) {
	now := map[string]string{}
	pods := &corev1.PodList{}
	if err := t.kube.List(ctx, pods, client.InNamespace(Namespace)); err == nil {
		for i := range pods.Items {
			now["pod "+pods.Items[i].Name] = podState(&pods.Items[i])
		}
	}
	claims := &karpv1.NodeClaimList{}
	if err := t.kube.List(ctx, claims); err == nil {
		for i := range claims.Items {
			now["nodeclaim "+claims.Items[i].Name] = claimState(&claims.Items[i])
		}
	}
	nodes := &corev1.NodeList{}
	if err := t.kube.List(ctx, nodes, client.HasLabels{nodepools.LabelPool}); err == nil {
		for i := range nodes.Items {
			now["node "+nodes.Items[i].Name] = nodeState(&nodes.Items[i])
		}
	}
	if ctx.Err() != nil {
		return
	}
	t.record(now, false)
}

// record adds an entry for every object whose state changed; in a full poll (not a note),
// objects that were seen before and are missing now are recorded as gone.
func (t *Timeline) record(now map[string]string, note bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	at := time.Since(t.start)
	var changed []Entry
	for obj, state := range now {
		if t.last[obj] != state {
			changed = append(changed, Entry{At: at, Object: obj, State: state})
			t.last[obj] = state
		}
	}
	if !note {
		for obj, state := range t.last {
			if _, ok := now[obj]; !ok && state != "gone" && !strings.HasPrefix(obj, "~") {
				changed = append(changed, Entry{At: at, Object: obj, State: "gone"})
				t.last[obj] = "gone"
			}
		}
	}
	sort.Slice(changed, func(i, j int) bool { return changed[i].Object < changed[j].Object })
	for _, e := range changed {
		t.entries = append(t.entries, e)
		if t.out != nil {
			fmt.Fprintln(t.out, e)
		}
	}
}

func podState(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "Terminating"
	}
	if p.Status.Phase == corev1.PodPending {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason != "" {
				return "Pending (" + c.Reason + ")"
			}
		}
		if p.Spec.NodeName != "" {
			return "Pending on " + p.Spec.NodeName
		}
	}
	if p.Status.Phase == corev1.PodRunning {
		return "Running on " + p.Spec.NodeName
	}
	return string(p.Status.Phase)
}

func claimState(nc *karpv1.NodeClaim) string {
	if nc.DeletionTimestamp != nil {
		return "Deleting"
	}
	state := "Created"
	for _, cond := range []string{karpv1.ConditionTypeLaunched, karpv1.ConditionTypeRegistered, karpv1.ConditionTypeInitialized} {
		if nc.StatusConditions().Get(cond).IsTrue() {
			state = cond
		}
	}
	if it := nc.Labels[corev1.LabelInstanceTypeStable]; it != "" {
		state += " (" + it + ")"
	}
	if c := nc.StatusConditions().Get(karpv1.ConditionTypeDisruptionReason); c.IsTrue() {
		state += " disrupting: " + c.Reason
	}
	return state
}

func nodeState(n *corev1.Node) string {
	if n.DeletionTimestamp != nil {
		return "Deleting"
	}
	state := "NotReady"
	if nodeReady(n) {
		state = "Ready"
	}
	for _, taint := range n.Spec.Taints {
		if taint.Key == karpv1.DisruptedTaintKey {
			state += ", tainted disrupted"
		}
	}
	return state
}

// ReadyNodes counts the pool's Ready nodes that are not being deleted.
func ReadyNodes(ctx context.Context, kube client.Client, pool string) (int, error) {
	nodes := &corev1.NodeList{}
	if err := kube.List(ctx, nodes, client.MatchingLabels{nodepools.LabelPool: pool}); err != nil {
		return 0, err
	}
	n := 0
	for i := range nodes.Items {
		if nodes.Items[i].DeletionTimestamp == nil && nodeReady(&nodes.Items[i]) {
			n++
		}
	}
	return n, nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
