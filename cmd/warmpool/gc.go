package main

import (
	"os"
	"runtime/debug"
	"strconv"
)

// defaultGCPercent is the controller's GOGC when the environment sets none. The controller's
// heap is mostly its informer caches, live for the process's whole life, and Go's default of
// 100 lets the heap grow to twice that before a collection: in the footprint benchmark (1000
// nodes, 5000 pods) 35-40 MiB live kept 100 MiB of anon RSS. At 50 the heap stops at one and
// a half times its live data: 70 MiB there. The cost is more frequent collections while the
// caches fill; the cold start's CPU stayed within its run-to-run spread (2.4-3.2 CPU-s), and an
// idle controller allocates too little for it to matter.
const defaultGCPercent = 50

// tuneGC sets the collector's target to defaultGCPercent unless GOGC is set (the runtime has
// already read it then), and returns the GOGC in force, for the start log.
func tuneGC(lookup func(string) (string, bool), set func(int) int) string {
	if v, ok := lookup("GOGC"); ok {
		return v
	}
	set(defaultGCPercent)
	return strconv.Itoa(defaultGCPercent)
}

// tuneProcessGC is tuneGC for this process.
func tuneProcessGC() string { return tuneGC(os.LookupEnv, debug.SetGCPercent) }
