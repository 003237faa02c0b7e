package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes/hold"
)

// holdAccessBound is how long the hold container's start retries a Node read that fails for a
// reason other than RBAC (the API server not reachable yet) before it gives up and restarts.
const holdAccessBound = time.Minute

func engineHoldCommand() *cobra.Command {
	var (
		kubeconfig string
		node       string
		wait       bool
		maxWait    int64
		o          = hold.Options{Interval: 2 * time.Second}
	)
	cmd := &cobra.Command{
		Use:   "hold",
		Short: "Hold a node being deleted until warmpool saved its engine cache (the hold DaemonSet's container and preStop hook)",
		Long: `Every node of a cache-enabled pool runs a pod of warmpool's hold DaemonSet. Karpenter drains
DaemonSet pods last and keeps the instance while one is still terminating, so the pod's preStop
hook (hold --wait) keeps a node that is being deleted until warmpool marks its save concluded
(the Node annotation ` + hold.AnnotationSaveOutcome + `), even when warmpool's controller was down when the
disruption began. It releases at once when the node is not being deleted (a rollout, a manual
pod delete) or is gone, and gives up after --max-wait seconds.

Without --wait this is the container's process: it checks once that it may read its Node (get
on nodes, the chart's warmpool-hold ServiceAccount), then idles until SIGTERM, which the kubelet
sends when the hook returns. A denied read exits non-zero at once, in both modes: a hold that
cannot see its release would keep every drained node for the whole bound.`,
		Example: `  /warmpool engine hold --node "$NODE_NAME"
  /warmpool engine hold --wait --max-wait 3600`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if node == "" {
				return errors.New("no node: set --node or $" + nodepools.HoldNodeEnv + " (the downward API's spec.nodeName)")
			}
			rc, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			rc.UserAgent = "warmpool-hold"
			cs, err := kubernetes.NewForConfig(rc)
			if err != nil {
				return fmt.Errorf("building the API client, %w", err)
			}
			read := nodeReader(cs, node)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			out := cmd.OutOrStdout()
			if !wait {
				if err := checkAccess(ctx, read); err != nil {
					return err
				}
				fmt.Fprintf(out, "holding node %s: the pod's preStop hook keeps it, once it is deleted, until warmpool concluded its save\n", node)
				<-ctx.Done()
				return nil
			}
			o.MaxWait = time.Duration(maxWait) * time.Second
			fmt.Fprintf(out, "holding node %s for up to %s until warmpool concludes the save of its cache\n", node, o.MaxWait)
			return hold.Run(ctx, clock.RealClock{}, o, read, out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then in-cluster)")
	f.StringVar(&node, "node", os.Getenv(nodepools.HoldNodeEnv), "the node to hold (default $"+nodepools.HoldNodeEnv+")")
	f.BoolVar(&wait, "wait", false, "hold: wait for the release (the preStop hook); without it, check access and idle (the container)")
	f.Int64Var(&maxWait, "max-wait", 0, "with --wait: seconds to hold at most")
	f.DurationVar(&o.Interval, "interval", o.Interval, "with --wait: time between two reads of the node")
	return cmd
}

// nodeReader reads one Node: nil when it is gone, an error wrapping hold.ErrDenied when RBAC
// refuses the read.
func nodeReader(cs kubernetes.Interface, name string) hold.Read {
	return func(ctx context.Context) (*corev1.Node, error) {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		n, err := cs.CoreV1().Nodes().Get(rctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil, nil
		case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
			return nil, fmt.Errorf("%w %s (the pod's ServiceAccount needs get on nodes: the chart's %s ServiceAccount and ClusterRole), %w",
				hold.ErrDenied, name, nodepools.HoldServiceAccount, err)
		case err != nil:
			return nil, fmt.Errorf("reading node %s, %w", name, err)
		}
		return n, nil
	}
}

// checkAccess reads the Node once, retrying what is not a denial for holdAccessBound.
func checkAccess(ctx context.Context, read hold.Read) error {
	deadline := time.Now().Add(holdAccessBound)
	for {
		_, err := read(ctx)
		if err == nil || errors.Is(err, hold.ErrDenied) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil // stopped before the API server answered: nothing to hold
		case <-time.After(2 * time.Second):
		}
	}
}
