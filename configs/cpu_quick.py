"""The bundled recipe fastgan_jax/configs/cpu_quick.py (its docstring says what it is for).

It lives in the package so that an installed `fastgan-train --config cpu_quick`
finds it; this file keeps `python train.py --config configs/cpu_quick.py` working.
"""

from fastgan_jax.configs.cpu_quick import get_config

__all__ = ["get_config"]
