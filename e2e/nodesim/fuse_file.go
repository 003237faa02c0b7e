package nodesim

import (
	"context"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The FUSE side of a simulated EBS volume: its nodes and open files, which charge every read
// and write to the volume's model before passing it to the loopback.

// ebsNode is a loopback node of a volume's mount whose files charge the volume's model.
type ebsNode struct {
	*gofs.LoopbackNode
	vol *ebsVolume
}

var (
	_ gofs.NodeWrapChilder    = (*ebsNode)(nil)
	_ gofs.NodeOpener         = (*ebsNode)(nil)
	_ gofs.NodeCreater        = (*ebsNode)(nil)
	_ gofs.NodeCopyFileRanger = (*ebsNode)(nil)
	_ gofs.NodeTmpfiler       = (*ebsNode)(nil)
	_ gofs.NodeLookuper       = (*ebsNode)(nil)
	_ gofs.NodeOpendirHandler = (*ebsNode)(nil)
	_ gofs.NodeGetattrer      = (*ebsNode)(nil)
	_ gofs.NodeMkdirer        = (*ebsNode)(nil)
)

// backingIno is the node's inode number on the backing directory.
func (n *ebsNode) backingIno() uint64 {
	if n.IsRoot() {
		return n.vol.rootIno
	}
	return n.StableAttr().Ino
}

// Waits on the model (S3 for a lazily loaded block, the volume's IOPS and throughput caps)
// are not interrupted by the caller's signals (a FUSE INTERRUPT): on a block device a read,
// a lookup or an opendir waiting for its block sleeps uninterruptibly (a fatal signal kills
// the process, the I/O still ends), so open and stat never fail with EINTR, which Go
// retries only for reads and writes, and neither does a read. (Go's runtime signals its
// threads all the time, so an interruptible wait failed a restore's opendir.) Only the
// volume's release ends them, with EIO, as a detached volume's I/O does.

// Lookup reads the directory's entries and then the found inode, each from S3 the first
// time on a lazily loaded volume. READDIRPLUS looks up every entry it lists through here.
func (n *ebsNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	l := n.vol.lazy
	if l == nil {
		return n.LoopbackNode.Lookup(ctx, name, out)
	}
	if err := n.vol.readMeta(dirRead(n.backingIno())); err != nil {
		return nil, syscall.EIO
	}
	child, errno := n.LoopbackNode.Lookup(ctx, name, out)
	if errno != 0 {
		return nil, errno
	}
	if err := n.vol.readMeta(l.inodeRead(out.Attr.Ino)); err != nil {
		return nil, syscall.EIO
	}
	return child, 0
}

// readMeta reads the snapshot's metadata m (lazy.go): its block from S3 the first time, and
// the kernel's first read of it since the mount is an I/O that the volume's IOPS and
// throughput caps count like any other.
func (v *ebsVolume) readMeta(m metaRead) error {
	l := v.lazy
	if err := l.fetch(v.ctx, m.block, 0, 1); err != nil {
		return err
	}
	n, first := l.firstMetaRead(m)
	if !first {
		return nil
	}
	if err := v.charge(v.ctx, int(n)); err != nil {
		return err
	}
	v.bytesRead.Add(n)
	v.readIOs.Add(int64(ios(int(n))))
	return nil
}

// OpendirHandle reads the directory's entries, from S3 the first time on a lazily loaded
// volume.
func (n *ebsNode) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if l := n.vol.lazy; l != nil {
		if err := n.vol.readMeta(dirRead(n.backingIno())); err != nil {
			return nil, 0, syscall.EIO
		}
	}
	return n.LoopbackNode.OpendirHandle(ctx, flags)
}

// Getattr reads the inode, from S3 the first time on a lazily loaded volume (a lookup
// already did, unless the kernel asks again after the attributes expired).
func (n *ebsNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if l := n.vol.lazy; l != nil && !n.IsRoot() {
		if err := n.vol.readMeta(l.inodeRead(n.StableAttr().Ino)); err != nil {
			return syscall.EIO
		}
	}
	return n.LoopbackNode.Getattr(ctx, f, out)
}

// Mkdir makes a directory whose entries are new, even where its inode number was a deleted
// snapshot directory's.
func (n *ebsNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	child, errno := n.LoopbackNode.Mkdir(ctx, name, mode, out)
	if errno == 0 && n.vol.lazy != nil {
		n.vol.lazy.forget(child.StableAttr().Ino)
	}
	return child, errno
}

// WrapChild makes every node of the mount an ebsNode (go-fuse calls it for each new inode).
func (n *ebsNode) WrapChild(ctx context.Context, ops gofs.InodeEmbedder) gofs.InodeEmbedder {
	return &ebsNode{LoopbackNode: ops.(*gofs.LoopbackNode), vol: n.vol}
}

func (n *ebsNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return n.vol.wrap(fh, n.StableAttr().Ino), fuseFlags, 0
}

func (n *ebsNode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	child, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	ino := child.StableAttr().Ino
	if n.vol.lazy != nil {
		// A new file on the volume: if its inode number was a deleted snapshot file's, the
		// blocks tracked for that file are not this one's.
		n.vol.lazy.forget(ino)
	}
	return child, n.vol.wrap(fh, ino), fuseFlags, 0
}

