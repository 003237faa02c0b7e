package main

import (
	"errors"

	"github.com/spf13/cobra"

	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/cachejob"
)

// cacheVerifyCommand is `warmpool cache verify`, the verify Job (volumes.VerifyJob). It has
// none of the copy flags: it only reads the engine's dir, mounted read-only.
func cacheVerifyCommand() *cobra.Command {
	var (
		o          cachejob.VerifyOptions
		resultFile string
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Tell whether the engine kept a restored cache (run once the engine pod is Ready)",
		Long: `cache verify looks in --cache-dir for the marker (` + cachejob.RestoreMarker + `) that
cache restore --restore-id wrote. Every Dagger Engine release deletes worker/ whole when it
discards a cache at start, and it decides that before it serves its API; so once the engine pod
is Ready (its probe, dagger core version, succeeds) the marker with the same ID means the engine
started on the restored cache and kept it.

Writes its result as JSON to --result-file and exits with
  0 warm, 5 wiped (the marker is gone, names another restore, or the dir is missing),
  1 failed (the dir could not be read: no verdict), 2 bad flags.`,
		Example: `  warmpool cache verify --cache-dir /cache --restore-id 6c1f0e2a-5b7d-4f3e-9a61-0d2c8b4e7f10`,
		Args:    cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			o.Log = cmd.ErrOrStderr()
			res, err := cachejob.Verify(cmd.Context(), o)
			code := cachejob.VerifyExitCode(res)
			var usage *cachejob.UsageError
			if errors.As(err, &usage) {
				code = volumes.ExitUsage
			}
			finish(cmd.ErrOrStderr(), resultFile, res, err, code)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.CacheDir, "cache-dir", "", "the engine's cache directory on the node (read only)")
	fs.StringVar(&o.RestoreID, "restore-id", "", "the ID the restore was run with (cache restore --restore-id)")
	fs.StringVar(&resultFile, "result-file", volumes.DefaultResultLog, "where to write the JSON result (the container's termination message path)")
	cmd.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		finish(cmd.ErrOrStderr(), resultFile, volumes.JobResult{Result: volumes.ResultFailed, Reason: err.Error()}, err, volumes.ExitUsage)
		return err
	})
	return cmd
}
