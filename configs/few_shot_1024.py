"""The bundled recipe fastgan_jax/configs/few_shot_1024.py (its docstring says what it is for).

It lives in the package so that an installed `fastgan-train --config few_shot_1024`
finds it; this file keeps `python train.py --config configs/few_shot_1024.py` working.
"""

from fastgan_jax.configs.few_shot_1024 import get_config

__all__ = ["get_config"]
