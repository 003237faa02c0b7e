package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/storagecheck"
)

// karpenterReplacementWindow is how long Karpenter waits for a replacement node to initialize
// before it rolls a drift or replace-consolidation command back (disruption queue,
// minRetryDuration).
const karpenterReplacementWindow = 10 * time.Minute

// clusterStorage is what `render --check` reads from a cluster: everything the storage checks
// look at, read once.
type clusterStorage struct {
	classes storagecheck.Classes
	// noSnapshotAPI is set when the cluster serves no snapshot.storage.k8s.io/v1.
	noSnapshotAPI bool
	nodes         []corev1.Node
	csiNodes      []storagev1.CSINode
	// snapshots are warmpool's VolumeSnapshots in its namespace.
	snapshots []snapshotv1.VolumeSnapshot
}

// readClusterStorage lists the storage classes, the pools' nodes and their CSINodes, and the
// snapshots in namespace.
func readClusterStorage(ctx context.Context, cfg *rest.Config, namespace string) (*clusterStorage, error) {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(snapshotv1.AddToScheme(scheme))
	kube, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("building a client, %w", err)
	}
	cs := &clusterStorage{}
	scs := &storagev1.StorageClassList{}
	if err := kube.List(ctx, scs); err != nil {
		return nil, fmt.Errorf("listing storage classes, %w", err)
	}
	cs.classes.StorageClasses = scs.Items
	vscs := &snapshotv1.VolumeSnapshotClassList{}
	switch err := kube.List(ctx, vscs); {
	case meta.IsNoMatchError(err):
		cs.noSnapshotAPI = true
	case err != nil:
		return nil, fmt.Errorf("listing volume snapshot classes, %w", err)
	}
	cs.classes.SnapshotClasses = vscs.Items
	nodes := &corev1.NodeList{}
	if err := kube.List(ctx, nodes, client.HasLabels{volumes.LabelPool}); err != nil {
		return nil, fmt.Errorf("listing pool nodes, %w", err)
	}
	cs.nodes = nodes.Items
	csiNodes := &storagev1.CSINodeList{}
	if err := kube.List(ctx, csiNodes); err != nil {
		return nil, fmt.Errorf("listing csinodes, %w", err)
	}
	cs.csiNodes = csiNodes.Items
	if !cs.noSnapshotAPI {
		snaps := &snapshotv1.VolumeSnapshotList{}
		if err := kube.List(ctx, snaps, client.InNamespace(namespace), client.HasLabels{volumes.LabelPool}); err != nil {
			return nil, fmt.Errorf("listing snapshots in %s, %w", namespace, err)
		}
		cs.snapshots = snaps.Items
	}
	return cs, nil
}

// checkPoolStorage checks every cache-enabled pool's storage: from the config alone, the
// restore budget (notes) and that the newest snapshots fit it and the pool's smallest NVMe;
// with cluster (nil: none reachable), the save and restore classes, the CSI driver on the
// pool's nodes, and the snapshots there. Problems carry field paths; notes are for reading.
func checkPoolStorage(cfg *config.Config, cluster *clusterStorage) (problems field.ErrorList, notes []string) {
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		if !p.Cache.Enabled {
			continue
		}
		fp := field.NewPath("pools").Index(i).Child("cache")
		b := p.Cache.Restore.Budget()
		notes = append(notes, fmt.Sprintf("pool %s: a restore may read up to %s within %s (%s/s after %s of provisioning slack)",
			p.Name, storagecheck.FormatBytes(b.MaxBytes()), b.MaxWait, storagecheck.FormatBytes(b.Throughput), b.Slack))
		if b.MaxWait > karpenterReplacementWindow {
			notes = append(notes, fmt.Sprintf("pool %s: cache.restore.maxWait %s exceeds Karpenter's %s for a replacement node to initialize: a drift or replace-consolidation whose replacement restores that long is rolled back",
				p.Name, b.MaxWait, karpenterReplacementWindow))
		}
		if cluster == nil {
			continue
		}
		if cluster.noSnapshotAPI {
			problems = append(problems, field.Invalid(fp.Child("enabled"), true, "the cluster serves no snapshot.storage.k8s.io/v1 VolumeSnapshot API: install the CSI snapshotter's CRDs and controller"))
			continue
		}
		problems = append(problems, checkClasses(p, fp, cluster)...)
		problems = append(problems, checkSnapshots(p, fp, cluster)...)
	}
	return problems, notes
}

