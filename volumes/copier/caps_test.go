package copier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A BuildKit-like tree (opaque directories, whiteouts, hardlinks, user.* and
// security.capability) goes through a save (Copy onto a volume) and a
// restore (Restore from that volume) with every entry's full xattr set, type,
// mode, owner, times and hardlink grouping equal to the source's.
func TestOverlayTreeRoundTripsSaveAndRestore(t *testing.T) {
	src := filepath.Join(t.TempDir(), "dagger")
	must(t, os.Mkdir(src, 0o711))
	tr := buildOverlayTree(t, src)
	before := snapshot(t, src)
	beforeData := contents(t, src)
	// The test's own view must see what it built, or the comparison below
	// would compare two empty sets.
	for _, d := range tr.opaque {
		if v, ok := before[d].xattrs[overlayOpaque]; !ok || v != "y" {
			t.Fatalf("%s: built tree has %s=%q (present %v)", d, overlayOpaque, v, ok)
		}
	}

	volume := filepath.Join(t.TempDir(), "volume")
	if _, err := Copy(context.Background(), src, volume, Options{EngineVersion: "v0.21.8", Architecture: "amd64"}); err != nil {
		t.Fatalf("save: %v", err)
	}
	compareTrees(t, before, snapshot(t, volume), compareOpts{ignoreAtime: true})

	final := filepath.Join(t.TempDir(), "dagger")
	m, err := Restore(context.Background(), volume, final+".staging", final, Options{})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	after := snapshot(t, final)
	compareTrees(t, before, after, compareOpts{ignoreAtime: true})
	compareContents(t, beforeData, contents(t, final))
	if m.Stats.XattrsNotPreserved != 0 {
		t.Errorf("restore dropped %d xattrs: %q", m.Stats.XattrsNotPreserved, m.Warnings)
	}

	// The parts that matter to overlayfs, named one by one.
	for _, d := range tr.opaque {
		if got := after[d].xattrs[overlayOpaque]; got != "y" {
			t.Errorf("%s: restored %s = %q, want y", d, overlayOpaque, got)
		}
	}
	for _, w := range tr.whiteouts {
		if n := after[w]; n.mode&unix.S_IFMT != unix.S_IFCHR || n.rdev != 0 {
			t.Errorf("%s: restored as mode %o rdev %d, want a 0:0 character device", w, n.mode, n.rdev)
		}
	}
	for _, l := range tr.hardlinks {
		if after[l[0]].ino != after[l[1]].ino {
			t.Errorf("%s and %s are no longer one inode", l[0], l[1])
		}
	}
	for rel, want := range tr.xattrs {
		for name, v := range want {
			if got, ok := after[rel].xattrs[name]; !ok || got != v {
				t.Errorf("%s: restored %s = %q (present %v), want %q", rel, name, got, ok, v)
			}
		}
	}
}

// The copier run as uid 0 without CAP_SYS_ADMIN (as the save and restore
// Jobs ran before they were granted it) refuses before it changes anything:
// no manifest, no staging dir, an existing copy left as it was, and an error
// that names the capability. The child process is this test binary, started
// through setpriv with CAP_SYS_ADMIN removed from its bounding set, so the
// kernel really hides trusted.* from it.
func TestCopierWithoutCapSysAdminRefuses(t *testing.T) {
	src := filepath.Join(t.TempDir(), "dagger")
	must(t, os.Mkdir(src, 0o711))
	tr := buildOverlayTree(t, src)
	opaqueDir := filepath.Join(src, tr.opaque[0])
	srcBefore := snapshot(t, src)

	t.Run("save to a fresh volume", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "volume")
		out := runWithoutSysAdmin(t, childRequest{Op: "copy", Src: src, Dst: dst, Inspect: opaqueDir})
		out.assertRefused(t)
		if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("destination %s exists after the refusal (%v)", dst, err)
		}
	})

	t.Run("save over a volume holding a copy", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "volume")
		if _, err := Copy(context.Background(), src, dst, Options{}); err != nil {
			t.Fatal(err)
		}
		// An entry src lacks: a save that went ahead would delete it.
		mustWrite(t, filepath.Join(dst, "worker/gone-from-src"), []byte("old"), 0o644)
		dstBefore := snapshot(t, dst)
		manifestBefore, err := os.ReadFile(filepath.Join(dst, ManifestName))
		must(t, err)

		out := runWithoutSysAdmin(t, childRequest{Op: "copy", Src: src, Dst: dst, Inspect: opaqueDir})
		out.assertRefused(t)
		compareTrees(t, dstBefore, snapshot(t, dst), compareOpts{})
		if after, err := os.ReadFile(filepath.Join(dst, ManifestName)); err != nil || string(after) != string(manifestBefore) {
			t.Errorf("the earlier copy's manifest changed or went: %v", err)
		}
	})

	t.Run("restore", func(t *testing.T) {
		volume := filepath.Join(t.TempDir(), "volume")
		if _, err := Copy(context.Background(), src, volume, Options{}); err != nil {
			t.Fatal(err)
		}
		final, before := oldCache(t)
		staging := final + ".staging"
		out := runWithoutSysAdmin(t, childRequest{Op: "restore", Src: volume, Dst: staging, Final: final, Inspect: filepath.Join(volume, tr.opaque[0])})
		out.assertRefused(t)
		compareTrees(t, before, snapshot(t, final), compareOpts{})
		if _, err := os.Lstat(staging); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("staging dir %s exists after the refusal (%v)", staging, err)
		}
	})

	// The child only read src.
	compareTrees(t, srcBefore, snapshot(t, src), compareOpts{ignoreAtime: true})
}

