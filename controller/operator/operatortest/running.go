package operatortest

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"k8s.io/client-go/rest"

	"warmpool.io/warmpool/controller/operator"
)

// stopGrace is how long Stop waits before dumping every goroutine: a manager that has not
// returned by then is about to fail the test at controller-runtime's 30 s graceful shutdown
// timeout, and the dump names the runnable that hangs.
const stopGrace = 25 * time.Second

// Running is a manager started in the background by Start.
type Running struct {
	*operator.Manager
	cancel context.CancelFunc
	exited chan struct{} // closed when Start returned, with its error in err
	err    error
}

// Start builds a manager from opts (operator.New) and runs it until Stop. It does not wait for
// the caches to sync: tests wait for what they observe.
func Start(cfg *rest.Config, opts operator.Options) (*Running, error) {
	mgr, err := operator.New(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("building the manager, %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{Manager: mgr, cancel: cancel, exited: make(chan struct{})}
	go func() {
		r.err = mgr.Start(ctx)
		close(r.exited)
	}()
	return r, nil
}

// Exited is closed once the manager returned, on Stop or on its own (a failed start).
func (r *Running) Exited() <-chan struct{} { return r.exited }

// Err is what the manager returned; valid once Exited is closed.
func (r *Running) Err() error { return r.err }

// Stop cancels the manager and waits for Start to return, with its error.
func (r *Running) Stop() error {
	r.cancel()
	dump := time.AfterFunc(stopGrace, func() { _ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1) })
	defer dump.Stop()
	<-r.exited
	return r.err
}
