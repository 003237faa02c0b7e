package storagecheck_test

import (
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"warmpool.io/warmpool/volumes/storagecheck"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// gp3Default is the default budget: gp3's 125 MiB/s, a 7 minute cap, 2 minutes of slack.
var gp3Default = storagecheck.Budget{Throughput: 125 * mib, MaxWait: 7 * time.Minute, Slack: 2 * time.Minute}

func TestBudget(t *testing.T) {
	for _, tc := range []struct {
		name     string
		b        storagecheck.Budget
		bytes    int64
		estimate time.Duration
		timeout  time.Duration
		over     bool
	}{
		// 10 GiB at 125 MiB/s: 81.92 s, plus 2 min; timeout with 50% headroom on the transfer.
		{"10 GiB at gp3 default", gp3Default, 10 * gib, 2*time.Minute + 81920*time.Millisecond, 2*time.Minute + 122880*time.Millisecond, false},
		// The largest that fits: 125 MiB/s x 300 s = 37500 MiB; the timeout stops at the cap.
		{"exactly the budget", gp3Default, 37500 * mib, 7 * time.Minute, 7 * time.Minute, false},
		{"one MiB over", gp3Default, 37501 * mib, 7*time.Minute + 8*time.Millisecond, 7 * time.Minute, true},
		// The 200 GB cache: 25.4 min at 125 MiB/s.
		{"200 GB at gp3 default", gp3Default, 200e9, 2*time.Minute + 1525878906250*time.Nanosecond, 7 * time.Minute, true},
		// 200 GB at the best volumeInitializationRate (300 MiB/s): 10.6 min, still over 10.
		{"200 GB at 300 MiB/s, 10 min cap", storagecheck.Budget{Throughput: 300 * mib, MaxWait: 10 * time.Minute, Slack: time.Minute}, 200e9, time.Minute + 635782877604*time.Nanosecond, 10 * time.Minute, true},
		{"empty snapshot", gp3Default, 0, 2 * time.Minute, 2 * time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.b.Estimate(tc.bytes); got != tc.estimate {
				t.Errorf("estimate %s, want %s", got, tc.estimate)
			}
			if got := tc.b.Timeout(tc.bytes); got != tc.timeout {
				t.Errorf("timeout %s, want %s", got, tc.timeout)
			}
			if got := tc.b.OverBudget("snapshot s", tc.bytes) != nil; got != tc.over {
				t.Errorf("over budget %v, want %v", got, tc.over)
			}
		})
	}
	if got := gp3Default.MaxBytes(); got != 37500*mib {
		t.Errorf("max bytes %d, want 37500 MiB", got)
	}
}

// The refusal names the numbers and what to change.
func TestOverBudgetMessage(t *testing.T) {
	p := gp3Default.OverBudget("snapshot s (bytes of cache)", 100*gib)
	if p == nil || p.Check != storagecheck.CheckOverBudget {
		t.Fatalf("problem %+v", p)
	}
	for _, want := range []string{"snapshot s (bytes of cache) holds 100Gi", "125Mi/s", "13m39s", "2m0s", "cap of 7m0s", "at most 36.6Gi", "341.3Mi/s would fit", "cache.restore.maxWait", "cache.restore.sizeGCToBudget", "volumeInitializationRate"} {
		if !strings.Contains(p.Message, want) {
			t.Errorf("message %q lacks %q", p.Message, want)
		}
	}
	if p := (storagecheck.Budget{MaxWait: time.Minute}).OverBudget("s", 1); p == nil || !strings.Contains(p.Message, "throughput must be > 0") {
		t.Errorf("an invalid budget restored: %+v", p)
	}
}

func sc(name, provisioner string, params map[string]string, def bool) storagev1.StorageClass {
	c := storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: provisioner, Parameters: params}
	if def {
		c.Annotations = map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}
	}
	return c
}

func vsc(name, driver string, def bool) snapshotv1.VolumeSnapshotClass {
	c := snapshotv1.VolumeSnapshotClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Driver: driver}
	if def {
		c.Annotations = map[string]string{"snapshot.storage.kubernetes.io/is-default-class": "true"}
	}
	return c
}

