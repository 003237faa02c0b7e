package nodesim

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes/copier"
)

func TestModelFor(t *testing.T) {
	o := EBSOptions{}
	for _, tc := range []struct {
		name          string
		params        map[string]string
		snap, fsr     bool
		wantErr       string
		read, init    float64
		lazyRate      float64
		iops          float64
		lazy          bool
		wantReadLimit bool
	}{
		{name: "defaults", read: DefaultVolumeBytesPerSecond},
		{name: "from a snapshot: lazy", snap: true, read: DefaultVolumeBytesPerSecond, lazy: true, lazyRate: DefaultLazyBytesPerSecond},
		{name: "with FSR: loaded at once", snap: true, fsr: true, read: DefaultVolumeBytesPerSecond},
		{name: "throughput", params: map[string]string{ParameterThroughput: "64"}, read: 64 << 20},
		{name: "bad throughput", params: map[string]string{ParameterThroughput: "fast"}, wantErr: "InvalidParameterValue"},
		{name: "initialization rate", params: map[string]string{ParameterVolumeInitializationRate: "200"}, snap: true, read: DefaultVolumeBytesPerSecond, init: 200 << 20, lazy: true, lazyRate: DefaultLazyBytesPerSecond},
		{name: "iops", params: map[string]string{ParameterIOPS: "3000"}, read: DefaultVolumeBytesPerSecond, iops: 3000},
		{name: "bad iops", params: map[string]string{ParameterIOPS: "0"}, wantErr: "InvalidParameterValue"},
		{name: "lazy loading rate", params: map[string]string{ParameterLazyLoadBytesPerSecond: "1048576"}, snap: true, read: DefaultVolumeBytesPerSecond, lazy: true, lazyRate: 1 << 20},
		{name: "bad lazy loading rate", params: map[string]string{ParameterLazyLoadBytesPerSecond: "slow"}, snap: true, wantErr: "InvalidParameterValue"},
		{name: "initialization rate without a snapshot", params: map[string]string{ParameterVolumeInitializationRate: "200"}, wantErr: "InvalidParameterCombination"},
		{name: "initialization rate out of range", params: map[string]string{ParameterVolumeInitializationRate: "50"}, snap: true, wantErr: "from 100 to 300"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := o.modelFor(tc.params, tc.snap, tc.fsr)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.iops == 0 {
				tc.iops = DefaultIOPS
			}
			if m.rate != tc.read || m.initRate != tc.init || (m.latency > 0) != tc.lazy || m.lazyRate != tc.lazyRate || m.iops != tc.iops {
				t.Errorf("model = %+v, want reads and writes together at %v, initialization %v, lazy %v at %v, iops %v", m, tc.read, tc.init, tc.lazy, tc.lazyRate, tc.iops)
			}
		})
	}
}

