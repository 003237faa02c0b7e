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
// throughput is left. While small files are being copied, or the walk is still listing
// directories (its listings are small reads too, and one at a time per walker: behind every
// range of every large file each waited a second at 32 MiB/s, so the small files were found
// only after the large ones were copied), at most besideSmall ranges are; while neither is,
// each large file has its RangeReads, which a lazily loaded volume's latency needs.
//
// A copy that knows what it will copy (a restore, from its manifest) is also paced: beside
// small files a range starts only while the large files are not ahead, that is while the
// share of their bytes started is no larger than the share of the small files started. Each
// class then runs at a constant share of the copy and both end together. A volume caps both
// throughput and I/Os, and large files spend the one and small files the other, so a copy
// that ends one class early finishes the other alone, with the first cap idle: the restore
// at 32 MiB/s and 768 IOPS copied its layers in its first 21 s and then its last 5,000 small
// files at the IOPS cap with a quarter of the throughput unused. Kept in step, the mix of
// requests stays that of the whole copy, which keeps busy whichever cap bounds it.
type rangeGate struct {
	mu      sync.Mutex
	small   int  // small files being copied
	walking bool // the walk is listing directories
	ranges  int  // ranges being copied
	// largeBytes and smallFiles are what a paced gate expects to copy (0: not paced);
	// largeStarted and smallFilesStarted how much of each has started.
	largeBytes, smallFiles          int64
	largeStarted, smallFilesStarted int64
	// changed is closed (and replaced) when a range ends, the last small file does, the walk
	// does, or (paced) a small file starts.
	changed chan struct{}
}

func newRangeGate() *rangeGate { return &rangeGate{changed: make(chan struct{})} }

// pace paces the gate for a copy of largeBytes in large files and smallFiles small ones.
func (g *rangeGate) pace(largeBytes, smallFiles int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.largeBytes, g.smallFiles = largeBytes, smallFiles
}

// acquire waits for the turn of a range of n bytes.
func (g *rangeGate) acquire(ctx context.Context, n int64) error {
	for {
		g.mu.Lock()
		if g.due() {
			g.ranges++
			g.largeStarted += n
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

// due says whether a range may start now. Pacing holds ranges back only beside small files,
// which will end and let them go: beside the walk alone one always may, or the walk, waiting
// for a worker that waits for its range, would never end.
func (g *rangeGate) due() bool {
	switch {
	case g.small == 0 && !g.walking:
		return true
	case g.ranges >= besideSmall:
		return false
	}
	return g.small == 0 || !g.ahead()
}

// ahead says whether a paced gate's large files have started a larger share of their bytes
// than the small files of their number.
func (g *rangeGate) ahead() bool {
	if g.largeBytes <= 0 || g.smallFiles <= 0 {
		return false
	}
	return float64(g.largeStarted)/float64(g.largeBytes) > float64(g.smallFilesStarted)/float64(g.smallFiles)
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
	g.smallFilesStarted++
	if g.smallFiles > 0 {
		g.signal() // a range held back because the large files were ahead may be due
	}
}

func (g *rangeGate) smallDone() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.small--; g.small == 0 {
		g.signal()
	}
}

// walkStarted and walkDone bracket the walk.
func (g *rangeGate) walkStarted() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.walking = true
}

func (g *rangeGate) walkDone() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.walking = false
	g.signal()
}

func (g *rangeGate) signal() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// large says whether a file of size bytes is copied in more than one range:
// the walk sends such files to the workers before a directory's small ones,
// and while small files are copied the gate lets one range of them run.
func (c *copier) large(size int64) bool { return size > int64(c.chunk) }

// shares is what a copy of m's tree passes through the gate: the bytes of its large files
// whose ranges it paces (not those copied front to back for a checksum) and the number of
// its small files (each file once, whatever its number of names).
func (c *copier) shares(m *Manifest) (largeBytes, smallFiles int64) {
	for _, e := range m.Entries {
		switch {
		case e.Type != TypeFile || e.Link != "" || e.Size == 0:
		case !c.large(e.Size):
			smallFiles++
		case e.SHA256 == "":
			largeBytes += e.Size
		}
	}
	return largeBytes, smallFiles
}
