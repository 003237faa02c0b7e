// Package config holds warmpool's configuration: the WarmpoolConfig document users write in the
// ConfigMap key config.yaml, its strict decoding, defaults and validation. It is pure: no client
// calls, so `warmpool render`, the controller and the tests all read config the same way.
package config

import (
	"strconv"

	awsv1 "github.com/aws/karpenter-provider-aws/pkg/apis/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/volumes/storagecheck"
)

const (
	// APIVersion and Kind identify the document; anything else is rejected so a future format
	// change can never be misread as this one.
	APIVersion = "warmpool.io/v1alpha1"
	Kind       = "WarmpoolConfig"

	// ConfigMapKey is the key of the ConfigMap that holds the document.
	ConfigMapKey = "config.yaml"
)

// Config is the whole WarmpoolConfig document.
type Config struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`

	// NodeClass holds the cluster-wide EC2 settings every pool's EC2NodeClass shares.
	NodeClass NodeClass `json:"nodeClass"`
	// Discovery checks pools against the instance types EC2 really offers.
	Discovery Discovery `json:"discovery,omitempty"`
	// Webhook is the GitHub workflow_job endpoint shared by every pool's githubWebhook source.
	Webhook Webhook `json:"webhook,omitempty"`
	// Pools are the runner pools; each becomes one NodePool and one EC2NodeClass.
	Pools []Pool `json:"pools"`
}

// NodeClass is the cluster-wide part of every generated EC2NodeClass. The selector, kubelet and
// metadata shapes are Karpenter's own types, so they read exactly like an EC2NodeClass.
type NodeClass struct {
	// Role is the IAM role for nodes (Karpenter creates the instance profile). Exactly one of
	// Role and InstanceProfile is required.
	Role string `json:"role,omitempty"`
	// InstanceProfile is an existing IAM instance profile for nodes.
	InstanceProfile string `json:"instanceProfile,omitempty"`
	// AMIAlias selects the AMI, e.g. "al2023@latest" or "bottlerocket@v1.31.0".
	AMIAlias                   string                            `json:"amiAlias,omitempty"`
	SubnetSelectorTerms        []awsv1.SubnetSelectorTerm        `json:"subnetSelectorTerms"`
	SecurityGroupSelectorTerms []awsv1.SecurityGroupSelectorTerm `json:"securityGroupSelectorTerms"`
	// Tags are added to every instance, volume and launch template Karpenter creates.
	Tags            map[string]string           `json:"tags,omitempty"`
	RootVolume      RootVolume                  `json:"rootVolume,omitempty"`
	MetadataOptions *awsv1.MetadataOptions      `json:"metadataOptions,omitempty"`
	Kubelet         *awsv1.KubeletConfiguration `json:"kubelet,omitempty"`
	// UserData is merged by Karpenter with its own bootstrap (MIME for AL2023, TOML for Bottlerocket).
	UserData string `json:"userData,omitempty"`
}

// RootVolume is the EBS root volume. The NVMe instance store holds the cache, so this stays small.
type RootVolume struct {
	Size       *resource.Quantity `json:"size,omitempty"`
	Type       string             `json:"type,omitempty"`
	IOPS       *int64             `json:"iops,omitempty"`
	Throughput *int64             `json:"throughput,omitempty"`
	Encrypted  *bool              `json:"encrypted,omitempty"`
	KMSKeyID   string             `json:"kmsKeyID,omitempty"`
	DeviceName string             `json:"deviceName,omitempty"`
}

// Discovery configures the EC2 DescribeInstanceTypes check of every pool.
type Discovery struct {
	// Enabled turns the check on; off, pools are trusted as written.
	Enabled bool `json:"enabled,omitempty"`
	// Region defaults to the SDK's usual resolution (AWS_REGION, IMDS).
	Region string `json:"region,omitempty"`
	// Endpoint overrides the EC2 endpoint (VPC endpoints, tests).
	Endpoint string `json:"endpoint,omitempty"`
	// RefreshInterval is how long a discovered list is trusted before EC2 is asked again.
	RefreshInterval *metav1.Duration `json:"refreshInterval,omitempty"`
}

// Webhook is the GitHub workflow_job webhook endpoint.
type Webhook struct {
	// Path the manager serves webhooks on.
	Path string `json:"path,omitempty"`
	// SecretRef names the Secret key that holds the webhook's HMAC secret.
	SecretRef *SecretKeyRef `json:"secretRef,omitempty"`
}

// SecretKeyRef names one key of a Secret in warmpool's namespace. Credentials are only ever
// referenced, never written inline, so the ConfigMap can be committed to git.
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// Pool is one runner pool: the nodes its CI jobs and Dagger engines run on.
type Pool struct {
	// Name is a DNS label; the NodePool is named "warmpool-<name>".
	Name string `json:"name"`
	// Architectures: amd64 and/or arm64.
	Architectures []string `json:"architectures,omitempty"`
	// Instance narrows the instance types beyond the NVMe requirement.
	Instance InstanceSelector `json:"instance,omitempty"`
	NVMe     NVMe             `json:"nvme"`
	// CapacityTypes: on-demand, spot and/or reserved.
	CapacityTypes []string `json:"capacityTypes,omitempty"`
	Limits        Limits   `json:"limits,omitempty"`
	// Weight orders NodePools for Karpenter (1-100, higher first).
	Weight *int32 `json:"weight,omitempty"`
	// Taint keeps everything but runners off the pool's nodes. Default key warmpool.io/runner,
	// value the pool name, effect NoSchedule.
	Taint *corev1.Taint `json:"taint,omitempty"`
	// Labels are extra labels on the pool's nodes.
	Labels                 map[string]string        `json:"labels,omitempty"`
	ExpireAfter            *karpv1.NillableDuration `json:"expireAfter,omitempty"`
	TerminationGracePeriod *metav1.Duration         `json:"terminationGracePeriod,omitempty"`
	Disruption             Disruption               `json:"disruption,omitempty"`
	Engine                 Engine                   `json:"engine,omitempty"`
	Cache                  Cache                    `json:"cache,omitempty"`
	Queue                  Queue                    `json:"queue,omitempty"`
	Scaling                Scaling                  `json:"scaling,omitempty"`
}

// InstanceSelector is the in / not-in filter on Karpenter's well-known instance labels.
type InstanceSelector struct {
	Categories  InNotIn[string] `json:"categories,omitempty"`
	Families    InNotIn[string] `json:"families,omitempty"`
	Generations InNotIn[int]    `json:"generations,omitempty"`
	// MinGeneration admits generations >= this (e.g. 6 for c6id and newer).
	MinGeneration int `json:"minGeneration,omitempty"`
}

// InNotIn is a pair of include / exclude lists; empty means no constraint.
type InNotIn[T comparable] struct {
	In    []T `json:"in,omitempty"`
	NotIn []T `json:"notIn,omitempty"`
}

// NVMe is the local instance-store requirement that makes a runner node fast.
type NVMe struct {
	// MinSizeGB admits instance types with more than this much NVMe instance store in total.
	MinSizeGB int64 `json:"minSizeGB"`
}

// Limits cap what the pool may provision in total.
type Limits struct {
	CPU    *resource.Quantity `json:"cpu,omitempty"`
	Memory *resource.Quantity `json:"memory,omitempty"`
	Nodes  *int64             `json:"nodes,omitempty"`
}

// Disruption is the pool's consolidation behaviour and base budgets. While work is queued,
// warmpool adds a blocking budget on top of these (see Scaling).
type Disruption struct {
	ConsolidationPolicy karpv1.ConsolidationPolicy `json:"consolidationPolicy,omitempty"`
	ConsolidateAfter    *karpv1.NillableDuration   `json:"consolidateAfter,omitempty"`
	Budgets             []karpv1.Budget            `json:"budgets,omitempty"`
}

// Engine is the Dagger Engine DaemonSet that runs on the pool's nodes.
type Engine struct {
	Image string `json:"image,omitempty"`
	// Version is the engine release (default engine.Current). It must be in warmpool's table
	// of engine contracts (volumes/engine), which says how a clean exit shows on disk, unless
	// Contract names a row.
	Version string `json:"version,omitempty"`
	// Contract names a row of that table (e.g. "v0.21") for a release newer than the table,
	// which the user declares to behave like that row. Empty: the row of Version.
	Contract string `json:"contract,omitempty"`
	// HostPath is the engine's data dir on the node. It must live on the NVMe RAID0 mount
	// (/mnt/k8s-disks/0), not on the EBS root volume.
	HostPath string `json:"hostPath,omitempty"`
	// RunPath is the host dir that holds the engine's unix socket for runners.
	RunPath   string                       `json:"runPath,omitempty"`
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	// TerminationGracePeriodSeconds is the engine pod's grace period: the preStop hook's wait
	// for clients to leave (DrainSeconds), then StopSeconds for the engine's own stop, then
	// 30 s for SIGTERM delivery and exit. It must be >= StopSeconds + 30.
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`
	// StopSeconds is the time the engine's own graceful stop needs once no client is attached
	// (a prune, then persisting the cache: it grows with the cache). warmpool reserves it at
	// the end of the grace period by ending its drain wait before it; the engine does not
	// bound its stop (no release does while clients are attached), so an engine that needs
	// longer is SIGKILLed and its cache lost. Default 300.
	StopSeconds *int64    `json:"stopSeconds,omitempty"`
	GC          *EngineGC `json:"gc,omitempty"`
	// ExistingDaemonSet points at an engine DaemonSet the user runs; warmpool then checks it
	// instead of generating one.
	ExistingDaemonSet *metav1.LabelSelector `json:"existingDaemonSet,omitempty"`
}

