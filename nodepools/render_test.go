package nodepools_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	awsv1 "github.com/aws/karpenter-provider-aws/pkg/apis/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	kwokv1alpha1 "sigs.k8s.io/karpenter/kwok/apis/v1alpha1"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"
	"sigs.k8s.io/yaml"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/nodepools/discovery"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from the current output")

var (
	ec2Opts  = nodepools.Options{NodeClass: nodepools.EC2NodeClass}
	kwokOpts = nodepools.Options{NodeClass: nodepools.KWOKNodeClass}
)

// baseNodeClass is the smallest valid nodeClass section; cases append to it.
const baseNodeClass = `  role: KarpenterNodeRole-test
  subnetSelectorTerms:
    - tags: {karpenter.sh/discovery: test}
  securityGroupSelectorTerms:
    - tags: {karpenter.sh/discovery: test}
`

// configYAML builds a WarmpoolConfig document: nodeClassExtra is appended to baseNodeClass
// (indented two spaces), each pool is a YAML mapping body (indented four spaces, without
// the leading "- ").
func configYAML(nodeClassExtra string, pools ...string) string {
	var b strings.Builder
	b.WriteString("apiVersion: warmpool.io/v1alpha1\nkind: WarmpoolConfig\nnodeClass:\n")
	b.WriteString(baseNodeClass)
	b.WriteString(indent(nodeClassExtra, "  "))
	b.WriteString("pools:\n")
	for _, p := range pools {
		body := indent(p, "    ")
		b.WriteString("  - " + strings.TrimPrefix(body, "    "))
	}
	return b.String()
}

func indent(s, prefix string) string {
	if strings.TrimSpace(s) == "" {
		return ""
	}
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if line != "" {
			b.WriteString(prefix)
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// pool is a minimal valid pool body named name; extra is appended.
func pool(name, extra string) string { return poolNVMe(name, 100, extra) }

// poolNVMe is a minimal valid pool body with nvme.minSizeGB gb; extra is appended.
func poolNVMe(name string, gb int64, extra string) string {
	return fmt.Sprintf("name: %s\nnvme: {minSizeGB: %d}\nengine: {version: v0.19.7}\n", name, gb) + extra
}

func mustParse(t testing.TB, doc string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("config.Parse: %v\n--- document ---\n%s", err, doc)
	}
	return cfg
}

// render parses a one-pool config and returns its EC2NodeClass and NodePool (the first two
// of its four objects; the engine ConfigMap and DaemonSet follow).
func render(t *testing.T, nodeClassExtra, poolExtra string) (*awsv1.EC2NodeClass, *karpv1.NodePool) {
	t.Helper()
	cfg := mustParse(t, configYAML(nodeClassExtra, pool("p", poolExtra)))
	objs := nodepools.Render(cfg, ec2Opts)
	// A cache-enabled pool also gets its hold DaemonSet.
	want := 4
	if cfg.Pools[0].Cache.Enabled {
		want = 5
	}
	if len(objs) != want {
		t.Fatalf("Render returned %d objects, want %d", len(objs), want)
	}
	nc, ok := objs[0].(*awsv1.EC2NodeClass)
	if !ok {
		t.Fatalf("objs[0] is %T, want *EC2NodeClass", objs[0])
	}
	np, ok := objs[1].(*karpv1.NodePool)
	if !ok {
		t.Fatalf("objs[1] is %T, want *NodePool", objs[1])
	}
	return nc, np
}

// equalJSON compares got and want by their JSON encoding, which is what reaches the API
// server (member order aside), and reports both on a mismatch.
func equalJSON(t *testing.T, what string, got, want any) {
	t.Helper()
	g, gv := normalJSON(t, got)
	w, wv := normalJSON(t, want)
	if !reflect.DeepEqual(gv, wv) {
		t.Errorf("%s:\n got %s\nwant %s", what, g, w)
	}
}

// normalJSON encodes v and decodes it again into plain maps, lists and scalars; the text is
// re-encoded from those, so map members are sorted.
func normalJSON(t *testing.T, v any) (string, any) {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encoding %T: %v", v, err)
	}
	var out any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("decoding %s: %v", raw, err)
	}
	text, _ := json.Marshal(out)
	return string(text), out
}

type reqs = []karpv1.NodeSelectorRequirementWithMinValues

func req(key string, op corev1.NodeSelectorOperator, values ...string) karpv1.NodeSelectorRequirementWithMinValues {
	return karpv1.NodeSelectorRequirementWithMinValues{Key: key, Operator: op, Values: values}
}

const (
	keyNVMe     = "karpenter.k8s.aws/instance-local-nvme"
	keyArch     = "kubernetes.io/arch"
	keyOS       = "kubernetes.io/os"
	keyCapacity = "karpenter.sh/capacity-type"
	keyCategory = "karpenter.k8s.aws/instance-category"
	keyFamily   = "karpenter.k8s.aws/instance-family"
	keyGen      = "karpenter.k8s.aws/instance-generation"
)

// baseReqs are the requirements every pool has, for a pool with nvme.minSizeGB 100 and the
// default architectures and capacity types.
func baseReqs(extra ...karpv1.NodeSelectorRequirementWithMinValues) reqs {
	return append(reqs{
		req(keyNVMe, corev1.NodeSelectorOpGt, "100"),
		req(keyArch, corev1.NodeSelectorOpIn, "amd64"),
		req(keyOS, corev1.NodeSelectorOpIn, "linux"),
		req(keyCapacity, corev1.NodeSelectorOpIn, "on-demand"),
	}, extra...)
}

