package operator

import (
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

// TestRateLimited: the flags set the client-side limit on a copy of the config; zero keeps the
// config's own, a negative QPS turns the limit off, and a QPS limit without burst is refused
// (client-go's token bucket would let no request through).
func TestRateLimited(t *testing.T) {
	base := &rest.Config{Host: "https://127.0.0.1:6443", QPS: -1}
	got, err := rateLimited(base, DefaultKubeAPIQPS, DefaultKubeAPIBurst)
	if err != nil {
		t.Fatal(err)
	}
	if got.QPS != 200 || got.Burst != 300 || got.Host != base.Host {
		t.Errorf("defaults: QPS %g burst %d host %q, want 200, 300 and the same host", got.QPS, got.Burst, got.Host)
	}
	if base.QPS != -1 {
		t.Errorf("the caller's config was changed: QPS %g", base.QPS)
	}
	if got, _ := rateLimited(base, 0, 0); got != base {
		t.Error("QPS 0 did not keep the config as it is")
	}
	if got, _ := rateLimited(&rest.Config{QPS: 5, Burst: 10}, -5, 0); got.QPS != -1 {
		t.Errorf("negative QPS: %g, want -1 (no limit)", got.QPS)
	}
	if _, err := rateLimited(base, 50, 0); err == nil || !strings.Contains(err.Error(), "burst") {
		t.Errorf("QPS without burst: %v, want an error naming the burst", err)
	}
}
