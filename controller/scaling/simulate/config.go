package simulate

import (
	"errors"
	"fmt"
	"time"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/scaling/policy"
)

// Strategy is one way of running a pool.
type Strategy string

const (
	// KarpenterAlone provisions for pending jobs and consolidates empty nodes, nothing more:
	// every new node starts with a cold cache.
	KarpenterAlone Strategy = "karpenter"
	// KarpenterRestore is Karpenter alone plus warmpool's cache save and restore, without its
	// headroom: every new node restores the pool's cache before it takes a job.
	KarpenterRestore Strategy = "karpenter+restore"
	// StaticPool keeps a fixed number of nodes up, with Karpenter above them.
	StaticPool Strategy = "static"
	// Warmpool runs warmpool's scaling policy, with Karpenter underneath.
	Warmpool Strategy = "warmpool"
)

// Strategies lists every Strategy in the order a Report shows them.
func Strategies() []Strategy {
	return []Strategy{KarpenterAlone, KarpenterRestore, StaticPool, Warmpool}
}

// AutoStatic as Config.StaticNodes sizes each pool's static pool at the 95th percentile of its
// concurrent demand (see DemandP95).
const AutoStatic = -1

// unlimited stands for "no node limit"; small enough that policy arithmetic never overflows.
const unlimited = 1 << 30

// Config is one simulation's pool model. Start from DefaultConfig: a zero Config is not valid.
type Config struct {
	// Boot is how long a requested node takes to become Ready (>= 0).
	Boot time.Duration
	// JobsPerNode is how many jobs one node runs at once (>= 1).
	JobsPerNode int
	// ConsolidateAfter is the NodePool's consolidateAfter: how long a node must be empty before
	// Karpenter picks it for Empty consolidation (>= 0). Every strategy runs the same NodePool.
	ConsolidateAfter time.Duration
	// ValidationDelay is how long Karpenter waits between picking empty nodes and deleting them,
	// checking again that they are still empty and that the budget still allows it (>= 0;
	// Karpenter's commandValidationDelay is 15 s).
	ValidationDelay time.Duration
	// StaticNodes is the static pool's size per pool (>= 0), or AutoStatic. MaxNodes caps it.
	StaticNodes int
	// MaxNodes is the pool's node limit for every strategy (NodePool limits.nodes, and the
	// policy's MaxNodes); 0 means no limit.
	MaxNodes int
	// Interval is how often warmpool evaluates its policy (> 0).
	Interval time.Duration
	// Policy is warmpool's scaling policy. Its JobsPerNode and MaxNodes are ignored: the simulator
	// sets them from the fields above, so all three strategies run the same pool.
	Policy policy.Config
	// Start is the wall-clock time of the trace's t=0; warm windows are read against it.
	Start time.Time
	// SurplusBudget runs warmpool with scaling.busyBudget surplus: while busy, Karpenter may
	// consolidate the nodes beyond desired instead of none.
	SurplusBudget bool
	// Horizon is how long every strategy is billed for at least; 0 means until the last job would
	// end had nothing waited.
	Horizon time.Duration
	// ColdCost is the extra build time of a job that starts on a cold cache (>= 0): it runs that
	// much longer, on its node's bill too.
	ColdCost time.Duration
	// Restore is how long a new node of a strategy with warmpool's cache restore takes, after
	// Boot, to restore the pool's cache; the startup taint keeps jobs off it meanwhile (>= 0).
	Restore time.Duration
	// Save is how long warmpool's cache save keeps a node Karpenter removes, when the node ran a
	// job since its restore (>= 0): billed, but no job can use the node meanwhile.
	Save time.Duration
	// ColdWhenWaiting models cache.restore.whenJobsWait cold: a node that boots while jobs wait
	// that no usable node can take skips the restore and starts cold at once.
	ColdWhenWaiting bool
}

// DefaultColdCost, DefaultRestore and DefaultSave are the cache model's defaults: five minutes
// of extra build time on a cold Dagger cache; a two minute restore (a 35 GiB cache at the EBS
// CSI driver's best initialization rate, 300 MiB/s; see reference/eks-realities.md); a one
// minute save (an incremental copy onto a clone of the previous snapshot, then the snapshot cut).
const (
	DefaultColdCost = 5 * time.Minute
	DefaultRestore  = 2 * time.Minute
	DefaultSave     = time.Minute
)