func TestRequirements(t *testing.T) {
	for _, tc := range []struct {
		name string
		pool string // whole pool body, named p
		want reqs
	}{
		{"defaults: NVMe first, amd64, linux, on-demand", pool("p", ""), baseReqs()},
		{"nvme minSizeGB", poolNVMe("p", 1900, ""), reqs{
			req(keyNVMe, corev1.NodeSelectorOpGt, "1900"),
			req(keyArch, corev1.NodeSelectorOpIn, "amd64"),
			req(keyOS, corev1.NodeSelectorOpIn, "linux"),
			req(keyCapacity, corev1.NodeSelectorOpIn, "on-demand"),
		}},
		{"architectures", pool("p", "architectures: [arm64, amd64]\n"), reqs{
			req(keyNVMe, corev1.NodeSelectorOpGt, "100"),
			req(keyArch, corev1.NodeSelectorOpIn, "arm64", "amd64"),
			req(keyOS, corev1.NodeSelectorOpIn, "linux"),
			req(keyCapacity, corev1.NodeSelectorOpIn, "on-demand"),
		}},
		{"capacity types in config order", pool("p", "capacityTypes: [spot, on-demand, reserved]\n"), reqs{
			req(keyNVMe, corev1.NodeSelectorOpGt, "100"),
			req(keyArch, corev1.NodeSelectorOpIn, "amd64"),
			req(keyOS, corev1.NodeSelectorOpIn, "linux"),
			req(keyCapacity, corev1.NodeSelectorOpIn, "spot", "on-demand", "reserved"),
		}},
		{"categories in", pool("p", "instance: {categories: {in: [c, m]}}\n"),
			baseReqs(req(keyCategory, corev1.NodeSelectorOpIn, "c", "m"))},
		{"categories notIn", pool("p", "instance: {categories: {notIn: [t]}}\n"),
			baseReqs(req(keyCategory, corev1.NodeSelectorOpNotIn, "t"))},
		{"families in", pool("p", "instance: {families: {in: [c7gd, m7gd]}}\n"),
			baseReqs(req(keyFamily, corev1.NodeSelectorOpIn, "c7gd", "m7gd"))},
		{"families notIn", pool("p", "instance: {families: {notIn: [x2iedn]}}\n"),
			baseReqs(req(keyFamily, corev1.NodeSelectorOpNotIn, "x2iedn"))},
		{"generations in", pool("p", "instance: {generations: {in: [6, 7]}}\n"),
			baseReqs(req(keyGen, corev1.NodeSelectorOpIn, "6", "7"))},
		{"generations notIn", pool("p", "instance: {generations: {notIn: [5]}}\n"),
			baseReqs(req(keyGen, corev1.NodeSelectorOpNotIn, "5"))},
		{"minGeneration 6 is Gt 5", pool("p", "instance: {minGeneration: 6}\n"),
			baseReqs(req(keyGen, corev1.NodeSelectorOpGt, "5"))},
		{"minGeneration 2 is Gt 1", pool("p", "instance: {minGeneration: 2}\n"),
			baseReqs(req(keyGen, corev1.NodeSelectorOpGt, "1"))},
		{"minGeneration 1 adds nothing", pool("p", "instance: {minGeneration: 1}\n"), baseReqs()},
		{"minGeneration 0 adds nothing", pool("p", "instance: {minGeneration: 0}\n"), baseReqs()},
		{"empty in/notIn lists add nothing", pool("p", "instance: {categories: {in: [], notIn: []}, families: {}, generations: {in: []}}\n"), baseReqs()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustParse(t, configYAML("", tc.pool))
			got := nodepools.Requirements(&cfg.Pools[0])
			equalJSON(t, "Requirements", got, tc.want)
			// The NodePool carries exactly these requirements.
			np := nodepools.NodePool(&cfg.Pools[0], ec2Opts)
			equalJSON(t, "NodePool requirements", np.Spec.Template.Spec.Requirements, tc.want)
		})
	}
}

func TestRequirementsOrder(t *testing.T) {
	cfg := mustParse(t, configYAML("", pool("p", `instance:
  categories: {in: [c, m], notIn: [r]}
  families: {in: [c6id, m6id], notIn: [m5d]}
  generations: {in: [6, 7], notIn: [5]}
  minGeneration: 6
`)))
	want := baseReqs(
		req(keyCategory, corev1.NodeSelectorOpIn, "c", "m"),
		req(keyCategory, corev1.NodeSelectorOpNotIn, "r"),
		req(keyFamily, corev1.NodeSelectorOpIn, "c6id", "m6id"),
		req(keyFamily, corev1.NodeSelectorOpNotIn, "m5d"),
		req(keyGen, corev1.NodeSelectorOpIn, "6", "7"),
		req(keyGen, corev1.NodeSelectorOpNotIn, "5"),
		req(keyGen, corev1.NodeSelectorOpGt, "5"),
	)
	equalJSON(t, "Requirements", nodepools.Requirements(&cfg.Pools[0]), want)
}

