#!/usr/bin/env bash
# Turns `go test -bench` output into an aligned table: benchmark, iterations, then each metric.
set -euo pipefail
awk '
/^pkg: / { pkg = $2; next }
/^Benchmark/ {
	line = sprintf("%-60s %10s", pkg ": " $1, $2)
	for (i = 3; i < NF; i += 2) line = line sprintf("  %14s %-10s", $i, $(i + 1))
	print line
	next
}
/^(ok|FAIL|---)/ { print }
'
