package policy

import (
	"math"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"warmpool.io/warmpool/controller/config"
)

// Direction is how Decision.Desired moved relative to the previous State.Desired.
type Direction string

const (
	DirectionUp   Direction = "up"
	DirectionDown Direction = "down"
	DirectionNone Direction = "none"
)

// Reason says why a decision came out as it did. Values are stable: metrics labels and Event
// reasons use them, and dashboards filter on them.
type Reason string

const (
	// ReasonQueueGrew: queued+running jobs need more nodes than before; scaled up at once.
	ReasonQueueGrew Reason = "QueueGrew"
	// ReasonWarmMinimum: the constant warm minimum sets the count (raised it, or holds it).
	ReasonWarmMinimum Reason = "WarmMinimum"
	// ReasonWarmWindow: an active warm window's minimum sets the count.
	ReasonWarmWindow Reason = "WarmWindow"
	// ReasonQueueDrained: demand (queue and warm floor) fell and the stabilization window allows
	// the scale-down.
	ReasonQueueDrained Reason = "QueueDrained"
	// ReasonStabilizing: demand fell but a higher recommendation is still inside the window.
	ReasonStabilizing Reason = "Stabilizing"
	// ReasonAtMax: the count is held at MaxNodes because the queue asks for more, or MaxNodes
	// was lowered below the previous count.
	ReasonAtMax Reason = "AtMax"
	// ReasonUnknownQueue: the queue source is stale; the previous count is held.
	ReasonUnknownQueue Reason = "UnknownQueue"
	// ReasonStepLimited: scaling down, by ScaleDownStep nodes only this evaluation.
	ReasonStepLimited Reason = "StepLimited"
	// ReasonSteady: the queue asks for exactly the current count.
	ReasonSteady Reason = "Steady"
	// ReasonSpare: the spare (idle nodes above demand, see Spare) raised the count.
	ReasonSpare Reason = "Spare"
	// ReasonBurstHold: the burst hold (a share of the recent peak, see BurstHold) raised or
	// holds the count.
	ReasonBurstHold Reason = "BurstHold"
)

// Reasons lists every Reason, so metrics can pre-register their label values.
func Reasons() []Reason {
	return []Reason{ReasonQueueGrew, ReasonWarmMinimum, ReasonWarmWindow, ReasonQueueDrained,
		ReasonStabilizing, ReasonAtMax, ReasonUnknownQueue, ReasonStepLimited, ReasonSteady, ReasonSpare, ReasonBurstHold}
}

// Input is one evaluation's observations.
type Input struct {
	// Now is the evaluation time (from an injected clock); it must not be zero.
	Now time.Time
	// Queued and Running are the pool's job counts; negative values count as 0.
	Queued, Running int
	// Known is false when the queue source is stale or failed; Queued and Running are then ignored.
	Known bool
	// CurrentNodes is the pool's node count. It is only read when State carries no previous
	// evaluation, to start from the fleet that exists rather than from zero.
	CurrentNodes int
	// Arrivals are the times jobs were queued since the previous evaluation, for the adaptive
	// spare's rate (see Arrivals). Ignored when Known is false; need not be sorted.
	Arrivals []time.Time
}

// Decision is the outcome of one evaluation.
type Decision struct {
	// Desired is the node count the pool should have now.
	Desired int
	// Direction compares Desired with the previous State.Desired (or CurrentNodes on a fresh state).
	Direction Direction
	Reason    Reason
	// Target is this evaluation's recommendation before stabilization and step limits; for
	// unknown queue data, the held count.
	Target int
	// QueueNodes is ceil((queued+running)/JobsPerNode), before any clamp (0 when unknown).
	QueueNodes int
	// WarmMinimum is the warm floor in force at Now, already capped by MaxNodes.
	WarmMinimum int
	// WarmWindowActive is true when any warm window is active at Now (see Busy).
	WarmWindowActive bool
	// StabilizedUntil is set when Desired is held above Target by scale-down stabilization: the
	// time the holding recommendations leave the window. A reconciler can requeue for it.
	StabilizedUntil time.Time
	// Spare is the idle nodes above QueueNodes this evaluation asks for (Spare.Max applied,
	// MaxNodes not), and SpareFrom what set it. With unknown queue data the count is held and
	// Spare is only reported.
	Spare     int
	SpareFrom SpareSource
	// ArrivalRate is the estimated arrival rate in jobs per minute, valid when ArrivalsKnown
	// (both zero unless the spare is adaptive).
	ArrivalRate   float64
	ArrivalsKnown bool
	// BurstHold is the nodes the burst hold keeps this evaluation (see BurstHold), MaxNodes not
	// applied; 0 when it is off or no peak is remembered.
	BurstHold int
}

