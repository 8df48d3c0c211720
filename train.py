"""Train FastGAN from a checkout: python train.py --workdir RUN [--data DIR] [--config configs/X.py] [...]

The same as the installed `fastgan-train` command (fastgan_jax/train_cli.py,
where the flags are documented; `python train.py --help` lists them and every
config field).
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fastgan_jax import train_cli  # noqa: E402

if __name__ == "__main__":
    train_cli.main()
