package arcsuite_test

import (
	"fmt"
	"os"
	"sync"
	"testing"
)

// Shared fixtures (such as the ARC tests' envtest API server) start lazily, only when a test
// asks for them, and register their teardown here; TestMain runs it after every test.
var (
	teardownMu sync.Mutex
	teardowns  []func() error
)

// atExit registers f to run once all tests have finished, last registered first.
func atExit(f func() error) {
	teardownMu.Lock()
	defer teardownMu.Unlock()
	teardowns = append(teardowns, f)
}

func TestMain(m *testing.M) {
	code := m.Run()
	teardownMu.Lock()
	defer teardownMu.Unlock()
	for i := len(teardowns) - 1; i >= 0; i-- {
		if err := teardowns[i](); err != nil {
			fmt.Fprintln(os.Stderr, "teardown:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}