// DrainSeconds is how long warmpool's preStop hook may wait for clients to leave within the
// engine's grace period: what is left after StopSeconds for the engine's own stop and
// EngineExitSeconds for SIGTERM delivery and exit, never negative. Call it on a defaulted
// config (Default); an unset field counts as its default.
func (e *Engine) DrainSeconds() int64 {
	grace := int64(DefaultEngineGraceSeconds)
	if e.TerminationGracePeriodSeconds != nil {
		grace = *e.TerminationGracePeriodSeconds
	}
	return max(0, grace-e.StopSecondsOrDefault()-EngineExitSeconds)
}

// StopSecondsOrDefault is StopSeconds, or its default when unset.
func (e *Engine) StopSecondsOrDefault() int64 {
	if e.StopSeconds != nil {
		return *e.StopSeconds
	}
	return DefaultEngineStopSeconds
}

// EngineGC is the engine's cache garbage collection (engine.json "gc").
//
// Each size is what the engine's engine.json accepts (engine/config DiskSpace, decoded by
// buildkitd config's UnmarshalText): "<int>%" of the node's disk, or a size parsed by
// docker/go-units RAMInBytes, in binary units ("100GB" and "100g" are 100 GiB, "512m" is
// 512 MiB, a bare number is bytes).
type EngineGC struct {
	MaxUsedSpace  string `json:"maxUsedSpace,omitempty"`
	ReservedSpace string `json:"reservedSpace,omitempty"`
	MinFreeSpace  string `json:"minFreeSpace,omitempty"`
}

