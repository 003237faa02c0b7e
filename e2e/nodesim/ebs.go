package nodesim

import (
	"context"
	"fmt"
	"math"
	"strconv"
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
//     there) splits the cap between them, as on EBS;
//   - an IOPS cap (Options.EBS.IOPS, or gp3's StorageClass parameter "iops"): every READ
//     and WRITE request counts one I/O per 256 KiB, as EBS counts an SSD volume's I/Os.
//     gp3's baseline is 3000, which a cache of small files meets about when it meets gp3's
//     default throughput (125 MiB/s is 3000 I/Os of 43 KiB). The kernel's first read of a
//     snapshot's directory or inode table block since the mount counts too (below); xattrs
//     and the filesystem's journal are not counted;
//   - lazy loading: a volume created from a snapshot has its data in S3 until first read, so
//     a read that touches a block (BlockSize, EBS's 512 KiB) not loaded yet waits
//     FirstReadLatency, once per request, and then the blocks it touched are loaded. One
//     request in flight gets at most BlockSize/FirstReadLatency; throughput grows with the
//     reads in flight (which is why AWS initializes such a volume with fio and a deep queue,
//     and why the copier keeps many reads in flight), but only up to the volume's lazy
//     loading rate (LazyBytesPerSecond), whatever the queue depth: S3 feeds a volume at tens
//     of MB/s (eks-realities.md: a 200 GB cache restores lazily in 30 to 110 minutes, 29 to
//     106 MiB/s), so a lazily loaded volume's reads of new blocks run at the lower of that
//     rate and its throughput cap;
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
// little more than on a real volume. Metadata loads lazily too (lazy.go): a directory's
// entries on its first listing or lookup, an inode's table block on its first lookup. The
// kernel's first read of each since the mount is an I/O under the throughput and IOPS caps
// (a directory's blocks; for an inode, ext4's 128 KiB inode table readahead window),
// whether or not an initialization rate loaded it already; later ones hit the page cache. Waits on the model are uninterruptible, as a disk's are: only the
// volume's release ends them (EIO).

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
	// LazyBytesPerSecond bounds how fast a lazily loaded volume's first reads load blocks
	// from S3, however many are in flight (the bytes of the blocks' data, so small files
	// are not charged a whole block each). 0 means DefaultLazyBytesPerSecond; negative,
	// unbounded. The StorageClass parameter ParameterLazyLoadBytesPerSecond sets it per class.
	LazyBytesPerSecond float64
	// IOPS caps each volume's READ and WRITE requests, one I/O per 256 KiB. 0 means
	// DefaultIOPS; negative, no cap. gp3's StorageClass parameter ParameterIOPS sets it per
	// class.
	IOPS float64
}

