package nodesim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// ebsVolume is one provisioned volume as the EBS model serves it: its data lives in a
// directory (VolumePath, what snapshots copy, block-level, without going through the model)
// and the pods that mount it see it through a FUSE loopback mount of that directory whose
// reads and writes pay the volume's model.
type ebsVolume struct {
	handle     string
	backing    string
	mountpoint string
	model      volumeModel

	// io is the volume's throughput cap, one bucket that reads and writes share; ops its
	// IOPS cap (nil: none), in I/Os of up to ioSize.
	io, ops *throttle
	// lazy is nil unless the volume loads lazily from its snapshot.
	lazy *lazyBlocks
	// rootIno is the backing directory's inode number (go-fuse numbers the root 1).
	rootIno uint64

	// ctx ends when the volume is released; the hydrator and blocked requests stop with it.
	ctx    context.Context
	cancel context.CancelFunc

	bytesRead, bytesWritten atomic.Int64
	// readIOs and writeIOs count the I/Os reads and writes were charged (one per ioSize),
	// capped or not.
	readIOs, writeIOs atomic.Int64
	// served is what the volume served over time, for a benchmark's timeline.
	served timeline

	// server is the mount, nil until a pod first mounts the volume.
	server *fuse.Server
}

// newEBSVolume sets up the model of a volume whose data is at backing. For a lazily loaded
// one, everything there now came from the snapshot: its files' blocks, its directories'
// entries and its inodes start in S3.
func newEBSVolume(handle, backing, mountpoint string, m volumeModel) (*ebsVolume, error) {
	ctx, cancel := context.WithCancel(context.Background())
	v := &ebsVolume{
		handle: handle, backing: backing, mountpoint: mountpoint, model: m,
		io:  newThrottle(m.rate),
		ops: newOpsThrottle(m.iops),
		ctx: ctx, cancel: cancel,
		served: timeline{start: time.Now()},
	}
	var root unix.Stat_t
	if err := unix.Stat(backing, &root); err != nil {
		cancel()
		return nil, fmt.Errorf("volume %s: %w", handle, err)
	}
	v.rootIno = root.Ino
	if m.latency > 0 {
		v.lazy = newLazyBlocks(m.blockSize, m.latency, m.lazyRate)
		err := filepath.WalkDir(backing, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return err
			}
			if d.IsDir() {
				v.lazy.addDir(st.Ino, st.Size)
			}
			if st.Ino != v.rootIno {
				v.lazy.addInode(st.Ino)
			}
			if !d.Type().IsRegular() {
				return nil
			}
			var data [][2]int64
			if st.Blocks*512 < st.Size {
				if data, err = dataRanges(p, st.Size); err != nil {
					return err
				}
			}
			v.lazy.add(st.Ino, st.Size, data)
			return nil
		})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("listing the blocks of volume %s: %w", handle, err)
		}
		if m.initRate > 0 {
			go v.lazy.hydrate(ctx, m.initRate)
		}
	}
	return v, nil
}

// dataRanges lists the data extents of a sparse file (SEEK_DATA/SEEK_HOLE).
func dataRanges(p string, size int64) ([][2]int64, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	out := [][2]int64{}
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("finding the data of %s: %w", p, err)
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("finding the holes of %s: %w", p, err)
		}
		out = append(out, [2]int64{start, min(end, size)})
		off = end
	}
	return out, nil
}

// stats reports what the volume served.
func (v *ebsVolume) stats() VolumeStats {
	st := VolumeStats{
		BytesRead: v.bytesRead.Load(), BytesWritten: v.bytesWritten.Load(), ReadIOs: v.readIOs.Load(), WriteIOs: v.writeIOs.Load(),
		Timeline:         v.served.steps(),
		BytesPerSecond:   max(v.model.rate, 0),
		FirstReadLatency: v.model.latency, InitializationBytesPerSecond: v.model.initRate,
		IOPS: max(v.model.iops, 0),
	}
	if l := v.lazy; l != nil {
		st.Lazy = true
		st.LazyBytesPerSecond = max(v.model.lazyRate, 0)
		st.FirstReads, st.BlocksLoaded, st.BlocksHydrated = l.firstReads.Load(), l.loaded.Load(), l.hydrated.Load()
		st.BlocksLeft = l.remaining()
	}
	return st
}