// Cache is the engine cache's life beyond one node: saved to a snapshot when a node goes,
// restored on the next node.
type Cache struct {
	Enabled bool `json:"enabled,omitempty"`
	// StorageClassName is the class of the save volumes (empty: the cluster's default class).
	// It must be a CSI class (not the in-tree kubernetes.io/aws-ebs), of the same driver as
	// SnapshotClassName, and must not carry the EBS CSI parameter volumeInitializationRate:
	// a save volume may be empty, and EC2 rejects that parameter for a volume made without a
	// snapshot (aws-ebs-csi-driver issue #2691).
	StorageClassName string `json:"storageClassName,omitempty"`
	// RestoreStorageClassName is the class of the restore volumes, which are always made from
	// a snapshot: the place for volumeInitializationRate or a faster volume type. Default:
	// StorageClassName.
	RestoreStorageClassName string             `json:"restoreStorageClassName,omitempty"`
	SnapshotClassName       string             `json:"snapshotClassName,omitempty"`
	Size                    *resource.Quantity `json:"size,omitempty"`
	Retention               Retention          `json:"retention,omitempty"`
	// Restore is the time budget of a restore onto a new node.
	Restore CacheRestore `json:"restore,omitempty"`
	// FastSnapshotRestore, when set, enables EBS Fast Snapshot Restore on the newest snapshot of
	// each architecture and engine version (and disables it on the one it replaces), so a new
	// node restores at full speed at once. AWS bills it per snapshot and zone-hour. The EC2
	// region and endpoint are discovery's. Off by default.
	FastSnapshotRestore *FastSnapshotRestore `json:"fastSnapshotRestore,omitempty"`
}

