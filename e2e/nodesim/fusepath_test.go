package nodesim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

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
	mb := benchEnv(b, "WARMPOOL_LAZY_MB", 256)
	dir := b.TempDir()
	src := filepath.Join(dir, "nvme")
	total := writeLazyTree(b, src, int64(mb)<<20)
	unlimited := volumeModel{rate: -1, blockSize: DefaultBlockSize}
	backing := filepath.Join(dir, "vol")
	if err := os.MkdirAll(backing, 0o755); err != nil {
		b.Fatal(err)
	}
	mounted := func(f func(mnt string) error) phase {
		return onFreshMount(b, backing, filepath.Join(dir, "mnt"), unlimited, f)
	}
	for i := range b.N {
		os.RemoveAll(filepath.Join(backing, "cache"))
		var m copier.Manifest
		save := mounted(func(mnt string) (err error) {
			m, err = copier.Copy(context.Background(), src, filepath.Join(mnt, "cache"), copier.Options{})
			return err
		})
		base := sourceBaseline(b, &m)
		// The walk of the unchanged files, one directory at a time and DefaultWalkDirs at once.
		incrSerial := mounted(func(mnt string) error {
			_, err := copier.Copy(context.Background(), src, filepath.Join(mnt, "cache"), copier.Options{Previous: &m, Baseline: base, WalkDirs: 1})
			return err
		})
		incr := mounted(func(mnt string) error {
			_, err := copier.Copy(context.Background(), src, filepath.Join(mnt, "cache"), copier.Options{Previous: &m, Baseline: base})
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

// phase is what one copy through a mount took: wall time and this process's CPU time.
// phase is what one copy onto a volume cost: its time, this process's CPU and what the
// volume served.
type phase struct {
	wall, cpu time.Duration
	vol       VolumeStats
}

// onFreshMount runs f on a fresh mount of the volume at backing, so the kernel's caches start
// cold, as for a new save or restore Job. Under load the wall times mostly say how busy the
// machine is; the CPU time of this process (the copier's system calls, the kernel's FUSE
// work on their behalf, and the FUSE server) is what the loopback costs.
func onFreshMount(b *testing.B, backing, mnt string, m volumeModel, f func(mnt string) error) phase {
	b.Helper()
	v, err := newEBSVolume("fuse-path", backing, mnt, m)
	if err != nil {
		b.Fatal(err)
	}
	if err := v.mount(); err != nil {
		b.Fatal(err)
	}
	began, cpuBefore := time.Now(), processCPU(b)
	err = f(v.mountpoint)
	elapsed := phase{time.Since(began), processCPU(b) - cpuBefore, v.stats()}
	if rerr := v.release(); rerr != nil {
		b.Fatal(rerr)
	}
	if err != nil {
		b.Fatal(err)
	}
	return elapsed
}

// BenchmarkIncrementalSave is the copier alone on the EBS model, without a cluster beside
// it: a full save of writeLazyTree's tree (WARMPOOL_LAZY_MB MiB, default 256) onto an empty
// volume at WARMPOOL_EBS_MIBPS (default 64) MiB/s and IOPS scaled to it from gp3's, then three
// incremental saves, each after
// another 5% of the files changed, each onto a volume made from the previous save's
// snapshot: the same data, lazily loaded (its directories and inodes too), as the save
// volume that warmpool creates from the previous VolumeSnapshot. e2e's BenchmarkCacheOnEBS
// runs the same through the cluster; this one says how much of its incremental save is the
// copier's own.
//
//	WARMPOOL_LAZY_MB=1024 go test -run '^$' -bench IncrementalSave -benchtime 1x ./e2e/nodesim/
func BenchmarkIncrementalSave(b *testing.B) {
	mb, mibps := benchEnv(b, "WARMPOOL_LAZY_MB", 256), benchEnv(b, "WARMPOOL_EBS_MIBPS", 64)
	dir := b.TempDir()
	src, backing, mnt := filepath.Join(dir, "nvme"), filepath.Join(dir, "vol"), filepath.Join(dir, "mnt")
	writeLazyTree(b, src, int64(mb)<<20)
	if err := os.MkdirAll(backing, 0o755); err != nil {
		b.Fatal(err)
	}
	// Volumes of a class at mibps, as nodesim provisions them: empty, and made from a snapshot.
	class := map[string]string{ParameterThroughput: strconv.Itoa(mibps), ParameterIOPS: strconv.Itoa(ScaledGP3IOPS(mibps))}
	capped, err := EBSOptions{}.modelFor(class, false, false)
	if err != nil {
		b.Fatal(err)
	}
	clone, err := EBSOptions{}.modelFor(class, true, false)
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		os.RemoveAll(filepath.Join(backing, "cache"))
		var m copier.Manifest
		full := onFreshMount(b, backing, mnt, capped, func(mnt string) (err error) {
			m, err = copier.Copy(context.Background(), src, filepath.Join(mnt, "cache"), copier.Options{})
			return err
		})
		fullBytes := m.Stats.CopiedBytes
		var worst phase
		var worstBytes int64
		for round := range 3 {
			base := sourceBaseline(b, &m)
			changeEvery(b, src, 20, round)
			prev := m
			incr := onFreshMount(b, backing, mnt, clone, func(mnt string) (err error) {
				m, err = copier.Copy(context.Background(), src, filepath.Join(mnt, "cache"), copier.Options{Previous: &prev, Baseline: base})
				return err
			})
			b.Logf("incremental save %d: %d of %d files changed, %d MiB copied in %s (%s CPU), %.1f%% of the full save's time; %d first reads loaded %d blocks",
				round+1, m.Stats.CopiedFiles, m.Totals.Files, m.Stats.CopiedBytes>>20, incr.wall.Round(time.Millisecond), incr.cpu.Round(time.Millisecond), 100*incr.wall.Seconds()/full.wall.Seconds(),
				incr.vol.FirstReads, incr.vol.BlocksLoaded)
			if incr.wall > worst.wall {
				worst, worstBytes = incr, m.Stats.CopiedBytes
			}
		}
		b.ReportMetric(full.wall.Seconds(), "full-save-s")
		b.ReportMetric(worst.wall.Seconds(), "incr-save-s")
		b.ReportMetric(worst.wall.Seconds()/full.wall.Seconds(), "incr/full-time")
		b.ReportMetric(float64(worstBytes)/float64(fullBytes), "incr/full-bytes")
		b.Logf("%d MiB in %d files at %d MiB/s: full save %s (%s CPU); slowest incremental %s (%s CPU)",
			fullBytes>>20, m.Totals.Files, mibps, full.wall.Round(time.Millisecond), full.cpu.Round(time.Millisecond), worst.wall.Round(time.Millisecond), worst.cpu.Round(time.Millisecond))
	}
}

// changeEvery rewrites the start of every n-th regular file under root (in walk order,
// from the k-th), as a build that touched them would: new content and mtime, same size.
func changeEvery(b *testing.B, root string, n, k int) {
	i := 0
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		i++
		if i%n != k {
			return nil
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, werr := f.WriteAt([]byte(fmt.Sprintf("changed %d %d", k, time.Now().UnixNano())), 0)
		return errors.Join(werr, f.Close())
	})
	if err != nil {
		b.Fatal(err)
	}
}

// sourceBaseline is what a restore's manifest tells a save (copier.ReadBaseline): the source
// is as m says, untouched since now.
func sourceBaseline(tb testing.TB, m *copier.Manifest) *copier.Baseline {
	tb.Helper()
	base, err := copier.BaselineNow(tb.TempDir(), m)
	if err != nil {
		tb.Fatal(err)
	}
	return &base
}
