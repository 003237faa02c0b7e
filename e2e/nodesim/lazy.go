package nodesim

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Lazy loading (see ebs.go): which blocks of a volume created from a snapshot are still in
// S3, what a first read of them waits, and the background loading of an initialization rate.

// lazyBlocks tracks which blocks of a lazily loaded volume's files are loaded. Files are
// keyed by their inode on the backing directory (hardlinks share one); a file not in the
// map (created after the volume was) is local and loaded.
type lazyBlocks struct {
	blockSize int64
	latency   time.Duration
	// s3 bounds the bytes loaded by first reads per second (nil: unbounded); its burst is
	// one block, and each block loaded reserves its data's bytes.
	s3 *rate.Limiter

	mu    sync.Mutex
	files map[uint64]*lazyFile
	// left counts blocks not loaded yet.
	left int64

	// firstReads counts requests that waited for a block; loaded counts blocks loaded by
	// reads, hydrated those loaded by the initialization rate.
	firstReads, loaded, hydrated atomic.Int64

	// metaCached holds the page cache keys of the metadata (directories' entries, inode table
	// readahead windows) the kernel has read since the mount (under mu).
	metaCached map[uint64]bool
}

type lazyFile struct {
	bits []uint64 // one bit per block: loaded
	// loading: blocks a request is fetching now, closed when they are loaded.
	loading map[int64]chan struct{}
	blocks  int64
	size    int64
}

// newLazyBlocks tracks lazily loaded blocks; bytesPerSecond > 0 bounds how fast first reads
// load them.
func newLazyBlocks(blockSize int64, latency time.Duration, bytesPerSecond float64) *lazyBlocks {
	l := &lazyBlocks{blockSize: blockSize, latency: latency, files: map[uint64]*lazyFile{}, metaCached: map[uint64]bool{}}
	if bytesPerSecond > 0 {
		l.s3 = rate.NewLimiter(rate.Limit(bytesPerSecond), int(blockSize))
	}
	return l
}

// loadDelay is how long loading blocks of f takes from now: FirstReadLatency, or longer if
// the volume's lazy loading rate is spent (each block's data is reserved in turn, so
// concurrent loads queue behind each other). cancel gives back what was reserved.
func (l *lazyBlocks) loadDelay(f *lazyFile, blocks []int64) (time.Duration, func()) {
	if l.s3 == nil {
		return l.latency, func() {}
	}
	now := time.Now()
	delay := l.latency
	rs := make([]*rate.Reservation, 0, len(blocks))
	for _, b := range blocks {
		n := min(l.blockSize, f.size-b*l.blockSize)
		r := l.s3.ReserveN(now, int(max(n, 1)))
		rs = append(rs, r)
		delay = max(delay, r.DelayFrom(now))
	}
	return delay, func() {
		at := time.Now()
		for i := len(rs) - 1; i >= 0; i-- {
			rs[i].CancelAt(at)
		}
	}
}

// add registers a file of size bytes from the snapshot, the blocks that hold its data (data:
// [start, end) byte ranges; nil for all of it) not loaded. The blocks of its holes were never
// written, so a snapshot does not hold them and reading them costs nothing.
func (l *lazyBlocks) add(ino uint64, size int64, data [][2]int64) {
	if size <= 0 {
		return
	}
	n := (size + l.blockSize - 1) / l.blockSize
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.files[ino]; ok {
		return // another name of the same inode
	}
	f := &lazyFile{bits: make([]uint64, (n+63)/64), loading: map[int64]chan struct{}{}, blocks: n, size: size}
	if data != nil {
		for b := range n {
			f.set(b)
		}
		for _, r := range data {
			first, last := l.blockRange(f, r[0], r[1]-r[0])
			for b := first; b <= last; b++ {
				f.bits[b/64] &^= 1 << (b % 64)
			}
		}
	}
	for b := range n {
		if !f.has(b) {
			l.left++
		}
	}
	l.files[ino] = f
}

// forget drops a file or directory whose inode now belongs to a new one (created on the
// volume): its data and entries are the new one's. The inode table block stays as it is.
func (l *lazyBlocks) forget(ino uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, key := range []uint64{ino, dirKey(ino)} {
		f, ok := l.files[key]
		if !ok {
			continue
		}
		for b := range f.blocks {
			if !f.has(b) {
				l.left--
			}
		}
		delete(l.files, key)
	}
}