// A destination filesystem that does not store trusted.* attributes (ramfs:
// ENOTSUP) is refused by the probe, with the capability present: nothing is
// written to it, and a restore leaves the engine's cache alone.
func TestCopierRefusesADestinationWithoutTrustedXattrs(t *testing.T) {
	src := filepath.Join(t.TempDir(), "dagger")
	must(t, os.Mkdir(src, 0o711))
	buildOverlayTree(t, src)
	ram := mountRamfs(t)

	t.Run("save", func(t *testing.T) {
		dst := filepath.Join(ram, "volume")
		_, err := Copy(context.Background(), src, dst, Options{})
		if !errors.Is(err, ErrNoTrustedXattrs) || !errors.Is(err, unix.ENOTSUP) {
			t.Fatalf("err = %v, want ErrNoTrustedXattrs wrapping ENOTSUP", err)
		}
		if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("destination %s left behind (%v)", dst, err)
		}
	})

	t.Run("save over an existing volume", func(t *testing.T) {
		dst := filepath.Join(ram, "existing")
		mustWrite(t, filepath.Join(dst, ManifestName), []byte(`{"formatVersion":1}`), 0o644)
		_, err := Copy(context.Background(), src, dst, Options{})
		if !errors.Is(err, ErrNoTrustedXattrs) {
			t.Fatalf("err = %v, want ErrNoTrustedXattrs", err)
		}
		ents, err := os.ReadDir(dst)
		must(t, err)
		if len(ents) != 1 || ents[0].Name() != ManifestName {
			t.Errorf("destination holds %v, want only the untouched manifest", ents)
		}
	})

	t.Run("restore", func(t *testing.T) {
		volume := filepath.Join(t.TempDir(), "volume")
		if _, err := Copy(context.Background(), src, volume, Options{}); err != nil {
			t.Fatal(err)
		}
		final := filepath.Join(ram, "dagger")
		mustWrite(t, filepath.Join(final, "worker/old"), []byte("the cache the node has now"), 0o644)
		before := snapshot(t, final)
		_, err := Restore(context.Background(), volume, filepath.Join(ram, ".dagger.staging"), final, Options{})
		if !errors.Is(err, ErrNoTrustedXattrs) {
			t.Fatalf("err = %v, want ErrNoTrustedXattrs", err)
		}
		compareTrees(t, before, snapshot(t, final), compareOpts{})
		if _, err := os.Lstat(filepath.Join(ram, ".dagger.staging")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("staging dir left behind (%v)", err)
		}
	})
}

