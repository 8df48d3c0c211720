#!/usr/bin/env bash
# Everything GPU-side in one device call, in the order of what we lack most (docs/speed.md,
# benchmarks/RESULTS.md):
#   1. quality   the default recipe at 256 px (bfloat16, remat=auto, LPIPS-VGG) trained for QUALITY_SECONDS
#                on DATA with a tenth held out, FID and KID every FID_EVERY steps against the training
#                images, the loss curve, sample grids (pokemon figures stay out of git: numbers only);
#                without the Inception's weights (.gpufid, a second call) the FID and KID of its
#                checkpoints come from phase 1b (fid) instead
#   2. restore   the held-out restoration at 256 px with that prior (x4, x8; bicubic, PULSE, ILO); its LPIPS
#                needs AlexNet's weights (.gpufid, the second call)
#   3. 1024      our step (remat=auto, bfloat16) beside the official step, and both PULSE searches
#   4. profile   a jax.profiler trace of a few 256 px steps: kernels per step, the top 20 kernels
#   5. speed     our 256 px step beside the official (img/s, MFU), the deviceless XLA:GPU figure beside
#                the real peak, and the step's compile time first and from the compilation cache
# Each phase runs only while the call's time allows it (BUDGET seconds; a phase that would not finish
# is skipped with a line saying so), and a phase finished by an earlier call on the same (warm)
# machine is not run again: its figures are kept in .gpu_results/ (git-ignored), with the compilation
# cache in .jax_cache/, so a second call goes on where the first stopped. results.md is rewritten
# after each phase.
#
# Prepare here (CPU), from the repo root:  bash benchmarks/gpu_prepare.sh
# Run: device run, carry [".whl", ".gpudata", ".official"], command "bash benchmarks/gpu_session.sh",
# timeout_s 600: the quality run takes the call (on 2026-12-04 it had reported no step after 324 s on a fresh
# H200, its output then held back to the end; on 2 CPU cores its start takes 32 s to the step's compile); at
# once (the machine stays warm ~30 s) a second call, carry [".whl", ".gpufid"], command "BUDGET=<device
# seconds left - 60> bash benchmarks/gpu_session.sh": the checkpoints' FID and KID, then the held-out
# restoration and what else fits. What lands in $OUT fits what a device call brings back (at most 8 files of
# at most 16 MiB, two folders deep): results.md (the tables for RESULTS.md), log.txt (every phase's output
# as it runs), raw.tar.gz (all of $RESULTS: each phase's figures and log, the loss curve, the last sample
# grid, the profile's Chrome trace) and profile.xplane.pb (the profile's XSpace, where under 16 MiB). Into git
# (benchmarks/gpu_raw/<date>/) go the figures and logs, never the pokemon sample grid.
#
# Knobs (environment), for a CPU check of the script itself (tests/benchmarks/gpu_session_test.py): BUDGET (570),
# RESULTS (.gpu_results), RUNS (runs: the quality run, the held-out links), DATA (.gpudata/pokemon-256),
# QUALITY_SECONDS (300: the trainer's time limit, counted from its first compile), QUALITY_MIN (300: the call's
# time the quality run needs at least, else skipped; it is stopped where the call's time runs out), FID_EVERY (2500),
# FID_SAMPLES (2000), SECOND_WEIGHTS (.gpufid/weights: where a second call brings inception-fid.npz and
# lpips-alex.npz), RESTORE_N (16), STEPS (30 timed steps), PROFILE_STEPS (5), BIG (1024), and extra
# flags: QUALITY_ARGS (train.py), RESTORE_ARGS (restore_heldout.py), SPEED_ARGS (train_speed.py and
# profile_step.py), PULSE_ARGS (upscale_speed.py). OFFICIAL=0 skips the official PyTorch step.
set -uo pipefail
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/out}
RESULTS=${RESULTS:-.gpu_results}
BUDGET=${BUDGET:-570}
DATA=${DATA:-.gpudata/pokemon-256}
QUALITY_SECONDS=${QUALITY_SECONDS:-300} FID_EVERY=${FID_EVERY:-2500} FID_SAMPLES=${FID_SAMPLES:-2000}
RESTORE_N=${RESTORE_N:-16} STEPS=${STEPS:-30} PROFILE_STEPS=${PROFILE_STEPS:-5} BIG=${BIG:-1024}
QUALITY_ARGS=${QUALITY_ARGS:-} RESTORE_ARGS=${RESTORE_ARGS:-} SPEED_ARGS=${SPEED_ARGS:-} PULSE_ARGS=${PULSE_ARGS:-}
OFFICIAL=${OFFICIAL:-1} RUNS=${RUNS:-runs} SECOND_WEIGHTS=${SECOND_WEIGHTS:-.gpufid/weights} QUALITY_MIN=${QUALITY_MIN:-300}
export FASTGAN_JAX_COMPILE_CACHE=${FASTGAN_JAX_COMPILE_CACHE:-$PWD/.jax_cache}
mkdir -p "$OUT" "$RESULTS/done"
# The wheels that gpu_prepare.sh brings (Python 3.12), where this machine lacks what they hold.
if ls .whl/*.whl >/dev/null 2>&1 && ! python3 -c "import ml_collections, tensorboardX, dm_pix, grain, tqdm" 2>/dev/null
then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
# Uninstalled (the GPU machine gets the bare checkout), fastgan_jax.configs is the top-level configs/ as pip
# installs it (pyproject's package-dir): the checkout's scripts put the checkout first on sys.path.
python3 -c "import fastgan_jax.configs" 2>/dev/null || ln -sfn ../configs fastgan_jax/configs
# What every phase imports, before any device time goes to a phase that would fail on it (2026-12-04: three
# calls ran only the official benchmark, ours failing on imports).
python3 -c "import fastgan_jax.train.trainer, fastgan_jax.sr.pulse, fastgan_jax.sr.ilo, fastgan_jax.metrics.inception, \
fastgan_jax.commands.evaluate, fastgan_jax.metrics.lpips" || { echo "gpu_session: the imports above fail"; exit 1; }
[ -z "${FASTGAN_JAX_WEIGHTS:-}" ] && [ -d .gpudata/weights ] && export FASTGAN_JAX_WEIGHTS=$PWD/.gpudata/weights
# The FID Inception's and LPIPS-AlexNet's weights come with a second call (carry [".whl", ".gpufid"]: with the
# rest they exceed what a call carries); .gpudata stays on the warm machine.
if [ -n "${FASTGAN_JAX_WEIGHTS:-}" ]; then
  for f in "$SECOND_WEIGHTS"/*.npz; do [ -f "$f" ] && ln -sf "$(realpath "$f")" "$FASTGAN_JAX_WEIGHTS/${f##*/}"; done
