package cluster

import (
	"os"
	"testing"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

func TestMain(m *testing.M) {
	// Nodesim runs in this process and writes its own log file. Without a root logger,
	// controller-runtime prints a "SetLogger(...) was never called" goroutine stack into the
	// test output after 30 s, which CI's excerpt of a failure then shows instead of the
	// failure's logs.
	ctrl.SetLogger(zap.New(zap.WriteTo(TestLogOutput())))
	os.Exit(m.Run())
}