// checkClasses checks both volume roles' classes and the CSI driver on the pool's nodes.
func checkClasses(p *config.Pool, fp *field.Path, cluster *clusterStorage) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	driver := ""
	for _, role := range []storagecheck.Role{storagecheck.RoleSave, storagecheck.RoleRestore} {
		class, path := p.Cache.StorageClassName, fp.Child("storageClassName")
		if role == storagecheck.RoleRestore {
			class, path = p.Cache.RestoreStorageClassName, fp.Child("restoreStorageClassName")
		}
		v, found := storagecheck.CheckVolume(role, class, p.Cache.SnapshotClassName, cluster.classes)
		if role == storagecheck.RoleRestore {
			driver = v.Driver
		}
		for _, pr := range found {
			at, value := path, class
			if pr.Check == storagecheck.CheckSnapshotClass || pr.Check == storagecheck.CheckDriverMismatch {
				at, value = fp.Child("snapshotClassName"), p.Cache.SnapshotClassName
			}
			// The restore class is often the save class, and a snapshot class problem is the
			// same for both: each is said once.
			if key := at.String() + "/" + value + "/" + pr.Check; !seen[key] && !seen[value+"/"+pr.Check] {
				seen[key], seen[value+"/"+pr.Check] = true, true
				errs = append(errs, field.Invalid(at, value, pr.Check+": "+pr.Message))
			}
		}
	}
	if driver == "" {
		return errs
	}
	csi := map[string]*storagev1.CSINode{}
	for i := range cluster.csiNodes {
		csi[cluster.csiNodes[i].Name] = &cluster.csiNodes[i]
	}
	for i := range cluster.nodes {
		n := &cluster.nodes[i]
		if n.Labels[volumes.LabelPool] != p.Name {
			continue
		}
		if pr := storagecheck.CSINodeProblem(n.Name, csi[n.Name], driver); pr != nil {
			errs = append(errs, field.Invalid(fp.Child("restoreStorageClassName"), p.Cache.RestoreStorageClassName, pr.Check+": "+pr.Message))
		}
	}
	return errs
}

// checkSnapshots checks the snapshots a new node of the pool would restore now (the newest good
// one per architecture and engine version): within the budget, and on the pool's smallest NVMe.
func checkSnapshots(p *config.Pool, fp *field.Path, cluster *clusterStorage) field.ErrorList {
	var errs field.ErrorList
	b := p.Cache.Restore.Budget()
	// The smallest node the pool admits has just over nvme.minSizeGB of NVMe.
	smallest := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "(the smallest of pool " + p.Name + ")", Labels: map[string]string{
		storagecheck.LabelInstanceLocalNVMe: strconv.FormatInt(p.NVMe.MinSizeGB, 10),
	}}}
	for _, arch := range p.Architectures {
		key := volumes.SnapshotKey{Pool: p.Name, Arch: arch, EngineVersion: p.Engine.Version}
		snap := volumes.ChooseSnapshot(cluster.snapshots, key)
		if snap == nil {
			continue
		}
		// What the restore controller estimates (controller/enginecache snapshotBytes), so the check
		// refuses what a restore would.
		bytes, source, ok := volumes.SnapshotBytes(snap)
		if !ok {
			bytes, source = p.Cache.Size.Value(), "the pool's cache.size"
		}
		what := fmt.Sprintf("snapshot %s (%s, %s)", snap.Name, arch, source)
		if pr := b.OverBudget(what, bytes); pr != nil {
			errs = append(errs, field.Invalid(fp.Child("restore"), snap.Name, pr.Check+": "+pr.Message))
		}
		if pr := storagecheck.NodeDiskProblem(smallest, what, bytes); pr != nil {
			errs = append(errs, field.Invalid(field.NewPath("pools").Index(poolIndex(fp)).Child("nvme", "minSizeGB"), p.NVMe.MinSizeGB, pr.Check+": "+pr.Message))
		}
	}
	return errs
}

// poolIndex reads the pool index back from a pools[i].cache path.
func poolIndex(fp *field.Path) int {
	var i int
	_, _ = fmt.Sscanf(fp.String(), "pools[%d]", &i)
	return i
}

// runCheck is `render --check`: the storage checks, against the cluster when restCfg is set.
func runCheck(ctx context.Context, cfg *config.Config, restCfg *rest.Config, namespace string, stdout, stderr io.Writer) error {
	var cluster *clusterStorage
	if restCfg != nil {
		var err error
		if cluster, err = readClusterStorage(ctx, restCfg, namespace); err != nil {
			return fmt.Errorf("reading the cluster's storage, %w", err)
		}
	}
	problems, notes := checkPoolStorage(cfg, cluster)
	for _, n := range notes {
		fmt.Fprintln(stdout, n)
	}
	if cluster == nil {
		fmt.Fprintln(stdout, "no cluster given (--kubeconfig or $KUBECONFIG): storage classes, CSI drivers and snapshots not checked")
	}
	if len(problems) == 0 {
		fmt.Fprintln(stdout, "storage: ok")
		return nil
	}
	for _, line := range (&config.Error{Errs: problems}).Lines() {
		fmt.Fprintln(stderr, line)
	}
	return errStorageCheck
}

// errStorageCheck exits 1 after the problems were printed.
var errStorageCheck = errors.New("storage check failed")
