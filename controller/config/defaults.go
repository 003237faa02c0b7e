package config

import (
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"
)

// Defaults a user can rely on; docs/config.md lists each next to its field.
const (
	DefaultAMIAlias        = "al2023@latest"
	DefaultTaintKey        = "warmpool.io/runner"
	DefaultEngineImage     = "registry.dagger.io/engine"
	DefaultWebhookPath     = "/webhooks/github"
	DefaultHeadroom        = HeadroomPods
	DefaultConsolidation   = karpv1.ConsolidationPolicyWhenEmpty
	DefaultCacheKeep       = 3
	DefaultBudgetNodes     = "10%"
	NVMeMountPath          = "/mnt/k8s-disks/0"
	HeadroomPods           = "pods"
	HeadroomCapacityBuffer = "capacityBuffer"
	BusyBudgetBlock        = "block"
	BusyBudgetSurplus      = "surplus"
	// DefaultBusyBudget is surplus: in `warmpool simulate` block cost 3.3x Karpenter alone's
	// node-hours on the weekday trace (no node is removed while any job runs), surplus 1.2x
	// for the same waits (docs/scaling.md).
	DefaultBusyBudget  = BusyBudgetSurplus
	SourceStateQueued  = "queued"
	SourceStateRunning = "running"
	// DefaultEngineGraceSeconds is the engine pod's default grace period: 570 s of drain wait
	// for clients, 300 s for the engine's stop, 30 s to exit.
	DefaultEngineGraceSeconds = 900
	// DefaultEngineStopSeconds is engine.stopSeconds' default: what the engine's own stop
	// (prune, persist) is given once its clients are gone.
	DefaultEngineStopSeconds = 300
	// EngineExitSeconds is reserved after the engine's stop for SIGTERM delivery and process
	// exit.
	EngineExitSeconds       = 30
	defaultPollInterval     = 30 * time.Second
	defaultResyncInterval   = 5 * time.Minute
	defaultRefreshInterval  = time.Hour
	defaultStabilization    = 5 * time.Minute
	defaultConsolidateAfter = 5 * time.Minute
	// The pool's grace period bounds the engine's stop plus the cache save: by default the
	// engine's grace period plus this much for copying a few hundred GB of NVMe cache to EBS and
	// the snapshot turning readyToUse (1h with the default 900 s engine grace period).
	defaultSaveHeadroom = 45 * time.Minute
	defaultExpireAfter  = 720 * time.Hour
	defaultCacheMaxAge  = 7 * 24 * time.Hour
)

var defaultCacheSize = resource.MustParse("200Gi")

// Restore budget defaults (docs/config.md, "Restore budget"). A restore is attempted only when
// ProvisioningSlack + size/Throughput fits in MaxWait.
const (
	// DefaultRestoreThroughput is gp3's baseline throughput, what an EBS volume delivers once its
	// blocks are loaded (a volume from a snapshot is slower until then, unless the restore class
	// sets volumeInitializationRate or the snapshot has Fast Snapshot Restore).
	DefaultRestoreThroughput = "125Mi"
	// DefaultRestoreMaxWait: Karpenter rolls back a drift or replace-consolidation command
	// whose replacement node is not initialized 10 minutes after the command started
	// (sigs.k8s.io/karpenter pkg/controllers/disruption/queue.go, minRetryDuration), and
	// launching, booting and registering an EKS node takes 2-3 of them.
	DefaultRestoreMaxWait = 7 * time.Minute
	// DefaultRestoreProvisioningSlack covers the CSI node plugin registering on the node
	// (seconds to a minute after Ready), the volume created from the snapshot and attached, and
	// the restore pod started.
	DefaultRestoreProvisioningSlack = 2 * time.Minute
	// WhenJobsWaitCold and WhenJobsWaitRestore are cache.restore.whenJobsWait's values. A job
	// that waits for a new node waits for its boot either way; with restore it then also waits
	// for the restore, which on the bursty traces of `warmpool simulate` made the p95 wait a boot
	// plus a restore (180 s against Karpenter alone's 60 s). cold starts such a node at once,
	// and the spare and the burst hold keep restored nodes for the jobs they can foresee
	// (docs/scaling.md).
	WhenJobsWaitCold    = "cold"
	WhenJobsWaitRestore = "restore"
	DefaultWhenJobsWait = WhenJobsWaitCold
)

// Default fills every unset field with its documented default. It is idempotent.
func Default(c *Config) {
	nc := &c.NodeClass
	if nc.AMIAlias == "" {
		nc.AMIAlias = DefaultAMIAlias
	}
	if c.Discovery.RefreshInterval == nil {
		c.Discovery.RefreshInterval = &metav1.Duration{Duration: defaultRefreshInterval}
	}
	if c.Webhook.Path == "" {
		c.Webhook.Path = DefaultWebhookPath
	}
	for i := range c.Pools {
		defaultPool(&c.Pools[i])
	}
}