// TestLazyBlockLoadsOnce: requests that touch a block not loaded wait for one load of it, the
// blocks a request touched are loaded after it, a write loads what it covers, and a file
// created over a deleted file's inode is not lazy.
func TestLazyBlockLoadsOnce(t *testing.T) {
	l := newLazyBlocks(1<<20, 20*time.Millisecond, 0)
	l.add(7, 3<<20+1, nil) // 4 blocks
	if got := l.remaining(); got != 4 {
		t.Fatalf("%d blocks left, want 4", got)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := l.fetch(t.Context(), 7, 100, 4096); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if f, b := l.firstReads.Load(), l.loaded.Load(); f < 1 || b != 1 {
		t.Errorf("8 readers of block 0: %d waits, %d blocks loaded; want block 0 loaded once", f, b)
	}
	// A request across blocks 1 and 2 loads both.
	if err := l.fetch(t.Context(), 7, 1<<20+5, 1<<20); err != nil {
		t.Fatal(err)
	}
	l.written(7, 3<<20, 1)
	if got := l.remaining(); got != 0 {
		t.Errorf("%d blocks left after reading blocks 0-2 and writing block 3, want 0", got)
	}
	l.add(9, 1<<20, nil)
	l.forget(9)
	before := l.firstReads.Load()
	if err := l.fetch(t.Context(), 9, 0, 10); err != nil || l.firstReads.Load() != before {
		t.Errorf("a forgotten inode's read waited (%v)", err)
	}
	// A cancelled wait gives its blocks back.
	l.add(11, 1<<20, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := l.fetch(ctx, 11, 0, 10); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled fetch: %v", err)
	}
	if got := l.remaining(); got != 1 {
		t.Errorf("%d blocks left after a cancelled read, want 1", got)
	}
}

// TestLazyRateBoundsLoads: however many first reads are in flight, a lazily loaded volume
// loads its blocks no faster than its lazy loading rate, and a small file is charged its
// bytes, not a whole block. The delays are the model's, computed, not measured.
func TestLazyRateBoundsLoads(t *testing.T) {
	const block, rate = 64 << 10, 4 << 20
	l := newLazyBlocks(block, time.Millisecond, rate)
	l.add(1, 4<<20, nil) // 64 blocks: a second of the rate
	l.add(2, 1<<10, nil)
	f := l.files[1]
	var last time.Duration
	for b := range int64(64) {
		// 64 reads in flight at once, each loading its own block.
		d, _ := l.loadDelay(f, []int64{b})
		last = d
	}
	if want := 900 * time.Millisecond; last < want {
		t.Errorf("the 64th of 64 concurrent first reads of 64 KiB blocks at 4 MiB/s waits %s, want at least %s: the lazy loading rate does not bound them", last, want)
	}
	small, cancel := l.loadDelay(l.files[2], []int64{0})
	if small-last > 50*time.Millisecond {
		t.Errorf("a 1 KiB file's block queued %s behind the 64 others, want about the time of 1 KiB at 4 MiB/s", small-last)
	}
	cancel()
	if unbounded := newLazyBlocks(block, time.Millisecond, 0); unbounded.s3 != nil {
		t.Errorf("a volume without a lazy loading rate is bounded")
	}
}

func TestHydrateLoadsEveryBlock(t *testing.T) {
	l := newLazyBlocks(64<<10, time.Hour, 0)
	l.add(1, 1<<20, nil)
	l.add(2, 100, nil)
	l.add(3, 10<<20, [][2]int64{{0, 100}, {5 << 20, 5<<20 + 1}}) // two blocks of data, the rest holes
	l.hydrate(t.Context(), 1<<30)
	if got, h := l.remaining(), l.hydrated.Load(); got != 0 || h != 19 {
		t.Errorf("after hydration %d blocks left, %d hydrated; want 0 and 19", got, h)
	}
}

// TestCopierRoundTripThroughEBSVolumes: a save through a volume's mount and a restore from a
// lazily loaded mount of its copy keep everything the copier promises (trusted.* and user.*
// xattrs, hardlinks, device nodes, FIFOs, symlinks, holes, nanosecond times, owners), and
// the model counts what went through it.
func TestCopierRoundTripThroughEBSVolumes(t *testing.T) {
	if err := checkFUSE(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "nvme-a")
	dataBytes := buildTree(t, src)
	want := treeState(t, src)

	save, err := newEBSVolume("save", mkdir(t, dir, "vol-save"), filepath.Join(dir, "mnt-save"), volumeModel{rate: 64 << 20, blockSize: DefaultBlockSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mustNil(t, save.release()) })
	mustNil(t, save.mount())
	if _, err := copier.Copy(t.Context(), src, filepath.Join(save.mountpoint, "cache"), copier.Options{}); err != nil {
		t.Fatalf("saving through the volume: %v", err)
	}
	compareStates(t, "the volume's data", want, treeState(t, filepath.Join(save.backing, "cache")))
	if st := save.stats(); st.BytesWritten < dataBytes || st.BytesWritten > dataBytes+1<<20 {
		t.Errorf("the save wrote %d bytes through the volume, want the tree's %d and its manifest", st.BytesWritten, dataBytes)
	}
	if st := save.stats(); st.WriteIOs < st.BytesWritten/ioSize {
		t.Errorf("the save's writes of %d bytes counted as %d I/Os, want at least one per %d bytes", st.BytesWritten, st.WriteIOs, ioSize)
	}
	checkTimeline(t, "save", save.stats())

	// A volume created from a snapshot of it: lazily loaded.
	snap := filepath.Join(dir, "vol-restore")
	if out, err := run("cp", "-a", save.backing, snap); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	restore, err := newEBSVolume("restore", snap, filepath.Join(dir, "mnt-restore"), volumeModel{rate: 64 << 20, blockSize: DefaultBlockSize, latency: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mustNil(t, restore.release()) })
	mustNil(t, restore.mount())
	final := filepath.Join(dir, "nvme-b", "cache")
	mustNil(t, os.MkdirAll(filepath.Dir(final), 0o755))
	if _, err := copier.Restore(t.Context(), filepath.Join(restore.mountpoint, "cache"), final+".staging", final, copier.Options{}); err != nil {
		t.Fatalf("restoring from the lazily loaded volume: %v", err)
	}
	compareStates(t, "the restored cache", want, treeState(t, final))
	st := restore.stats()
	if !st.Lazy || st.FirstReads == 0 || st.BlocksLeft != 0 {
		t.Errorf("restore volume stats %+v: want every block loaded by first reads", st)
	}
	if st.BytesRead < dataBytes {
		t.Errorf("the restore read %d bytes through the volume, want at least the tree's %d", st.BytesRead, dataBytes)
	}
	if st.ReadIOs < st.BytesRead/ioSize {
		t.Errorf("the restore's reads of %d bytes counted as %d I/Os, want at least one per %d bytes", st.BytesRead, st.ReadIOs, ioSize)
	}
	checkTimeline(t, "restore", st)
}

// checkTimeline: a volume's timeline adds up to its totals.
func checkTimeline(t *testing.T, name string, st VolumeStats) {
	t.Helper()
	var sum Served
	for _, s := range st.Timeline {
		sum.Bytes += s.Bytes
		sum.IOs += s.IOs
	}
	if sum.Bytes != st.BytesRead+st.BytesWritten || sum.IOs != st.ReadIOs+st.WriteIOs {
		t.Errorf("the %s volume's timeline adds up to %d bytes in %d I/Os, its totals to %d bytes in %d I/Os",
			name, sum.Bytes, sum.IOs, st.BytesRead+st.BytesWritten, st.ReadIOs+st.WriteIOs)
	}
}

// TestModeledTimeAndTimeline: a volume's least time is its bytes at its throughput cap or its
// I/Os at its IOPS cap, whichever is longer, reads and writes together; its timeline prints
// rates against both caps from its first busy step to its last.
func TestModeledTimeAndTimeline(t *testing.T) {
	st := VolumeStats{BytesRead: 8 << 20, BytesWritten: 24 << 20, ReadIOs: 100, WriteIOs: 700, BytesPerSecond: 32 << 20, IOPS: 400}
	if got := st.ModeledTime(); got != 2*time.Second {
		t.Errorf("800 I/Os at 400 IOPS, 32 MiB at 32 MiB/s: least time %s, want 2s (the IOPS cap)", got)
	}
	st.IOPS = 1600
	if got := st.ModeledTime(); got != time.Second {
		t.Errorf("800 I/Os at 1600 IOPS, 32 MiB at 32 MiB/s: least time %s, want 1s (the throughput cap)", got)
	}
	st.Lazy, st.LazyBytesPerSecond = true, 2<<20
	if got := st.ModeledTime(); got != 4*time.Second {
		t.Errorf("8 MiB read at a lazy rate of 2 MiB/s: least time %s, want 4s", got)
	}

	st = VolumeStats{BytesPerSecond: 32 << 20, IOPS: 400, Timeline: []Served{{}, {Bytes: 8 << 20, IOs: 100}, {}, {Bytes: 2 << 20, IOs: 50}, {}}}
	want := "    0.00s    32.0 MiB/s    400 IOPS  (100% of throughput, 100% of IOPS)\n" +
		"    0.25s     0.0 MiB/s      0 IOPS  (  0% of throughput,   0% of IOPS)\n" +
		"    0.50s     8.0 MiB/s    200 IOPS  ( 25% of throughput,  50% of IOPS)\n"
	if got := st.FormatTimeline(10); got != want {
		t.Errorf("timeline:\n%s\nwant\n%s", got, want)
	}
	want = "    0.00s    16.0 MiB/s    200 IOPS  ( 50% of throughput,  50% of IOPS)\n" +
		"    0.50s     8.0 MiB/s    200 IOPS  ( 25% of throughput,  50% of IOPS)\n"
	if got := st.FormatTimeline(2); got != want {
		t.Errorf("timeline in at most 2 lines:\n%s\nwant\n%s", got, want)
	}
}

func mustNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, dir, name string) string {
	p := filepath.Join(dir, name)
	mustNil(t, os.MkdirAll(p, 0o755))
	return p
}

