package config

import (
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestValidateCacheRestore(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   []string // exact lines
	}{
		{"defaults", func(*Config) {}, nil},
		{"restore class", func(c *Config) { pool0(c).Cache.RestoreStorageClassName = "Fast_Restore" },
			[]string{`pools[0].cache.restoreStorageClassName: ` + dnsSubdomainMsg + `, got "Fast_Restore"`}},
		{"throughput zero", func(c *Config) { pool0(c).Cache.Restore.Throughput = qty("0") },
			[]string{`pools[0].cache.restore.throughput: must be > 0 bytes per second, e.g. "125Mi" (gp3's baseline), got "0"`}},
		{"maxWait zero", func(c *Config) { pool0(c).Cache.Restore.MaxWait = dur(0) },
			[]string{`pools[0].cache.restore.maxWait: must be > 0, got "0s"`}},
		{"slack negative", func(c *Config) { pool0(c).Cache.Restore.ProvisioningSlack = dur(-time.Second) },
			[]string{`pools[0].cache.restore.provisioningSlack: must be >= 0, got "-1s"`}},
		{"slack eats the budget", func(c *Config) { pool0(c).Cache.Restore.ProvisioningSlack = dur(7 * time.Minute) },
			[]string{`pools[0].cache.restore.provisioningSlack: must be below maxWait (7m0s): no time would be left to copy, so no cache would ever be restored, got "7m0s"`}},
		{"sizeGCToBudget and an explicit maxUsedSpace", func(c *Config) {
			pool0(c).Cache.Enabled = true
			pool0(c).Cache.Restore.SizeGCToBudget = true
			pool0(c).Engine.GC = &EngineGC{MaxUsedSpace: "100GB"}
		}, []string{`pools[0].cache.restore.sizeGCToBudget: forbidden: engine.gc.maxUsedSpace is set (100GB) and would be derived as 37500MiB: set one or the other`}},
		{"sizeGCToBudget with an existing DaemonSet", func(c *Config) {
			pool0(c).Cache.Enabled = true
			pool0(c).Cache.Restore.SizeGCToBudget = true
			pool0(c).Engine.ExistingDaemonSet = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "dagger"}}
		}, []string{`pools[0].cache.restore.sizeGCToBudget: forbidden: warmpool does not render the engine config of an engine.existingDaemonSet: set its gc.maxUsedSpace to 37500MiB yourself`}},
		{"bottlerocket with the cache", func(c *Config) {
			c.NodeClass.AMIAlias = "bottlerocket@latest"
			pool0(c).Cache.Enabled = true
		}, []string{`pools[0].cache.enabled: forbidden: the cache needs the NVMe RAID0 array at /mnt/k8s-disks/0, which Bottlerocket (nodeClass.amiAlias bottlerocket@latest) does not mount there (it binds its ephemeral storage to /var/lib/containerd, /var/lib/kubelet and /var/log/pods): use an al2023 AMI for cache-enabled pools`}},
		{"bottlerocket without the cache", func(c *Config) { c.NodeClass.AMIAlias = "bottlerocket@latest" }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustDecode(t, minimalYAML)
			tc.mutate(cfg)
			Default(cfg)
			if got := lines(Validate(cfg)); !slices.Equal(got, tc.want) {
				t.Errorf("got lines:\n  %s\nwant exactly:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

func TestCacheRestoreDefaults(t *testing.T) {
	cfg := mustDecode(t, minimalYAML+"    cache: {enabled: true, storageClassName: gp3-xfs}\n")
	Default(cfg)
	c := pool0(cfg).Cache
	if c.RestoreStorageClassName != "gp3-xfs" {
		t.Errorf("restoreStorageClassName %q, want the save class", c.RestoreStorageClassName)
	}
	if got := c.Restore.Throughput.String(); got != "125Mi" {
		t.Errorf("throughput %s, want gp3's 125Mi", got)
	}
	if c.Restore.MaxWait.Duration != 7*time.Minute || c.Restore.ProvisioningSlack.Duration != 2*time.Minute {
		t.Errorf("maxWait %s slack %s, want 7m and 2m", c.Restore.MaxWait.Duration, c.Restore.ProvisioningSlack.Duration)
	}
	if pool0(cfg).Engine.GC != nil {
		t.Errorf("engine.gc %+v derived without sizeGCToBudget", pool0(cfg).Engine.GC)
	}
}

// sizeGCToBudget derives maxUsedSpace as throughput x (maxWait - slack), idempotently, and the
// engine accepts the value.
func TestSizeGCToBudget(t *testing.T) {
	for _, tc := range []struct {
		name, restore, want string
	}{
		// 125 MiB/s x 300 s.
		{"defaults", "{sizeGCToBudget: true}", "37500MiB"},
		// 300 MiB/s (the best volumeInitializationRate) x 480 s.
		{"initialization rate", "{sizeGCToBudget: true, throughput: 300Mi, maxWait: 9m, provisioningSlack: 1m}", "144000MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustDecode(t, minimalYAML+"    cache: {enabled: true, restore: "+tc.restore+"}\n")
			Default(cfg)
			Default(cfg)
			if errs := Validate(cfg); len(errs) > 0 {
				t.Fatalf("rejected: %v", lines(errs))
			}
			gc := pool0(cfg).Engine.GC
			if gc == nil || gc.MaxUsedSpace != tc.want {
				t.Fatalf("engine.gc %+v, want maxUsedSpace %s", gc, tc.want)
			}
			if err := ValidateDiskSpace(gc.MaxUsedSpace); err != nil {
				t.Fatalf("the engine would refuse %s: %v", gc.MaxUsedSpace, err)
			}
		})
	}
}