func TestNodePool(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra string // appended to pool "p"
		check func(t *testing.T, np *karpv1.NodePool)
	}{
		{"name and ownership labels", "", func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "TypeMeta", np.TypeMeta, map[string]string{"apiVersion": "karpenter.sh/v1", "kind": "NodePool"})
			if np.Name != "warmpool-p" {
				t.Errorf("name %q, want warmpool-p", np.Name)
			}
			equalJSON(t, "labels", np.Labels, map[string]string{"app.kubernetes.io/managed-by": "warmpool", "warmpool.io/pool": "p"})
			if np.Namespace != "" {
				t.Errorf("namespace %q: NodePools are cluster-scoped", np.Namespace)
			}
		}},
		{"default runner taint", "", func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "taints", np.Spec.Template.Spec.Taints,
				[]corev1.Taint{{Key: "warmpool.io/runner", Value: "p", Effect: corev1.TaintEffectNoSchedule}})
		}},
		{"custom taint", "taint: {key: example.com/ci, value: builders, effect: NoExecute}\n", func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "taints", np.Spec.Template.Spec.Taints,
				[]corev1.Taint{{Key: "example.com/ci", Value: "builders", Effect: corev1.TaintEffectNoExecute}})
		}},
		{"startup taint when cache enabled", "cache: {enabled: true}\n", func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "startupTaints", np.Spec.Template.Spec.StartupTaints,
				[]corev1.Taint{{Key: "warmpool.io/cache-restore", Effect: corev1.TaintEffectNoSchedule}})
		}},
		{"no startup taint when cache disabled", "cache: {enabled: false}\n", func(t *testing.T, np *karpv1.NodePool) {
			if st := np.Spec.Template.Spec.StartupTaints; st != nil {
				t.Errorf("startupTaints %v, want none", st)
			}
		}},
		{"node labels include the pool", "labels: {ci.example.com/tier: builder, team: platform}\n", func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "template labels", np.Spec.Template.Labels, map[string]string{
				"warmpool.io/pool": "p", "ci.example.com/tier": "builder", "team": "platform"})
		}},
		{"node labels without extra labels", "", func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "template labels", np.Spec.Template.Labels, map[string]string{"warmpool.io/pool": "p"})
		}},
		{"limits cpu, memory, nodes", "limits: {cpu: \"512\", memory: 2048Gi, nodes: 20}\n", func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "limits", np.Spec.Limits, map[string]string{"cpu": "512", "memory": "2Ti", "nodes": "20"})
		}},
		{"limits nodes only", "limits: {nodes: 3}\n", func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "limits", np.Spec.Limits, map[string]string{"nodes": "3"})
		}},
		{"no limits is nil", "", func(t *testing.T, np *karpv1.NodePool) {
			if np.Spec.Limits != nil {
				t.Errorf("limits %v, want nil", np.Spec.Limits)
			}
		}},
		{"weight", "weight: 50\n", func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "weight", np.Spec.Weight, ptr.To[int32](50))
		}},
		{"no weight is nil", "", func(t *testing.T, np *karpv1.NodePool) {
			if np.Spec.Weight != nil {
				t.Errorf("weight %d, want nil", *np.Spec.Weight)
			}
		}},
		{"default budget", "", func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "budgets", np.Spec.Disruption.Budgets, []map[string]any{{"nodes": "10%"}})
		}},
		{"budgets with reasons, schedule and duration", `disruption:
  budgets:
    - nodes: "20%"
    - nodes: "0"
      reasons: [Drifted, Underutilized]
      schedule: "0 8 * * mon-fri"
      duration: 10h
`, func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "budgets", np.Spec.Disruption.Budgets, []map[string]any{
				{"nodes": "20%"},
				{"nodes": "0", "reasons": []string{"Drifted", "Underutilized"}, "schedule": "0 8 * * mon-fri", "duration": "10h0m0s"},
			})
		}},
		{"expireAfter Never", "expireAfter: Never\n", func(t *testing.T, np *karpv1.NodePool) {
			if d := np.Spec.Template.Spec.ExpireAfter.Duration; d != nil {
				t.Errorf("expireAfter duration %v, want nil (Never)", *d)
			}
			equalJSON(t, "expireAfter", np.Spec.Template.Spec.ExpireAfter, "Never")
		}},
		{"expireAfter duration", "expireAfter: 168h\n", func(t *testing.T, np *karpv1.NodePool) {
			if d := np.Spec.Template.Spec.ExpireAfter.Duration; d == nil || d.Hours() != 168 {
				t.Errorf("expireAfter %v, want 168h", d)
			}
			equalJSON(t, "expireAfter", np.Spec.Template.Spec.ExpireAfter, "168h")
		}},
		{"expireAfter default 720h", "", func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "expireAfter", np.Spec.Template.Spec.ExpireAfter, "720h0m0s")
		}},
		{"terminationGracePeriod", "terminationGracePeriod: 45m\n", func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "terminationGracePeriod", np.Spec.Template.Spec.TerminationGracePeriod, "45m0s")
		}},
		{"terminationGracePeriod default 1h", "", func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "terminationGracePeriod", np.Spec.Template.Spec.TerminationGracePeriod, "1h0m0s")
		}},
		{"consolidation policy and after", "disruption: {consolidationPolicy: WhenEmptyOrUnderutilized, consolidateAfter: 10m}\n", func(t *testing.T, np *karpv1.NodePool) {
			if got := np.Spec.Disruption.ConsolidationPolicy; got != karpv1.ConsolidationPolicyWhenEmptyOrUnderutilized {
				t.Errorf("consolidationPolicy %q", got)
			}
			equalJSON(t, "consolidateAfter", np.Spec.Disruption.ConsolidateAfter, "10m")
		}},
		{"consolidateAfter Never", "disruption: {consolidateAfter: Never}\n", func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "consolidateAfter", np.Spec.Disruption.ConsolidateAfter, "Never")
		}},
		{"consolidation defaults", "", func(t *testing.T, np *karpv1.NodePool) {
			if got := np.Spec.Disruption.ConsolidationPolicy; got != karpv1.ConsolidationPolicyWhenEmpty {
				t.Errorf("consolidationPolicy %q, want WhenEmpty", got)
			}
			equalJSON(t, "consolidateAfter", np.Spec.Disruption.ConsolidateAfter, "5m0s")
		}},
		{"nodeClassRef ec2", "", func(t *testing.T, np *karpv1.NodePool) {
			equalJSON(t, "nodeClassRef", np.Spec.Template.Spec.NodeClassRef,
				&karpv1.NodeClassReference{Group: "karpenter.k8s.aws", Kind: "EC2NodeClass", Name: "warmpool-p"})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, np := render(t, "", tc.extra)
			tc.check(t, np)
		})
	}
}

