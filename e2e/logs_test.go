package e2e_test

import (
	"io"
	"sync"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"warmpool.io/warmpool/e2e/cluster"
)

// ctrlLog is where controller-runtime's root logger writes in this test process.
// controller-runtime takes its root logger once: a later SetLogger changes nothing, and if none
// is set within 30 s of the start it prints a goroutine stack and discards everything from then
// on. So TestMain sets the root logger to this writer before the cluster starts, and a test
// that runs a manager in this process points it at its own log file while it runs.
var ctrlLog = &switchWriter{}

// setRootLogger gives controller-runtime its one root logger: ctrlLog, which writes to
// cluster.TestLogOutput between tests.
func setRootLogger() {
	ctrlLog.to(nil)
	ctrl.SetLogger(zap.New(zap.WriteTo(ctrlLog)))
}

// switchWriter writes wherever to last sent it.
type switchWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *switchWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// to sends what the root logger writes to w; to(nil) sends it back to cluster.TestLogOutput,
// before w is closed.
func (s *switchWriter) to(w io.Writer) {
	if w == nil {
		w = cluster.TestLogOutput()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w = w
}
