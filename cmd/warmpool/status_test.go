package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/cmd/warmpool/status"
	"warmpool.io/warmpool/deploy/helm"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/volumes"
)

// runCLI runs the warmpool command line with args, returning its output and error as main would
// print them.
func runCLI(args ...string) (string, error) {
	cmd := rootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// kubeconfigFor writes a kubeconfig for cfg's server and credentials, acting as user when set.
func kubeconfigFor(t *testing.T, cfg *rest.Config, user string) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	if user != "" {
		kc.AuthInfos["admin"].Impersonate = user
		kc.AuthInfos["admin"].ImpersonateGroups = []string{"system:authenticated"}
	}
	kc.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "admin"}
	kc.CurrentContext = "local"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// Without a reachable cluster, status says so in one line and fails.
func TestStatusWithoutACluster(t *testing.T) {
	path := kubeconfigFor(t, &rest.Config{Host: "https://127.0.0.1:1"}, "")
	out, err := runCLI("status", "--kubeconfig", path, "--request-timeout", "5s")
	if err == nil || !strings.Contains(err.Error(), "cannot reach the Kubernetes API server at https://127.0.0.1:1") {
		t.Fatalf("err %v, output %q", err, out)
	}
	_, err = runCLI("snapshots", "--kubeconfig", path, "--request-timeout", "5s")
	if err == nil || !strings.Contains(err.Error(), "cannot reach the Kubernetes API server") {
		t.Fatalf("snapshots: %v", err)
	}
}