func TestNodePoolKWOK(t *testing.T) {
	cfg := mustParse(t, configYAML("", pool("p", "")))
	objs := nodepools.Render(cfg, kwokOpts)
	if len(objs) != 4 {
		t.Fatalf("Render returned %d objects, want 4", len(objs))
	}
	kc, ok := objs[0].(*kwokv1alpha1.KWOKNodeClass)
	if !ok {
		t.Fatalf("objs[0] is %T, want *KWOKNodeClass", objs[0])
	}
	equalJSON(t, "TypeMeta", kc.TypeMeta, map[string]string{"apiVersion": "karpenter.kwok.sh/v1alpha1", "kind": "KWOKNodeClass"})
	if kc.Name != "warmpool-p" {
		t.Errorf("KWOKNodeClass name %q", kc.Name)
	}
	equalJSON(t, "KWOKNodeClass labels", kc.Labels, nodepools.OwnedLabels("p"))

	np := objs[1].(*karpv1.NodePool)
	equalJSON(t, "nodeClassRef", np.Spec.Template.Spec.NodeClassRef,
		&karpv1.NodeClassReference{Group: "karpenter.kwok.sh", Kind: "KWOKNodeClass", Name: "warmpool-p"})
	// Everything else is the same NodePool as for EC2.
	ec2NP := nodepools.NodePool(&cfg.Pools[0], ec2Opts)
	ec2NP.Spec.Template.Spec.NodeClassRef = np.Spec.Template.Spec.NodeClassRef
	equalJSON(t, "KWOK NodePool vs EC2 NodePool", np, ec2NP)
}

func TestEC2NodeClass(t *testing.T) {
	for _, tc := range []struct {
		name      string
		nodeClass string // appended to baseNodeClass; replaces role when it sets instanceProfile
		check     func(t *testing.T, nc *awsv1.EC2NodeClass)
	}{
		{"name, ownership labels, TypeMeta", "", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			equalJSON(t, "TypeMeta", nc.TypeMeta, map[string]string{"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass"})
			if nc.Name != "warmpool-p" {
				t.Errorf("name %q, want warmpool-p", nc.Name)
			}
			equalJSON(t, "labels", nc.Labels, map[string]string{"app.kubernetes.io/managed-by": "warmpool", "warmpool.io/pool": "p"})
		}},
		{"role", "", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			if nc.Spec.Role != "KarpenterNodeRole-test" {
				t.Errorf("role %q", nc.Spec.Role)
			}
			if nc.Spec.InstanceProfile != nil {
				t.Errorf("instanceProfile %q, want nil", *nc.Spec.InstanceProfile)
			}
		}},
		{"instanceProfile", "instanceProfile: KarpenterNodeInstanceProfile-test\n", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			if nc.Spec.Role != "" {
				t.Errorf("role %q, want empty", nc.Spec.Role)
			}
			equalJSON(t, "instanceProfile", nc.Spec.InstanceProfile, "KarpenterNodeInstanceProfile-test")
		}},
		{"amiSelectorTerms default alias", "", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			equalJSON(t, "amiSelectorTerms", nc.Spec.AMISelectorTerms, []map[string]string{{"alias": "al2023@latest"}})
		}},
		{"amiSelectorTerms alias", "amiAlias: bottlerocket@v1.31.0\n", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			equalJSON(t, "amiSelectorTerms", nc.Spec.AMISelectorTerms, []map[string]string{{"alias": "bottlerocket@v1.31.0"}})
		}},
		{"selector terms pass through", "", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			want := []map[string]any{{"tags": map[string]string{"karpenter.sh/discovery": "test"}}}
			equalJSON(t, "subnetSelectorTerms", nc.Spec.SubnetSelectorTerms, want)
			equalJSON(t, "securityGroupSelectorTerms", nc.Spec.SecurityGroupSelectorTerms, want)
		}},
		{"instanceStorePolicy RAID0", "", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			equalJSON(t, "instanceStorePolicy", nc.Spec.InstanceStorePolicy, "RAID0")
		}},
		{"tags: the pool tag alone", "", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			equalJSON(t, "tags", nc.Spec.Tags, map[string]string{"warmpool.io/pool": "p"})
		}},
		{"tags: user tags plus the pool tag", "tags: {team: platform, cost-center: ci}\n", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			equalJSON(t, "tags", nc.Spec.Tags, map[string]string{"team": "platform", "cost-center": "ci", "warmpool.io/pool": "p"})
		}},
		{"tags: a user tag cannot replace the pool tag", "tags: {warmpool.io/pool: other}\n", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			equalJSON(t, "tags", nc.Spec.Tags, map[string]string{"warmpool.io/pool": "p"})
		}},
		{"no rootVolume: no mappings", "", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			if nc.Spec.BlockDeviceMappings != nil {
				t.Errorf("blockDeviceMappings %v, want nil", nc.Spec.BlockDeviceMappings)
			}
		}},
		{"empty rootVolume: no mappings", "rootVolume: {}\n", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			if nc.Spec.BlockDeviceMappings != nil {
				t.Errorf("blockDeviceMappings %v, want nil", nc.Spec.BlockDeviceMappings)
			}
		}},
		{"rootVolume al2023 on /dev/xvda", "rootVolume: {size: 50Gi, type: gp3, encrypted: true}\n", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			equalJSON(t, "blockDeviceMappings", nc.Spec.BlockDeviceMappings, []map[string]any{{
				"deviceName": "/dev/xvda",
				"ebs":        map[string]any{"deleteOnTermination": true, "encrypted": true, "volumeSize": "50Gi", "volumeType": "gp3"},
				"rootVolume": true,
			}})
		}},
		{"rootVolume bottlerocket on /dev/xvdb", "amiAlias: bottlerocket@latest\nrootVolume: {size: 40Gi}\n", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			equalJSON(t, "blockDeviceMappings", nc.Spec.BlockDeviceMappings, []map[string]any{{
				"deviceName": "/dev/xvdb",
				"ebs":        map[string]any{"deleteOnTermination": true, "volumeSize": "40Gi"},
				"rootVolume": true,
			}})
		}},
		{"rootVolume al2 on /dev/xvda", "amiAlias: al2@latest\nrootVolume: {size: 40Gi}\n", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			equalJSON(t, "deviceName", nc.Spec.BlockDeviceMappings[0].DeviceName, "/dev/xvda")
		}},
		{"rootVolume every field, explicit device", `rootVolume:
  size: 100Gi
  type: io2
  iops: 4000
  throughput: 250
  encrypted: true
  kmsKeyID: arn:aws:kms:us-east-1:111122223333:key/abc
  deviceName: /dev/sda1
`, func(t *testing.T, nc *awsv1.EC2NodeClass) {
			equalJSON(t, "blockDeviceMappings", nc.Spec.BlockDeviceMappings, []map[string]any{{
				"deviceName": "/dev/sda1",
				"ebs": map[string]any{
					"deleteOnTermination": true, "encrypted": true, "iops": 4000,
					"kmsKeyID": "arn:aws:kms:us-east-1:111122223333:key/abc", "throughput": 250,
					"volumeSize": "100Gi", "volumeType": "io2",
				},
				"rootVolume": true,
			}})
		}},
		{"metadataOptions", "metadataOptions: {httpEndpoint: enabled, httpProtocolIPv6: disabled, httpPutResponseHopLimit: 1, httpTokens: required}\n", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			equalJSON(t, "metadataOptions", nc.Spec.MetadataOptions, map[string]any{
				"httpEndpoint": "enabled", "httpProtocolIPv6": "disabled", "httpPutResponseHopLimit": 1, "httpTokens": "required"})
		}},
		{"no metadataOptions", "", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			if nc.Spec.MetadataOptions != nil {
				t.Errorf("metadataOptions %+v, want nil (Karpenter's default)", nc.Spec.MetadataOptions)
			}
		}},
		{"kubelet", `kubelet:
  maxPods: 110
  systemReserved: {cpu: 200m, memory: 500Mi}
  imageGCHighThresholdPercent: 85
  imageGCLowThresholdPercent: 80
`, func(t *testing.T, nc *awsv1.EC2NodeClass) {
			equalJSON(t, "kubelet", nc.Spec.Kubelet, map[string]any{
				"imageGCHighThresholdPercent": 85, "imageGCLowThresholdPercent": 80, "maxPods": 110,
				"systemReserved": map[string]string{"cpu": "200m", "memory": "500Mi"}})
		}},
		{"no kubelet", "", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			if nc.Spec.Kubelet != nil {
				t.Errorf("kubelet %+v, want nil", nc.Spec.Kubelet)
			}
		}},
		{"userData", "userData: |\n  #!/bin/bash\n  echo hello\n", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			equalJSON(t, "userData", nc.Spec.UserData, "#!/bin/bash\necho hello\n")
		}},
		{"no userData", "", func(t *testing.T, nc *awsv1.EC2NodeClass) {
			if nc.Spec.UserData != nil {
				t.Errorf("userData %q, want nil", *nc.Spec.UserData)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := configYAML(tc.nodeClass, pool("p", ""))
			if strings.Contains(tc.nodeClass, "instanceProfile:") {
				doc = strings.Replace(doc, "  role: KarpenterNodeRole-test\n", "", 1)
			}
			cfg := mustParse(t, doc)
			nc, ok := nodepools.Render(cfg, ec2Opts)[0].(*awsv1.EC2NodeClass)
			if !ok {
				t.Fatal("first object is not an EC2NodeClass")
			}
			tc.check(t, nc)
		})
	}
}

