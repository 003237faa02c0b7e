package config

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

// scaling.spare: the idle nodes kept above demand. The defaults were chosen with `warmpool
// simulate` on the committed traces (deploy/traces; docs/scaling.md has the tables): the
// smallest spare that keeps the weekday trace's p95 wait under a quarter of Karpenter alone's
// at no more than 1.2x its node-hours.
const (
	SpareModeAdaptive = "adaptive"
	SpareModeConstant = "constant"
	SpareModeOff      = "off"
	DefaultSpareMode  = SpareModeAdaptive
	// DefaultSpareProbability is the chance, in percent, that the jobs queued during one boot
	// all find a Ready node.
	DefaultSpareProbability = 90
	// DefaultSpareBootTime is how long a job that finds no Ready node waits for one: a node's
	// launch to Ready, about a minute on EKS. Not the restore too: with cache.restore.whenJobsWait
	// cold (the default) a node a job already waits for skips its restore.
	DefaultSpareBootTime = time.Minute
	// DefaultSpareWindow is how far back arrivals are counted.
	DefaultSpareWindow = 10 * time.Minute
	// DefaultSpareMax caps the spare.
	DefaultSpareMax = 14
)

// Bounds past which a spare setting is a typo rather than a choice.
const (
	maxSpareNodes    = 1000
	minSpareWindow   = time.Minute
	maxSpareWindow   = 24 * time.Hour
	maxSpareBootTime = time.Hour
)

var spareModes = sets.New(SpareModeAdaptive, SpareModeConstant, SpareModeOff)

// DefaultSpare is the spare of a pool that configures none.
func DefaultSpare() Spare {
	var s Spare
	defaultSpare(&s)
	return s
}

// defaultSpare fills the unset spare fields. Adaptive-only fields are filled in every mode, so
// switching the mode keeps them meaningful.
func defaultSpare(s *Spare) {
	if s.Mode == "" {
		s.Mode = DefaultSpareMode
	}
	if s.Probability == nil {
		s.Probability = ptr.To(DefaultSpareProbability)
	}
	if s.BootTime == nil {
		s.BootTime = &metav1.Duration{Duration: DefaultSpareBootTime}
	}
	if s.Window == nil {
		s.Window = &metav1.Duration{Duration: DefaultSpareWindow}
	}
	if s.Max == nil {
		// A constant above the default cap is what the user asked for: raise the cap to it.
		s.Max = ptr.To(max(DefaultSpareMax, s.Constant))
	}
}

// validateSpare checks scaling.spare and every warm window's spare of a defaulted pool.
func validateSpare(p *Pool, fp *field.Path) field.ErrorList {
	s := &p.Scaling.Spare
	errs := ValidateSpareSettings(*s, fp.Child("spare"))
	for i, w := range p.Scaling.WarmWindows {
		wp := fp.Child("warmWindows").Index(i).Child("spare")
		switch {
		case w.Spare < 0:
			errs = append(errs, field.Invalid(wp, w.Spare, "must be >= 0"))
		case s.Mode == SpareModeOff && w.Spare > 0:
			errs = append(errs, field.Invalid(wp, w.Spare, "must be 0 when spare.mode is off"))
		case s.Max != nil && w.Spare > *s.Max:
			errs = append(errs, field.Invalid(wp, w.Spare, fmt.Sprintf("must be <= spare.max (%d)", *s.Max)))
		}
	}
	return errs
}

// ValidateSpareSettings checks one spare's settings under path (scaling.spare); set fields are
// checked, unset ones are left to their defaults. `warmpool simulate` checks its spare flags
// with it.
func ValidateSpareSettings(s Spare, sp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if !spareModes.Has(s.Mode) {
		errs = append(errs, field.NotSupported(sp.Child("mode"), s.Mode, sets.List(spareModes)))
	}
	if s.Probability != nil && (*s.Probability < 1 || *s.Probability > 99) {
		errs = append(errs, field.Invalid(sp.Child("probability"), *s.Probability, "must be a percentage from 1 to 99"))
	}
	if s.BootTime != nil && (s.BootTime.Duration <= 0 || s.BootTime.Duration > maxSpareBootTime) {
		errs = append(errs, field.Invalid(sp.Child("bootTime"), s.BootTime.Duration.String(), fmt.Sprintf("must be > 0 and <= %s", maxSpareBootTime)))
	}
	if s.Window != nil && (s.Window.Duration < minSpareWindow || s.Window.Duration > maxSpareWindow) {
		errs = append(errs, field.Invalid(sp.Child("window"), s.Window.Duration.String(), fmt.Sprintf("must be between %s and %s", minSpareWindow, maxSpareWindow)))
	}
	if s.Constant < 0 || s.Constant > maxSpareNodes {
		errs = append(errs, field.Invalid(sp.Child("constant"), s.Constant, fmt.Sprintf("must be between 0 and %d", maxSpareNodes)))
	}
	if s.Max != nil {
		switch {
		case *s.Max < 0 || *s.Max > maxSpareNodes:
			errs = append(errs, field.Invalid(sp.Child("max"), *s.Max, fmt.Sprintf("must be between 0 and %d", maxSpareNodes)))
		case s.Constant > *s.Max && s.Constant <= maxSpareNodes:
			errs = append(errs, field.Invalid(sp.Child("constant"), s.Constant, fmt.Sprintf("must be <= spare.max (%d)", *s.Max)))
		}
	}
	if s.Mode == SpareModeOff && s.Constant > 0 {
		errs = append(errs, field.Invalid(sp.Child("constant"), s.Constant, "must be 0 when mode is off"))
	}
	return errs
}