func TestCheckVolume(t *testing.T) {
	ebs := "ebs.csi.aws.com"
	cluster := storagecheck.Classes{
		StorageClasses: []storagev1.StorageClass{
			sc("gp2", "kubernetes.io/aws-ebs", nil, true),
			sc("gp3", ebs, map[string]string{"type": "gp3", "csi.storage.k8s.io/fstype": "xfs"}, false),
			sc("gp3-init", ebs, map[string]string{"type": "gp3", "volumeInitializationRate": "300"}, false),
			sc("efs", "efs.csi.aws.com", nil, false),
		},
		SnapshotClasses: []snapshotv1.VolumeSnapshotClass{vsc("ebs", ebs, true), vsc("efs-snap", "efs.csi.aws.com", false)},
	}
	for _, tc := range []struct {
		name            string
		role            storagecheck.Role
		class, snap     string
		classes         *storagecheck.Classes
		driver          string
		checks          []string
		messageFragment string
	}{
		{"gp3 for saves", storagecheck.RoleSave, "gp3", "ebs", nil, ebs, nil, ""},
		{"gp3 with the default snapshot class", storagecheck.RoleSave, "gp3", "", nil, ebs, nil, ""},
		{"initialization rate on the restore class", storagecheck.RoleRestore, "gp3-init", "ebs", nil, ebs, nil, ""},
		{"initialization rate on the save class", storagecheck.RoleSave, "gp3-init", "ebs", nil, ebs, []string{storagecheck.CheckInitRate}, "issue #2691"},
		{"default in-tree gp2", storagecheck.RoleSave, "", "ebs", nil, "", []string{storagecheck.CheckNotCSI}, "kubernetes.io/aws-ebs"},
		{"missing class", storagecheck.RoleRestore, "fast", "ebs", nil, "", []string{storagecheck.CheckStorageClass}, "cache.restoreStorageClassName"},
		{"snapshot class of another driver", storagecheck.RoleSave, "gp3", "efs-snap", nil, ebs, []string{storagecheck.CheckDriverMismatch}, "driver efs.csi.aws.com"},
		{"missing snapshot class", storagecheck.RoleSave, "gp3", "nope", nil, ebs, []string{storagecheck.CheckSnapshotClass}, "nope"},
		{"no default snapshot class for the driver", storagecheck.RoleSave, "efs", "", nil, "efs.csi.aws.com", []string{storagecheck.CheckSnapshotClass}, "marked default"},
		{"no default storage class", storagecheck.RoleSave, "", "ebs", &storagecheck.Classes{SnapshotClasses: cluster.SnapshotClasses}, "", []string{storagecheck.CheckStorageClass}, "no default StorageClass"},
		{"two default snapshot classes", storagecheck.RoleSave, "gp3", "", &storagecheck.Classes{StorageClasses: cluster.StorageClasses, SnapshotClasses: []snapshotv1.VolumeSnapshotClass{vsc("a", ebs, true), vsc("b", ebs, true)}},
			ebs, []string{storagecheck.CheckSnapshotClass}, "2 default"},
		{"save class with both problems", storagecheck.RoleSave, "gp3-init", "efs-snap", nil, ebs, []string{storagecheck.CheckInitRate, storagecheck.CheckDriverMismatch}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			classes := cluster
			if tc.classes != nil {
				classes = *tc.classes
			}
			v, problems := storagecheck.CheckVolume(tc.role, tc.class, tc.snap, classes)
			if v.Driver != tc.driver {
				t.Errorf("driver %q, want %q", v.Driver, tc.driver)
			}
			var checks []string
			for _, p := range problems {
				checks = append(checks, p.Check)
			}
			if strings.Join(checks, ",") != strings.Join(tc.checks, ",") {
				t.Fatalf("checks %v, want %v (%v)", checks, tc.checks, problems)
			}
			if tc.messageFragment != "" && !strings.Contains(problems[0].Message, tc.messageFragment) {
				t.Errorf("message %q lacks %q", problems[0].Message, tc.messageFragment)
			}
		})
	}
}

func TestCSINode(t *testing.T) {
	reg := &storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: "n"}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: "efs.csi.aws.com"}, {Name: "ebs.csi.aws.com"}}}}
	other := &storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: "n"}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: "efs.csi.aws.com"}}}}
	for _, tc := range []struct {
		name string
		n    *storagev1.CSINode
		ok   bool
		msg  string
	}{
		{"registered", reg, true, ""},
		{"no CSINode yet", nil, false, "node n has no CSINode"},
		{"another driver only", other, false, "listing efs.csi.aws.com"},
		{"no drivers", &storagev1.CSINode{}, false, "listing no driver"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := storagecheck.DriverRegistered(tc.n, "ebs.csi.aws.com"); got != tc.ok {
				t.Fatalf("registered %v, want %v", got, tc.ok)
			}
			p := storagecheck.CSINodeProblem("n", tc.n, "ebs.csi.aws.com")
			if (p == nil) != tc.ok || p != nil && (p.Check != storagecheck.CheckCSINode || !strings.Contains(p.Message, tc.msg) || !strings.Contains(p.Message, "tolerateAllTaints")) {
				t.Fatalf("problem %+v", p)
			}
		})
	}
}

