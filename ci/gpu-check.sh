#!/usr/bin/env bash
# The GPU check of the pretraining step: ViT-B/16 + 6-layer BERT at the reference's sizes, one
# shard of 72 pairs, on CUDA device 0. It compares the step's losses with the CPU's on the
# same batch and weights (relative tolerance 1e-3) and prints the training throughput.
#
# Usage:
#   ci/gpu-check.sh build    # here: cargo build --release --features cuda, strip, put the
#                            # binary in target/gpu-check/ (carry that folder to the GPU machine)
#   ci/gpu-check.sh          # there: run it (builds first if the binary is missing and cargo
#                            # exists); STEPS=10 BATCH=72 by default
#
# Output: nvidia-smi's GPU line, one JSON line per figure, then `gpu-check: PASS` or `FAIL`;
# also saved to target/gpu-check/result.txt (copy it to golden/bench/ with the date).
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/gpu-check
bin=$out/gpu-check

build() {
    cargo build --release --features cuda -p mgca-reproductions --bin gpu-check
    local target
    target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    mkdir -p "$out"
    cp "$target/release/gpu-check" "$bin"
    strip "$bin"
    ls -l "$bin"
}

if [[ "${1:-}" == "build" ]]; then
    build
    exit 0
fi
if [[ ! -x "$bin" ]]; then
    if command -v cargo >/dev/null; then build; else echo "gpu-check: no $bin and no cargo: run 'ci/gpu-check.sh build' where Rust is installed" >&2; exit 2; fi
fi
mkdir -p "$out"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /' || echo "gpu: nvidia-smi not found"
    echo "cpu: $(nproc) cores"
    "$bin" --batch "${BATCH:-72}" --steps "${STEPS:-10}"
} 2>&1 | tee "$out/result.txt"
exit "${PIPESTATUS[0]}"
