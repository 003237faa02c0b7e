package cachejob

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes/storagecheck"
)

// Measure walks a cache tree and counts what a copy of it takes: allocated bytes (the copier
// keeps holes, so st_blocks is what it writes) and inodes, a hardlinked file once. The save
// measures before it copies, so a cache that cannot fit its volume is refused in the time of
// a walk instead of failing with ENOSPC after most of a copy.
func Measure(ctx context.Context, dir string) (storagecheck.Usage, error) {
	var u storagecheck.Usage
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &fs.PathError{Op: "lstat", Path: p, Err: err}
		}
		if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			k := inode{uint64(st.Dev), st.Ino} //nolint:unconvert // st.Dev is 32 bits on some platforms
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		u.Inodes++
		u.Bytes += st.Blocks * 512
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("measuring the cache at %s, %w", dir, err)
	}
	return u, nil
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