// mountOptions are the FUSE mount's: mounted directly by nodesim (root), open to the cache
// pods' processes (which run as root, but with fewer capabilities), device nodes allowed as
// on a kubelet's mount of an EBS volume (the engine's overlay whiteouts are 0:0 char
// devices), requests up to 1 MiB, and enough background requests that kernel readahead is
// not what limits reads in flight. Attributes and entries are cached for a while: only the
// mount changes the backing directory while it is mounted.
func mountOptions(handle string) *gofs.Options {
	long := time.Minute
	return &gofs.Options{
		MountOptions: fuse.MountOptions{
			DirectMount:       true,
			DirectMountStrict: true,
			AllowOther:        true,
			FsName:            "nodesim-ebs:" + handle,
			Name:              "nodesim-ebs",
			Options:           []string{"dev"},
			MaxWrite:          throttleBurst,
			MaxBackground:     256,
		},
		EntryTimeout:    &long,
		AttrTimeout:     &long,
		NegativeTimeout: &long,
		NullPermissions: true,
	}
}

// mount serves the volume at its mountpoint.
func (v *ebsVolume) mount() error {
	if v.server != nil {
		return nil
	}
	if err := os.MkdirAll(v.mountpoint, 0o755); err != nil {
		return fmt.Errorf("creating mountpoint of volume %s: %w", v.handle, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(v.backing, &st); err != nil {
		return fmt.Errorf("volume %s: %w", v.handle, err)
	}
	root := &gofs.LoopbackRoot{Path: v.backing, Dev: uint64(st.Dev)}
	node := &ebsNode{LoopbackNode: &gofs.LoopbackNode{RootData: root}, vol: v}
	root.RootNode = node
	server, err := gofs.Mount(v.mountpoint, node, mountOptions(v.handle))
	if err != nil {
		return fmt.Errorf("mounting volume %s through FUSE at %s: %w", v.handle, v.mountpoint, err)
	}
	v.server = server
	if err := raiseReadahead(v.mountpoint); err != nil {
		_ = v.unmount()
		return fmt.Errorf("volume %s: %w", v.handle, err)
	}
	return nil
}

// raiseReadahead sets the mount's readahead to MaxWrite (1 MiB). The kernel offers a FUSE
// server its default 128 KiB and lets it only lower that, so a sequential read through the
// mount went in 128 KiB READ requests, each a round trip through nodesim; a block device
// serves such reads in requests up to its max_sectors_kb, merged. The throughput the model
// charges is per byte either way: this only takes the loopback's own cost out of the way.
func raiseReadahead(mountpoint string) error {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return fmt.Errorf("finding the device of %s: %w", mountpoint, err)
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(strconv.Itoa(throttleBurst>>10)), 0); err != nil {
		return fmt.Errorf("raising the readahead of the FUSE mount at %s: %w", mountpoint, err)
	}
	return nil
}

// unmount ends the mount; a mount still busy (a process killed with files open, not yet
// reaped) is detached, and goes when its last file closes.
func (v *ebsVolume) unmount() error {
	if v.server == nil {
		return nil
	}
	if err := v.server.Unmount(); err != nil {
		if derr := unix.Unmount(v.mountpoint, unix.MNT_DETACH); derr != nil && !errors.Is(derr, unix.EINVAL) {
			return fmt.Errorf("unmounting volume %s at %s: %w (detaching: %v)", v.handle, v.mountpoint, err, derr)
		}
	}
	v.server = nil
	return nil
}

// release unmounts the volume and stops its model.
func (v *ebsVolume) release() error {
	v.cancel()
	return v.unmount()
}

// checkFUSE fails, with what to do, where the EBS model cannot run: it needs /dev/fuse and
// the right to mount (root).
func checkFUSE() error {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("nodesim serves every volume through a FUSE mount that models EBS (throughput, lazy loading), and cannot open /dev/fuse: %w (run as root on a kernel with the fuse module)", err)
	}
	unix.Close(fd)
	return nil
}

// unmountStale detaches FUSE mounts left under dir by an earlier run that died without
// unmounting (their server gone, they answer ENOTCONN).
func unmountStale(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	var errs []error
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
				errs = append(errs, fmt.Errorf("detaching stale mount %s: %w", mp, err))
			}
		}
	}
	return errors.Join(append(errs, sc.Err())...)
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
