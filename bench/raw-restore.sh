#!/usr/bin/env bash
# The floor of BenchmarkGVisorPauseResume's restore: the raw runsc, outside
# sandboxd. A Python process holding 200 MiB (as the benchmark's) runs as a
# container's init on the host's root (read-only) and is checkpointed once
# into DIR/img; then, N times, a container is created ahead (runsc create,
# as sandboxd does when a pause settles) and the checkpoint restored into it
# with the given flags, then `runsc exec true` twice. Prints the ms of each.
#
#   bench/raw-restore.sh N [restore flags...]       e.g. 5 --background --direct
#
# RUNSC (default bin/runsc) is the runsc to use; DIR (default
# /tmp/raw-restore) holds the image, bundle and runsc state, reused across
# runs (remove it to checkpoint again); DEBUG=1 writes runsc's debug logs
# to DIR/logs/ (the sandbox's timeline is in the *.boot.txt of the create).
set -euo pipefail
cd "$(dirname "$0")/.."
n=$1
shift
runsc=$(realpath "${RUNSC:-bin/runsc}")
dir=${DIR:-/tmp/raw-restore}
global=(--root "$dir/root" --platform=systrap --overlay2=none --network=none --host-uds=create)
[[ ${DEBUG:-0} == 1 ]] && global+=(--debug --debug-log="$dir/logs/")
mkdir -p "$dir/root" "$dir/bundle" "$dir/logs"
ms() { echo $(($(date +%s%N) / 1000000)); }
if [[ ! -e $dir/img/pages.img ]]; then
	rm -rf "$dir/img" "$dir/bundle/config.json"
	mkdir -p "$dir/img"
	"$runsc" spec --bundle "$dir/bundle"
	python3 - "$dir/bundle/config.json" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["root"] = {"path": "/", "readonly": True}
spec["process"].update(terminal=False, env=["PATH=/usr/bin:/bin"], args=["/usr/bin/python3", "-c",
    "import time; b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); time.sleep(86400)"])
json.dump(spec, open(sys.argv[1], "w"))
PY
	"$runsc" "${global[@]}" run --detach --bundle "$dir/bundle" raw0 >"$dir/raw0.out" 2>&1
	for _ in $(seq 900); do grep -q ready "$dir/raw0.out" && break; sleep 0.2; done
	grep -q ready "$dir/raw0.out" || { echo "the Python process did not fill its memory" >&2; exit 1; }
	"$runsc" "${global[@]}" checkpoint --image-path "$dir/img" raw0
	"$runsc" "${global[@]}" delete -force raw0 2>/dev/null || true
	sync "$dir/img/pages.img"
	echo "checkpoint: $(du -sh "$dir/img" | cut -f1)"
fi
for i in $(seq "$n"); do
	"$runsc" "${global[@]}" create --bundle "$dir/bundle" "raw$i" >/dev/null
	sleep 1
	t0=$(ms)
	"$runsc" "${global[@]}" restore --detach --image-path "$dir/img" "$@" "raw$i"
	t1=$(ms)
	"$runsc" "${global[@]}" exec "raw$i" /bin/true
	t2=$(ms)
	"$runsc" "${global[@]}" exec "raw$i" /bin/true
	t3=$(ms)
	echo "restore=$((t1 - t0)) first-exec=$((t2 - t1)) total=$((t2 - t0)) second-exec=$((t3 - t2)) ms, load $(cut -d' ' -f1 /proc/loadavg), flags: $*"
	"$runsc" "${global[@]}" delete -force "raw$i"
done