func TestParseNodeClassKind(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want nodepools.NodeClassKind
		err  bool
	}{
		{"ec2", nodepools.EC2NodeClass, false},
		{"kwok", nodepools.KWOKNodeClass, false},
		{"EC2", nodepools.EC2NodeClass, false},
		{"KWOK", nodepools.KWOKNodeClass, false},
		{"foo", "", true},
		{"", "", true},
	} {
		got, err := nodepools.ParseNodeClassKind(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseNodeClassKind(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
		if err != nil && !strings.Contains(err.Error(), `"ec2" or "kwok"`) {
			t.Errorf("ParseNodeClassKind(%q) error %q does not say what is accepted", tc.in, err)
		}
	}
}

func TestNodeClassGVK(t *testing.T) {
	if got, want := nodepools.NodeClassGVK(nodepools.EC2NodeClass), (schema.GroupVersionKind{Group: "karpenter.k8s.aws", Version: "v1", Kind: "EC2NodeClass"}); got != want {
		t.Errorf("NodeClassGVK(ec2) = %v, want %v", got, want)
	}
	if got, want := nodepools.NodeClassGVK(nodepools.KWOKNodeClass), (schema.GroupVersionKind{Group: "karpenter.kwok.sh", Version: "v1alpha1", Kind: "KWOKNodeClass"}); got != want {
		t.Errorf("NodeClassGVK(kwok) = %v, want %v", got, want)
	}
	if got := nodepools.Name("dagger"); got != "warmpool-dagger" {
		t.Errorf("Name(dagger) = %q", got)
	}
}

// threePools is a config whose pool names are deliberately not sorted.
func threePools() string {
	return configYAML("tags: {b: \"2\", a: \"1\", c: \"3\"}\nrootVolume: {size: 20Gi}\n",
		pool("zeta", "labels: {z: \"1\", a: \"2\", m: \"3\"}\ncache: {enabled: true}\nlimits: {cpu: \"64\", memory: 256Gi, nodes: 4}\n"),
		pool("alpha", "architectures: [arm64]\ninstance: {families: {in: [m7gd, c7gd]}}\n"),
		pool("mid", "instance: {categories: {in: [m, c]}, minGeneration: 6}\nexpireAfter: Never\n"),
	)
}

func TestRenderOrder(t *testing.T) {
	for _, opts := range []nodepools.Options{ec2Opts, kwokOpts} {
		t.Run(string(opts.NodeClass), func(t *testing.T) {
			objs := nodepools.Render(mustParse(t, threePools()), opts)
			var got []string
			for _, o := range objs {
				got = append(got, fmt.Sprintf("%T/%s", o, o.GetName()))
			}
			nc := "*v1.EC2NodeClass"
			if opts.NodeClass == nodepools.KWOKNodeClass {
				nc = "*v1alpha1.KWOKNodeClass"
			}
			var want []string
			for _, p := range []string{"zeta", "alpha", "mid"} {
				want = append(want, nc+"/warmpool-"+p, "*v1.NodePool/warmpool-"+p,
					"*v1.ConfigMap/warmpool-engine-"+p, "*v1.DaemonSet/warmpool-engine-"+p)
				if p == "zeta" { // the one with the cache on
					want = append(want, "*v1.DaemonSet/warmpool-hold-"+p)
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Render order\n got %v\nwant %v", got, want)
			}
			for _, o := range objs {
				pool := strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(o.GetName(), "warmpool-"), "engine-"), "hold-")
				labels := maps.Clone(o.GetLabels())
				if nodepools.IsEngineObject(labels) {
					delete(labels, "app.kubernetes.io/name")
				}
				if !reflect.DeepEqual(labels, nodepools.OwnedLabels(pool)) {
					t.Errorf("%s labels %v, want %v", o.GetName(), o.GetLabels(), nodepools.OwnedLabels(pool))
				}
			}
		})
	}
}