func (f *lazyFile) has(b int64) bool { return f.bits[b/64]&(1<<(b%64)) != 0 }
func (f *lazyFile) set(b int64)      { f.bits[b/64] |= 1 << (b % 64) }

// blockRange is the blocks [first, last] that bytes [off, off+n) touch, clamped to the file.
func (l *lazyBlocks) blockRange(f *lazyFile, off, n int64) (int64, int64) {
	first := off / l.blockSize
	last := min((off+max(n, 1)-1)/l.blockSize, f.blocks-1)
	return first, last
}

// fetch returns once the blocks that bytes [off, off+n) of ino touch are loaded: at once if
// they are, after FirstReadLatency (or the volume's lazy loading rate, if that is the
// longer) if this request has to load some (once per request, for all of them), or when
// the request already loading them is done.
func (l *lazyBlocks) fetch(ctx context.Context, ino uint64, off, n int64) error {
	l.mu.Lock()
	f, ok := l.files[ino]
	if !ok {
		l.mu.Unlock()
		return nil
	}
	first, last := l.blockRange(f, off, n)
	var mine []int64
	var waits []chan struct{}
	done := make(chan struct{})
	for b := first; b <= last; b++ {
		switch ch, busy := f.loading[b]; {
		case f.has(b):
		case busy:
			waits = append(waits, ch)
		default:
			f.loading[b] = done
			mine = append(mine, b)
		}
	}
	l.mu.Unlock()
	if len(mine) > 0 {
		l.firstReads.Add(1)
		delay, unreserve := l.loadDelay(f, mine)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			unreserve()
			// Give the blocks back unloaded, so another request fetches them.
			l.mu.Lock()
			for _, b := range mine {
				delete(f.loading, b)
			}
			l.mu.Unlock()
			close(done)
			return ctx.Err()
		}
		l.mu.Lock()
		for _, b := range mine {
			delete(f.loading, b)
			if !f.has(b) {
				f.set(b)
				l.left--
				l.loaded.Add(1)
			}
		}
		l.mu.Unlock()
		close(done)
	}
	for _, ch := range waits {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// A request we waited for may have been cancelled and left its blocks unloaded.
	if len(waits) > 0 {
		return l.fetch(ctx, ino, off, n)
	}
	return nil
}

// written marks the blocks a write covers as loaded: what was written is on the volume.
func (l *lazyBlocks) written(ino uint64, off, n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.files[ino]
	if !ok || n <= 0 {
		return
	}
	first, last := l.blockRange(f, off, n)
	for b := first; b <= last; b++ {
		if !f.has(b) {
			f.set(b)
			l.left--
		}
	}
}

// The filesystem's metadata loads lazily too: on EBS a volume's blocks are blocks of a disk,
// and a directory's entries and the inode tables are blocks like any other. They are tracked
// in the same map as files' data, under keys no backing inode number has (ext4's are 32-bit):
// a directory's blocks under dirKey of its inode, as one request (ext4 allocates a
// directory's few blocks together), and the inode table by the snapshot block that holds
// each inode, inodesPerBlock of ext4's default 256-byte inodes. A backing directory on ext4
// numbers its inodes as ext4 on EBS does (by block group, in creation order), so inodes that
// share a block here share one there. The root's inode is read at mount and is not tracked.
//
// What the kernel reads of them is another unit: a directory's blocks, and for an inode
// ext4's inode table readahead, the aligned window of s_inode_readahead_blks (32) 4 KiB
// blocks around the inode's block, read in one plugged request when that block is not cached
// (fs/ext4/inode.c, __ext4_get_inode_loc). The page cache then holds the window, so the
// first look at each window (inodeWindowKey) is the I/O, while S3 serves whole snapshot
// blocks (inodeKey): four windows to a 512 KiB block.
const (
	dirKeyTag         = 1 << 63
	inodeKeyTag       = 1 << 62
	inodeWindowKeyTag = 1 << 61
	// inodeSize is ext4's default inode size (mke2fs.conf), the EBS CSI driver's default
	// filesystem.
	inodeSize = 256
	// inodeReadahead is the bytes of ext4's inode table readahead: s_inode_readahead_blks'
	// default (EXT4_DEF_INODE_READAHEAD_BLKS, 32) blocks of 4 KiB.
	inodeReadahead = 32 << 12
)