func run(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

// buildTree writes a small engine-like tree with every kind of entry the copier preserves and
// returns its bytes of file data.
func buildTree(t *testing.T, root string) int64 {
	t.Helper()
	var total int64
	write := func(rel string, data []byte) string {
		p := filepath.Join(root, rel)
		mustNil(t, os.MkdirAll(filepath.Dir(p), 0o755))
		mustNil(t, os.WriteFile(p, data, 0o644))
		total += int64(len(data))
		return p
	}
	big := make([]byte, 9<<20+77) // crosses the copier's 8 MiB range
	for i := range big {
		big[i] = byte(i * 7)
	}
	write("worker/content/blobs/sha256/big", big)
	for i := range 50 {
		write(fmt.Sprintf("worker/snapshots/snapshots/%d/fs/f", i), []byte(strings.Repeat("x", 1+i*100)))
	}
	db := write("worker/metadata.db", []byte("bolt"))
	mustNil(t, os.Link(db, filepath.Join(root, "worker/metadata-link.db")))
	opaque := filepath.Join(root, "worker/snapshots/snapshots/1/fs")
	mustNil(t, unix.Lsetxattr(opaque, "trusted.overlay.opaque", []byte("y"), 0))
	mustNil(t, unix.Lsetxattr(db, "user.note", []byte("kept"), 0))
	mustNil(t, unix.Mknod(filepath.Join(root, "worker/snapshots/snapshots/2/fs/gone"), unix.S_IFCHR, 0))
	mustNil(t, unix.Mkfifo(filepath.Join(root, "worker/fifo"), 0o600))
	mustNil(t, os.Symlink("../metadata.db", filepath.Join(root, "worker/snapshots/link")))
	mustNil(t, os.Lchown(filepath.Join(root, "worker/snapshots/snapshots/3/fs/f"), 1000, 2000))
	sparse := filepath.Join(root, "worker/sparse.img")
	f, err := os.Create(sparse)
	mustNil(t, err)
	_, err = f.WriteAt([]byte("end"), 32<<20)
	mustNil(t, err)
	mustNil(t, f.Close())
	total += 3
	var all []string
	mustNil(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		all = append(all, p)
		return err
	}))
	sort.Sort(sort.Reverse(sort.StringSlice(all))) // children first, so a parent's time sticks
	for i, p := range all {
		ts := unix.NsecToTimespec(time.Unix(1700000000+int64(i), int64(i)*1000+123).UnixNano())
		mustNil(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
	}
	return total
}

