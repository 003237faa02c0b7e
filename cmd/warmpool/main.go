// Command warmpool is the controller manager and its tools: `warmpool controller` runs in the
// cluster, `warmpool render` prints what a config generates.
package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is stamped by `make image-binary` (-ldflags -X main.version=...); other builds report
// their module version.
var version = ""

// buildVersion is the release this binary was built as, for `warmpool --version`.
func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "dev"
}

func main() {
	if err := rootCommand().Execute(); err != nil {
		// cobra has printed usage errors; a command's own error is printed here.
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "warmpool",
		Short: "Karpenter NodePools for NVMe CI runners, scaled with CI queue depth, with the Dagger cache kept across nodes",
		Long: `warmpool generates Karpenter NodePools and EC2NodeClasses for NVMe CI runner nodes from one
ConfigMap, scales them with CI queue depth, and keeps the Dagger Engine cache across nodes.`,
		Version:       buildVersion(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(controllerCommand(), renderCommand(), simulateCommand(), cacheCommand(), engineCommand())
	// The read-only tools for operators (status.go, snapshots.go).
	root.AddCommand(statusCommand(), snapshotsCommand())
	return root
}
