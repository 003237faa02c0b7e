package cachejob_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/cachejob"
	"warmpool.io/warmpool/volumes/copier"
	"warmpool.io/warmpool/volumes/engine"
	"warmpool.io/warmpool/volumes/engine/enginetest"
)

// testEngine is the engine release the cache Jobs in these tests run for.
const testEngine = "v0.19.7"

// engineCache writes a small engine cache tree into dir: the state an engine of testEngine
// leaves ("clean": it returned from main; "unclean": it was killed and left its lock file),
// with real bolt DBs and dagql-cache.db (volumes/engine/enginetest), a content blob, a
// snapshot dir, a symlink and a hardlink.
func engineCache(t *testing.T, dir, fixture string) {
	t.Helper()
	c, err := engine.ForVersion(testEngine)
	if err != nil {
		t.Fatal(err)
	}
	state := map[string]enginetest.State{"clean": enginetest.Clean, "unclean": enginetest.Killed}[fixture]
	if err := enginetest.WriteState(dir, c, state); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"worker/content/blobs/sha256/aa":                bytes.Repeat([]byte("layer"), 10000),
		"worker/snapshots/1/fs/usr/bin/tool":            []byte("#!/bin/sh\necho hi\n"),
		"worker/cachemounts/go-build/00/0000-d":         []byte("build output"),
		"worker/snapshots/1/fs/etc/config.placeholder":  nil,
		"worker/executor/runc-log.json":                 []byte("{}"),
		"worker/clientdbs/client1.db":                   []byte("client"),
		"worker/content/ingest/.keep":                   nil,
		"worker/snapshots/2/fs/usr/share/doc/README.md": []byte("docs"),
	}
	for rel, data := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../../1/fs/usr/bin/tool", filepath.Join(dir, "worker/snapshots/2/fs/tool")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "worker/content/blobs/sha256/aa"), filepath.Join(dir, "worker/snapshots/2/fs/layer")); err != nil {
		t.Fatal(err)
	}
}

// tree maps each path under dir (manifest excluded) to its content or symlink target.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case rel == "." || rel == copier.ManifestName:
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "-> " + target
		case d.IsDir():
			out[rel] = "dir"
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = string(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, got, want string) {
	t.Helper()
	g, w := tree(t, got), tree(t, want)
	if len(g) != len(w) {
		t.Errorf("%s has %d entries, %s has %d", got, len(g), want, len(w))
	}
	for p, wv := range w {
		if gv, ok := g[p]; !ok {
			t.Errorf("%s: missing %s", got, p)
		} else if gv != wv {
			t.Errorf("%s: %s differs", got, p)
		}
	}
}

func opts(cache, volume string) cachejob.Options {
	return cachejob.Options{
		CacheDir: cache, VolumeDir: volume, Pool: "dagger", Node: "node-a",
		EngineVersion: "v0.19.7", Architecture: "amd64", Workers: 2,
	}
}

func TestSaveThenRestoreRoundTrip(t *testing.T) {
	root := t.TempDir()
	cache, volume := filepath.Join(root, "a", "dagger"), filepath.Join(root, "volume")
	engineCache(t, cache, "clean")
	var log bytes.Buffer
	o := opts(cache, volume)
	o.Log = &log
	res, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: o})
	if err != nil {
		t.Fatalf("save: %v\n%s", err, log.String())
	}
	if res.Result != volumes.ResultSaved || cachejob.ExitCode(res) != volumes.ExitOK {
		t.Fatalf("save result %+v, want saved / exit 0", res)
	}
	if res.Files != 13 || res.Bytes == 0 || res.EngineVersion != "v0.19.7" || res.Architecture != "amd64" {
		t.Errorf("save result %+v, want 13 files (the hardlink counts once), bytes, engine and arch", res)
	}
	if !strings.Contains(log.String(), "full save") || !strings.Contains(log.String(), "done: ") {
		t.Errorf("save log lacks the mode or the final progress line:\n%s", log.String())
	}
	m, err := copier.Verify(volume)
	if err != nil {
		t.Fatalf("saved volume does not verify: %v", err)
	}
	if m.SourceNode != "node-a" || m.EngineVersion != "v0.19.7" {
		t.Errorf("manifest source node %q engine %q", m.SourceNode, m.EngineVersion)
	}
	sameTree(t, volume, cache)

	// Restore onto another node's disk, where the parent dir does not exist yet.
	target := filepath.Join(root, "b", "mnt", "dagger")
	o = opts(target, volume)
	o.Node = "node-b"
	res, err = cachejob.Restore(t.Context(), cachejob.RestoreOptions{Options: o})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if res.Result != volumes.ResultRestored || cachejob.ExitCode(res) != volumes.ExitOK || res.Files != 13 {
		t.Fatalf("restore result %+v, want restored, 13 files", res)
	}
	sameTree(t, target, cache)
	if err := copier.CheckCleanShutdown(target, contractOf(t, testEngine)); err != nil {
		t.Errorf("restored cache lost its clean-shutdown marker: %v", err)
	}
	if _, err := os.Stat(cachejob.StagingDir(target)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("staging dir left behind: %v", err)
	}
	if got := cachejob.StagingDir(target); filepath.Dir(got) != filepath.Dir(target) || !strings.HasPrefix(filepath.Base(got), ".") {
		t.Errorf("default staging dir %s is not a hidden sibling of %s", got, target)
	}
}

