#!/usr/bin/env bash
# ci-under-load.sh runs .ci/run on fresh clones of HEAD, RUNS times in a row (3), each while LOAD
# busy loops (2: one per core here) keep the CPUs saturated for the whole run, and prints each
# run's exit status and time. A test that passes only on an idle machine fails here first.
#
#   hack/ci-under-load.sh            # 3 runs, 2 busy loops, clones under /tmp/ci-load.*
#   RUNS=1 LOAD=4 hack/ci-under-load.sh
#
# Every busy loop is stopped by its PID when the script exits, whatever the result.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
load=${LOAD:-2}
repo=$PWD
commit=$(git rev-parse HEAD)

pids=()
stop_load() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	pids=()
}
trap stop_load EXIT

failed=0
for i in $(seq 1 "$runs"); do
	dir=$(mktemp -d /tmp/ci-load.XXXXXX)
	git clone -q "$repo" "$dir/repo" && git -C "$dir/repo" checkout -q "$commit"
	for _ in $(seq 1 "$load"); do
		(while :; do :; done) &
		pids+=($!)
	done
	start=$(date +%s)
	CI=true bash "$dir/repo/.ci/run" >"$dir/ci.log" 2>&1
	rc=$?
	stop_load
	echo "run $i/$runs at ${commit:0:7} under $load busy loops: exit $rc in $(($(date +%s) - start)) s (log $dir/ci.log)"
	if [ "$rc" -ne 0 ]; then
		failed=1
		grep -E '^(--- FAIL|FAIL|ok )' "$dir/ci.log" | tail -20
	else
		rm -rf "$dir/repo" # keep the log only: a clone with its bin/ is GBs
	fi
done
exit "$failed"