func TestRenderDeterministic(t *testing.T) {
	doc := threePools()
	for _, opts := range []nodepools.Options{ec2Opts, kwokOpts} {
		t.Run(string(opts.NodeClass), func(t *testing.T) {
			cfg := mustParse(t, doc)
			first, err := nodepools.YAML(nodepools.Render(cfg, opts))
			if err != nil {
				t.Fatal(err)
			}
			// Same config object rendered again, and a fresh parse of the same document.
			for i, c := range []*config.Config{cfg, mustParse(t, doc), cfg} {
				again, err := nodepools.YAML(nodepools.Render(c, opts))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(first, again) {
					t.Fatalf("render %d differs from the first:\n%s", i+1, lineDiff(string(first), string(again)))
				}
			}
		})
	}
}

// TestRenderDoesNotModifyConfig: rendering is pure, so it leaves the config as it found it.
func TestRenderDoesNotModifyConfig(t *testing.T) {
	cfg := mustParse(t, threePools())
	before, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = nodepools.YAML(nodepools.Render(cfg, ec2Opts))
	_, _ = nodepools.YAML(nodepools.Render(cfg, kwokOpts))
	after, _ := json.Marshal(cfg)
	if !bytes.Equal(before, after) {
		t.Errorf("config changed by Render:\n%s", lineDiff(string(before), string(after)))
	}
}

// walkNoNulls fails for every null member or list element under v.
func walkNoNulls(t *testing.T, path string, v any) {
	t.Helper()
	switch v := v.(type) {
	case nil:
		t.Errorf("%s is null", path)
	case map[string]any:
		for k, item := range v {
			walkNoNulls(t, path+"."+k, item)
		}
	case []any:
		for i, item := range v {
			walkNoNulls(t, fmt.Sprintf("%s[%d]", path, i), item)
		}
	}
}

func TestToUnstructured(t *testing.T) {
	cfg := mustParse(t, threePools())
	var objs []client.Object
	objs = append(objs, nodepools.Render(cfg, ec2Opts)...)
	objs = append(objs, nodepools.Render(cfg, kwokOpts)...)
	for _, obj := range objs {
		t.Run(fmt.Sprintf("%T/%s", obj, obj.GetName()), func(t *testing.T) {
			// Typed objects marshal status ({} or with fields), and EC2NodeClass has null
			// members (capacityReservationSelectorTerms); check the input really has them.
			raw, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			_, isConfigMap := obj.(*corev1.ConfigMap) // a ConfigMap has neither status nor spec
			if !isConfigMap && !bytes.Contains(raw, []byte(`"status":`)) {
				t.Fatalf("test premise: %T's JSON has no status: %s", obj, raw)
			}
			if _, ok := obj.(*awsv1.EC2NodeClass); ok && !bytes.Contains(raw, []byte(`null`)) {
				t.Fatalf("test premise: EC2NodeClass JSON has no null member: %s", raw)
			}

			u, err := nodepools.ToUnstructured(obj)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := u.Object["status"]; ok {
				t.Errorf("status kept: %v", u.Object["status"])
			}
			if _, ok := u.Object["metadata"].(map[string]any)["creationTimestamp"]; ok {
				t.Error("metadata.creationTimestamp (null) kept")
			}
			walkNoNulls(t, "", u.Object)
			if gvk := u.GroupVersionKind(); gvk != obj.GetObjectKind().GroupVersionKind() || gvk.Kind == "" {
				t.Errorf("GVK %v, want %v", gvk, obj.GetObjectKind().GroupVersionKind())
			}
			if u.GetName() != obj.GetName() || !reflect.DeepEqual(u.GetLabels(), obj.GetLabels()) {
				t.Errorf("metadata %s %v, want %s %v", u.GetName(), u.GetLabels(), obj.GetName(), obj.GetLabels())
			}
			if _, ok := u.Object["spec"].(map[string]any); !ok && !isConfigMap {
				t.Errorf("spec missing: %v", u.Object)
			}
		})
	}
}

// TestToUnstructuredDropsNestedNulls uses objects full of nulls: an empty NodePool marshals
// requirements and nodeClassRef as null, and a requirement inside a list has its own members.
func TestToUnstructuredDropsNestedNulls(t *testing.T) {
	np := &karpv1.NodePool{}
	np.Name = "bare"
	np.Spec.Template.Spec.Requirements = reqs{{MinValues: nil}}
	np.Status.Conditions = nil
	raw, _ := json.Marshal(np)
	if !bytes.Contains(raw, []byte(`"nodeClassRef":null`)) {
		t.Fatalf("test premise: no null nodeClassRef in %s", raw)
	}
	u, err := nodepools.ToUnstructured(np)
	if err != nil {
		t.Fatal(err)
	}
	walkNoNulls(t, "", u.Object)
	if _, ok := u.Object["status"]; ok {
		t.Error("status kept")
	}
	spec := u.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	if _, ok := spec["nodeClassRef"]; ok {
		t.Errorf("null nodeClassRef kept: %v", spec)
	}
	if got := len(spec["requirements"].([]any)); got != 1 {
		t.Errorf("requirements has %d items, want the 1 (empty) requirement kept", got)
	}
}

