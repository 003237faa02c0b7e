package nodepools_test

import (
	"fmt"
	"strings"
	"testing"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/nodepools"
)

// config200 is a WarmpoolConfig of 200 pools that between them use every rendered feature,
// built as YAML and read with config.Parse like a real ConfigMap.
func config200(b *testing.B) *config.Config {
	b.Helper()
	var sb strings.Builder
	sb.WriteString(`apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  role: KarpenterNodeRole-bench
  amiAlias: al2023@latest
  subnetSelectorTerms:
    - tags: {karpenter.sh/discovery: bench}
  securityGroupSelectorTerms:
    - tags: {karpenter.sh/discovery: bench}
  tags: {team: platform, cost-center: ci}
  rootVolume: {size: 50Gi, type: gp3, encrypted: true}
  metadataOptions: {httpEndpoint: enabled, httpPutResponseHopLimit: 1, httpTokens: required}
  kubelet:
    maxPods: 110
    systemReserved: {cpu: 200m, memory: 500Mi}
pools:
`)
	for i := range 200 {
		arch := "amd64"
		sel := "categories: {in: [c, m], notIn: [r]}\n      minGeneration: 6"
		if i%2 == 1 {
			arch = "arm64"
			sel = "families: {in: [c7gd, m7gd]}\n      generations: {notIn: [6]}"
		}
		fmt.Fprintf(&sb, `  - name: pool-%03d
    architectures: [%s]
    instance:
      %s
    nvme: {minSizeGB: %d}
    capacityTypes: [on-demand, spot]
    limits: {cpu: "512", memory: 2048Gi, nodes: 20}
    weight: %d
    labels: {ci.example.com/tier: builder, ci.example.com/index: "%d"}
    expireAfter: 168h
    terminationGracePeriod: 45m
    disruption:
      consolidationPolicy: WhenEmpty
      consolidateAfter: 10m
      budgets:
        - nodes: "20%%"
        - nodes: "0"
          reasons: [Drifted]
          schedule: "0 8 * * mon-fri"
          duration: 10h
    engine: {version: v0.19.7}
    cache: {enabled: %t}
`, i, arch, sel, 100+i, 1+i%100, i, i%3 != 0)
	}
	cfg, err := config.Parse([]byte(sb.String()))
	if err != nil {
		b.Fatal(err)
	}
	if len(cfg.Pools) != 200 {
		b.Fatalf("parsed %d pools, want 200", len(cfg.Pools))
	}
	return cfg
}

// BenchmarkRender200Pools is what `warmpool render` and each reconcile do: generate every
// object and print it.
func BenchmarkRender200Pools(b *testing.B) {
	cfg := config200(b)
	opts := nodepools.Options{NodeClass: nodepools.EC2NodeClass}
	b.ReportAllocs()
	var size int
	for b.Loop() {
		out, err := nodepools.YAML(nodepools.Render(cfg, opts))
		if err != nil {
			b.Fatal(err)
		}
		size = len(out)
	}
	b.ReportMetric(float64(size), "bytes/output")
}

// BenchmarkRenderOnly200Pools is the typed generation alone.
func BenchmarkRenderOnly200Pools(b *testing.B) {
	cfg := config200(b)
	opts := nodepools.Options{NodeClass: nodepools.EC2NodeClass}
	b.ReportAllocs()
	for b.Loop() {
		if objs := nodepools.Render(cfg, opts); len(objs) != 800 {
			b.Fatalf("Render returned %d objects, want 800", len(objs))
		}
	}
}
