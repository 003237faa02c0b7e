package config

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

func TestBurstHoldDefaults(t *testing.T) {
	b := DefaultBurstHold()
	if *b.Percent != 45 || b.Window.Duration != 25*time.Minute {
		t.Fatalf("DefaultBurstHold() = %d%% %s", *b.Percent, b.Window.Duration)
	}
	// Set fields are kept: 0 is off, not unset.
	off := BurstHold{Percent: ptr.To(0)}
	defaultBurstHold(&off)
	if *off.Percent != 0 || off.Window.Duration != DefaultBurstHoldWindow {
		t.Errorf("percent 0 defaulted to %d%% %s", *off.Percent, off.Window.Duration)
	}
}

func TestValidateBurstHold(t *testing.T) {
	path := field.NewPath("scaling", "burstHold")
	tests := []struct {
		name string
		b    BurstHold
		want []string
	}{
		{"defaults", DefaultBurstHold(), nil},
		{"off", BurstHold{Percent: ptr.To(0)}, nil},
		{"all of the peak for a day", BurstHold{Percent: ptr.To(100), Window: &metav1.Duration{Duration: 24 * time.Hour}}, nil},
		{"negative", BurstHold{Percent: ptr.To(-1)}, []string{"scaling.burstHold.percent"}},
		{"above 100", BurstHold{Percent: ptr.To(101)}, []string{"scaling.burstHold.percent"}},
		{"window too short", BurstHold{Window: &metav1.Duration{Duration: 30 * time.Second}}, []string{"scaling.burstHold.window"}},
		{"window too long", BurstHold{Window: &metav1.Duration{Duration: 25 * time.Hour}}, []string{"scaling.burstHold.window"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := ValidateBurstHoldSettings(tt.b, path)
			if len(errs) != len(tt.want) {
				t.Fatalf("errors %v, want on %v", errs, tt.want)
			}
			for i, w := range tt.want {
				if errs[i].Field != w {
					t.Errorf("error %d on %s, want %s", i, errs[i].Field, w)
				}
			}
		})
	}
}

// TestBurstHoldAndWhenJobsWaitInConfig: both are read from a pool's YAML, defaulted when unset,
// and a bad value is refused with the field's path (the last good config stays in force).
func TestBurstHoldAndWhenJobsWaitInConfig(t *testing.T) {
	cfg, err := Parse([]byte(minimalPool("")))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Pools[0]
	if *p.Scaling.BurstHold.Percent != DefaultBurstHoldPercent || p.Scaling.BurstHold.Window.Duration != DefaultBurstHoldWindow ||
		p.Cache.Restore.WhenJobsWait != WhenJobsWaitCold {
		t.Errorf("defaults: burst hold %d%% %s, whenJobsWait %q", *p.Scaling.BurstHold.Percent, p.Scaling.BurstHold.Window.Duration, p.Cache.Restore.WhenJobsWait)
	}
	cfg, err = Parse([]byte(minimalPool("    scaling: {burstHold: {percent: 0}}\n    cache: {restore: {whenJobsWait: restore}}\n")))
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Pools[0]; *p.Scaling.BurstHold.Percent != 0 || p.Cache.Restore.WhenJobsWait != WhenJobsWaitRestore {
		t.Errorf("set: burst hold %d%%, whenJobsWait %q", *p.Scaling.BurstHold.Percent, p.Cache.Restore.WhenJobsWait)
	}
	for yaml, want := range map[string]string{
		"    scaling: {burstHold: {percent: 150}}\n":      "pools[0].scaling.burstHold.percent",
		"    scaling: {burstHold: {window: 5s}}\n":        "pools[0].scaling.burstHold.window",
		"    cache: {restore: {whenJobsWait: wait}}\n":    "pools[0].cache.restore.whenJobsWait",
		"    scaling: {burstHold: {percent: \"half\"}}\n": "percent",
	} {
		if _, err := Parse([]byte(minimalPool(yaml))); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one naming %s", yaml, err, want)
		}
	}
}

// minimalPool is minimalYAML with extra lines (indented as the pool's fields) added to its pool.
func minimalPool(extra string) string { return minimalYAML + extra }