const (
	// DefaultVolumeBytesPerSecond is each volume's throughput cap unless set: 256 MiB/s,
	// enough for the suite's small caches not to notice.
	DefaultVolumeBytesPerSecond = 256 << 20
	// DefaultIOPS is each volume's I/O cap unless set: gp3's baseline of 3000 scaled as the
	// default throughput is (256 MiB/s against gp3's 125), so that a cache of small files
	// meets it where it would meet gp3's, relative to the throughput.
	DefaultIOPS = 6000
	// DefaultBlockSize is EBS's snapshot block size.
	DefaultBlockSize = 512 << 10
	// DefaultFirstReadLatency is a first read's wait for its block: with 64 reads of 512 KiB
	// in flight a lazily loaded volume can reach 6.4 GiB/s, with one 100 MiB/s.
	DefaultFirstReadLatency = 5 * time.Millisecond
	// DefaultLazyBytesPerSecond is how fast a lazily loaded volume loads blocks on first read
	// unless set: 48 MiB/s, a 200 GB cache in 66 minutes, within the 30 to 110 minutes (29 to
	// 106 MiB/s) that lazily loaded restores take on EBS (eks-realities.md; AWS publishes no
	// rate). It is not scaled up for tests: the suite's small caches load in milliseconds.
	DefaultLazyBytesPerSecond = 48 << 20
	// ioSize is the I/O size EBS counts an SSD volume's IOPS in: a larger request is several.
	ioSize = 256 << 10

	// ParameterThroughput is the EBS CSI driver's gp3 StorageClass parameter (MiB/s); nodesim
	// caps the reads and writes (together) of the class's volumes at it.
	ParameterThroughput = "throughput"
	// ParameterVolumeInitializationRate is the EBS CSI driver's StorageClass parameter (MiB/s)
	// for volumes created from snapshots; EC2 accepts 100 to 300.
	ParameterVolumeInitializationRate = "volumeInitializationRate"
	// ParameterIOPS is the EBS CSI driver's gp3 StorageClass parameter (I/O operations per
	// second); nodesim caps the class's volumes at it (without it, at Options.EBS.IOPS).
	ParameterIOPS = "iops"
	// ParameterLazyLoadBytesPerSecond is nodesim's own StorageClass parameter (bytes/s; EBS
	// has none, its rate is S3's): the lazy loading rate of the class's volumes.
	ParameterLazyLoadBytesPerSecond = "lazyLoadBytesPerSecond"

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
	if o.IOPS == 0 {
		o.IOPS = DefaultIOPS
	}
	if o.FirstReadLatency == 0 {
		o.FirstReadLatency = DefaultFirstReadLatency
	}
	if o.LazyBytesPerSecond == 0 {
		o.LazyBytesPerSecond = DefaultLazyBytesPerSecond
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
	// lazyRate (bytes/s) bounds the loads of first reads; <= 0 is unbounded.
	lazyRate float64
	// iops caps READ and WRITE requests (one I/O per ioSize); <= 0 is no cap.
	iops float64
	// initRate (bytes/s) loads the blocks in the background; 0 for none.
	initRate float64
}

// modelFor is the model of a volume of a class with the given parameters, created from a
// snapshot (fromSnapshot) with or without Fast Snapshot Restore. A parameter EC2 would refuse
// is an error whose text is what the CSI driver reports.
func (o EBSOptions) modelFor(params map[string]string, fromSnapshot, fsr bool) (volumeModel, error) {
	o = o.withDefaults()
	m := volumeModel{rate: o.BytesPerSecond, blockSize: o.BlockSize, iops: o.IOPS}
	if v, ok := params[ParameterThroughput]; ok {
		mib, err := strconv.ParseFloat(v, 64)
		if err != nil || mib <= 0 {
			return m, fmt.Errorf("InvalidParameterValue: invalid %s %q: want a positive number of MiB/s", ParameterThroughput, v)
		}
		m.rate = mib * (1 << 20)
	}
	if v, ok := params[ParameterIOPS]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return m, fmt.Errorf("InvalidParameterValue: invalid %s %q: want a positive integer", ParameterIOPS, v)
		}
		m.iops = float64(n)
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
		m.lazyRate = o.LazyBytesPerSecond
		if v, ok := params[ParameterLazyLoadBytesPerSecond]; ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil || n <= 0 {
				return m, fmt.Errorf("InvalidParameterValue: invalid %s %q: want a positive number of bytes/s", ParameterLazyLoadBytesPerSecond, v)
			}
			m.lazyRate = n
		}
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

// newOpsThrottle is a bucket of I/Os at iops per second (nil for iops <= 0), whose burst
// holds the I/Os of the largest request.
func newOpsThrottle(iops float64) *throttle {
	if iops <= 0 {
		return nil
	}
	return &throttle{rate.NewLimiter(rate.Limit(iops), throttleBurst/ioSize)}
}

// reserve books n bytes (or I/Os) at now, in pieces of at most the burst, and returns how
// long from now they may pass.
func (t *throttle) reserve(now time.Time, n int) (time.Duration, []*rate.Reservation) {
	if t == nil {
		return 0, nil
	}
	var delay time.Duration
	var rs []*rate.Reservation
	for n > 0 {
		k := min(n, t.l.Burst())
		r := t.l.ReserveN(now, k)
		rs = append(rs, r)
		delay = max(delay, r.DelayFrom(now))
		n -= k
	}
	return delay, rs
}

// takeAll waits until n bytes may pass io and ios(n) I/Os ops, booked in both at once: an
// EBS volume serves up to its throughput and its IOPS at the same time, so a mix of small
// and large requests can meet both limits. Waiting at one bucket and then the other could
// leave each idle while requests queued at the other. A cancelled wait gives its booking
// back.
func takeAll(ctx context.Context, io, ops *throttle, n int) error {
	delay, cancel := book(time.Now(), io, ops, n)
	if delay <= 0 {
		return nil
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		cancel(time.Now())
		return ctx.Err()
	}
}

