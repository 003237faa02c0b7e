package copier

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	// copyChunk bounds one copy_file_range/pread call: big enough that the
	// syscall cost vanishes, small enough that cancellation and the rate
	// limiter react within a few milliseconds.
	copyChunk = 8 << 20
	bufSize   = 1 << 20
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// copyContents copies the size bytes of src into the empty file dst, writing
// only the data extents so that holes stay holes, then truncates dst to size
// (which also recreates a trailing hole). If h is set, it receives the
// logical content, holes included as zeros, so the checksum matches what a
// reader of the file sees.
//
// A file whose allocated blocks cover its size cannot have holes, so the
// SEEK_DATA/SEEK_HOLE walk (two syscalls) is only done for files that might
// be sparse; the engine's content store is almost all small dense files.
//
// It returns how many bytes of data (not holes) it copied.
func (c *copier) copyContents(ctx context.Context, src, dst int, size, blocks int64, h hash.Hash) (int64, error) {
	if size == 0 {
		return 0, nil
	}
	if !c.large(size) {
		c.gate.smallStarted()
		defer c.gate.smallDone()
	}
	if blocks*512 >= size {
		return size, c.copyRange(ctx, src, dst, 0, size, h)
	}
	var copied int64
	off := int64(0)
	for off < size {
		data, err := unix.Seek(src, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				// No SEEK_DATA on this filesystem: the rest is data.
				data = off
			} else {
				return copied, fmt.Errorf("finding data after offset %d: %w", off, err)
			}
		}
		if data >= size {
			break
		}
		end, err := unix.Seek(src, data, unix.SEEK_HOLE)
		if err != nil || end > size {
			// A file that grew is caught by the caller's change check; copy
			// what was there when we looked.
			end = size
		}
		if h != nil {
			hashZeros(h, data-off)
		}
		if err := c.copyRange(ctx, src, dst, data, end, h); err != nil {
			return copied, err
		}
		copied += end - data
		off = end
	}
	if h != nil && off < size {
		hashZeros(h, size-off)
	}
	if err := unix.Ftruncate(dst, size); err != nil {
		return copied, fmt.Errorf("truncating to %d bytes: %w", size, err)
	}
	return copied, nil
}

// copyRange copies [off, end) of src to the same offsets of dst. Without a
// hash, a range of several chunks is split into chunks that up to
// Options.RangeReads goroutines copy at once (positional reads and writes,
// so their order does not matter): one reader per file would leave a large
// file on a high-latency source (a lazily loaded EBS volume) with a single
// read in flight. A hash needs the bytes in order, so with one the range is
// copied front to back.
func (c *copier) copyRange(ctx context.Context, src, dst int, off, end int64, h hash.Hash) error {
	chunk := int64(c.chunk)
	if h != nil || c.opts.RangeReads <= 1 || end-off <= chunk {
		return c.copyRangeSeq(ctx, src, dst, off, end, h)
	}
	next := make(chan int64)
	errs := make(chan error, c.opts.RangeReads)
	var wg sync.WaitGroup
	for range min(int64(c.opts.RangeReads), (end-off+chunk-1)/chunk) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range next {
				n := min(o+chunk, end) - o
				err := c.gate.acquire(ctx, n)
				if err == nil {
					if err = c.hook("range", ""); err == nil {
						err = c.copyRangeSeq(ctx, src, dst, o, o+n, nil)
					}
					c.gate.release()
				}
				if err != nil {
					errs <- err
					for range next {
						// drain, so the feeder never blocks
					}
					return
				}
			}
		}()
	}
feed:
	for o := off; o < end; o += chunk {
		select {
		case next <- o:
		case err := <-errs:
			errs <- err
			break feed
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}

// copyRangeSeq copies [off, end) front to back. Without a hash it tries
// copy_file_range, which keeps the data in the kernel (and reflinks on
// filesystems that can); a filesystem pair that cannot do it switches the
// whole copier to read/write for the rest of the run.
func (c *copier) copyRangeSeq(ctx context.Context, src, dst int, off, end int64, h hash.Hash) error {
	for off < end {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(end-off, int64(c.chunk))
		if c.limiter != nil {
			if err := c.limiter.WaitN(ctx, int(n)); err != nil {
				return err
			}
		}
		var done int64
		var err error
		if h == nil && !c.noCFR.Load() {
			done, err = cfr(src, dst, off, n)
			if err != nil && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) ||
				errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)) && done == 0 {
				c.noCFR.Store(true)
				done, err = preadWrite(src, dst, off, n, nil)
			}
		} else {
			done, err = preadWrite(src, dst, off, n, h)
		}
		if err != nil {
			return err
		}
		c.dataBytes.Add(done)
		off += done
	}
	return nil
}

func cfr(src, dst int, off, n int64) (int64, error) {
	in, out := off, off
	var done int64
	for done < n {
		k, err := unix.CopyFileRange(src, &in, dst, &out, int(n-done), 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return done, fmt.Errorf("copy_file_range at offset %d: %w", in, err)
		}
		if k == 0 {
			return done, fmt.Errorf("%w: ended early at offset %d", ErrSourceChanged, in)
		}
		done += int64(k)
	}
	return done, nil
}

func preadWrite(src, dst int, off, n int64, h hash.Hash) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var done int64
	for done < n {
		want := min(int64(len(buf)), n-done)
		k, err := unix.Pread(src, buf[:want], off+done)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return done, fmt.Errorf("reading at offset %d: %w", off+done, err)
		}
		if k == 0 {
			return done, fmt.Errorf("%w: ended early at offset %d", ErrSourceChanged, off+done)
		}
		if h != nil {
			h.Write(buf[:k])
		}
		for w := 0; w < k; {
			m, err := unix.Pwrite(dst, buf[w:k], off+done+int64(w))
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return done, fmt.Errorf("writing at offset %d: %w", off+done+int64(w), err)
			}
			w += m
		}
		done += int64(k)
	}
	return done, nil
}

var zeros = make([]byte, 64<<10)

func hashZeros(h hash.Hash, n int64) {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		h.Write(zeros[:k])
		n -= k
	}
}
