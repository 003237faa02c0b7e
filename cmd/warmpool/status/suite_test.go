package status_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/reference"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/controller/operator/operatortest"
	"warmpool.io/warmpool/controller/pools"
	"warmpool.io/warmpool/controller/scaling"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/controller/state"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// The suite runs against a real etcd + kube-apiserver with the Karpenter and VolumeSnapshot
// CRDs installed. The tests write the objects a story run leaves behind (the NodePool and node
// class warmpool applies, the headroom Deployment with its recorded state, the nodes with their
// annotations, the snapshots, and the Events, recorded through client-go's real recorder), then
// read them back through Gather as a user would.
var (
	restConfig *rest.Config
	kube       client.Client
)

func TestMain(m *testing.M) {
	os.Exit(cluster.RunTests(m, func(api *cluster.APIServer) { restConfig, kube = api.Config, api.Client }))
}

var unique = operatortest.Unique

const engineVersion = "v0.21.8"

// story is what a whole-story run leaves: a cache pool whose two burst nodes were saved to
// snapshots and are gone, and a node that restored the newer snapshot and started warm; plus an
// idle pool that was never actuated.
type story struct {
	namespace, pool, idle string
	warmNode              string
	burst                 []string
	snapshots             []string // oldest first
	recorded              time.Time
}

func configYAML(pool, idle string) string {
	header := strings.Replace(operatortest.ConfigHeader, "pools:\n", "webhook:\n  secretRef: {name: warmpool-github, key: webhook-secret}\npools:\n", 1)
	return header + operatortest.Pool(pool,
		"architectures: [amd64]",
		"nvme: {minSizeGB: 200}",
		"limits: {nodes: 4}",
		"engine: {version: "+engineVersion+"}",
		"cache: {enabled: true, storageClassName: sim, snapshotClassName: sim, size: 1Gi}",
		"queue:",
		"  sources:",
		"    - githubWebhook: {labels: [self-hosted, story]}",
		"scaling: {jobsPerNode: 1}",
	) + operatortest.Pool(idle, "architectures: [amd64]", "nvme: {minSizeGB: 200}", "engine: {version: "+engineVersion+"}")
}

// newStory writes the story's objects into a namespace of its own.
func newStory(t *testing.T) *story {
	t.Helper()
	ctx := t.Context()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "warmpool-status-"}}
	if err := kube.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	s := &story{namespace: ns.Name, pool: unique("story"), idle: unique("idle")}
	s.warmNode = "warm-" + s.pool
	s.burst = []string{"burst-a-" + s.pool, "burst-b-" + s.pool}
	s.recorded = time.Now().Add(-20 * time.Second).UTC().Truncate(time.Second)

	doc := configYAML(s.pool, s.idle)
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	create := func(o client.Object) {
		t.Helper()
		if err := kube.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
	create(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: s.namespace, Name: "warmpool"}, Data: map[string]string{config.ConfigMapKey: doc}})

	// What the pools controller applies, busy as the scaling controller left it.
	opts := nodepools.Options{NodeClass: nodepools.KWOKNodeClass, Namespace: s.namespace,
		Busy: func(pool string) nodepools.BusyBudget { return nodepools.BusyBudget{Busy: pool == s.pool} }}
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		create(nodepools.NodeClass(cfg, p, opts))
		np := nodepools.NodePool(p, opts)
		if p.Name == s.pool {
			// The scaling controller writes the annotation only once a pool was busy.
			np.Annotations = map[string]string{state.AnnotationBusy: "true"}
		}
		create(np)
		t.Cleanup(func() {
			_ = kube.Delete(context.Background(), np)
			_ = kube.Delete(context.Background(), nodepools.NodeClass(cfg, p, opts))
		})
	}
	// The headroom the scaling controller actuated, with its recorded state.
	recordedState, err := json.Marshal(policy.State{Desired: 1, LastEvaluation: s.recorded, Spare: 1})
	if err != nil {
		t.Fatal(err)
	}
	d := nodepools.HeadroomDeployment(&cfg.Pools[0], s.namespace, 0)
	d.Annotations = map[string]string{scaling.AnnotationState: string(recordedState)}
	create(d)

	// The burst nodes' snapshots: a full save, then one cloned from it; both ready.
	base := ""
	for i, node := range s.burst {
		name := volumes.SnapshotName(s.pool, node, "uid-"+node)
		target := volumes.Target{Namespace: s.namespace, Pool: s.pool, Node: node, Arch: "amd64", EngineVersion: engineVersion,
			Labels: nodepools.OwnedLabels(s.pool)}
		snap := volumes.Snapshot(target, name, "sim", base, volumes.JobResult{Result: volumes.ResultSaved, Bytes: int64(i+1) << 30, Files: 100})
		create(snap)
		snap.Status = &snapshotv1.VolumeSnapshotStatus{
			ReadyToUse:   ptr.To(true),
			CreationTime: &metav1.Time{Time: time.Now().Add(time.Duration(i-3) * time.Minute)},
			RestoreSize:  ptr.To(resource.MustParse("1Gi")),
		}
		if err := kube.Status().Update(ctx, snap); err != nil {
			t.Fatal(err)
		}
		s.snapshots = append(s.snapshots, name)
		base = name
	}
	newest := s.snapshots[len(s.snapshots)-1]

	// The node that restored the newest snapshot, verified warm.
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:   s.warmNode,
		Labels: map[string]string{nodepools.LabelPool: s.pool, corev1.LabelArchStable: "amd64"},
		Annotations: map[string]string{
			enginecache.AnnotationRestore:         volumes.ResultWarm,
			enginecache.AnnotationRestoreSnapshot: newest,
			enginecache.AnnotationRestoreID:       newest + "@uid",
			enginecache.AnnotationRestoreReleased: time.Now().Add(-40 * time.Second).UTC().Format(time.RFC3339),
		},
	}}
	create(node)
	t.Cleanup(func() { _ = kube.Delete(context.Background(), node) })
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if err := kube.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}

	// The Events, in the order the story made them.
	t0 := time.Now().Add(-5 * time.Minute)
	gone := func(name string) *corev1.Node { return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}} }
	np := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: nodepools.NodePoolGV.String(), Kind: "NodePool"}, ObjectMeta: metav1.ObjectMeta{Name: nodepools.Name(s.pool)}}
	recordEvent(t, t0, np, corev1.EventTypeNormal, scaling.ReasonScaledUp, "desired nodes 0 -> 2 (queue): 2 queued, 0 running jobs, 0 nodes, 0 busy, 2 headroom pods")
	recordEvent(t, t0.Add(time.Second), gone(s.burst[0]), corev1.EventTypeWarning, enginecache.ReasonColdStart, "engine starts without a restored cache (no-snapshot): no ready snapshot of pool "+s.pool)
	for i, n := range s.burst {
		recordEvent(t, t0.Add(time.Duration(2+i)*time.Minute), gone(n), corev1.EventTypeNormal, enginecache.ReasonSaved,
			fmt.Sprintf("cache saved to VolumeSnapshot %s/%s (a full copy onto an empty volume): %d bytes, 100 files, copy 1s, save 3s; snapshot cut, node released, upload continues", s.namespace, s.snapshots[i], (i+1)<<30))
	}
	// Karpenter's own: a Normal per status condition, and a Warning.
	recordEventAs(t, "karpenter", time.Now().Add(-50*time.Second), np, corev1.EventTypeNormal, "NodeRegistrationHealthy", "Status condition transitioned, Type: NodeRegistrationHealthy, Status: Unknown -> True")
	recordEventAs(t, "karpenter", time.Now().Add(-45*time.Second), node, corev1.EventTypeWarning, "FailedDraining", "Failed to drain node")
	// The pools controller's, on the config: one about the story pool, one about a pool whose
	// name starts with the story pool's.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: s.namespace, Name: "warmpool"}}
	recordEvent(t, time.Now().Add(-40*time.Second), cm, corev1.EventTypeWarning, pools.ReasonApplyFailed,
		"pool "+s.pool+": applying NodePool "+nodepools.Name(s.pool)+`, NodePool.karpenter.sh "`+nodepools.Name(s.pool)+`" is invalid: spec.disruption.budgets[0].nodes: Invalid value`)
	recordEvent(t, time.Now().Add(-40*time.Second), cm, corev1.EventTypeWarning, pools.ReasonApplyFailed, "pool "+s.pool+"x: applying NodePool")
	recordEvent(t, time.Now().Add(-30*time.Second), node, corev1.EventTypeNormal, enginecache.ReasonRestored,
		fmt.Sprintf("cache restored from VolumeSnapshot %s/%s: the engine started on it and kept it", s.namespace, newest))
	return s
}

