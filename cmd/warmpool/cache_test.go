package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/cachejob"
	"warmpool.io/warmpool/volumes/copier"
	"warmpool.io/warmpool/volumes/engine"
	"warmpool.io/warmpool/volumes/engine/enginetest"
)

// TestCacheCommand runs the real binary, built once, as the save and restore Jobs run it.
func TestCacheCommand(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "warmpool")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Run("save then restore", func(t *testing.T) { testSaveThenRestore(t, bin) })
	t.Run("exit codes", func(t *testing.T) { testExitCodes(t, bin) })
	t.Run("restore then verify", func(t *testing.T) { testRestoreThenVerify(t, bin) })
}

// runCache runs `warmpool cache <args>` and returns its exit code and the result it wrote.
func runCache(t *testing.T, bin string, args ...string) (int, volumes.JobResult, string) {
	t.Helper()
	return runCacheUnder(t, nil, bin, args...)
}

// runCacheUnder is runCache with the binary started by wrapper (e.g. setpriv and its flags).
func runCacheUnder(t *testing.T, wrapper []string, bin string, args ...string) (int, volumes.JobResult, string) {
	t.Helper()
	result := filepath.Join(t.TempDir(), "termination-log")
	// --result-file first: a bad flag stops parsing, and the default is the real
	// /dev/termination-log.
	argv := append(append(append([]string(nil), wrapper...), bin), append([]string{"cache", args[0], "--result-file", result}, args[1:]...)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	code := 0
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(result)
	if err != nil {
		t.Fatalf("no result file after `cache %v` (exit %d): %v\n%s", args, code, err, out)
	}
	res, err := volumes.ParseJobResult(string(data))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return code, res, string(out)
}

// engineDir writes a small engine cache as an engine of engine.Current leaves it ("clean":
// it returned from main; "unclean": it was killed), with real bolt DBs and dagql-cache.db
// (volumes/engine/enginetest), and a blob under worker/.
func engineDir(t *testing.T, dir, fixture string) {
	t.Helper()
	c, err := engine.ForVersion(engine.Current)
	if err != nil {
		t.Fatal(err)
	}
	state := map[string]enginetest.State{"clean": enginetest.Clean, "unclean": enginetest.Killed}[fixture]
	if err := enginetest.WriteState(dir, c, state); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "worker/content/blobs/sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "worker/content/blobs/sha256/x"), []byte("blob"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func testSaveThenRestore(t *testing.T, bin string) {
	root := t.TempDir()
	cache, volume := filepath.Join(root, "node-a", "dagger"), filepath.Join(root, "pvc")
	engineDir(t, cache, "clean")
	id := []string{"--pool", "dagger", "--engine-version", engine.Current, "--arch", "amd64", "--workers", "2", "--bwlimit", "200Mi"}

	code, res, out := runCache(t, bin, append([]string{"save", "--cache-dir", cache, "--volume-dir", volume, "--node", "node-a"}, id...)...)
	// dagql-cache.db, the release's bolt DBs, the blob.
	current, err := engine.ForVersion(engine.Current)
	if err != nil {
		t.Fatal(err)
	}
	files := int64(2 + len(current.BoltDBs))
	if code != volumes.ExitOK || res.Result != volumes.ResultSaved || res.Files != files || res.EngineVersion != engine.Current {
		t.Fatalf("save: exit %d, result %+v, want 0 / saved %d files\n%s", code, res, files, out)
	}

	// The restore Job mounts the parent of the engine's dir and names the dir beneath it.
	host := filepath.Join(root, "node-b")
	code, res, out = runCache(t, bin, append([]string{"restore", "--volume-dir", volume, "--cache-dir", filepath.Join(host, "dagger"), "--node", "node-b"}, id...)...)
	if code != volumes.ExitOK || res.Result != volumes.ResultRestored || res.Files != files {
		t.Fatalf("restore: exit %d, result %+v, want 0 / restored %d files\n%s", code, res, files, out)
	}
	got, err := os.ReadFile(filepath.Join(host, "dagger", "worker/content/blobs/sha256/x"))
	if err != nil || string(got) != "blob" {
		t.Errorf("restored blob: %q, %v", got, err)
	}
	if err := copier.CheckCleanShutdown(filepath.Join(host, "dagger"), current); err != nil {
		t.Errorf("restored cache is not clean: %v", err)
	}
	ents, err := os.ReadDir(host)
	if err != nil || len(ents) != 1 {
		t.Errorf("node-b holds %v (%v), want only the cache dir (no staging leftovers)", ents, err)
	}
}

func testExitCodes(t *testing.T, bin string) {
	root := t.TempDir()
	unclean, volume := filepath.Join(root, "unclean"), filepath.Join(root, "pvc")
	engineDir(t, unclean, "unclean")
	empty := filepath.Join(root, "empty")
	if err := os.MkdirAll(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	clean := filepath.Join(root, "clean")
	engineDir(t, clean, "clean")
	id := []string{"--engine-version", engine.Current, "--arch", "amd64"}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		result string
	}{
		{"unclean engine is not saved", append([]string{"save", "--cache-dir", unclean, "--volume-dir", volume}, id...), volumes.ExitUnclean, volumes.ResultUnclean},
		{"engine release without a contract is a failure", []string{"save", "--cache-dir", clean, "--volume-dir", volume, "--engine-version", "v0.22.0", "--arch", "amd64"}, volumes.ExitFailed, volumes.ResultFailed},
		{"volume without a manifest is not restored", append([]string{"restore", "--cache-dir", filepath.Join(root, "target"), "--volume-dir", empty}, id...), volumes.ExitNoCache, volumes.ResultNoCache},
		{"missing flag", []string{"save", "--cache-dir", unclean}, volumes.ExitUsage, volumes.ResultFailed},
		{"bad bandwidth", append([]string{"save", "--cache-dir", unclean, "--volume-dir", volume, "--bwlimit", "fast"}, id...), volumes.ExitUsage, volumes.ResultFailed},
		{"unknown flag", []string{"save", "--bogus"}, volumes.ExitUsage, volumes.ResultFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, res, out := runCache(t, bin, tc.args...)
			if code != tc.code || res.Result != tc.result || res.Reason == "" {
				t.Errorf("exit %d, result %+v; want exit %d, %s with a reason\n%s", code, res, tc.code, tc.result, out)
			}
		})
	}
	if _, err := os.Stat(volume); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused save touched the volume: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "target")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused restore created the cache dir: %v", err)
	}
}

