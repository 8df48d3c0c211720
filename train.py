"""Train FastGAN from a checkout: python train.py --workdir RUN [--data DIR] [--config configs/X.py] [...]

The same as the installed `fastgan-train` command (fastgan_jax/commands/train.py,
where the flags are documented; `python train.py --help` lists them and every
config field). The path to the math: `launch.run` (Ctrl-C while loading is one
line) -> `commands.train.main` and its `_train` (flags, one-line errors) ->
`train.trainer.train_and_evaluate` (setup, the loop) -> the jitted
`train.step.train_step`.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fastgan_jax.commands import launch  # noqa: E402  (imports nothing heavy; the command loads inside its Ctrl-C guard)

if __name__ == "__main__":
    launch.run("train")
