package policy

import (
	"cmp"
	"fmt"
	"math"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"warmpool.io/warmpool/controller/config"
)

// Spare is headroom: idle nodes kept Ready above current demand, so that the jobs queued while a
// new node boots find one. A purely reactive policy (nodes for queued and running jobs) knows of a
// job only once it is queued, so every job that finds no free slot waits a whole boot.
//
// The spare in nodes at an evaluation is
//
//	min(Max, max(adaptive, Constant, the Spare of every active warm window))
//
// where adaptive, when Probability > 0, comes from the observed arrival rate λ (see Arrivals):
// the smallest k with P(Poisson(λ·BootTime) <= k) >= Probability, in job slots, turned into
// nodes on top of the queue's: ceil((jobs+k)/JobsPerNode) - ceil(jobs/JobsPerNode). Jobs that
// end during a boot free slots too; ignoring them keeps the estimate on the safe side.
//
// The adaptive part has hysteresis, so a steady stream never flaps: the new k is the previous
// one clamped into [q(λ·(1-h)), q(λ·(1+h))] (h = spareHysteresis), which is monotone in λ and
// only moves when the rate has moved by more than h. While the rate is unknown (stale source,
// too little of the window observed, a clock jump) k holds its previous value: no spare is ever
// sized from unknown data. The zero Spare keeps no spare at all.
type Spare struct {
	// Probability is the chance (0 <= p < 1) that every job queued during one BootTime finds a
	// free slot; 0 turns the adaptive spare off.
	Probability float64
	// BootTime is how long a requested node takes until a job can run on it: instance launch,
	// node Ready, and the cache restore the startup taint waits for (> 0 when adaptive).
	BootTime time.Duration
	// Window is how far back arrivals are counted for the rate (> 0 when adaptive). Shorter
	// follows bursts faster; longer is steadier.
	Window time.Duration
	// Constant idle nodes are kept whatever the arrivals (>= 0).
	Constant int
	// Max caps the spare from every source (>= 0); 0 keeps none. Constant and window spares
	// above it are accepted but reported by Warnings: Max wins.
	Max int
	// TimeOfWeek also learns the rate of each hour of the week (State.Arrivals.Week) and sizes
	// the adaptive spare for the larger of the recent rate and the learned rate of the hour
	// BootTime ahead, so the spare is up before a daily burst arrives.
	TimeOfWeek bool
}

// spareHysteresis is the relative change of the arrival rate that moves the adaptive spare. A
// Poisson count over a 10 minute window at 10 jobs a minute varies by about 10%; bucket edges add
// a few percent more.
const spareHysteresis = 0.2

// SpareSource says what set a decision's spare; empty when there is none. Values are stable:
// Events and metrics use them.
type SpareSource string

const (
	// SpareArrivalRate: sized from the observed arrival rate.
	SpareArrivalRate SpareSource = "ArrivalRate"
	// SpareWeekProfile: sized from the learned rate of the coming hour, above the recent one.
	SpareWeekProfile SpareSource = "WeekProfile"
	// SpareHeld: the arrival rate is unknown; the previous adaptive spare is held.
	SpareHeld SpareSource = "Held"
	// SpareConstant: the constant spare.
	SpareConstant SpareSource = "Constant"
	// SpareWarmWindow: an active warm window's spare.
	SpareWarmWindow SpareSource = "WarmWindow"
	// SpareAtMax: capped by Spare.Max.
	SpareAtMax SpareSource = "AtMax"
)

// SpareSources lists every SpareSource, so metrics can pre-register their label values.
func SpareSources() []SpareSource {
	return []SpareSource{SpareArrivalRate, SpareWeekProfile, SpareHeld, SpareConstant, SpareWarmWindow, SpareAtMax}
}

func (s Spare) adaptive() bool { return s.Probability > 0 }

// SpareFromConfig is the policy's Spare for a pool's defaulted scaling.spare (config.Default):
// mode off keeps none, constant keeps Constant, adaptive adds the arrival-rate spare. Unset
// fields (a config that was not defaulted) read as their defaults.
func SpareFromConfig(c config.Spare) Spare {
	d := config.DefaultSpare()
	mode := cmp.Or(c.Mode, d.Mode)
	if mode == config.SpareModeOff {
		return Spare{}
	}
	out := Spare{Constant: c.Constant, Max: *cmp.Or(c.Max, d.Max)}
	if c.Max == nil {
		out.Max = max(out.Max, c.Constant)
	}
	if mode == config.SpareModeAdaptive {
		out.Probability = float64(*cmp.Or(c.Probability, d.Probability)) / 100
		out.BootTime = cmp.Or(c.BootTime, d.BootTime).Duration
		out.Window = cmp.Or(c.Window, d.Window).Duration
		out.TimeOfWeek = c.TimeOfWeek
	}
	return out
}

// Validate reports every problem of s under path.
func (s Spare) Validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if !(s.Probability >= 0 && s.Probability < 1) { // also refuses NaN
		errs = append(errs, field.Invalid(path.Child("probability"), s.Probability, "must be >= 0 and < 1"))
	}
	if s.Constant < 0 {
		errs = append(errs, field.Invalid(path.Child("constant"), s.Constant, "must not be negative"))
	}
	if s.Max < 0 {
		errs = append(errs, field.Invalid(path.Child("max"), s.Max, "must not be negative"))
	}
	if s.BootTime < 0 || s.adaptive() && s.BootTime == 0 {
		errs = append(errs, field.Invalid(path.Child("bootTime"), s.BootTime.String(), "must be > 0 when the spare is adaptive"))
	}
	if s.Window < 0 || s.adaptive() && s.Window == 0 {
		errs = append(errs, field.Invalid(path.Child("window"), s.Window.String(), "must be > 0 when the spare is adaptive"))
	}
	return errs
}

