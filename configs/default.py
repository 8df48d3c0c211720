"""The bundled recipe fastgan_jax/configs/default.py (its docstring says what it is for).

It lives in the package so that an installed `fastgan-train --config default`
finds it; this file keeps `python train.py --config configs/default.py` working.
"""

from fastgan_jax.configs.default import get_config

__all__ = ["get_config"]
