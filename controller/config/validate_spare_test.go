package config

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestSpareDefaults(t *testing.T) {
	s := DefaultSpare()
	if s.Mode != SpareModeAdaptive || *s.Probability != 90 || s.BootTime.Duration != time.Minute ||
		s.Window.Duration != 10*time.Minute || s.Constant != 0 || *s.Max != 14 || s.TimeOfWeek {
		t.Fatalf("DefaultSpare() = %+v", s)
	}
	// A constant above the default cap raises the cap instead of failing validation.
	c := Spare{Constant: 20}
	defaultSpare(&c)
	if *c.Max != 20 {
		t.Fatalf("constant 20: max defaulted to %d, want 20", *c.Max)
	}
	// Idempotent.
	again := c
	defaultSpare(&again)
	if *again.Max != 20 || again.Mode != SpareModeAdaptive {
		t.Fatalf("defaulting twice changed %+v", again)
	}
}

func TestValidateSpare(t *testing.T) {
	window := func(spare int) WarmWindow {
		return WarmWindow{Schedule: "0 9 * * 1-5", Duration: metav1.Duration{Duration: time.Hour}, Spare: spare}
	}
	tests := []struct {
		name    string
		spare   Spare
		windows []WarmWindow
		want    []string
	}{
		{"defaults", Spare{}, nil, nil},
		{"constant mode", Spare{Mode: SpareModeConstant, Constant: 3}, []WarmWindow{window(2)}, nil},
		{"off", Spare{Mode: SpareModeOff}, []WarmWindow{window(0)}, nil},
		{"unknown mode", Spare{Mode: "auto"}, nil, []string{"scaling.spare.mode"}},
		{"negative constant", Spare{Constant: -1}, nil, []string{"scaling.spare.constant"}},
		{"negative max", Spare{Max: ptr.To(-1)}, nil, []string{"scaling.spare.max"}},
		{"absurd max", Spare{Max: ptr.To(1_000_000)}, nil, []string{"scaling.spare.max"}},
		{"absurd constant", Spare{Constant: 5000, Max: ptr.To(10)}, nil, []string{"scaling.spare.constant"}},
		{"constant above max", Spare{Constant: 5, Max: ptr.To(3)}, nil, []string{"scaling.spare.constant"}},
		{"probability 0", Spare{Probability: ptr.To(0)}, nil, []string{"scaling.spare.probability"}},
		{"probability 100", Spare{Probability: ptr.To(100)}, nil, []string{"scaling.spare.probability"}},
		{"boot time zero", Spare{BootTime: &metav1.Duration{}}, nil, []string{"scaling.spare.bootTime"}},
		{"boot time absurd", Spare{BootTime: &metav1.Duration{Duration: 48 * time.Hour}}, nil, []string{"scaling.spare.bootTime"}},
		{"window too short", Spare{Window: &metav1.Duration{Duration: time.Second}}, nil, []string{"scaling.spare.window"}},
		{"window too long", Spare{Window: &metav1.Duration{Duration: 30 * 24 * time.Hour}}, nil, []string{"scaling.spare.window"}},
		{"off with a constant", Spare{Mode: SpareModeOff, Constant: 2}, nil, []string{"scaling.spare.constant"}},
		{"negative window spare", Spare{}, []WarmWindow{window(-1)}, []string{"scaling.warmWindows[0].spare"}},
		{"window spare above max", Spare{}, []WarmWindow{window(1), window(15)}, []string{"scaling.warmWindows[1].spare"}},
		{"window spare with mode off", Spare{Mode: SpareModeOff}, []WarmWindow{window(2)}, []string{"scaling.warmWindows[0].spare"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustDecode(t, minimalYAML)
			p := &cfg.Pools[0]
			p.Scaling.Spare = tt.spare
			p.Scaling.WarmWindows = tt.windows
			Default(cfg)
			var got []string
			for _, e := range Validate(cfg) {
				got = append(got, e.Field)
			}
			want := make([]string, len(tt.want))
			for i, f := range tt.want {
				want[i] = "pools[0]." + f
			}
			if !slices.Equal(got, want) {
				t.Fatalf("error fields %v, want %v (%v)", got, want, Validate(cfg))
			}
		})
	}
}
