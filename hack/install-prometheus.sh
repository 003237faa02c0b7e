#!/usr/bin/env bash
# Puts Debian's Prometheus server into ./bin/prometheus for the e2e tier, which scrapes warmpool
# with it and runs every dashboard query against it. Debian's package is used because the Go
# module proxy and Debian are the only registries this project's machines reach; the package is
# unpacked (not installed) so nothing is started and no root-owned service is left behind.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/bin"
out="$bin/prometheus"
if [[ -x "$out" ]] && "$out" --version >/dev/null 2>&1; then
	exit 0
fi
mkdir -p "$bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus >/dev/null 2>&1; then
	# A fresh machine may have no package lists yet.
	apt-get update -qq >/dev/null
	apt-get download prometheus >/dev/null
fi
dpkg -x prometheus_*.deb unpacked
install -m 0755 unpacked/usr/bin/prometheus "$out"
echo "installed $("$out" --version 2>&1 | head -1) into $out" >&2
