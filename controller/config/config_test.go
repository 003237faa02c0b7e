package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	awsv1 "github.com/aws/karpenter-provider-aws/pkg/apis/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"
)

// minimalYAML is the smallest valid config: everything else has a default.
const minimalYAML = `apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  role: KarpenterNodeRole-ci
  subnetSelectorTerms:
    - tags: {karpenter.sh/discovery: ci}
  securityGroupSelectorTerms:
    - tags: {karpenter.sh/discovery: ci}
pools:
  - name: runners
    nvme: {minSizeGB: 100}
    engine: {version: v0.21.8}
`

// The messages of k8s.io/apimachinery's name validators, which several rules pass through.
const (
	dnsLabelMsg      = `a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`
	dnsSubdomainMsg  = `a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`
	configKeyMsg     = `a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')`
	qualifiedNameMsg = `name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`
	labelValueMsg    = `a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`
	amiAliasMsg      = `must be <family>@<version> with family one of al2, al2023, bottlerocket`
	imageMsg         = `must be an image reference: a repository ("registry.dagger.io/engine"; the tag then comes from version), optionally with a :tag or @digest`
	labelsRequired   = `required: the runner labels whose jobs this pool runs`
)

func mustDecode(t *testing.T, doc string) *Config {
	t.Helper()
	cfg, err := Decode([]byte(doc))
	if err != nil {
		t.Fatalf("decoding: %v", err)
	}
	return cfg
}

// lines formats a validation result as Parse's *Error would.
func lines(errs field.ErrorList) []string {
	if len(errs) == 0 {
		return nil
	}
	return (&Error{Errs: errs}).Lines()
}

