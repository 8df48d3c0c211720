#!/usr/bin/env bash
# Everything GPU-side in one device call (README "Speed", benchmarks/RESULTS.md): our training step
# and the official PyTorch step on the same GPU in the same run, the PULSE search of both, the ratio
# tables (benchmarks/compare.py), and a time-limited real run on pokemon-256 with its last sample
# grid, reconstructions and loss curve. About 8 minutes on an H200.
#
# Prepare here (CPU), from the repo root:  bash benchmarks/gpu_prepare.sh
# Run: device run, carry [".whl", ".gpudata", ".official"], command "bash benchmarks/gpu_session.sh",
# timeout_s 600. Everything lands in $OUT: results.md (the tables for RESULTS.md) and the raw logs.
#
# Knobs (environment), for a CPU check of the script itself (tests/benchmarks_test.py): SIZES
# ("256 1024"), PRECISIONS ("float32 bfloat16 float16"), STEPS (30 timed steps), TRAIN_SECONDS (120),
# DATA (.gpudata/pokemon-256), and extra flags: SPEED_ARGS (train_speed.py), PULSE_ARGS
# (upscale_speed.py), TRAIN_ARGS (train.py).
set -uo pipefail
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/out}
SIZES=${SIZES:-256 1024}
STEPS=${STEPS:-30}
DATA=${DATA:-.gpudata/pokemon-256}
PRECISIONS=${PRECISIONS:-float32 bfloat16 float16}
SPEED_ARGS=${SPEED_ARGS:-} PULSE_ARGS=${PULSE_ARGS:-} TRAIN_ARGS=${TRAIN_ARGS:-}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
[ -d .gpudata/weights ] && export FASTGAN_JAX_WEIGHTS=$PWD/.gpudata/weights
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', \
optax.__version__, jax.devices())"; } | tee "$OUT/versions.txt"

# remat=auto with bfloat16 (what training does by default on this card, README "Memory") runs first for
# each size in its own process, so that its peak memory is its own; the others follow in one process
# (their peaks are then the process's so far, and train_speed.py reports only XLA's memory analysis).
speed=(python3 benchmarks/train_speed.py --batch 8 --steps "$STEPS" --warmup 5 --json "$OUT/train_speed.jsonl")
for s in $SIZES; do
  "${speed[@]}" --im-size "$s" --precision bfloat16 --remat auto $SPEED_ARGS 2>&1 | tee -a "$OUT/train_speed.txt"
  "${speed[@]}" --im-size "$s" --precision $PRECISIONS $SPEED_ARGS 2>&1 | tee -a "$OUT/train_speed.txt"
done
# The same first setting at the first size compiled without the GPU for this card's target (h200): the
# deviceless figure beside the real peak and the real compile's analysis (compare.py --deviceless).
first=${SIZES%% *}
remat=$(python3 -c "import json; print([json.loads(l) for l in open('$OUT/train_speed.jsonl')][0]['remat'])" 2>/dev/null)
JAX_PLATFORMS=cpu python3 benchmarks/train_speed.py --gpu-only --target h200 --im-size "$first" --batch 8 \
  --precision bfloat16 --remat "${remat:-none}" --json "$OUT/deviceless.jsonl" $SPEED_ARGS 2>&1 | tee "$OUT/deviceless.txt"
python3 benchmarks/upscale_speed.py --im-size $SIZES --restarts 8 --precision $PRECISIONS \
  --json "$OUT/upscale_speed.jsonl" $PULSE_ARGS 2>&1 | tee "$OUT/upscale_speed.txt"

# The official step and PULSE search, on the same GPU (needs torch; .official from gpu_prepare.sh).
official_sizes=$(echo "$SIZES" | tr ' ' '\n' | grep -xE '256|512|1024' | paste -sd, -)
if [ -n "$official_sizes" ] && python3 -c "import torch" 2>/dev/null && [ -f .official/bench_official.py ]; then
  # PULSE=1: after the training step, its PULSE search at 256 and 1024 (float32 and bfloat16 autocast).
  PULSE=1 PULSE_STEPS=100 python3 .official/bench_official.py --sizes "$official_sizes" --variants official,amp \
    --iters "$STEPS" --warmup 5 2>&1 | tee "$OUT/official.jsonl"
else
  echo "official benchmark skipped (needs torch, .official/ and a size of 256, 512 or 1024)" | tee "$OUT/official.jsonl"
fi
python3 benchmarks/compare.py --ours "$OUT/train_speed.jsonl" --ours-pulse "$OUT/upscale_speed.jsonl" \
  --official "$OUT/official.jsonl" --deviceless "$OUT/deviceless.jsonl" | tee "$OUT/results.md"

# A real run: time-limited training on pokemon-256 with its samples and loss curve.
rm -rf runs/gpu_session
python3 train.py --data "$DATA" --workdir runs/gpu_session --config.num_steps=100000 \
  --config.time_limit_s="${TRAIN_SECONDS:-120}" --config.sample_every=2000 --config.checkpoint_every=5000 \
  --config.log_every=50 --config.cache_dir=/tmp/fastgan_cache $TRAIN_ARGS 2>&1 | tail -40 | tee "$OUT/train.txt"
last=$(ls runs/gpu_session/samples | grep '^samples_' | tail -1)
cp "runs/gpu_session/samples/$last" "$OUT/pokemon_$last"
cp "runs/gpu_session/samples/${last/samples_/reconstructions_}" "$OUT/"
python3 benchmarks/plot_metrics.py runs/gpu_session/metrics.jsonl "$OUT/pokemon_losses.png"
cp runs/gpu_session/metrics.jsonl "$OUT/pokemon_metrics.jsonl"