// Policy is a Config whose warm windows are parsed once. It is immutable and safe for concurrent use.
type Policy struct {
	cfg           Config
	windows       []warmWindow
	stabilization time.Duration
}

// Compile validates c and parses its warm windows.
func Compile(c Config) (*Policy, error) {
	if errs := c.Validate(nil); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	p := &Policy{cfg: c, stabilization: c.stabilization()}
	p.cfg.WarmWindows = make([]config.WarmWindow, len(c.WarmWindows))
	copy(p.cfg.WarmWindows, c.WarmWindows)
	for i, w := range c.WarmWindows {
		ww, err := compileWindow(w)
		if err != nil { // unreachable after Validate; kept so a future check cannot slip through
			return nil, field.Invalid(field.NewPath("warmWindows").Index(i), w.Schedule, err.Error())
		}
		p.windows = append(p.windows, ww)
	}
	return p, nil
}

// Decide compiles c and decides once. Reconcilers that evaluate repeatedly should Compile once.
func Decide(c Config, in Input, prev State) (Decision, State, error) {
	p, err := Compile(c)
	if err != nil {
		return Decision{}, prev, err
	}
	d, s := p.Decide(in, prev)
	return d, s, nil
}

// Config returns the policy's configuration.
func (p *Policy) Config() Config {
	c := p.cfg
	c.WarmWindows = append([]config.WarmWindow(nil), p.cfg.WarmWindows...)
	return c
}

// Stabilization is the scale-down stabilization window in force (the default when the
// config leaves it 0).
func (p *Policy) Stabilization() time.Duration { return p.stabilization }

// WarmMinimumAt is the warm floor at t (capped by MaxNodes) and whether any warm window is active.
func (p *Policy) WarmMinimumAt(t time.Time) (minimum int, windowActive bool) {
	m, _, active := p.warmFloor(t)
	return m, active
}

// warmFloor also says whether a window (rather than the constant) sets the floor.
func (p *Policy) warmFloor(t time.Time) (floor int, fromWindow, active bool) {
	floor = p.cfg.WarmMinimum
	for _, w := range p.windows {
		if !w.activeAt(t) {
			continue
		}
		active = true
		if w.minimum > floor {
			floor, fromWindow = w.minimum, true
		}
	}
	return min(floor, p.cfg.MaxNodes), fromWindow, active
}

