package config

import (
	"slices"
	"strings"
	"testing"
)

func TestValidateFastSnapshotRestore(t *testing.T) {
	for _, tc := range []struct {
		name string
		fsr  *FastSnapshotRestore
		want []string
	}{
		{"off by default", nil, nil},
		{"zones given", &FastSnapshotRestore{AvailabilityZones: []string{"us-west-2a"}}, nil},
		{"no zones", &FastSnapshotRestore{}, []string{"pools[0].cache.fastSnapshotRestore.availabilityZones"}},
		{"empty zone", &FastSnapshotRestore{AvailabilityZones: []string{"us-west-2a", ""}}, []string{"pools[0].cache.fastSnapshotRestore.availabilityZones[1]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustDecode(t, minimalYAML)
			pool0(cfg).Cache.FastSnapshotRestore = tc.fsr
			Default(cfg)
			got := lines(Validate(cfg))
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want errors on %q", got, tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(got[i], w+":") {
					t.Errorf("error %q does not name field %s", got[i], w)
				}
			}
			if tc.fsr == nil && !slices.Equal(got, nil) {
				t.Errorf("default config rejected: %q", got)
			}
		})
	}
}