func dirKey(ino uint64) uint64 { return dirKeyTag | ino }

func (l *lazyBlocks) inodeKey(ino uint64) uint64 {
	return inodeKeyTag | ino/uint64(max(l.blockSize/inodeSize, 1))
}

// inodeWindowKey is the key of ext4's inode table readahead window that holds ino.
func inodeWindowKey(ino uint64) uint64 { return inodeWindowKeyTag | ino/(inodeReadahead/inodeSize) }

// A metaRead is a first look at the snapshot's metadata: the key S3 loads it under, the key
// the page cache holds it under, and the bytes the kernel reads (0: the whole key's).
type metaRead struct {
	block, cached uint64
	bytes         int64
}

// dirRead is a look at the entries of directory ino: all its blocks, loaded and cached as one.
func dirRead(ino uint64) metaRead { return metaRead{block: dirKey(ino), cached: dirKey(ino)} }

// inodeRead is a look at inode ino: its snapshot block from S3, its readahead window into the
// page cache.
func (l *lazyBlocks) inodeRead(ino uint64) metaRead {
	return metaRead{block: l.inodeKey(ino), cached: inodeWindowKey(ino), bytes: inodeReadahead}
}

// addDir registers a directory of the snapshot whose entries (size bytes of directory
// blocks) are not loaded.
func (l *lazyBlocks) addDir(ino uint64, size int64) { l.add(dirKey(ino), max(size, 1), nil) }

// addInode registers the inode table block that holds ino as not loaded.
func (l *lazyBlocks) addInode(ino uint64) { l.add(l.inodeKey(ino), l.blockSize, nil) }

// firstMetaRead says whether m is the kernel's first read of that metadata since the mount,
// and how many bytes it reads: a read from the volume, whether or not its blocks are loaded
// from S3 yet (an initialization rate loads them into the volume, not into the page cache).
// Later reads hit the page cache, as does metadata the volume's own writes made (not in the
// snapshot, so not tracked).
func (l *lazyBlocks) firstMetaRead(m metaRead) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.files[m.block]
	if !ok || l.metaCached[m.cached] {
		return 0, false
	}
	l.metaCached[m.cached] = true
	if m.bytes > 0 {
		return m.bytes, true
	}
	return f.size, true
}

// remaining is the number of blocks not loaded yet.
func (l *lazyBlocks) remaining() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.left
}

// hydrate loads the blocks in the background at bytesPerSecond, file by file in inode
// order, as a volume with an initialization rate does from its creation on. It returns when
// every block is loaded or ctx ends.
func (l *lazyBlocks) hydrate(ctx context.Context, bytesPerSecond float64) {
	lim := rate.NewLimiter(rate.Limit(bytesPerSecond), int(max(l.blockSize, 1)))
	l.mu.Lock()
	inos := make([]uint64, 0, len(l.files))
	for ino := range l.files {
		inos = append(inos, ino)
	}
	l.mu.Unlock()
	slices.Sort(inos)
	for _, ino := range inos {
		for b := int64(0); ; b++ {
			l.mu.Lock()
			f, ok := l.files[ino]
			if !ok || b >= f.blocks {
				l.mu.Unlock()
				break
			}
			_, busy := f.loading[b]
			need := !f.has(b) && !busy
			l.mu.Unlock()
			if !need {
				continue
			}
			// A block's data, not a whole block: on a disk small files and directories
			// share blocks, and a volume initializes its written bytes at the rate.
			if err := lim.WaitN(ctx, int(max(min(l.blockSize, f.size-b*l.blockSize), 1))); err != nil {
				return
			}
			l.mu.Lock()
			if f.blocks > b && !f.has(b) {
				if _, busy := f.loading[b]; !busy {
					f.set(b)
					l.left--
					l.hydrated.Add(1)
				}
			}
			l.mu.Unlock()
		}
	}
}
