package main

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/storagecheck"
)

// checkConfig has one cache-enabled pool, "ci", whose save class is "save" and restore class
// "restore", snapshots of class "snap"; and a pool without the cache.
const checkConfig = `apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  role: KarpenterNodeRole-ci
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: ci}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: ci}}]
pools:
  - name: ci
    nvme: {minSizeGB: 100}
    engine: {version: v0.21.8}
    cache: {enabled: true, storageClassName: save, restoreStorageClassName: restore, snapshotClassName: snap}
  - name: plain
    nvme: {minSizeGB: 100}
    engine: {version: v0.21.8}
`

const ebs = "ebs.csi.aws.com"

func goodStorage() *clusterStorage {
	return &clusterStorage{
		classes: storagecheck.Classes{
			StorageClasses: []storagev1.StorageClass{
				{ObjectMeta: metav1.ObjectMeta{Name: "save"}, Provisioner: ebs, Parameters: map[string]string{"type": "gp3", "csi.storage.k8s.io/fstype": "xfs"}},
				{ObjectMeta: metav1.ObjectMeta{Name: "restore"}, Provisioner: ebs, Parameters: map[string]string{"type": "gp3", "volumeInitializationRate": "300"}},
			},
			SnapshotClasses: []snapshotv1.VolumeSnapshotClass{{ObjectMeta: metav1.ObjectMeta{Name: "snap"}, Driver: ebs}},
		},
		nodes:    []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{volumes.LabelPool: "ci"}}}},
		csiNodes: []storagev1.CSINode{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: ebs, NodeID: "i-1"}}}}},
	}
}

// snapshotOf is a good snapshot of pool ci (amd64) whose save counted bytes.
func snapshotOf(name string, bytes int64) snapshotv1.VolumeSnapshot {
	return snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "warmpool", Labels: map[string]string{
			volumes.LabelPool: "ci", volumes.LabelArch: "amd64", volumes.LabelEngineVersion: "v0.21.8",
		}, Annotations: map[string]string{volumes.AnnotationBytes: strconv.FormatInt(bytes, 10)}},
		Status: &snapshotv1.VolumeSnapshotStatus{ReadyToUse: ptr.To(true), CreationTime: ptr.To(metav1.Now()), RestoreSize: ptr.To(resource.MustParse("200Gi"))},
	}
}

func TestCheckPoolStorage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*clusterStorage)
		want   []string // prefixes of the problem lines, in order
	}{
		{"good", func(*clusterStorage) {}, nil},
		{"volumeInitializationRate on the save class", func(c *clusterStorage) {
			c.classes.StorageClasses[0].Parameters["volumeInitializationRate"] = "200"
		}, []string{`pools[0].cache.storageClassName: save-class-initialization-rate: StorageClass save`}},
		{"in-tree restore class", func(c *clusterStorage) {
			c.classes.StorageClasses[1].Provisioner = "kubernetes.io/aws-ebs"
		}, []string{`pools[0].cache.restoreStorageClassName: storage-class-not-csi: StorageClass restore`}},
		{"snapshot class of another driver", func(c *clusterStorage) {
			c.classes.SnapshotClasses[0].Driver = "efs.csi.aws.com"
		}, []string{`pools[0].cache.snapshotClassName: snapshot-class-driver-mismatch: VolumeSnapshotClass snap`}},
		{"a pool node without the driver", func(c *clusterStorage) {
			c.nodes = append(c.nodes, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2", Labels: map[string]string{volumes.LabelPool: "ci"}}},
				corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "other", Labels: map[string]string{volumes.LabelPool: "plain"}}})
		}, []string{`pools[0].cache.restoreStorageClassName: csi-driver-not-registered: node n2 has no CSINode`}},
		{"a snapshot within the budget", func(c *clusterStorage) { c.snapshots = []snapshotv1.VolumeSnapshot{snapshotOf("small", 10<<30)} }, nil},
		// 200 GB is over the default budget (36.6Gi) and over 90% of the pool's smallest NVMe (100 GB).
		{"a snapshot over the budget and the NVMe", func(c *clusterStorage) { c.snapshots = []snapshotv1.VolumeSnapshot{snapshotOf("big", 200e9)} }, []string{
			`pools[0].cache.restore: restore-over-budget: snapshot big (amd64, bytes of cache) holds 186.3Gi`,
			`pools[0].nvme.minSizeGB: snapshot-larger-than-node-disk: snapshot big (amd64, bytes of cache) holds 186.3Gi`,
		}},
		{"one in-tree class for saves and restores, said once", func(c *clusterStorage) {
			c.classes.StorageClasses[0].Provisioner = "kubernetes.io/aws-ebs"
			c.classes.StorageClasses[1].Provisioner = "kubernetes.io/aws-ebs"
			c.classes.StorageClasses[1].Name = "save"
		}, []string{`pools[0].cache.storageClassName: storage-class-not-csi: StorageClass save`}},
		{"no snapshot API", func(c *clusterStorage) { c.noSnapshotAPI = true }, []string{`pools[0].cache.enabled: the cluster serves no snapshot.storage.k8s.io/v1 VolumeSnapshot API`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := checkConfig
			if strings.Contains(tc.name, "said once") {
				doc = strings.Replace(doc, "restoreStorageClassName: restore, ", "", 1)
			}
			cfg, err := config.Parse([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			cs := goodStorage()
			tc.mutate(cs)
			problems, notes := checkPoolStorage(cfg, cs)
			lines := (&config.Error{Errs: problems}).Lines()
			if len(lines) != len(tc.want) {
				t.Fatalf("problems:\n%s\nwant %d", strings.Join(lines, "\n"), len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("problem %q, want it to start %q", lines[i], w)
				}
			}
			if len(notes) != 1 || !strings.Contains(notes[0], "pool ci: a restore may read up to 36.6Gi within 7m0s") {
				t.Errorf("notes %q", notes)
			}
		})
	}
}

