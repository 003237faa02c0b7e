package nodesim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/copier"
)

// EngineDataPath is where the engine container mounts its cache hostPath.
const EngineDataPath = "/var/lib/dagger"

// AnnotationUncleanStop on an engine pod makes its stop unclean: on deletion the engine exits
// without recording clean_shutdown=1, as one killed before its graceful stop finished would.
// Tests set it to check that such a cache is not saved.
const AnnotationUncleanStop = "nodesim.warmpool.io/unclean-stop"

// engineProc is a "running" engine: the lock it holds on its cache dir.
type engineProc struct {
	uid  string
	node string
	dir  string
	lock *os.File
}

// release drops the flock and deletes the lock file, as the engine does on exit.
func (e *engineProc) release() {
	if e.lock == nil {
		return
	}
	_ = unix.Flock(int(e.lock.Fd()), unix.LOCK_UN)
	_ = e.lock.Close()
	_ = os.Remove(e.lock.Name())
	e.lock = nil
}

// engine plays the Dagger engine of engine pods (app.kubernetes.io/name=dagger-engine): kwok
// marks them Running, and nodesim does on disk what the engine does at start and at a
// graceful stop. kwok's pod-delete stage skips them, so the stop happens here.
type engine struct{ *Sim }

func isEnginePod(o client.Object) bool {
	return o.GetLabels()[volumes.LabelEngineName] == volumes.EngineName
}

func (e engine) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	key := req.String()
	pod := &corev1.Pod{}
	err := e.client.Get(ctx, req.NamespacedName, pod)
	if err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	e.mu.Lock()
	proc := e.engines[key]
	if proc != nil && (err != nil || string(pod.UID) != proc.uid) {
		// Gone without a graceful stop (force-deleted, its node removed): the engine was
		// killed, so no clean-shutdown record.
		proc.release()
		delete(e.engines, key)
		e.mu.Unlock()
		e.record(Event{Kind: EngineKilled, Node: proc.node, Object: key})
		proc = nil
	} else {
		e.mu.Unlock()
	}
	if err != nil || pod.Spec.NodeName == "" || !isEnginePod(pod) {
		return reconcile.Result{}, nil
	}

	if pod.DeletionTimestamp != nil {
		if proc != nil {
			unclean := pod.Annotations[AnnotationUncleanStop] == "true"
			// Graceful stop: persist the state with clean_shutdown=1, then exit (unlock).
			if !unclean {
				if err := e.writeStateDB(proc.dir, e.cleanDB); err != nil {
					return reconcile.Result{}, err
				}
			}
			e.mu.Lock()
			proc.release()
			delete(e.engines, key)
			e.mu.Unlock()
			if unclean {
				e.record(Event{Kind: EngineKilled, Node: proc.node, Object: key, Detail: "unclean stop requested"})
			} else {
				e.record(Event{Kind: EngineStopped, Node: proc.node, Object: key})
			}
		}
		if err := e.client.Delete(ctx, pod, client.GracePeriodSeconds(0), client.Preconditions{UID: &pod.UID}); client.IgnoreNotFound(err) != nil {
			return reconcile.Result{}, fmt.Errorf("confirming deletion of %s: %w", key, err)
		}
		return reconcile.Result{}, nil
	}
	if proc != nil || pod.Status.Phase != corev1.PodRunning {
		return reconcile.Result{}, nil
	}
	hostPath := engineHostPath(pod)
	if hostPath == "" {
		e.logf("%s: no hostPath mounted at %s; not simulating its engine", key, EngineDataPath)
		return reconcile.Result{}, nil
	}
	return e.start(key, pod, e.NodePath(pod.Spec.NodeName, hostPath))
}

