package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/utils/clock"

	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes/engine/drain"
)

func engineCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "engine",
		Short: "Tools the Dagger Engine pod runs (its drain hook, the init container that installs it) and the hold that keeps a node until its cache is saved",
		Long: `Engine images from v0.19.8 on have no wget, curl or nc, so the engine pod's preStop hook cannot
be a shell script that reads the engine's metrics. Instead an init container running warmpool's
image copies this static binary into an emptyDir (engine install), and the engine container's
preStop hook runs it from there (engine drain). The hold DaemonSet of a cache-enabled pool runs
engine hold, which keeps a node being deleted until warmpool saved its cache.`,
	}
	cmd.AddCommand(engineDrainCommand(), engineInstallCommand(), engineHoldCommand())
	return cmd
}

func engineDrainCommand() *cobra.Command {
	var (
		addr    string
		maxWait int64
		o       = drain.Options{Interval: 2 * time.Second, UnreadableGrace: 10 * time.Second}
	)
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "Wait until no client is connected to the engine (its preStop hook)",
		Long: `drain reads the engine's Prometheus metrics (http://ADDR/metrics) every --interval and returns
as soon as dagger_connected_clients, summed over its series, is 0: then the kubelet sends the
engine SIGTERM with no client attached. No engine release bounds its graceful stop while
clients stay, so a client attached at the end of the grace period costs the whole cache.

It exits 0 when the engine is idle, and non-zero, with the reason on stderr (which the kubelet
records in a FailedPreStopHook Event), when clients are still attached after --max-wait seconds,
or when the metrics cannot be read for --unreadable-grace in a row (an engine without metrics
cannot be drained; waiting longer would only delay its stop). SIGTERM follows either way.`,
		Example: `  /opt/warmpool/warmpool engine drain --max-wait 570`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if addr == "" {
				return fmt.Errorf("no metrics address: the engine serves its metrics only with %s set (or pass --metrics-addr), and without them it cannot be drained", nodepools.EngineMetricsEnv)
			}
			o.MaxWait = time.Duration(maxWait) * time.Second
			url, err := metricsURL(addr)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			fmt.Fprintf(cmd.OutOrStdout(), "waiting up to %s for the engine's clients to leave (%s)\n", o.MaxWait, url)
			// No proxy from the environment: the endpoint is the pod's own loopback.
			client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
			read := func(ctx context.Context) (float64, error) { return drain.Read(ctx, client, url) }
			if err := drain.Run(ctx, clock.RealClock{}, o, read, cmd.OutOrStdout()); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "no client attached: the engine may stop")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "metrics-addr", os.Getenv(nodepools.EngineMetricsEnv), "the engine's metrics address, host:port (default $"+nodepools.EngineMetricsEnv+", which the engine serves them on)")
	f.Int64Var(&maxWait, "max-wait", 0, "seconds to wait for the clients before giving up (0: read once)")
	f.DurationVar(&o.Interval, "interval", o.Interval, "time between two reads of the metrics")
	f.DurationVar(&o.UnreadableGrace, "unreadable-grace", o.UnreadableGrace, "give up when the metrics cannot be read for this long in a row")
	return cmd
}

// metricsURL is the /metrics URL of the engine's metrics address. The hook runs in the engine
// container's network namespace, so an address bound to every interface (":9090",
// "0.0.0.0:9090") is reached on loopback.
func metricsURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("metrics address %q, %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/metrics", nil
}

func engineInstallCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "install --to DIR",
		Short: "Copy this binary to DIR/warmpool (the engine pod's init container)",
		Long: `install copies the running executable to DIR/warmpool, mode 0555, through a temporary file
renamed into place, so the engine container never sees a partial binary. warmpool's image has no
shell and no cp: this is how its static binary reaches the emptyDir the engine container runs its
drain hook from.`,
		Example: `  /warmpool engine install --to /opt/warmpool`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding the running executable, %w", err)
			}
			dst, err := installBinary(self, dir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed %s\n", dst)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "to", "", "directory to install into (an emptyDir shared with the engine container)")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// installBinary copies src to dir/warmpool, mode 0555, atomically: a temporary file in dir,
// synced, then renamed over any earlier copy (an init container that runs again after a pod
// restart finds the previous one). dir must exist: it is a mount, and creating it elsewhere
// would hide a broken pod spec.
func installBinary(src, dir string) (dst string, err error) {
	if dir == "" {
		return "", errors.New("no directory to install into (--to)")
	}
	dst = filepath.Join(dir, nodepools.EngineToolsBinary)
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("opening %s, %w", src, err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, "."+nodepools.EngineToolsBinary+"-*")
	if err != nil {
		return "", fmt.Errorf("creating a temporary file in %s, %w", dir, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = io.Copy(tmp, in); err != nil {
		return "", fmt.Errorf("copying %s to %s, %w", src, tmp.Name(), err)
	}
	if err = tmp.Chmod(0o555); err != nil {
		return "", fmt.Errorf("making %s executable, %w", tmp.Name(), err)
	}
	if err = tmp.Sync(); err != nil {
		return "", fmt.Errorf("syncing %s, %w", tmp.Name(), err)
	}
	if err = tmp.Close(); err != nil {
		return "", fmt.Errorf("closing %s, %w", tmp.Name(), err)
	}
	if err = os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("renaming %s to %s, %w", tmp.Name(), dst, err)
	}
	return dst, nil
}
