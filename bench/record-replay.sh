#!/usr/bin/env bash
# Record/replay figures on the Debian Linux guest (boot + workload):
#   plain run wall time, recording wall time (overhead), replay --verify wall
#   time (speed against recording), trace bytes per guest second, and with
#   REPLAYS=N (default 20) that N consecutive replays all verify.
#
#   bench/record-replay.sh [WORKLOAD]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
workload=${1:-'cat /proc/cpuinfo; dd if=/dev/zero bs=1M count=32 | sha256sum; echo DONE'}
replays=${REPLAYS:-20}
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
hs=$repo/target/release/hindsight
images=$("$hs" fetch --run "$workload")
kernel=$(sed -n 's/^kernel: *\([^ ]*\).*/\1/p' <<<"$images")
initrd=$(sed -n 's/^initramfs: *\([^ ]*\).*/\1/p' <<<"$images")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

ms() { echo $(( $(date +%s%N) / 1000000 )); }
run() { # label, args...
  local label=$1; shift
  local t0 t1
  t0=$(ms)
  "$hs" "$@" </dev/null >"$dir/$label.out" 2>"$dir/$label.err" || {
    echo "bench: '$label' failed" >&2; tail -5 "$dir/$label.err" >&2; exit 1; }
  t1=$(ms)
  echo $((t1 - t0))
}

plain=$(run plain boot --kernel "$kernel" --initrd "$initrd" --stats)
rec=$(run record boot --kernel "$kernel" --initrd "$initrd" --record "$dir/t.hsr")
rep=$(run replay replay "$dir/t.hsr" --verify)
cmp -s "$dir/record.out" "$dir/replay.out" || { echo "bench: replayed console differs" >&2; exit 1; }
insns=$(sed -n 's/.*recorded \([0-9]*\) instructions.*/\1/p' "$dir/record.err")
bytes=$(stat -c %s "$dir/t.hsr")
ok=0
for _ in $(seq "$replays"); do
  "$hs" replay "$dir/t.hsr" --verify </dev/null >/dev/null 2>&1 && ok=$((ok + 1))
done
awk -v p="$plain" -v r="$rec" -v q="$rep" -v n="$insns" -v b="$bytes" -v ok="$ok" -v total="$replays" 'BEGIN {
  printf "plain wall_s=%.3f\n", p / 1000
  printf "record wall_s=%.3f overhead=%+.1f%%\n", r / 1000, (r - p) * 100 / p
  printf "replay wall_s=%.3f speed_vs_record=%.2f\n", q / 1000, r / q
  printf "trace bytes=%d guest_s=%.3f bytes_per_guest_s=%.0f\n", b, n / 1e9, b / (n / 1e9)
  printf "replays verified=%d/%d\n", ok, total
}'
