package operator

import (
	"context"
	"fmt"
	"sync"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
)

// A manager whose informer never syncs (RBAC missing for a watched kind, a kind that cannot be
// listed) did not return from Start once its context was cancelled, and so ignored SIGTERM:
// controller-runtime v0.23's runnableGroup.Start waits for its runnables' readiness checks in a
// loop that sees the cancelled context but goes on waiting (spinning a CPU meanwhile,
// kubernetes-sigs/controller-runtime#3440), and the caches' check is WaitForCacheSync with a
// context only the stop procedure cancels, which runs once Start returns. stoppableCache ends
// that wait when the manager is told to stop: the check passes, Start goes on to its stop
// procedure and returns.

// stoppableCache is the manager's cache whose WaitForCacheSync also returns once stopping is
// closed (Manager.Start's context is done), reporting the caches synced so the manager's start
// moves on to its shutdown. Nothing reads the cache after that but the stop procedure.
type stoppableCache struct {
	cache.Cache
	stopping <-chan struct{}
}

func (c stoppableCache) WaitForCacheSync(ctx context.Context) bool {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	if c.Cache.WaitForCacheSync(ctx) {
		return true
	}
	select {
	case <-c.stopping:
		return true
	default:
		return false
	}
}

// stopSignal is closed once the manager's Start context is done.
type stopSignal struct {
	ch   chan struct{}
	once sync.Once
}

func newStopSignal() *stopSignal { return &stopSignal{ch: make(chan struct{})} }

func (s *stopSignal) stop() { s.once.Do(func() { close(s.ch) }) }

func (s *stopSignal) stopped() bool {
	select {
	case <-s.ch:
		return true
	default:
		return false
	}
}

// newCache builds controller-runtime's cache wrapped to give up waiting when s stops.
func (s *stopSignal) newCache(cfg *rest.Config, opts cache.Options) (cache.Cache, error) {
	c, err := cache.New(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("creating cache, %w", err)
	}
	return stoppableCache{Cache: c, stopping: s.ch}, nil
}

// Start runs the manager until ctx is done, and returns then even if an informer never synced.
func (m *Manager) Start(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		m.stop.stop()
	}()
	return m.Manager.Start(ctx)
}
