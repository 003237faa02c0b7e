package simulate

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is one strategy over every pool of a trace.
type Result struct {
	Strategy Strategy
	// Jobs is how many jobs ran (all of them: the simulation runs until the last one ends).
	Jobs int
	// Waits is each job's wait from arrival to start, in the order Run sorted the trace (by
	// arrival, file order among equal arrivals).
	Waits []time.Duration
	// WaitP50, WaitP95 and WaitMax summarize Waits (nearest-rank percentiles); WaitMean is
	// their mean.
	WaitP50, WaitP95, WaitMax, WaitMean time.Duration
	// NodeTime is the summed lifetime of every node, request to removal, within the billed span.
	NodeTime time.Duration
	// Starts and WarmStarts count job starts, and those on a warm cache (a node that had
	// completed a job, restored the pool's cache, or ran before the trace).
	Starts, WarmStarts int
	// BootWaits counts jobs that started on a node that was not yet usable (booting, or
	// restoring its cache) when they arrived: the jobs that waited for a boot.
	BootWaits int
	// Lost is the job time lost: every wait, plus Config.ColdCost for every cold start.
	Lost time.Duration
	// NodesLaunched counts nodes ever requested (static and initial warm nodes included);
	// PeakNodes is the most that existed at once, summed over pools.
	NodesLaunched, PeakNodes int
	// End is when billing stopped: the horizon, or the last job's end if later (latest over pools).
	End time.Duration
}

// NodeHours is NodeTime in hours.
func (r Result) NodeHours() float64 { return r.NodeTime.Hours() }

// WarmReuse is the fraction of job starts that landed on a warm cache (0 when nothing started).
func (r Result) WarmReuse() float64 {
	if r.Starts == 0 {
		return 0
	}
	return float64(r.WarmStarts) / float64(r.Starts)
}

// ColdShare is the fraction of job starts on a cold cache (0 when nothing started).
func (r Result) ColdShare() float64 {
	if r.Starts == 0 {
		return 0
	}
	return float64(r.Starts-r.WarmStarts) / float64(r.Starts)
}

// BootWaitShare is the fraction of jobs that waited for a boot (0 when nothing started).
func (r Result) BootWaitShare() float64 {
	if r.Starts == 0 {
		return 0
	}
	return float64(r.BootWaits) / float64(r.Starts)
}

// LostHours is Lost in hours.
func (r Result) LostHours() float64 { return r.Lost.Hours() }

// Report compares every Strategy on one trace.
type Report struct {
	// Config is the configuration the trace ran with.
	Config Config
	// Horizon is the billed span every strategy pays for at least.
	Horizon time.Duration
	// Pools are the trace's pool names, sorted; StaticNodes is each one's static pool size
	// (Config.StaticNodes or the p95 of its demand, capped by MaxNodes).
	Pools       []string
	StaticNodes []int
	// Results has one entry per Strategy, in the order of Strategies.
	Results []Result
}

// Result returns the result of one strategy.
func (r Report) Result(s Strategy) (Result, bool) {
	i := slices.IndexFunc(r.Results, func(x Result) bool { return x.Strategy == s })
	if i < 0 {
		return Result{}, false
	}
	return r.Results[i], true
}

// Run simulates every Strategy over jobs, each pool independently, and sums the pools. jobs need
// not be sorted and are not modified.
func Run(jobs []Job, c Config) (Report, error) {
	if err := c.Validate(); err != nil {
		return Report{}, err
	}
	pol, err := c.compilePolicy()
	if err != nil { // unreachable after Validate
		return Report{}, err
	}
	sorted := slices.Clone(jobs)
	sortJobs(sorted)

	horizon := c.Horizon
	if horizon == 0 {
		for _, j := range sorted {
			horizon = max(horizon, j.Arrival+j.Duration)
		}
	}

	// Split by pool, remembering each job's index in sorted so merged waits keep trace order.
	byPool := map[string][]int{}
	for i, j := range sorted {
		byPool[j.Pool] = append(byPool[j.Pool], i)
	}
	pools := make([]string, 0, len(byPool))
	for p := range byPool {
		pools = append(pools, p)
	}
	slices.Sort(pools)

	rep := Report{Config: c, Horizon: horizon, Pools: pools, StaticNodes: make([]int, len(pools))}
	poolJobs := make([][]Job, len(pools))
	for i, p := range pools {
		for _, idx := range byPool[p] {
			poolJobs[i] = append(poolJobs[i], sorted[idx])
		}
		static := c.StaticNodes
		if static == AutoStatic {
			static = DemandP95(poolJobs[i], c.JobsPerNode, horizon)
		}
		// The pool's limit applies to the static pool too, as it would to NodePool replicas.
		rep.StaticNodes[i] = min(static, c.nodeLimit())
	}

	for _, strategy := range Strategies() {
		res := Result{Strategy: strategy, Jobs: len(sorted), Waits: make([]time.Duration, len(sorted))}
		for i, p := range pools {
			pr := simulatePool(poolJobs[i], strategy, c, pol, rep.StaticNodes[i], horizon)
			for k, idx := range byPool[p] {
				res.Waits[idx] = pr.waits[k]
			}
			res.NodeTime += pr.nodeTime
			res.Starts += pr.starts
			res.WarmStarts += pr.warm
			res.BootWaits += pr.bootWaits
			res.NodesLaunched += pr.launched
			res.PeakNodes += pr.peak
			res.End = max(res.End, pr.end)
		}
		ordered := slices.Clone(res.Waits)
		slices.Sort(ordered)
		var total time.Duration
		for _, w := range ordered {
			total += w
		}
		if len(ordered) > 0 {
			res.WaitMean = total / time.Duration(len(ordered))
		}
		res.Lost = total + time.Duration(res.Starts-res.WarmStarts)*c.ColdCost
		res.WaitP50 = percentile(ordered, 50)
		res.WaitP95 = percentile(ordered, 95)
		res.WaitMax = percentile(ordered, 100)
		rep.Results = append(rep.Results, res)
	}
	return rep, nil
}

