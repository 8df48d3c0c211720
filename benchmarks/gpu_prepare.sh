#!/usr/bin/env bash
# Prepares, on this (CPU) machine, what benchmarks/gpu_session.sh needs on the GPU machine, which
# gets only the checkout: four git-excluded folders to carry.
#   .whl/       wheels of what the GPU machine lacks (ml_collections, tensorboardX, dm-pix, tqdm, grain and the
#               dependencies it lacks there; Python 3.12)
#   .gpudata/   LPIPS-VGG's weights (exported from the pip packages), pokemon-256
#               (never committed)
#   .official/  the official PyTorch FastGAN step benchmark (GPL-3.0, timing only, never imported)
#   .gpufid/    the FID Inception's and LPIPS-AlexNet's weights (the FID phase, the held-out restoration's
#               LPIPS), for a second call: with the rest and the checkout they exceed the 64 MiB that a call
#               carries
# Then: device run, carry [".whl", ".gpudata", ".official"], command "bash benchmarks/gpu_session.sh",
# timeout_s 600; at once (the machine stays warm ~30 s) the same with carry [".whl", ".gpufid"]: the
# quality run's FID and KID, the held-out restoration, and any phase the first call had no time for.
# Last it prints what each call carries, the checkout included, and fails if one is over 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
for d in /.whl/ /.gpudata/ /.official/ /.gpufid/; do
  grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude
done
rm -rf .whl .gpudata .official .gpufid
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl ml_collections tensorboardX dm-pix \
  "grain==$(python3 -c 'import importlib.metadata as m; print(m.version("grain"))')" array-record cloudpickle portpicker tqdm
python3 -m fastgan_jax.interop.weights --export .gpudata/weights --float16
mkdir -p .gpufid/weights
mv .gpudata/weights/inception-fid.npz .gpudata/weights/lpips-alex.npz .gpufid/weights/  # the 64 MiB carry limit
cp -r "$SHARED/data/pokemon-256" .gpudata/
cp -r "$SHARED/reference/official-bench" .official
du -sh .whl .gpudata .official .gpufid
# What travels: the tracked and untracked-not-ignored files, and the carried folders.
checkout=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb | awk '$2 == "total" {s += $1} END {print s}')
over=0
for call in "1 .whl .gpudata .official" "2 .whl .gpufid"; do
  set -- $call
  n=$1; shift
  bytes=$(( checkout + $(du -scb "$@" | tail -1 | cut -f1) ))
  echo "call $n carries $(( bytes / 1048576 )) MiB ($bytes bytes with the checkout; at most 64 MiB): $*"
  (( bytes <= 64 * 1048576 )) || over=1
done
# Call 2 could leave .whl out: on a warm machine the first call's ignored folders stay.
(( over == 0 )) || { echo "gpu_prepare: a call would carry over 64 MiB: carry less (the checkout grew?)"; exit 1; }
