#!/usr/bin/env bash
# footprint-peers-paused.sh runs BenchmarkControllerFootprint with Karpenter and the controller
# manager paused (SIGSTOP) through its cold start, so the cold full reconcile measures the
# controller and the API server alone, as on EKS, where those two do not share the controller's
# cores. They are continued (SIGCONT, by PID) as soon as the benchmark logs the cold start's CPU
# line, or after 120 s, and in any case when this script exits.
#
#   hack/footprint-peers-paused.sh            # log in /tmp/footprint-peers-paused.log
#
# Run it alone: it pauses every karpenter-kwok and kube-controller-manager process on the machine.
set -uo pipefail
cd "$(dirname "$0")/.."
log=${LOG:-/tmp/footprint-peers-paused.log}
: >"$log"

KUBEBUILDER_ASSETS=$PWD/bin go test -count=1 -v -run '^$' -bench ControllerFootprint -benchtime 1x -timeout 60m ./e2e/ >"$log" 2>&1 &
bench=$!

paused=()
resume() {
	if [ ${#paused[@]} -gt 0 ]; then kill -CONT "${paused[@]}" 2>/dev/null; fi
	paused=()
}
trap 'resume; kill "$bench" 2>/dev/null' EXIT

# The controller's process (comm "warmpool") starts the cold start.
until pgrep -x warmpool >/dev/null; do
	kill -0 "$bench" 2>/dev/null || { echo "the benchmark ended before the controller started (log $log)"; exit 1; }
	sleep 0.1
done
mapfile -t paused < <(pgrep -f 'bin/karpenter-kwok|bin/kube-controller-manager')
kill -STOP "${paused[@]}"
echo "paused ${paused[*]} at $(date +%T)"
for _ in $(seq 1 1200); do
	grep -q "cold full reconcile: machine CPU" "$log" && break
	sleep 0.1
done
resume
echo "continued at $(date +%T)"

wait "$bench"
rc=$?
grep -E 'cold full reconcile' "$log"
exit "$rc"
