package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"warmpool.io/warmpool/controller/scaling/simulate"
)

func simulateCommand() *cobra.Command {
	c := simulate.DefaultConfig()
	var traces []string
	cmd := &cobra.Command{
		Use:   "simulate --trace FILE",
		Short: "Replay a CI job trace and compare Karpenter alone, a static warm pool and warmpool",
		Long: `simulate replays a CI job trace (CSV: arrival_seconds,duration_seconds,pool) against a model of
a Karpenter NodePool and prints, for Karpenter alone, a static warm pool and warmpool's scaling
policy, how long jobs waited for a node (p50, p95, max), the node-hours they cost, and how many
jobs started on a node whose cache an earlier job had warmed. Each pool in the trace is simulated
on its own and the results are summed. The model is deterministic: the same trace and flags print
the same table.

--trace may be given more than once; each trace gets its own table.`,
		Example: `  warmpool simulate --trace deploy/traces/weekday.csv
  warmpool simulate --trace deploy/traces/spiky.csv --jobs-per-node 4 --warm-min 2 --max 50`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(traces) == 0 {
				return errors.New("--trace is required")
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
	f.DurationVar(&c.ConsolidateAfter, "consolidate-after", c.ConsolidateAfter, "Karpenter's consolidateAfter (WhenEmpty)")
	f.DurationVar(&c.Interval, "interval", c.Interval, "how often warmpool evaluates its policy")
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