// percentile is the nearest-rank p-th percentile of sorted values (0 for none), in integer
// arithmetic so that, say, the 95th of 20 values is exactly the 19th.
func percentile(sorted []time.Duration, p int) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := (p*n + 99) / 100
	return sorted[max(rank, 1)-1]
}

// DemandP95 is the 95th percentile, weighted by time over [0, horizon), of the nodes the jobs
// would need if each started the moment it arrived: ceil(concurrent jobs / jobsPerNode). It is
// the size of a static pool that covers demand 95% of the time.
func DemandP95(jobs []Job, jobsPerNode int, horizon time.Duration) int {
	if horizon <= 0 || jobsPerNode < 1 {
		return 0
	}
	type change struct {
		at    time.Duration
		delta int
	}
	changes := make([]change, 0, 2*len(jobs))
	for _, j := range jobs {
		changes = append(changes, change{j.Arrival, 1}, change{j.Arrival + j.Duration, -1})
	}
	slices.SortFunc(changes, func(a, b change) int { return cmp.Compare(a.at, b.at) })

	timeAt := map[int]time.Duration{} // node demand -> time spent at it
	concurrent, last := 0, time.Duration(0)
	for _, ch := range changes {
		if at := min(ch.at, horizon); at > last {
			timeAt[ceilDiv(concurrent, jobsPerNode)] += at - last
			last = at
		}
		concurrent += ch.delta
	}
	if horizon > last {
		timeAt[ceilDiv(concurrent, jobsPerNode)] += horizon - last
	}

	levels := make([]int, 0, len(timeAt))
	for l := range timeAt {
		levels = append(levels, l)
	}
	slices.Sort(levels)
	var covered time.Duration
	for _, l := range levels {
		covered += timeAt[l]
		// covered/horizon >= 0.95, without floating point; fine up to about 15 years of horizon.
		if covered*20 >= horizon*19 {
			return l
		}
	}
	return levels[len(levels)-1]
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// WriteTable prints the report as an aligned table, one row per strategy, after a line naming
// the model's parameters.
func (r Report) WriteTable(w io.Writer) error {
	c := r.Config
	limit := "none"
	if c.MaxNodes > 0 {
		limit = strconv.Itoa(c.MaxNodes)
	}
	jobs := 0
	if len(r.Results) > 0 {
		jobs = r.Results[0].Jobs
	}
	if _, err := fmt.Fprintf(w, "%d jobs in %d pool(s), billed over %s; boot %s, %d job(s)/node, WhenEmpty consolidateAfter %s + %s validation, max nodes %s, policy every %s\n",
		jobs, len(r.Pools), r.Horizon, c.Boot, c.JobsPerNode, c.ConsolidateAfter, c.ValidationDelay, limit, c.Interval); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "cache: a cold start costs %s, a restore %s after boot, a save %s\n", c.ColdCost, c.Restore, c.Save); err != nil {
		return err
	}
	if len(c.Policy.WarmWindows) > 0 {
		// Windows are read against the wall clock: say where the trace sits on it.
		if _, err := fmt.Fprintf(w, "trace t=0 is %s\n", c.Start.Format("Mon 2006-01-02 15:04:05 MST")); err != nil {
			return err
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tJOBS\tWAIT P50 (s)\tWAIT P95 (s)\tWAIT MAX (s)\tWAIT MEAN (s)\tWAITED FOR BOOT\tCOLD CACHE\tNODE-HOURS\tJOB-HOURS LOST")
	for _, res := range r.Results {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%.1f%%\t%.1f%%\t%.1f\t%.1f\n", r.label(res.Strategy), res.Jobs,
			seconds(res.WaitP50), seconds(res.WaitP95), seconds(res.WaitMax), seconds(res.WaitMean),
			100*res.BootWaitShare(), 100*res.ColdShare(), res.NodeHours(), res.LostHours())
	}
	return tw.Flush()
}

func (r Report) label(s Strategy) string {
	switch s {
	case KarpenterAlone:
		return "karpenter alone"
	case KarpenterRestore:
		return "karpenter + restore"
	case StaticPool:
		sizes := make([]string, len(r.StaticNodes))
		for i, n := range r.StaticNodes {
			sizes[i] = strconv.Itoa(n)
		}
		return "static N=" + strings.Join(sizes, "+")
	case Warmpool:
		label := fmt.Sprintf("warmpool warm-min %d", r.Config.Policy.WarmMinimum)
		if n := len(r.Config.Policy.WarmWindows); n > 0 {
			label += fmt.Sprintf(" +%d window(s)", n)
		}
		switch sp := r.Config.Policy.Spare; {
		case sp.Probability > 0:
			label += fmt.Sprintf(" spare p%g max %d", 100*sp.Probability, sp.Max)
			if sp.Constant > 0 {
				label += fmt.Sprintf(" min %d", min(sp.Constant, sp.Max))
			}
		case sp.Constant > 0 && sp.Max > 0:
			label += fmt.Sprintf(" spare %d", min(sp.Constant, sp.Max))
		}
		if b := r.Config.Policy.BurstHold; b.Percent > 0 && b.Window > 0 {
			label += fmt.Sprintf(" hold %d%% %s", b.Percent, shortDuration(b.Window))
		}
		if r.Config.SurplusBudget {
			label += " surplus budget"
		}
		return label
	}
	return string(s)
}

func seconds(d time.Duration) string { return formatSeconds(d.Round(100 * time.Millisecond)) }

// shortDuration prints d without zero trailing units: 25m rather than 25m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
