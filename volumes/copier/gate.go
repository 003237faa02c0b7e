package copier

import (
	"context"
	"sync"
)

// besideSmall is how many ranges of large files are copied at once while small files are
// being copied. One 8 MiB range keeps one 1 MiB request queued: at gp3's 125 MiB/s it delays
// a small file's request by 8 ms, and it takes the throughput the small files leave.
const besideSmall = 1

// rangeGate keeps a copy's large files from crowding out its small ones. A volume serves
// requests in turn against its throughput cap, so with dozens of large files' 1 MiB range
// reads queued (RangeReads per file), each small file's request waits behind all of them.
// Small files meet a volume's IOPS cap before its throughput (gp3: 3000 I/Os at 125 MiB/s
// are 43 KiB each), so they should run at the IOPS cap while the large files take what
// throughput is left. While small files are being copied at most besideSmall ranges are;
// while none are, each large file has its RangeReads, which a lazily loaded volume's
// latency needs.
type rangeGate struct {
	mu     sync.Mutex
	small  int // small files being copied
	ranges int // ranges being copied
	// changed is closed (and replaced) when a range ends or the last small file does.
	changed chan struct{}
}

func newRangeGate() *rangeGate { return &rangeGate{changed: make(chan struct{})} }

// acquire waits for a range's turn.
func (g *rangeGate) acquire(ctx context.Context) error {
	for {
		g.mu.Lock()
		if g.small == 0 || g.ranges < besideSmall {
			g.ranges++
			g.mu.Unlock()
			return nil
		}
		ch := g.changed
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// release ends a range.
func (g *rangeGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ranges--
	g.signal()
}

// smallStarted and smallDone bracket the copy of a small file's data.
func (g *rangeGate) smallStarted() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.small++
}

func (g *rangeGate) smallDone() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.small--; g.small == 0 {
		g.signal()
	}
}

func (g *rangeGate) signal() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// large says whether a file of size bytes is copied in more than one range:
// the walk sends such files to the workers before a directory's small ones,
// and while small files are copied the gate lets one range of them run.
func (c *copier) large(size int64) bool { return size > int64(c.chunk) }
