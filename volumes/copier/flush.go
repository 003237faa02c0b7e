package copier

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// flushEvery is how many bytes the copy writes between two background syncs.
const flushEvery = 64 << 20

// flusher keeps writeback going while the copy runs. Linux starts writing dirty pages back
// only past dirty_background_ratio of memory (10%: 6 GiB on a 64 GiB node), so without it
// a copy of that size sits in the page cache until the final syncfs, which then waits for
// all of it after the last read: on the restore's critical path, and with the node's memory
// full of dirty pages meanwhile. Each background syncfs writes back what is dirty at its
// start; writers are not blocked by it.
//
// syncfs reports a writeback error once per open file, so the error a background sync
// saw is kept and returned by wait (the final syncfs would not see it again), and it
// cancels the copy at once: a copy whose writes fail cannot succeed.
type flusher struct {
	sync     func() error
	fail     context.CancelCauseFunc
	written  *atomic.Int64
	every    int64
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	mu  sync.Mutex
	err error
}

// startFlusher syncs the filesystem of the copy's destination (fd) each time the copy has
// written flushEvery more bytes; a failed sync cancels the copy with fail.
func (c *copier) startFlusher(fd int, fail context.CancelCauseFunc) *flusher {
	f := &flusher{fail: fail, written: &c.dataBytes, every: flushEvery, stop: make(chan struct{})}
	f.sync = func() error { return unix.Syncfs(fd) }
	if h := c.opts.hooks; h != nil {
		if h.flushEvery > 0 {
			f.every = h.flushEvery
		}
		if h.flush != nil {
			f.sync = func() error {
				if err := h.flush(); err != nil {
					return err
				}
				return unix.Syncfs(fd)
			}
		}
	}
	f.wg.Go(f.run)
	return f
}

func (f *flusher) run() {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last int64
	for {
		select {
		case <-f.stop:
			return
		case <-tick.C:
		}
		n := f.written.Load()
		if n-last < f.every {
			continue
		}
		last = n
		if err := f.sync(); err != nil {
			err = fmt.Errorf("background sync: %w", err)
			f.mu.Lock()
			f.err = err
			f.mu.Unlock()
			f.fail(err)
			return
		}
	}
}

// wait stops the flusher and returns the writeback error a background sync saw, if any.
// It may be called more than once.
func (f *flusher) wait() error {
	f.stopOnce.Do(func() { close(f.stop) })
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
