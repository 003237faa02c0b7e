package pools_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/client-go/util/retry"

	awsv1 "github.com/aws/karpenter-provider-aws/pkg/apis/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/operator/operatortest"
	"warmpool.io/warmpool/controller/pools"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/nodepools/discovery/ec2fake"
)

// twoPools renders a config with pools a and b; minSizeGB varies per call so updates show.
func twoPools(minSizeGB int, extra string) string {
	return fmt.Sprintf(`apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  role: KarpenterNodeRole-test
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: test}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: test}}]
pools:
  - name: a
    nvme: {minSizeGB: %d}
    limits: {nodes: 5}
    engine: {version: v0.19.7}
    cache: {enabled: true}
%s`, minSizeGB, extra)
}

const poolB = `  - name: b
    architectures: [arm64]
    nvme: {minSizeGB: 50}
    engine: {version: v0.19.7}
`

func getNodePool(t *testing.T, name string) *karpv1.NodePool {
	t.Helper()
	np := &karpv1.NodePool{}
	if err := kube.Get(t.Context(), client.ObjectKey{Name: name}, np); err != nil {
		t.Fatal(err)
	}
	return np
}

// poolState is what the pools controller writes to a NodePool: its spec (generation) and
// labels. Not the resourceVersion: the scaling controller annotates NodePools too.
func poolState(np *karpv1.NodePool) string {
	return fmt.Sprintf("generation %d, labels %v", np.Generation, np.Labels)
}

func nvmeRequirement(np *karpv1.NodePool) string {
	for _, r := range np.Spec.Template.Spec.Requirements {
		if r.Key == awsv1.LabelInstanceLocalNVME {
			return string(r.Operator) + " " + strings.Join(r.Values, ",")
		}
	}
	return ""
}

