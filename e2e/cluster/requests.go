package cluster

import (
	"bytes"
	"context"
	"fmt"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Requests is the API server's count of requests served (apiserver_request_total, from its
// /metrics) whose labels include every pair of match, e.g. {"verb": "PATCH", "resource":
// "pods"}: what tests read to show that a controller did or did not write.
func Requests(ctx context.Context, cfg *rest.Config, match map[string]string) (float64, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return 0, fmt.Errorf("making a client for the API server's metrics, %w", err)
	}
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading the API server's metrics, %w", err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return 0, fmt.Errorf("parsing the API server's metrics, %w", err)
	}
	family, ok := families["apiserver_request_total"]
	if !ok {
		return 0, fmt.Errorf("the API server's metrics hold no apiserver_request_total")
	}
	total := 0.0
	for _, m := range family.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		matches := true
		for k, v := range match {
			matches = matches && labels[k] == v
		}
		if matches {
			total += m.GetCounter().GetValue()
		}
	}
	return total, nil
}
