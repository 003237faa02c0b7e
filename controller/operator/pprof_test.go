package operator

import "testing"

// A profile holds what the process holds: --pprof-addr given a port alone must not serve it
// on every interface.
func TestPprofAddrBindsLoopbackByDefault(t *testing.T) {
	for in, want := range map[string]string{
		"":             "",
		"0":            "0",
		":6060":        "127.0.0.1:6060",
		"0.0.0.0:6060": "0.0.0.0:6060",
		"[::1]:6060":   "[::1]:6060",
	} {
		if got := loopbackByDefault(in); got != want {
			t.Errorf("loopbackByDefault(%q) = %q, want %q", in, got, want)
		}
	}
}
