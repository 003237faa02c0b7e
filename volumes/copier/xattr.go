package copier

import (
	"bytes"
	"errors"
	"fmt"

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
// either silently changes what a restored snapshot contains. Attributes the
// destination refuses (EPERM for trusted.* when not root or user.* on a
// symlink, ENOTSUP on a filesystem without xattrs) are reported through
// refused, not as errors: the caller records them as warnings.
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
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EACCES) {
				refused(name, err)
				continue
			}
			return fmt.Errorf("setting xattr %s on %s: %w", name, dst, err)
		}
	}
	return nil
}
