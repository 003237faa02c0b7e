package e2e_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes/copier"
)

// digest maps each path under dir to a SHA-256 of what the engine would see there: its type
// and permission bits, its content (a symlink's target, a device's numbers), and every extended
// attribute in every namespace, trusted.overlay.* included (this test runs as root with
// CAP_SYS_ADMIN, so listxattr shows them). The copier's manifest is left out.
func digest(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." || rel == copier.ManifestName {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		h := sha256.New()
		fmt.Fprintf(h, "mode %o\n", st.Mode)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "symlink %s\n", target)
		case unix.S_IFCHR, unix.S_IFBLK:
			fmt.Fprintf(h, "dev %d:%d\n", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		case unix.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(data)
		}
		attrs, err := xattrs(p)
		if err != nil {
			return err
		}
		for _, a := range attrs {
			fmt.Fprintf(h, "\nxattr %s", a)
		}
		out[rel] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// xattrs lists "name=value" for every extended attribute of p, sorted.
func xattrs(p string) ([]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if errors.Is(err, unix.ENOTSUP) || size == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing xattrs of %s: %w", p, err)
	}
	buf := make([]byte, size)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return nil, fmt.Errorf("listing xattrs of %s: %w", p, err)
	}
	var out []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		vsize, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("reading xattr %s of %s: %w", name, p, err)
		}
		val := make([]byte, vsize)
		if _, err := unix.Lgetxattr(p, name, val); err != nil {
			return nil, fmt.Errorf("reading xattr %s of %s: %w", name, p, err)
		}
		out = append(out, name+"="+hex.EncodeToString(val))
	}
	slices.Sort(out)
	return out, nil
}

// trustedXattrs counts the entries under dir that carry a trusted.* attribute: a cache copied
// without CAP_SYS_ADMIN has none, so a comparison of digests alone could pass on two copies
// that both lost them.
func trustedXattrs(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		attrs, err := xattrs(p)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(attrs, func(a string) bool { return strings.HasPrefix(a, "trusted.") }) {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
