package copier

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// listXattrs returns the extended attribute names of path, not following a
// final symlink. A filesystem without xattr support has none.
func listXattrs(path string) ([]string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Llistxattr(path, buf)
		switch {
		case err == nil:
			return splitNames(buf[:n]), nil
		case errors.Is(err, unix.ERANGE):
			// The list grew between calls or our guess was small: ask for
			// the size and retry.
			sz, err := unix.Llistxattr(path, nil)
			if err != nil {
				return nil, fmt.Errorf("listing xattrs of %s: %w", path, err)
			}
			buf = make([]byte, sz+64)
		case errors.Is(err, unix.ENOTSUP):
			return nil, nil
		default:
			return nil, fmt.Errorf("listing xattrs of %s: %w", path, err)
		}
	}
}

func splitNames(b []byte) []string {
	var names []string
	for _, n := range bytes.Split(b, []byte{0}) {
		if len(n) > 0 {
			names = append(names, string(n))
		}
	}
	return names
}

func getXattr(path, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(path, name, buf)
		switch {
		case err == nil:
			return buf[:n], nil
		case errors.Is(err, unix.ERANGE):
			sz, err := unix.Lgetxattr(path, name, nil)
			if err != nil {
				return nil, fmt.Errorf("reading xattr %s of %s: %w", name, path, err)
			}
			buf = make([]byte, sz+64)
		default:
			return nil, fmt.Errorf("reading xattr %s of %s: %w", name, path, err)
		}
	}
}

// copyXattrs copies every extended attribute of src onto dst (neither
// followed if a symlink). All namespaces are copied, not only user.*:
// BuildKit's overlayfs snapshots mark opaque directories with
// trusted.overlay.opaque and image layers carry security.capability; losing
// either silently changes what a restored snapshot contains.
//
// An attribute the destination refuses (EPERM, EACCES, ENOTSUP) fails the
// copy, with one exception, decided per namespace by mustPreserve:
//
//   - trusted.*: the copier checked CAP_SYS_ADMIN and probed dst before
//     starting, so a refusal here is a destination that takes some trusted.*
//     names but not this one (an overlayfs mount reserves trusted.overlay.*
//     for itself): ErrNoTrustedXattrs.
//   - security.capability: file capabilities of binaries in image layers
//     (ping's cap_net_raw); without it a cached layer's binary loses what it
//     may do. Setting it needs CAP_SETFCAP, which every container has by
//     default, so a refusal is a real fault.
//   - user.* and system.* (POSIX ACLs): data of the tree's owners; user.*
//     can only be refused where the source could not hold it either
//     (symlinks, device nodes) or by a destination filesystem without
//     support, which would lose it for every entry.
//   - other security.* (security.selinux, security.apparmor, security.ima,
//     security.evm): labels the node's LSM owns and assigns by its own
//     policy, not data the engine wrote; a destination node whose policy
//     refuses a label is not a broken copy. Reported through refused, which
//     the caller records as a warning (Stats.XattrsNotPreserved).
func copyXattrs(src, dst string, refused func(name string, err error)) error {
	names, err := listXattrs(src)
	if err != nil {
		return err
	}
	for _, name := range names {
		val, err := getXattr(src, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed since the listing
		}
		if err != nil {
			return err
		}
		if err := unix.Lsetxattr(dst, name, val, 0); err != nil {
			if err := refusedXattr(name, dst, "setting", err, refused); err != nil {
				return err
			}
		}
	}
	return nil
}

// refusedXattr turns a failed set or removal of name on dst into the copy's
// error, or into a call of refused for an attribute that may be dropped (see
// copyXattrs).
func refusedXattr(name, dst, doing string, err error, refused func(name string, err error)) error {
	isRefusal := errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EACCES)
	switch {
	case isRefusal && !mustPreserve(name):
		refused(name, err)
		return nil
	case isRefusal && strings.HasPrefix(name, "trusted."):
		return fmt.Errorf("%w: %s xattr %s on %s: %w", ErrNoTrustedXattrs, doing, name, dst, err)
	default:
		return fmt.Errorf("%s xattr %s on %s: %w", doing, name, dst, err)
	}
}

// mustPreserve says whether losing the attribute name fails the copy: every
// namespace but the LSM labels of security.* (see copyXattrs).
func mustPreserve(name string) bool {
	return !strings.HasPrefix(name, "security.") || name == "security.capability"
}
