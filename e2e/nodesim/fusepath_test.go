package nodesim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes/copier"
)

// BenchmarkFUSEPath measures what the FUSE loopback itself costs, with the EBS model's caps
// and lazy loading off, through the real copier: a full save into a fresh mount, an
// incremental save of the unchanged tree through a fresh mount of that volume (a new save
// Job mounts its volume anew, so the kernel's caches start cold: this is the walk of the
// unchanged files, one directory at a time and DefaultWalkDirs at once), and a restore out
// of a fresh mount. The tree is writeLazyTree's (WARMPOOL_LAZY_MB MiB, default 256: 30% in
// four layers, the rest 1-64 KiB files).
//
//	go test -run '^$' -bench FUSEPath -benchtime 1x ./e2e/nodesim/
func BenchmarkFUSEPath(b *testing.B) {
	mb := 256
	if v := os.Getenv("WARMPOOL_LAZY_MB"); v != "" {
		fmt.Sscan(v, &mb)
	}
	dir := b.TempDir()
	src := filepath.Join(dir, "nvme")
	total := writeLazyTree(b, src, int64(mb)<<20)
	unlimited := volumeModel{rate: -1, blockSize: DefaultBlockSize}
	backing := filepath.Join(dir, "vol")
	if err := os.MkdirAll(backing, 0o755); err != nil {
		b.Fatal(err)
	}
	// mounted runs f on a fresh mount of the volume, so the kernel's caches start cold.
	// Under load the wall times mostly say how busy the machine is; the CPU time of this
	// process (the copier's system calls, the kernel's FUSE work on their behalf, and the
	// FUSE server) is what the loopback costs.
	cpu := func() time.Duration {
		var ru unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	type phase struct{ wall, cpu time.Duration }
	mounted := func(f func(mnt string) error) phase {
		b.Helper()
		v, err := newEBSVolume("fuse-path", backing, filepath.Join(dir, "mnt"), unlimited)
		if err != nil {
			b.Fatal(err)
		}
		if err := v.mount(); err != nil {
			b.Fatal(err)
		}
		began, cpuBefore := time.Now(), cpu()
		err = f(v.mountpoint)
		elapsed := phase{time.Since(began), cpu() - cpuBefore}
		if rerr := v.release(); rerr != nil {
			b.Fatal(rerr)
		}
		if err != nil {
			b.Fatal(err)
		}
		return elapsed
	}
	for i := range b.N {
		os.RemoveAll(filepath.Join(backing, "cache"))
		var m copier.Manifest
		save := mounted(func(mnt string) (err error) {
			m, err = copier.Copy(context.Background(), src, filepath.Join(mnt, "cache"), copier.Options{})
			return err
		})
		// The walk of the unchanged files, one directory at a time and DefaultWalkDirs at once.
		incrSerial := mounted(func(mnt string) error {
			_, err := copier.Copy(context.Background(), src, filepath.Join(mnt, "cache"), copier.Options{Previous: &m, WalkDirs: 1})
			return err
		})
		incr := mounted(func(mnt string) error {
			_, err := copier.Copy(context.Background(), src, filepath.Join(mnt, "cache"), copier.Options{Previous: &m})
			return err
		})
		dst := filepath.Join(dir, fmt.Sprintf("restored-%d", i))
		restore := mounted(func(mnt string) error {
			_, err := copier.Copy(context.Background(), filepath.Join(mnt, "cache"), dst, copier.Options{})
			return err
		})
		os.RemoveAll(dst)
		mibps := func(d time.Duration) float64 { return float64(total) / d.Seconds() / (1 << 20) }
		perFile := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(m.Totals.Files) }
		b.ReportMetric(mibps(save.wall), "save-MiB/s")
		b.ReportMetric(mibps(save.cpu), "save-MiB/cpu-s")
		b.ReportMetric(perFile(incr.cpu), "unchanged-cpu-µs/file")
		b.ReportMetric(perFile(incr.wall), "unchanged-µs/file")
		b.ReportMetric(perFile(incrSerial.wall), "unchanged-serial-walk-µs/file")
		b.ReportMetric(mibps(restore.wall), "restore-MiB/s")
		b.ReportMetric(mibps(restore.cpu), "restore-MiB/cpu-s")
		b.Logf("%d MiB in %d files, caps off: full save %s (%.0f MiB/s; %s CPU, %.0f MiB per CPU second), unchanged incremental %s (%s CPU, %.0f µs a file; walking one directory at a time %s, %s CPU), restore %s (%.0f MiB/s; %s CPU, %.0f MiB per CPU second)",
			total>>20, m.Totals.Files,
			save.wall.Round(time.Millisecond), mibps(save.wall), save.cpu.Round(time.Millisecond), mibps(save.cpu),
			incr.wall.Round(time.Millisecond), incr.cpu.Round(time.Millisecond), perFile(incr.cpu),
			incrSerial.wall.Round(time.Millisecond), incrSerial.cpu.Round(time.Millisecond),
			restore.wall.Round(time.Millisecond), mibps(restore.wall), restore.cpu.Round(time.Millisecond), mibps(restore.cpu))
	}
}