func TestYAMLDocuments(t *testing.T) {
	cfg := mustParse(t, threePools())
	objs := nodepools.Render(cfg, ec2Opts)
	out, err := nodepools.YAML(objs)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if strings.HasPrefix(s, "---") || !strings.HasSuffix(s, "\n") {
		t.Errorf("stream must not start with --- and must end with a newline:\n%s", s)
	}
	docs := strings.Split(s, "\n---\n")
	if len(docs) != len(objs) {
		t.Fatalf("got %d documents separated by ---, want %d:\n%s", len(docs), len(objs), s)
	}
	if n := strings.Count(s, "---"); n != len(objs)-1 {
		t.Errorf("%d separators, want %d", n, len(objs)-1)
	}
	for i, doc := range docs {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, doc)
		}
		u, err := nodepools.ToUnstructured(objs[i])
		if err != nil {
			t.Fatal(err)
		}
		// Each document is exactly its object's unstructured form.
		equalJSON(t, fmt.Sprintf("document %d", i), m, u.Object)
	}

	// Typed round trip: each document decodes strictly into its Karpenter type.
	for i, doc := range docs {
		target := reflect.New(reflect.TypeOf(objs[i]).Elem()).Interface()
		if err := yaml.UnmarshalStrict([]byte(doc), target); err != nil {
			t.Errorf("document %d does not decode strictly into %T: %v", i, target, err)
		}
	}

	empty, err := nodepools.YAML(nil)
	if err != nil || len(empty) != 0 {
		t.Errorf("YAML(nil) = %q, %v; want empty", empty, err)
	}
	one, err := nodepools.YAML(objs[:1])
	if err != nil || strings.Contains(string(one), "---") {
		t.Errorf("YAML of one object = %q, %v; want no separator", one, err)
	}
}

func TestGolden(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "deploy", "examples", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data)
	if err != nil {
		t.Fatalf("deploy/examples/config.yaml: %v", err)
	}
	// The namespace is the controller's default, as `warmpool render` prints it.
	got, err := nodepools.YAML(nodepools.Render(cfg, nodepools.Options{NodeClass: nodepools.EC2NodeClass, Namespace: "warmpool"}))
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "config.golden.yaml")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", golden)
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run `go test ./nodepools -run Golden -update` to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("render of deploy/examples/config.yaml differs from %s (- golden, + got); "+
			"if the change is intended, run `go test ./nodepools -run Golden -update`:\n%s",
			golden, lineDiff(string(want), string(got)))
	}
}

// lineDiff is a small LCS line diff: unchanged lines are prefixed "  ", removed "- ", added
// "+ ", and long unchanged runs are elided to three lines of context.
func lineDiff(old, new string) string {
	x, y := strings.Split(old, "\n"), strings.Split(new, "\n")
	n, m := len(x), len(y)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type line struct {
		op   byte
		text string
	}
	var lines []line
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && x[i] == y[j]:
			lines = append(lines, line{' ', x[i]})
			i, j = i+1, j+1
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			lines = append(lines, line{'-', x[i]})
			i++
		default:
			lines = append(lines, line{'+', y[j]})
			j++
		}
	}
	const context = 3
	var b strings.Builder
	for k, l := range lines {
		if l.op == ' ' {
			near := false
			for d := -context; d <= context; d++ {
				if k+d >= 0 && k+d < len(lines) && lines[k+d].op != ' ' {
					near = true
					break
				}
			}
			if !near {
				if k > 0 && lines[k-1].op == ' ' && !strings.HasSuffix(b.String(), "...\n") {
					b.WriteString("...\n")
				}
				continue
			}
		}
		fmt.Fprintf(&b, "%c %s\n", l.op, l.text)
	}
	return b.String()
}

func TestLineDiff(t *testing.T) {
	got := lineDiff("a\nb\nc\n", "a\nB\nc\n")
	if want := "  a\n- b\n+ B\n  c\n  \n"; got != want {
		t.Errorf("lineDiff =\n%s\nwant\n%s", got, want)
	}
}

func TestDiscoveryRequirements(t *testing.T) {
	cfg := mustParse(t, configYAML("",
		`name: full
architectures: [amd64, arm64]
instance:
  categories: {in: [c, m], notIn: [r]}
  families: {in: [c6id, m6id], notIn: [m5d]}
  generations: {in: [6, 7], notIn: [5]}
  minGeneration: 6
nvme: {minSizeGB: 250}
capacityTypes: [spot]
engine: {version: v0.19.7}
`,
		pool("defaults", ""),
	))
	for _, tc := range []struct {
		pool int
		want discovery.Requirements
	}{
		{0, discovery.Requirements{
			Architectures: []string{"amd64", "arm64"},
			Categories:    []string{"c", "m"}, NotCategories: []string{"r"},
			Families: []string{"c6id", "m6id"}, NotFamilies: []string{"m5d"},
			Generations: []int{6, 7}, NotGenerations: []int{5},
			MinGeneration: 6,
			MinNVMeGB:     250,
		}},
		{1, discovery.Requirements{Architectures: []string{"amd64"}, MinNVMeGB: 100}},
	} {
		got := nodepools.DiscoveryRequirements(&cfg.Pools[tc.pool])
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("DiscoveryRequirements(pools[%d])\n got %+v\nwant %+v", tc.pool, got, tc.want)
		}
	}
}

// TestDiscoveryRequirementsMatchRequirements: every instance type the discovery filter admits
// satisfies the NodePool's own requirements, read as Karpenter reads them, and vice versa.
func TestDiscoveryRequirementsMatchRequirements(t *testing.T) {
	cfg := mustParse(t, configYAML("",
		poolNVMe("a", 200, "instance: {categories: {in: [c, m]}, minGeneration: 6}\n"),
		pool("b", "architectures: [arm64]\ninstance: {families: {in: [c7gd, m7gd]}, generations: {notIn: [6]}}\n"),
		pool("c", "architectures: [amd64, arm64]\ninstance: {categories: {notIn: [c]}, families: {notIn: [m6id]}, generations: {in: [6, 7]}}\n"),
	))
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		dr := nodepools.DiscoveryRequirements(p)
		for _, it := range catalogue {
			if got, want := dr.Admits(it), karpenterAdmits(nodepools.Requirements(p), it); got != want {
				t.Errorf("pool %s, %s: discovery admits %v, NodePool requirements admit %v", p.Name, it.Name, got, want)
			}
		}
	}
}

