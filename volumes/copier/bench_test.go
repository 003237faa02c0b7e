package copier

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The benchmarks share one generated tree shaped like a BuildKit/Dagger
// state dir: a content store with many small blobs and a few large ones,
// overlay snapshot dirs full of small files, and a few databases. Size:
// WARMPOOL_BENCH_MB (default 200). Every tool copies the same tree in the
// same run, so the MB/s figures compare directly.
//
//	go test -run '^$' -bench . -benchtime 3x ./volumes/copier/
//
// The copier ends with syncfs (its durability promise); cp and tar do not
// sync, so each also runs as a "+sync" variant that ends with `sync -f dst`,
// the fair comparison.

var (
	benchOnce  sync.Once
	benchDir   string
	benchBytes int64
	benchFiles []string
	benchErr   error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

func benchTree(b *testing.B) (src string, bytes int64) {
	b.Helper()
	benchOnce.Do(func() {
		mb := 200
		if v := os.Getenv("WARMPOOL_BENCH_MB"); v != "" {
			if mb, benchErr = strconv.Atoi(v); benchErr != nil {
				return
			}
		}
		benchDir, benchErr = os.MkdirTemp("", "warmpool-bench-")
		if benchErr != nil {
			return
		}
		benchErr = generateCacheTree(filepath.Join(benchDir, "src"), int64(mb)<<20)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return filepath.Join(benchDir, "src"), benchBytes
}

func generateCacheTree(root string, target int64) error {
	cc := rand.NewChaCha8([32]byte{1})
	r := rand.New(cc)
	buf := make([]byte, 64<<20)
	write := func(rel string, n int) error {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		cc.Read(buf[:n])
		if err := os.WriteFile(p, buf[:n], 0o644); err != nil {
			return err
		}
		benchBytes += int64(n)
		benchFiles = append(benchFiles, rel)
		return nil
	}
	// About 30% in four large layer blobs (at most the buffer each: a larger tree gets more
	// small files instead).
	large := min(int(target*3/10/4), len(buf))
	for i := range 4 {
		if err := write(fmt.Sprintf("worker/content/blobs/sha256/%064x", 1000+i), large); err != nil {
			return err
		}
	}
	for i := range 3 {
		if err := write(fmt.Sprintf("worker/db%d/metadata.db", i), 1<<20); err != nil {
			return err
		}
	}
	// The rest in 1–64 KiB files: half in the flat blob dir, half in
	// nested snapshot trees.
	for i := 0; benchBytes < target; i++ {
		n := 1<<10 + r.IntN(63<<10)
		rel := fmt.Sprintf("worker/content/blobs/sha256/%064x", i)
		if i%2 == 1 {
			rel = fmt.Sprintf("worker/snapshots/snapshots/%d/fs/usr/lib/d%d/f%d.so", i%40, i%13, i)
		}
		if err := write(rel, n); err != nil {
			return err
		}
	}
	return syncPath(root)
}

func syncPath(p string) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// benchCopy times copy(src, dst) into a fresh dst per iteration. Cleanup
// and a syncfs (so one iteration's writeback does not bill the next) are
// outside the timer.
func benchCopy(b *testing.B, copy func(src, dst string) error) {
	src, total := benchTree(b)
	b.SetBytes(total)
	b.ResetTimer()
	for i := range b.N {
		dst := filepath.Join(benchDir, fmt.Sprintf("dst-%d", i))
		if err := copy(src, dst); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.RemoveAll(dst); err != nil {
			b.Fatal(err)
		}
		if err := syncPath(benchDir); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %v: %v: %s", name, args, err, out)
	}
	return nil
}

func BenchmarkFullCopy(b *testing.B) {
	b.Run("copier", func(b *testing.B) {
		benchCopy(b, func(src, dst string) error {
			_, err := Copy(context.Background(), src, dst, Options{})
			return err
		})
	})
	cp := func(src, dst string) error { return run("cp", "-a", src, dst) }
	tar := func(src, dst string) error {
		if err := os.Mkdir(dst, 0o755); err != nil {
			return err
		}
		return run("sh", "-c", `tar -C "$1" -cf - . | tar -C "$2" -xf -`, "sh", src, dst)
	}
	withSync := func(f func(src, dst string) error) func(src, dst string) error {
		return func(src, dst string) error {
			if err := f(src, dst); err != nil {
				return err
			}
			return run("sync", "-f", dst)
		}
	}
	b.Run("cp-a", func(b *testing.B) { benchCopy(b, cp) })
	b.Run("cp-a+sync", func(b *testing.B) { benchCopy(b, withSync(cp)) })
	b.Run("tar", func(b *testing.B) { benchCopy(b, tar) })
	b.Run("tar+sync", func(b *testing.B) { benchCopy(b, withSync(tar)) })
	// The disk's own sequential write speed, as a ceiling for all of the above: one file of the
	// tree's size, written by dd and flushed.
	b.Run("dd", func(b *testing.B) {
		benchCopy(b, func(src, dst string) error {
			if err := os.Mkdir(dst, 0o755); err != nil {
				return err
			}
			mb := max(totalBytes(b, src)>>20, 1)
			return run("dd", "if=/dev/zero", "of="+filepath.Join(dst, "seq"), "bs=1M", fmt.Sprintf("count=%d", mb), "conv=fsync", "status=none")
		})
	})
}

// totalBytes is the size of the regular files under root.
func totalBytes(b *testing.B, root string) int64 {
	var n int64
	err := filepath.WalkDir(root, func(_ string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkIncrementalCopy re-copies after 5% of the files changed (new
// content and mtime). SetBytes is the whole tree, so its MB/s is the
// "effective" rate, comparable with a full copy's.
func BenchmarkIncrementalCopy(b *testing.B) {
	src, total := benchTree(b)
	dst := filepath.Join(benchDir, "incremental")
	defer os.RemoveAll(dst)
	if _, err := Copy(context.Background(), src, dst, Options{}); err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	b.SetBytes(total)
	b.ResetTimer()
	var copied int64
	for i := range b.N {
		b.StopTimer()
		prev, err := ReadManifest(dst)
		if err != nil {
			b.Fatal(err)
		}
		base := baselineNow(b, &prev)
		for range len(benchFiles) / 20 {
			p := filepath.Join(src, benchFiles[r.IntN(len(benchFiles))])
			fi, err := os.Stat(p)
			if err != nil {
				b.Fatal(err)
			}
			// Same size, new bytes at the start, new mtime: what a rewrite
			// looks like to the quick check.
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			f.WriteAt([]byte(fmt.Sprintf("iteration %d", i)), 0)
			f.Close()
			mt := fi.ModTime().Add(time.Duration(i+1) * time.Second)
			os.Chtimes(p, mt, mt)
		}
		if err := syncPath(benchDir); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		m, err := Copy(context.Background(), src, dst, Options{Previous: &prev, Baseline: base})
		if err != nil {
			b.Fatal(err)
		}
		copied += m.Stats.CopiedBytes
	}
	// Keep the deferred removal of the copy out of the measurement.
	b.StopTimer()
	b.ReportMetric(float64(copied)/float64(b.N)/(1<<20), "copiedMB/op")
}

// BenchmarkWalk re-copies the unchanged tree, so it measures the walk alone (every file kept
// by its Previous entry, no data copied), listing one directory at a time and
// DefaultWalkDirs at once. On a local disk with warm caches this is the walk's CPU cost and
// what two cores gain in parallel; through a FUSE mount, where each look is a round trip,
// see BenchmarkFUSEPath in e2e/nodesim.
func BenchmarkWalk(b *testing.B) {
	src, _ := benchTree(b)
	dst := filepath.Join(benchDir, "walk")
	defer os.RemoveAll(dst)
	if _, err := Copy(context.Background(), src, dst, Options{}); err != nil {
		b.Fatal(err)
	}
	for _, walkDirs := range []int{1, DefaultWalkDirs} {
		b.Run(fmt.Sprintf("dirs=%d", walkDirs), func(b *testing.B) {
			var entries int
			for range b.N {
				b.StopTimer()
				prev, err := ReadManifest(dst)
				if err != nil {
					b.Fatal(err)
				}
				entries = len(prev.Entries)
				base := baselineNow(b, &prev)
				b.StartTimer()
				m, err := Copy(context.Background(), src, dst, Options{Previous: &prev, Baseline: base, WalkDirs: walkDirs})
				if err != nil {
					b.Fatal(err)
				}
				if m.Stats.CopiedFiles != 0 {
					b.Fatalf("the unchanged tree's re-copy copied %d files", m.Stats.CopiedFiles)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(entries), "µs/entry")
		})
	}
}

// BenchmarkManifest encodes and parses the manifest of a cache of 22k entries, as a save
// writes it and an incremental save and a restore read it (the restore twice: the Job, which
// hands it to RestoreSaved, and Verify of the staging copy).
func BenchmarkManifest(b *testing.B) {
	m := Manifest{FormatVersion: FormatVersion, EngineVersion: "v0.21.8", Architecture: "amd64"}
	dirs := map[string]bool{}
	for i := range 22000 {
		p := fmt.Sprintf("worker/snapshots/snapshots/bench-%d/fs/usr/lib/d%d/f%06d.so", i%97, i%13, i)
		m.Entries = append(m.Entries, Entry{Path: p, Type: TypeFile, Size: int64(1024 + i), Mode: 0o644, MtimeNs: 1764800000123456789 + int64(i)})
		for d := path.Dir(p); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			m.Entries = append(m.Entries, Entry{Path: d, Type: TypeDir, Mode: 0o755, MtimeNs: 1764800000123456789})
		}
	}
	slices.SortFunc(m.Entries, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) })
	var buf bytes.Buffer
	encode := func() {
		buf.Reset()
		w := bufio.NewWriter(&buf)
		if err := encodeManifest(w, &m); err != nil {
			b.Fatal(err)
		}
		w.Flush()
	}
	b.Run("encode", func(b *testing.B) {
		for range b.N {
			encode()
		}
		b.SetBytes(int64(buf.Len()))
	})
	encode()
	b.Run("parse", func(b *testing.B) {
		b.SetBytes(int64(buf.Len()))
		for range b.N {
			if _, err := ParseManifest(buf.Bytes()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
