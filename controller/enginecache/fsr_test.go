package enginecache_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/controller/operator/operatortest"
	"warmpool.io/warmpool/nodepools/discovery"
	"warmpool.io/warmpool/nodepools/discovery/ec2fake"
	"warmpool.io/warmpool/volumes"
)

// bindSnapshot plays the snapshot controller: a VolumeSnapshotContent with the EBS snapshot id
// as its handle, bound to the snapshot.
func (e *env) bindSnapshot(name, handle string) {
	e.T.Helper()
	content := &snapshotv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: "content-" + e.Namespace + "-" + name, Labels: map[string]string{testLabel: "true"}},
		Spec: snapshotv1.VolumeSnapshotContentSpec{
			VolumeSnapshotRef: corev1.ObjectReference{Namespace: e.Namespace, Name: name},
			DeletionPolicy:    snapshotv1.VolumeSnapshotContentDelete,
			Driver:            "ebs.csi.aws.com",
			Source:            snapshotv1.VolumeSnapshotContentSource{SnapshotHandle: ptr.To(handle)},
		},
	}
	if err := kube.Create(e.T.Context(), content); err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { _ = kube.Delete(context.Background(), content) })
	content.Status = &snapshotv1.VolumeSnapshotContentStatus{SnapshotHandle: ptr.To(handle), ReadyToUse: ptr.To(true)}
	if err := kube.Status().Update(e.T.Context(), content); err != nil {
		e.T.Fatal(err)
	}
	s := &snapshotv1.VolumeSnapshot{}
	get(e.T, name, e.Namespace, s)
	s.Status.BoundVolumeSnapshotContentName = ptr.To(content.Name)
	if err := kube.Status().Update(e.T.Context(), s); err != nil {
		e.T.Fatal(err)
	}
}

func TestFastSnapshotRestoreFollowsNewestSnapshot(t *testing.T) {
	srv, err := ec2fake.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	newEC2 := func(ctx context.Context, region, endpoint string) (enginecache.FastRestorer, error) {
		return discovery.NewEC2Client(ctx, region, endpoint,
			awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")))
	}
	pool := unique("fsr")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "warmpool-fsr-"}}
	if err := kube.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	e := &env{Env: &operatortest.Env{T: t, Namespace: ns.Name}, clk: clocktesting.NewFakeClock(time.Now())}
	now := e.clk.Now()
	e.newSnapshot("old", pool, "amd64", engineVersion, now.Add(-2*time.Hour), true)
	e.bindSnapshot("old", "snap-0123456789abcdef0")
	e.newSnapshot("new", pool, "amd64", engineVersion, now.Add(-time.Hour), true)
	e.bindSnapshot("new", "snap-00000000000000aa1")
	// The old snapshot had fast restore from an earlier pass.
	old := &snapshotv1.VolumeSnapshot{}
	get(t, "old", ns.Name, old)
	old.Annotations = map[string]string{volumes.AnnotationFastRestore: "us-west-2a"}
	if err := kube.Update(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	ec2c, err := newEC2(t.Context(), "us-west-2", srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ec2c.EnableFastSnapshotRestores(t.Context(), &ec2.EnableFastSnapshotRestoresInput{AvailabilityZones: []string{"us-west-2a"}, SourceSnapshotIds: []string{"snap-0123456789abcdef0"}}); err != nil {
		t.Fatal(err)
	}

	cfg := strings.Replace(configHeader, "pools:\n", fmt.Sprintf("discovery: {region: us-west-2, endpoint: %q}\npools:\n", srv.URL), 1) +
		strings.Replace(poolYAML(pool), "maxAge: 168h}", "maxAge: 168h}, fastSnapshotRestore: {availabilityZones: [us-west-2a]}", 1)
	cc := startGC(t, ns.Name, e.clk, cfg, func(o *enginecache.Options) { o.EC2 = newEC2 })
	cc.EnqueueAll()
	want := map[string][]string{"us-west-2a": {"snap-00000000000000aa1"}}
	eventually(t, "fast restore moved to the newest snapshot", func() error {
		if got := srv.FastSnapshotRestores(); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("enabled %v, want %v", got, want)
		}
		return nil
	})
	eventually(t, "annotations follow", func() error {
		list := &snapshotv1.VolumeSnapshotList{}
		if err := kube.List(t.Context(), list, client.InNamespace(ns.Name)); err != nil {
			return err
		}
		got := map[string]string{}
		for _, s := range list.Items {
			got[s.Name] = s.Annotations[volumes.AnnotationFastRestore]
		}
		if got["new"] != "us-west-2a" || got["old"] != "" {
			return fmt.Errorf("annotations %v", got)
		}
		return nil
	})
	// The test's own enable, then the controller's enable of the new one and disable of the old.
	// (A pass that reads a snapshot before its annotation lands repeats an idempotent call.)
	calls := map[string]int{}
	for _, r := range srv.Requests() {
		calls[r.Action]++
	}
	if calls["EnableFastSnapshotRestores"] < 2 || calls["DisableFastSnapshotRestores"] < 1 {
		t.Fatalf("EC2 calls %v", calls)
	}
}