// start does what the engine does when it starts on dir: keep a cache that shut down cleanly
// (warm start), wipe anything else and begin afresh (cold start), then record
// clean_shutdown=0 and hold the lock while running.
func (e engine) start(key string, pod *corev1.Pod, dir string) (reconcile.Result, error) {
	node := pod.Spec.NodeName
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return reconcile.Result{}, err
	}
	cleanErr := copier.CheckCleanShutdown(dir, "")
	if errors.Is(cleanErr, copier.ErrEngineRunning) {
		// Another engine holds the dir: the real one exits with "another instance running?".
		e.logf("%s: %v; retrying", key, cleanErr)
		return reconcile.Result{RequeueAfter: 2 * time.Second}, nil
	}
	warm := cleanErr == nil
	if !warm {
		if err := freshCache(dir, node); err != nil {
			return reconcile.Result{}, fmt.Errorf("writing a fresh engine cache in %s: %w", dir, err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, copier.EngineLockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return reconcile.Result{}, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return reconcile.Result{RequeueAfter: 2 * time.Second}, nil
	}
	proc := &engineProc{uid: string(pod.UID), node: node, dir: dir, lock: lock}
	if err := e.writeStateDB(dir, e.uncleanDB); err != nil {
		proc.release()
		return reconcile.Result{}, err
	}
	e.mu.Lock()
	e.engines[key] = proc
	e.mu.Unlock()
	if warm {
		detail := "kept a cleanly stopped cache"
		if _, err := copier.ReadManifest(dir); err == nil {
			detail = "restored"
		}
		e.record(Event{Kind: EngineWarmStart, Node: node, Object: key, Detail: detail})
	} else {
		e.record(Event{Kind: EngineColdStart, Node: node, Object: key, Detail: cleanErr.Error()})
	}
	return reconcile.Result{}, nil
}

// writeStateDB replaces the engine's SQLite state (a committed fixture whose meta table
// records clean_shutdown 0 or 1) and drops WAL leftovers, which SQLite would otherwise
// replay over it.
func (e engine) writeStateDB(dir string, db []byte) error {
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Remove(filepath.Join(dir, copier.EngineStateDB+suffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	p := filepath.Join(dir, copier.EngineStateDB)
	tmp := p + ".nodesim"
	if err := os.WriteFile(tmp, db, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// engineHostPath is the hostPath behind the engine container's /var/lib/dagger.
func engineHostPath(pod *corev1.Pod) string {
	for _, c := range pod.Spec.Containers {
		for _, m := range c.VolumeMounts {
			if filepath.Clean(m.MountPath) != EngineDataPath {
				continue
			}
			for _, v := range pod.Spec.Volumes {
				if v.Name == m.Name && v.HostPath != nil {
					return v.HostPath.Path
				}
			}
		}
	}
	return ""
}

// freshCache wipes dir, as the engine does with a cache it will not trust, and writes what a
// first build leaves: a content store, snapshots, bolt databases, cache mounts, a symlink
// and a hardlink. Contents are random, so a restored copy is recognisably this one; the
// file origin names the node that built it.
func freshCache(dir, node string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, ent := range ents {
		if err := os.RemoveAll(filepath.Join(dir, ent.Name())); err != nil {
			return err
		}
	}
	rnd := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return b
	}
	blob := rnd(64 << 10)
	files := map[string][]byte{
		"worker/content/blobs/sha256/" + hex.EncodeToString(rnd(32)): blob,
		"worker/content/blobs/sha256/" + hex.EncodeToString(rnd(32)): rnd(16 << 10),
		"worker/snapshots/metadata.db":                               rnd(8 << 10),
		"worker/snapshots/snapshots/1/fs/etc/os-release":             []byte("ID=alpine\n"),
		"worker/snapshots/snapshots/1/fs/usr/bin/app":                rnd(12 << 10),
		"worker/containerdmeta.db":                                   rnd(4 << 10),
		"worker/metadata_v2.db":                                      rnd(4 << 10),
		"worker/cachemounts/go-build/01/01ab-d":                      rnd(2 << 10),
		"worker/executor/origin":                                     []byte(node + "\n"),
	}
	for rel, data := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return err
		}
	}
	if err := os.Symlink("app", filepath.Join(dir, "worker/snapshots/snapshots/1/fs/usr/bin/app-link")); err != nil {
		return err
	}
	return os.Link(filepath.Join(dir, "worker/snapshots/snapshots/1/fs/usr/bin/app"), filepath.Join(dir, "worker/snapshots/snapshots/1/fs/usr/bin/app-hardlink"))
}