fi
has_weights() { [ -z "${FASTGAN_JAX_WEIGHTS:-}" ] || [ -f "$FASTGAN_JAX_WEIGHTS/$1.npz" ]; }  # has_weights NAME
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', \
optax.__version__, jax.devices())"; } | tee "$RESULTS/versions.txt"

phase() {  # phase NAME SECONDS_IT_NEEDS COMMAND...: runs COMMAND if not done before and that much time is left
  local name=$1 need=$2; shift 2
  if [ -f "$RESULTS/done/$name" ]; then
    echo "== $name: done in an earlier call"
  elif (( SECONDS + need > BUDGET )); then
    echo "skipped: $name (needs about ${need} s, $((BUDGET - SECONDS)) s left)" \
      | tee -a "$RESULTS/skipped.txt" "$OUT/log.txt"
  else
    echo "== $name (at ${SECONDS} s)" | tee -a "$OUT/log.txt"
    # Its output also lands in $OUT as it comes, each line with the phase's seconds so far: a call that runs out
    # of time still brings back how far it got, and when (the quality run's start: data, networks, compiles).
    "$@" 2>&1 | stamp | tee -a "$OUT/log.txt" "$RESULTS/log_$name.txt" && touch "$RESULTS/done/$name"
    report
  fi
}
stamp() {  # each line of stdin prefixed with the seconds since it started: "[  12 s] line"
  local start=$SECONDS line
  while IFS= read -r line; do printf '[%4d s] %s\n' $((SECONDS - start)) "$line"; done
}
report() {  # results.md from every phase's figures so far; it and the rest packed into $OUT (the header)
  { cat "$RESULTS/versions.txt"; echo
    for f in quality.md restore.md; do [ -f "$RESULTS/$f" ] && cat "$RESULTS/$f" && echo; done
    python3 benchmarks/compare.py --ours "$RESULTS/train_speed.jsonl" --ours-pulse "$RESULTS/upscale_speed.jsonl" \
      --official "$RESULTS/official.jsonl" --deviceless "$RESULTS/deviceless.jsonl" 2>"$RESULTS/compare.err"
    for f in compile.txt profile/profile.md; do [ -f "$RESULTS/$f" ] && echo && cat "$RESULTS/$f"; done
  } >"$RESULTS/results.md"
  cp "$RESULTS/results.md" "$OUT/"
  tar -czf "$OUT/raw.tar.gz" -C "$RESULTS" --exclude='*.xplane.pb' --exclude=done .
  if (( $(stat -c %s "$OUT/raw.tar.gz") >= 16 * 1048576 )); then  # over what a call brings back: the figures
    echo "raw.tar.gz: without the images and the Chrome trace (16 MiB)" | tee -a "$OUT/log.txt"
    tar -czf "$OUT/raw.tar.gz" -C "$RESULTS" --exclude='*.xplane.pb' --exclude='*.png' --exclude='*.json.gz' \
      --exclude=done .
  fi
  local xspace
  xspace=$(find "$RESULTS/profile" -name '*.xplane.pb' -size -16M 2>/dev/null | tail -1)
  [ -n "$xspace" ] && cp "$xspace" "$OUT/profile.xplane.pb"
  return 0
}
touch "$RESULTS"/{train_speed,upscale_speed,official,deviceless}.jsonl

