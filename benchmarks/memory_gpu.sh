#!/usr/bin/env bash
# docs/memory.md, per card class: XLA:GPU's memory analysis of the training step compiled for each card
# in benchmarks/gpu_targets/ with that card's memory, no GPU needed (JAX runs on the CPU):
#
#   pip install -e '.[gpu-aot]'
#   bash benchmarks/memory_gpu.sh [FILE]          # default benchmarks/memory_gpu.jsonl; about 2 CPU-hours
#   python benchmarks/compare.py --memory-gpu benchmarks/memory_gpu.jsonl
#
# The training step at batch 8, default widths, LPIPS-VGG, at 256 and 1024 px, every remat, and every
# precision the card runs fast: float32 on Pascal (its float16 arithmetic runs at 1/64 rate); float16 from
# Turing on (tensor cores); bfloat16 from Ampere on. A step already in FILE is skipped, so an interrupted
# run continues. Then the PULSE search at 8 restarts (16 px LR images), which compiles in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/memory_gpu.jsonl}
pulse() {
    python benchmarks/upscale_speed.py --restarts 8 --json "$out" "$@"
}
run() {
    python benchmarks/train_speed.py --gpu-only --skip-existing --batch 8 --remat none blocks full \
        --json "$out" "$@"
}
for size in 256 1024; do  # the consumer cards first
    run --im-size "$size" --target gtx1050ti --precision float32
    run --im-size "$size" --target rtx2070super --precision float32 float16
    run --im-size "$size" --target rtx3060 --precision float32 bfloat16 float16
    run --im-size "$size" --target rtx4090 --precision float32 bfloat16 float16
done
for size in 256 1024; do
    run --im-size "$size" --target a100_40gb --precision float32 bfloat16 float16
done
for size in 256 1024; do
    pulse --im-size "$size" --target gtx1050ti --precision float32
    pulse --im-size "$size" --target rtx2070super --precision float32 float16
    pulse --im-size "$size" --target rtx3060 --precision float32 bfloat16 float16
    pulse --im-size "$size" --target rtx4090 --precision float32 bfloat16 float16
    pulse --im-size "$size" --target a100_40gb --precision float32 bfloat16 float16
done
