package cachejob_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/cachejob"
	"warmpool.io/warmpool/volumes/copier"
)

// engineCache writes a small engine cache tree into dir: the state database from the
// committed SQLite fixture (clean or unclean), a content blob, a snapshot dir, a symlink and
// a hardlink.
func engineCache(t *testing.T, dir, fixture string) {
	t.Helper()
	db, err := os.ReadFile(filepath.Join("..", "copier", "testdata", "sqlite", fixture, copier.EngineStateDB))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		copier.EngineStateDB:                            db,
		"worker/content/blobs/sha256/aa":                bytes.Repeat([]byte("layer"), 10000),
		"worker/snapshots/1/fs/usr/bin/tool":            []byte("#!/bin/sh\necho hi\n"),
		"worker/metadata_v2.db":                         []byte("bolt"),
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
	if res.Files != 10 || res.Bytes == 0 || res.EngineVersion != "v0.19.7" || res.Architecture != "amd64" {
		t.Errorf("save result %+v, want 10 files (the hardlink counts once), bytes, engine and arch", res)
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
	if res.Result != volumes.ResultRestored || cachejob.ExitCode(res) != volumes.ExitOK || res.Files != 10 {
		t.Fatalf("restore result %+v, want restored, 10 files", res)
	}
	sameTree(t, target, cache)
	if err := copier.CheckCleanShutdown(target, ""); err != nil {
		t.Errorf("restored cache lost its clean-shutdown marker: %v", err)
	}
	if _, err := os.Stat(cachejob.StagingDir(target)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("staging dir left behind: %v", err)
	}
	if got := cachejob.StagingDir(target); filepath.Dir(got) != filepath.Dir(target) || !strings.HasPrefix(filepath.Base(got), ".") {
		t.Errorf("default staging dir %s is not a hidden sibling of %s", got, target)
	}
}

func TestSaveIsIncrementalOnAVolumeWithACopy(t *testing.T) {
	root := t.TempDir()
	cache, volume := filepath.Join(root, "dagger"), filepath.Join(root, "volume")
	engineCache(t, cache, "clean")
	if _, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: opts(cache, volume)}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache, "worker/executor/runc-log.json"), []byte(`{"changed":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	o := opts(cache, volume)
	o.Log = &log
	res, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: o})
	if err != nil || res.Result != volumes.ResultSaved {
		t.Fatalf("second save: %+v, %v", res, err)
	}
	if !strings.Contains(log.String(), "incremental save") || !strings.Contains(log.String(), "(copied 1 files") {
		t.Errorf("second save did not copy only the changed file:\n%s", log.String())
	}
	sameTree(t, volume, cache)
}

func TestSaveRefusesAnUncleanEngine(t *testing.T) {
	for _, tc := range []struct {
		name, fixture string
		lock          bool
		want          error
	}{
		{"no clean-shutdown marker", "unclean", false, copier.ErrUnclean},
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
		}, "v0.19.7", volumes.ResultFailed, volumes.ExitFailed, "dagql-cache.db"},
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
