package storagecheck

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Usage is what a cache tree takes on disk, measured before a save copies it.
type Usage struct {
	// Bytes are allocated bytes (st_blocks x 512 of every file, directory and symlink; a
	// hardlinked file once): the copier keeps holes, so this is what the copy writes.
	Bytes int64
	// Inodes counts files, directories, symlinks and special files (hardlinks once).
	Inodes int64
}

// FSStat is a filesystem's statfs(2), in the units it reports.
type FSStat struct {
	BlockSize int64 // f_frsize (f_bsize where frsize is 0)
	Blocks    int64 // f_blocks: data blocks (ext4 and xfs exclude their fixed overhead)
	Free      int64 // f_bfree
	Avail     int64 // f_bavail: free blocks for an unprivileged user
	Files     int64 // f_files: inodes; xfs allocates them as needed
	FilesFree int64 // f_ffree
}

// Capacity is what the volume can hold for a copy: free space plus what is in use, which on a
// save volume is the previous copy the copier replaces (it removes what the source lost and
// rewrites what changed). Blocks reserved for root (ext4's 5%) are left out though the copier
// runs as root: fail closed.
func (s FSStat) Capacity() (bytes, inodes int64) {
	bytes = (s.Avail + s.Blocks - s.Free) * s.BlockSize
	return bytes, s.Files
}

// fitSlack is added to a cache's bytes for what the copy writes besides it: the manifest,
// directories grown by rewrites, files in flight while their old copy is still there.
const (
	fitSlackBytes   = 256 << 20
	fitSlackPercent = 5
	// ext4InodeRatio is mkfs.ext4's default bytes-per-inode (the EBS CSI driver formats with
	// the defaults): an ext4 volume has one inode per 16 KiB, fixed at mkfs.
	ext4InodeRatio = 16 << 10
	// fsOverheadPercent is what a fresh filesystem keeps from a volume's size: ext4's reserved
	// 5% for root, its inode tables and journal (xfs keeps less).
	fsOverheadPercent = 8
)

// Need is the space a copy of u needs on its volume.
func (u Usage) Need() int64 { return u.Bytes + u.Bytes/100*fitSlackPercent + fitSlackBytes }

// FitProblem is the Problem of a cache of u that does not fit a volume of stat, nil when it
// fits. An xfs volume (f_files grows as needed) is checked for bytes only.
func FitProblem(u Usage, stat FSStat) *Problem {
	capBytes, capInodes := stat.Capacity()
	switch {
	case u.Need() > capBytes:
		return &Problem{Check: CheckCacheFit, Message: fmt.Sprintf(
			"the cache takes %s (%d inodes) and the copy needs %s, but the save volume holds %s",
			FormatBytes(u.Bytes), u.Inodes, FormatBytes(u.Need()), FormatBytes(capBytes))}
	case capInodes > 0 && u.Inodes+u.Inodes/100+1000 > capInodes:
		return &Problem{Check: CheckCacheFit, Message: fmt.Sprintf(
			"the cache has %d inodes but the save volume's filesystem has %d (ext4 fixes them at one per 16 KiB; csi.storage.k8s.io/fstype xfs allocates them as needed)",
			u.Inodes, capInodes)}
	}
	return nil
}

// VolumeSize is the size of a save volume that holds a cache of u, whatever its filesystem:
// the bytes it needs or, for ext4, the inodes at one per 16 KiB, over what a fresh
// filesystem keeps for itself, rounded up to whole GiB (EBS sizes volumes in GiB).
func VolumeSize(u Usage) resource.Quantity {
	need := max(u.Need(), (u.Inodes+u.Inodes/100+1000)*ext4InodeRatio)
	need = need / (100 - fsOverheadPercent) * 100
	gib := (need + (1 << 30) - 1) >> 30
	return *resource.NewQuantity(gib<<30, resource.BinarySI)
}