func TestNodeDisk(t *testing.T) {
	node := func(alloc string, nvmeGB string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{}}}
		if alloc != "" {
			n.Status.Allocatable = corev1.ResourceList{corev1.ResourceEphemeralStorage: resource.MustParse(alloc)}
		}
		if nvmeGB != "" {
			n.Labels[storagecheck.LabelInstanceLocalNVMe] = nvmeGB
		}
		return n
	}
	for _, tc := range []struct {
		name      string
		n         *corev1.Node
		bytes     int64
		fits      bool
		msg       string
		diskBytes int64
	}{
		{"fits the allocatable", node("200Gi", ""), 100 * gib, true, "", 200 * gib},
		{"over 90% of the allocatable", node("100Gi", ""), 95 * gib, false, "a cache may use 90% (90Gi)", 100 * gib},
		// c6id.xlarge: 237 GB of NVMe, and a 220 GiB array seen by the kubelet.
		{"label smaller than the allocatable", node("500Gi", "237"), 220 * gib, false, "karpenter.k8s.aws/instance-local-nvme=237 GB", 237e9},
		{"label only", node("", "950"), 300 * gib, true, "", 950e9},
		{"unknown disk", node("", ""), 1 << 50, true, "", 0},
		{"unparsable label", node("", "lots"), 1 << 50, true, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk, _, _ := storagecheck.NodeDisk(tc.n)
			if disk != tc.diskBytes {
				t.Errorf("disk %d, want %d", disk, tc.diskBytes)
			}
			p := storagecheck.NodeDiskProblem(tc.n, "snapshot s", tc.bytes)
			if (p == nil) != tc.fits || p != nil && (p.Check != storagecheck.CheckNodeDisk || !strings.Contains(p.Message, tc.msg)) {
				t.Fatalf("problem %+v", p)
			}
		})
	}
}

func TestFit(t *testing.T) {
	// A fresh 10 GiB ext4 volume, as statfs reports it: 4 KiB blocks, 5% reserved, 655360 inodes.
	ext4 := storagecheck.FSStat{BlockSize: 4096, Blocks: 2580302, Free: 2579000, Avail: 2447930, Files: 655360, FilesFree: 655349}
	// The same volume holding a previous copy of 6 GiB: that space is the copy's to reuse.
	used := ext4
	used.Free -= 6 * gib / 4096
	used.Avail -= 6 * gib / 4096
	// xfs reports inodes it could still allocate.
	xfs := storagecheck.FSStat{BlockSize: 4096, Blocks: 2618880, Free: 2614000, Avail: 2614000, Files: 5242880, FilesFree: 5242877}
	for _, tc := range []struct {
		name string
		u    storagecheck.Usage
		fs   storagecheck.FSStat
		fits bool
		msg  string
	}{
		{"fits", storagecheck.Usage{Bytes: 8 * gib, Inodes: 100000}, ext4, true, ""},
		{"fits over a previous copy", storagecheck.Usage{Bytes: 8 * gib, Inodes: 100000}, used, true, ""},
		{"too many bytes", storagecheck.Usage{Bytes: 9500 * mib, Inodes: 1000}, ext4, false, "the save volume holds"},
		{"too many inodes on ext4", storagecheck.Usage{Bytes: gib, Inodes: 700000}, ext4, false, "csi.storage.k8s.io/fstype xfs"},
		{"the same inodes on xfs", storagecheck.Usage{Bytes: gib, Inodes: 700000}, xfs, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := storagecheck.FitProblem(tc.u, tc.fs)
			if (p == nil) != tc.fits || p != nil && (p.Check != storagecheck.CheckCacheFit || !strings.Contains(p.Message, tc.msg)) {
				t.Fatalf("problem %+v", p)
			}
		})
	}
}

// VolumeSize makes a volume the cache fits on, for bytes or ext4's inodes.
func TestVolumeSize(t *testing.T) {
	for _, tc := range []struct {
		name string
		u    storagecheck.Usage
		want string
	}{
		{"bytes", storagecheck.Usage{Bytes: 100 * gib, Inodes: 1000}, "115Gi"},
		// 13M inodes at 16 KiB each is 198 GiB of ext4, whatever the bytes.
		{"inodes", storagecheck.Usage{Bytes: 10 * gib, Inodes: 13e6}, "218Gi"},
		{"tiny", storagecheck.Usage{Bytes: 1, Inodes: 1}, "1Gi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := storagecheck.VolumeSize(tc.u)
			if got.String() != tc.want {
				t.Fatalf("size %s, want %s", got.String(), tc.want)
			}
			// A fresh ext4 volume of that size holds the cache (8% kept by the filesystem).
			blocks := got.Value() / 4096 * 92 / 100
			fs := storagecheck.FSStat{BlockSize: 4096, Blocks: blocks, Free: blocks, Avail: blocks, Files: got.Value() / (16 << 10)}
			if p := storagecheck.FitProblem(tc.u, fs); p != nil {
				t.Fatalf("the cache does not fit the size made for it: %v", p)
			}
		})
	}
}
