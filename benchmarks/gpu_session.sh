#!/usr/bin/env bash
# Everything GPU-side in one device call (README "Speed", benchmarks/RESULTS.md): our training step
# and the official PyTorch step on the same GPU in the same run, the PULSE search of both, the ratio
# tables (benchmarks/compare.py), and a time-limited real run on pokemon-256 with its last sample
# grid, reconstructions and loss curve, in phases that stop within the device call's 600 s (BUDGET).
#
# Prepare here (CPU), from the repo root:  bash benchmarks/gpu_prepare.sh
# Run: device run, carry [".whl", ".gpudata", ".official"], command "bash benchmarks/gpu_session.sh",
# timeout_s 600. Everything lands in $OUT: results.md (the tables for RESULTS.md) and the raw logs.
#
# Knobs (environment), for a CPU check of the script itself (tests/benchmarks_test.py): SIZES
# ("256 1024"), PRECISIONS ("float32 bfloat16 float16"), STEPS (30 timed steps), TRAIN_SECONDS (60),
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

# The phases run in order of what the figures need most, each only while the call's time allows it
# (BUDGET seconds, default 570 of the device's 600; a phase that would not finish in time is skipped
# with a line saying so), and results.md is rewritten after each: compiling one training step takes
# 50-90 s on an H200 (XLA:GPU autotuning), so the 2026-11-30 session measured only 256 px in 600 s.
BUDGET=${BUDGET:-570}
phase() {  # phase NAME SECONDS_IT_NEEDS COMMAND...: runs COMMAND if that many seconds are left
  local name=$1 need=$2; shift 2
  if (( SECONDS + need > BUDGET )); then
    echo "skipped: $name (needs about ${need} s, $((BUDGET - SECONDS)) s left)" | tee -a "$OUT/skipped.txt"
    return 0
  fi
  echo "== $name (at ${SECONDS} s)"
  "$@"
}
tables() {
  python3 benchmarks/compare.py --ours "$OUT/train_speed.jsonl" --ours-pulse "$OUT/upscale_speed.jsonl" \
    --official "$OUT/official.jsonl" --deviceless "$OUT/deviceless.jsonl" >"$OUT/results.md" 2>"$OUT/compare.err"
}
touch "$OUT/train_speed.jsonl" "$OUT/upscale_speed.jsonl" "$OUT/official.jsonl" "$OUT/deviceless.jsonl"

# 1. The official step and its PULSE search, on the same GPU (needs torch; .official from gpu_prepare.sh).
official() {
  local sizes
  sizes=$(echo "$SIZES" | tr ' ' '\n' | grep -xE '256|512|1024' | paste -sd, -)
  if [ -n "$sizes" ] && python3 -c "import torch" 2>/dev/null && [ -f .official/bench_official.py ]; then
    # PULSE=1: after the training step, its PULSE search at 256 and 1024 (float32 and bfloat16 autocast).
    PULSE=1 PULSE_STEPS=100 python3 .official/bench_official.py --sizes "$sizes" --variants official \
      --iters "$STEPS" --warmup 5 2>&1 | grep '^{' | tee "$OUT/official.jsonl"
  else
    echo "official benchmark skipped (needs torch, .official/ and a size of 256, 512 or 1024)"
  fi
}
phase "official step and PULSE" 120 official
tables

# 2. Ours: remat=auto with bfloat16 (what training does by default on this card, README "Memory") per
# size, each in its own process so that its peak memory is its own; then our PULSE search.
speed=(python3 benchmarks/train_speed.py --batch 8 --steps "$STEPS" --warmup 5 --json "$OUT/train_speed.jsonl")
for s in $SIZES; do
  phase "ours ${s}px bfloat16 remat=auto" 150 "${speed[@]}" --im-size "$s" --precision bfloat16 --remat auto \
    $SPEED_ARGS 2>&1 | grep -v cuda_timer | tee -a "$OUT/train_speed.txt"
  tables
done
phase "ours PULSE bfloat16" 90 python3 benchmarks/upscale_speed.py --im-size $SIZES --restarts 8 \
  --precision bfloat16 --json "$OUT/upscale_speed.jsonl" $PULSE_ARGS 2>&1 | grep -v cuda_timer | tee "$OUT/upscale_speed.txt"
tables

# 3. A real run: time-limited training on pokemon-256 with its samples and loss curve.
real_run() {
  rm -rf runs/gpu_session
  python3 train.py --data "$DATA" --workdir runs/gpu_session --config.train.num_steps=100000 \
    --config.train.time_limit_s="${TRAIN_SECONDS:-60}" --config.log.sample_every=1000 --config.log.checkpoint_every=5000 \
    --config.log.log_every=50 --config.data.cache_dir=/tmp/fastgan_cache $TRAIN_ARGS 2>&1 | grep -v cuda_timer | tail -40 \
    | tee "$OUT/train.txt"
  local last
  last=$(ls runs/gpu_session/samples | grep '^samples_' | tail -1)
  cp "runs/gpu_session/samples/$last" "$OUT/pokemon_$last"
  cp "runs/gpu_session/samples/${last/samples_/reconstructions_}" "$OUT/"
  python3 benchmarks/plot_metrics.py runs/gpu_session/metrics.jsonl "$OUT/pokemon_losses.png"
  cp runs/gpu_session/metrics.jsonl "$OUT/pokemon_metrics.jsonl"
}
phase "real run on pokemon-256" $(( ${TRAIN_SECONDS:-60} + 120 )) real_run

# 4. With the time left: the other precisions (one process per size: peaks after the first are the
# process's so far, so train_speed.py reports only XLA's analysis), the same first setting compiled
# without the GPU for this card's target (h200; compare.py --deviceless prints it beside the real
# peak), and the other precisions of the PULSE search.
first=${SIZES%% *}
for s in $SIZES; do
  others=$(echo "$PRECISIONS" | tr ' ' '\n' | grep -vx bfloat16 | paste -sd' ' -)
  [ -n "$others" ] && phase "ours ${s}px $others" 200 "${speed[@]}" --im-size "$s" --precision $others \
    $SPEED_ARGS 2>&1 | grep -v cuda_timer | tee -a "$OUT/train_speed.txt"
  tables
done
remat=$(python3 -c "import json; print([json.loads(l) for l in open('$OUT/train_speed.jsonl')][0]['remat'])" 2>/dev/null)
JAX_PLATFORMS=cpu phase "deviceless ${first}px for h200" 120 python3 benchmarks/train_speed.py --gpu-only \
  --target h200 --im-size "$first" --batch 8 --precision bfloat16 --remat "${remat:-none}" \
  --json "$OUT/deviceless.jsonl" $SPEED_ARGS 2>&1 | tee "$OUT/deviceless.txt"
tables
cat "$OUT/results.md" "$OUT/skipped.txt" 2>/dev/null
