package nodesim

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes/copier"
)

// BenchmarkFUSECeiling measures what a restore from a lazily loaded volume can reach through
// nodesim's loopback on this machine, against what the copier's restore reaches, on the
// restore volume of BenchmarkCacheOnEBS (e2e/ebs_test.go): a gp3 class at
// WARMPOOL_EBS_MIBPS MiB/s (default 64) and gp3's IOPS scaled to it, lazily loaded at the
// default rate, its model built
// by modelFor as for a real claim. The ceiling is a reader that only reads, with a deep
// queue, as AWS initializes such a volume (fio, iodepth 32 and more): 64 readers, each file
// and each 8 MiB of a large file a task, 1 MiB reads, nothing written. Each is also run with
// the model off, which is the loopback alone. The tree is writeLazyTree's
// (WARMPOOL_LAZY_MB MiB, default 256).
//
//	WARMPOOL_LAZY_MB=1024 go test -run '^$' -bench FUSECeiling -benchtime 1x ./e2e/nodesim/
func BenchmarkFUSECeiling(b *testing.B) {
	mb, mibps := benchEnv(b, "WARMPOOL_LAZY_MB", 256), benchEnv(b, "WARMPOOL_EBS_MIBPS", 64)
	lazy, err := EBSOptions{}.modelFor(map[string]string{ParameterThroughput: strconv.Itoa(mibps), ParameterIOPS: strconv.Itoa(ScaledGP3IOPS(mibps))}, true, false)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	saved := filepath.Join(dir, "snapshot", "cache")
	if err := os.MkdirAll(saved, 0o755); err != nil {
		b.Fatal(err)
	}
	writeLazyTree(b, filepath.Join(dir, "nvme"), int64(mb)<<20)
	if _, err := copier.Copy(context.Background(), filepath.Join(dir, "nvme"), saved, copier.Options{}); err != nil {
		b.Fatal(err)
	}
	readers := map[string]func(src, dst string) error{
		"deep-queue-reader": func(src, _ string) error { return readAll(src, 64, 8<<20) },
		"copier": func(src, dst string) error {
			_, err := copier.Copy(context.Background(), src, dst, copier.Options{})
			return err
		},
	}
	for _, model := range []struct {
		name string
		m    volumeModel
	}{{"lazy", lazy}, {"model-off", volumeModel{rate: -1, blockSize: DefaultBlockSize}}} {
		for _, reader := range []string{"deep-queue-reader", "copier"} {
			b.Run(model.name+"/"+reader, func(b *testing.B) {
				for i := range b.N {
					// A fresh volume from the snapshot each time: every block starts in S3 and
					// the kernel's caches of the mount start cold.
					backing := filepath.Join(dir, fmt.Sprintf("vol-%s-%s-%d", model.name, reader, i))
					if out, err := run("cp", "-a", filepath.Dir(saved), backing); err != nil {
						b.Fatalf("%v: %s", err, out)
					}
					v, err := newEBSVolume("ceiling", backing, filepath.Join(dir, "mnt"), model.m)
					if err != nil {
						b.Fatal(err)
					}
					if err := v.mount(); err != nil {
						b.Fatal(err)
					}
					dst := filepath.Join(dir, "restored")
					began, cpuBefore := time.Now(), processCPU(b)
					err = readers[reader](filepath.Join(v.mountpoint, "cache"), dst)
					elapsed, cpu := time.Since(began), processCPU(b)-cpuBefore
					st := v.stats()
					if rerr := v.release(); rerr != nil {
						b.Fatal(rerr)
					}
					if err != nil {
						b.Fatal(err)
					}
					rate := float64(st.BytesRead) / elapsed.Seconds()
					b.ReportMetric(rate/(1<<20), "MiB/s")
					b.ReportMetric(cpu.Seconds(), "cpu-s")
					// The share of the least time the model allows for these reads: their bytes
					// at the modeled throughput or their I/Os at the IOPS cap, the longer.
					share := st.ModeledReadTime().Seconds() / elapsed.Seconds()
					if model.name == "lazy" {
						b.ReportMetric(share, "share-of-modeled")
					}
					b.Logf("%s, %s: %d MiB read in %d I/Os in %s, %.1f MiB/s (%.0f%% of the least the model allows, %s at %.0f MiB/s and %.0f IOPS), %s CPU",
						model.name, reader, st.BytesRead>>20, st.ReadIOs, elapsed.Round(time.Millisecond), rate/(1<<20),
						100*share, st.ModeledReadTime().Round(100*time.Millisecond), st.ModeledReadBytesPerSecond()/(1<<20), st.IOPS, cpu.Round(time.Millisecond))
					os.RemoveAll(dst)
					os.RemoveAll(backing)
				}
			})
		}
	}
}

// readAll reads every regular file under root and discards it, with readers goroutines, each
// file (and each chunk of a larger one) a task, in 1 MiB reads.
func readAll(root string, readers int, chunk int64) error {
	type task struct {
		path     string
		off, end int64
	}
	tasks := make(chan task, readers)
	errs := make(chan error, readers+1)
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			buf := make([]byte, 1<<20)
			for t := range tasks {
				if err := readRange(t.path, t.off, t.end, buf); err != nil {
					errs <- err
					for range tasks {
					}
					return
				}
			}
		})
	}
	werr := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		for off := int64(0); ; off += chunk {
			select {
			case tasks <- task{p, off, min(off+chunk, fi.Size())}:
			case err := <-errs:
				return err
			}
			if off+chunk >= fi.Size() {
				return nil
			}
		}
	})
	close(tasks)
	wg.Wait()
	errs <- werr
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func readRange(p string, off, end int64, buf []byte) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", p, err)
	}
	defer unix.Close(fd)
	for off < end {
		n, err := unix.Pread(fd, buf[:min(int64(len(buf)), end-off)], off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %s at %d: %w", p, off, err)
		}
		if n == 0 {
			return fmt.Errorf("reading %s: ended at %d, before %d", p, off, end)
		}
		off += int64(n)
	}
	return nil
}

// processCPU is this process's CPU time so far (user and system): the reader's system calls,
// the kernel's FUSE work on their behalf, and nodesim's FUSE server.
func processCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchEnv is a benchmark's positive integer knob from the environment, def when unset.
func benchEnv(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}
