package pools_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/nodepools"
)

// manyPools is a config of n pools whose NVMe minimum is minGB.
func manyPools(n, minGB int) string {
	var b strings.Builder
	b.WriteString(`apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  role: KarpenterNodeRole-bench
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: bench}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: bench}}]
pools:
`)
	for i := range n {
		fmt.Fprintf(&b, "  - {name: p%d, nvme: {minSizeGB: %d}, engine: {version: v0.19.7}}\n", i, minGB)
	}
	return b.String()
}

// BenchmarkConfigChangeToNodePools measures, on the real API server, the time from a ConfigMap
// update to every NodePool carrying the change, over 50 changes of a 20-pool config.
func BenchmarkConfigChangeToNodePools(b *testing.B) {
	const pools, changes = 20, 50
	for range b.N {
		latencies := runConfigChanges(b, pools, changes)
		slices.Sort(latencies)
		pct := func(p float64) float64 {
			return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
		}
		b.ReportMetric(pct(0.50), "p50-ms")
		b.ReportMetric(pct(0.99), "p99-ms")
		b.ReportMetric(float64(pools), "pools")
	}
}

func runConfigChanges(b *testing.B, pools, changes int) []time.Duration {
	b.Helper()
	e := newEnv(b, manyPools(pools, 100), nil)
	defer func() {
		e.Stop()
		cleanupOwned(b)
	}()
	waitAll(b, pools, "Gt 100")
	var latencies []time.Duration
	for i := range changes {
		want := 101 + i
		began := time.Now()
		e.SetConfig(manyPools(pools, want))
		waitAll(b, pools, fmt.Sprintf("Gt %d", want))
		latencies = append(latencies, time.Since(began))
	}
	return latencies
}

// waitAll polls until all n owned NodePools carry the NVMe requirement want.
func waitAll(b *testing.B, n int, want string) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		list := &karpv1.NodePoolList{}
		if err := kube.List(b.Context(), list, client.MatchingLabels{nodepools.LabelManagedBy: nodepools.ManagedBy}); err != nil {
			b.Fatal(err)
		}
		done := 0
		for i := range list.Items {
			if nvmeRequirement(&list.Items[i]) == want {
				done++
			}
		}
		if done == n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d NodePools at %q", done, n, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