// Which refused attributes fail the copy and which are warnings.
func TestRefusedXattrPolicy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		warning bool // reported through refused, copy goes on
		trusted bool // errors.Is(ErrNoTrustedXattrs)
	}{
		{"trusted.overlay.opaque", unix.EPERM, false, true},
		{"trusted.overlay.opaque", unix.ENOTSUP, false, true},
		{"security.capability", unix.EPERM, false, false},
		{"user.mime_type", unix.ENOTSUP, false, false},
		{"user.mime_type", unix.EPERM, false, false},
		{"system.posix_acl_access", unix.ENOTSUP, false, false},
		{"security.selinux", unix.EACCES, true, false},
		{"security.apparmor", unix.EPERM, true, false},
		{"security.ima", unix.ENOTSUP, true, false},
		// Not a refusal: an I/O error fails the copy for every namespace.
		{"security.selinux", unix.EIO, false, false},
		{"trusted.overlay.opaque", unix.EIO, false, false},
	} {
		t.Run(fmt.Sprintf("%s %v", tc.name, tc.err), func(t *testing.T) {
			var warned []string
			err := refusedXattr(tc.name, "/dst/x", "setting", tc.err, func(n string, _ error) { warned = append(warned, n) })
			if tc.warning {
				if err != nil || len(warned) != 1 {
					t.Fatalf("err = %v, warnings %v; want one warning and no error", err, warned)
				}
				return
			}
			if err == nil || len(warned) != 0 || !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, warnings %v; want an error wrapping %v", err, warned, tc.err)
			}
			if errors.Is(err, ErrNoTrustedXattrs) != tc.trusted {
				t.Errorf("errors.Is(%v, ErrNoTrustedXattrs) = %v, want %v", err, !tc.trusted, tc.trusted)
			}
		})
	}
}

// mountRamfs mounts a ramfs, which stores no extended attributes at all, on
// a temporary directory for the test's duration.
func mountRamfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("none", dir, "ramfs", 0, "mode=0755"); err != nil {
		t.Fatalf("mounting a ramfs on %s (the test needs root with CAP_SYS_ADMIN): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// The child side: when childEnv is set, this test binary runs one copier
// operation and prints a childReport as JSON instead of running tests.

const (
	childEnv    = "WARMPOOL_COPIER_CHILD"
	setprivPath = "/usr/bin/setpriv"
)

type childRequest struct {
	Op       string // copy or restore
	Src, Dst string // Dst: the staging dir of a restore
	Final    string
	// Inspect is a directory the child lists the xattrs of, to show what the
	// kernel lets it see.
	Inspect string
}

type childReport struct {
	CapSysAdmin bool
	Visible     []string
	Err         string
	NoTrusted   bool
}

func init() {
	req := os.Getenv(childEnv)
	if req == "" {
		return
	}
	var r childRequest
	var rep childReport
	if err := json.Unmarshal([]byte(req), &r); err != nil {
		rep.Err = "decoding request: " + err.Error()
	} else {
		rep = runChild(r)
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		os.Exit(2)
	}
	os.Exit(0)
}

func runChild(r childRequest) childReport {
	var rep childReport
	eff, err := effectiveCaps()
	rep.CapSysAdmin = err == nil && eff&(1<<unix.CAP_SYS_ADMIN) != 0
	rep.Visible, _ = listXattrs(r.Inspect)
	switch r.Op {
	case "copy":
		_, err = Copy(context.Background(), r.Src, r.Dst, Options{})
	case "restore":
		_, err = Restore(context.Background(), r.Src, r.Dst, r.Final, Options{})
	default:
		err = fmt.Errorf("unknown op %q", r.Op)
	}
	if err != nil {
		rep.Err = err.Error()
		rep.NoTrusted = errors.Is(err, ErrNoTrustedXattrs)
	}
	return rep
}

// runWithoutSysAdmin runs req in a child process of this test binary that
// has CAP_SYS_ADMIN dropped from its bounding set (and so, being root, from
// its permitted and effective sets at exec). Go cannot do this itself:
// SysProcAttr has no bounding set, and capset changes one thread only.
func runWithoutSysAdmin(t *testing.T, req childRequest) childReport {
	t.Helper()
	data, err := json.Marshal(req)
	must(t, err)
	cmd := exec.Command(setprivPath, "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--", os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+string(data))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child %s: %v\n%s", req.Op, err, stderr.String())
	}
	var rep childReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("child %s printed %q: %v\n%s", req.Op, out, err, stderr.String())
	}
	return rep
}

func (r childReport) assertRefused(t *testing.T) {
	t.Helper()
	if r.CapSysAdmin {
		t.Fatal("the child still holds CAP_SYS_ADMIN: setpriv did not drop it")
	}
	// Why the refusal matters: the kernel hid the opaque marker from the child.
	for _, n := range r.Visible {
		if strings.HasPrefix(n, "trusted.") {
			t.Errorf("the child sees %s without CAP_SYS_ADMIN", n)
		}
	}
	if !r.NoTrusted || !strings.Contains(r.Err, "CAP_SYS_ADMIN") {
		t.Errorf("child error %q (ErrNoTrustedXattrs: %v), want ErrNoTrustedXattrs naming CAP_SYS_ADMIN", r.Err, r.NoTrusted)
	}
}
