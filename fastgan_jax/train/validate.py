"""Checks a training config and its workdir before anything is loaded, compiled or written.

    validate(config, num_devices=jax.device_count(), workdir="runs/x")

raises `ConfigError` with one line that names the flag as it is typed, its
value and what is allowed: `--config.optim.batch_size=-3: must be an int >= 1 ...`.
Every field of `configs/default.py` has a rule in `RULES` (a test checks it, so a new
field cannot skip the check); a field that is not in `default.py` is an error.
"""

import difflib
import math
import numbers
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

from fastgan_jax import configs
from fastgan_jax.configs import default
from fastgan_jax.data import ASPECTS
from fastgan_jax.nn import diffaug, losses
from fastgan_jax.nn.models import D_MULT, G_MULT, IM_SIZES, REMATS
from fastgan_jax.train import state

DATA_ON_DEVICE = ("auto", "yes", "no")
SEED_LIMIT = 2**32  # jax.random.key(2**32) is key(0); numpy's host batches refuse a negative seed


class ConfigError(ValueError):
    """A config field or workdir that training cannot use; the message is one line."""


# A rule takes (value, the whole config, num_devices) and returns what is allowed when the value is
# not, else None.
Rule = Callable[[Any, Mapping, int], str | None]


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _type_note(v, ok: bool) -> str:
    if ok:
        return ""
    name = type(v).__name__
    return ", not None" if v is None else f", not {'an' if name[0] in 'aeiou' else 'a'} {name}"


def _int(lo: int, hi: int | None = None) -> Rule:
    allowed = f"must be an int >= {lo}" if hi is None else f"must be an int in [{lo}, {hi})"

    def rule(v, cfg, num_devices):
        if not _is_int(v) or v < lo or (hi is not None and v >= hi):
            return allowed + _type_note(v, _is_int(v))
        return None

    return rule


def _real(lo: float, hi: float | None = None, finite: bool = False) -> Rule:
    allowed = f"must be a number >= {lo}" if hi is None else f"must be a number in [{lo}, {hi})"
    allowed += " and finite" if finite else ""

    def rule(v, cfg, num_devices):
        ok = _is_real(v) and v >= lo and (hi is None or v < hi) and (math.isfinite(v) or not finite)
        return None if ok else allowed + _type_note(v, _is_real(v))

    return rule


def _choice(choices: Callable[[], tuple]) -> Rule:
    """One of `choices()`, read at check time (another module may add to its table)."""

    def rule(v, cfg, num_devices):
        allowed = tuple(choices())
        return None if isinstance(v, str) and v in allowed else f"choose from {', '.join(allowed)}"

    return rule


def _string(v, cfg, num_devices):
    return None if isinstance(v, str) else f"must be a string{_type_note(v, False)}"


def _data(v, cfg, num_devices):
    if not isinstance(v, str) or not v:
        return "must be an image folder or tfds:NAME[:SPLIT]"
    parts = v.split(":")
    if v.startswith("tfds:") and (len(parts) not in (2, 3) or not parts[1]):
        return "expected tfds:NAME or tfds:NAME:SPLIT"
    return None  # whether the folder exists is data.load's one-line error, before anything compiles


def _im_size(v, cfg, num_devices):
    if _is_int(v) and v in IM_SIZES:
        return None
    return f"choose from {', '.join(map(str, IM_SIZES))}" + _type_note(v, _is_int(v))


def _background(v, cfg, num_devices):
    ok = isinstance(v, (tuple, list)) and len(v) == 3 and all(_is_int(c) and 0 <= c <= 255 for c in v)
    return None if ok else "must be 3 ints 0-255 (R, G, B), e.g. (255, 255, 255)"


def _data_on_device(v, cfg, num_devices):
    return None if isinstance(v, bool) or v in DATA_ON_DEVICE else f"choose from {', '.join(DATA_ON_DEVICE)}"


STREAM_FROM = ("memory", "files")


def _stream_from(v, cfg, num_devices):
    if v not in STREAM_FROM:
        return f"choose from {', '.join(STREAM_FROM)}"
    if v == "files" and cfg["data.on_device"] in ("yes", True):
        return "streams batches from the files, which data_on_device=yes contradicts"
    return None


def _channels(mult: dict, largest: Callable[[int], int], net: str) -> Rule:
    """A width for which the official table `int(mult[r] * width)` is whole and >= 1 at every used resolution."""

    def rule(v, cfg, num_devices):
        if not _is_int(v) or v < 1:
            return "must be an int >= 1" + _type_note(v, _is_int(v))
        top = largest(cfg["model.im_size"])
        smallest = min(m for r, m in mult.items() if r <= top)
        multiple = max(1, round(1 / smallest))
        if v % multiple:
            return (
                f"at im_size {cfg['model.im_size']} must be a multiple of {multiple} "
                f"(the {net}'s channels at {top} px are {smallest} * width)"
            )
        return None

    return rule


def _batch_size(v, cfg, num_devices):
    if not _is_int(v) or v < 1 or v % num_devices:
        return f"must be an int >= 1 and a multiple of the {num_devices} device(s){_type_note(v, _is_int(v))}"
    return None