# 1. The quality run: a tenth of DATA held out (restore_heldout.split, for phase 2), the rest trained on.
quality() {
  rm -rf "$RUNS/quality"
  python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import pathlib, restore_heldout as r; \
train, _ = r.split('$DATA'); r.linked(train, pathlib.Path('$RUNS/quality_images'))" || return 1
  local fid_every=0  # without the Inception here, the kept checkpoints are evaluated by the fid phase
  has_weights inception-fid && fid_every=$FID_EVERY
  # Stopped (SIGINT: a checkpoint and samples, as Ctrl-C) where the call's time would not cover the run: its
  # start (data, initialisation, remat=auto, the first compiles) may take minutes on a fresh GPU (XLA:GPU autotunes).
  timeout -s INT -k 60 $(( BUDGET - SECONDS - 60 )) \
  python3 train.py --data "$RUNS/quality_images" --workdir "$RUNS/quality" --config configs/default.py \
    --config.model.precision=bfloat16 --config.train.num_steps=1000000 --config.train.time_limit_s="$QUALITY_SECONDS" \
    --config.log.fid_every="$fid_every" --config.log.fid_samples="$FID_SAMPLES" --config.log.keep_checkpoints=1000 \
    --config.log.sample_every="$FID_EVERY" --config.log.checkpoint_every="$FID_EVERY" --config.log.log_every=100 \
    --config.data.cache_dir=/tmp/fastgan_cache $QUALITY_ARGS 2>&1 | grep --line-buffered -v cuda_timer \
    | tee "$RESULTS/quality.txt"
  [ -f "$RUNS/quality/metrics.jsonl" ] || return 1
  cp "$RUNS/quality/metrics.jsonl" "$RESULTS/quality_metrics.jsonl"
  python3 benchmarks/plot_metrics.py "$RUNS/quality/metrics.jsonl" "$RESULTS/quality_losses.png"
  python3 benchmarks/plot_metrics.py --fid-table "$RUNS/quality/metrics.jsonl" >"$RESULTS/quality.md"
  local last
  last=$(ls "$RUNS/quality/samples" | grep '^samples_' | tail -1)
  cp "$RUNS/quality/samples/$last" "$RESULTS/quality_$last"
}
phase quality "$QUALITY_MIN" quality

# 1b. FID and KID of the quality run's checkpoints, where the Inception was not there while it trained.
fid() {
  [ -f "$RESULTS/quality_metrics.jsonl" ] || { echo "fid: no quality run yet"; return 1; }
  grep -q '"fid"' "$RESULTS/quality_metrics.jsonl" && return 0  # measured while training
  has_weights inception-fid || { echo "fid: needs the Inception's weights: call again at once with carry [\".whl\", \".gpufid\"]"
    return 1; }
  # Every checkpoint in one process: the Inception compiled once.
  python3 -m fastgan_jax.commands.evaluate --workdir "$RUNS/quality" --step all --n "$FID_SAMPLES" 2>&1 \
    | grep --line-buffered '^step ' | tee -a "$RESULTS/fid.txt"
  python3 benchmarks/plot_metrics.py --fid-table "$RUNS/quality/metrics.jsonl" --evals "$RUNS/quality/eval" \
    >"$RESULTS/quality.md"
}
phase fid 180 fid