// CacheRestore sizes a restore to a time budget. A new node waits for its restore with its
// startup taint on, which Karpenter counts as capacity on the way (runners wait for it), and as
// the replacement in a drift or replace-consolidation command it must initialize within about
// 10 minutes of the command or Karpenter rolls the command back. So a restore is attempted only
// when ProvisioningSlack + size/Throughput fits in MaxWait; otherwise the node starts cold at
// once, with a Warning that names the numbers.
type CacheRestore struct {
	// Throughput is the read rate a restore is expected to reach, in bytes per second (a
	// quantity such as "125Mi"). Default 125Mi: gp3's baseline. A volume made from a snapshot
	// loads lazily from S3 (tens of MB/s) unless the restore class sets
	// volumeInitializationRate (100-300 MiB/s) or the snapshot has Fast Snapshot Restore.
	Throughput *resource.Quantity `json:"throughput,omitempty"`
	// MaxWait caps a restore, from the choice of its snapshot to the node's release. Default
	// 7m: with 2-3 minutes of launch, boot and registration it fits Karpenter's 10 minute
	// window for a replacement node to initialize.
	MaxWait *metav1.Duration `json:"maxWait,omitempty"`
	// ProvisioningSlack is the part of the budget that is not copying: the CSI node plugin
	// registering on the node, the volume created from the snapshot and attached, the restore
	// pod started. Default 2m.
	ProvisioningSlack *metav1.Duration `json:"provisioningSlack,omitempty"`
	// SizeGCToBudget derives engine.gc.maxUsedSpace from the budget, Throughput x (MaxWait -
	// ProvisioningSlack), so the engine keeps its cache small enough to be restored in time.
	// It cannot be combined with an explicit engine.gc.maxUsedSpace.
	SizeGCToBudget bool `json:"sizeGCToBudget,omitempty"`
	// WhenJobsWait is what a new node does when the pool has jobs waiting that its usable
	// nodes cannot take: cold (default) releases it at once with a cold cache, since a restore
	// would keep those jobs waiting for it too; restore restores it anyway.
	WhenJobsWait string `json:"whenJobsWait,omitempty"`
}

// Budget is the pool's restore budget, for volumes/storagecheck. Call it on a defaulted config.
func (r *CacheRestore) Budget() storagecheck.Budget {
	b := storagecheck.Budget{}
	if r.Throughput != nil {
		b.Throughput = r.Throughput.Value()
	}
	if r.MaxWait != nil {
		b.MaxWait = r.MaxWait.Duration
	}
	if r.ProvisioningSlack != nil {
		b.Slack = r.ProvisioningSlack.Duration
	}
	return b
}

// GCMaxUsedSpace is the engine.gc.maxUsedSpace SizeGCToBudget derives: the bytes the budget
// can restore, in whole MiB as the engine reads them ("37500MiB"); "" when the budget restores
// nothing (an invalid budget).
func (r *CacheRestore) GCMaxUsedSpace() string {
	mib := r.Budget().MaxBytes() >> 20
	if mib <= 0 {
		return ""
	}
	return strconv.FormatInt(mib, 10) + "MiB"
}

// FastSnapshotRestore lists the zones fast restores are enabled in (the pool's subnets' zones).
type FastSnapshotRestore struct {
	AvailabilityZones []string `json:"availabilityZones"`
}

// Retention bounds the snapshots kept per pool, architecture and engine version.
type Retention struct {
	Keep   int              `json:"keep,omitempty"`
	MaxAge *metav1.Duration `json:"maxAge,omitempty"`
}

