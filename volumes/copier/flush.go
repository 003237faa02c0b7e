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
// syncfs reports a writeback error once per open file, so the final syncfs would not see
// one a background sync saw: that sync cancels the copy with it instead, at once (a copy
// whose writes fail cannot succeed), and the copy reports the cancellation's cause.
type flusher struct {
	sync     func() error
	fail     context.CancelCauseFunc
	written  *atomic.Int64
	every    int64
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
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
			f.fail(fmt.Errorf("syncing the destination's filesystem in the background: %w", err))
			return
		}
	}
}

// wait stops the flusher and waits for a sync under way. It may be called more than once.
func (f *flusher) wait() {
	f.stopOnce.Do(func() { close(f.stop) })
	f.wg.Wait()
}
