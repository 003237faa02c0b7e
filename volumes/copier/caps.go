package copier

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrNoTrustedXattrs: the copy cannot read or write trusted.* extended
// attributes, so it would lose the Dagger Engine's overlay markers
// (trusted.overlay.opaque on opaque directories) without a sign. The copier
// refuses before copying anything; the error says what is missing.
var ErrNoTrustedXattrs = errors.New("cannot copy trusted.* extended attributes")

// probeXattr is set and removed on the destination root to learn whether its
// filesystem stores trusted.* attributes.
const probeXattr = "trusted.warmpool.probe"

// needSysAdmin says how to fix a missing capability; it is part of every
// ErrNoTrustedXattrs about the capability, so the Job's result names it.
const needSysAdmin = "the save/restore Job needs CAP_SYS_ADMIN (securityContext.capabilities.add: [SYS_ADMIN])"

// checkCapability fails with ErrNoTrustedXattrs unless the process holds
// CAP_SYS_ADMIN in its effective set. Without it Linux hides trusted.* from
// listxattr and answers getxattr with ENODATA, even for uid 0, so the source
// side of a copy would look like it has no such attributes at all: a probe
// of the source cannot tell "none" from "hidden", only the capability can.
// (The restore's source is also mounted read-only, so it cannot be probed
// by writing.)
func checkCapability() error {
	eff, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("%w: reading the process's capabilities: %w; %s", ErrNoTrustedXattrs, err, needSysAdmin)
	}
	if eff&(1<<unix.CAP_SYS_ADMIN) == 0 {
		return fmt.Errorf("%w: the process lacks CAP_SYS_ADMIN, without which Linux hides trusted.* attributes "+
			"(the engine's trusted.overlay.opaque markers) even from root; %s", ErrNoTrustedXattrs, needSysAdmin)
	}
	return nil
}

// effectiveCaps is the calling thread's effective capability set as a bit
// mask (bit n is capability n). Every thread of this process has the same
// set: nothing in it changes capabilities per thread.
func effectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData // version 3 fills two 32-bit halves
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("capget: %w", err)
	}
	return uint64(data[1].Effective)<<32 | uint64(data[0].Effective), nil
}

// probeTrustedXattrs sets and removes probeXattr on dir, which fails with
// ErrNoTrustedXattrs on a filesystem that does not store trusted.*
// attributes (ENOTSUP: vfat, ramfs, some FUSE or network filesystems) or
// refuses them to this process (EPERM).
func probeTrustedXattrs(dir string) error {
	if err := unix.Lsetxattr(dir, probeXattr, []byte("1"), 0); err != nil {
		return fmt.Errorf("%w: %s does not take trusted.* attributes (setting %s: %w); "+
			"the destination must be a filesystem that stores them (ext4, xfs) and %s",
			ErrNoTrustedXattrs, dir, probeXattr, err, needSysAdmin)
	}
	if err := unix.Lremovexattr(dir, probeXattr); err != nil {
		return fmt.Errorf("%w: removing the probe attribute %s from %s: %w", ErrNoTrustedXattrs, probeXattr, dir, err)
	}
	return nil
}