// book reserves a request of n bytes in io and its I/Os in ops at now, and returns how long
// from now it may pass (the later of the two) and how to give the booking back.
func book(now time.Time, io, ops *throttle, n int) (time.Duration, func(at time.Time)) {
	dIO, rIO := io.reserve(now, n)
	dOps, rOps := ops.reserve(now, ios(n))
	return max(dIO, dOps), func(at time.Time) {
		for _, rs := range [][]*rate.Reservation{rIO, rOps} {
			for i := len(rs) - 1; i >= 0; i-- {
				rs[i].CancelAt(at)
			}
		}
	}
}

// VolumeStats is what a volume has served since nodesim first mounted it.
type VolumeStats struct {
	// BytesRead and BytesWritten count file data through the volume's FUSE mount; ReadIOs
	// and WriteIOs the I/Os its reads and writes counted as (one per 256 KiB of each
	// request).
	BytesRead, BytesWritten int64
	ReadIOs, WriteIOs       int64
	// Lazy is set for a volume created from a snapshot that loads lazily; FirstReads counts
	// the read requests that waited for a block, BlocksLoaded the blocks they loaded,
	// BlocksHydrated those the initialization rate loaded, BlocksLeft those still in S3.
	Lazy                                     bool
	FirstReads, BlocksLoaded, BlocksHydrated int64
	BlocksLeft                               int64
	// BytesPerSecond is the volume's cap on reads and writes together (0: unlimited);
	// FirstReadLatency, LazyBytesPerSecond (0: unbounded) and InitializationBytesPerSecond
	// its lazy-loading model; IOPS its I/O cap (0: none).
	BytesPerSecond               float64
	FirstReadLatency             time.Duration
	LazyBytesPerSecond           float64
	InitializationBytesPerSecond float64
	IOPS                         float64
	// Timeline is what the volume served in each TimelineStep since it was provisioned.
	Timeline []Served
}

// ModeledReadBytesPerSecond is the fastest the volume can serve reads of blocks not loaded
// yet: the lower of its throughput cap and, if it loads lazily, its lazy loading rate (0:
// unbounded). A restore's share of the modeled throughput is measured against it.
func (s VolumeStats) ModeledReadBytesPerSecond() float64 {
	r := s.BytesPerSecond
	if s.Lazy && s.LazyBytesPerSecond > 0 && (r <= 0 || s.LazyBytesPerSecond < r) {
		r = s.LazyBytesPerSecond
	}
	return r
}

// ModeledReadTime is the least time the volume's model lets it serve the reads it served:
// their bytes at ModeledReadBytesPerSecond or their I/Os at its IOPS cap, whichever takes
// longer (a restore of small files meets the IOPS cap first). Zero when nothing bounds them.
func (s VolumeStats) ModeledReadTime() time.Duration {
	var secs float64
	if r := s.ModeledReadBytesPerSecond(); r > 0 {
		secs = float64(s.BytesRead) / r
	}
	if s.IOPS > 0 {
		secs = max(secs, float64(s.ReadIOs)/s.IOPS)
	}
	return time.Duration(secs * float64(time.Second))
}

// ModeledTime is the least time the volume's model lets it serve everything it served, reads
// and writes: their bytes at its throughput cap (and the bytes read at its lazy loading rate,
// if lower) or their I/Os at its IOPS cap, whichever takes longest. A save's share of its
// least time is measured against it. Zero when nothing bounds them.
func (s VolumeStats) ModeledTime() time.Duration {
	var secs float64
	if s.BytesPerSecond > 0 {
		secs = float64(s.BytesRead+s.BytesWritten) / s.BytesPerSecond
	}
	if s.Lazy && s.LazyBytesPerSecond > 0 {
		secs = max(secs, float64(s.BytesRead)/s.LazyBytesPerSecond)
	}
	if s.IOPS > 0 {
		secs = max(secs, float64(s.ReadIOs+s.WriteIOs)/s.IOPS)
	}
	return time.Duration(secs * float64(time.Second))
}

// mibps formats bytes per second as MiB/s for logs.
func mibps(v float64) string {
	if v <= 0 || math.IsInf(v, 1) {
		return "unlimited"
	}
	return strconv.FormatFloat(v/(1<<20), 'f', -1, 64) + " MiB/s"
}

// ScaledGP3IOPS is gp3's baseline IOPS (3000 at its default 125 MiB/s) scaled to a throughput
// of mibps: the "iops" a test class capped at mibps sets, so that its volumes meet the IOPS
// cap where gp3's would, relative to their throughput.
func ScaledGP3IOPS(mibps int) int { return max(1, 3000*mibps/125) }