// Decide evaluates the policy once. prev is the State returned by the previous call for the same
// pool; it is not modified.
//
// A zero prev (never evaluated, or state lost) starts from in.CurrentNodes, recorded as a
// recommendation, so a restarted controller does not scale an existing fleet down before a full
// stabilization window has passed. A persisted prev older than the window simply has no history
// left: the policy then trusts the current queue, limited by ScaleDownStep. (Re-recording the old
// count after such a gap would never let a pool whose window is shorter than the evaluation
// interval scale down.)
func (p *Policy) Decide(in Input, prev State) (Decision, State) {
	now, window, maxNodes := in.Now, p.stabilization, p.cfg.MaxNodes

	floor, fromWindow, active := p.warmFloor(now)
	floorReason := ReasonWarmMinimum
	if fromWindow {
		floorReason = ReasonWarmWindow
	}
	d := Decision{WarmMinimum: floor, WarmWindowActive: active}

	fresh := prev.LastEvaluation.IsZero()
	before := max(prev.Desired, 0)
	if fresh {
		before = max(in.CurrentNodes, 0)
	}
	// MaxNodes is a hard cap: a lowered limit applies at once, without stabilization.
	prevDesired := min(before, maxNodes)

	h := loadHistory(prev.History, now, window)
	if fresh {
		h = h.add(Recommendation{At: now, Target: prevDesired})
	}

	sp := p.spare(in, prev, max(in.Queued, 0)+max(in.Running, 0))
	d.Spare, d.SpareFrom, d.ArrivalRate, d.ArrivalsKnown = sp.nodes, sp.from, sp.perMin, sp.known
	demand := 0 // the queue's nodes plus the spare, or the burst hold if higher
	if in.Known {
		d.QueueNodes = queueNodes(in.Queued, in.Running, p.cfg.JobsPerNode)
	}
	var peaks []Recommendation
	d.BurstHold, peaks = p.burstHold(now, prev.Peaks, d.QueueNodes, in.Known)
	held := false // the burst hold, not the queue and spare, sets demand
	if in.Known {
		demand = satAdd(d.QueueNodes, sp.nodes)
		if d.BurstHold > demand {
			demand, held = d.BurstHold, true
		}
		d.Target = min(max(demand, floor), maxNodes)
	} else {
		// Hold: a stale source is no evidence either way. Only the warm floor may raise it.
		d.Target = max(prevDesired, floor)
	}
	h = h.add(Recommendation{At: now, Target: d.Target})

	switch {
	case d.Target > prevDesired:
		d.Desired = d.Target
		switch {
		case !in.Known:
			d.Reason = floorReason
		case demand > maxNodes:
			d.Reason = ReasonAtMax
		case demand >= floor && held:
			d.Reason = ReasonBurstHold
		case demand >= floor && d.QueueNodes <= prevDesired:
			d.Reason = ReasonSpare
		case demand >= floor:
			d.Reason = ReasonQueueGrew
		default:
			d.Reason = floorReason
		}
	case d.Target == prevDesired:
		d.Desired = d.Target
		switch {
		case !in.Known:
			d.Reason = ReasonUnknownQueue
		case demand > maxNodes:
			d.Reason = ReasonAtMax
		case demand < floor:
			d.Reason = floorReason
		case held:
			d.Reason = ReasonBurstHold
		default:
			d.Reason = ReasonSteady
		}
	default: // Target < prevDesired, so the queue is known.
		// The window holds this evaluation's target too, so the max is at least Target. Cap by
		// prevDesired: entries recorded before MaxNodes was lowered must not push it back up.
		d.Desired = min(h.max(), prevDesired)
		d.Reason = ReasonQueueDrained
		if d.Desired == prevDesired {
			d.Reason = ReasonStabilizing
		}
		if step := p.cfg.ScaleDownStep; step > 0 && prevDesired-d.Desired > step {
			d.Desired, d.Reason = prevDesired-step, ReasonStepLimited
		}
		if d.Desired > d.Target {
			d.StabilizedUntil = h.heldUntil(d.Desired, window)
		}
	}

	switch {
	case d.Desired > before:
		d.Direction = DirectionUp
	case d.Desired < before:
		d.Direction = DirectionDown
		if d.Desired == maxNodes && before > maxNodes {
			d.Reason = ReasonAtMax
		}
	default:
		d.Direction = DirectionNone
	}

	return d, State{Desired: d.Desired, History: h, LastEvaluation: now, Arrivals: sp.arrivals, SpareSlots: sp.slots, Spare: d.Spare, BurstHold: d.BurstHold, Peaks: peaks}
}

// queueNodes is ceil((queued+running)/jobsPerNode), saturating instead of overflowing on absurd
// inputs from a misbehaving source.
func queueNodes(queued, running, jobsPerNode int) int {
	queued, running = max(queued, 0), max(running, 0)
	if queued > math.MaxInt-running {
		return math.MaxInt / jobsPerNode
	}
	jobs := queued + running
	return jobs/jobsPerNode + min(jobs%jobsPerNode, 1)
}
