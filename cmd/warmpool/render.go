package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/nodepools/discovery"
)

// errInvalidConfig exits 1 after the field errors were printed.
var errInvalidConfig = errors.New("invalid config")

// defaultNamespace is the namespace `warmpool controller` runs in when POD_NAMESPACE is unset.
const defaultNamespace = "warmpool"

func renderCommand() *cobra.Command {
	var (
		file, nodeClass, namespace, region, endpoint, image, kubeconfig string
		discover, check                                                 bool
	)
	cmd := &cobra.Command{
		Use:   "render -f config.yaml",
		Short: "Print the NodePools, node classes and engine DaemonSets a config generates, as YAML",
		Long: `render reads a WarmpoolConfig document and prints every object warmpool would apply, as one
multi-document YAML stream, for GitOps or review: per pool its node class, its NodePool, and
(unless the pool names an existing engine DaemonSet) its Dagger Engine ConfigMap and DaemonSet,
which go in warmpool's namespace (--namespace). A bad config prints one line per problem, each
naming its field, on stderr and exits 1.

With --discover it lists, per pool, the EC2 instance types its requirements admit instead
(AWS credentials and region from the usual SDK sources).

With --check it checks each cache-enabled pool's storage instead: the restore budget from the
config, and with a cluster (--kubeconfig, else $KUBECONFIG) the save and restore
StorageClasses (CSI, not in-tree; no volumeInitializationRate on the save class), the
VolumeSnapshotClass (same driver), the CSI driver on the pool's nodes (CSINode) and the
snapshots a new node would restore (within the budget, on the pool's smallest NVMe). One line
per problem on stderr, naming its field; exit 1.`,
		Example: `  warmpool render -f deploy/examples/config.yaml
  warmpool render -f config.yaml --node-class kwok --namespace warmpool-system | kubectl apply -f -
  warmpool render -f config.yaml --discover --region eu-west-1
  warmpool render -f config.yaml --check --kubeconfig ~/.kube/config`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kind, err := nodepools.ParseNodeClassKind(nodeClass)
			if err != nil {
				return err
			}
			cfg, err := readConfig(file, cmd.InOrStdin())
			if err != nil {
				var cfgErr *config.Error
				if errors.As(err, &cfgErr) {
					for _, line := range cfgErr.Lines() {
						fmt.Fprintln(cmd.ErrOrStderr(), line)
					}
					return errInvalidConfig
				}
				return err
			}
			if discover {
				return printDiscovered(cmd, cfg, region, endpoint)
			}
			if check {
				return checkCommand(cmd, cfg, kubeconfig, namespace)
			}
			out, err := nodepools.YAML(nodepools.Render(cfg, nodepools.Options{NodeClass: kind, Namespace: namespace, ToolsImage: image}))
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", `config file to read ("-" for stdin)`)
	cmd.Flags().StringVar(&nodeClass, "node-class", string(nodepools.EC2NodeClass), "node class kind the NodePools reference: ec2 or kwok")
	cmd.Flags().StringVar(&namespace, "namespace", defaultNamespace, "warmpool's namespace, where the engine DaemonSets and their ConfigMaps go")
	cmd.Flags().StringVar(&image, "copier-image", defaultCopierImage(), "warmpool's own image, as given to `warmpool controller`: the engine pods' init container installs their drain hook from it")
	cmd.Flags().BoolVar(&discover, "discover", false, "list the EC2 instance types each pool admits instead of printing objects")
	cmd.Flags().StringVar(&region, "region", "", "AWS region for --discover (default: the config's discovery.region, then the SDK's)")
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "EC2 endpoint URL for --discover (default: the config's discovery.endpoint)")
	cmd.Flags().BoolVar(&check, "check", false, "check each cache-enabled pool's storage (restore budget; with a cluster: classes, CSI drivers, snapshots) instead of printing objects")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "with --check: the cluster to read storage from (default: $KUBECONFIG; neither: the config alone is checked)")
	cmd.MarkFlagsMutuallyExclusive("check", "discover")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

func readConfig(file string, stdin io.Reader) (*config.Config, error) {
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, fmt.Errorf("reading config, %w", err)
	}
	return config.Parse(data)
}

func printDiscovered(cmd *cobra.Command, cfg *config.Config, region, endpoint string) error {
	if region == "" {
		region = cfg.Discovery.Region
	}
	if endpoint == "" {
		endpoint = cfg.Discovery.Endpoint
	}
	ctx, cancel := contextWithTimeout(cmd, 2*time.Minute)
	defer cancel()
	client, err := discovery.NewEC2Client(ctx, region, endpoint)
	if err != nil {
		return err
	}
	types, err := discovery.NewEC2(client).List(ctx)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "POOL\tINSTANCE TYPE\tARCH\tVCPU\tMEMORY GiB\tNVME GB")
	admitted := nodepools.Admitted(cfg, types)
	for i := range cfg.Pools {
		name := cfg.Pools[i].Name
		if len(admitted[name]) == 0 {
			fmt.Fprintf(w, "%s\t(none: no instance type meets this pool's requirements)\t\t\t\t\n", name)
		}
		for _, it := range admitted[name] {
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%.1f\t%d\n", name, it.Name, strings.Join(it.Architectures, ","), it.VCPU, float64(it.MemoryMiB)/1024, it.NVMeGB)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if errs := nodepools.CheckAdmitted(cfg, types); len(errs) > 0 {
		for _, line := range (&config.Error{Errs: errs}).Lines() {
			fmt.Fprintln(cmd.ErrOrStderr(), line)
		}
		return errInvalidConfig
	}
	return nil
}

// checkCommand runs `render --check`, against the cluster of kubeconfig (else $KUBECONFIG)
// when one is named.
func checkCommand(cmd *cobra.Command, cfg *config.Config, kubeconfig, namespace string) error {
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	ctx, cancel := contextWithTimeout(cmd, time.Minute)
	defer cancel()
	var restCfg *rest.Config
	if kubeconfig != "" {
		var err error
		if restCfg, err = restConfig(kubeconfig); err != nil {
			return err
		}
	}
	return runCheck(ctx, cfg, restCfg, namespace, cmd.OutOrStdout(), cmd.ErrOrStderr())
}
