// Package enginecache keeps the Dagger Engine cache across nodes: the save controller holds a node
// that is going away until its cache is copied and snapshotted, the restore controller copies
// the newest matching snapshot onto a new node before its engine starts, and the GC controller
// applies retention and removes what vanished nodes left behind. The objects and the decisions
// come from package volumes; these controllers only read the cluster and act.
package enginecache

import (
	"context"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// Defaults of Options.
const (
	DefaultSaveMargin = 30 * time.Second
	// DefaultMinSaveTime: a save is not started with less time left (a spot notice is 2 min).
	DefaultMinSaveTime    = 2 * time.Minute
	DefaultNotReadyMaxAge = 24 * time.Hour
	DefaultOrphanGrace    = 10 * time.Minute
	DefaultGCInterval     = 5 * time.Minute
	DefaultGuardImage     = "registry.k8s.io/pause:3.10"
	// DefaultSaveVolumeBindTimeout: a save volume cloned from a snapshot that is still Pending
	// after this is given up for an empty one. EBS creates a volume from a snapshot in seconds
	// to a minute (the data loads lazily afterwards); a clone that takes longer is stuck.
	DefaultSaveVolumeBindTimeout = 5 * time.Minute
	// DefaultSnapshotReadyTimeout: a snapshot not ready this long after its cut is reported
	// failed. A first, full EBS snapshot of a few hundred GiB can take an hour or more to
	// upload; an incremental one much less.
	DefaultSnapshotReadyTimeout = 6 * time.Hour
	// pollInterval re-reads a waiting operation even when no watch fires.
	pollInterval = 15 * time.Second
	// runnerPoll re-reads the pods on a node whose engine waits for them: they are not
	// watched (that would wake the save for every pod in the cluster).
	runnerPoll = 3 * time.Second
)

// Options are the cache controllers' settings that are not part of the user's config.
type Options struct {
	// ConfigMap is warmpool's config; its namespace holds every object the controllers make.
	ConfigMap types.NamespacedName
	// CopierImage runs `warmpool cache save|restore` (warmpool's own image).
	CopierImage string
	// GuardImage is the guard pod's image (a pause image).
	GuardImage string
	// Jobs is each pool's job demand as the scaling controller last read it (state.Cluster);
	// nil never skips a restore for waiting jobs (cache.restore.whenJobsWait).
	Jobs JobDemand
	// VerifyTimeout bounds the wait for the engine's verdict on a restored cache.
	VerifyTimeout time.Duration
	// SaveMargin is kept free before a node's deadline.
	SaveMargin time.Duration
	// MinSaveTime is the least time left a save is started with.
	MinSaveTime time.Duration
	// SaveVolumeBindTimeout bounds how long a save volume cloned from the previous snapshot may
	// stay Pending before the save falls back to an empty volume.
	SaveVolumeBindTimeout time.Duration
	// SnapshotReadyTimeout bounds a snapshot's upload after its cut: past it the snapshot is
	// reported failed (CacheSnapshotFailed) and never restored.
	SnapshotReadyTimeout time.Duration
	NotReadyMaxAge       time.Duration
	OrphanGrace          time.Duration
	GCInterval           time.Duration
	// EC2 builds the client for fast snapshot restore; nil is the real EC2 API.
	EC2 EC2Client
	// NoSnapshotAPI says the cluster serves no VolumeSnapshot API (no CSI snapshotter CRDs).
	// Nothing can be saved then; only the restore controller runs, to release new nodes of
	// cache-enabled pools cold instead of leaving their startup taint in place.
	NoSnapshotAPI bool
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.VerifyTimeout, DefaultVerifyTimeout)
	def(&o.SaveMargin, DefaultSaveMargin)
	def(&o.MinSaveTime, DefaultMinSaveTime)
	def(&o.SaveVolumeBindTimeout, DefaultSaveVolumeBindTimeout)
	def(&o.SnapshotReadyTimeout, DefaultSnapshotReadyTimeout)
	def(&o.NotReadyMaxAge, DefaultNotReadyMaxAge)
	def(&o.OrphanGrace, DefaultOrphanGrace)
	def(&o.GCInterval, DefaultGCInterval)
	if o.GuardImage == "" {
		o.GuardImage = DefaultGuardImage
	}
}

