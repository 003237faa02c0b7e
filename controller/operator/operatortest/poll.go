package operatortest

import (
	"testing"
	"time"
)

// Timeout bounds Eventually: long enough for a manager on a loaded 2-core machine (an informer
// resync, a few reconciles and their retries), short enough that a broken test fails in CI.
const Timeout = 30 * time.Second

// interval is how often Eventually and Consistently poll: often enough to see a state that
// lasts a reconcile, rarely enough not to load the API server.
const interval = 50 * time.Millisecond

// Eventually polls cond until it returns nil, failing the test with its last error after
// Timeout.
func Eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(interval)
	}
}

// Consistently checks that cond stays nil for d: the controller had every chance to act.
func Consistently(t testing.TB, what string, d time.Duration, cond func() error) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(interval) {
		if err := cond(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}
