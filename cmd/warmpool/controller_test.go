package main

import (
	"os"
	"path/filepath"
	"testing"
)

// A controller started with --kubeconfig must not be held to client-go's default 5 requests/s,
// which made one config change to 100 pools take 40 s in the footprint benchmark.
func TestKubeconfigIsNotClientThrottled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	kubeconfig := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := restConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QPS >= 0 || cfg.RateLimiter != nil {
		t.Errorf("QPS %v, rate limiter %v: want client-side rate limiting off (QPS < 0)", cfg.QPS, cfg.RateLimiter)
	}
}
