package main

import (
	"strconv"
	"testing"
)

// The controller collects at defaultGCPercent unless GOGC is set, which it leaves to the runtime.
func TestControllerGOGC(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    string
		wantSet int // -1: SetGCPercent not called
	}{
		{name: "unset", env: map[string]string{}, want: strconv.Itoa(defaultGCPercent), wantSet: defaultGCPercent},
		{name: "set", env: map[string]string{"GOGC": "200"}, want: "200", wantSet: -1},
		{name: "off", env: map[string]string{"GOGC": "off"}, want: "off", wantSet: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := -1
			got := tuneGC(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok },
				func(p int) int { set = p; return 100 })
			if got != tc.want || set != tc.wantSet {
				t.Errorf("tuneGC = %q, SetGCPercent(%d); want %q, SetGCPercent(%d)", got, set, tc.want, tc.wantSet)
			}
		})
	}
}