// treeState describes every entry under root (the copier's manifest left out): type, mode,
// owner, size, mtime, device number, link target, xattrs, content hash, hardlink group and,
// for files with holes, that they still have them.
func treeState(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	inodes := map[uint64]string{}
	var paths []string
	mustNil(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	}))
	sort.Strings(paths)
	for _, p := range paths {
		rel, _ := filepath.Rel(root, p)
		if rel == copier.ManifestName {
			continue
		}
		var st unix.Stat_t
		mustNil(t, unix.Lstat(p, &st))
		s := fmt.Sprintf("mode=%o uid=%d gid=%d rdev=%d", st.Mode, st.Uid, st.Gid, st.Rdev)
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			s += fmt.Sprintf(" size=%d mtime=%d", st.Size, st.Mtim.Nano())
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			target, err := os.Readlink(p)
			mustNil(t, err)
			s += " -> " + target
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			if first, ok := inodes[st.Ino]; ok {
				s += " link-of=" + first
			}
			inodes[st.Ino] = rel
			f, err := os.Open(p)
			mustNil(t, err)
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			mustNil(t, err)
			s += fmt.Sprintf(" sha256=%x sparse=%v", h.Sum(nil)[:8], st.Blocks*512 < st.Size)
		}
		buf := make([]byte, 4096)
		n, err := unix.Llistxattr(p, buf)
		mustNil(t, err)
		names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
		sort.Strings(names)
		for _, name := range names {
			if name == "" {
				continue
			}
			v := make([]byte, 4096)
			k, err := unix.Lgetxattr(p, name, v)
			mustNil(t, err)
			s += fmt.Sprintf(" %s=%q", name, v[:k])
		}
		out[rel] = s
	}
	return out
}

