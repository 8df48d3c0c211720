#!/usr/bin/env bash
# Prepares, on this (CPU) machine, what benchmarks/gpu_session.sh needs on the GPU machine, which
# gets only the checkout: three git-excluded folders to carry.
#   .whl/       wheels of what the GPU machine lacks (ml_collections, tensorboardX, dm-pix, tqdm, grain and the
#               dependencies it lacks there; Python 3.12)
#   .gpudata/   LPIPS-VGG and LPIPS-AlexNet weights (exported from the pip packages), pokemon-256
#               (never committed)
#   .official/  the official PyTorch FastGAN step benchmark (GPL-3.0, timing only, never imported)
#   .gpufid/    the FID Inception's weights, for a second call: with the rest they exceed the 64 MiB that
#               a call carries
# Then: device run, carry [".whl", ".gpudata", ".official"], command "bash benchmarks/gpu_session.sh",
# timeout_s 600; at once (the machine stays warm ~30 s) the same with carry [".whl", ".gpufid"]: the
# quality run's FID and KID, and any phase the first call had no time for.
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
mv .gpudata/weights/inception-fid.npz .gpufid/weights/  # the 64 MiB carry limit
cp -r "$SHARED/data/pokemon-256" .gpudata/
cp -r "$SHARED/reference/official-bench" .official
du -sh .whl .gpudata .official .gpufid
