package nodesim

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	resourcehelper "k8s.io/component-helpers/resource"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// The kubelet's admission, as kubelet v1.35 decides it (pkg/kubelet/lifecycle/predicate.go,
// generalFilter with the scheduler's AdmissionCheck): a pod bound to a node, by the scheduler
// or with spec.nodeName set by its creator, runs only if it fits next to the pods the kubelet
// already admitted there (the pod count, then cpu, memory and ephemeral-storage requests
// against the node's allocatable, then hugepages and the extended resources the node lists,
// as the scheduler counts requests: init containers,
// sidecars and overhead included), matches the node's required affinity, and tolerates the
// node's NoExecute taints (only those: a kubelet admits a pod onto a node tainted
// karpenter.sh/disrupted:NoSchedule). A pod that does not is rejected: phase Failed, reason
// OutOfcpu, OutOfmemory, OutOfpods, OutOfephemeral-storage, NodeAffinity or TaintToleration,
// message "Pod was rejected: ..." (a NodeAffinity failure only after the node was read again
// from the API server, as the v1.35 kubelet does) and a Warning Event with the reason, and it never runs
// (Karpenter's drain ignores it: a rejected guard holds nothing).
//
// An admitted pod gets the status a kubelet writes first (phase Pending, hostIP): kwok's
// stages (e2e/cluster/kwokstages) and nodesim's own kubelet start only admitted pods.
// Host ports are not checked (warmpool's pods ask for none).
type admission struct{ *Sim }

// admitted reports whether the kubelet admitted the pod (its first status names the host).
func admitted(p *corev1.Pod) bool { return p.Status.HostIP != "" }

func terminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func (a admission) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	pod := &corev1.Pod{}
	if err := a.client.Get(ctx, req.NamespacedName, pod); err != nil {
		if client.IgnoreNotFound(err) == nil {
			a.forgetAdmitted(req.String())
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if pod.Spec.NodeName == "" || admitted(pod) || terminal(pod) || pod.DeletionTimestamp != nil {
		if terminal(pod) {
			a.forgetAdmitted(req.String())
		}
		return reconcile.Result{}, nil
	}
	node := &corev1.Node{}
	if err := a.client.Get(ctx, client.ObjectKey{Name: pod.Spec.NodeName}, node); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err) // no node, no kubelet
	}
	// One node's admissions happen one at a time, each counting the ones before it, as the
	// kubelet's sync loop admits pods in turn.
	a.admissionMu.Lock()
	others, err := a.activePods(ctx, pod)
	if err != nil {
		a.admissionMu.Unlock()
		return reconcile.Result{}, err
	}
	key := client.ObjectKeyFromObject(node)
	node, reason, msg := admitRechecking(pod, node, others, func() (*corev1.Node, error) {
		fresh := &corev1.Node{}
		return fresh, a.live.Get(ctx, key, fresh)
	})
	if reason == "" {
		if a.admitted[node.Name] == nil {
			a.admitted[node.Name] = map[string]*corev1.Pod{}
		}
		a.admitted[node.Name][req.String()] = pod
	}
	a.admissionMu.Unlock()

	if reason != "" {
		err := a.patchStatus(ctx, pod, func(st *corev1.PodStatus) {
			st.Phase = corev1.PodFailed
			st.Reason = reason
			st.Message = "Pod was rejected: " + msg
		})
		if err != nil {
			return reconcile.Result{}, err
		}
		a.emit(ctx, pod, "Pod", corev1.EventTypeWarning, reason, msg, "kubelet")
		a.record(Event{Kind: PodRejected, Node: node.Name, Object: req.String(), Detail: reason + ": " + msg})
		return reconcile.Result{}, nil
	}
	hostIP := "127.0.0.1"
	for _, addr := range node.Status.Addresses {
		if addr.Type == corev1.NodeInternalIP {
			hostIP = addr.Address
		}
	}
	err = a.patchStatus(ctx, pod, func(st *corev1.PodStatus) {
		if st.Phase == "" {
			st.Phase = corev1.PodPending
		}
		st.HostIP = hostIP
		st.HostIPs = []corev1.HostIP{{IP: hostIP}}
	})
	if err != nil {
		a.forgetAdmitted(req.String())
	}
	return reconcile.Result{}, err
}

// activePods are the pods the kubelet of pod's node admitted and that have not ended (see
// active).
func (a admission) activePods(ctx context.Context, pod *corev1.Pod) ([]*corev1.Pod, error) {
	list := &corev1.PodList{}
	if err := a.client.List(ctx, list, client.MatchingFields{podNodeIndex: pod.Spec.NodeName}); err != nil {
		return nil, fmt.Errorf("listing the pods of node %s: %w", pod.Spec.NodeName, err)
	}
	return active(list.Items, a.admitted[pod.Spec.NodeName], pod), nil
}

// active picks, from a node's pods as the cache lists them, those its kubelet admitted and
// that have not ended, pod itself excluded: a pod whose status says it was admitted, and a
// pod admitted here (admittedHere, by namespace/name) whose status update the cache has not
// shown yet. A pod admitted here that the cache no longer lists was deleted: the scheduler
// binds a preemptor only once it has seen its victims gone, so counting one that is gone
// from the cache would reject the preemptor a real kubelet admits.
func active(pods []corev1.Pod, admittedHere map[string]*corev1.Pod, pod *corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for i := range pods {
		p := &pods[i]
		if (p.Namespace == pod.Namespace && p.Name == pod.Name) || terminal(p) {
			continue
		}
		if admitted(p) {
			out = append(out, p)
			continue
		}
		if here, ok := admittedHere[p.Namespace+"/"+p.Name]; ok && here.UID == p.UID {
			out = append(out, here)
		}
	}
	return out
}

