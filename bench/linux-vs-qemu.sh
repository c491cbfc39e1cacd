#!/usr/bin/env bash
# Boot+workload wall time of hindsight, recording, against QEMU's TCG not
# recording, on the same Debian kernel, the same initramfs and the same
# workload, in the same run, and their ratio (the issue's goal: <= 0.7).
#
#   bench/linux-vs-qemu.sh [WORKLOAD]
#
# ENGINE=interp|jit (default jit) picks hindsight's engine; RECORD=0 runs
# without recording.
#
# WORKLOAD is the shell command /init runs before powering off (default:
# the issue's cpuinfo + sha256 of 32 MiB of zeros). The QEMU side is
# ../shared/peers/qemu-linux.sh beside the checkout, or $QEMU_PEER.
# Prints, last:
#   hindsight wall_s=<s> insns=<n> mips=<m>
#   qemu-tcg wall_s=<s> exit=<status>
#   ratio hindsight/qemu=<r>
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
peer=${QEMU_PEER:-$repo/../shared/peers/qemu-linux.sh}
workload=${1:-'cat /proc/cpuinfo; dd if=/dev/zero bs=1M count=32 | sha256sum; echo DONE'}
if [ ! -f "$peer" ]; then
  echo "bench: QEMU peer script not found at $peer (set QEMU_PEER)" >&2
  exit 2
fi

cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
hs=$repo/target/release/hindsight
images=$("$hs" fetch --run "$workload")
kernel=$(sed -n 's/^kernel: *\([^ ]*\).*/\1/p' <<<"$images")
initrd=$(sed -n 's/^initramfs: *\([^ ]*\).*/\1/p' <<<"$images")
cmdline=console=ttyS0

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

engine=${ENGINE:-jit}
record=()
if [ "${RECORD:-1}" != 0 ]; then
  record=(--record "$log/run.hsr")
fi

start=$(date +%s%N)
set +e
"$hs" boot --engine "$engine" "${record[@]}" --kernel "$kernel" --initrd "$initrd" \
  --append "$cmdline" --stats </dev/null >"$log/hindsight.out" 2>"$log/hindsight.err"
status=$?
set -e
end=$(date +%s%N)
if [ $status -ne 0 ] || ! grep -q DONE "$log/hindsight.out"; then
  echo "bench: hindsight failed (status $status)" >&2
  tail -20 "$log/hindsight.out" "$log/hindsight.err" >&2
  exit 1
fi
hs_ms=$(( (end - start) / 1000000 ))
stats=$(grep '^hindsight: stats' "$log/hindsight.err" || true)
insns=$(sed -n 's/.*insns=\([0-9]*\).*/\1/p' <<<"$stats")
mips=$(sed -n 's/.*mips=\([0-9.]*\).*/\1/p' <<<"$stats")

qemu=$(bash "$peer" "$kernel" "$initrd" "$cmdline" 2>"$log/qemu.log" | tail -1)
qemu_s=$(sed -n 's/.*wall_s=\([0-9.]*\).*/\1/p' <<<"$qemu")

printf 'hindsight engine=%s recording=%s wall_s=%d.%03d insns=%s mips=%s\n' "$engine" \
  "$([ ${#record[@]} -gt 0 ] && echo on || echo off)" $((hs_ms / 1000)) $((hs_ms % 1000)) "$insns" "$mips"
echo "$qemu"
awk -v h="$hs_ms" -v q="$qemu_s" 'BEGIN { printf "ratio hindsight/qemu=%.2f\n", (h / 1000) / q }'