// parseLines runs Parse and returns its error lines, failing on any other kind of error.
func parseLines(t *testing.T, doc string) []string {
	t.Helper()
	cfg, err := Parse([]byte(doc))
	if err == nil {
		if cfg == nil {
			t.Fatal("Parse returned neither a config nor an error")
		}
		return nil
	}
	if cfg != nil {
		t.Fatalf("Parse returned a config and an error: %v", err)
	}
	var cfgErr *Error
	if !errors.As(err, &cfgErr) {
		t.Fatalf("Parse returned %T, want *config.Error: %v", err, err)
	}
	if len(cfgErr.Lines()) == 0 {
		t.Fatal("Parse returned an *Error without lines")
	}
	return cfgErr.Lines()
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func qty(s string) *resource.Quantity { return ptr.To(resource.MustParse(s)) }

func ref(name, key string) *SecretKeyRef { return &SecretKeyRef{Name: name, Key: key} }

func pool0(c *Config) *Pool { return &c.Pools[0] }

// Valid sources of every kind; a case edits one field to break it.
func ghWebhookSource() Source {
	return Source{GitHubWebhook: &GitHubWebhookSource{Labels: []string{"self-hosted", "dagger"}}}
}

func githubSource() Source {
	return Source{GitHub: &GitHubSource{Owner: "acme", Labels: []string{"dagger"}, TokenSecretRef: ref("github", "token")}}
}

func arcSource() Source {
	return Source{ARC: &ARCSource{Namespace: "arc-runners", ScaleSetName: "dagger"}}
}

func gitlabSource() Source {
	return Source{GitLab: &GitLabSource{GroupID: "42", TokenSecretRef: *ref("gitlab", "token")}}
}

func buildkiteSource() Source {
	return Source{Buildkite: &BuildkiteSource{Queue: "dagger", TokenSecretRef: *ref("buildkite", "token")}}
}

func prometheusSource() Source {
	return Source{Prometheus: &PrometheusSource{URL: "http://prometheus:9090", Query: "sum(queued_jobs)"}}
}

// withSource sets pool 0's only queue source (and the webhook secret githubWebhook needs).
func withSource(s Source, edit func(*Source)) func(*Config) {
	return func(c *Config) {
		if edit != nil {
			edit(&s)
		}
		c.Webhook.SecretRef = ref("warmpool-github", "webhook-secret")
		pool0(c).Queue.Sources = []Source{s}
	}
}

// TestValidateRules has one case per validation rule: the minimal config with one edit (made
// before Default, as a user would write it) yields exactly the one expected line.
func TestValidateRules(t *testing.T) {
	src := "pools[0].queue.sources[0]"
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		// Document.
		{"apiVersion wrong", func(c *Config) { c.APIVersion = "warmpool.io/v1" },
			`apiVersion: supported values: "warmpool.io/v1alpha1", got "warmpool.io/v1"`},
		{"apiVersion missing", func(c *Config) { c.APIVersion = "" },
			`apiVersion: supported values: "warmpool.io/v1alpha1", got ""`},
		{"kind wrong", func(c *Config) { c.Kind = "ConfigMap" },
			`kind: supported values: "WarmpoolConfig", got "ConfigMap"`},
		{"no pools", func(c *Config) { c.Pools = nil },
			`pools: required: at least one pool (an empty list would remove every pool)`},
		{"duplicate pool name", func(c *Config) { c.Pools = append(c.Pools, c.Pools[0]) },
			`pools[1].name: duplicate value "runners"`},

		// nodeClass.
		{"neither role nor instanceProfile", func(c *Config) { c.NodeClass.Role = "" },
			`nodeClass.role: required: one of role or instanceProfile`},
		{"both role and instanceProfile", func(c *Config) { c.NodeClass.InstanceProfile = "ci-nodes" },
			`nodeClass.instanceProfile: forbidden: set role or instanceProfile, not both`},
		{"amiAlias unknown family", func(c *Config) { c.NodeClass.AMIAlias = "ubuntu@latest" },
			`nodeClass.amiAlias: ` + amiAliasMsg + `, got "ubuntu@latest"`},
		{"amiAlias without version", func(c *Config) { c.NodeClass.AMIAlias = "al2023" },
			`nodeClass.amiAlias: ` + amiAliasMsg + `, got "al2023"`},
		{"amiAlias empty version", func(c *Config) { c.NodeClass.AMIAlias = "bottlerocket@" },
			`nodeClass.amiAlias: ` + amiAliasMsg + `, got "bottlerocket@"`},
		{"amiAlias Windows", func(c *Config) { c.NodeClass.AMIAlias = "windows2022@latest" },
			`nodeClass.amiAlias: ` + amiAliasMsg + `, got "windows2022@latest"`},
		{"no subnet terms", func(c *Config) { c.NodeClass.SubnetSelectorTerms = nil },
			`nodeClass.subnetSelectorTerms: required: at least one term`},
		{"empty subnet term", func(c *Config) { c.NodeClass.SubnetSelectorTerms = []awsv1.SubnetSelectorTerm{{}} },
			`nodeClass.subnetSelectorTerms[0]: required: one of id or tags`},
		{"subnet id with tags", func(c *Config) {
			c.NodeClass.SubnetSelectorTerms = []awsv1.SubnetSelectorTerm{{ID: "subnet-1", Tags: map[string]string{"a": "b"}}}
		}, `nodeClass.subnetSelectorTerms[0].id: forbidden: id cannot be combined with tags`},
		{"subnet tag empty value", func(c *Config) {
			c.NodeClass.SubnetSelectorTerms = append(c.NodeClass.SubnetSelectorTerms, awsv1.SubnetSelectorTerm{Tags: map[string]string{"tier": ""}})
		}, `nodeClass.subnetSelectorTerms[1].tags[tier]: tag keys and values must be non-empty, got ""`},
		{"subnet tag empty key", func(c *Config) {
			c.NodeClass.SubnetSelectorTerms = []awsv1.SubnetSelectorTerm{{Tags: map[string]string{"": "x"}}}
		}, `nodeClass.subnetSelectorTerms[0].tags[]: tag keys and values must be non-empty, got "x"`},
		{"no security group terms", func(c *Config) { c.NodeClass.SecurityGroupSelectorTerms = nil },
			`nodeClass.securityGroupSelectorTerms: required: at least one term`},
		{"empty security group term", func(c *Config) {
			c.NodeClass.SecurityGroupSelectorTerms = []awsv1.SecurityGroupSelectorTerm{{}}
		}, `nodeClass.securityGroupSelectorTerms[0]: required: one of id or tags or name`},
		{"security group id with name", func(c *Config) {
			c.NodeClass.SecurityGroupSelectorTerms = []awsv1.SecurityGroupSelectorTerm{{ID: "sg-1", Name: "nodes"}}
		}, `nodeClass.securityGroupSelectorTerms[0].id: forbidden: id cannot be combined with tags or name`},
		{"security group tag empty value", func(c *Config) {
			c.NodeClass.SecurityGroupSelectorTerms = []awsv1.SecurityGroupSelectorTerm{{Tags: map[string]string{"team": ""}}}
		}, `nodeClass.securityGroupSelectorTerms[0].tags[team]: tag keys and values must be non-empty, got ""`},
		{"reserved tag kubernetes.io/cluster/", func(c *Config) { c.NodeClass.Tags = map[string]string{"kubernetes.io/cluster/ci": "owned"} },
			`nodeClass.tags[kubernetes.io/cluster/ci]: tag key is reserved by Karpenter or EKS, got "kubernetes.io/cluster/ci"`},
		{"reserved tag karpenter.sh/nodepool", func(c *Config) { c.NodeClass.Tags = map[string]string{"karpenter.sh/nodepool": "x"} },
			`nodeClass.tags[karpenter.sh/nodepool]: tag key is reserved by Karpenter or EKS, got "karpenter.sh/nodepool"`},
		{"reserved tag karpenter.sh/nodeclaim", func(c *Config) { c.NodeClass.Tags = map[string]string{"karpenter.sh/nodeclaim": "x"} },
			`nodeClass.tags[karpenter.sh/nodeclaim]: tag key is reserved by Karpenter or EKS, got "karpenter.sh/nodeclaim"`},
		{"reserved tag karpenter.k8s.aws/ec2nodeclass", func(c *Config) { c.NodeClass.Tags = map[string]string{"karpenter.k8s.aws/ec2nodeclass": "x"} },
			`nodeClass.tags[karpenter.k8s.aws/ec2nodeclass]: tag key is reserved by Karpenter or EKS, got "karpenter.k8s.aws/ec2nodeclass"`},
		{"reserved tag eks:eks-cluster-name", func(c *Config) { c.NodeClass.Tags = map[string]string{"eks:eks-cluster-name": "ci"} },
			`nodeClass.tags[eks:eks-cluster-name]: tag key is reserved by Karpenter or EKS, got "eks:eks-cluster-name"`},
		{"root volume size zero", func(c *Config) { c.NodeClass.RootVolume.Size = qty("0") },
			`nodeClass.rootVolume.size: must be > 0, got "0"`},
		{"root volume size negative", func(c *Config) { c.NodeClass.RootVolume.Size = qty("-1Gi") },
			`nodeClass.rootVolume.size: must be > 0, got "-1Gi"`},
		{"root volume type", func(c *Config) { c.NodeClass.RootVolume.Type = "gp4" },
			`nodeClass.rootVolume.type: supported values: "gp2", "gp3", "io1", "io2", "sc1", "st1", "standard", got "gp4"`},
		{"root volume iops", func(c *Config) { c.NodeClass.RootVolume.IOPS = ptr.To[int64](0) },
			`nodeClass.rootVolume.iops: must be > 0, got 0`},
		{"root volume throughput", func(c *Config) { c.NodeClass.RootVolume.Throughput = ptr.To[int64](-1) },
			`nodeClass.rootVolume.throughput: must be > 0, got -1`},
		{"metadata httpEndpoint", func(c *Config) { c.NodeClass.MetadataOptions = &awsv1.MetadataOptions{HTTPEndpoint: ptr.To("on")} },
			`nodeClass.metadataOptions.httpEndpoint: supported values: "enabled", "disabled", got "on"`},
		{"metadata httpProtocolIPv6", func(c *Config) { c.NodeClass.MetadataOptions = &awsv1.MetadataOptions{HTTPProtocolIPv6: ptr.To("yes")} },
			`nodeClass.metadataOptions.httpProtocolIPv6: supported values: "enabled", "disabled", got "yes"`},
		{"metadata httpTokens", func(c *Config) { c.NodeClass.MetadataOptions = &awsv1.MetadataOptions{HTTPTokens: ptr.To("always")} },
			`nodeClass.metadataOptions.httpTokens: supported values: "required", "optional", got "always"`},
		{"metadata hop limit low", func(c *Config) {
			c.NodeClass.MetadataOptions = &awsv1.MetadataOptions{HTTPPutResponseHopLimit: ptr.To[int64](0)}
		}, `nodeClass.metadataOptions.httpPutResponseHopLimit: must be between 1 and 64, got 0`},
		{"metadata hop limit high", func(c *Config) {
			c.NodeClass.MetadataOptions = &awsv1.MetadataOptions{HTTPPutResponseHopLimit: ptr.To[int64](65)}
		}, `nodeClass.metadataOptions.httpPutResponseHopLimit: must be between 1 and 64, got 65`},
		{"kubelet maxPods", func(c *Config) { c.NodeClass.Kubelet = &awsv1.KubeletConfiguration{MaxPods: ptr.To[int32](0)} },
			`nodeClass.kubelet.maxPods: must be >= 1, got 0`},
		{"kubelet image GC thresholds", func(c *Config) {
			c.NodeClass.Kubelet = &awsv1.KubeletConfiguration{ImageGCHighThresholdPercent: ptr.To[int32](80), ImageGCLowThresholdPercent: ptr.To[int32](80)}
		}, `nodeClass.kubelet.imageGCHighThresholdPercent: must be greater than imageGCLowThresholdPercent (80), got 80`},
		{"kubelet systemReserved", func(c *Config) {
			c.NodeClass.Kubelet = &awsv1.KubeletConfiguration{SystemReserved: map[string]string{"cpu": "lots"}}
		}, `nodeClass.kubelet.systemReserved[cpu]: must be a quantity, got "lots"`},
		{"kubelet kubeReserved", func(c *Config) {
			c.NodeClass.Kubelet = &awsv1.KubeletConfiguration{KubeReserved: map[string]string{"memory": "1 Gi"}}
		}, `nodeClass.kubelet.kubeReserved[memory]: must be a quantity, got "1 Gi"`},

		// discovery and webhook.
		{"discovery endpoint without scheme", func(c *Config) { c.Discovery.Endpoint = "ec2.eu-west-1.amazonaws.com" },
			`discovery.endpoint: must be an absolute http(s) URL, got "ec2.eu-west-1.amazonaws.com"`},
		{"discovery endpoint not http", func(c *Config) { c.Discovery.Endpoint = "ftp://ec2.local" },
			`discovery.endpoint: must be an absolute http(s) URL, got "ftp://ec2.local"`},
		{"discovery refreshInterval", func(c *Config) { c.Discovery.RefreshInterval = dur(30 * time.Second) },
			`discovery.refreshInterval: must be >= 1m, got "30s"`},
		{"webhook path", func(c *Config) { c.Webhook.Path = "webhooks/github" },
			`webhook.path: must start with /, got "webhooks/github"`},
		{"webhook secret name missing", func(c *Config) { c.Webhook.SecretRef = ref("", "secret") },
			`webhook.secretRef.name: required: the Secret's name`},
		{"webhook secret name invalid", func(c *Config) { c.Webhook.SecretRef = ref("Bad_Name", "secret") },
			`webhook.secretRef.name: ` + dnsSubdomainMsg + `, got "Bad_Name"`},
		{"webhook secret key missing", func(c *Config) { c.Webhook.SecretRef = ref("warmpool-github", "") },
			`webhook.secretRef.key: required: the key within the Secret`},
		{"webhook secret key invalid", func(c *Config) { c.Webhook.SecretRef = ref("warmpool-github", "a b") },
			`webhook.secretRef.key: ` + configKeyMsg + `, got "a b"`},
		{"githubWebhook source without webhook secret", func(c *Config) {
			withSource(ghWebhookSource(), nil)(c)
			c.Webhook.SecretRef = nil
		}, `webhook.secretRef: required: pools[0].queue.sources[0] uses a githubWebhook source, whose deliveries must be verified`},

		// Pool identity and instance requirements.
		{"pool name missing", func(c *Config) { pool0(c).Name = "" },
			`pools[0].name: required`},
		{"pool name not a DNS label", func(c *Config) { pool0(c).Name = "Bad_Name" },
			`pools[0].name: ` + dnsLabelMsg + `, got "Bad_Name"`},
		{"pool name too long", func(c *Config) { pool0(c).Name = strings.Repeat("a", 41) },
			`pools[0].name: must be no more than 40 characters, got "` + strings.Repeat("a", 41) + `"`},
		{"architecture unsupported", func(c *Config) { pool0(c).Architectures = []string{"x86_64"} },
			`pools[0].architectures[0]: supported values: "amd64", "arm64", got "x86_64"`},
		{"architecture duplicate", func(c *Config) { pool0(c).Architectures = []string{"amd64", "arm64", "amd64"} },
			`pools[0].architectures[2]: duplicate value "amd64"`},
		{"capacity type unsupported", func(c *Config) { pool0(c).CapacityTypes = []string{"preemptible"} },
			`pools[0].capacityTypes[0]: supported values: "on-demand", "reserved", "spot", got "preemptible"`},
		{"capacity type duplicate", func(c *Config) { pool0(c).CapacityTypes = []string{"spot", "spot"} },
			`pools[0].capacityTypes[1]: duplicate value "spot"`},
		{"category in", func(c *Config) { pool0(c).Instance.Categories.In = []string{"C"} },
			`pools[0].instance.categories.in[0]: must match ^[a-z]+$, got "C"`},
		{"category notIn", func(c *Config) { pool0(c).Instance.Categories.NotIn = []string{"c", "t2"} },
			`pools[0].instance.categories.notIn[1]: must match ^[a-z]+$, got "t2"`},
		{"category in and notIn", func(c *Config) {
			pool0(c).Instance.Categories = InNotIn[string]{In: []string{"c", "m"}, NotIn: []string{"m"}}
		}, `pools[0].instance.categories.notIn[0]: is also in the in list: no instance type could match, got "m"`},
		{"family in", func(c *Config) { pool0(c).Instance.Families.In = []string{"c6id.large"} },
			`pools[0].instance.families.in[0]: must match ^[a-z0-9-]+$, got "c6id.large"`},
		{"family notIn", func(c *Config) { pool0(c).Instance.Families.NotIn = []string{"C6ID"} },
			`pools[0].instance.families.notIn[0]: must match ^[a-z0-9-]+$, got "C6ID"`},
		{"family in and notIn", func(c *Config) {
			pool0(c).Instance.Families = InNotIn[string]{In: []string{"c6id"}, NotIn: []string{"c6id"}}
		}, `pools[0].instance.families.notIn[0]: is also in the in list: no instance type could match, got "c6id"`},
		{"generation in", func(c *Config) { pool0(c).Instance.Generations.In = []int{0} },
			`pools[0].instance.generations.in[0]: must be >= 1, got 0`},
		{"generation notIn", func(c *Config) { pool0(c).Instance.Generations.NotIn = []int{5, -1} },
			`pools[0].instance.generations.notIn[1]: must be >= 1, got -1`},
		{"generation in and notIn", func(c *Config) {
			pool0(c).Instance.Generations = InNotIn[int]{In: []int{6, 7}, NotIn: []int{6}}
		}, `pools[0].instance.generations.notIn[0]: is also in the in list: no instance type could match, got 6`},
		{"minGeneration negative", func(c *Config) { pool0(c).Instance.MinGeneration = -1 },
			`pools[0].instance.minGeneration: must be >= 0, got -1`},
		{"minGeneration above generations.in", func(c *Config) {
			pool0(c).Instance.Generations.In = []int{5, 6}
			pool0(c).Instance.MinGeneration = 7
		}, `pools[0].instance.minGeneration: is above every generation in generations.in: no instance type could match, got 7`},
		{"nvme minSizeGB zero", func(c *Config) { pool0(c).NVMe.MinSizeGB = 0 },
			`pools[0].nvme.minSizeGB: must be >= 1, got 0`},
		{"nvme minSizeGB in pool 1", func(c *Config) {
			p := c.Pools[0]
			p.Name, p.NVMe.MinSizeGB = "second", 0
			c.Pools = append(c.Pools, p)
		}, `pools[1].nvme.minSizeGB: must be >= 1, got 0`},

		// Limits, weight, taint, labels, lifetimes.
		{"limits cpu", func(c *Config) { pool0(c).Limits.CPU = qty("0") },
			`pools[0].limits.cpu: must be > 0, got "0"`},
		{"limits memory", func(c *Config) { pool0(c).Limits.Memory = qty("-1Gi") },
			`pools[0].limits.memory: must be > 0, got "-1Gi"`},
		{"limits nodes", func(c *Config) { pool0(c).Limits.Nodes = ptr.To[int64](0) },
			`pools[0].limits.nodes: must be >= 1, got 0`},
		{"weight low", func(c *Config) { pool0(c).Weight = ptr.To[int32](0) },
			`pools[0].weight: must be between 1 and 100, got 0`},
		{"weight high", func(c *Config) { pool0(c).Weight = ptr.To[int32](101) },
			`pools[0].weight: must be between 1 and 100, got 101`},
		{"taint key", func(c *Config) {
			pool0(c).Taint = &corev1.Taint{Key: "bad key", Value: "x", Effect: corev1.TaintEffectNoSchedule}
		}, `pools[0].taint.key: ` + qualifiedNameMsg + `, got "bad key"`},
		{"taint value", func(c *Config) {
			pool0(c).Taint = &corev1.Taint{Key: "ci.example.com/runner", Value: "a b", Effect: corev1.TaintEffectNoSchedule}
		}, `pools[0].taint.value: ` + labelValueMsg + `, got "a b"`},
		{"taint effect PreferNoSchedule", func(c *Config) {
			pool0(c).Taint = &corev1.Taint{Key: "ci.example.com/runner", Effect: corev1.TaintEffectPreferNoSchedule}
		}, `pools[0].taint.effect: supported values: "NoExecute", "NoSchedule", got "PreferNoSchedule"`},
		{"taint effect empty", func(c *Config) { pool0(c).Taint = &corev1.Taint{Key: "ci.example.com/runner"} },
			`pools[0].taint.effect: supported values: "NoExecute", "NoSchedule", got ""`},
		{"label key", func(c *Config) { pool0(c).Labels = map[string]string{"bad key": "x"} },
			`pools[0].labels[bad key]: ` + qualifiedNameMsg + `, got "bad key"`},
		{"label value", func(c *Config) { pool0(c).Labels = map[string]string{"tier": "a b"} },
			`pools[0].labels[tier]: ` + labelValueMsg + `, got "a b"`},
		{"label domain kubernetes.io", func(c *Config) { pool0(c).Labels = map[string]string{"kubernetes.io/arch": "arm64"} },
			`pools[0].labels[kubernetes.io/arch]: label domain kubernetes.io is reserved, got "kubernetes.io/arch"`},
		{"label subdomain of kubernetes.io", func(c *Config) { pool0(c).Labels = map[string]string{"node-role.kubernetes.io/ci": ""} },
			`pools[0].labels[node-role.kubernetes.io/ci]: label domain kubernetes.io is reserved, got "node-role.kubernetes.io/ci"`},
		{"label domain k8s.io", func(c *Config) { pool0(c).Labels = map[string]string{"example.k8s.io/x": "y"} },
			`pools[0].labels[example.k8s.io/x]: label domain k8s.io is reserved, got "example.k8s.io/x"`},
		{"label domain karpenter.sh", func(c *Config) { pool0(c).Labels = map[string]string{"karpenter.sh/capacity-type": "spot"} },
			`pools[0].labels[karpenter.sh/capacity-type]: label domain karpenter.sh is reserved, got "karpenter.sh/capacity-type"`},
		{"label domain karpenter.k8s.aws", func(c *Config) { pool0(c).Labels = map[string]string{"karpenter.k8s.aws/instance-family": "c6id"} },
			`pools[0].labels[karpenter.k8s.aws/instance-family]: label domain karpenter.k8s.aws is reserved, got "karpenter.k8s.aws/instance-family"`},
		{"label domain warmpool.io", func(c *Config) { pool0(c).Labels = map[string]string{"warmpool.io/pool": "other"} },
			`pools[0].labels[warmpool.io/pool]: label domain warmpool.io is reserved, got "warmpool.io/pool"`},
		{"expireAfter zero", func(c *Config) { pool0(c).ExpireAfter = &karpv1.NillableDuration{Duration: ptr.To(time.Duration(0))} },
			`pools[0].expireAfter: must be > 0 or "Never", got "0s"`},
		{"terminationGracePeriod zero", func(c *Config) { pool0(c).TerminationGracePeriod = dur(0) },
			`pools[0].terminationGracePeriod: must be > 0, got "0s"`},
		{"terminationGracePeriod not above the engine's", func(c *Config) { pool0(c).TerminationGracePeriod = dur(15 * time.Minute) },
			`pools[0].terminationGracePeriod: must exceed engine.terminationGracePeriodSeconds (900s) so the cache can be saved after the engine stops, got "15m0s"`},

		// Disruption.
		{"consolidationPolicy", func(c *Config) { pool0(c).Disruption.ConsolidationPolicy = "Always" },
			`pools[0].disruption.consolidationPolicy: supported values: "Balanced", "WhenEmpty", "WhenEmptyOrUnderutilized", got "Always"`},
		{"consolidateAfter negative", func(c *Config) {
			pool0(c).Disruption.ConsolidateAfter = &karpv1.NillableDuration{Duration: ptr.To(-time.Second)}
		}, `pools[0].disruption.consolidateAfter: must be >= 0 or "Never", got "-1s"`},
		{"budget nodes above 100%", func(c *Config) { pool0(c).Disruption.Budgets = []karpv1.Budget{{Nodes: "110%"}} },
			`pools[0].disruption.budgets[0].nodes: must be a count ("2") or a percentage ("10%"), got "110%"`},
		{"budget nodes word", func(c *Config) { pool0(c).Disruption.Budgets = []karpv1.Budget{{Nodes: "1"}, {Nodes: "ten"}} },
			`pools[0].disruption.budgets[1].nodes: must be a count ("2") or a percentage ("10%"), got "ten"`},
		{"budget nodes missing", func(c *Config) {
			pool0(c).Disruption.Budgets = []karpv1.Budget{{Reasons: []karpv1.DisruptionReason{karpv1.DisruptionReasonDrifted}}}
		}, `pools[0].disruption.budgets[0].nodes: must be a count ("2") or a percentage ("10%"), got ""`},
		{"budget reason unsupported", func(c *Config) {
			pool0(c).Disruption.Budgets = []karpv1.Budget{{Nodes: "0", Reasons: []karpv1.DisruptionReason{"Expired"}}}
		}, `pools[0].disruption.budgets[0].reasons[0]: supported values: "Drifted", "Empty", "Underutilized", got "Expired"`},
		{"budget reason duplicate", func(c *Config) {
			pool0(c).Disruption.Budgets = []karpv1.Budget{{Nodes: "0", Reasons: []karpv1.DisruptionReason{"Empty", "Empty"}}}
		}, `pools[0].disruption.budgets[0].reasons[1]: duplicate value "Empty"`},
		{"budget schedule without duration", func(c *Config) {
			pool0(c).Disruption.Budgets = []karpv1.Budget{{Nodes: "0", Schedule: ptr.To("0 8 * * mon-fri")}}
		}, `pools[0].disruption.budgets[0].duration: required: schedule and duration go together`},
		{"budget duration without schedule", func(c *Config) {
			pool0(c).Disruption.Budgets = []karpv1.Budget{{Nodes: "0", Duration: dur(time.Hour)}}
		}, `pools[0].disruption.budgets[0].duration: required: schedule and duration go together`},
		{"budget schedule invalid", func(c *Config) {
			pool0(c).Disruption.Budgets = []karpv1.Budget{{Nodes: "0", Schedule: ptr.To("0 25 * * *"), Duration: dur(time.Hour)}}
		}, `pools[0].disruption.budgets[0].schedule: must be a cron schedule: end of range (25) above maximum (23): 25, got "0 25 * * *"`},
		{"budget schedule TZ prefix", func(c *Config) {
			pool0(c).Disruption.Budgets = []karpv1.Budget{{Nodes: "0", Schedule: ptr.To("TZ=UTC"), Duration: dur(time.Hour)}}
		}, `pools[0].disruption.budgets[0].schedule: must be a cron schedule: no TZ= prefix (Karpenter reads budget schedules in UTC), got "TZ=UTC"`},

		// Engine.
		{"existingDaemonSet empty", func(c *Config) { pool0(c).Engine.ExistingDaemonSet = &metav1.LabelSelector{} },
			`pools[0].engine.existingDaemonSet: required: a non-empty label selector`},
		{"existingDaemonSet label key", func(c *Config) {
			pool0(c).Engine.ExistingDaemonSet = &metav1.LabelSelector{MatchLabels: map[string]string{"bad key": "x"}}
		}, `pools[0].engine.existingDaemonSet.matchLabels[bad key]: ` + qualifiedNameMsg + `, got "bad key"`},
		{"existingDaemonSet operator", func(c *Config) {
			pool0(c).Engine.ExistingDaemonSet = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Like"}}}
		}, `pools[0].engine.existingDaemonSet.matchExpressions[0].operator: not a valid selector operator, got "Like"`},
		{"engine version missing", func(c *Config) { pool0(c).Engine.Version = "" },
			`pools[0].engine.version: required: the engine version keys cache snapshots; supported: ` + supportedEngines},
		{"engine version not a release", func(c *Config) { pool0(c).Engine.Version = "latest" },
			`pools[0].engine.version: must be an engine release warmpool knows (supported: ` + supportedEngines + `), or set engine.contract to the row a newer release behaves like, got "latest"`},
		{"engine version older than the table", func(c *Config) { pool0(c).Engine.Version = "v0.18.11" },
			`pools[0].engine.version: must be an engine release warmpool knows (supported: ` + supportedEngines + `), or set engine.contract to the row a newer release behaves like, got "v0.18.11"`},
		{"engine version newer than the table", func(c *Config) { pool0(c).Engine.Version = "v0.21.9" },
			`pools[0].engine.version: must be an engine release warmpool knows (supported: ` + supportedEngines + `), or set engine.contract to the row a newer release behaves like, got "v0.21.9"`},
		{"engine version 1.0.0 (not released when the table was made)", func(c *Config) { pool0(c).Engine.Version = "v1.0.0" },
			`pools[0].engine.version: must be an engine release warmpool knows (supported: ` + supportedEngines + `), or set engine.contract to the row a newer release behaves like, got "v1.0.0"`},
		{"engine contract unknown", func(c *Config) { pool0(c).Engine.Version, pool0(c).Engine.Contract = "v0.21.9", "v0.22" },
			`pools[0].engine.contract: supported values: "v0.19.0", "v0.19.4", "v0.19.5", "v0.19.8", "v0.20", "v0.21", "v1.0-beta.1", "v1.0-beta.8", got "v0.22"`},
		{"engine contract contradicts the table", func(c *Config) { pool0(c).Engine.Version, pool0(c).Engine.Contract = "v0.21.8", "v0.20" },
			`pools[0].engine.contract: contradicts the table: v0.21.8 is in row "v0.21"; engine.contract is only for releases newer than the table, got "v0.20"`},
		{"engine contract with a version that is no release", func(c *Config) { pool0(c).Engine.Version, pool0(c).Engine.Contract = "latest", "v0.21" },
			`pools[0].engine.version: must be a release version like v0.21.8, got "latest"`},
		{"engine version not a label value", func(c *Config) { pool0(c).Engine.Version = "v0.21.8+build.1" },
			`pools[0].engine.version: must be a valid label value: ` + labelValueMsg + `, got "v0.21.8+build.1"`},
		{"engine image with short digest", func(c *Config) { pool0(c).Engine.Image = "registry.dagger.io/engine@sha256:abc" },
			`pools[0].engine.image: ` + imageMsg + `, got "registry.dagger.io/engine@sha256:abc"`},
		{"engine image trailing colon", func(c *Config) { pool0(c).Engine.Image = "engine:" },
			`pools[0].engine.image: ` + imageMsg + `, got "engine:"`},
		{"engine image with space", func(c *Config) { pool0(c).Engine.Image = "registry.dagger.io/ engine" },
			`pools[0].engine.image: ` + imageMsg + `, got "registry.dagger.io/ engine"`},
		{"engine hostPath relative", func(c *Config) { pool0(c).Engine.HostPath = "mnt/k8s-disks/0/dagger" },
			`pools[0].engine.hostPath: must be a clean absolute path, got "mnt/k8s-disks/0/dagger"`},
		{"engine hostPath unclean", func(c *Config) { pool0(c).Engine.HostPath = "/mnt/k8s-disks/0/../dagger" },
			`pools[0].engine.hostPath: must be a clean absolute path, got "/mnt/k8s-disks/0/../dagger"`},
		{"engine hostPath on EBS", func(c *Config) { pool0(c).Engine.HostPath = "/var/lib/dagger" },
			`pools[0].engine.hostPath: must be under the NVMe RAID0 mount /mnt/k8s-disks/0 (other host paths are on the EBS root volume), got "/var/lib/dagger"`},
		{"engine hostPath the mount itself", func(c *Config) { pool0(c).Engine.HostPath = "/mnt/k8s-disks/0" },
			`pools[0].engine.hostPath: must be under the NVMe RAID0 mount /mnt/k8s-disks/0 (other host paths are on the EBS root volume), got "/mnt/k8s-disks/0"`},
		{"engine runPath", func(c *Config) { pool0(c).Engine.RunPath = "run/dagger/" },
			`pools[0].engine.runPath: must be a clean absolute path, got "run/dagger/"`},
		{"engine grace period", func(c *Config) { pool0(c).Engine.TerminationGracePeriodSeconds = ptr.To[int64](329) },
			`pools[0].engine.terminationGracePeriodSeconds: must be >= stopSeconds + 30 (330): warmpool ends its drain wait for clients that long before the grace period ends, to leave the engine 300s for its own stop and 30s to exit; the engine's stop itself is not bounded, so an engine still stopping when the grace period ends is SIGKILLed and its cache lost, got 329`},
		{"engine grace period below a longer stop", func(c *Config) {
			pool0(c).Engine.StopSeconds = ptr.To[int64](900)
			pool0(c).Engine.TerminationGracePeriodSeconds = ptr.To[int64](900)
		}, `pools[0].engine.terminationGracePeriodSeconds: must be >= stopSeconds + 30 (930): warmpool ends its drain wait for clients that long before the grace period ends, to leave the engine 900s for its own stop and 30s to exit; the engine's stop itself is not bounded, so an engine still stopping when the grace period ends is SIGKILLed and its cache lost, got 900`},
		{"engine stopSeconds zero", func(c *Config) { pool0(c).Engine.StopSeconds = ptr.To[int64](0) },
			`pools[0].engine.stopSeconds: must be >= 1: the engine's stop (prune, persist) always takes some time, got 0`},
		{"engine requests above limits", func(c *Config) {
			pool0(c).Engine.Resources = &corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")},
				Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")},
			}
		}, `pools[0].engine.resources.requests[cpu]: must be <= the limit 1, got "2"`},
		{"engine gc maxUsedSpace", func(c *Config) { pool0(c).Engine.GC = &EngineGC{MaxUsedSpace: "lots"} },
			`pools[0].engine.gc.maxUsedSpace: ` + gcWant + ` (invalid size: 'lots'), got "lots"`},
		{"engine gc reservedSpace", func(c *Config) { pool0(c).Engine.GC = &EngineGC{ReservedSpace: "101%"} },
			`pools[0].engine.gc.reservedSpace: must be a percentage from 1% to 100% of the node's disk (the engine reads 0% as unset), got "101%"`},
		{"engine gc minFreeSpace", func(c *Config) { pool0(c).Engine.GC = &EngineGC{MinFreeSpace: "0GB"} },
			`pools[0].engine.gc.minFreeSpace: must be at least 1 byte (the engine reads 0 as unset; omit the field for its default), got "0GB"`},
		// What resource.Quantity reads and the engine does not: the engine would exit at start.
		{"engine gc in Kubernetes units", func(c *Config) { pool0(c).Engine.GC = &EngineGC{MaxUsedSpace: "50Gi"} },
			`pools[0].engine.gc.maxUsedSpace: ` + gcWant + ` (invalid suffix: 'gi'), got "50Gi"`},

		// Cache.
		{"cache size", func(c *Config) { pool0(c).Cache.Size = qty("0") },
			`pools[0].cache.size: must be > 0, got "0"`},
		{"cache storageClassName", func(c *Config) { pool0(c).Cache.StorageClassName = "GP3" },
			`pools[0].cache.storageClassName: ` + dnsSubdomainMsg + `, got "GP3"`},
		{"cache snapshotClassName", func(c *Config) { pool0(c).Cache.SnapshotClassName = "ebs_snapshots" },
			`pools[0].cache.snapshotClassName: ` + dnsSubdomainMsg + `, got "ebs_snapshots"`},
		{"cache retention keep", func(c *Config) { pool0(c).Cache.Retention.Keep = -1 },
			`pools[0].cache.retention.keep: must be >= 1, got -1`},
		{"cache retention maxAge", func(c *Config) { pool0(c).Cache.Retention.MaxAge = dur(0) },
			`pools[0].cache.retention.maxAge: must be > 0, got "0s"`},

		// Queue sources.
		{"source without kind", withSource(Source{Name: "empty"}, nil),
			src + `: required: one of githubWebhook, github, arc, gitlab, buildkite, prometheus`},
		{"source with two kinds", withSource(githubSource(), func(s *Source) { s.ARC = arcSource().ARC }),
			src + `: forbidden: exactly one source kind per entry, got github, arc`},
		{"source names duplicate", func(c *Config) { pool0(c).Queue.Sources = []Source{arcSource(), arcSource()} },
			`pools[0].queue.sources[1].name: duplicate value "arc"`},
		{"source name not a DNS label", withSource(arcSource(), func(s *Source) { s.Name = "Queue_1" }),
			src + `.name: ` + dnsLabelMsg + `, got "Queue_1"`},
		{"githubWebhook labels", withSource(ghWebhookSource(), func(s *Source) { s.GitHubWebhook.Labels = nil }),
			src + `.githubWebhook.labels: ` + labelsRequired},
		{"githubWebhook resync owner", withSource(ghWebhookSource(), func(s *Source) {
			s.GitHubWebhook.Resync = &GitHubResync{TokenSecretRef: ref("github", "token")}
		}), src + `.githubWebhook.resync.owner: required`},
		{"githubWebhook resync url", withSource(ghWebhookSource(), func(s *Source) {
			s.GitHubWebhook.Resync = &GitHubResync{Owner: "acme", URL: "ghe.example.com", TokenSecretRef: ref("github", "token")}
		}), src + `.githubWebhook.resync.url: must be an absolute http(s) URL, got "ghe.example.com"`},
		{"githubWebhook resync repo", withSource(ghWebhookSource(), func(s *Source) {
			s.GitHubWebhook.Resync = &GitHubResync{Owner: "acme", Repos: []string{"acme/ci"}, TokenSecretRef: ref("github", "token")}
		}), src + `.githubWebhook.resync.repos[0]: must be a repository name under owner, got "acme/ci"`},
		{"githubWebhook resync no credentials", withSource(ghWebhookSource(), func(s *Source) {
			s.GitHubWebhook.Resync = &GitHubResync{Owner: "acme"}
		}), src + `.githubWebhook.resync.tokenSecretRef: required: one of tokenSecretRef or app`},
		{"githubWebhook resync token and app", withSource(ghWebhookSource(), func(s *Source) {
			s.GitHubWebhook.Resync = &GitHubResync{Owner: "acme", TokenSecretRef: ref("github", "token"),
				App: &GitHubAppAuth{AppID: 1, InstallationID: 2, PrivateKeySecretRef: *ref("app", "key.pem")}}
		}), src + `.githubWebhook.resync.app: forbidden: set tokenSecretRef or app, not both`},
		{"githubWebhook resync app key ref", withSource(ghWebhookSource(), func(s *Source) {
			s.GitHubWebhook.Resync = &GitHubResync{Owner: "acme", App: &GitHubAppAuth{AppID: 1, InstallationID: 2, PrivateKeySecretRef: *ref("", "key.pem")}}
		}), src + `.githubWebhook.resync.app.privateKeySecretRef.name: required: the Secret's name`},
		{"githubWebhook resync interval", withSource(ghWebhookSource(), func(s *Source) {
			s.GitHubWebhook.Resync = &GitHubResync{Owner: "acme", TokenSecretRef: ref("github", "token"), Interval: dur(30 * time.Second)}
		}), src + `.githubWebhook.resync.interval: must be >= 1m, got "30s"`},
		{"github repo with owner", withSource(githubSource(), func(s *Source) { s.GitHub.Repos = []string{"acme/ci"} }),
			src + `.github.repos[0]: must be a repository name under owner, got "acme/ci"`},
		{"github owner", withSource(githubSource(), func(s *Source) { s.GitHub.Owner = " " }),
			src + `.github.owner: required`},
		{"github labels", withSource(githubSource(), func(s *Source) { s.GitHub.Labels = nil }),
			src + `.github.labels: ` + labelsRequired},
		{"github url", withSource(githubSource(), func(s *Source) { s.GitHub.URL = "github.example.com/api/v3" }),
			src + `.github.url: must be an absolute http(s) URL, got "github.example.com/api/v3"`},
		{"github no credentials", withSource(githubSource(), func(s *Source) { s.GitHub.TokenSecretRef = nil }),
			src + `.github.tokenSecretRef: required: one of tokenSecretRef or app`},
		{"github token and app", withSource(githubSource(), func(s *Source) {
			s.GitHub.App = &GitHubAppAuth{AppID: 1, InstallationID: 2, PrivateKeySecretRef: *ref("app", "key.pem")}
		}), src + `.github.app: forbidden: set tokenSecretRef or app, not both`},
		{"github token secret name", withSource(githubSource(), func(s *Source) { s.GitHub.TokenSecretRef.Name = "" }),
			src + `.github.tokenSecretRef.name: required: the Secret's name`},
		{"github app appID", withSource(githubSource(), func(s *Source) {
			s.GitHub.TokenSecretRef = nil
			s.GitHub.App = &GitHubAppAuth{AppID: 0, InstallationID: 2, PrivateKeySecretRef: *ref("app", "key.pem")}
		}), src + `.github.app.appID: must be >= 1, got 0`},
		{"github app installationID", withSource(githubSource(), func(s *Source) {
			s.GitHub.TokenSecretRef = nil
			s.GitHub.App = &GitHubAppAuth{AppID: 1, InstallationID: -2, PrivateKeySecretRef: *ref("app", "key.pem")}
		}), src + `.github.app.installationID: must be >= 1, got -2`},
		{"github app private key ref", withSource(githubSource(), func(s *Source) {
			s.GitHub.TokenSecretRef = nil
			s.GitHub.App = &GitHubAppAuth{AppID: 1, InstallationID: 2, PrivateKeySecretRef: *ref("app", "key pem")}
		}), src + `.github.app.privateKeySecretRef.key: ` + configKeyMsg + `, got "key pem"`},
		{"github pollInterval", withSource(githubSource(), func(s *Source) { s.GitHub.PollInterval = dur(time.Second) }),
			src + `.github.pollInterval: must be >= 5s, got "1s"`},
		{"arc namespace", withSource(arcSource(), func(s *Source) { s.ARC.Namespace = "" }),
			src + `.arc.namespace: ` + dnsLabelMsg + `, got ""`},
		{"arc scaleSetName", withSource(arcSource(), func(s *Source) { s.ARC.ScaleSetName = "" }),
			src + `.arc.scaleSetName: required`},
		{"gitlab url", withSource(gitlabSource(), func(s *Source) { s.GitLab.URL = "ftp://gitlab.example.com" }),
			src + `.gitlab.url: must be an absolute http(s) URL, got "ftp://gitlab.example.com"`},
		{"gitlab neither projects nor group", withSource(gitlabSource(), func(s *Source) { s.GitLab.GroupID = "" }),
			src + `.gitlab.projectIDs: required: exactly one of projectIDs or groupID`},
		{"gitlab both projects and group", withSource(gitlabSource(), func(s *Source) { s.GitLab.ProjectIDs = []string{"7"} }),
			src + `.gitlab.projectIDs: required: exactly one of projectIDs or groupID`},
		{"gitlab token key", withSource(gitlabSource(), func(s *Source) { s.GitLab.TokenSecretRef.Key = "" }),
			src + `.gitlab.tokenSecretRef.key: required: the key within the Secret`},
		{"gitlab pollInterval", withSource(gitlabSource(), func(s *Source) { s.GitLab.PollInterval = dur(0) }),
			src + `.gitlab.pollInterval: must be >= 5s, got "0s"`},
		{"buildkite url", withSource(buildkiteSource(), func(s *Source) { s.Buildkite.URL = "https://" }),
			src + `.buildkite.url: must be an absolute http(s) URL, got "https://"`},
		{"buildkite queue", withSource(buildkiteSource(), func(s *Source) { s.Buildkite.Queue = "" }),
			src + `.buildkite.queue: required`},
		{"buildkite token name", withSource(buildkiteSource(), func(s *Source) { s.Buildkite.TokenSecretRef.Name = "Buildkite" }),
			src + `.buildkite.tokenSecretRef.name: ` + dnsSubdomainMsg + `, got "Buildkite"`},
		{"buildkite pollInterval", withSource(buildkiteSource(), func(s *Source) { s.Buildkite.PollInterval = dur(4 * time.Second) }),
			src + `.buildkite.pollInterval: must be >= 5s, got "4s"`},
		{"prometheus url missing", withSource(prometheusSource(), func(s *Source) { s.Prometheus.URL = "" }),
			src + `.prometheus.url: required`},
		{"prometheus url not absolute", withSource(prometheusSource(), func(s *Source) { s.Prometheus.URL = "prometheus:9090" }),
			src + `.prometheus.url: must be an absolute http(s) URL, got "prometheus:9090"`},
		{"prometheus query", withSource(prometheusSource(), func(s *Source) { s.Prometheus.Query = "\t" }),
			src + `.prometheus.query: required`},
		{"prometheus state", withSource(prometheusSource(), func(s *Source) { s.Prometheus.State = "waiting" }),
			src + `.prometheus.state: supported values: "queued", "running", got "waiting"`},
		{"prometheus pollInterval", withSource(prometheusSource(), func(s *Source) { s.Prometheus.PollInterval = dur(time.Millisecond) }),
			src + `.prometheus.pollInterval: must be >= 5s, got "1ms"`},

		// Scaling.
		{"jobsPerNode", func(c *Config) { pool0(c).Scaling.JobsPerNode = -1 },
			`pools[0].scaling.jobsPerNode: must be >= 0 (0 derives it from runnerRequests), got -1`},
		{"runnerRequests", func(c *Config) {
			pool0(c).Scaling.RunnerRequests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("0")}
		}, `pools[0].scaling.runnerRequests[memory]: must be > 0, got "0"`},
		{"warmMinimum negative", func(c *Config) { pool0(c).Scaling.WarmMinimum = -1 },
			`pools[0].scaling.warmMinimum: must be >= 0, got -1`},
		{"maxNodes zero", func(c *Config) { pool0(c).Scaling.MaxNodes = ptr.To(0) },
			`pools[0].scaling.maxNodes: must be >= 1, got 0`},
		{"maxNodes above limits.nodes", func(c *Config) {
			pool0(c).Limits.Nodes = ptr.To[int64](20)
			pool0(c).Scaling.MaxNodes = ptr.To(30)
		}, `pools[0].scaling.maxNodes: must be <= limits.nodes (20), got 30`},
		{"warmMinimum above maxNodes", func(c *Config) {
			pool0(c).Scaling.MaxNodes = ptr.To(3)
			pool0(c).Scaling.WarmMinimum = 5
		}, `pools[0].scaling.warmMinimum: must be <= maxNodes (3), got 5`},
		{"warmMinimum above defaulted maxNodes", func(c *Config) {
			pool0(c).Limits.Nodes = ptr.To[int64](4)
			pool0(c).Scaling.WarmMinimum = 5
		}, `pools[0].scaling.warmMinimum: must be <= maxNodes (4), got 5`},
		{"warm window schedule", func(c *Config) {
			pool0(c).Scaling.WarmWindows = []WarmWindow{{Schedule: "every morning", Duration: metav1.Duration{Duration: time.Hour}, Minimum: 1}}
		}, `pools[0].scaling.warmWindows[0].schedule: must be a cron schedule: expected exactly 5 fields, found 2: [every morning], got "every morning"`},
		{"warm window schedule TZ prefix", func(c *Config) {
			pool0(c).Scaling.WarmWindows = []WarmWindow{{Schedule: "TZ=Europe/Berlin 0 8 * * *", Duration: metav1.Duration{Duration: time.Hour}, Minimum: 1}}
		}, `pools[0].scaling.warmWindows[0].schedule: must be a cron schedule: no TZ= prefix (set timeZone instead), got "TZ=Europe/Berlin 0 8 * * *"`},
		{"warm window duration", func(c *Config) {
			pool0(c).Scaling.WarmWindows = []WarmWindow{{Schedule: "0 8 * * *", Minimum: 1}}
		}, `pools[0].scaling.warmWindows[0].duration: must be > 0, got "0s"`},
		{"warm window minimum negative", func(c *Config) {
			pool0(c).Scaling.WarmWindows = []WarmWindow{{Schedule: "0 8 * * *", Duration: metav1.Duration{Duration: time.Hour}, Minimum: -1}}
		}, `pools[0].scaling.warmWindows[0].minimum: must be >= 0, got -1`},
		{"warm window minimum above maxNodes", func(c *Config) {
			pool0(c).Scaling.MaxNodes = ptr.To(3)
			pool0(c).Scaling.WarmWindows = []WarmWindow{{Schedule: "0 8 * * *", Duration: metav1.Duration{Duration: time.Hour}, Minimum: 5}}
		}, `pools[0].scaling.warmWindows[0].minimum: must be <= maxNodes (3), got 5`},
		{"warm window time zone", func(c *Config) {
			pool0(c).Scaling.WarmWindows = []WarmWindow{{Schedule: "0 8 * * *", Duration: metav1.Duration{Duration: time.Hour}, Minimum: 1, TimeZone: "Mars/Olympus_Mons"}}
		}, `pools[0].scaling.warmWindows[0].timeZone: must be an IANA time zone, got "Mars/Olympus_Mons"`},
		// What the scaling policy refuses to compile is refused with the config, not later.
		{"warm window @every", func(c *Config) {
			pool0(c).Scaling.WarmWindows = []WarmWindow{{Schedule: "@every 1h", Duration: metav1.Duration{Duration: time.Hour}, Minimum: 1}}
		}, `pools[0].scaling.warmWindows[0].schedule: must be a cron schedule: @every has no fixed start times; use a cron expression, got "@every 1h"`},
		{"warm window never fires", func(c *Config) {
			pool0(c).Scaling.WarmWindows = []WarmWindow{{Schedule: "0 0 30 2 *", Duration: metav1.Duration{Duration: time.Hour}, Minimum: 1}}
		}, `pools[0].scaling.warmWindows[0].schedule: must be a cron schedule: never fires (no such date), got "0 0 30 2 *"`},
		{"warm window empty schedule", func(c *Config) {
			pool0(c).Scaling.WarmWindows = []WarmWindow{{Schedule: " ", Duration: metav1.Duration{Duration: time.Hour}, Minimum: 1}}
		}, `pools[0].scaling.warmWindows[0].schedule: must be a cron schedule: empty, got " "`},
		{"warm window Local time zone", func(c *Config) {
			pool0(c).Scaling.WarmWindows = []WarmWindow{{Schedule: "0 8 * * *", Duration: metav1.Duration{Duration: time.Hour}, Minimum: 1, TimeZone: "Local"}}
		}, `pools[0].scaling.warmWindows[0].timeZone: must be an IANA time zone ("Local" depends on the controller's host), got "Local"`},
		{"scaleDownStabilization", func(c *Config) { pool0(c).Scaling.ScaleDownStabilization = dur(-time.Minute) },
			`pools[0].scaling.scaleDownStabilization: must be >= 0, got "-1m0s"`},
		{"scaleDownStep", func(c *Config) { pool0(c).Scaling.ScaleDownStep = -1 },
			`pools[0].scaling.scaleDownStep: must be >= 0 (0 = unlimited), got -1`},
		{"headroom", func(c *Config) { pool0(c).Scaling.Headroom = "nodes" },
			`pools[0].scaling.headroom: supported values: "capacityBuffer", "pods", got "nodes"`},
		{"busyBudget", func(c *Config) { pool0(c).Scaling.BusyBudget = "open" },
			`pools[0].scaling.busyBudget: supported values: "block", "surplus", got "open"`},
	}
	seen := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if seen[tc.name] {
				t.Fatalf("duplicate case name %q", tc.name)
			}
			seen[tc.name] = true
			cfg := mustDecode(t, minimalYAML)
			tc.mutate(cfg)
			Default(cfg)
			got := lines(Validate(cfg))
			if !slices.Equal(got, []string{tc.want}) {
				t.Errorf("got lines:\n  %s\nwant exactly:\n  %s", strings.Join(got, "\n  "), tc.want)
			}
		})
	}
}