// testRestoreThenVerify restores a volume with a restore ID, then asks `cache verify` what the
// engine did with it: kept (warm), wiped (worker/ reset), or another restore's.
func testRestoreThenVerify(t *testing.T, bin string) {
	root := t.TempDir()
	src, volume := filepath.Join(root, "src"), filepath.Join(root, "pvc")
	engineFiles(t, src)
	// The volume is made by the copier directly: what is tested here is restore and verify.
	if _, err := copier.Copy(t.Context(), src, volume, copier.Options{EngineVersion: "v0.21.8", Architecture: "amd64", SourceNode: "node-a"}); err != nil {
		t.Fatal(err)
	}
	restore := func(t *testing.T, cache, id string) {
		t.Helper()
		code, res, out := runCache(t, bin, "restore", "--volume-dir", volume, "--cache-dir", cache, "--engine-version", "v0.21.8", "--arch", "amd64", "--restore-id", id)
		if code != volumes.ExitOK || res.Result != volumes.ResultRestored {
			t.Fatalf("restore: exit %d, result %+v\n%s", code, res, out)
		}
	}
	cache := filepath.Join(root, "node-b", "dagger")
	restore(t, cache, "restore-1")
	if got, err := os.ReadFile(filepath.Join(cache, cachejob.RestoreMarker)); err != nil || string(got) != "restore-1\n" {
		t.Fatalf("restore marker %q, %v", got, err)
	}

	verify := func(dir, id string) []string { return []string{"verify", "--cache-dir", dir, "--restore-id", id} }
	for _, tc := range []struct {
		name   string
		before func(t *testing.T) // what happened on the node since the restore
		args   []string
		code   int
		result string
		reason string
	}{
		{"the engine kept the cache", nil, verify(cache, "restore-1"), volumes.ExitOK, volumes.ResultWarm, "names this restore"},
		{"another restore's marker", nil, verify(cache, "restore-0"), volumes.ExitWiped, volumes.ResultWiped, `names restore "restore-1", not "restore-0"`},
		{"no cache dir", nil, verify(filepath.Join(root, "node-c", "dagger"), "restore-1"), volumes.ExitWiped, volumes.ResultWiped, "does not exist"},
		{"missing --restore-id", nil, []string{"verify", "--cache-dir", cache}, volumes.ExitUsage, volumes.ResultFailed, "--restore-id"},
		{"unknown flag", nil, []string{"verify", "--volume-dir", volume}, volumes.ExitUsage, volumes.ResultFailed, "unknown flag"},
		{"the engine wiped it at start", func(t *testing.T) {
			// initLocalCacheState: worker/ and dagql-cache.db* removed, worker/ made again.
			for _, p := range []string{filepath.Join(cache, "worker"), filepath.Join(cache, copier.EngineStateDB)} {
				if err := os.RemoveAll(p); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Mkdir(filepath.Join(cache, "worker"), 0o700); err != nil {
				t.Fatal(err)
			}
		}, verify(cache, "restore-1"), volumes.ExitWiped, volumes.ResultWiped, "the engine discarded the restored cache at start: worker/ was reset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before(t)
			}
			code, res, out := runCache(t, bin, tc.args...)
			if code != tc.code || res.Result != tc.result || !strings.Contains(res.Reason, tc.reason) {
				t.Errorf("exit %d, result %+v; want exit %d, %s with a reason containing %q\n%s", code, res, tc.code, tc.result, tc.reason, out)
			}
		})
	}

	// A worker/ the verify cannot read (mode 0, and the process is root without
	// CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, dropped by setpriv for the exec) gives no
	// verdict: failed, exit 1, never wiped.
	t.Run("unreadable worker dir", func(t *testing.T) {
		cache := filepath.Join(root, "node-d", "dagger")
		restore(t, cache, "restore-2")
		worker := filepath.Join(cache, "worker")
		if err := os.Chmod(worker, 0); err != nil {
			t.Fatal(err)
		}
		drop := "-dac_override,-dac_read_search"
		code, res, out := runCacheUnder(t, []string{"/usr/bin/setpriv", "--inh-caps=" + drop, "--bounding-set=" + drop, "--"}, bin, verify(cache, "restore-2")...)
		if code != volumes.ExitFailed || res.Result != volumes.ResultFailed || !strings.Contains(res.Reason, "permission denied") {
			t.Errorf("exit %d, result %+v; want exit 1, failed: permission denied\n%s", code, res, out)
		}
		// The same dir with the capabilities: the marker is there, so the setup is sound.
		if code, res, out := runCache(t, bin, verify(cache, "restore-2")...); code != volumes.ExitOK || res.Result != volumes.ResultWarm {
			t.Errorf("with DAC capabilities: exit %d, result %+v, want warm\n%s", code, res, out)
		}
	})
}

// engineFiles writes a small engine cache: a state database and worker/ with a blob.
func engineFiles(t *testing.T, dir string) {
	t.Helper()
	for rel, data := range map[string]string{
		copier.EngineStateDB:            "state",
		"worker/content/blobs/sha256/x": "blob",
		"worker/metadata_v2.db":         "bolt",
	} {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
