#!/usr/bin/env bash
# Everything GPU-side in one device call (see README "Speed" and the issue notes):
# the training-step and PULSE benchmarks at 256 and 1024, then a time-limited real
# run on pokemon-256 with its last sample grid, reconstructions and loss curve.
#
# Prepare here (CPU), from the repo root:
#   echo /.whl/ >> .git/info/exclude; echo /.gpudata/ >> .git/info/exclude
#   pip download --no-deps -d .whl ml_collections tensorboardX          # missing on the device
#   python -m fastgan_jax.weights --export .gpudata/weights --float16   # then keep only lpips-vgg.npz (64 MiB carry limit)
#   cp -r ../shared/data/pokemon-256 .gpudata/
# Run: device run, carry [".whl", ".gpudata"], command "bash benchmarks/gpu_session.sh", timeout 600.
set -uo pipefail
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
export FASTGAN_JAX_WEIGHTS=$PWD/.gpudata/weights
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"

python3 benchmarks/train_speed.py --im-size 256 1024 --batch 8 --precision float32 bfloat16 \
  --json "$OUT/train_speed.jsonl" 2>&1 | tee "$OUT/train_speed.txt"
python3 benchmarks/upscale_speed.py --im-size 256 1024 --restarts 8 --precision float32 bfloat16 2>&1 \
  | tee "$OUT/upscale_speed.txt"

rm -rf runs/pokemon
python3 train.py --data .gpudata/pokemon-256 --workdir runs/pokemon --config.num_steps=100000 \
  --config.time_limit_s="${TRAIN_SECONDS:-300}" --config.sample_every=2000 --config.checkpoint_every=5000 \
  --config.log_every=50 --config.cache_dir=/tmp/fastgan_cache 2>&1 | tail -40 | tee "$OUT/train.txt"
last=$(ls runs/pokemon/samples | grep '^samples_' | tail -1)
cp "runs/pokemon/samples/$last" "$OUT/pokemon_$last"
cp "runs/pokemon/samples/${last/samples_/reconstructions_}" "$OUT/"
python3 benchmarks/plot_metrics.py runs/pokemon/metrics.jsonl "$OUT/pokemon_losses.png"
cp runs/pokemon/metrics.jsonl "$OUT/pokemon_metrics.jsonl"
