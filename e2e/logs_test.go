package e2e_test

import (
	"io"
	"os"
	"sync"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// ctrlLog is where controller-runtime's root logger writes in this test process.
// controller-runtime takes its root logger once: a later SetLogger changes nothing, and if none
// is set within 30 s of the start it prints a goroutine stack and discards everything from then
// on. So TestMain sets the root logger to this writer before the cluster starts, and a test
// that runs a manager in this process points it at its own log file while it runs.
var ctrlLog = &switchWriter{}

// setRootLogger gives controller-runtime its one root logger: ctrlLog, which writes nowhere
// between tests, or to stderr with WARMPOOL_TEST_LOG=1.
func setRootLogger() {
	if os.Getenv("WARMPOOL_TEST_LOG") != "" {
		ctrlLog.idle = os.Stderr
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(ctrlLog)))
}

// switchWriter writes to w, or to idle (nowhere, if nil) when w is nil.
type switchWriter struct {
	mu   sync.Mutex
	w    io.Writer
	idle io.Writer
}

func (s *switchWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.w != nil:
		return s.w.Write(p)
	case s.idle != nil:
		return s.idle.Write(p)
	}
	return len(p), nil
}

// to sends what the root logger writes to w; to(nil) stops it, before w is closed.
func (s *switchWriter) to(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w = w
}
