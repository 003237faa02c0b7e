package cluster

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/e2e/nodesim"
)

// Nodesim is the node simulator's name for Logs.
const Nodesim = "nodesim"

// buildWarmpool builds ./cmd/warmpool into the work dir in the background (cache pods run
// the real binary), unless prebuilt names one. The returned func waits for it.
func (c *Cluster) buildWarmpool(ctx context.Context, prebuilt string) func() (string, error) {
	if prebuilt != "" {
		return func() (string, error) { return prebuilt, nil }
	}
	var (
		bin  = filepath.Join(c.WorkDir, "warmpool")
		err  error
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		began := time.Now()
		root, rerr := RepoRoot()
		if rerr != nil {
			err = rerr
			return
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/warmpool")
		cmd.Dir = root
		if out, berr := cmd.CombinedOutput(); berr != nil {
			err = fmt.Errorf("building warmpool for nodesim: %w\n%s", berr, out)
			return
		}
		c.log("warmpool binary built in %s", since(began))
	}()
	return sync.OnceValues(func() (string, error) {
		<-done
		return bin, err
	})
}

// startNodesim creates the warmpool-sim StorageClass and VolumeSnapshotClass and starts the
// simulator that answers for them, plays the kubelet for cache pods and plays the engine.
func (c *Cluster) startNodesim(ctx context.Context, bin string, opts nodesim.Options) error {
	began := time.Now()
	objs := []client.Object{
		&storagev1.StorageClass{
			ObjectMeta:        metav1.ObjectMeta{Name: nodesim.ClassName},
			Provisioner:       nodesim.Driver,
			ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimDelete),
			VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
		},
		&snapshotv1.VolumeSnapshotClass{
			ObjectMeta:     metav1.ObjectMeta{Name: nodesim.ClassName},
			Driver:         nodesim.Driver,
			DeletionPolicy: snapshotv1.VolumeSnapshotContentDelete,
		},
	}
	for _, o := range objs {
		if err := c.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %T %s: %w", o, o.GetName(), err)
		}
	}
	logFile, err := c.openLog(Nodesim)
	if err != nil {
		return err
	}
	opts.Config, opts.Root, opts.WarmpoolBinary, opts.Log = c.Config, filepath.Join(c.WorkDir, Nodesim), bin, logFile
	c.Nodesim, err = nodesim.Start(ctx, opts)
	if err != nil {
		return fmt.Errorf("%w (log: %s)", err, c.Logs(Nodesim))
	}
	c.log("%s ready in %s", Nodesim, since(began))
	return nil
}