def _policy(v, cfg, num_devices):
    if not isinstance(v, str):
        return f"must be a comma-separated string{_type_note(v, False)}"
    try:
        diffaug.parse_policy(v)
    except ValueError:
        return f"comma-separated ops from {', '.join(sorted(diffaug.AUGMENTS))}, or '' for none"
    return None


def _init_from(v, cfg, num_devices):
    if not isinstance(v, str):
        return f"must be a path or ''{_type_note(v, False)}"
    if v and not pathlib.Path(v).expanduser().exists():
        return "no such file or folder (give a run folder, an official .pth/.npz, or '')"
    return None


# One rule per field of default.py, in its order: im_size comes before the widths that depend on it.
RULES: dict[str, Rule] = {
    "data.source": _data,
    "model.im_size": _im_size,
    "data.aspect": _choice(lambda: ASPECTS),
    "data.background": _background,
    "data.on_device": _data_on_device,
    "data.stream_from": _stream_from,
    "data.workers": _int(-1),
    "data.cache_dir": _string,
    "data.tfds_data_dir": _string,
    "model.ngf": _channels(G_MULT, lambda im_size: im_size, "generator"),
    # D's stem below 512 px has the channels of twice its resolution (models.Discriminator).
    "model.ndf": _channels(D_MULT, lambda im_size: 1024 if im_size == 1024 else min(2 * im_size, 512), "discriminator"),
    "model.nz": _int(1),
    "model.dec_width": _int(1),  # the decoders use G_MULT up to 128 px, where every factor is >= 1
    "model.precision": _choice(lambda: sorted(state.PRECISIONS)),
    "model.remat": _choice(lambda: (*REMATS, "auto")),  # auto: train.memory
    "optim.batch_size": _batch_size,
    "optim.lr": _real(0, finite=True),  # 0 is allowed: it freezes the weights (a fine-tuning check uses it)
    "optim.beta1": _real(0, 1),
    "optim.beta2": _real(0, 1),
    "optim.ema_decay": _real(0, 1),
    "loss.policy": _policy,
    "loss.recon": _choice(lambda: losses.RECONS),
    "train.num_steps": _int(1),
    "train.seed": _int(0, SEED_LIMIT),
    "train.init_from": _init_from,
    "train.time_limit_s": _real(0),  # inf: no limit, as 0 is
    "log.log_every": _int(1),
    "log.sample_every": _int(1),
    "log.checkpoint_every": _int(1),
    "log.keep_checkpoints": _int(1),
    "log.num_samples": _int(1),
    "log.recalib_samples": _int(1),
    "log.recalib_batch": _int(1),
    "log.fid_every": _int(0),
    "log.fid_samples": _int(2),  # FID needs a covariance
}


# Fields whose values are strings are shown as typed (`--config.loss.recon=bogus`); others as Python
# literals, so that a string where a number belongs reads `--config.optim.lr='2e-4'`.
_STRING_FIELDS = {field for field, value in configs.flatten(default.get_config()).items() if isinstance(value, str)}


def _show(field, v) -> str:
    if isinstance(v, str) and field in _STRING_FIELDS and v and v.strip() == v:
        return v
    return repr(v)


def check_fields(names) -> None:
    """Raises `ConfigError` for the first name (`GROUP.FIELD` or `GROUP.FIELD.SUB`) that is not a config field."""
    for name in names:
        field = ".".join(name.split(".")[:2])
        if field not in RULES:
            raise ConfigError(f"--config.{name}: no such config field{_did_you_mean(field)}; see fastgan-train --help")


def _did_you_mean(field: str) -> str:
    """` (did you mean --config.GROUP.FIELD?)` for the field closest to `field` (`GROUP.FIELD`, or FIELD alone)."""
    known = {f: f for f in RULES} | {f.split(".", 1)[1]: f for f in RULES}
    close = difflib.get_close_matches(field, known, n=1) or difflib.get_close_matches(field.split(".")[-1], known, n=1)
    return f" (did you mean --config.{known[close[0]]}?)" if close else ""


def check_workdir(workdir) -> None:
    """Raises `ConfigError` unless `workdir` is a writable folder or can be created as one."""
    if str(workdir) == "":
        raise ConfigError("--workdir '': give a folder")
    path = pathlib.Path(workdir).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"--workdir {workdir}: is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"--workdir {workdir}: the folder is not writable")
        return
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"--workdir {workdir}: cannot be created, {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"--workdir {workdir}: cannot be created, {ancestor} is not writable")


def validate(config, *, num_devices: int, workdir=None) -> None:
    """Checks every field of a training config, and the workdir when given.

    Args:
      config: a `ConfigDict` or a nested dict with the groups and fields of `configs/default.py`.
      num_devices: devices the batch is split over (`jax.device_count()`, all processes' devices).
      workdir: the run folder; None skips its check.

    Raises:
      ConfigError: one line, `--config.FIELD=VALUE: what is allowed`, for the
        first bad, unknown or missing field (`GROUP.FIELD`), or a workdir that cannot be used.
    """
    cfg = configs.flatten(config)
    check_fields(cfg)
    for field, rule in RULES.items():
        if field not in cfg:
            raise ConfigError(f"--config.{field}: missing; every field of configs/default.py is needed")
        complaint = rule(cfg[field], cfg, num_devices)
        if complaint:
            raise ConfigError(f"--config.{field}={_show(field, cfg[field])}: {complaint}")
    if workdir is not None:
        check_workdir(workdir)
