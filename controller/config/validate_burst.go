package config

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

// scaling.burstHold: a share of the last bursts' peak demand kept after them. The defaults were
// chosen with `warmpool simulate` on the committed traces, together with the spare's and
// cache.restore.whenJobsWait's (docs/scaling.md has the search): on the spiky trace, whose next
// burst comes 2-30 minutes after the last, they keep enough warm nodes to halve the job time
// Karpenter alone loses at under 1.5x its node-hours, and a pool that stops bursting gives the
// nodes back within the window plus the scale-down stabilization.
const (
	DefaultBurstHoldPercent = 45
	DefaultBurstHoldWindow  = 25 * time.Minute

	maxBurstHoldWindow = 24 * time.Hour
)

// DefaultBurstHold is the burst hold of a pool that configures none.
func DefaultBurstHold() BurstHold {
	var b BurstHold
	defaultBurstHold(&b)
	return b
}

func defaultBurstHold(b *BurstHold) {
	if b.Percent == nil {
		b.Percent = ptr.To(DefaultBurstHoldPercent)
	}
	if b.Window == nil {
		b.Window = &metav1.Duration{Duration: DefaultBurstHoldWindow}
	}
}

// ValidateBurstHoldSettings checks scaling.burstHold under path; unset fields are left to their
// defaults. `warmpool simulate` checks its burst hold flags with it.
func ValidateBurstHoldSettings(b BurstHold, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if b.Percent != nil && (*b.Percent < 0 || *b.Percent > 100) {
		errs = append(errs, field.Invalid(path.Child("percent"), *b.Percent, "must be a percentage from 0 (off) to 100"))
	}
	if b.Window != nil && (b.Window.Duration < time.Minute || b.Window.Duration > maxBurstHoldWindow) {
		errs = append(errs, field.Invalid(path.Child("window"), b.Window.Duration.String(), fmt.Sprintf("must be between 1m and %s", maxBurstHoldWindow)))
	}
	return errs
}
