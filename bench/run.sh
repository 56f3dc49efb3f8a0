#!/usr/bin/env bash
# Runs the benchmarks and writes the results, with the machine they ran on,
# to bench/results/latest.txt (and prints them). Usage: bench/run.sh [regexp]
set -euo pipefail
cd "$(dirname "$0")/.."
pattern=${1:-.}
out=bench/results/latest.txt
mkdir -p bench/results
{
	echo "# sandboxd benchmarks — $(date -u +%Y-%m-%dT%H:%MZ), commit $(git describe --always --dirty 2>/dev/null)"
	echo "# machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB RAM, kernel $(uname -r), $(. /etc/os-release; echo "$PRETTY_NAME")"
	echo "# runtimes: $(crun --version 2>/dev/null | head -1); $(runc --version 2>/dev/null | head -1); podman: $(podman --version 2>/dev/null || echo 'not installed')"
	echo
	SANDBOXD_BIN_DIR="$PWD/bin" go test -run '^$' -bench "$pattern" -benchtime 1x -timeout 60m ./bench/ 2>&1
} | tee "$out.tmp"
mv "$out.tmp" "$out"
