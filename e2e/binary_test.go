package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/e2e/scenario"
)

// TestControllerBinary runs the real `warmpool controller` process against the local cluster:
// it elects itself leader through the Lease, serves /healthz, /readyz and Prometheus metrics
// on loopback, applies the config, and exits cleanly on SIGTERM, releasing the Lease.
func TestControllerBinary(t *testing.T) {
	ctx := t.Context()
	if err := scenario.SetConfig(ctx, local.Client, localConfig(t)); err != nil {
		t.Fatal(err)
	}
	p := startController(t, "warmpool")
	probeAddr, metricsAddr := p.ProbeAddr, p.MetricsAddr

	waitFor(t, "/readyz to answer 200", func(ctx context.Context) (bool, error) {
		return httpGet(ctx, "http://"+probeAddr+"/readyz") == nil, nil
	})
	if err := httpGet(ctx, "http://"+probeAddr+"/healthz"); err != nil {
		t.Errorf("/healthz: %v", err)
	}
	lease := &coordinationv1.Lease{}
	waitFor(t, "the leader Lease held by the process", func(ctx context.Context) (bool, error) {
		err := local.Client.Get(ctx, client.ObjectKey{Namespace: scenario.Namespace, Name: operator.LeaderElectionID}, lease)
		return err == nil && lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "", err
	})
	waitFor(t, "metrics with the config accepted", func(ctx context.Context) (bool, error) {
		body, err := httpBody(ctx, "http://"+metricsAddr+"/metrics")
		if err != nil {
			return false, err
		}
		return strings.Contains(body, "\nwarmpool_config_valid 1\n") && strings.Contains(body, "\nwarmpool_pools 1\n") &&
			strings.Contains(body, "\nwarmpool_build_info{"), nil
	})

	if err := p.terminate(t); err != nil {
		t.Errorf("warmpool exited with %v after SIGTERM, want 0", err)
	}
	// Released on a clean stop, so a standby replica takes over without waiting out the lease.
	if err := local.Client.Get(ctx, client.ObjectKeyFromObject(lease), lease); err != nil {
		t.Fatal(err)
	}
	if h := lease.Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("Lease still held by %q after a clean stop", *h)
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpGet(ctx context.Context, url string) error {
	_, err := httpBody(ctx, url)
	return err
}

func httpBody(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s: %s", url, resp.Status, body)
	}
	return string(body), nil
}
