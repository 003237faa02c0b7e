package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/nodepools"
)

func controllerCommand() *cobra.Command {
	var (
		opts       operator.Options
		kubeconfig string
		nodeClass  string
		zapOpts    = zap.Options{}
	)
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run the controller manager",
		Long: `controller watches the warmpool ConfigMap and keeps the cluster's NodePools and node classes
in line with it. A config that fails validation is rejected with an Event on the ConfigMap and
the gauge warmpool_config_valid at 0; the last good config stays in force.`,
		Example: `  warmpool controller --namespace warmpool --config-map warmpool
  KUBECONFIG=~/.kube/config warmpool controller --node-class kwok --leader-elect=false`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
			gogc := tuneProcessGC()
			kind, err := nodepools.ParseNodeClassKind(nodeClass)
			if err != nil {
				return err
			}
			opts.NodeClass = kind
			restConfig, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			mgr, err := operator.New(restConfig, opts)
			if err != nil {
				return err
			}
			operator.RegisterBuildInfo(buildVersion())
			ctrl.Log.Info("starting warmpool", "version", buildVersion(), "namespace", opts.Namespace, "configMap", opts.ConfigMap, "nodeClass", kind, "GOGC", gogc)
			return mgr.Start(ctrl.SetupSignalHandler())
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then in-cluster)")
	f.StringVar(&opts.Namespace, "namespace", envOr("POD_NAMESPACE", "warmpool"), "namespace of the ConfigMap and the leader Lease")
	f.StringVar(&opts.ConfigMap, "config-map", "warmpool", "name of the ConfigMap whose config.yaml holds the config")
	f.StringVar(&nodeClass, "node-class", string(nodepools.EC2NodeClass), "node class kind the NodePools reference: ec2 or kwok (local clusters)")
	f.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8080", `Prometheus metrics address ("0" disables)`)
	f.StringVar(&opts.PprofAddr, "pprof-addr", "", `net/http/pprof address for profiling, e.g. ":6060" (a port alone binds 127.0.0.1; "" disables)`)
	f.StringVar(&opts.ProbeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	f.StringVar(&opts.WebhookAddr, "webhook-bind-address", ":8082", `GitHub workflow_job webhook address, served on the leader at the config's webhook.path ("0" disables)`)
	f.Float32Var(&opts.KubeAPIQPS, "kube-api-qps", operator.DefaultKubeAPIQPS, "client-side limit of requests per second to the API server (negative: none, the API server's priority and fairness alone paces warmpool)")
	f.IntVar(&opts.KubeAPIBurst, "kube-api-burst", operator.DefaultKubeAPIBurst, "requests allowed at once above --kube-api-qps before the limit applies")
	f.DurationVar(&opts.SourceStaleness, "source-staleness", 5*time.Minute, "how long a failing queue source's last value is trusted before its pool is treated as unknown")
	f.BoolVar(&opts.LeaderElection, "leader-elect", true, "elect one active replica through a Lease")
	f.DurationVar(&opts.LeaseDuration, "leader-elect-lease-duration", 15*time.Second, "how long a Lease is held without renewal before another replica takes over")
	f.DurationVar(&opts.RenewDeadline, "leader-elect-renew-deadline", 10*time.Second, "how long the leader tries to renew before giving up")
	f.DurationVar(&opts.RetryPeriod, "leader-elect-retry-period", 2*time.Second, "how often candidates try to acquire the Lease")
	f.StringVar(&opts.CopierImage, "copier-image", defaultCopierImage(), "image of the cache save/restore Jobs (runs `warmpool cache save|restore`)")
	f.StringVar(&opts.GuardImage, "guard-image", enginecache.DefaultGuardImage, "image of the guard pods that hold a node while its cache is saved")
	// Replaced by each pool's cache.restore budget; still accepted so an upgrade with the old
	// flag starts, and pflag warns whoever passes it.
	var restoreTimeout time.Duration
	f.DurationVar(&restoreTimeout, "cache-restore-timeout", 0, "no effect: a restore is bounded by its pool's cache.restore budget")
	_ = f.MarkDeprecated("cache-restore-timeout", "a restore is bounded by its pool's cache.restore.maxWait and derived from the snapshot's size and cache.restore.throughput; set those in the config")
	f.DurationVar(&opts.VerifyTimeout, "cache-verify-timeout", enginecache.DefaultVerifyTimeout, "how long after a restore warmpool waits for the engine to be Ready and say whether it kept the cache, before reporting the restore unverified")
	f.DurationVar(&opts.SaveMargin, "cache-save-margin", enginecache.DefaultSaveMargin, "time kept free before a node's termination deadline: the save gives up and releases the node this early")
	f.StringVar(&opts.PodName, "pod-name", os.Getenv("POD_NAME"), "this replica's pod; when set, the leader labels it warmpool.io/leader=true so the webhook Service reaches the leader only")
	goFlags := flag.NewFlagSet("zap", flag.ContinueOnError)
	zapOpts.BindFlags(goFlags)
	f.AddGoFlagSet(goFlags)
	return cmd
}

// copierImageRepo is warmpool's own image, which also runs the cache Jobs.
const copierImageRepo = "ghcr.io/warmpool/warmpool"

// defaultCopierImage tags warmpool's image with this binary's release version, or latest for a
// development build, so the Jobs run the same copier as the controller that plans them.
func defaultCopierImage() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		// A release tag like v1.2.3; pseudo-versions and dirty builds carry "-" or "+".
		if strings.HasPrefix(v, "v") && !strings.ContainsAny(v, "-+") {
			return copierImageRepo + ":" + v
		}
	}
	return copierImageRepo + ":latest"
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := ctrl.GetConfig()
		if err != nil {
			return nil, fmt.Errorf("loading kubeconfig, %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s, %w", kubeconfig, err)
	}
	unthrottled(cfg)
	return cfg, nil
}

// unthrottled turns off client-go's client-side rate limit (5 requests/s) when the kubeconfig
// sets none, as ctrl.GetConfig does for the in-cluster path: the API server's priority and
// fairness paces warmpool instead. Left at 5/s, one config change to 100 pools takes 40 s.
func unthrottled(cfg *rest.Config) {
	if cfg.QPS == 0 && cfg.RateLimiter == nil {
		cfg.QPS = -1
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func contextWithTimeout(cmd *cobra.Command, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), d)
}
