package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/cmd/warmpool/status"
	"warmpool.io/warmpool/controller/operator"
)

// clusterFlags are how the read-only tools (status, snapshots) reach a cluster: kubectl's
// kubeconfig loading rules (--kubeconfig, then $KUBECONFIG, then ~/.kube/config), a context,
// and warmpool's namespace (not the context's: warmpool lives in one namespace of its own).
type clusterFlags struct {
	kubeconfig, context, namespace, configMap string
	timeout                                   time.Duration
}

func (f *clusterFlags) bind(cmd *cobra.Command) {
	fl := cmd.PersistentFlags()
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	fl.StringVar(&f.context, "context", "", "kubeconfig context (default: the current context)")
	fl.StringVarP(&f.namespace, "namespace", "n", defaultNamespace, "warmpool's namespace: its ConfigMap, headroom objects and snapshots")
	fl.StringVar(&f.configMap, "config-map", "warmpool", "name of warmpool's config ConfigMap")
	fl.DurationVar(&f.timeout, "request-timeout", 30*time.Second, "bound on the whole command's API requests")
}

// client builds a client for the kubeconfig, and says which server it talks to.
func (f *clusterFlags) client() (client.Client, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = f.kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: f.context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, "", errors.New("no kubeconfig: set --kubeconfig or $KUBECONFIG, or create ~/.kube/config")
		}
		return nil, "", fmt.Errorf("loading kubeconfig, %w", err)
	}
	cfg.Timeout = f.timeout
	unthrottled(cfg)
	scheme, err := operator.Scheme()
	if err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, cfg.Host, clusterError(cfg, err)
	}
	return c, cfg.Host, nil
}

// clusterError says in words why the API server could not be used; API errors (Forbidden,
// NotFound, ...) pass through unchanged.
func clusterError(cfg *rest.Config, err error) error {
	var status apierrors.APIStatus
	switch {
	case err == nil:
		return nil
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("the API server at %s refused the kubeconfig's credentials (Unauthorized): %w", cfg.Host, err)
	case errors.As(err, &status), meta.IsNoMatchError(err):
		return err
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("the API server at %s did not answer within --request-timeout: %w", cfg.Host, err)
	}
	return fmt.Errorf("cannot reach the Kubernetes API server at %s: %w", cfg.Host, err)
}

func statusCommand() *cobra.Command {
	var (
		cf                 clusterFlags
		output, metricsURL string
		snapshots, events  int
		allEvents          bool
	)
	cmd := &cobra.Command{
		Use:   "status [POOL]",
		Short: "Show what each pool is doing and why: nodes, scaling, queue sources, snapshots, saves, restores, Events",
		Long: `status reads, from the cluster of the current kubeconfig context, what warmpool's pools are
doing: per pool its NodePool and node class; its current nodes and the desired and spare nodes
the scaling controller last recorded (on the pool's headroom object); whether it is busy and the
disruption budgets in force; its queue sources; its newest cache snapshots (age, size, engine
version, quarantined or not); its last save and restore outcomes and cold starts; and its recent
Events. It only reads (the warmpool-viewer ClusterRole of the chart grants exactly that).

A queue source's last reading is kept in the leading controller's memory only: give its metrics
endpoint with --metrics-url (e.g. after kubectl port-forward) to see it, else it shows unknown.

What cannot be read (a Forbidden, a kind the cluster does not serve) is named at the end, the
rest is shown, and the exit status is 1. A cluster without warmpool is an error.`,
		Example: `  warmpool status
  warmpool status ci --context prod -n warmpool
  kubectl -n warmpool port-forward deploy/warmpool 8080 &
  warmpool status --metrics-url http://127.0.0.1:8080/metrics -o yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := status.ParseFormat(output)
			if err != nil {
				return err
			}
			kube, host, err := cf.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), cf.timeout)
			defer cancel()
			opts := status.Options{
				Namespace: cf.namespace, ConfigMap: cf.configMap, Snapshots: snapshots, Events: events, AllEvents: allEvents,
				MetricsSource: metricsURL, Now: time.Now(),
			}
			if len(args) == 1 {
				opts.Pool = args[0]
			}
			var scrapeErr error
			if metricsURL != "" {
				opts.Metrics, scrapeErr = status.FetchMetrics(ctx, metricsURL)
				if scrapeErr != nil {
					opts.MetricsSource = ""
				}
			}
			rep, err := status.Gather(ctx, kube, opts)
			if err != nil {
				return clusterError(hostConfig(host), err)
			}
			if scrapeErr != nil {
				rep.Unknown = append(rep.Unknown, status.Unknown{What: "metrics", Reason: scrapeErr.Error()})
			}
			if format == status.FormatTable {
				err = status.Render(cmd.OutOrStdout(), rep)
			} else {
				err = status.Encode(cmd.OutOrStdout(), format, rep)
			}
			if err != nil {
				return err
			}
			return partial(rep.Unknown)
		},
	}
	cf.bind(cmd)
	f := cmd.Flags()
	f.StringVarP(&output, "output", "o", "", "output format: table (default), json or yaml")
	f.StringVar(&metricsURL, "metrics-url", "", "the leading controller's metrics endpoint, for the queue sources' last readings")
	f.IntVar(&snapshots, "snapshots", status.DefaultSnapshots, "newest snapshots shown per pool")
	f.IntVar(&events, "events", status.DefaultEvents, "newest Events shown per pool")
	f.BoolVar(&allEvents, "all-events", false, "show every Event of the pool's objects, not only warmpool's and Warnings")
	return cmd
}

// partial is the error of a report some of whose reads failed: it was printed, and the exit
// status says it is incomplete.
func partial(unknown []status.Unknown) error {
	if len(unknown) == 0 {
		return nil
	}
	var what []string
	for _, u := range unknown {
		what = append(what, strings.ToLower(u.What))
	}
	return fmt.Errorf("the report is partial: could not read %s (each is named in the output)", strings.Join(what, ", "))
}

// hostConfig names the server in errors said after the client was built.
func hostConfig(host string) *rest.Config { return &rest.Config{Host: host} }
