package scaling_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/nodepools/discovery/ec2fake"
)

func c6id(size string, vcpus int32, memMiB, nvmeGB int64) ec2fake.InstanceType {
	return ec2fake.InstanceType{
		Name: "c6id." + size, Architectures: []string{"x86_64"}, VCPUs: vcpus, MemoryMiB: memMiB,
		CurrentGeneration: true, Hypervisor: "nitro", NVMeSupport: "required",
		Disks: []ec2fake.Disk{{SizeGB: nvmeGB, Count: 1, Type: "ssd"}},
	}
}

// TestJobsPerNodeDerived: with jobsPerNode unset and runnerRequests set, jobs per node come
// from the instance types the pool admits (EC2 discovery, estimated allocatable minus the
// engine's requests) while the pool has no node, then from its Ready nodes' allocatable minus
// their DaemonSet pods. Desired nodes and the placeholder size follow.
func TestJobsPerNodeDerived(t *testing.T) {
	fake, err := ec2fake.NewServer([]ec2fake.InstanceType{
		c6id("2xlarge", 8, 16384, 474),
		c6id("4xlarge", 16, 32768, 950),
		c6id("large", 2, 4096, 118), // below nvme.minSizeGB: not admitted, not counted
	})
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

	pool := poolName("derived")
	cfg := configYAML(poolYAML(pool, ciSource,
		"engine: {version: v0.19.7, resources: {requests: {cpu: \"1\", memory: 2Gi}}}",
		"instance: {families: {in: [c6id]}}",
		`scaling: {burstHold: {percent: 0}, runnerRequests: {cpu: "2", memory: 4Gi}, scaleDownStabilization: 1s}`,
	))
	cfg = replaceOnce(t, cfg, "    nvme: {minSizeGB: 100}\n", "    nvme: {minSizeGB: 400}\n")
	cfg = replaceOnce(t, cfg, "    engine: {version: v0.19.7}\n", "")
	cfg = replaceOnce(t, cfg, "pools:\n", fmt.Sprintf("discovery: {enabled: true, region: us-east-1, endpoint: %q}\npools:\n", fake.URL))
	e := newEnv(t, cfg)
	e.waitReplicas(pool, 0)

	// c6id.2xlarge: 7910m and 13591Mi estimated allocatable, minus the engine's 1 cpu and
	// 2Gi: 3 runners by cpu, 2 by memory. c6id.4xlarge fits 6. The smallest shape wins: 2.
	e.record(pool, queue.Counts{Queued: 5}, nil)
	d := e.waitReplicas(pool, 3) // ceil(5/2)
	checkRequests(t, d, corev1.ResourceList{corev1.ResourceCPU: quantity("4"), corev1.ResourceMemory: quantity("8Gi")})
	if len(fake.Requests()) == 0 {
		t.Error("the EC2 endpoint was never asked")
	}

	// A Ready node of 16 cpu and 64Gi whose engine pod takes 2 cpu: 7 runners by cpu, 16 by
	// memory. It is what the pool really runs on now: 7 jobs per node.
	node := pool + "-1"
	e.newPod("engine", node, func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "dagger-engine", UID: "0a4b2d9e-0000-4000-8000-000000000002", Controller: ptr.To(true)}}
		p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: quantity("2"), corev1.ResourceMemory: quantity("2Gi")}
	})
	newNodeWith(t, node, pool, corev1.ResourceList{corev1.ResourceCPU: quantity("16"), corev1.ResourceMemory: quantity("64Gi"), corev1.ResourcePods: quantity("110")})
	eventually(t, "placeholders sized for 7 runners", func() error {
		d, err := e.headroom(pool)
		if err != nil {
			return err
		}
		got := d.Spec.Template.Spec.Containers[0].Resources.Requests
		if cpu := got[corev1.ResourceCPU]; cpu.Cmp(quantity("14")) != 0 {
			return fmt.Errorf("cpu %s", cpu.String())
		}
		return nil
	})
	checkRequests(t, e.waitReplicas(pool, 1), corev1.ResourceList{corev1.ResourceCPU: quantity("14"), corev1.ResourceMemory: quantity("28Gi")})
	waitGauge(t, desiredGauge, pool, 1) // ceil(5/7)
}

// TestJobsPerNodeFallsBackToOne: runnerRequests with no Ready node and no instance types
// known (discovery off) mean one job per node.
func TestJobsPerNodeFallsBackToOne(t *testing.T) {
	pool := poolName("fallback")
	e := newEnv(t, configYAML(poolYAML(pool, ciSource, `scaling: {runnerRequests: {cpu: "2", memory: 4Gi}}`)))
	e.waitReplicas(pool, 0)
	e.record(pool, queue.Counts{Queued: 3}, nil)
	d := e.waitReplicas(pool, 3)
	checkRequests(t, d, corev1.ResourceList{corev1.ResourceCPU: quantity("2"), corev1.ResourceMemory: quantity("4Gi")})
}

func replaceOnce(t testing.TB, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("%q not in config", old)
	}
	return strings.Replace(s, old, new, 1)
}