// DefaultValidationDelay is Karpenter's commandValidationDelay (sigs.k8s.io/karpenter
// pkg/controllers/disruption, v1.14): an Empty consolidation command is re-validated this long
// after it was computed, and only then executed.
const DefaultValidationDelay = 15 * time.Second

// DefaultStart is Monday 2 March 2026, 00:00 UTC: a trace of a working day starts at midnight.
var DefaultStart = time.Date(2026, time.March, 2, 0, 0, 0, 0, time.UTC)

// DefaultConfig is what `warmpool simulate` runs without flags: nodes Ready 60 s after they are
// requested, one job per node, consolidationPolicy WhenEmpty with consolidateAfter 90 s and
// Karpenter's 15 s validation, a static pool at the p95 of demand, no node limit, the cache
// model's defaults (DefaultColdCost, DefaultRestore, DefaultSave; the restore skipped by a node
// a job already waits for, as cache.restore.whenJobsWait's default does), and warmpool
// evaluating every 10 s with the scaling defaults of a pool that configures nothing: no warm
// minimum, the policy's scale-down stabilization, config.DefaultSpare, config.DefaultBurstHold
// and config.DefaultBusyBudget.
func DefaultConfig() Config {
	return Config{
		Boot:             60 * time.Second,
		JobsPerNode:      1,
		ConsolidateAfter: 90 * time.Second,
		ValidationDelay:  DefaultValidationDelay,
		StaticNodes:      AutoStatic,
		Interval:         10 * time.Second,
		Policy: policy.Config{
			Spare:     policy.SpareFromConfig(config.DefaultSpare()),
			BurstHold: policy.BurstHoldFromConfig(config.DefaultBurstHold()),
		},
		SurplusBudget:   config.DefaultBusyBudget == config.BusyBudgetSurplus,
		Start:           DefaultStart,
		ColdCost:        DefaultColdCost,
		Restore:         DefaultRestore,
		Save:            DefaultSave,
		ColdWhenWaiting: config.DefaultWhenJobsWait == config.WhenJobsWaitCold,
	}
}

// Validate reports every problem in c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Boot < 0 {
		errs = append(errs, fmt.Errorf("boot %s must not be negative", c.Boot))
	}
	if c.JobsPerNode < 1 {
		errs = append(errs, fmt.Errorf("jobs per node %d must be at least 1", c.JobsPerNode))
	}
	if c.ConsolidateAfter < 0 {
		errs = append(errs, fmt.Errorf("consolidateAfter %s must not be negative", c.ConsolidateAfter))
	}
	if c.ValidationDelay < 0 {
		errs = append(errs, fmt.Errorf("validation delay %s must not be negative", c.ValidationDelay))
	}
	if c.StaticNodes < 0 && c.StaticNodes != AutoStatic {
		errs = append(errs, fmt.Errorf("static nodes %d must not be negative", c.StaticNodes))
	}
	if c.MaxNodes < 0 {
		errs = append(errs, fmt.Errorf("max nodes %d must not be negative (0 means no limit)", c.MaxNodes))
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("interval %s must be positive", c.Interval))
	}
	if c.Horizon < 0 {
		errs = append(errs, fmt.Errorf("horizon %s must not be negative", c.Horizon))
	}
	if c.ColdCost < 0 {
		errs = append(errs, fmt.Errorf("cold cost %s must not be negative", c.ColdCost))
	}
	if c.Restore < 0 {
		errs = append(errs, fmt.Errorf("restore %s must not be negative", c.Restore))
	}
	if c.Save < 0 {
		errs = append(errs, fmt.Errorf("save %s must not be negative", c.Save))
	}
	if c.Start.IsZero() {
		errs = append(errs, errors.New("start time must be set (policy evaluations need a non-zero Now)"))
	}
	if _, err := c.compilePolicy(); err != nil && c.JobsPerNode >= 1 && c.MaxNodes >= 0 {
		errs = append(errs, fmt.Errorf("warmpool policy: %w", err))
	}
	return errors.Join(errs...)
}

// nodeLimit is MaxNodes with 0 read as no limit.
func (c Config) nodeLimit() int {
	if c.MaxNodes == 0 {
		return unlimited
	}
	return c.MaxNodes
}

func (c Config) compilePolicy() (*policy.Policy, error) {
	pc := c.Policy
	pc.JobsPerNode = c.JobsPerNode
	pc.MaxNodes = c.nodeLimit()
	return policy.Compile(pc)
}