func TestAppliesEveryPool(t *testing.T) {
	e := newEnv(t, twoPools(100, poolB), nil)
	eventually(t, "NodePools applied", func() error {
		if got := owned(t, "NodePool"); !slices.Equal(got, []string{"warmpool-a", "warmpool-b"}) {
			return fmt.Errorf("NodePools %v", got)
		}
		if got := owned(t, "EC2NodeClass"); !slices.Equal(got, []string{"warmpool-a", "warmpool-b"}) {
			return fmt.Errorf("EC2NodeClasses %v", got)
		}
		return nil
	})
	// What the API server stored is what the renderer produced.
	cfg, err := config.Parse([]byte(twoPools(100, poolB)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range cfg.Pools {
		want := nodepools.NodePool(&cfg.Pools[i], nodepools.Options{NodeClass: nodepools.EC2NodeClass})
		got := getNodePool(t, want.Name)
		if !equality.Semantic.DeepEqual(got.Spec.Template.Spec.Requirements, want.Spec.Template.Spec.Requirements) {
			t.Errorf("%s requirements:\n got %+v\nwant %+v", want.Name, got.Spec.Template.Spec.Requirements, want.Spec.Template.Spec.Requirements)
		}
		if !equality.Semantic.DeepEqual(got.Spec.Template.Spec.Taints, want.Spec.Template.Spec.Taints) {
			t.Errorf("%s taints: got %v want %v", want.Name, got.Spec.Template.Spec.Taints, want.Spec.Template.Spec.Taints)
		}
		if !equality.Semantic.DeepEqual(got.Spec.Template.Spec.StartupTaints, want.Spec.Template.Spec.StartupTaints) {
			t.Errorf("%s startup taints: got %v want %v", want.Name, got.Spec.Template.Spec.StartupTaints, want.Spec.Template.Spec.StartupTaints)
		}
		if got.Labels[nodepools.LabelManagedBy] != nodepools.ManagedBy || got.Labels[nodepools.LabelPool] != cfg.Pools[i].Name {
			t.Errorf("%s ownership labels: %v", want.Name, got.Labels)
		}
		if mf := got.GetManagedFields(); !slices.ContainsFunc(mf, func(f metav1.ManagedFieldsEntry) bool {
			return f.Manager == "warmpool" && f.Operation == metav1.ManagedFieldsOperationApply
		}) {
			t.Errorf("%s was not server-side applied by field manager warmpool: %v", want.Name, mf)
		}
	}
	if got := getNodePool(t, "warmpool-a").Spec.Template.Spec.StartupTaints; len(got) != 1 || got[0].Key != nodepools.StartupTaintKey {
		t.Errorf("cache-enabled pool a has startup taints %v, want the cache-restore taint", got)
	}
	nc := &awsv1.EC2NodeClass{}
	if err := kube.Get(t.Context(), client.ObjectKey{Name: "warmpool-b"}, nc); err != nil {
		t.Fatal(err)
	}
	if ptr.Deref(nc.Spec.InstanceStorePolicy, "") != awsv1.InstanceStorePolicyRAID0 {
		t.Errorf("EC2NodeClass instanceStorePolicy = %v, want RAID0", nc.Spec.InstanceStorePolicy)
	}
	e.waitEvent(pools.ReasonApplied, "pool a", "NodePool/warmpool-a", "EC2NodeClass/warmpool-a")
	e.waitEvent(pools.ReasonApplied, "pool b")
	// The gauge is set once the whole config is in force, a moment after the apply Events.
	eventually(t, "warmpool_config_valid to read 1", func() error {
		if v := gauge(t, "warmpool_config_valid"); v != 1 {
			return fmt.Errorf("warmpool_config_valid = %v, want 1", v)
		}
		return nil
	})
}

func TestConfigUpdateChangesNodePools(t *testing.T) {
	e := newEnv(t, twoPools(100, ""), nil)
	eventually(t, "pool a applied", func() error {
		if owned(t, "NodePool") == nil {
			return fmt.Errorf("no NodePool yet")
		}
		return nil
	})
	e.SetConfig(twoPools(400, ""))
	eventually(t, "NVMe requirement updated", func() error {
		if got := nvmeRequirement(getNodePool(t, "warmpool-a")); got != "Gt 400" {
			return fmt.Errorf("requirement %q", got)
		}
		return nil
	})
}

func TestRemovedPoolIsPruned(t *testing.T) {
	e := newEnv(t, twoPools(100, poolB), nil)
	eventually(t, "both pools applied", func() error {
		if n := len(owned(t, "NodePool")); n != 2 {
			return fmt.Errorf("%d NodePools", n)
		}
		return nil
	})
	// A NodePool warmpool does not own is never pruned, even with a warmpool-like name.
	foreign := &karpv1.NodePool{
		ObjectMeta: metav1.ObjectMeta{Name: "warmpool-foreign", Labels: map[string]string{nodepools.LabelPool: "foreign"}},
		Spec: karpv1.NodePoolSpec{Template: karpv1.NodeClaimTemplate{Spec: karpv1.NodeClaimTemplateSpec{
			Requirements: []karpv1.NodeSelectorRequirementWithMinValues{{Key: corev1.LabelArchStable, Operator: corev1.NodeSelectorOpIn, Values: []string{"amd64"}}},
			NodeClassRef: &karpv1.NodeClassReference{Group: "karpenter.k8s.aws", Kind: "EC2NodeClass", Name: "default"},
		}}},
	}
	if err := kube.Create(t.Context(), foreign); err != nil {
		t.Fatal(err)
	}
	// t.Context() is already cancelled when cleanups run.
	t.Cleanup(func() { _ = kube.Delete(context.Background(), foreign) })

	e.SetConfig(twoPools(100, ""))
	eventually(t, "pool b pruned", func() error {
		if got := owned(t, "NodePool"); !slices.Equal(got, []string{"warmpool-a"}) {
			return fmt.Errorf("NodePools %v", got)
		}
		if got := owned(t, "EC2NodeClass"); !slices.Equal(got, []string{"warmpool-a"}) {
			return fmt.Errorf("EC2NodeClasses %v", got)
		}
		return nil
	})
	e.waitEvent(pools.ReasonPruned, "pool b left the config", "NodePool warmpool-b")
	if err := kube.Get(t.Context(), client.ObjectKeyFromObject(foreign), &karpv1.NodePool{}); err != nil {
		t.Errorf("foreign NodePool was touched: %v", err)
	}
}

func TestInvalidUpdateLeavesPoolsUntouched(t *testing.T) {
	e := newEnv(t, twoPools(100, poolB), nil)
	eventually(t, "both pools applied", func() error {
		if n := len(owned(t, "NodePool")); n != 2 {
			return fmt.Errorf("%d NodePools", n)
		}
		return nil
	})
	before := map[string]string{}
	for _, name := range []string{"warmpool-a", "warmpool-b"} {
		before[name] = poolState(getNodePool(t, name))
	}
	// Invalid: minSizeGB 0, and pool b removed (which would prune it if the config were taken).
	e.SetConfig(twoPools(0, ""))
	note := e.waitEvent(pools.ReasonRejected, "pools[0].nvme.minSizeGB: must be >= 1, got 0", "the last good config (2 pools) stays in force")
	t.Logf("rejection event: %s", note)
	eventually(t, "gauge at 0", func() error {
		if v := gauge(t, "warmpool_config_valid"); v != 0 {
			return fmt.Errorf("warmpool_config_valid = %v", v)
		}
		return nil
	})
	for name, state := range before {
		if got := poolState(getNodePool(t, name)); got != state {
			t.Errorf("%s changed (%s -> %s) by a rejected config", name, state, got)
		}
	}
	if cur := e.Mgr.State.Config(); cur == nil || len(cur.Pools) != 2 {
		t.Errorf("config in force after rejection: %+v, want the 2-pool config", cur)
	}

	// Fixing the config applies it and the gauge recovers.
	e.SetConfig(twoPools(300, ""))
	eventually(t, "fixed config applied", func() error {
		if got := owned(t, "NodePool"); !slices.Equal(got, []string{"warmpool-a"}) {
			return fmt.Errorf("NodePools %v", got)
		}
		if v := gauge(t, "warmpool_config_valid"); v != 1 {
			return fmt.Errorf("warmpool_config_valid = %v", v)
		}
		return nil
	})
}

func TestStartWithInvalidConfigAppliesNothing(t *testing.T) {
	e := newEnv(t, "apiVersion: warmpool.io/v1alpha1\nkind: WarmpoolConfig\npools:\n  - name: Bad_Name\n    nvme: {minSizeGB: 10}\n    bogus: true\n", nil)
	note := e.waitEvent(pools.ReasonRejected, "no pools were applied yet", "pools[0].bogus")
	t.Logf("rejection event: %s", note)
	if got := owned(t, "NodePool"); len(got) != 0 {
		t.Errorf("NodePools created from an invalid config: %v", got)
	}
	if e.Mgr.State.Config() != nil {
		t.Errorf("a config is in force after an invalid start")
	}
	if v := gauge(t, "warmpool_config_valid"); v != 0 {
		t.Errorf("warmpool_config_valid = %v, want 0", v)
	}
}

func TestRestartKeepsLastGoodPools(t *testing.T) {
	e := newEnv(t, twoPools(100, poolB), nil)
	eventually(t, "both pools applied", func() error {
		if n := len(owned(t, "NodePool")); n != 2 {
			return fmt.Errorf("%d NodePools", n)
		}
		return nil
	})
	e.Stop()
	e.SetConfig("not: [valid")
	state := poolState(getNodePool(t, "warmpool-b"))
	e.Start()
	e.waitEvent(pools.ReasonRejected, "malformed YAML")
	if got := poolState(getNodePool(t, "warmpool-b")); got != state {
		t.Errorf("pool b changed across a restart with an invalid config")
	}
}

// foreignNodeClass creates an EC2NodeClass warmpool did not make, deleted when the test ends.
func foreignNodeClass(t *testing.T, name string) *awsv1.EC2NodeClass {
	t.Helper()
	foreign := &awsv1.EC2NodeClass{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: awsv1.EC2NodeClassSpec{
			Role:                       "someone-else",
			AMISelectorTerms:           []awsv1.AMISelectorTerm{{Alias: "al2023@latest"}},
			SubnetSelectorTerms:        []awsv1.SubnetSelectorTerm{{ID: "subnet-1"}},
			SecurityGroupSelectorTerms: []awsv1.SecurityGroupSelectorTerm{{ID: "sg-1"}},
		},
	}
	if err := kube.Create(t.Context(), foreign); err != nil {
		t.Fatal(err)
	}
	// t.Context() is already cancelled when cleanups run.
	t.Cleanup(func() { _ = kube.Delete(context.Background(), foreign) })
	return foreign
}

func TestForeignObjectIsNotTakenOver(t *testing.T) {
	foreign := foreignNodeClass(t, "warmpool-a")
	e := newEnv(t, twoPools(100, ""), nil)
	e.waitEvent(pools.ReasonOwnershipConflict, "EC2NodeClass warmpool-a exists and is not managed by warmpool")
	got := &awsv1.EC2NodeClass{}
	if err := kube.Get(t.Context(), client.ObjectKeyFromObject(foreign), got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Role != "someone-else" || got.Labels[nodepools.LabelManagedBy] != "" {
		t.Errorf("foreign EC2NodeClass was modified: role %q labels %v", got.Spec.Role, got.Labels)
	}
}

// TestRefusedPoolHoldsNoOtherBack: a new pool whose objects cannot be applied (here its node
// class's name is taken) is reported and not put in force, and the other pools' changes go in
// force at once (a pool in force would keep its last good settings: TestWithLastGood). A config
// edit applies it once the way is clear.
func TestRefusedPoolHoldsNoOtherBack(t *testing.T) {
	e := newEnv(t, twoPools(100, poolB), nil)
	eventually(t, "both pools in force", func() error { return poolsInForce(e, "a=Gt 100", "b") })

	foreign := foreignNodeClass(t, "warmpool-c")

	// Pool a changes, pool c is new and cannot be applied.
	poolC := "  - name: c\n    nvme: {minSizeGB: 50}\n    engine: {version: v0.19.7}\n"
	e.SetConfig(twoPools(400, poolB+poolC))
	e.waitEvent(pools.ReasonApplyFailed, "pool c", "EC2NodeClass warmpool-c exists and is not managed by warmpool")
	eventually(t, "pool a's change in force without pool c", func() error { return poolsInForce(e, "a=Gt 400", "b") })
	if v, _ := operatortest.Metric(t, "warmpool_pool_apply_failed", map[string]string{"pool": "c"}); v != 1 {
		t.Errorf("warmpool_pool_apply_failed{pool=c} = %v, want 1", v)
	}
	if v, _ := operatortest.Metric(t, "warmpool_pool_apply_failed", map[string]string{"pool": "a"}); v != 0 {
		t.Errorf("warmpool_pool_apply_failed{pool=a} = %v, want 0", v)
	}

	// The name is freed and the config edited again: pool c is applied and in force.
	if err := kube.Delete(t.Context(), foreign); err != nil {
		t.Fatal(err)
	}
	e.SetConfig(twoPools(400, poolBLabelled+poolC))
	eventually(t, "every pool in force once nothing refuses them", func() error { return poolsInForce(e, "a=Gt 400", "b", "c") })
	if v, _ := operatortest.Metric(t, "warmpool_pool_apply_failed", map[string]string{"pool": "c"}); v != 0 {
		t.Errorf("warmpool_pool_apply_failed{pool=c} = %v after it was applied, want 0", v)
	}
}

// poolsInForce checks the config in force names exactly these pools, each "name" or
// "name=requirement" (its NVMe requirement as rendered).
func poolsInForce(e *env, want ...string) error {
	cfg := e.Mgr.State.Config()
	if cfg == nil {
		return fmt.Errorf("no config in force")
	}
	var got []string
	for _, p := range cfg.Pools {
		got = append(got, p.Name)
	}
	var names []string
	for _, w := range want {
		name, req, hasReq := strings.Cut(w, "=")
		names = append(names, name)
		if !hasReq {
			continue
		}
		for _, p := range cfg.Pools {
			if p.Name == name && fmt.Sprintf("Gt %d", p.NVMe.MinSizeGB) != req {
				return fmt.Errorf("pool %s in force with minSizeGB %d, want %s", name, p.NVMe.MinSizeGB, req)
			}
		}
	}
	if !slices.Equal(got, names) {
		return fmt.Errorf("pools in force %v, want %v", got, names)
	}
	return nil
}

func TestHandEditIsReverted(t *testing.T) {
	newEnv(t, twoPools(100, ""), nil)
	eventually(t, "pool a applied", func() error {
		if owned(t, "NodePool") == nil {
			return fmt.Errorf("no NodePool yet")
		}
		return nil
	})
	// The controller may still be applying the NodePool (a reconcile already queued when the
	// first apply landed): edit the newest version, as kubectl edit does on a conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		np := getNodePool(t, "warmpool-a")
		np.Spec.Template.Spec.Requirements[0].Values = []string{"1"}
		return kube.Update(t.Context(), np)
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "hand edit reverted", func() error {
		if got := nvmeRequirement(getNodePool(t, "warmpool-a")); got != "Gt 100" {
			return fmt.Errorf("requirement %q", got)
		}
		return nil
	})
}

func TestDiscoveryRejectsPoolWithoutInstanceTypes(t *testing.T) {
	fake, err := ec2fake.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	// The real SDK credential chain, kept hermetic: static keys, no shared files, no IMDS.
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDWARMPOOLTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	discoveryBlock := fmt.Sprintf("discovery: {enabled: true, region: us-east-1, endpoint: %q}\n", fake.URL)
	huge := `  - name: huge
    nvme: {minSizeGB: 1000000}
    engine: {version: v0.19.7}
`
	e := newEnv(t, twoPools(100, huge)+discoveryBlock, nil)
	note := e.waitEvent(pools.ReasonRejected, "pools[1]", `"huge"`, "no instance type in the region")
	t.Logf("rejection event: %s", note)
	if got := owned(t, "NodePool"); len(got) != 0 {
		t.Errorf("NodePools applied although a pool admits no instance type: %v", got)
	}
	if len(fake.Requests()) == 0 {
		t.Errorf("the fake EC2 endpoint was never asked")
	}

	e.SetConfig(twoPools(100, "") + discoveryBlock)
	eventually(t, "admissible config applied", func() error {
		if got := owned(t, "NodePool"); !slices.Equal(got, []string{"warmpool-a"}) {
			return fmt.Errorf("NodePools %v", got)
		}
		return nil
	})
}

// TestRenderedObjectsPassAPIValidation dry-runs every object a rich config renders, for both
// node class kinds, through the API server's OpenAPI schema and CEL rules.
func TestRenderedObjectsPassAPIValidation(t *testing.T) {
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "deploy", "examples", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []nodepools.NodeClassKind{nodepools.EC2NodeClass, nodepools.KWOKNodeClass} {
		for _, obj := range nodepools.Render(cfg, nodepools.Options{NodeClass: kind, Namespace: "default"}) {
			u, err := nodepools.ToUnstructured(obj)
			if err != nil {
				t.Fatal(err)
			}
			if err := kube.Create(t.Context(), u, client.DryRunAll); err != nil {
				t.Errorf("%s: API server rejected %s %s: %v", kind, u.GetKind(), u.GetName(), err)
			}
		}
	}
}