// validateSpare checks the spare and every warm window's spare.
func (c Config) validateSpare(path *field.Path) field.ErrorList {
	errs := c.Spare.Validate(path.Child("spare"))
	for i, w := range c.WarmWindows {
		if w.Spare < 0 {
			errs = append(errs, field.Invalid(path.Child("warmWindows").Index(i).Child("spare"), w.Spare, "must not be negative"))
		}
	}
	return errs
}

// spareWarnings lists spare settings that Spare.Max overrides.
func (c Config) spareWarnings() []string {
	var out []string
	if c.Spare.Constant > c.Spare.Max {
		out = append(out, fmt.Sprintf("spare.constant %d is above spare.max %d; spare.max wins", c.Spare.Constant, c.Spare.Max))
	}
	for i, w := range c.WarmWindows {
		if w.Spare > c.Spare.Max {
			out = append(out, fmt.Sprintf("warmWindows[%d].spare %d is above spare.max %d; spare.max wins", i, w.Spare, c.Spare.Max))
		}
	}
	return out
}

// spareResult is one evaluation's spare.
type spareResult struct {
	nodes    int
	from     SpareSource
	perMin   float64
	known    bool
	slots    int // the adaptive spare in job slots, kept in State.SpareSlots
	arrivals Arrivals
}

// spare computes the spare for one evaluation from the previous state. jobs is queued+running
// (known or not: with unknown queue data the caller holds the count anyway).
func (p *Policy) spare(in Input, prev State, jobs int) spareResult {
	s := p.cfg.Spare
	r := spareResult{slots: max(prev.SpareSlots, 0)}
	if s.adaptive() {
		r.arrivals = prev.Arrivals.observe(in.Now, prev.LastEvaluation, in.Known, in.Arrivals, s.Window)
		var perSec float64
		perSec, r.known = r.arrivals.rate(in.Now, s.Window)
		r.perMin = perSec * 60
		if s.TimeOfWeek && r.known {
			dt := time.Duration(0)
			if !prev.LastEvaluation.IsZero() {
				dt = in.Now.Sub(prev.LastEvaluation)
			}
			r.arrivals.Week = r.arrivals.Week.learn(in.Now, dt, r.perMin)
		}
		if r.known {
			from := SpareArrivalRate
			if s.TimeOfWeek {
				if ahead, ok := r.arrivals.Week.at(in.Now.Add(s.BootTime)); ok && ahead > r.perMin {
					perSec, from = ahead/60, SpareWeekProfile
				}
			}
			mu := perSec * s.BootTime.Seconds()
			// More slots than Max nodes hold are never used; one more tells that Max capped it.
			limit := satAdd(satMul(s.Max, p.cfg.JobsPerNode), 1)
			lo := poissonQuantile(mu*(1-spareHysteresis), s.Probability, limit)
			hi := poissonQuantile(mu*(1+spareHysteresis), s.Probability, limit)
			r.slots = min(max(r.slots, lo), hi)
			if r.slots > 0 {
				r.from = from
			}
		} else if r.slots > 0 {
			r.from = SpareHeld
		}
		r.nodes = ceilDiv(satAdd(jobs, r.slots), p.cfg.JobsPerNode) - ceilDiv(jobs, p.cfg.JobsPerNode)
	} else {
		r.slots = 0
	}
	if s.Constant > r.nodes {
		r.nodes, r.from = s.Constant, SpareConstant
	}
	for i, w := range p.windows {
		if ws := p.cfg.WarmWindows[i].Spare; ws > r.nodes && w.activeAt(in.Now) {
			r.nodes, r.from = ws, SpareWarmWindow
		}
	}
	if r.nodes > s.Max {
		r.nodes, r.from = s.Max, SpareAtMax
	}
	if r.nodes == 0 {
		r.from = ""
	}
	return r
}

// poissonQuantile is the smallest k with P(X <= k) >= p for X ~ Poisson(mu), capped at limit
// (the caller never uses more). mu <= 0 gives 0.
func poissonQuantile(mu, p float64, limit int) int {
	if !(mu > 0) || limit <= 0 {
		return 0
	}
	// Far below the mean: the quantile is above the limit for any p this policy accepts (the
	// mass below mu - 8 sd is under 1e-15).
	if float64(limit) < mu-8*math.Sqrt(mu) {
		return limit
	}
	// Sum the pmf in log space: exp(-mu) underflows for mu > 745, but the terms it drops are far
	// below the mean, where they add nothing.
	logPMF, cum := -mu, 0.0
	for k := 0; k < limit; k++ {
		cum += math.Exp(logPMF)
		if cum >= p {
			return k
		}
		logPMF += math.Log(mu / float64(k+1))
	}
	return limit
}

func ceilDiv(a, b int) int { return a/b + min(a%b, 1) }

// satAdd and satMul saturate at math.MaxInt instead of overflowing on absurd inputs.
func satAdd(a, b int) int {
	if a > math.MaxInt-b {
		return math.MaxInt
	}
	return a + b
}

func satMul(a, b int) int {
	if a != 0 && b > math.MaxInt/a {
		return math.MaxInt
	}
	return a * b
}