// recordEvent writes an Event as client-go's recorder (the manager's, component warmpool)
// would have at time at: in the object's namespace, or default for a cluster-scoped object.
// The recorder itself stamps the current second, and the story's order matters here.
func recordEvent(t *testing.T, at time.Time, obj client.Object, eventType, reason, message string) {
	t.Helper()
	recordEventAs(t, "warmpool", at, obj, eventType, reason, message)
}

func recordEventAs(t *testing.T, component string, at time.Time, obj client.Object, eventType, reason, message string) {
	t.Helper()
	ref, err := reference.GetReference(kube.Scheme(), obj)
	if err != nil {
		t.Fatal(err)
	}
	ns := ref.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	stamp := metav1.NewTime(at)
	e := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%v.%x", ref.Name, at.UnixNano())},
		InvolvedObject: *ref, Reason: reason, Message: message, Type: eventType,
		FirstTimestamp: stamp, LastTimestamp: stamp, Count: 1,
		Source: corev1.EventSource{Component: component}, ReportingController: component,
	}
	if err := kube.Create(t.Context(), e); err != nil {
		t.Fatal(err)
	}
}

// impersonating is a client acting as user, with no groups but system:authenticated.
func impersonating(t *testing.T, user string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(restConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: kube.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// grant creates a ClusterRole with rules and binds it to user, then waits until the API server's
// authorizer allows every rule (RBAC is read from an informer: not at once).
func grant(t *testing.T, user string, rules []rbacv1.PolicyRule) {
	t.Helper()
	ctx := t.Context()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "status-test-" + user}, Rules: rules}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "status-test-" + user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := kube.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kube.Delete(context.Background(), o) })
	}
	cs, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range rules {
		for _, group := range r.APIGroups {
			for _, res := range r.Resources {
				for _, verb := range r.Verbs {
					name := ""
					if len(r.ResourceNames) > 0 {
						name = r.ResourceNames[0]
					}
					for {
						sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
							User: user, Groups: []string{"system:authenticated"},
							ResourceAttributes: &authorizationv1.ResourceAttributes{Group: group, Resource: res, Verb: verb, Name: name, Namespace: "default"},
						}}
						got, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
						if err != nil {
							t.Fatal(err)
						}
						if got.Status.Allowed {
							break
						}
						if time.Now().After(deadline) {
							t.Fatalf("RBAC never allowed %s %s/%s to %s", verb, group, res, user)
						}
						time.Sleep(50 * time.Millisecond)
					}
				}
			}
		}
	}
}

func contains(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}