func compareStates(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	var diffs []string
	for p, w := range want {
		if p == "." {
			continue // the root's times are the copier's to set (its manifest)
		}
		if g, ok := got[p]; !ok {
			diffs = append(diffs, p+": missing")
		} else if g != w {
			diffs = append(diffs, fmt.Sprintf("%s:\n    got  %s\n    want %s", p, g, w))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, p+": extra")
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		t.Errorf("%s differs from the source:\n  %s", what, strings.Join(diffs, "\n  "))
	}
}

// BenchmarkRestoreFromLazyVolume measures what share of a lazily loaded volume's modeled
// throughput a restore reaches, with the copier's default reads in flight and with a
// CPU-sized pool (4 workers, 1 range per file): a cache of WARMPOOL_LAZY_MB MiB (default 256)
// of small files and a few large layers, at 32 MiB/s with 10 ms per first read of a 512 KiB
// block.
//
//	go test -run '^$' -bench RestoreFromLazyVolume -benchtime 1x ./e2e/nodesim/
func BenchmarkRestoreFromLazyVolume(b *testing.B) {
	mb := benchEnv(b, "WARMPOOL_LAZY_MB", 256)
	const capacity = 32 << 20
	dir := b.TempDir()
	saved := filepath.Join(dir, "snapshot", "cache")
	if err := os.MkdirAll(saved, 0o755); err != nil {
		b.Fatal(err)
	}
	total := writeLazyTree(b, filepath.Join(dir, "nvme"), int64(mb)<<20)
	if _, err := copier.Copy(context.Background(), filepath.Join(dir, "nvme"), saved, copier.Options{}); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts copier.Options
	}{
		{"default", copier.Options{}},
		{"cpu-sized", copier.Options{Workers: 4, RangeReads: 1}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for i := range b.N {
				backing := filepath.Join(dir, fmt.Sprintf("vol-%s-%d", tc.name, i))
				if out, err := run("cp", "-a", filepath.Dir(saved), backing); err != nil {
					b.Fatalf("%v: %s", err, out)
				}
				v, err := newEBSVolume("bench", backing, filepath.Join(dir, "mnt"), volumeModel{rate: capacity, blockSize: DefaultBlockSize, latency: 10 * time.Millisecond})
				if err != nil {
					b.Fatal(err)
				}
				if err := v.mount(); err != nil {
					b.Fatal(err)
				}
				dst := filepath.Join(dir, fmt.Sprintf("restored-%s-%d", tc.name, i))
				b.ResetTimer()
				began := time.Now()
				_, err = copier.Copy(context.Background(), filepath.Join(v.mountpoint, "cache"), dst, tc.opts)
				elapsed := time.Since(began)
				b.StopTimer()
				st := v.stats()
				if rerr := v.release(); rerr != nil {
					b.Fatal(rerr)
				}
				if err != nil {
					b.Fatal(err)
				}
				share := float64(st.BytesRead) / elapsed.Seconds() / capacity
				b.ReportMetric(share, "share-of-modeled")
				b.ReportMetric(float64(st.BytesRead)/elapsed.Seconds()/(1<<20), "MiB/s")
				b.Logf("%s: %d MiB in %s: %.0f%% of %d MiB/s (%d first reads)", tc.name, total>>20, elapsed.Round(time.Millisecond), 100*share, capacity>>20, st.FirstReads)
				os.RemoveAll(dst)
				os.RemoveAll(backing)
			}
		})
	}
}