// karpenterAdmits evaluates requirements against an instance type's labels the way Karpenter
// does: In/Gt need the label, NotIn admits a missing label. Capacity type and OS are not
// instance type properties here and always match.
func karpenterAdmits(rs []karpv1.NodeSelectorRequirementWithMinValues, it discovery.InstanceType) bool {
	labels := map[string][]string{keyNVMe: {fmt.Sprint(it.NVMeGB)}, keyArch: it.Architectures}
	if it.Category != "" {
		labels[keyCategory] = []string{it.Category}
	}
	if it.Family != "" {
		labels[keyFamily] = []string{it.Family}
	}
	if it.Generation != 0 {
		labels[keyGen] = []string{fmt.Sprint(it.Generation)}
	}
	for _, r := range rs {
		if r.Key == keyOS || r.Key == keyCapacity {
			continue
		}
		have, ok := labels[r.Key]
		switch r.Operator {
		case corev1.NodeSelectorOpIn:
			if !ok || !anyIn(have, r.Values) {
				return false
			}
		case corev1.NodeSelectorOpNotIn:
			if ok && anyIn(have, r.Values) {
				return false
			}
		case corev1.NodeSelectorOpGt:
			var v, bound int64
			if !ok {
				return false
			}
			fmt.Sscan(have[0], &v)
			fmt.Sscan(r.Values[0], &bound)
			if v <= bound {
				return false
			}
		default:
			panic("unexpected operator " + r.Operator)
		}
	}
	return true
}

func anyIn(have, values []string) bool {
	for _, h := range have {
		for _, v := range values {
			if h == v {
				return true
			}
		}
	}
	return false
}

func itype(name, arch string, nvmeGB int64) discovery.InstanceType {
	c, f, g := discovery.ParseName(name)
	return discovery.InstanceType{Name: name, Architectures: []string{arch}, NVMeGB: nvmeGB, Category: c, Family: f, Generation: g}
}

var catalogue = []discovery.InstanceType{
	itype("c6id.2xlarge", "amd64", 474),
	itype("c6id.large", "amd64", 118),
	itype("m6id.xlarge", "amd64", 237),
	itype("r6id.2xlarge", "amd64", 474),
	itype("c5d.2xlarge", "amd64", 200),
	itype("m5d.4xlarge", "amd64", 300),
	itype("c7gd.xlarge", "arm64", 237),
	itype("m7gd.large", "arm64", 118),
	itype("c7gd.medium", "arm64", 59),
	itype("i4i.xlarge", "amd64", 937),
	itype("c6i.large", "amd64", 0),
	{Name: "weird", Architectures: []string{"amd64"}, NVMeGB: 500}, // no category/family/generation labels
}

func TestAdmitted(t *testing.T) {
	cfg := mustParse(t, configYAML("",
		poolNVMe("amd", 200, "instance: {categories: {in: [c, m]}, minGeneration: 6}\n"),
		pool("arm", "architectures: [arm64]\ninstance: {families: {in: [c7gd, m7gd]}}\n"),
	))
	got := map[string][]string{}
	for pool, types := range nodepools.Admitted(cfg, catalogue) {
		got[pool] = []string{}
		for _, it := range types {
			got[pool] = append(got[pool], it.Name)
		}
	}
	want := map[string][]string{
		"amd": {"c6id.2xlarge", "m6id.xlarge"},
		"arm": {"c7gd.xlarge", "m7gd.large"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Admitted = %v, want %v", got, want)
	}
}

func TestCheckAdmitted(t *testing.T) {
	t.Run("every pool admits something", func(t *testing.T) {
		cfg := mustParse(t, configYAML("",
			poolNVMe("amd", 200, "instance: {categories: {in: [c, m]}, minGeneration: 6}\n"),
			pool("arm", "architectures: [arm64]\n"),
		))
		if errs := nodepools.CheckAdmitted(cfg, catalogue); len(errs) != 0 {
			t.Errorf("CheckAdmitted = %v, want no errors", errs)
		}
	})
	t.Run("pools admitting nothing are named", func(t *testing.T) {
		cfg := mustParse(t, configYAML("",
			pool("ok", ""),
			poolNVMe("huge", 100000, ""),
			pool("ok2", "architectures: [arm64]\n"),
			pool("nofamily", "instance: {families: {in: [z9zd]}}\n"),
		))
		errs := nodepools.CheckAdmitted(cfg, catalogue)
		var fields []string
		for _, e := range errs {
			fields = append(fields, e.Field)
		}
		if want := []string{"pools[1]", "pools[3]"}; !reflect.DeepEqual(fields, want) {
			t.Fatalf("CheckAdmitted fields %v, want %v (errors: %v)", fields, want, errs)
		}
		lines := (&config.Error{Errs: errs}).Lines()
		for i, want := range []string{`pools[1]: no instance type in the region meets`, `pools[3]: no instance type in the region meets`} {
			if !strings.HasPrefix(lines[i], want) {
				t.Errorf("line %d = %q, want prefix %q", i, lines[i], want)
			}
		}
		if !strings.Contains(lines[0], `"huge"`) || !strings.Contains(lines[1], `"nofamily"`) {
			t.Errorf("lines do not name the pools: %q", lines)
		}
	})
	t.Run("no instance types at all", func(t *testing.T) {
		cfg := mustParse(t, configYAML("", pool("a", ""), pool("b", "")))
		errs := nodepools.CheckAdmitted(cfg, nil)
		if len(errs) != 2 || errs[0].Field != "pools[0]" || errs[1].Field != "pools[1]" {
			t.Errorf("CheckAdmitted(no types) = %v, want pools[0] and pools[1]", errs)
		}
		if !strings.Contains(errs[0].Detail, "0 types with NVMe seen") {
			t.Errorf("detail %q does not say how many types were seen", errs[0].Detail)
		}
	})
}