// forgetAdmitted drops a pod that ended or is gone from the admissions made here.
func (a admission) forgetAdmitted(key string) {
	a.admissionMu.Lock()
	defer a.admissionMu.Unlock()
	for _, pods := range a.admitted {
		delete(pods, key)
	}
}

// admitRechecking is admit as the v1.35 kubelet runs it (kubernetes/kubernetes#134445): it
// does not trust its node cache for a rejection whose only reason is the node affinity, and
// reads the node from the API server (live) and decides again, so a label added just before
// the binding does not reject the pod. A failed read keeps the rejection. It returns the node
// it decided on.
func admitRechecking(pod *corev1.Pod, node *corev1.Node, others []*corev1.Pod, live func() (*corev1.Node, error)) (*corev1.Node, string, string) {
	reason, msg := admit(pod, node, others)
	if reason != "NodeAffinity" || untoleratedNoExecute(pod, node) {
		return node, reason, msg
	}
	fresh, err := live()
	if err != nil {
		return node, reason, msg
	}
	reason, msg = admit(pod, fresh, others)
	return fresh, reason, msg
}

// untoleratedNoExecute reports whether the node has a NoExecute taint the pod does not
// tolerate, the kubelet's last check. (The kubelet collects every failing reason and reads the
// node again only when affinity is the only one; admit stops at the first, and the resources
// come before affinity, so only this check can fail besides it.)
func untoleratedNoExecute(pod *corev1.Pod, node *corev1.Node) bool {
	_, untolerated := corev1helpers.FindMatchingUntoleratedTaint(logr.Discard(), node.Spec.Taints, pod.Spec.Tolerations,
		func(t *corev1.Taint) bool { return t.Effect == corev1.TaintEffectNoExecute }, false)
	return untolerated
}

// admit is the kubelet's decision for pod on node next to the active pods others: "" if it
// runs, else the reason and message it is rejected with (the first failure, in the order
// the kubelet checks them).
func admit(pod *corev1.Pod, node *corev1.Node, others []*corev1.Pod) (reason, message string) {
	alloc := node.Status.Allocatable
	if n := alloc.Pods().Value(); int64(len(others))+1 > n {
		return "OutOfpods", insufficient(corev1.ResourcePods, 1, int64(len(others)), n)
	}
	want := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
	used := corev1.ResourceList{}
	for _, p := range others {
		for name, q := range resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{}) {
			sum := used[name]
			sum.Add(q)
			used[name] = sum
		}
	}
	for _, r := range []struct {
		name   corev1.ResourceName
		reason string
		value  func(q resource.Quantity) int64
	}{
		{corev1.ResourceCPU, "OutOfcpu", func(q resource.Quantity) int64 { return q.MilliValue() }},
		{corev1.ResourceMemory, "OutOfmemory", func(q resource.Quantity) int64 { return q.Value() }},
		{corev1.ResourceEphemeralStorage, "OutOfephemeral-storage", func(q resource.Quantity) int64 { return q.Value() }},
	} {
		w, u, c := r.value(want[r.name]), r.value(used[r.name]), r.value(alloc[r.name])
		if w > 0 && w > c-u {
			return r.reason, insufficient(r.name, w, u, c)
		}
	}
	// Then the scalar resources (the scheduler's Fits): hugepages, and the extended resources
	// the node lists (removeMissingExtendedResources drops those it does not).
	var scalars []corev1.ResourceName
	for name := range want {
		if isScalarResource(name) {
			scalars = append(scalars, name)
		}
	}
	slices.Sort(scalars)
	for _, name := range scalars {
		c, listed := alloc[name]
		if !listed && !strings.HasPrefix(string(name), corev1.ResourceHugePagesPrefix) {
			continue
		}
		w, u := want[name], used[name]
		if w.Value() > c.Value()-u.Value() {
			return "OutOf" + string(name), insufficient(name, w.Value(), u.Value(), c.Value())
		}
	}
	if ok, _ := nodeaffinity.GetRequiredNodeAffinity(pod).Match(node); !ok {
		return "NodeAffinity", "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
	}
	if untoleratedNoExecute(pod, node) {
		return "TaintToleration", "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate"
	}
	return "", ""
}

// isScalarResource is what the scheduler's Fits counts beyond cpu, memory and
// ephemeral-storage: hugepages-*, and extended resources (a domain other than kubernetes.io,
// not a quota's "requests." name).
func isScalarResource(name corev1.ResourceName) bool {
	n := string(name)
	switch {
	case strings.HasPrefix(n, corev1.ResourceHugePagesPrefix):
		return true
	case strings.HasPrefix(n, corev1.DefaultResourceRequestsPrefix), !strings.Contains(n, "/"):
		return false
	default:
		return !strings.Contains(strings.SplitN(n, "/", 2)[0], "kubernetes.io")
	}
}

// insufficient is the kubelet's InsufficientResourceError message.
func insufficient(name corev1.ResourceName, requested, used, capacity int64) string {
	return fmt.Sprintf("Node didn't have enough resource: %s, requested: %d, used: %d, capacity: %d", name, requested, used, capacity)
}
