package operator

import (
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

var buildInfoOnce sync.Once

// RegisterBuildInfo exports warmpool_build_info{version,revision,go_version} = 1, so a
// dashboard shows which build each replica runs (during a rollout, two at once).
func RegisterBuildInfo(version string) {
	buildInfoOnce.Do(func() {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warmpool_build_info",
			Help: "Always 1; the labels say which warmpool build is running.",
		}, []string{"version", "revision", "go_version"})
		g.WithLabelValues(version, revision(), runtime.Version()).Set(1)
		crmetrics.Registry.MustRegister(g)
	})
}

// revision is the VCS commit the binary was built from, when the Go toolchain recorded it.
func revision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "unknown", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}