// Without a cluster, --check prints each cache pool's budget and says what it did not check.
func TestRenderCheckWithoutACluster(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	file := writeTemp(t, "config.yaml", strings.Replace(checkConfig, "snapshotClassName: snap}", "snapshotClassName: snap, restore: {maxWait: 12m}}", 1))
	stdout, stderr, err := run(t, nil, "render", "-f", file, "--check")
	if err != nil || stderr != "" {
		t.Fatalf("err %v, stderr %q", err, stderr)
	}
	for _, want := range []string{
		"pool ci: a restore may read up to 73.2Gi within 12m0s (125Mi/s after 2m0s of provisioning slack)",
		"exceeds Karpenter's 10m0s for a replacement node to initialize",
		"no cluster given",
		"storage: ok",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	if _, _, err := run(t, nil, "render", "-f", file, "--check", "--discover"); err == nil {
		t.Error("--check with --discover accepted")
	}
}

// Against a real API server, --check reads the classes, the pool's nodes and CSINodes and the
// snapshots, and reports each problem on stderr with exit 1.
func TestRenderCheckAgainstACluster(t *testing.T) {
	api := cluster.StartTestAPIServer(t)
	kubeconfig := writeKubeconfig(t, api)
	file := writeTemp(t, "config.yaml", checkConfig)
	ctx := t.Context()
	create := func(objs ...client.Object) {
		t.Helper()
		for _, o := range objs {
			if err := api.Client.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	create(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "warmpool"}},
		&storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "save"}, Provisioner: ebs, Parameters: map[string]string{"volumeInitializationRate": "300"}},
		&storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "restore"}, Provisioner: ebs},
		&snapshotv1.VolumeSnapshotClass{ObjectMeta: metav1.ObjectMeta{Name: "snap"}, Driver: ebs, DeletionPolicy: snapshotv1.VolumeSnapshotContentDelete},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "ci-1", Labels: map[string]string{volumes.LabelPool: "ci"}}},
	)
	_, stderr, err := run(t, nil, "render", "-f", file, "--check", "--kubeconfig", kubeconfig)
	if !errors.Is(err, errStorageCheck) {
		t.Fatalf("err %v, want the storage check to fail; stderr:\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "pools[0].cache.storageClassName: save-class-initialization-rate") ||
		!strings.HasPrefix(lines[1], "pools[0].cache.restoreStorageClassName: csi-driver-not-registered: node ci-1 has no CSINode") {
		t.Fatalf("stderr:\n%s", stderr)
	}

	// Fixed: the class without the parameter, the driver registered on the node.
	sc := &storagev1.StorageClass{}
	if err := api.Client.Get(ctx, client.ObjectKey{Name: "save"}, sc); err != nil {
		t.Fatal(err)
	}
	if err := api.Client.Delete(ctx, sc); err != nil {
		t.Fatal(err)
	}
	create(
		&storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "save-2"}, Provisioner: ebs, Parameters: map[string]string{"csi.storage.k8s.io/fstype": "xfs"}},
		&storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: "ci-1"}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: ebs, NodeID: "i-1"}}}},
	)
	file = writeTemp(t, "fixed.yaml", strings.Replace(checkConfig, "storageClassName: save,", "storageClassName: save-2,", 1))
	stdout, stderr, err := run(t, nil, "render", "-f", file, "--check", "--kubeconfig", kubeconfig)
	if err != nil || !strings.Contains(stdout, "storage: ok") {
		t.Fatalf("err %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
}

// writeKubeconfig writes a kubeconfig for the API server's admin credentials.
func writeKubeconfig(t *testing.T, api *cluster.APIServer) string {
	t.Helper()
	c := api.Config
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: c.Host, CertificateAuthorityData: c.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: c.CertData, ClientKeyData: c.KeyData, Token: c.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "admin"}
	kc.CurrentContext = "test"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	return path
}