// TestValidateAccepts lists settings near the rules above that must stay valid.
func TestValidateAccepts(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
	}{
		{"instanceProfile instead of role", func(c *Config) { c.NodeClass.Role, c.NodeClass.InstanceProfile = "", "ci-nodes" }},
		{"bottlerocket alias", func(c *Config) { c.NodeClass.AMIAlias = "bottlerocket@v1.31.0" }},
		{"subnet and security group by id", func(c *Config) {
			c.NodeClass.SubnetSelectorTerms = []awsv1.SubnetSelectorTerm{{ID: "subnet-1"}, {ID: "subnet-2"}}
			c.NodeClass.SecurityGroupSelectorTerms = []awsv1.SecurityGroupSelectorTerm{{ID: "sg-1"}}
		}},
		{"security group by name", func(c *Config) {
			c.NodeClass.SecurityGroupSelectorTerms = []awsv1.SecurityGroupSelectorTerm{{Name: "eks-nodes"}}
		}},
		{"unreserved tags", func(c *Config) {
			c.NodeClass.Tags = map[string]string{"team": "platform", "karpenter.sh/discovery": "ci"}
		}},
		{"metadata and kubelet", func(c *Config) {
			c.NodeClass.MetadataOptions = &awsv1.MetadataOptions{HTTPEndpoint: ptr.To("enabled"), HTTPProtocolIPv6: ptr.To("disabled"),
				HTTPTokens: ptr.To("required"), HTTPPutResponseHopLimit: ptr.To[int64](64)}
			c.NodeClass.Kubelet = &awsv1.KubeletConfiguration{MaxPods: ptr.To[int32](110), ImageGCHighThresholdPercent: ptr.To[int32](85),
				ImageGCLowThresholdPercent: ptr.To[int32](80), SystemReserved: map[string]string{"cpu": "200m", "memory": "500Mi"}}
		}},
		{"discovery", func(c *Config) {
			c.Discovery = Discovery{Enabled: true, Region: "eu-west-1", Endpoint: "https://ec2.eu-west-1.amazonaws.com", RefreshInterval: dur(time.Minute)}
		}},
		{"pool name of 40 characters", func(c *Config) { pool0(c).Name = strings.Repeat("a", 40) }},
		{"two pools", func(c *Config) {
			p := c.Pools[0]
			p.Name = "arm"
			p.Architectures = []string{"arm64"}
			c.Pools = append(c.Pools, p)
		}},
		{"every capacity type", func(c *Config) { pool0(c).CapacityTypes = []string{"on-demand", "spot", "reserved"} }},
		{"instance selector", func(c *Config) {
			pool0(c).Instance = InstanceSelector{Categories: InNotIn[string]{In: []string{"c", "m"}}, Families: InNotIn[string]{NotIn: []string{"m5d"}},
				Generations: InNotIn[int]{In: []int{6, 7}}, MinGeneration: 7}
		}},
		{"Never expires or consolidates", func(c *Config) {
			pool0(c).ExpireAfter = &karpv1.NillableDuration{}
			pool0(c).Disruption.ConsolidateAfter = &karpv1.NillableDuration{}
		}},
		{"budgets", func(c *Config) {
			pool0(c).Disruption.Budgets = []karpv1.Budget{{Nodes: "100%"}, {Nodes: "0", Reasons: []karpv1.DisruptionReason{"Drifted", "Underutilized"},
				Schedule: ptr.To("@daily"), Duration: dur(time.Hour)}}
		}},
		{"existingDaemonSet allows a short pool grace period", func(c *Config) {
			pool0(c).Engine.ExistingDaemonSet = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "dagger-engine"}}
			pool0(c).TerminationGracePeriod = dur(10 * time.Minute)
		}},
		{"engine image on a registry port", func(c *Config) { pool0(c).Engine.Image = "localhost:5000/dagger/engine" }},
		{"engine image with tag", func(c *Config) { pool0(c).Engine.Image = "registry.dagger.io/engine:v0.21.8-gpu" }},
		{"engine image with digest", func(c *Config) {
			pool0(c).Engine.Image = "registry.dagger.io/engine@sha256:" + strings.Repeat("ab", 32)
		}},
		{"engine grace period at the minimum", func(c *Config) { pool0(c).Engine.TerminationGracePeriodSeconds = ptr.To[int64](330) }},
		{"engine version without v", func(c *Config) { pool0(c).Engine.Version = "0.21.8" }},
		{"engine version at a row's edge", func(c *Config) { pool0(c).Engine.Version = "v0.19.4" }},
		{"engine pre-release in the table", func(c *Config) { pool0(c).Engine.Version = "v1.0.0-beta.8" }},
		{"engine release newer than the table, with its contract", func(c *Config) {
			pool0(c).Engine.Version, pool0(c).Engine.Contract = "v0.21.9", "v0.21"
		}},
		{"engine contract naming the version's own row", func(c *Config) { pool0(c).Engine.Contract = "v0.21" }},
		{"engine stopSeconds with a grace period that fits it", func(c *Config) {
			pool0(c).Engine.StopSeconds = ptr.To[int64](1200)
			pool0(c).Engine.TerminationGracePeriodSeconds = ptr.To[int64](1230)
			pool0(c).TerminationGracePeriod = dur(time.Hour)
		}},
		{"engine gc sizes", func(c *Config) {
			pool0(c).Engine.GC = &EngineGC{MaxUsedSpace: "100GB", ReservedSpace: "50GiB", MinFreeSpace: "75%"}
		}},
		{"cache", func(c *Config) {
			pool0(c).Cache = Cache{Enabled: true, StorageClassName: "gp3", SnapshotClassName: "ebs.csi.aws.com", Size: qty("1Ti")}
		}},
		{"every source kind", func(c *Config) {
			c.Webhook.SecretRef = ref("warmpool-github", "webhook-secret")
			app := githubSource()
			app.Name, app.GitHub.TokenSecretRef = "github-app", nil
			app.GitHub.App = &GitHubAppAuth{AppID: 1, InstallationID: 2, PrivateKeySecretRef: *ref("github-app", "private-key.pem")}
			pool0(c).Queue.Sources = []Source{ghWebhookSource(), githubSource(), app, arcSource(), gitlabSource(), buildkiteSource(), prometheusSource()}
		}},
		{"githubWebhook resync with app auth on GHES", func(c *Config) {
			c.Webhook.SecretRef = ref("warmpool-github", "webhook-secret")
			w := ghWebhookSource()
			w.GitHubWebhook.Resync = &GitHubResync{URL: "https://ghe.example.com", Owner: "acme", Repos: []string{"ci"}, Interval: dur(time.Minute),
				App: &GitHubAppAuth{AppID: 1, InstallationID: 2, PrivateKeySecretRef: *ref("github-app", "private-key.pem")}}
			pool0(c).Queue.Sources = []Source{w}
		}},
		{"scaling", func(c *Config) {
			pool0(c).Limits.Nodes = ptr.To[int64](10)
			pool0(c).Scaling = Scaling{JobsPerNode: 0, RunnerRequests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")},
				WarmMinimum: 10, ScaleDownStabilization: dur(0), Headroom: HeadroomCapacityBuffer,
				WarmWindows: []WarmWindow{{Schedule: "0 8 * * mon-fri", Duration: metav1.Duration{Duration: 10 * time.Hour}, Minimum: 10, TimeZone: "Europe/Berlin"}}}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustDecode(t, minimalYAML)
			tc.mutate(cfg)
			Default(cfg)
			if got := lines(Validate(cfg)); len(got) > 0 {
				t.Errorf("want valid, got:\n  %s", strings.Join(got, "\n  "))
			}
		})
	}
}