// CopyFileRange is refused, so that the kernel falls back to reads and writes that pay the
// model (the copier switches to them on EOPNOTSUPP, which is what the kernel returns).
func (n *ebsNode) CopyFileRange(context.Context, gofs.FileHandle, uint64, *gofs.Inode, gofs.FileHandle, uint64, uint64, uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

// Tmpfile is refused (EOPNOTSUPP, as on a filesystem without O_TMPFILE): a file the loopback
// opened would not pay the model.
func (n *ebsNode) Tmpfile(context.Context, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

// wrap puts the model in front of a loopback file handle.
func (v *ebsVolume) wrap(fh gofs.FileHandle, ino uint64) gofs.FileHandle {
	lf, ok := fh.(*gofs.LoopbackFile)
	if !ok {
		return fh
	}
	return &ebsFile{lf: lf, vol: v, ino: ino}
}

// ebsFile is a loopback file whose reads and writes pay the volume's model. It does not
// offer its descriptor for FUSE passthrough (go-fuse would hand reads and writes to the
// kernel, bypassing the model) and has no Writev (go-fuse then calls Write).
type ebsFile struct {
	lf  *gofs.LoopbackFile
	vol *ebsVolume
	ino uint64
}

var (
	_ gofs.FileReader    = (*ebsFile)(nil)
	_ gofs.FileWriter    = (*ebsFile)(nil)
	_ gofs.FileReleaser  = (*ebsFile)(nil)
	_ gofs.FileFlusher   = (*ebsFile)(nil)
	_ gofs.FileFsyncer   = (*ebsFile)(nil)
	_ gofs.FileGetattrer = (*ebsFile)(nil)
	_ gofs.FileSetattrer = (*ebsFile)(nil)
	_ gofs.FileLseeker   = (*ebsFile)(nil)
	_ gofs.FileAllocater = (*ebsFile)(nil)
	_ gofs.FileGetlker   = (*ebsFile)(nil)
	_ gofs.FileSetlker   = (*ebsFile)(nil)
	_ gofs.FileSetlkwer  = (*ebsFile)(nil)
)

// ios is the number of I/Os EBS counts a request of n bytes as.
func ios(n int) int { return max(1, (n+ioSize-1)/ioSize) }

// charge waits until a request of n bytes may pass the volume's IOPS and throughput caps.
func (v *ebsVolume) charge(ctx context.Context, n int) error {
	if err := takeAll(ctx, v.io, v.ops, n); err != nil {
		return err
	}
	v.served.add(time.Now(), int64(n), int64(ios(n)))
	return nil
}

func (f *ebsFile) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if l := f.vol.lazy; l != nil {
		if err := l.fetch(f.vol.ctx, f.ino, off, int64(len(dest))); err != nil {
			return nil, syscall.EIO
		}
	}
	res, errno := f.lf.Read(ctx, dest, off)
	if errno != 0 {
		return nil, errno
	}
	// The loopback's result is a splice of the descriptor, sized as asked: read the data now
	// so the throttle charges what was really read.
	data, status := res.Bytes(dest)
	res.Done()
	if !status.Ok() {
		return nil, syscall.Errno(status)
	}
	if err := f.vol.charge(f.vol.ctx, len(data)); err != nil {
		return nil, syscall.EIO
	}
	f.vol.bytesRead.Add(int64(len(data)))
	f.vol.readIOs.Add(int64(ios(len(data))))
	return fuse.ReadResultData(data), 0
}

func (f *ebsFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if err := f.vol.charge(f.vol.ctx, len(data)); err != nil {
		return 0, syscall.EIO
	}
	n, errno := f.lf.Write(ctx, data, off)
	if n > 0 {
		f.vol.bytesWritten.Add(int64(n))
		f.vol.writeIOs.Add(int64(ios(int(n))))
		if l := f.vol.lazy; l != nil {
			l.written(f.ino, off, int64(n))
		}
	}
	return n, errno
}

func (f *ebsFile) Release(ctx context.Context) syscall.Errno { return f.lf.Release(ctx) }

// Flush is not implemented (ENOSYS), so the kernel stops sending FLUSH on every close, as a
// close on xfs costs no I/O: writes reach the backing file when they are made (no writeback
// cache), and the loopback's flush only closed a duplicate of its descriptor.
func (f *ebsFile) Flush(ctx context.Context) syscall.Errno { return syscall.ENOSYS }
func (f *ebsFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return f.lf.Fsync(ctx, flags)
}
func (f *ebsFile) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Getattr(ctx, out)
}
func (f *ebsFile) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Setattr(ctx, in, out)
}
func (f *ebsFile) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.lf.Lseek(ctx, off, whence)
}
func (f *ebsFile) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	return f.lf.Allocate(ctx, off, size, mode)
}
func (f *ebsFile) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return f.lf.Getlk(ctx, owner, lk, flags, out)
}
func (f *ebsFile) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.lf.Setlk(ctx, owner, lk, flags)
}
func (f *ebsFile) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.lf.Setlkw(ctx, owner, lk, flags)
}
