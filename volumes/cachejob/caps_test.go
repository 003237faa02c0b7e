package cachejob_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/cachejob"
	"warmpool.io/warmpool/volumes/copier"
)

// overlayEntries adds to an engine cache what BuildKit's overlayfs snapshots hold beside
// plain files: directories marked trusted.overlay.opaque=y, whiteouts (0:0 character
// devices), a hardlink, user.* attributes and a file capability (security.capability,
// cap_net_raw+ep as a revision 2 vfs_cap_data). It returns the opaque directories.
func overlayEntries(t *testing.T, dir string) []string {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	snap := "worker/snapshots/snapshots/3/fs"
	for _, d := range []string{"etc/app", "var/cache/apt", "usr/bin", "usr/lib"} {
		must(os.MkdirAll(filepath.Join(dir, snap, d), 0o755))
	}
	must(os.WriteFile(filepath.Join(dir, snap, "etc/app/app.conf"), []byte("replaced"), 0o644))
	must(os.WriteFile(filepath.Join(dir, snap, "usr/bin/ping"), []byte("\x7fELF"), 0o755))
	must(os.WriteFile(filepath.Join(dir, snap, "usr/lib/libx.so.1.2"), []byte("lib"), 0o644))
	must(os.Link(filepath.Join(dir, snap, "usr/lib/libx.so.1.2"), filepath.Join(dir, snap, "usr/lib/libx.so.1")))
	must(unix.Mknod(filepath.Join(dir, snap, "usr/bin/tool"), unix.S_IFCHR|0o000, 0))
	must(unix.Mknod(filepath.Join(dir, snap, "etc/old.d"), unix.S_IFCHR|0o000, 0))
	opaque := []string{filepath.Join(snap, "etc/app"), filepath.Join(snap, "var/cache/apt")}
	for _, d := range opaque {
		must(unix.Lsetxattr(filepath.Join(dir, d), "trusted.overlay.opaque", []byte("y"), 0))
	}
	must(unix.Lsetxattr(filepath.Join(dir, snap, "var/cache"), "trusted.overlay.impure", []byte("y"), 0))
	must(unix.Lsetxattr(filepath.Join(dir, snap, "etc/app/app.conf"), "user.origin", []byte("layer 3"), 0))
	must(unix.Lsetxattr(filepath.Join(dir, snap, "usr/lib"), "user.note", []byte("dir"), 0))
	netRaw := []byte{0x01, 0, 0, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	must(unix.Lsetxattr(filepath.Join(dir, snap, "usr/bin/ping"), "security.capability", netRaw, 0))
	return opaque
}

// entryState is what a restored engine depends on for one path, the whole xattr set included.
type entryState struct {
	Mode   uint32
	Rdev   uint64
	UID    uint32
	Group  string // first path (sorted) of its inode, for regular files
	Xattrs string
}

// states lists every path under dir (the manifest left out) with its entryState.
func states(t *testing.T, dir string) map[string]entryState {
	t.Helper()
	type rec struct {
		rel string
		ino uint64
	}
	out := map[string]entryState{}
	var files []rec
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == copier.ManifestName {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		xs, err := xattrSet(p)
		if err != nil {
			return err
		}
		out[rel] = entryState{Mode: st.Mode, Rdev: uint64(st.Rdev), UID: st.Uid, Xattrs: xs}
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			files = append(files, rec{rel, st.Ino})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })
	first := map[uint64]string{}
	for _, f := range files {
		if _, ok := first[f.ino]; !ok {
			first[f.ino] = f.rel
		}
		e := out[f.rel]
		e.Group = first[f.ino]
		out[f.rel] = e
	}
	return out
}

// xattrSet renders every extended attribute of p (not following a symlink), sorted.
func xattrSet(p string) (string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		return "", err
	}
	buf := make([]byte, sz)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return "", err
	}
	var parts []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		vsz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return "", fmt.Errorf("%s: %s: %w", p, name, err)
		}
		val := make([]byte, vsz)
		if _, err := unix.Lgetxattr(p, name, val); err != nil {
			return "", err
		}
		parts = append(parts, fmt.Sprintf("%s=%q", name, val))
	}
	sort.Strings(parts)
	return strings.Join(parts, " "), nil
}

func sameStates(t *testing.T, got, want map[string]entryState) {
	t.Helper()
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%s: missing", p)
		} else if g != w {
			t.Errorf("%s: got %+v, want %+v", p, g, w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: extra", p)
		}
	}
}

// A save then a restore through the Job's own code keeps every extended attribute of every
// entry (trusted.overlay.*, user.*, security.capability), the whiteouts and the hardlinks.
func TestSaveThenRestoreKeepsOverlayAttributes(t *testing.T) {
	root := t.TempDir()
	cache, volume := filepath.Join(root, "a", "dagger"), filepath.Join(root, "volume")
	engineCache(t, cache, "clean")
	opaque := overlayEntries(t, cache)
	want := states(t, cache)
	for _, d := range opaque {
		if !strings.Contains(want[d].Xattrs, `trusted.overlay.opaque="y"`) {
			t.Fatalf("%s: the test cannot see its own opaque marker: %q", d, want[d].Xattrs)
		}
	}
	if res, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: opts(cache, volume)}); err != nil || res.Result != volumes.ResultSaved {
		t.Fatalf("save = %+v, %v", res, err)
	}
	restored := filepath.Join(root, "b", "dagger")
	if res, err := cachejob.Restore(t.Context(), cachejob.RestoreOptions{Options: opts(restored, volume)}); err != nil || res.Result != volumes.ResultRestored {
		t.Fatalf("restore = %+v, %v", res, err)
	}
	got := states(t, restored)
	// The directories themselves: the restored root's parent differs, its own state must not.
	sameStates(t, got, want)
}