// TestDecodeErrors covers what is wrong with the document's shape: each case's Parse error is
// exactly the lines listed (decoding stops before defaults and validation).
func TestDecodeErrors(t *testing.T) {
	// withPool appends lines to the minimal config's pool.
	withPool := func(extra string) string { return minimalYAML + extra }
	cases := []struct {
		name string
		doc  string
		want []string
	}{
		{"empty", "", []string{`<document>: required: the document is empty`}},
		{"only whitespace", " \n\t\n", []string{`<document>: required: the document is empty`}},
		{"only a comment", "# nothing here\n", []string{`<document>: the document must be a YAML mapping`}},
		{"null", "null\n", []string{`<document>: the document must be a YAML mapping`}},
		{"a list", "- apiVersion: warmpool.io/v1alpha1\n", []string{`<document>: the document must be a YAML mapping`}},
		{"a scalar", "warmpool\n", []string{`<document>: the document must be a YAML mapping`}},
		{"malformed: unclosed flow", "pools: [\n", []string{`<document>: malformed YAML: line 1: did not find expected node content`}},
		{"malformed: bad indentation", "nodeClass:\n  role: a\n role: b\n", []string{`<document>: malformed YAML: line 2: did not find expected key`}},
		{"malformed: tab indentation", "nodeClass:\n\trole: a\n", []string{`<document>: malformed YAML: line 2: found character that cannot start any token`}},
		{"duplicate top-level key", "kind: WarmpoolConfig\nkind: WarmpoolConfig\n",
			[]string{`<document>: malformed YAML: unmarshal errors: line 2: key "kind" already set in map`}},
		{"duplicate key in a list item", withPool("    name: again\n"),
			[]string{`<document>: malformed YAML: unmarshal errors: line 13: key "name" already set in map`}},
		{"unknown top-level field", withPool("spec: {}\n"),
			[]string{`spec: unknown field (check the spelling against docs/config.md)`}},
		{"unknown nodeClass field", strings.Replace(minimalYAML, "  role:", "  roleARN: x\n  role:", 1),
			[]string{`nodeClass.roleARN: unknown field (check the spelling against docs/config.md)`}},
		{"unknown field in a list item", withPool("    labels: {}\n    nvmeSize: 100\n"),
			[]string{`pools[0].nvmeSize: unknown field (check the spelling against docs/config.md)`}},
		{"unknown field nested in a list item", strings.Replace(minimalYAML, "nvme: {minSizeGB: 100}", "nvme: {minSizeGB: 100, foo: 1}", 1),
			[]string{`pools[0].nvme.foo: unknown field (check the spelling against docs/config.md)`}},
		{"unknown field in a Karpenter type", strings.Replace(minimalYAML, "    - tags: {karpenter.sh/discovery: ci}\n  security",
			"    - tags: {karpenter.sh/discovery: ci}\n      name: private\n  security", 1),
			[]string{`nodeClass.subnetSelectorTerms[0].name: unknown field (check the spelling against docs/config.md)`}},
		{"unknown field deep in the second pool", withPool("  - name: b\n    nvme: {minSizeGB: 1}\n    engine: {version: v0.21.8}\n    queue:\n      sources:\n        - github: {owner: a, labels: [x], token: t}\n"),
			[]string{`pools[1].queue.sources[0].github.token: unknown field (check the spelling against docs/config.md)`}},
		{"field names are case-sensitive", strings.Replace(minimalYAML, "minSizeGB", "minSizeGb", 1),
			[]string{`pools[0].nvme.minSizeGb: unknown field (check the spelling against docs/config.md)`}},
		// YAML becomes JSON with sorted keys, so these come in key order at each level.
		{"several unknown fields at once", withPool("    nvme2: 1\n    scaling: {maxnodes: 3}\nextra: true\n"),
			[]string{
				`extra: unknown field (check the spelling against docs/config.md)`,
				`pools[0].nvme2: unknown field (check the spelling against docs/config.md)`,
				`pools[0].scaling.maxnodes: unknown field (check the spelling against docs/config.md)`,
			}},
		{"string for int", strings.Replace(minimalYAML, "minSizeGB: 100", "minSizeGB: big", 1),
			[]string{`pools[0].nvme.minSizeGB: must be an integer, got "big"`}},
		{"float for int", strings.Replace(minimalYAML, "minSizeGB: 100", "minSizeGB: 1.5", 1),
			[]string{`pools[0].nvme.minSizeGB: must be an integer, got 1.5`}},
		{"int overflow", withPool("    weight: 4294967296\n"),
			[]string{`pools[0].weight: must be an integer between -2147483648 and 2147483647, got 4294967296`}},
		{"string for int in the second pool", withPool("  - name: b\n    nvme: {minSizeGB: \"200\"}\n"),
			[]string{`pools[1].nvme.minSizeGB: must be an integer, got "200"`}},
		{"list for map", strings.Replace(minimalYAML, "  role:", "  tags: [team]\n  role:", 1),
			[]string{`nodeClass.tags: must be a mapping, got a list`}},
		{"map for list", "pools:\n  runners:\n    nvme: {minSizeGB: 1}\n",
			[]string{`pools: must be a list, got a mapping`}},
		{"list for struct", strings.Replace(minimalYAML, "nvme: {minSizeGB: 100}", "nvme: [100]", 1),
			[]string{`pools[0].nvme: must be a mapping, got a list`}},
		{"map for string", strings.Replace(minimalYAML, "role: KarpenterNodeRole-ci", "role: {name: KarpenterNodeRole-ci}", 1),
			[]string{`nodeClass.role: must be a string, got a mapping`}},
		{"YAML boolean for a string", withPool("    labels: {tier: yes}\n"),
			[]string{`pools[0].labels[tier]: must be a string, got true (unquoted yes, no, on and off are YAML booleans: quote the value, e.g. "off")`}},
		{"unquoted off for the spare's mode", withPool("    scaling: {spare: {mode: off}}\n"),
			[]string{`pools[0].scaling.spare.mode: must be a string, got false (unquoted yes, no, on and off are YAML booleans: quote the value, e.g. "off")`}},
		{"string for bool", "discovery: {enabled: \"on\"}\n",
			[]string{`discovery.enabled: must be true or false, got "on"`}},
		{"number for apiVersion", strings.Replace(minimalYAML, "apiVersion: warmpool.io/v1alpha1", "apiVersion: 1", 1),
			[]string{`apiVersion: must be a string, got 1`}},
		{"bad quantity", withPool("    limits: {cpu: lots}\n"),
			[]string{`pools[0].limits.cpu: must be a quantity ("500m", "100Gi"), got "lots"`}},
		{"bad quantity in a map", withPool("    scaling: {runnerRequests: {cpu: 2, memory: 4 gigs}}\n"),
			[]string{`pools[0].scaling.runnerRequests[memory]: must be a quantity ("500m", "100Gi"), got "4 gigs"`}},
		{"bad duration", withPool("    terminationGracePeriod: 1 hour\n"),
			[]string{`pools[0].terminationGracePeriod: must be a duration ("90s", "1h30m"), got "1 hour"`}},
		{"number for duration", "discovery: {refreshInterval: 3600}\n",
			[]string{`discovery.refreshInterval: must be a duration ("90s", "1h30m"), got 3600`}},
		{"bad nillable duration", withPool("    expireAfter: forever\n"),
			[]string{`pools[0].expireAfter: must be a duration ("90s", "1h30m") or "Never", got "forever"`}},
		{"bad duration in a Karpenter type", withPool("    disruption: {budgets: [{nodes: \"0\", schedule: \"@daily\", duration: 1d}]}\n"),
			[]string{`pools[0].disruption.budgets[0].duration: must be a duration ("90s", "1h30m"), got "1d"`}},
		{"infinity", withPool("    weight: .inf\n"),
			[]string{`<document>: malformed YAML: json: unsupported value: +Inf`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := parseLines(t, tc.doc)
			if !slices.Equal(got, tc.want) {
				t.Errorf("document:\n%s\ngot lines:\n  %s\nwant:\n  %s", tc.doc, strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
			// Decode alone reports the same: these are all shape errors.
			_, err := Decode([]byte(tc.doc))
			var cfgErr *Error
			if !errors.As(err, &cfgErr) || !slices.Equal(cfgErr.Lines(), tc.want) {
				t.Errorf("Decode: got %v, want the same lines as Parse", err)
			}
		})
	}
}

// TestWrongAPIVersionAndKind: a well-formed document of another format is rejected by name.
func TestWrongAPIVersionAndKind(t *testing.T) {
	doc := strings.NewReplacer("apiVersion: warmpool.io/v1alpha1", "apiVersion: v1", "kind: WarmpoolConfig", "kind: ConfigMap").Replace(minimalYAML)
	want := []string{
		`apiVersion: supported values: "warmpool.io/v1alpha1", got "v1"`,
		`kind: supported values: "WarmpoolConfig", got "ConfigMap"`,
	}
	if got := parseLines(t, doc); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	// A document without them at all names both too.
	doc = minimalYAML[strings.Index(minimalYAML, "nodeClass:"):]
	want = []string{
		`apiVersion: supported values: "warmpool.io/v1alpha1", got ""`,
		`kind: supported values: "WarmpoolConfig", got ""`,
	}
	if got := parseLines(t, doc); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestAllErrorsAtOnce: a document with five problems yields five lines, in the same order on
// every run (including the problems found by ranging over maps).
func TestAllErrorsAtOnce(t *testing.T) {
	doc := `apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  subnetSelectorTerms:
    - tags: {karpenter.sh/discovery: ci}
  securityGroupSelectorTerms:
    - tags: {karpenter.sh/discovery: ci}
pools:
  - name: runners
    nvme: {minSizeGB: 0}
    labels:
      zone.example.com/b: "not valid"
      karpenter.sh/nodepool: x
      a.example.com/ok: fine
    engine: {version: v0.21.8}
  - name: second
    nvme: {minSizeGB: 1}
`
	want := []string{
		`nodeClass.role: required: one of role or instanceProfile`,
		`pools[0].nvme.minSizeGB: must be >= 1, got 0`,
		`pools[0].labels[zone.example.com/b]: ` + labelValueMsg + `, got "not valid"`,
		`pools[0].labels[karpenter.sh/nodepool]: label domain karpenter.sh is reserved, got "karpenter.sh/nodepool"`,
		`pools[1].engine.version: required: the engine version keys cache snapshots; supported: ` + supportedEngines,
	}
	first := parseLines(t, doc)
	if !slices.Equal(first, want) {
		t.Fatalf("got lines:\n  %s\nwant:\n  %s", strings.Join(first, "\n  "), strings.Join(want, "\n  "))
	}
	// Map iteration order is random per run: repeat enough to catch an unsorted range.
	for range 50 {
		if again := parseLines(t, doc); !slices.Equal(again, first) {
			t.Fatalf("second run gave a different order:\n  %s\nfirst:\n  %s", strings.Join(again, "\n  "), strings.Join(first, "\n  "))
		}
	}
	_, err := Parse([]byte(doc))
	if got, want := err.Error(), strings.Join(want, "; "); got != want {
		t.Errorf("Error() = %q, want the lines joined by \"; \"", got)
	}
}

// TestDefaults lists every default next to its field.
func TestDefaults(t *testing.T) {
	cfg := mustDecode(t, minimalYAML+`    limits: {nodes: 8}
    queue:
      sources:
        - githubWebhook: {labels: [dagger], resync: {owner: acme, tokenSecretRef: {name: gh, key: token}}}
        - github: {owner: acme, labels: [dagger], tokenSecretRef: {name: gh, key: token}}
        - arc: {namespace: arc, scaleSetName: dagger}
        - gitlab: {groupID: "1", tokenSecretRef: {name: gl, key: token}}
        - buildkite: {queue: dagger, tokenSecretRef: {name: bk, key: token}}
        - prometheus: {url: "http://prometheus:9090", query: "sum(x)"}
`)
	Default(cfg)
	p := &cfg.Pools[0]
	s := p.Queue.Sources
	cases := []struct {
		field string
		got   any
		want  any
	}{
		{"nodeClass.amiAlias", cfg.NodeClass.AMIAlias, "al2023@latest"},
		{"discovery.enabled", cfg.Discovery.Enabled, false},
		{"discovery.refreshInterval", cfg.Discovery.RefreshInterval.Duration, time.Hour},
		{"webhook.path", cfg.Webhook.Path, "/webhooks/github"},
		{"pools[].architectures", p.Architectures, []string{"amd64"}},
		{"pools[].capacityTypes", p.CapacityTypes, []string{"on-demand"}},
		{"pools[].weight", p.Weight, (*int32)(nil)},
		{"pools[].taint", *p.Taint, corev1.Taint{Key: "warmpool.io/runner", Value: "runners", Effect: corev1.TaintEffectNoSchedule}},
		{"pools[].expireAfter", *p.ExpireAfter.Duration, 720 * time.Hour},
		{"pools[].terminationGracePeriod", p.TerminationGracePeriod.Duration, time.Hour},
		{"pools[].disruption.consolidationPolicy", p.Disruption.ConsolidationPolicy, karpv1.ConsolidationPolicyWhenEmpty},
		{"pools[].disruption.consolidateAfter", *p.Disruption.ConsolidateAfter.Duration, 5 * time.Minute},
		{"pools[].disruption.budgets", p.Disruption.Budgets, []karpv1.Budget{{Nodes: "10%"}}},
		{"pools[].engine.image", p.Engine.Image, "registry.dagger.io/engine"},
		{"pools[].engine.hostPath", p.Engine.HostPath, "/mnt/k8s-disks/0/dagger-runners"},
		{"pools[].engine.runPath", p.Engine.RunPath, "/run/dagger-runners"},
		{"pools[].engine.terminationGracePeriodSeconds", *p.Engine.TerminationGracePeriodSeconds, int64(900)},
		{"pools[].cache.enabled", p.Cache.Enabled, false},
		{"pools[].cache.size", p.Cache.Size.String(), "200Gi"},
		{"pools[].cache.retention.keep", p.Cache.Retention.Keep, 3},
		{"pools[].cache.retention.maxAge", p.Cache.Retention.MaxAge.Duration, 168 * time.Hour},
		{"sources[githubWebhook].name", s[0].Name, "github-webhook"},
		{"sources[githubWebhook].resync.interval", s[0].GitHubWebhook.Resync.Interval.Duration, 5 * time.Minute},
		{"sources[github].name", s[1].Name, "github"},
		{"sources[github].pollInterval", s[1].GitHub.PollInterval.Duration, 30 * time.Second},
		{"sources[arc].name", s[2].Name, "arc"},
		{"sources[gitlab].name", s[3].Name, "gitlab"},
		{"sources[gitlab].pollInterval", s[3].GitLab.PollInterval.Duration, 30 * time.Second},
		{"sources[buildkite].name", s[4].Name, "buildkite"},
		{"sources[buildkite].pollInterval", s[4].Buildkite.PollInterval.Duration, 30 * time.Second},
		{"sources[prometheus].name", s[5].Name, "prometheus"},
		{"sources[prometheus].pollInterval", s[5].Prometheus.PollInterval.Duration, 30 * time.Second},
		{"sources[prometheus].state", s[5].Prometheus.State, "queued"},
		{"pools[].scaling.jobsPerNode", p.Scaling.JobsPerNode, 0},
		{"pools[].scaling.warmMinimum", p.Scaling.WarmMinimum, 0},
		{"pools[].scaling.maxNodes (from limits.nodes)", *p.Scaling.MaxNodes, 8},
		{"pools[].scaling.scaleDownStabilization", p.Scaling.ScaleDownStabilization.Duration, 5 * time.Minute},
		{"pools[].scaling.scaleDownStep", p.Scaling.ScaleDownStep, 0},
		{"pools[].scaling.headroom", p.Scaling.Headroom, "pods"},
		{"pools[].scaling.busyBudget", p.Scaling.BusyBudget, "surplus"},
	}
	for _, tc := range cases {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s: default %#v, want %#v", tc.field, tc.got, tc.want)
		}
	}

	// Without limits.nodes, maxNodes stays unset (no cap beyond the NodePool's).
	cfg = mustDecode(t, minimalYAML)
	Default(cfg)
	if cfg.Pools[0].Scaling.MaxNodes != nil {
		t.Errorf("scaling.maxNodes defaulted to %d without limits.nodes", *cfg.Pools[0].Scaling.MaxNodes)
	}
}

// TestDefaultKeepsSetValues: a value the user wrote is never replaced by a default.
func TestDefaultKeepsSetValues(t *testing.T) {
	cfg := mustDecode(t, strings.Replace(minimalYAML, "    engine: {version: v0.21.8}\n", "", 1)+`    taint: {key: ci.example.com/dedicated, value: dagger, effect: NoExecute}
    expireAfter: Never
    disruption: {consolidationPolicy: WhenEmptyOrUnderutilized, consolidateAfter: 0s, budgets: [{nodes: "1"}]}
    engine: {version: v0.21.8, image: mirror.example.com/dagger/engine, hostPath: /mnt/k8s-disks/0/engine, runPath: /run/engine}
    cache: {size: 1Ti, retention: {keep: 10, maxAge: 24h}}
    limits: {nodes: 8}
    scaling: {maxNodes: 4, headroom: capacityBuffer, busyBudget: surplus, scaleDownStabilization: 0s}
`)
	Default(cfg)
	p := &cfg.Pools[0]
	checks := []struct {
		field string
		got   any
		want  any
	}{
		{"taint", *p.Taint, corev1.Taint{Key: "ci.example.com/dedicated", Value: "dagger", Effect: corev1.TaintEffectNoExecute}},
		{"expireAfter", p.ExpireAfter.Duration, (*time.Duration)(nil)},
		{"consolidationPolicy", p.Disruption.ConsolidationPolicy, karpv1.ConsolidationPolicyWhenEmptyOrUnderutilized},
		{"consolidateAfter", *p.Disruption.ConsolidateAfter.Duration, time.Duration(0)},
		{"budgets", p.Disruption.Budgets, []karpv1.Budget{{Nodes: "1"}}},
		{"engine.image", p.Engine.Image, "mirror.example.com/dagger/engine"},
		{"engine.hostPath", p.Engine.HostPath, "/mnt/k8s-disks/0/engine"},
		{"engine.runPath", p.Engine.RunPath, "/run/engine"},
		{"cache.size", p.Cache.Size.String(), "1Ti"},
		{"cache.retention.keep", p.Cache.Retention.Keep, 10},
		{"cache.retention.maxAge", p.Cache.Retention.MaxAge.Duration, 24 * time.Hour},
		{"scaling.maxNodes", *p.Scaling.MaxNodes, 4},
		{"scaling.headroom", p.Scaling.Headroom, "capacityBuffer"},
		{"scaling.busyBudget", p.Scaling.BusyBudget, "surplus"},
		{"scaling.scaleDownStabilization", p.Scaling.ScaleDownStabilization.Duration, time.Duration(0)},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s: %#v after Default, want the value set %#v", tc.field, tc.got, tc.want)
		}
	}
	if errs := lines(Validate(cfg)); len(errs) > 0 {
		t.Errorf("want valid, got %q", errs)
	}
}

// TestDefaultIdempotent: defaulting a defaulted config changes nothing.
func TestDefaultIdempotent(t *testing.T) {
	example, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	for name, doc := range map[string]string{"minimal": minimalYAML, "example": string(example), "empty pool": "pools: [{}]\n"} {
		t.Run(name, func(t *testing.T) {
			once := mustDecode(t, doc)
			Default(once)
			twice := mustDecode(t, doc)
			Default(twice)
			Default(twice)
			a, err := json.Marshal(once)
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(twice)
			if err != nil {
				t.Fatal(err)
			}
			if string(a) != string(b) {
				t.Errorf("Default is not idempotent:\nonce:  %s\ntwice: %s", a, b)
			}
		})
	}
}

var examplePath = filepath.Join("..", "..", "deploy", "examples", "config.yaml")

// TestExampleConfig: the example users copy parses cleanly and means what its comments say.
func TestExampleConfig(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(data)
	if err != nil {
		t.Fatalf("the example config is rejected:\n%v", err)
	}
	if len(cfg.Pools) != 2 || cfg.Pools[0].Name != "dagger-amd64" || cfg.Pools[1].Name != "dagger-arm64" {
		t.Fatalf("pools: %+v", cfg.Pools)
	}
	arm := cfg.Pools[1]
	if *arm.Scaling.MaxNodes != 10 || arm.Queue.Sources[0].Name != "arm-queue" || arm.Queue.Sources[0].Prometheus.State != SourceStateQueued {
		t.Errorf("arm pool defaults: maxNodes %d, source %+v", *arm.Scaling.MaxNodes, arm.Queue.Sources[0])
	}
}

// TestMinimalConfig: apiVersion, kind, nodeClass role and selector terms, and one pool with a
// name, nvme.minSizeGB and engine.version are all a valid config needs.
func TestMinimalConfig(t *testing.T) {
	cfg, err := Parse([]byte(minimalYAML))
	if err != nil {
		t.Fatalf("the minimal config is rejected:\n%v", err)
	}
	if len(cfg.Pools) != 1 || cfg.Pools[0].Name != "runners" || cfg.Pools[0].NVMe.MinSizeGB != 100 || cfg.Pools[0].Engine.Version != "v0.21.8" {
		t.Errorf("pools: %+v", cfg.Pools)
	}
}

// TestDocsMinimalExample: the annotated example that opens docs/config.md is a valid config.
func TestDocsMinimalExample(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "config.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	block, _, closed := strings.Cut(rest, "```")
	if !ok || !closed {
		t.Fatal("docs/config.md has no yaml block")
	}
	if _, err := Parse([]byte(block)); err != nil {
		t.Errorf("the minimal example in docs/config.md is rejected:\n%v", err)
	}
}

func TestDecodeRejectsSeveralDocuments(t *testing.T) {
	doc := "apiVersion: warmpool.io/v1alpha1\nkind: WarmpoolConfig\n---\n# a comment-only document does not count\n---\napiVersion: warmpool.io/v1alpha1\nkind: WarmpoolConfig\n"
	_, err := Decode([]byte(doc))
	var cfgErr *Error
	if !errors.As(err, &cfgErr) {
		t.Fatalf("Decode = %v, want a config error", err)
	}
	want := "<document>: holds 2 YAML documents; config.yaml must hold exactly one WarmpoolConfig"
	if got := cfgErr.Lines(); len(got) != 1 || got[0] != want {
		t.Errorf("lines = %q, want [%q]", got, want)
	}
	// A single document with a leading separator is still one document.
	if _, err := Decode([]byte("---\napiVersion: warmpool.io/v1alpha1\nkind: WarmpoolConfig\n")); err != nil {
		t.Errorf("a single document with a leading --- was rejected: %v", err)
	}
}

// TestTerminationGracePeriodFollowsEngine: unset, the pool's grace period is the engine's plus
// time for the save, so a longer engine grace period never yields a config that fails its own
// "must exceed" rule; set, it is kept as written and checked.
func TestTerminationGracePeriodFollowsEngine(t *testing.T) {
	withEngine := func(engine string) string {
		return strings.Replace(minimalYAML, "    engine: {version: v0.21.8}\n", engine, 1)
	}
	cfg := mustDecode(t, withEngine("    engine: {version: v0.21.8, terminationGracePeriodSeconds: 3600}\n"))
	Default(cfg)
	if got, want := cfg.Pools[0].TerminationGracePeriod.Duration, time.Hour+45*time.Minute; got != want {
		t.Errorf("terminationGracePeriod = %v, want the engine's 1h plus 45m", got)
	}
	if errs := Validate(cfg); len(errs) != 0 {
		t.Errorf("defaulted config invalid: %v", errs)
	}
	cfg = mustDecode(t, withEngine("    terminationGracePeriod: 10m\n    engine: {version: v0.21.8, terminationGracePeriodSeconds: 600}\n"))
	Default(cfg)
	want := `pools[0].terminationGracePeriod: must exceed engine.terminationGracePeriodSeconds (600s) so the cache can be saved after the engine stops, got "10m0s"`
	if got := lines(Validate(cfg)); !slices.Equal(got, []string{want}) {
		t.Errorf("got %q, want %q", got, want)
	}
}
