package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/controller/scaling/simulate"
)

func simulateCommand() *cobra.Command {
	c := simulate.DefaultConfig()
	var traces, windows []string
	busyBudget := config.DefaultBusyBudget
	// The spare flags start from the config's defaults, as a pool that sets nothing gets them.
	spare := config.DefaultSpare()
	burst := config.DefaultBurstHold()
	whenJobsWait := config.DefaultWhenJobsWait
	cmd := &cobra.Command{
		Use:   "simulate --trace FILE",
		Short: "Replay a CI job trace and compare Karpenter alone, Karpenter with cache restores, a static warm pool and warmpool",
		Long: `simulate replays a CI job trace (CSV: arrival_seconds,duration_seconds,pool) against a model of
a Karpenter NodePool and prints, for Karpenter alone, Karpenter with warmpool's cache restore but
no headroom, a static warm pool and warmpool's scaling policy, how long jobs waited for a node
(p50, p95, max, mean), the share of jobs that waited for a boot and that ran on a cold cache, the
node-hours they cost, and the job time lost (waits plus --cold-cost per cold start). Each pool in
the trace is simulated on its own and the results are summed. The model is deterministic: the same
trace and flags print the same table.

The cache: a node of Karpenter alone (or one Karpenter adds above a static pool) starts cold and is
warm once a job finished on it; a job on a cold cache runs --cold-cost longer. With warmpool's
cache restore a new node restores the pool's cache for --restore after it boots, taking no job
meanwhile, and is warm; a node that ran a job is saved for --save when Karpenter removes it. A
static pool's nodes and warmpool's warm floor ran before the trace: warm. --when-jobs-wait is the
config's cache.restore.whenJobsWait: cold (its default) starts a new node cold at once when jobs
already wait that the usable nodes cannot take, restore restores it anyway.

Every policy runs the same NodePool: consolidationPolicy WhenEmpty, --consolidate-after, and
Karpenter's validation delay before it deletes an empty node. warmpool adds its placeholder
pods and its queue-aware budget, which blocks that consolidation while jobs are queued or running
or a warm window is open. --busy-budget surplus models scaling.busyBudget surplus instead: while
busy, Karpenter may consolidate the nodes beyond warmpool's desired count.

--trace may be given more than once; each trace gets its own table. --warm-window takes a warm
window as the config's scaling.warmWindows entries are written, and may be repeated; the trace's
t=0 is --start.`,
		Example: `  warmpool simulate --trace deploy/traces/weekday.csv
  warmpool simulate --trace deploy/traces/spiky.csv --jobs-per-node 4 --warm-min 2 --max 50
  warmpool simulate --trace deploy/traces/weekday.csv \
    --warm-window '{schedule: "0 8 * * mon-fri", duration: 10h, minimum: 20, timeZone: Europe/Berlin}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(traces) == 0 {
				return errors.New("--trace is required")
			}
			ws, err := parseWarmWindows(windows)
			if err != nil {
				return err
			}
			c.Policy.WarmWindows = ws
			switch busyBudget {
			case config.BusyBudgetBlock, config.BusyBudgetSurplus:
				c.SurplusBudget = busyBudget == config.BusyBudgetSurplus
			default:
				return fmt.Errorf("--busy-budget %q: must be %q or %q", busyBudget, config.BusyBudgetBlock, config.BusyBudgetSurplus)
			}
			// The config's own checks, with the config's field names.
			if errs := config.ValidateSpareSettings(spare, field.NewPath("scaling", "spare")); len(errs) > 0 {
				return fmt.Errorf("spare flags: %w", errs.ToAggregate())
			}
			c.Policy.Spare = policy.SpareFromConfig(spare)
			if errs := config.ValidateBurstHoldSettings(burst, field.NewPath("scaling", "burstHold")); len(errs) > 0 {
				return fmt.Errorf("burst hold flags: %w", errs.ToAggregate())
			}
			c.Policy.BurstHold = policy.BurstHoldFromConfig(burst)
			switch whenJobsWait {
			case config.WhenJobsWaitCold, config.WhenJobsWaitRestore:
				c.ColdWhenWaiting = whenJobsWait == config.WhenJobsWaitCold
			default:
				return fmt.Errorf("--when-jobs-wait %q: must be %q or %q", whenJobsWait, config.WhenJobsWaitCold, config.WhenJobsWaitRestore)
			}
			if err := c.Validate(); err != nil {
				return err
			}
			for i, file := range traces {
				jobs, err := readTrace(file)
				if err != nil {
					return err
				}
				rep, err := simulate.Run(jobs, c)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if i > 0 {
					fmt.Fprintln(out)
				}
				fmt.Fprintf(out, "trace %s (pools: %s)\n", file, strings.Join(rep.Pools, ", "))
				if err := rep.WriteTable(out); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&traces, "trace", nil, "CSV job trace to replay (repeatable)")
	f.DurationVar(&c.Boot, "boot", c.Boot, "time from requesting a node to Ready")
	f.IntVar(&c.StaticNodes, "static", c.StaticNodes, "static pool size per pool (-1: the p95 of concurrent demand in nodes)")
	f.IntVar(&c.JobsPerNode, "jobs-per-node", c.JobsPerNode, "jobs one node runs at once")
	f.IntVar(&c.Policy.WarmMinimum, "warm-min", c.Policy.WarmMinimum, "warmpool's warm minimum in nodes")
	f.IntVar(&c.MaxNodes, "max", c.MaxNodes, "node limit per pool for every policy (0: none)")
	f.DurationVar(&c.ConsolidateAfter, "consolidate-after", c.ConsolidateAfter, "the NodePool's consolidateAfter (WhenEmpty), for every policy")
	f.DurationVar(&c.ValidationDelay, "validation-delay", c.ValidationDelay, "Karpenter's wait between picking an empty node and deleting it")
	f.StringArrayVar(&windows, "warm-window", nil, `warmpool warm window, as in the config: '{schedule: "0 8 * * mon-fri", duration: 10h, minimum: 3, timeZone: Europe/Berlin}' (repeatable)`)
	f.Var(timeValue{&c.Start}, "start", "wall-clock time of the trace's t=0 (RFC 3339), which warm windows are read against")
	f.DurationVar(&c.Interval, "interval", c.Interval, "how often warmpool evaluates its policy")
	f.StringVar(&busyBudget, "busy-budget", busyBudget, "warmpool's scaling.busyBudget: block (no consolidation while busy) or surplus (only nodes beyond desired)")
	f.StringVar(&spare.Mode, "spare", spare.Mode, "warmpool's scaling.spare.mode: adaptive, constant or off")
	f.IntVar(spare.Probability, "spare-probability", *spare.Probability, "scaling.spare.probability: percent chance the jobs queued during one boot all find a Ready node")
	f.IntVar(spare.Max, "spare-max", *spare.Max, "scaling.spare.max: the most spare nodes")
	f.IntVar(&spare.Constant, "spare-constant", spare.Constant, "scaling.spare.constant: spare nodes kept whatever the arrivals")
	f.DurationVar(&spare.Window.Duration, "spare-window", spare.Window.Duration, "scaling.spare.window: how far back arrivals are counted")
	f.DurationVar(&spare.BootTime.Duration, "spare-boot-time", spare.BootTime.Duration, "scaling.spare.bootTime: launch, Ready and cache restore, as the policy assumes it")
	f.IntVar(burst.Percent, "burst-hold-percent", *burst.Percent, "scaling.burstHold.percent: percent of the recent peak demand kept after a burst (0: off)")
	f.DurationVar(&burst.Window.Duration, "burst-hold-window", burst.Window.Duration, "scaling.burstHold.window: how long a peak is remembered")
	f.DurationVar(&c.ColdCost, "cold-cost", c.ColdCost, "extra build time of a job on a cold cache")
	f.DurationVar(&c.Restore, "restore", c.Restore, "time a new node of a restoring strategy takes, after booting, to restore the pool's cache")
	f.DurationVar(&c.Save, "save", c.Save, "time warmpool's save keeps a node Karpenter removes, when it ran a job")
	f.StringVar(&whenJobsWait, "when-jobs-wait", whenJobsWait, "cache.restore.whenJobsWait: cold (a new node jobs already wait for skips its restore) or restore")
	return cmd
}

func readTrace(file string) ([]simulate.Job, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("reading trace, %w", err)
	}
	defer f.Close()
	jobs, err := simulate.ReadTrace(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return jobs, nil
}

// parseWarmWindows reads each --warm-window as a YAML mapping with the fields of a config warm
// window, as strictly as the config: unknown, misspelt or duplicate fields are errors.
func parseWarmWindows(specs []string) ([]config.WarmWindow, error) {
	out := make([]config.WarmWindow, 0, len(specs))
	for _, spec := range specs {
		var w config.WarmWindow
		js, err := yaml.YAMLToJSONStrict([]byte(spec))
		if err == nil {
			var strict []error
			strict, err = sigsjson.UnmarshalStrict(js, &w, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
			err = errors.Join(append([]error{err}, strict...)...)
		}
		if err != nil {
			return nil, fmt.Errorf("--warm-window %q: %w", spec, err)
		}
		out = append(out, w)
	}
	// The policy's own checks, before any trace is read; warmWindows[i] is the i-th flag.
	if errs := (policy.Config{JobsPerNode: 1, WarmWindows: out}).Validate(nil); len(errs) > 0 {
		return nil, fmt.Errorf("--warm-window (warmWindows[i] is the flag given i-th, from 0): %w", errs.ToAggregate())
	}
	return out, nil
}

// timeValue is a pflag.Value for an RFC 3339 time.
type timeValue struct{ t *time.Time }

func (v timeValue) String() string {
	if v.t == nil || v.t.IsZero() {
		return ""
	}
	return v.t.Format(time.RFC3339)
}

func (v timeValue) Set(s string) error {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return fmt.Errorf("want an RFC 3339 time such as 2026-03-02T00:00:00Z: %w", err)
	}
	*v.t = t
	return nil
}

func (timeValue) Type() string { return "time" }