// base holds what every cache controller shares.
type base struct {
	kube client.Client
	// live reads around the cache where a stale read would repeat a step that already
	// happened (the informers of different kinds are not in step with each other).
	live     client.Reader
	recorder record.EventRecorder
	clk      clock.Clock
	current  func() *config.Config
	opts     Options
}

// Controllers are the three cache controllers.
type Controllers struct {
	Save    *SaveController
	Restore *RestoreController
	GC      *GCController
}

// New builds the cache controllers. current returns the config in force (the pools
// controller's); only pools with cache.enabled are served.
func New(kube client.Client, live client.Reader, recorder record.EventRecorder, clk clock.Clock, current func() *config.Config, opts Options) *Controllers {
	opts.setDefaults()
	b := base{kube: kube, live: live, recorder: recorder, clk: clk, current: current, opts: opts}
	return &Controllers{
		Save:    &SaveController{base: b, kick: make(chan event.GenericEvent, 1)},
		Restore: &RestoreController{base: b, kick: make(chan event.GenericEvent, 1)},
		GC:      newGCController(b, opts.EC2),
	}
}

// Register wires the three controllers into mgr.
func (c *Controllers) Register(mgr ctrl.Manager) error {
	if c.Restore.opts.NoSnapshotAPI {
		// Watching VolumeSnapshots would fail the manager's start.
		return c.Restore.Register(mgr)
	}
	if err := c.Save.Register(mgr); err != nil {
		return err
	}
	if err := c.Restore.Register(mgr); err != nil {
		return err
	}
	return c.GC.Register(mgr)
}

// EnqueueAll looks at every pool's nodes again after a config change; a pool that became
// cache-enabled may have nodes going away or waiting for a restore.
func (c *Controllers) EnqueueAll() {
	kick(c.Save.kick)
	kick(c.Restore.kick)
	c.GC.enqueue()
}

func (b *base) namespace() string { return b.opts.ConfigMap.Namespace }

// target is a node's side of a cache operation.
func (b *base) target(p *config.Pool, node, arch string) volumes.Target {
	return volumes.Target{
		Namespace: b.namespace(), Pool: p.Name, Node: node, Arch: arch, EngineVersion: p.Engine.Version, EngineContract: p.Engine.Contract,
		HostPath: p.Engine.HostPath, Image: b.opts.CopierImage, Labels: nodepools.OwnedLabels(p.Name),
	}
}

// nodeRef is what Events are recorded on; a node that is gone still lists its Events by name.
func nodeRef(name string, n *corev1.Node) *corev1.Node {
	if n != nil {
		return n
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// get reads obj by name into obj, reporting whether it exists. An object being deleted counts
// as gone: a guard pod or PVC on its way out (pods wait for the kubelet, PVCs for their users)
// serves nothing any more.
func (b *base) get(ctx context.Context, name string, obj client.Object) (bool, error) {
	return b.getFrom(ctx, b.kube, name, obj)
}

func (b *base) getFrom(ctx context.Context, r client.Reader, name string, obj client.Object) (bool, error) {
	err := r.Get(ctx, types.NamespacedName{Namespace: b.namespace(), Name: name}, obj)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("getting %T %s, %w", obj, name, err)
	}
	return obj.GetDeletionTimestamp() == nil, nil
}

// getNode reads a Node, nil when it no longer exists; live reads the API server, not the cache.
func (b *base) getNode(ctx context.Context, name string, live bool) (*corev1.Node, error) {
	n := &corev1.Node{}
	var r client.Reader = b.kube
	if live {
		r = b.live
	}
	if err := r.Get(ctx, types.NamespacedName{Name: name}, n); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("getting node %s, %w", name, err)
	}
	return n, nil
}

// create creates obj; one that exists already (a lagging cache) is not an error.
func (b *base) create(ctx context.Context, obj client.Object) error {
	_, err := b.createNew(ctx, obj)
	return err
}