// Queue lists where the pool's CI jobs are counted.
type Queue struct {
	Sources []Source `json:"sources,omitempty"`
}

// Source is one queue source; exactly one of its kinds is set.
type Source struct {
	// Name identifies the source in metrics; defaults to its kind.
	Name          string               `json:"name,omitempty"`
	GitHubWebhook *GitHubWebhookSource `json:"githubWebhook,omitempty"`
	GitHub        *GitHubSource        `json:"github,omitempty"`
	ARC           *ARCSource           `json:"arc,omitempty"`
	GitLab        *GitLabSource        `json:"gitlab,omitempty"`
	Buildkite     *BuildkiteSource     `json:"buildkite,omitempty"`
	Prometheus    *PrometheusSource    `json:"prometheus,omitempty"`
}

// GitHubWebhookSource counts workflow_job deliveries whose labels include all of Labels.
type GitHubWebhookSource struct {
	Labels []string `json:"labels"`
	// Resync, when set, corrects the counts from the GitHub REST API on an interval, so lost
	// deliveries (an outage, a restart of warmpool) do not skew them for hours.
	Resync *GitHubResync `json:"resync,omitempty"`
}

// GitHubResync lists a webhook source's queued and in-progress jobs through the REST API. It
// must cover every repository whose jobs the webhook counts: a job it does not list is dropped.
type GitHubResync struct {
	// URL is the API base URL; empty means api.github.com (set it for GitHub Enterprise Server).
	URL   string   `json:"url,omitempty"`
	Owner string   `json:"owner"`
	Repos []string `json:"repos,omitempty"`
	// TokenSecretRef holds a PAT; or App for GitHub App auth.
	TokenSecretRef *SecretKeyRef    `json:"tokenSecretRef,omitempty"`
	App            *GitHubAppAuth   `json:"app,omitempty"`
	Interval       *metav1.Duration `json:"interval,omitempty"`
}

// GitHubSource polls the GitHub REST API for queued and in-progress jobs.
type GitHubSource struct {
	// URL is the API base URL; empty means api.github.com (set it for GitHub Enterprise Server).
	URL    string   `json:"url,omitempty"`
	Owner  string   `json:"owner"`
	Repos  []string `json:"repos,omitempty"`
	Labels []string `json:"labels"`
	// TokenSecretRef holds a PAT; or App for GitHub App auth.
	TokenSecretRef *SecretKeyRef    `json:"tokenSecretRef,omitempty"`
	App            *GitHubAppAuth   `json:"app,omitempty"`
	PollInterval   *metav1.Duration `json:"pollInterval,omitempty"`
}

// GitHubAppAuth authenticates as a GitHub App installation.
type GitHubAppAuth struct {
	AppID               int64        `json:"appID"`
	InstallationID      int64        `json:"installationID"`
	PrivateKeySecretRef SecretKeyRef `json:"privateKeySecretRef"`
}

// ARCSource reads Actions Runner Controller scale sets in the cluster.
type ARCSource struct {
	Namespace    string `json:"namespace"`
	ScaleSetName string `json:"scaleSetName"`
}

// GitLabSource polls GitLab for pending and running jobs.
type GitLabSource struct {
	URL            string           `json:"url,omitempty"`
	ProjectIDs     []string         `json:"projectIDs,omitempty"`
	GroupID        string           `json:"groupID,omitempty"`
	Tags           []string         `json:"tags,omitempty"`
	TokenSecretRef SecretKeyRef     `json:"tokenSecretRef"`
	PollInterval   *metav1.Duration `json:"pollInterval,omitempty"`
}

// BuildkiteSource polls the Buildkite agent metrics API for one queue.
type BuildkiteSource struct {
	URL            string           `json:"url,omitempty"`
	Queue          string           `json:"queue"`
	TokenSecretRef SecretKeyRef     `json:"tokenSecretRef"`
	PollInterval   *metav1.Duration `json:"pollInterval,omitempty"`
}

