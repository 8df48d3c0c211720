"""PULSE super-resolution with a FastGAN generator: `python upscale.py --help`.

A thin shim over `fastgan_jax.commands.upscale` (installed as `fastgan-upscale`).
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fastgan_jax.commands import launch  # noqa: E402  (imports nothing heavy; the command loads inside its Ctrl-C guard)

if __name__ == "__main__":
    launch.run("upscale")
