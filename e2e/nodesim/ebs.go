package nodesim

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// The EBS model. Every volume nodesim provisions is served to the cache pods that mount it
// through a FUSE loopback mount (fuse.go) whose read and write paths pay what an EBS volume
// charges, so the copier (the product) experiences it, not a bookkeeping of it:
//
//   - one throughput cap per volume that reads and writes share (a single token bucket on the
//     bytes of every FUSE READ and WRITE), as an EBS volume's provisioned throughput bounds
//     its reads and writes together: gp3's default is 125 MiB/s, set up to 1000 with the
//     StorageClass parameter "throughput" (MiB/s), which nodesim honours per class too.
//     A copy that reads and writes the same volume (an incremental save comparing what is
//     there) splits the cap between them, as on EBS. IOPS (gp3: 3000) are not modelled;
//   - lazy loading: a volume created from a snapshot has its data in S3 until first read, so
//     a read that touches a block (BlockSize, EBS's 512 KiB) not loaded yet waits
//     FirstReadLatency, once per request, and then the blocks it touched are loaded. One
//     request in flight gets at most BlockSize/FirstReadLatency; throughput grows with the
//     reads in flight until the cap (which is why AWS initializes such a volume with fio and a
//     deep queue, and why the copier keeps many reads in flight);
//   - an initialization rate (the StorageClass parameter volumeInitializationRate, MiB/s, as
//     the EBS CSI driver passes it to CreateVolume): the volume loads its blocks in the
//     background at that rate from creation on, so reads find more and more of them loaded.
//     EC2 rejects the parameter for a volume without a snapshot, and so does nodesim (the
//     claim stays Pending with external-provisioner's ProvisioningFailed event);
//   - Fast Snapshot Restore: a volume created from a VolumeSnapshot annotated
//     AnnotationFastSnapshotRestore is fully loaded at creation.
//
// The blocks are blocks of each file (by offset), not of a disk: a small file is one block
// of its own, where on ext4 several small files may share one, so small files are charged a
// little more than on a real volume. Metadata (lookups, directory listings, xattrs) is not
// charged.

// EBSOptions are the EBS model's knobs (Options.EBS). The zero value means the defaults,
// which are scaled to test sizes: a few hundred MiB/s and a few milliseconds, so that the
// suite's small caches copy in about the time they did before the model.
type EBSOptions struct {
	// BytesPerSecond caps each volume's reads and writes together (one bucket, as an EBS
	// volume's throughput). 0 means DefaultVolumeBytesPerSecond; negative, unlimited. A
	// StorageClass parameter ParameterThroughput sets it for the volumes of that class.
	BytesPerSecond float64
	// BlockSize is the lazy-loading unit; 0 means DefaultBlockSize.
	BlockSize int64
	// FirstReadLatency is what a read touching a block not loaded yet waits; 0 means
	// DefaultFirstReadLatency, negative none (volumes from snapshots are not lazily loaded).
	FirstReadLatency time.Duration
}

const (
	// DefaultVolumeBytesPerSecond is each volume's throughput cap unless set: 256 MiB/s,
	// enough for the suite's small caches not to notice.
	DefaultVolumeBytesPerSecond = 256 << 20
	// DefaultBlockSize is EBS's snapshot block size.
	DefaultBlockSize = 512 << 10
	// DefaultFirstReadLatency is a first read's wait for its block: with 64 reads of 512 KiB
	// in flight a lazily loaded volume can reach 6.4 GiB/s, with one 100 MiB/s.
	DefaultFirstReadLatency = 5 * time.Millisecond

	// ParameterThroughput is the EBS CSI driver's gp3 StorageClass parameter (MiB/s); nodesim
	// caps the reads and writes (together) of the class's volumes at it.
	ParameterThroughput = "throughput"
	// ParameterVolumeInitializationRate is the EBS CSI driver's StorageClass parameter (MiB/s)
	// for volumes created from snapshots; EC2 accepts 100 to 300.
	ParameterVolumeInitializationRate = "volumeInitializationRate"

	// AnnotationFastSnapshotRestore ("true") on a VolumeSnapshot plays Fast Snapshot Restore
	// enabled for it in the volume's zone: volumes created from it are fully loaded at once.
	AnnotationFastSnapshotRestore = "nodesim.warmpool.io/fast-snapshot-restore"
)

// withDefaults fills in the defaults.
func (o EBSOptions) withDefaults() EBSOptions {
	if o.BytesPerSecond == 0 {
		o.BytesPerSecond = DefaultVolumeBytesPerSecond
	}
	if o.BlockSize <= 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.FirstReadLatency == 0 {
		o.FirstReadLatency = DefaultFirstReadLatency
	}
	return o
}

// volumeModel is what one volume charges, decided when it is provisioned.
type volumeModel struct {
	// rate caps reads and writes together, in bytes per second; <= 0 is unlimited.
	rate float64
	// Lazy loading: latency > 0 for a volume created from a snapshot without FSR.
	blockSize int64
	latency   time.Duration
	// initRate (bytes/s) loads the blocks in the background; 0 for none.
	initRate float64
}

