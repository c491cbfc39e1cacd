#!/usr/bin/env bash
# The JIT against the interpreter on the CPU-bound bench guest, in the same
# run: each engine's MIPS and their ratio (the issue's goal: jit >= 10x).
#
#   bench/engines.sh [INSNS]      (default 300000000 instructions each)
#
# Prints, last:
#   interp mips=<m>
#   jit mips=<m>
#   ratio jit/interp=<r>
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
insns=${1:-300000000}
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
hs=$repo/target/release/hindsight

mips() { # engine
  "$hs" bench --engine "$1" --insns "$insns" | sed -n 's/^\([0-9.]*\) MIPS$/\1/p'
}
interp=$(mips interp)
jit=$(mips jit)
echo "interp mips=$interp"
echo "jit mips=$jit"
awk -v j="$jit" -v i="$interp" 'BEGIN { printf "ratio jit/interp=%.2f\n", j / i }'