// A node restored from the volume's copy saves onto it incrementally: only what changed
// since the restore is copied.
func TestSaveIsIncrementalAfterARestore(t *testing.T) {
	root := t.TempDir()
	cacheA, cacheB, volume := filepath.Join(root, "a", "dagger"), filepath.Join(root, "b", "dagger"), filepath.Join(root, "volume")
	engineCache(t, cacheA, "clean")
	if _, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: opts(cacheA, volume)}); err != nil {
		t.Fatal(err)
	}
	o := opts(cacheB, volume)
	o.Node = "node-b"
	if _, err := cachejob.Restore(t.Context(), cachejob.RestoreOptions{Options: o}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cacheB, "worker/executor/runc-log.json"), []byte(`{"changed":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	o.Log = &log
	res, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: o})
	if err != nil || res.Result != volumes.ResultSaved {
		t.Fatalf("second save: %+v, %v", res, err)
	}
	if !strings.Contains(log.String(), "incremental save") || !strings.Contains(log.String(), "restored from a copy of node node-a") ||
		!strings.Contains(log.String(), "(copied 1 files") {
		t.Errorf("the save after the restore did not copy only the changed file:\n%s", log.String())
	}
	sameTree(t, volume, cacheB)
}

// A cache warmpool did not restore gives the save no proof that any of its files holds the
// volume's bytes: the save onto a volume with a copy copies every file.
func TestSaveOfAnUnrestoredCacheCopiesEveryFile(t *testing.T) {
	root := t.TempDir()
	cache, volume := filepath.Join(root, "dagger"), filepath.Join(root, "volume")
	engineCache(t, cache, "clean")
	first, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: opts(cache, volume)})
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	o := opts(cache, volume)
	o.Log = &log
	res, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: o})
	if err != nil || res.Result != volumes.ResultSaved {
		t.Fatalf("second save: %+v, %v", res, err)
	}
	want := fmt.Sprintf("(copied %d files", first.Files)
	if !strings.Contains(log.String(), "not restored by warmpool") || !strings.Contains(log.String(), want) {
		t.Errorf("the second save of an unrestored cache: want %q in its log:\n%s", want, log.String())
	}
	sameTree(t, volume, cache)
}

func TestSaveRefusesAnUncleanEngine(t *testing.T) {
	for _, tc := range []struct {
		name, fixture string
		lock          bool
		want          error
	}{
		{"lock file left by a killed engine", "unclean", false, copier.ErrUnclean},
		{"engine still holds its lock", "clean", true, copier.ErrEngineRunning},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			cache, volume := filepath.Join(root, "dagger"), filepath.Join(root, "volume")
			engineCache(t, cache, tc.fixture)
			if tc.lock {
				f, err := os.Create(filepath.Join(cache, copier.EngineLockFile))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				// flock(2) locks conflict between open file descriptions, even in one process.
				if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
					t.Fatal(err)
				}
			}
			res, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: opts(cache, volume)})
			if !errors.Is(err, tc.want) {
				t.Fatalf("save error %v, want %v", err, tc.want)
			}
			if res.Result != volumes.ResultUnclean || cachejob.ExitCode(res) != volumes.ExitUnclean || res.Reason == "" {
				t.Errorf("result %+v, want unclean with a reason, exit %d", res, volumes.ExitUnclean)
			}
			if _, err := os.Stat(volume); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("an unclean save touched the volume: %v", err)
			}
		})
	}
}

func contractOf(t *testing.T, version string) engine.Contract {
	t.Helper()
	c, err := engine.ForVersion(version)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// An engine release warmpool has no contract for is a failed save with the reason, not an
// "unclean" engine: nobody knows what its clean exit looks like.
func TestSaveOfAnUnknownEngineReleaseFails(t *testing.T) {
	root := t.TempDir()
	cache, volume := filepath.Join(root, "dagger"), filepath.Join(root, "volume")
	engineCache(t, cache, "clean")
	o := opts(cache, volume)
	o.EngineVersion = "v0.22.0"
	res, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: o})
	if !errors.Is(err, engine.ErrUnsupported) {
		t.Fatalf("save error %v, want engine.ErrUnsupported", err)
	}
	if res.Result != volumes.ResultFailed || cachejob.ExitCode(res) != volumes.ExitFailed || !strings.Contains(res.Reason, "v0.22.0") || !strings.Contains(res.Reason, "v0.21.0 - v0.21.8") {
		t.Errorf("result %+v, want failed, naming the version and the supported ranges", res)
	}
	if _, err := os.Stat(volume); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a save without a contract touched the volume: %v", err)
	}

	// The user declares that release to behave like a known row (engine.contract): saved.
	o.EngineContract = "v0.19.5"
	if res, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: o}); err != nil || res.Result != volumes.ResultSaved {
		t.Fatalf("save with --engine-contract: %+v, %v", res, err)
	}
	// A contract whose clean exit the cache does not show is refused: the v0.21 row needs a
	// clean-shutdown record this pre-v0.21 cache does not have.
	o.EngineContract = "v0.21"
	if res, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: o}); !errors.Is(err, copier.ErrUnclean) || res.Result != volumes.ResultUnclean {
		t.Fatalf("save of a pre-v0.21 cache under the v0.21 contract: %+v, %v; want unclean", res, err)
	}
}

func TestRestoreLeavesTheCacheAloneWithoutAGoodCopy(t *testing.T) {
	good := func(t *testing.T, volume string) {
		cache := filepath.Join(t.TempDir(), "src")
		engineCache(t, cache, "clean")
		if _, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: opts(cache, volume)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name       string
		volume     func(t *testing.T, volume string)
		engine     string
		result     string
		code       int
		wantReason string
	}{
		{"empty volume", func(t *testing.T, v string) { os.MkdirAll(v, 0o755) }, "v0.19.7", volumes.ResultNoCache, volumes.ExitNoCache, "no warmpool manifest"},
		{"interrupted copy (no manifest)", func(t *testing.T, v string) {
			good(t, v)
			os.Remove(filepath.Join(v, copier.ManifestName))
		}, "v0.19.7", volumes.ResultNoCache, volumes.ExitNoCache, "no warmpool manifest"},
		{"corrupt manifest", func(t *testing.T, v string) {
			good(t, v)
			os.WriteFile(filepath.Join(v, copier.ManifestName), []byte("{not json"), 0o644)
		}, "v0.19.7", volumes.ResultNoCache, volumes.ExitNoCache, "does not match its manifest"},
		{"other engine version", good, "v0.20.0", volumes.ResultFailed, volumes.ExitFailed, `engine version "v0.19.7", node runs "v0.20.0"`},
		{"copy that does not match its manifest", func(t *testing.T, v string) {
			good(t, v)
			os.WriteFile(filepath.Join(v, copier.EngineStateDB), []byte("torn"), 0o644)
		}, "v0.19.7", volumes.ResultCorrupt, volumes.ExitCorrupt, "dagql-cache.db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			cache, volume := filepath.Join(root, "dagger"), filepath.Join(root, "volume")
			tc.volume(t, volume)
			// The node's current cache, which must survive.
			if err := os.MkdirAll(cache, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(cache, "mine"), []byte("keep"), 0o644); err != nil {
				t.Fatal(err)
			}
			o := opts(cache, volume)
			o.EngineVersion = tc.engine
			res, err := cachejob.Restore(t.Context(), cachejob.RestoreOptions{Options: o})
			if err == nil {
				t.Fatal("restore succeeded")
			}
			if res.Result != tc.result || cachejob.ExitCode(res) != tc.code || !strings.Contains(res.Reason, tc.wantReason) {
				t.Errorf("result %+v (exit %d), want %s / exit %d with reason containing %q", res, cachejob.ExitCode(res), tc.result, tc.code, tc.wantReason)
			}
			if got := tree(t, cache); len(got) != 1 || got["mine"] != "keep" {
				t.Errorf("cache dir changed: %v", got)
			}
			if _, err := os.Stat(cachejob.StagingDir(cache)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("staging dir left behind: %v", err)
			}
		})
	}
}

func TestBadOptionsAreUsageErrors(t *testing.T) {
	_, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: cachejob.Options{CacheDir: "/x"}})
	var usage *cachejob.UsageError
	if !errors.As(err, &usage) || !strings.Contains(err.Error(), "--volume-dir, --engine-version, --arch") {
		t.Errorf("save without flags: %v, want a usage error naming the missing flags", err)
	}
	res, err := cachejob.Restore(t.Context(), cachejob.RestoreOptions{Options: cachejob.Options{VolumeDir: "/v"}})
	if !errors.As(err, &usage) || !strings.Contains(err.Error(), "--cache-dir") || res.Result != volumes.ResultFailed {
		t.Errorf("restore without --cache-dir: %+v, %v", res, err)
	}
}

func TestWriteResultIsWhatTheControllerParses(t *testing.T) {
	p := filepath.Join(t.TempDir(), "termination-log")
	want := volumes.JobResult{Result: volumes.ResultSaved, Bytes: 42, Files: 3, DurationSeconds: 1.5, EngineVersion: "v0.19.7", Architecture: "arm64"}
	if err := cachejob.WriteResult(p, want); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := volumes.ParseJobResult(string(data))
	if err != nil || got != want {
		t.Errorf("parsed %+v, %v; want %+v", got, err, want)
	}
}
