package nodesim_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/e2e/nodesim"
	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/copier"
)

// TestCachePodsRunWithTheirSecurityContextCapabilities: nodesim's kubelet runs the real
// warmpool binary with the capabilities a container's securityContext grants, as containerd
// does. A restore pod as volumes.RestoreJob renders it (SYS_ADMIN added) restores the cache
// with its trusted.overlay.opaque marker; the same pod with the old securityContext (root,
// runtime defaults, no SYS_ADMIN) ends with the copier's refusal, and so does the rendered
// pod on a node annotated to drop SYS_ADMIN. Against a real kube-apiserver.
func TestCachePodsRunWithTheirSecurityContextCapabilities(t *testing.T) {
	ctx := t.Context()
	bin := filepath.Join(t.TempDir(), "warmpool")
	if out, err := exec.Command("go", "build", "-o", bin, "warmpool.io/warmpool/cmd/warmpool").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	api := cluster.StartTestAPIServer(t)
	sim, err := nodesim.Start(ctx, nodesim.Options{Config: api.Config, Root: t.TempDir(), WarmpoolBinary: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sim.Stop(); err != nil {
			t.Errorf("stopping nodesim: %v", err)
		}
	})
	kube := api.Client

	const (
		engineVersion = "v0.21.8"
		arch          = "amd64"
		savedAt       = "/saved-volume" // a hostPath standing in for the restore PVC
	)
	for _, tc := range []struct {
		name     string
		nodeDrop string
		sc       *corev1.SecurityContext // nil: the rendered one
		refused  bool
	}{
		{name: "rendered", refused: false},
		{name: "without-sys-admin", sc: &corev1.SecurityContext{RunAsUser: ptr.To[int64](0)}, refused: true},
		{name: "node-drops-sys-admin", nodeDrop: "SYS_ADMIN", refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "caps-" + tc.name}}
			if tc.nodeDrop != "" {
				node.Annotations = map[string]string{nodesim.AnnotationDropCapabilities: tc.nodeDrop}
			}
			createNode(t, kube, node)
			// A saved copy, made by this (fully privileged) process, with an opaque directory.
			src := t.TempDir()
			opaque := filepath.Join(src, "worker/snapshots/snapshots/1/fs/etc")
			if err := os.MkdirAll(opaque, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Lsetxattr(opaque, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
				t.Fatal(err)
			}
			saved := sim.NodePath(node.Name, savedAt)
			if err := os.MkdirAll(filepath.Dir(saved), 0o755); err != nil {
				t.Fatal(err)
			}
			if _, err := copier.Copy(ctx, src, saved, copier.Options{EngineVersion: engineVersion, Architecture: arch}); err != nil {
				t.Fatal(err)
			}

			target := volumes.Target{Namespace: "default", Pool: "caps", Node: node.Name, Arch: arch, EngineVersion: engineVersion,
				HostPath: "/mnt/k8s-disks/0/dagger", Image: "ghcr.io/warmpool/warmpool:test"}
			tmpl := volumes.RestoreJob(target, 60).Spec.Template
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "restore-" + tc.name, Labels: tmpl.Labels}, Spec: tmpl.Spec}
			for i, v := range pod.Spec.Volumes {
				if v.PersistentVolumeClaim != nil {
					pod.Spec.Volumes[i].VolumeSource = corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: savedAt, Type: ptr.To(corev1.HostPathDirectory)}}
				}
			}
			if tc.sc != nil {
				pod.Spec.Containers[0].SecurityContext = tc.sc
			}
			if err := kube.Create(ctx, pod); err != nil {
				t.Fatal(err)
			}
			var term *corev1.ContainerStateTerminated
			poll(t, "the restore pod to finish", func(ctx context.Context) (bool, error) {
				if err := kube.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
					return false, err
				}
				if len(pod.Status.ContainerStatuses) == 1 {
					term = pod.Status.ContainerStatuses[0].State.Terminated
				}
				return term != nil, nil
			})
			res, err := volumes.ParseJobResult(term.Message)
			if err != nil {
				t.Fatalf("termination message %q (exit %d): %v", term.Message, term.ExitCode, err)
			}
			cache := sim.NodePath(node.Name, target.HostPath)
			if !tc.refused {
				if res.Result != volumes.ResultRestored || term.ExitCode != 0 {
					t.Fatalf("result %+v exit %d, want restored", res, term.ExitCode)
				}
				val := make([]byte, 8)
				n, err := unix.Lgetxattr(filepath.Join(cache, "worker/snapshots/snapshots/1/fs/etc"), "trusted.overlay.opaque", val)
				if err != nil || string(val[:n]) != "y" {
					t.Errorf("restored opaque marker = %q, %v; want y", val[:n], err)
				}
				return
			}
			if res.Result != volumes.ResultFailed || term.ExitCode != volumes.ExitFailed ||
				!strings.HasPrefix(res.Reason, copier.ErrNoTrustedXattrs.Error()) || !strings.Contains(res.Reason, "CAP_SYS_ADMIN") {
				t.Errorf("result %+v exit %d; want %q, exit %d, the copier's refusal naming CAP_SYS_ADMIN",
					res, term.ExitCode, volumes.ResultFailed, volumes.ExitFailed)
			}
			if _, err := os.Lstat(cache); err == nil {
				t.Errorf("the refused restore created %s", cache)
			}
		})
	}
}