// modelFor is the model of a volume of a class with the given parameters, created from a
// snapshot (fromSnapshot) with or without Fast Snapshot Restore. A parameter EC2 would refuse
// is an error whose text is what the CSI driver reports.
func (o EBSOptions) modelFor(params map[string]string, fromSnapshot, fsr bool) (volumeModel, error) {
	o = o.withDefaults()
	m := volumeModel{rate: o.BytesPerSecond, blockSize: o.BlockSize}
	if v, ok := params[ParameterThroughput]; ok {
		mib, err := strconv.ParseFloat(v, 64)
		if err != nil || mib <= 0 {
			return m, fmt.Errorf("InvalidParameterValue: invalid %s %q: want a positive number of MiB/s", ParameterThroughput, v)
		}
		m.rate = mib * (1 << 20)
	}
	if v, ok := params[ParameterVolumeInitializationRate]; ok {
		if !fromSnapshot {
			// aws-ebs-csi-driver issue #2691: the driver passes the parameter for every volume
			// of the class, and CreateVolume refuses it without a SnapshotId.
			return m, fmt.Errorf("InvalidParameterCombination: The parameter VolumeInitializationRate is only valid when creating a volume from a snapshot (%s=%s)", ParameterVolumeInitializationRate, v)
		}
		mib, err := strconv.Atoi(v)
		if err != nil || mib < 100 || mib > 300 {
			return m, fmt.Errorf("InvalidParameterValue: %s %q must be an integer from 100 to 300 (MiB/s)", ParameterVolumeInitializationRate, v)
		}
		m.initRate = float64(mib) * (1 << 20)
	}
	if fromSnapshot && !fsr && o.FirstReadLatency > 0 {
		m.latency = o.FirstReadLatency
	}
	return m, nil
}

// throttle is a token bucket in bytes; nil is unlimited.
type throttle struct{ l *rate.Limiter }

// throttleBurst is the largest request a FUSE mount sends (MaxWrite, which bounds reads too).
const throttleBurst = 1 << 20

func newThrottle(bytesPerSecond float64) *throttle {
	if bytesPerSecond <= 0 {
		return nil
	}
	return &throttle{rate.NewLimiter(rate.Limit(bytesPerSecond), throttleBurst)}
}

// take waits until n bytes may pass.
func (t *throttle) take(ctx context.Context, n int) error {
	if t == nil {
		return nil
	}
	for n > 0 {
		k := min(n, throttleBurst)
		if err := t.l.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// lazyBlocks tracks which blocks of a lazily loaded volume's files are loaded. Files are
// keyed by their inode on the backing directory (hardlinks share one); a file not in the
// map (created after the volume was) is local and loaded.
type lazyBlocks struct {
	blockSize int64
	latency   time.Duration

	mu    sync.Mutex
	files map[uint64]*lazyFile
	// left counts blocks not loaded yet.
	left int64

	// firstReads counts requests that waited for a block; loaded counts blocks loaded by
	// reads, hydrated those loaded by the initialization rate.
	firstReads, loaded, hydrated atomic.Int64
}

type lazyFile struct {
	bits []uint64 // one bit per block: loaded
	// loading: blocks a request is fetching now, closed when they are loaded.
	loading map[int64]chan struct{}
	blocks  int64
}

func newLazyBlocks(blockSize int64, latency time.Duration) *lazyBlocks {
	return &lazyBlocks{blockSize: blockSize, latency: latency, files: map[uint64]*lazyFile{}}
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
	f := &lazyFile{bits: make([]uint64, (n+63)/64), loading: map[int64]chan struct{}{}, blocks: n}
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

// forget drops a file whose inode now belongs to a new file (created on the volume).
func (l *lazyBlocks) forget(ino uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.files[ino]
	if !ok {
		return
	}
	for b := range f.blocks {
		if !f.has(b) {
			l.left--
		}
	}
	delete(l.files, ino)
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
// they are, after FirstReadLatency if this request has to load some (once per request, for
// all of them), or when the request already loading them is done.
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
		t := time.NewTimer(l.latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
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
			if err := lim.WaitN(ctx, int(l.blockSize)); err != nil {
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

// VolumeStats is what a volume has served since nodesim first mounted it.
type VolumeStats struct {
	// BytesRead and BytesWritten count file data through the volume's FUSE mount.
	BytesRead, BytesWritten int64
	// Lazy is set for a volume created from a snapshot that loads lazily; FirstReads counts
	// the read requests that waited for a block, BlocksLoaded the blocks they loaded,
	// BlocksHydrated those the initialization rate loaded, BlocksLeft those still in S3.
	Lazy                                     bool
	FirstReads, BlocksLoaded, BlocksHydrated int64
	BlocksLeft                               int64
	// BytesPerSecond is the volume's cap on reads and writes together (0: unlimited);
	// FirstReadLatency and InitializationBytesPerSecond its lazy-loading model.
	BytesPerSecond               float64
	FirstReadLatency             time.Duration
	InitializationBytesPerSecond float64
}

// mibps formats bytes per second as MiB/s for logs.
func mibps(v float64) string {
	if v <= 0 || math.IsInf(v, 1) {
		return "unlimited"
	}
	return strconv.FormatFloat(v/(1<<20), 'f', -1, 64) + " MiB/s"
}