// Run as uid 0 without CAP_SYS_ADMIN (the kernel then hides trusted.* even from root), a
// save reports "failed" with a reason that names the capability, exits as failures do, and
// leaves no manifest; a restore fails the same way and leaves the node's cache alone.
func TestWithoutCapSysAdminTheJobFails(t *testing.T) {
	root := t.TempDir()
	cache, volume := filepath.Join(root, "a", "dagger"), filepath.Join(root, "volume")
	engineCache(t, cache, "clean")
	overlayEntries(t, cache)

	t.Run("save", func(t *testing.T) {
		code, res := runJobWithoutSysAdmin(t, jobRequest{Op: "save", Options: opts(cache, volume)})
		assertCapFailure(t, code, res)
		if _, err := copier.ReadManifest(volume); !errors.Is(err, copier.ErrNoManifest) {
			t.Errorf("the volume holds a manifest after the refusal (%v)", err)
		}
	})

	t.Run("restore", func(t *testing.T) {
		full := filepath.Join(root, "full-volume")
		if res, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: opts(cache, full)}); err != nil {
			t.Fatalf("save with the capability = %+v, %v", res, err)
		}
		nodeCache := filepath.Join(root, "b", "dagger")
		if err := os.MkdirAll(filepath.Join(nodeCache, "worker"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(nodeCache, "worker", "fresh"), []byte("engine state"), 0o644); err != nil {
			t.Fatal(err)
		}
		before := states(t, nodeCache)
		code, res := runJobWithoutSysAdmin(t, jobRequest{Op: "restore", Options: opts(nodeCache, full)})
		assertCapFailure(t, code, res)
		sameStates(t, states(t, nodeCache), before)
		if _, err := os.Lstat(cachejob.StagingDir(nodeCache)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a staging dir was left behind (%v)", err)
		}
	})
}

func assertCapFailure(t *testing.T, code int, res volumes.JobResult) {
	t.Helper()
	if res.Result != volumes.ResultFailed || code != volumes.ExitFailed || code != cachejob.ExitCode(res) {
		t.Errorf("result %q exit %d, want %q exit %d", res.Result, code, volumes.ResultFailed, volumes.ExitFailed)
	}
	if !strings.HasPrefix(res.Reason, copier.ErrNoTrustedXattrs.Error()) || !strings.Contains(res.Reason, "CAP_SYS_ADMIN") {
		t.Errorf("reason %q, want it to start with %q and name CAP_SYS_ADMIN", res.Reason, copier.ErrNoTrustedXattrs)
	}
}

// The child side: with jobChildEnv set, this test binary runs one Job the way `warmpool
// cache save|restore` does (result written, exit code from ExitCode) instead of the tests.

const jobChildEnv = "WARMPOOL_CACHEJOB_CHILD"

type jobRequest struct {
	Op      string
	Options cachejob.Options
	Result  string // file the result is written to
}

func init() {
	data := os.Getenv(jobChildEnv)
	if data == "" {
		return
	}
	var r jobRequest
	if err := json.Unmarshal([]byte(data), &r); err != nil {
		fmt.Fprintln(os.Stderr, "decoding request:", err)
		os.Exit(100)
	}
	r.Options.Log = os.Stderr
	var res volumes.JobResult
	switch r.Op {
	case "save":
		res, _ = cachejob.Save(context.Background(), cachejob.SaveOptions{Options: r.Options})
	case "restore":
		res, _ = cachejob.Restore(context.Background(), cachejob.RestoreOptions{Options: r.Options})
	default:
		fmt.Fprintln(os.Stderr, "unknown op", r.Op)
		os.Exit(100)
	}
	if err := cachejob.WriteResult(r.Result, res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(100)
	}
	os.Exit(cachejob.ExitCode(res))
}

// runJobWithoutSysAdmin runs the Job in a child of this test binary started through setpriv
// with CAP_SYS_ADMIN out of its bounding set, so as root it has every capability but that
// one (Go cannot drop the bounding set for a child itself). It returns the exit code and the
// result the child wrote.
func runJobWithoutSysAdmin(t *testing.T, r jobRequest) (int, volumes.JobResult) {
	t.Helper()
	r.Result = filepath.Join(t.TempDir(), "termination-log")
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/bin/setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--", os.Args[0])
	cmd.Env = append(os.Environ(), jobChildEnv+"="+string(data))
	out, err := cmd.CombinedOutput()
	code := 0
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("running the child: %v\n%s", err, out)
	}
	if code == 100 {
		t.Fatalf("the child could not run the job:\n%s", out)
	}
	msg, err := os.ReadFile(r.Result)
	if err != nil {
		t.Fatalf("no result from the child (exit %d): %v\n%s", code, err, out)
	}
	res, err := volumes.ParseJobResult(string(msg))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return code, res
}