// writeLazyTree writes about target bytes: 30% in four layers, the rest in 1-64 KiB files.
func writeLazyTree(b *testing.B, root string, target int64) int64 {
	buf := make([]byte, 32<<20)
	var total int64
	write := func(rel string, n int) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		for i := range buf[:n] {
			buf[i] = byte(i*31 + n)
		}
		if err := os.WriteFile(p, buf[:n], 0o644); err != nil {
			b.Fatal(err)
		}
		total += int64(n)
	}
	large := int(min(target*3/10/4, int64(len(buf))))
	for i := range 4 {
		write(fmt.Sprintf("worker/content/blobs/sha256/layer%d", i), large)
	}
	for i := 0; total < target; i++ {
		write(fmt.Sprintf("worker/snapshots/snapshots/%d/fs/d%d/f%d", i%40, i%13, i), 1<<10+(i*7919)%(63<<10))
	}
	return total
}

// TestIOPSCap: with an IOPS cap a 1 MiB write spends four I/Os (EBS counts 256 KiB as one),
// so at four I/Os of burst a request right after it waits.
func TestIOPSCap(t *testing.T) {
	if err := checkFUSE(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// One I/O a second: the bucket refills slowly enough that what the write spent is still
	// missing from it afterwards, however long this busy machine takes between two lines.
	const iops = 1
	v, err := newEBSVolume("iops", mkdir(t, dir, "vol"), filepath.Join(dir, "mnt"), volumeModel{rate: -1, iops: iops, blockSize: DefaultBlockSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mustNil(t, v.release()) })
	mustNil(t, v.mount())
	start := time.Now()
	mustNil(t, os.WriteFile(filepath.Join(v.mountpoint, "f"), make([]byte, throttleBurst), 0o644))
	now := time.Now()
	// Had the write not spent its I/Os, the bucket would still be full (throttleBurst/ioSize);
	// having spent them, it holds at most what refilled since the write began.
	refilled := now.Sub(start).Seconds() * iops
	if got := v.ops.l.TokensAt(now); got > refilled {
		t.Errorf("%.2f I/Os left right after a 1 MiB write (at most %.2f refilled since it began): the write did not spend its I/Os", got, refilled)
	}
	if st := v.stats(); st.IOPS != iops {
		t.Errorf("stats report %v IOPS, want %d", st.IOPS, iops)
	}
}

// TestReadsAndWritesShareOneCap: an EBS volume's throughput bounds its reads and writes
// together, so bytes written through the mount leave that much less for reads.
func TestReadsAndWritesShareOneCap(t *testing.T) {
	if err := checkFUSE(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	v, err := newEBSVolume("shared", mkdir(t, dir, "vol"), filepath.Join(dir, "mnt"), volumeModel{rate: 1 << 20, blockSize: DefaultBlockSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mustNil(t, v.release()) })
	mustNil(t, v.mount())
	// FUSE writes through: the whole bucket (1 MiB) is spent on this write.
	mustNil(t, os.WriteFile(filepath.Join(v.mountpoint, "f"), make([]byte, throttleBurst), 0o644))
	now := time.Now()
	r := v.io.l.ReserveN(now, 256<<10)
	defer r.CancelAt(now)
	if !r.OK() || r.DelayFrom(now) == 0 {
		t.Errorf("a read right after a write of the whole burst would not wait: reads and writes do not share the volume's cap")
	}
}

// TestLazyMetadataLoadsOnFirstLook: on a volume created from a snapshot, a directory's
// entries load from S3 when it is first listed or looked in, and an inode's table block when
// the inode is first looked up; each once. A directory made on the volume costs nothing.
func TestLazyMetadataLoadsOnFirstLook(t *testing.T) {
	if err := checkFUSE(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	backing := mkdir(t, dir, "vol")
	for _, d := range []string{"a", "b"} {
		mustNil(t, os.MkdirAll(filepath.Join(backing, d), 0o755))
		mustNil(t, os.WriteFile(filepath.Join(backing, d, "f"), []byte("x"), 0o644))
	}
	ino := func(rel string) uint64 {
		var st unix.Stat_t
		mustNil(t, unix.Lstat(filepath.Join(backing, rel), &st))
		return st.Ino
	}
	v, err := newEBSVolume("meta", backing, filepath.Join(dir, "mnt"), volumeModel{rate: -1, blockSize: DefaultBlockSize, latency: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mustNil(t, v.release()) })
	l := v.lazy
	loaded := func(key uint64) bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		f, ok := l.files[key]
		return ok && f.has(0)
	}
	for _, d := range []string{"", "a", "b"} {
		if _, ok := l.files[dirKey(ino(d))]; !ok {
			t.Fatalf("directory %q of the snapshot is not tracked", d)
		}
	}
	if _, ok := l.files[l.inodeKey(ino("a/f"))]; !ok {
		t.Fatalf("the inode table block of a/f is not tracked")
	}
	mustNil(t, v.mount())

	if _, err := os.ReadDir(filepath.Join(v.mountpoint, "a")); err != nil {
		t.Fatal(err)
	}
	if !loaded(dirKey(ino(""))) || !loaded(dirKey(ino("a"))) {
		t.Errorf("after listing a: the root's entries loaded %v, a's %v; want both", loaded(dirKey(ino(""))), loaded(dirKey(ino("a"))))
	}
	if !loaded(l.inodeKey(ino("a"))) || !loaded(l.inodeKey(ino("a/f"))) {
		t.Errorf("after listing a: the inode table blocks of a and a/f are not loaded")
	}
	if loaded(dirKey(ino("b"))) {
		t.Errorf("b's entries loaded without anything looking in b")
	}
	// Each of those first looks was an I/O of the volume: the root's and a's entries, and
	// ext4's inode table readahead windows around a and a/f (one or two, 128 KiB each, not
	// the 512 KiB snapshot blocks S3 loaded).
	windows := map[uint64]bool{inodeWindowKey(ino("a")): true, inodeWindowKey(ino("a/f")): true}
	if got, want := v.stats().ReadIOs, int64(2+len(windows)); got != want {
		t.Errorf("after listing a: %d read I/Os, want %d (two directories, %d inode table windows)", got, want, len(windows))
	}
	var dirBytes int64
	for _, d := range []string{"", "a"} {
		var st unix.Stat_t
		mustNil(t, unix.Lstat(filepath.Join(backing, d), &st))
		dirBytes += st.Size
	}
	if got, want := v.stats().BytesRead, dirBytes+int64(len(windows))*inodeReadahead; got != want {
		t.Errorf("after listing a: %d bytes read, want %d (the two directories' blocks and %d windows of %d)", got, want, len(windows), inodeReadahead)
	}
	reads, ops := l.firstReads.Load(), v.stats().ReadIOs
	if _, err := os.ReadDir(filepath.Join(v.mountpoint, "a")); err != nil {
		t.Fatal(err)
	}
	if got := l.firstReads.Load(); got != reads {
		t.Errorf("listing a again waited on S3 %d more times, want 0", got-reads)
	}
	if got := v.stats().ReadIOs; got != ops {
		t.Errorf("listing a again read the volume %d more times, want 0 (the page cache has it)", got-ops)
	}
	var st unix.Stat_t
	mustNil(t, unix.Lstat(filepath.Join(v.mountpoint, "b", "f"), &st))
	if !loaded(dirKey(ino("b"))) {
		t.Errorf("a lookup in b did not load b's entries")
	}

	// A directory made on the volume, over a deleted snapshot directory's inode number or
	// not, has entries of its own: listing it waits for nothing.
	mustNil(t, os.RemoveAll(filepath.Join(v.mountpoint, "b")))
	mustNil(t, os.Mkdir(filepath.Join(v.mountpoint, "c"), 0o755))
	reads = l.firstReads.Load()
	if _, err := os.ReadDir(filepath.Join(v.mountpoint, "c")); err != nil {
		t.Fatal(err)
	}
	if got := l.firstReads.Load(); got != reads {
		t.Errorf("listing a directory made on the volume waited on S3 %d times, want 0", got-reads)
	}
}

// TestModeledReadTime: the least time a volume's model allows for what it read is its bytes
// at the lower of its cap and lazy loading rate, or its read I/Os at its IOPS cap, whichever
// is longer.
func TestModeledReadTime(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   VolumeStats
		want time.Duration
	}{
		{"bytes bound", VolumeStats{BytesRead: 64 << 20, ReadIOs: 256, BytesPerSecond: 32 << 20, IOPS: 3000}, 2 * time.Second},
		{"lazy rate bound", VolumeStats{BytesRead: 64 << 20, ReadIOs: 256, BytesPerSecond: 64 << 20, Lazy: true, LazyBytesPerSecond: 16 << 20, IOPS: 3000}, 4 * time.Second},
		{"IOPS bound: small files", VolumeStats{BytesRead: 64 << 20, ReadIOs: 6000, BytesPerSecond: 64 << 20, IOPS: 1000}, 6 * time.Second},
		{"no IOPS cap", VolumeStats{BytesRead: 64 << 20, ReadIOs: 6000, BytesPerSecond: 64 << 20}, time.Second},
		{"unbounded", VolumeStats{BytesRead: 64 << 20, ReadIOs: 6000}, 0},
	} {
		if got := tc.st.ModeledReadTime(); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestThroughputAndIOPSAtOnce: a volume serves up to its throughput and its IOPS at the same
// time, so a mix of small requests (which meet the IOPS cap) and large ones (which meet the
// throughput cap) passes in the longer of the two limits' times, not in their sum. The
// delays are the model's bookings, computed, not measured.
func TestThroughputAndIOPSAtOnce(t *testing.T) {
	io, ops := newThrottle(1<<20), newOpsThrottle(32) // 1 MiB/s, 32 IOPS
	now := time.Now()
	var last time.Duration
	var bytes, n int
	// 64 requests of 8 KiB (64 I/Os, half a MiB) with two of 1 MiB (8 I/Os) among them.
	for i := range 66 {
		size := 8 << 10
		if i%33 == 16 {
			size = throttleBurst
		}
		d, _ := book(now, io, ops, size)
		last = max(last, d)
		bytes += size
		n += ios(size)
	}
	// What each bucket needs beyond its burst (1 MiB, 4 I/Os).
	byBytes := time.Duration(float64(bytes-throttleBurst) / (1 << 20) * float64(time.Second))
	byIOs := time.Duration(float64(n-throttleBurst/ioSize) / 32 * float64(time.Second))
	want := max(byBytes, byIOs)
	if last < want-10*time.Millisecond || last > want+10*time.Millisecond {
		t.Errorf("%d bytes in %d I/Os at 1 MiB/s and 32 IOPS pass after %s, want %s (the longer of %s and %s; one limit after the other would be about %s)",
			bytes, n, last, want, byBytes, byIOs, byBytes+byIOs)
	}
}
