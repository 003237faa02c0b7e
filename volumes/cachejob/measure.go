package cachejob

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes/storagecheck"
)

// measureDirs is how many directories Measure lists at once. A cache of many small files
// costs a walk one lstat per inode; on a node's NVMe with cold caches each may wait on the
// disk, and the measurement is on the save's critical path, inside the node's grace period.
const measureDirs = 16

// Measure walks a cache tree and counts what a copy of it takes: allocated bytes (the copier
// keeps holes, so st_blocks is what it writes) and inodes, a hardlinked file once. The save
// measures before it copies, so a cache that cannot fit its volume is refused in the time of
// a walk instead of failing with ENOSPC after most of a copy. It lists up to measureDirs
// directories at once; the first error stops it.
func Measure(ctx context.Context, dir string) (storagecheck.Usage, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	m := &measurer{ctx: ctx, fail: cancel, seen: map[inode]bool{}, slots: make(chan struct{}, measureDirs-1)}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return storagecheck.Usage{}, fmt.Errorf("measuring the cache at %s, %w", dir, &fs.PathError{Op: "lstat", Path: dir, Err: err})
	}
	var root storagecheck.Usage
	m.count(&root, &st)
	m.add(root)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		m.dir(dir)
	}
	m.wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return m.usage, fmt.Errorf("measuring the cache at %s, %w", dir, err)
	}
	return m.usage, nil
}

type inode struct{ dev, ino uint64 }

// measurer is one Measure's shared state; each directory's counts are merged once.
type measurer struct {
	ctx   context.Context
	fail  context.CancelCauseFunc
	slots chan struct{} // walkers beyond the first
	wg    sync.WaitGroup

	mu    sync.Mutex
	usage storagecheck.Usage
	seen  map[inode]bool // inodes of non-directories with more than one link
}

// count adds st to u unless it is another name of a hardlinked inode already counted.
func (m *measurer) count(u *storagecheck.Usage, st *unix.Stat_t) {
	if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		k := inode{uint64(st.Dev), st.Ino} //nolint:unconvert // st.Dev is 32 bits on some platforms
		m.mu.Lock()
		dup := m.seen[k]
		m.seen[k] = true
		m.mu.Unlock()
		if dup {
			return
		}
	}
	u.Inodes++
	u.Bytes += st.Blocks * 512
}

func (m *measurer) add(u storagecheck.Usage) {
	m.mu.Lock()
	m.usage.Inodes += u.Inodes
	m.usage.Bytes += u.Bytes
	m.mu.Unlock()
}

// dir counts the entries of dir and walks its subdirectories, on walkers of their own while
// slots are free and here (depth first) when not.
func (m *measurer) dir(dir string) {
	if err := m.ctx.Err(); err != nil {
		return
	}
	f, err := os.Open(dir)
	if err != nil {
		m.fail(err)
		return
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		m.fail(&fs.PathError{Op: "readdir", Path: dir, Err: err})
		return
	}
	var u storagecheck.Usage
	var subdirs []string
	for _, name := range names {
		var st unix.Stat_t
		// Relative to the open directory: one path lookup per entry, not one per component.
		if err := unix.Fstatat(int(f.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			m.fail(&fs.PathError{Op: "lstat", Path: filepath.Join(dir, name), Err: err})
			return
		}
		m.count(&u, &st)
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			subdirs = append(subdirs, filepath.Join(dir, name))
		}
	}
	m.add(u)
	for _, sub := range subdirs {
		select {
		case m.slots <- struct{}{}:
			m.wg.Go(func() {
				defer func() { <-m.slots }()
				m.dir(sub)
			})
		default:
			m.dir(sub)
		}
	}
}

// StatFS reads the capacity of the filesystem dir is on with statfs(2); a dir the copy has
// not created yet is on its nearest existing parent's.
func StatFS(dir string) (storagecheck.FSStat, error) {
	var st unix.Statfs_t
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		err := unix.Statfs(p, &st)
		if err == nil {
			break
		}
		if err != unix.ENOENT || p == filepath.Dir(p) {
			return storagecheck.FSStat{}, fmt.Errorf("statfs %s, %w", p, err)
		}
	}
	bs := st.Frsize
	if bs == 0 {
		bs = st.Bsize
	}
	return storagecheck.FSStat{
		BlockSize: int64(bs), Blocks: int64(st.Blocks), Free: int64(st.Bfree), Avail: int64(st.Bavail),
		Files: int64(st.Files), FilesFree: int64(st.Ffree),
	}, nil
}