// PrometheusSource runs a PromQL query that returns one number.
type PrometheusSource struct {
	URL   string `json:"url"`
	Query string `json:"query"`
	// State says what the number counts: queued (default) or running jobs.
	State        string           `json:"state,omitempty"`
	PollInterval *metav1.Duration `json:"pollInterval,omitempty"`
}

// Scaling turns queue depth into desired nodes.
type Scaling struct {
	// JobsPerNode is how many CI jobs one node runs at once; 0 derives it from RunnerRequests
	// and the node's allocatable resources (1 when neither is known).
	JobsPerNode int `json:"jobsPerNode,omitempty"`
	// RunnerRequests are one runner pod's resource requests, for deriving JobsPerNode.
	RunnerRequests corev1.ResourceList `json:"runnerRequests,omitempty"`
	// WarmMinimum nodes are kept whatever the queue says.
	WarmMinimum int          `json:"warmMinimum,omitempty"`
	WarmWindows []WarmWindow `json:"warmWindows,omitempty"`
	// MaxNodes caps desired nodes; defaults to limits.nodes when set.
	MaxNodes               *int             `json:"maxNodes,omitempty"`
	ScaleDownStabilization *metav1.Duration `json:"scaleDownStabilization,omitempty"`
	ScaleDownStep          int              `json:"scaleDownStep,omitempty"`
	// Headroom selects the actuator: placeholder pods (default) or a Karpenter CapacityBuffer.
	Headroom string `json:"headroom,omitempty"`
	// BusyBudget is the budget added while the pool is busy: block (default) stops all Empty
	// and Underutilized consolidation; surplus lets Karpenter remove the nodes beyond desired.
	BusyBudget string `json:"busyBudget,omitempty"`
	// Spare keeps idle nodes Ready above the queue's demand (see Spare).
	Spare Spare `json:"spare,omitzero"`
	// BurstHold keeps a share of a recent burst's nodes for the next one (see BurstHold).
	BurstHold BurstHold `json:"burstHold,omitzero"`
}

// BurstHold keeps, after a burst, Percent% of the highest queue demand (in nodes) of the last
// Window. Defaults and validation: validate_burst.go.
type BurstHold struct {
	// Percent is the share of the peak kept; 0 turns the hold off.
	Percent *int `json:"percent,omitempty"`
	// Window is how long a peak is remembered.
	Window *metav1.Duration `json:"window,omitempty"`
}

// Spare is the pool's headroom above demand: idle nodes kept Ready for the jobs that are queued
// while a new node boots. Defaults and validation: validate_spare.go.
type Spare struct {
	// Mode is adaptive (default: sized from the observed arrival rate, at least Constant),
	// constant (Constant nodes) or off (none, warm windows' spare included).
	Mode string `json:"mode,omitempty"`
	// Probability is the chance, in percent, that the jobs queued during one BootTime all find
	// a Ready node (adaptive only).
	Probability *int `json:"probability,omitempty"`
	// BootTime is how long a new node takes until a job runs on it: launch, Ready, and the
	// cache restore (adaptive only).
	BootTime *metav1.Duration `json:"bootTime,omitempty"`
	// Window is how far back job arrivals are counted for the rate (adaptive only).
	Window *metav1.Duration `json:"window,omitempty"`
	// Constant idle nodes are kept whatever the arrivals.
	Constant int `json:"constant,omitempty"`
	// Max caps the spare, whatever sets it; maxNodes still caps the pool.
	Max *int `json:"max,omitempty"`
	// TimeOfWeek also learns the arrival rate of each hour of the week and keeps the spare for
	// the coming hour's learned rate when it is above the recent one (adaptive only).
	TimeOfWeek bool `json:"timeOfWeek,omitempty"`
}

// WarmWindow raises the warm minimum during a cron-scheduled window (e.g. office hours).
type WarmWindow struct {
	Schedule string          `json:"schedule"`
	Duration metav1.Duration `json:"duration"`
	Minimum  int             `json:"minimum"`
	TimeZone string          `json:"timeZone,omitempty"`
	// Spare is the spare (idle nodes above demand) kept at least while the window is open.
	Spare int `json:"spare,omitempty"`
}