# 2. Restoration of the held-out tenth through the quality run's generator.
restore() {
  has_weights lpips-alex || { echo "restore: needs LPIPS-AlexNet's weights: call again at once with carry [\".whl\", \".gpufid\"]"
    return 1; }
  python3 benchmarks/restore_heldout.py --data "$DATA" --prior "$RUNS/quality" --workdir "$RUNS/restore256" \
    --n "$RESTORE_N" --tasks x4,x8 \
    --json "$RESULTS/restore.json" $RESTORE_ARGS 2>&1 | grep -v cuda_timer | tee "$RESULTS/restore.txt"
  { echo "Held-out restoration at 256 px (quality run's prior, first $RESTORE_N held-out images):"; echo
    grep '^|' "$RESULTS/restore.txt"; } >"$RESULTS/restore.md"
}
phase restore 150 restore

# 3. BIG px (1024): the official step and its PULSE search, ours, our PULSE search.
official() {  # official SIZES
  if [ "$OFFICIAL" = 1 ] && python3 -c "import torch" 2>/dev/null && [ -f .official/bench_official.py ]; then
    PULSE=1 PULSE_STEPS=100 python3 .official/bench_official.py --sizes "$1" --variants official \
      --iters "$STEPS" --warmup 5 2>&1 | grep '^{' | tee -a "$RESULTS/official.jsonl"
  else
    echo "official benchmark skipped (needs torch and .official/)"
  fi
}
speed=(python3 benchmarks/train_speed.py --batch 8 --steps "$STEPS" --warmup 5 --json "$RESULTS/train_speed.jsonl")
big() {
  official "$BIG"
  "${speed[@]}" --im-size "$BIG" --precision bfloat16 --remat auto $SPEED_ARGS 2>&1 | grep -v cuda_timer \
    | tee -a "$RESULTS/train_speed.txt"
  python3 benchmarks/upscale_speed.py --im-size "$BIG" --restarts 8 --precision bfloat16 \
    --json "$RESULTS/upscale_speed.jsonl" $PULSE_ARGS 2>&1 | grep -v cuda_timer | tee -a "$RESULTS/upscale_speed.txt"
}
phase "big" 240 big

# 4. The profile of the 256 px step.
phase profile 150 python3 benchmarks/profile_step.py --im-size 256 --precision bfloat16 --steps "$PROFILE_STEPS" \
  --out "$RESULTS/profile" --json "$RESULTS/profile.jsonl" $SPEED_ARGS

# 5. 256 px speed and MFU beside the official, the deviceless figure beside the real peak, compile times.
speed256() {
  official 256
  "${speed[@]}" --im-size 256 --precision bfloat16 --remat auto --compile-cache $SPEED_ARGS 2>&1 \
    | grep -v cuda_timer | tee -a "$RESULTS/train_speed.txt"
  local remat
  remat=$(python3 -c "import json; print([json.loads(l) for l in open('$RESULTS/train_speed.jsonl')][-1]['remat'])")
  JAX_PLATFORMS=cpu python3 benchmarks/train_speed.py --gpu-only --target h200 --im-size 256 --batch 8 \
    --precision bfloat16 --remat "${remat:-none}" --json "$RESULTS/deviceless.jsonl" $SPEED_ARGS 2>&1 \
    | tee "$RESULTS/deviceless.txt"
  # The same step compiled by a second process: read back from the cache that the first one wrote (on a GPU; on the
  # CPU --compile-only compiles without codegen optimisation, another program, so the line says 'compiled').
  python3 benchmarks/train_speed.py --im-size 256 --batch 8 --precision bfloat16 --remat "${remat:-none}" \
    --compile-only --compile-cache --json "$RESULTS/compile.jsonl" $SPEED_ARGS 2>&1 | grep -v cuda_timer
  python3 -c "import json; f, c = (json.loads(open(p).readlines()[-1]) for p in ('$RESULTS/train_speed.jsonl', \
'$RESULTS/compile.jsonl')); how = lambda r: 'read from the compilation cache' if r.get('cache_hits') else 'compiled'; \
print(f\"Compiling the {f['im_size']} px {f['precision']} step (remat={f['remat']}): {f['compile_s']:.1f} s ({how(f)}); \
in a second process {c['compile_s']:.1f} s ({how(c)}).\")" \
    | tee "$RESULTS/compile.txt"
}
phase speed256 200 speed256
cat "$RESULTS/results.md" "$RESULTS/skipped.txt" 2>/dev/null || true  # no skipped.txt when nothing was skipped