// createNew is create that also tells whether this call created obj (false: it existed), for
// what must happen once per object, such as its Event.
func (b *base) createNew(ctx context.Context, obj client.Object) (bool, error) {
	err := b.kube.Create(ctx, obj)
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsAlreadyExists(err):
		return false, nil
	}
	return false, fmt.Errorf("creating %T %s, %w", obj, obj.GetName(), err)
}

// provisionerSourceProtection is external-provisioner's finalizer on a VolumeSnapshot it is
// creating a volume from (pkg/controller/controller.go, snapshotSourceProtectionFinalizer): with
// it a snapshot being deleted is still cloned; without it the provisioner refuses the clone.
const provisionerSourceProtection = "provisioner.storage.kubernetes.io/volumesnapshot-as-source-protection"

// remove deletes obj if it exists; Jobs take their pods with them.
func (b *base) remove(ctx context.Context, obj client.Object) error {
	if obj == nil || obj.GetName() == "" {
		return nil
	}
	if err := b.kube.Delete(ctx, obj, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting %T %s, %w", obj, obj.GetName(), err)
	}
	return nil
}

// jobResult reads a cache Job's outcome from its pod, or from the Job's own Failed condition
// when the pod never reported one (deleted, never started, deadline exceeded).
func (b *base) jobResult(ctx context.Context, job *batchv1.Job) (volumes.JobResult, bool, error) {
	pods := &corev1.PodList{}
	if err := b.kube.List(ctx, pods, client.InNamespace(job.Namespace), client.MatchingLabels{batchv1.ControllerUidLabel: string(job.UID)}); err != nil {
		return volumes.JobResult{}, false, fmt.Errorf("listing pods of job %s, %w", job.Name, err)
	}
	for i := range pods.Items {
		if r, done := volumes.PodResult(&pods.Items[i]); done {
			return r, true, nil
		}
	}
	for _, c := range job.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			return volumes.JobResult{Result: volumes.ResultFailed, Reason: "job failed: " + c.Reason}, true, nil
		}
	}
	return volumes.JobResult{}, false, nil
}

// enginePods are the engine pods of pool on node that still run (terminal pods have exited).
func (b *base) enginePods(ctx context.Context, pool *config.Pool, node string) ([]*corev1.Pod, error) {
	sel := labels.SelectorFromSet(labels.Set{volumes.LabelEngineName: volumes.EngineName, volumes.LabelPool: pool.Name})
	if ds := pool.Engine.ExistingDaemonSet; ds != nil {
		var err error
		if sel, err = metav1.LabelSelectorAsSelector(ds); err != nil {
			return nil, fmt.Errorf("pool %s engine.existingDaemonSet selector, %w", pool.Name, err)
		}
	}
	pods := &corev1.PodList{}
	if err := b.kube.List(ctx, pods, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("listing engine pods, %w", err)
	}
	var out []*corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.NodeName == node && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			out = append(out, p)
		}
	}
	return out, nil
}

// nodeClaimOf finds the NodeClaim of a node of pool, nil when there is none.
func (b *base) nodeClaimOf(ctx context.Context, pool, node string) (*karpv1.NodeClaim, error) {
	list := &karpv1.NodeClaimList{}
	if err := b.kube.List(ctx, list, client.MatchingLabels{karpv1.NodePoolLabelKey: nodepools.Name(pool)}); err != nil {
		return nil, fmt.Errorf("listing nodeclaims of pool %s, %w", pool, err)
	}
	for i := range list.Items {
		if list.Items[i].Status.NodeName == node {
			return &list.Items[i], nil
		}
	}
	return nil, nil
}

// stamp formats a time for an annotation; parseStamp reads it back (zero when absent or bad).
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func parseStamp(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// hasTaint says whether the node carries a taint of key and effect.
func hasTaint(n *corev1.Node, key string, effect corev1.TaintEffect) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key && t.Effect == effect {
			return true
		}
	}
	return false
}

// opSelector selects warmpool's objects of one protocol op.
func opSelector(op string) labels.Selector {
	return labels.SelectorFromSet(labels.Set{nodepools.LabelManagedBy: nodepools.ManagedBy, volumes.LabelOp: op})
}