// The chart's viewer and snapshot-operator roles, bound through their values, let a person list
// snapshots and quarantine, release and delete one by hand; the only good snapshot of a key is
// neither quarantined (without --force) nor deleted. A viewer alone may not quarantine. status
// against a namespace without warmpool fails with a clear message.
func TestSnapshotsCommandsWithTheChartRoles(t *testing.T) {
	api := cluster.StartTestAPIServer(t)
	ctx := t.Context()
	kube := api.Client

	subjects := func(user string) map[string]any {
		return map[string]any{"subjects": []any{map[string]any{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}}}
	}
	_, objs, err := helm.Render("warmpool", "warmpool", map[string]any{"rbac": map[string]any{"viewer": subjects("ops"), "snapshotOperator": subjects("ops")}})
	if err != nil {
		t.Fatal(err)
	}
	bindings := 0
	for _, o := range objs {
		if name := o.GetName(); o.GetKind() == "ClusterRole" && (name == "warmpool-viewer" || name == "warmpool-snapshot-operator") ||
			o.GetKind() == "ClusterRoleBinding" && (name == "warmpool-viewer" || name == "warmpool-snapshot-operator") {
			if o.GetKind() == "ClusterRoleBinding" {
				bindings++
			}
			if err := kube.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	if bindings != 2 {
		t.Fatalf("the chart bound %d of the two people roles to their subjects", bindings)
	}
	// dev is bound to nothing.
	viewer := kubeconfigFor(t, api.Config, "dev")
	waitAllowed(t, api.Config, "ops", "patch", "volumesnapshots")
	ops := kubeconfigFor(t, api.Config, "ops")

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "warmpool"}}
	if err := kube.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, age time.Duration) {
		t.Helper()
		target := volumes.Target{Namespace: "warmpool", Pool: "ci", Node: "node-" + name, Arch: "amd64", EngineVersion: "v0.21.8"}
		s := volumes.Snapshot(target, name, "sim", "", volumes.JobResult{Result: volumes.ResultSaved, Bytes: 1 << 30})
		if err := kube.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		s.Status = &snapshotv1.VolumeSnapshotStatus{ReadyToUse: ptr.To(true), CreationTime: &metav1.Time{Time: time.Now().Add(-age)}}
		if err := kube.Status().Update(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	mk("old", time.Hour)
	mk("new", time.Minute)

	out, err := runCLI("snapshots", "--kubeconfig", ops)
	if err != nil || !strings.Contains(out, "new") || strings.Index(out, "new ") > strings.Index(out, "old ") {
		t.Fatalf("list (newest first): %v\n%s", err, out)
	}
	if _, err := runCLI("snapshots", "quarantine", "old", "--kubeconfig", ops, "--reason", "builds fail"); err != nil {
		t.Fatalf("quarantining one of two good snapshots: %v", err)
	}
	quarantined := func(name string) bool {
		s := &snapshotv1.VolumeSnapshot{}
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "warmpool", Name: name}, s); err != nil {
			t.Fatal(err)
		}
		return volumes.Quarantined(s)
	}
	if !quarantined("old") {
		t.Fatal("old is not quarantined with the controller's mark")
	}
	// "new" is now the only good one of its key.
	if _, err := runCLI("snapshots", "quarantine", "new", "--kubeconfig", ops); err == nil || !strings.Contains(err.Error(), "only good snapshot") || quarantined("new") {
		t.Fatalf("quarantining the only good snapshot: %v", err)
	}
	if _, err := runCLI("snapshots", "delete", "new", "--kubeconfig", ops); err == nil || !strings.Contains(err.Error(), "refusing to delete new") {
		t.Fatalf("deleting the only good snapshot: %v", err)
	}
	if _, err := runCLI("snapshots", "quarantine", "new", "--force", "--kubeconfig", ops); err != nil || !quarantined("new") {
		t.Fatalf("forced quarantine: %v", err)
	}
	if out, err := runCLI("snapshots", "release", "old", "--kubeconfig", ops); err != nil || quarantined("old") || !strings.Contains(out, "released") {
		t.Fatalf("release: %v\n%s", err, out)
	}
	// "new" is quarantined, so not good: it may go.
	if _, err := runCLI("snapshots", "delete", "new", "--kubeconfig", ops); err != nil {
		t.Fatalf("deleting a quarantined snapshot: %v", err)
	}
	if err := kube.Get(ctx, client.ObjectKey{Namespace: "warmpool", Name: "new"}, &snapshotv1.VolumeSnapshot{}); err == nil {
		t.Error("new still exists")
	}

	// dev has no role: the Forbidden is named, with no stack trace.
	if _, err := runCLI("snapshots", "quarantine", "old", "--force", "--kubeconfig", viewer); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("quarantine without rights: %v", err)
	}
	// Nor may dev read what status reads: every read is named, and the exit is non-zero.
	out, err = runCLI("status", "--kubeconfig", viewer)
	if err == nil || !strings.Contains(err.Error(), "the report is partial") {
		t.Errorf("status without rights: %v\n%s", err, out)
	}
	for _, kind := range []string{"configmaps in namespace warmpool: forbidden", "nodepools: forbidden", "volumesnapshots in namespace warmpool: forbidden"} {
		if !strings.Contains(out, kind) {
			t.Errorf("status without rights does not name %q:\n%s", kind, out)
		}
	}
	// The namespace has no warmpool config and the cluster no warmpool NodePool.
	if out, err := runCLI("status", "--kubeconfig", ops); err == nil || !strings.Contains(err.Error(), "warmpool is not installed here") {
		t.Errorf("status without warmpool: %v\n%s", err, out)
	}
}

// waitAllowed waits until RBAC (read from an informer) allows user verb on resource.
func waitAllowed(t *testing.T, cfg *rest.Config, user, verb, resource string) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Group: snapshotv1.GroupName, Resource: resource, Verb: verb, Namespace: "warmpool"}}}
		got, err := cs.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Allowed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("RBAC never allowed %s %s to %s", verb, resource, user)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A report with something unread fails, naming it; a complete one does not.
func TestPartialReportFails(t *testing.T) {
	if err := partial(nil); err != nil {
		t.Errorf("a complete report failed: %v", err)
	}
	err := partial([]status.Unknown{{What: "VolumeSnapshot", Namespace: "warmpool", Reason: "forbidden"}, {What: "metrics", Reason: "refused"}})
	if err == nil || !strings.Contains(err.Error(), "could not read volumesnapshot, metrics") {
		t.Errorf("partial: %v", err)
	}
}
