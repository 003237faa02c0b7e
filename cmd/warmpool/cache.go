package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/resource"

	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/cachejob"
)

// exit is os.Exit; the cache commands end the process themselves because their exit code
// is part of the cache protocol (volumes.Exit*), not just success or failure.
var exit = os.Exit

func cacheCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Save, restore or verify a node's Dagger engine cache (run by warmpool's cache Jobs)",
		Long: `cache save copies a cleanly stopped engine's cache directory onto a persistent volume and
writes a manifest last; cache restore copies such a volume into a staging directory beside the
cache directory, verifies it and renames it into place; cache verify, once the engine pod is
Ready, tells whether the engine kept the restored cache (warm) or discarded it (wiped).

All write their result as JSON to --result-file (the container's termination message, which
the controller reads) in every outcome, and exit with
  0 saved/restored/warm, 1 failed, 2 bad flags, 3 unclean engine (save), 4 no cache on the volume
  (restore), 5 wiped (verify).`,
	}
	cmd.AddCommand(cacheSaveCommand(), cacheRestoreCommand(), cacheVerifyCommand())
	return cmd
}

// cacheFlags are the flags save and restore share.
type cacheFlags struct {
	opts       cachejob.Options
	bwlimit    string
	resultFile string
}

func (f *cacheFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.opts.CacheDir, "cache-dir", "", "the engine's cache directory on the node")
	fs.StringVar(&f.opts.VolumeDir, "volume-dir", "", "the root of the mounted cache volume (PVC)")
	fs.StringVar(&f.opts.Pool, "pool", "", "warmpool pool of the node (for the log)")
	fs.StringVar(&f.opts.Node, "node", "", "node name, recorded in the manifest as the source node")
	fs.StringVar(&f.opts.EngineVersion, "engine-version", "", "Dagger engine version the cache belongs to")
	fs.StringVar(&f.opts.EngineContract, "engine-contract", "", "engine contract row to check the cache against (config engine.contract), for a release newer than warmpool's table; default: the row of --engine-version")
	fs.StringVar(&f.opts.Architecture, "arch", "", "node architecture (kubernetes.io/arch)")
	fs.IntVar(&f.opts.Workers, "workers", 0, "files copied at once, so reads in flight (0: the copier default, 64)")
	fs.StringVar(&f.bwlimit, "bwlimit", "0", "copy bandwidth limit in bytes/s, with units like 200Mi or 1G (0: unlimited)")
	fs.StringVar(&f.resultFile, "result-file", volumes.DefaultResultLog, "where to write the JSON result (the container's termination message path)")
}

// complete parses what pflag cannot.
func (f *cacheFlags) complete() error {
	q, err := resource.ParseQuantity(f.bwlimit)
	if err != nil {
		return &cachejob.UsageError{Err: fmt.Errorf("--bwlimit %q: %w", f.bwlimit, err)}
	}
	f.opts.BytesPerSecond = q.Value()
	return nil
}

func cacheSaveCommand() *cobra.Command {
	var f cacheFlags
	cmd := &cobra.Command{
		Use:   "save",
		Short: "Copy a cleanly stopped engine's cache onto a volume",
		Example: `  warmpool cache save --cache-dir /cache --volume-dir /volume --pool dagger --node ip-10-0-1-2 \
    --engine-version v0.21.8 --arch amd64 --bwlimit 400Mi`,
		Args: cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			runCacheJob(cmd, &f, func(ctx context.Context) (volumes.JobResult, error) {
				return cachejob.Save(ctx, cachejob.SaveOptions{Options: f.opts})
			})
		},
	}
	f.register(cmd.Flags())
	usageExit(cmd, &f)
	return cmd
}

func cacheRestoreCommand() *cobra.Command {
	var (
		f         cacheFlags
		staging   string
		restoreID string
	)
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Restore a saved engine cache from a volume into place, through a staging directory",
		Example: `  warmpool cache restore --volume-dir /volume --cache-dir /host/dagger-dagger --pool dagger --node ip-10-0-1-3 \
    --engine-version v0.21.8 --arch amd64`,
		Args: cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			runCacheJob(cmd, &f, func(ctx context.Context) (volumes.JobResult, error) {
				return cachejob.Restore(ctx, cachejob.RestoreOptions{Options: f.opts, StagingDir: staging, RestoreID: restoreID})
			})
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringVar(&staging, "staging-dir", "", "where the copy is assembled before the rename into --cache-dir; must be on the same filesystem (default: a hidden sibling of --cache-dir)")
	cmd.Flags().StringVar(&restoreID, "restore-id", "", "written into the restored cache ("+cachejob.RestoreMarker+") for cache verify to find once the engine is Ready (empty: no marker, the restore cannot be verified)")
	usageExit(cmd, &f)
	return cmd
}

// runCacheJob runs a save or restore, writes its result and exits with the protocol's code.
// SIGTERM (the Job's deadline) cancels the copy, which then leaves no manifest behind.
func runCacheJob(cmd *cobra.Command, f *cacheFlags, run func(context.Context) (volumes.JobResult, error)) {
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	f.opts.Log = cmd.ErrOrStderr()
	var (
		res volumes.JobResult
		err error
	)
	if err = f.complete(); err != nil {
		res = volumes.JobResult{Result: volumes.ResultFailed, Reason: err.Error()}
	} else {
		res, err = run(ctx)
	}
	code := cachejob.ExitCode(res)
	var usage *cachejob.UsageError
	if errors.As(err, &usage) {
		code = volumes.ExitUsage
	}
	finish(cmd.ErrOrStderr(), f.resultFile, res, err, code)
}

// usageExit makes a flag parse error exit with ExitUsage, with a result written if the
// result file is known, instead of cobra's generic failure.
func usageExit(cmd *cobra.Command, f *cacheFlags) {
	cmd.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		res := volumes.JobResult{Result: volumes.ResultFailed, Reason: err.Error()}
		finish(cmd.ErrOrStderr(), f.resultFile, res, err, volumes.ExitUsage)
		return err
	})
}

func finish(log io.Writer, resultFile string, res volumes.JobResult, err error, code int) {
	if err != nil {
		fmt.Fprintln(log, "error:", err)
	}
	if resultFile != "" {
		if werr := cachejob.WriteResult(resultFile, res); werr != nil {
			fmt.Fprintln(log, "error:", werr)
			if code == volumes.ExitOK {
				code = volumes.ExitFailed
			}
		}
	}
	fmt.Fprintf(log, "result: %s (exit %d)\n", res.Result, code)
	exit(code)
}
