package policy

import (
	"cmp"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"warmpool.io/warmpool/controller/config"
)

// BurstHold keeps part of a burst's nodes after it: at least Percent% (rounded up) of the
// highest queue demand (Decision.QueueNodes) of the last Window.
//
// Bursty CI (a release train, a monorepo's matrix) brings its next burst minutes after the last
// one, and no arrival-rate spare sized for the calm in between can absorb it. Without memory of
// the burst its nodes go within a stabilization window and the next burst waits for new,
// cold ones. Holding a share of the peak for a while keeps that many warm nodes for the next
// burst at a bounded cost: a pool that does not burst again gives them back once the peak
// leaves the window (then the scale-down stabilization, as for any target).
//
// The zero value holds nothing.
type BurstHold struct {
	// Percent is the share of the window's peak demand held (0 to 100; 0 turns the hold off).
	Percent int
	// Window is how long a peak is remembered (> 0 when Percent > 0).
	Window time.Duration
}

// BurstHoldFromConfig is the policy's BurstHold for a pool's scaling.burstHold; unset fields
// (a config that was not defaulted) read as their defaults.
func BurstHoldFromConfig(c config.BurstHold) BurstHold {
	d := config.DefaultBurstHold()
	return BurstHold{Percent: *cmp.Or(c.Percent, d.Percent), Window: cmp.Or(c.Window, d.Window).Duration}
}

func (b BurstHold) on() bool { return b.Percent > 0 && b.Window > 0 }

// Validate reports every problem of b under path.
func (b BurstHold) Validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if b.Percent < 0 || b.Percent > 100 {
		errs = append(errs, field.Invalid(path.Child("percent"), b.Percent, "must be between 0 and 100"))
	}
	if b.Window < 0 || b.Percent > 0 && b.Window == 0 {
		errs = append(errs, field.Invalid(path.Child("window"), b.Window.String(), "must be > 0 when percent is set"))
	}
	return errs
}

// burstHold returns the nodes the burst hold keeps at now and the peaks to remember. queueNodes
// is this evaluation's queue demand, recorded only when known: a stale source is no evidence of
// a burst. Peaks older than the window are dropped; with the hold off none are kept. Merging
// past MaxHistory (see history.merge) can only hold a peak longer, never drop it early.
func (p *Policy) burstHold(now time.Time, prev []Recommendation, queueNodes int, known bool) (int, []Recommendation) {
	b := p.cfg.BurstHold
	if !b.on() {
		return 0, nil
	}
	h := loadHistory(prev, now, b.Window)
	if known && queueNodes > 0 { // no demand is no peak: it would only crowd out older zeros
		h = h.add(Recommendation{At: now, Target: queueNodes})
	}
	if len(h) == 0 {
		return 0, nil
	}
	peak := h.max()
	// ceil(peak * percent / 100) without overflow on absurd peaks.
	held := peak/100*b.Percent + ceilDiv(peak%100*b.Percent, 100)
	return held, h
}