func defaultPool(p *Pool) {
	if len(p.Architectures) == 0 {
		p.Architectures = []string{"amd64"}
	}
	if len(p.CapacityTypes) == 0 {
		p.CapacityTypes = []string{karpv1.CapacityTypeOnDemand}
	}
	if p.Taint == nil {
		p.Taint = &corev1.Taint{Key: DefaultTaintKey, Value: p.Name, Effect: corev1.TaintEffectNoSchedule}
	}
	if p.ExpireAfter == nil {
		p.ExpireAfter = &karpv1.NillableDuration{Duration: ptr.To(defaultExpireAfter)}
	}
	d := &p.Disruption
	if d.ConsolidationPolicy == "" {
		d.ConsolidationPolicy = DefaultConsolidation
	}
	if d.ConsolidateAfter == nil {
		d.ConsolidateAfter = &karpv1.NillableDuration{Duration: ptr.To(defaultConsolidateAfter)}
	}
	if len(d.Budgets) == 0 {
		d.Budgets = []karpv1.Budget{{Nodes: DefaultBudgetNodes}}
	}

	e := &p.Engine
	if e.Image == "" {
		e.Image = DefaultEngineImage
	}
	if e.HostPath == "" {
		e.HostPath = NVMeMountPath + "/dagger-" + p.Name
	}
	if e.RunPath == "" {
		e.RunPath = "/run/dagger-" + p.Name
	}
	if e.TerminationGracePeriodSeconds == nil {
		e.TerminationGracePeriodSeconds = ptr.To[int64](DefaultEngineGraceSeconds)
	}
	if e.StopSeconds == nil {
		e.StopSeconds = ptr.To[int64](DefaultEngineStopSeconds)
	}
	// After the engine's: the node must outlive the engine's stop by the time a save takes.
	if p.TerminationGracePeriod == nil {
		engine := time.Duration(*e.TerminationGracePeriodSeconds) * time.Second
		p.TerminationGracePeriod = &metav1.Duration{Duration: engine + defaultSaveHeadroom}
	}

	cache := &p.Cache
	if cache.Size == nil {
		cache.Size = ptr.To(defaultCacheSize.DeepCopy())
	}
	if cache.Retention.Keep == 0 {
		cache.Retention.Keep = DefaultCacheKeep
	}
	if cache.Retention.MaxAge == nil {
		cache.Retention.MaxAge = &metav1.Duration{Duration: defaultCacheMaxAge}
	}
	defaultCacheRestore(p)

	for i := range p.Queue.Sources {
		defaultSource(&p.Queue.Sources[i])
	}

	s := &p.Scaling
	// An invalid limits.nodes (< 1) is reported on limits.nodes alone, not copied into maxNodes.
	if s.MaxNodes == nil && p.Limits.Nodes != nil && *p.Limits.Nodes >= 1 {
		s.MaxNodes = ptr.To(int(*p.Limits.Nodes))
	}
	if s.ScaleDownStabilization == nil {
		s.ScaleDownStabilization = &metav1.Duration{Duration: defaultStabilization}
	}
	if s.Headroom == "" {
		s.Headroom = DefaultHeadroom
	}
	if s.BusyBudget == "" {
		s.BusyBudget = DefaultBusyBudget
	}
	defaultSpare(&s.Spare)         // validate_spare.go
	defaultBurstHold(&s.BurstHold) // validate_burst.go
}

func defaultSource(s *Source) {
	if s.Name == "" {
		// Metric label values and Event text read better as DNS labels than as field names.
		s.Name = strings.ToLower(strings.ReplaceAll(s.kind(), "Webhook", "-webhook"))
	}
	poll := func(d **metav1.Duration) {
		if *d == nil {
			*d = &metav1.Duration{Duration: defaultPollInterval}
		}
	}
	if s.GitHubWebhook != nil && s.GitHubWebhook.Resync != nil && s.GitHubWebhook.Resync.Interval == nil {
		s.GitHubWebhook.Resync.Interval = &metav1.Duration{Duration: defaultResyncInterval}
	}
	switch {
	case s.GitHub != nil:
		poll(&s.GitHub.PollInterval)
	case s.GitLab != nil:
		poll(&s.GitLab.PollInterval)
	case s.Buildkite != nil:
		poll(&s.Buildkite.PollInterval)
	case s.Prometheus != nil:
		poll(&s.Prometheus.PollInterval)
		if s.Prometheus.State == "" {
			s.Prometheus.State = SourceStateQueued
		}
	}
}

// kind names the one source kind that is set ("" when none is).
func (s *Source) kind() string {
	kinds := s.kinds()
	if len(kinds) == 0 {
		return ""
	}
	return kinds[0]
}

func (s *Source) kinds() []string {
	var kinds []string
	add := func(set bool, name string) {
		if set {
			kinds = append(kinds, name)
		}
	}
	add(s.GitHubWebhook != nil, "githubWebhook")
	add(s.GitHub != nil, "github")
	add(s.ARC != nil, "arc")
	add(s.GitLab != nil, "gitlab")
	add(s.Buildkite != nil, "buildkite")
	add(s.Prometheus != nil, "prometheus")
	return kinds
}

// defaultCacheRestore fills the restore class and budget, and derives engine.gc.maxUsedSpace
// from the budget when the pool asks for it. Idempotent: a derived size equals itself.
func defaultCacheRestore(p *Pool) {
	c := &p.Cache
	if c.RestoreStorageClassName == "" {
		c.RestoreStorageClassName = c.StorageClassName
	}
	r := &c.Restore
	if r.Throughput == nil {
		r.Throughput = ptr.To(resource.MustParse(DefaultRestoreThroughput))
	}
	if r.MaxWait == nil {
		r.MaxWait = &metav1.Duration{Duration: DefaultRestoreMaxWait}
	}
	if r.ProvisioningSlack == nil {
		r.ProvisioningSlack = &metav1.Duration{Duration: DefaultRestoreProvisioningSlack}
	}
	if r.WhenJobsWait == "" {
		r.WhenJobsWait = DefaultWhenJobsWait
	}
	if !c.Enabled || !r.SizeGCToBudget || p.Engine.ExistingDaemonSet != nil {
		return
	}
	size := r.GCMaxUsedSpace()
	if size == "" {
		return // an invalid budget, reported by validation
	}
	if p.Engine.GC == nil {
		p.Engine.GC = &EngineGC{}
	}
	if p.Engine.GC.MaxUsedSpace == "" {
		p.Engine.GC.MaxUsedSpace = size
	}
}
