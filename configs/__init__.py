"""The training recipes: one file per recipe, each with `get_config()`.

`default.py` is the official setting; the others import it and override
fields. These files are the top-level `configs/` of a checkout, installed as
the package `fastgan_jax.configs` (pyproject.toml's package-dir), so that
`python train.py --config configs/cpu_quick.py` and
`fastgan-train --config cpu_quick` run the same recipe from any folder.
"""

import ast
import importlib.util
import json
import pathlib
import re

import ml_collections

DIR = pathlib.Path(__file__).resolve().parent
# `    c.GROUP.FIELD = VALUE  # documentation` in default.py.
_FIELD_LINE = re.compile(r"^\s*c\.(\w+\.\w+)\s*=.*?\s#\s*(.+)$")


def names() -> list[str]:
    """Names of the bundled configs, e.g. ['cpu_quick', 'default', 'few_shot_1024']."""
    return sorted(p.stem for p in DIR.glob("*.py") if not p.stem.startswith("_"))


def field_docs() -> dict[str, str]:
    """{'GROUP.FIELD': one-line documentation} from the trailing comments of default.py's assignments."""
    lines = (DIR / "default.py").read_text().splitlines()
    return {m[1]: m[2].strip() for m in map(_FIELD_LINE.match, lines) if m}


def flatten(config) -> dict:
    """A config (a ConfigDict or a nested dict) as {'GROUP.FIELD': value}, in its order."""
    config = config.to_dict() if hasattr(config, "to_dict") else config
    flat = {}
    for group, fields in config.items():
        if isinstance(fields, dict):
            flat |= {f"{group}.{field}": value for field, value in fields.items()}
        else:  # not a group: validate names it as an unknown field
            flat[group] = fields
    return flat


# Fields renamed when the config became nested (2026-12-02), in the flat configs of runs saved before.
_FLAT_NAMES = {"data.source": "data", "data.on_device": "data_on_device", "data.workers": "data_workers"}


def nest(flat: dict) -> dict:
    """A run's config saved flat (before 2026-12-02: `{'im_size': 64, 'data': DIR, ...}`) as the nested config
    of today (`{'model': {'im_size': 64, ...}, 'data': {'source': DIR, ...}, ...}`); its fields are today's
    fields. A field the flat config lacks is left out (a resume then names it as a difference)."""
    nested = {}
    for key in flatten(load("default")):
        group, field = key.split(".")
        name = _FLAT_NAMES.get(key, field)
        if name in flat:
            nested.setdefault(group, {})[field] = flat[name]
    return nested


def closest(config: dict) -> tuple[str, dict]:
    """The bundled config that `config` differs least from, and the fields where it differs from it.

    Args:
      config: a `flatten`ed config (e.g. a saved run's).

    Returns:
      (name, {'GROUP.FIELD': config's value}): `--config NAME` plus `--config.GROUP.FIELD=VALUE` for each
      field rebuild it.
    """
    config = json.loads(json.dumps(config))
    best = None
    for name in names():
        bundled = json.loads(json.dumps(flatten(load(name))))
        diff = {k: v for k, v in config.items() if bundled.get(k) != v}
        if best is None or len(diff) < len(best[1]):
            best = (name, diff)
    return best


def resolve(value: str) -> pathlib.Path:
    """The config file for `--config VALUE`: a bundled name (`cpu_quick`) or a path to a .py file.

    Raises:
      ValueError: an unknown name (the message lists the bundled ones) or a missing file.
    """
    if "/" not in value and not value.endswith(".py"):
        if value not in names():
            raise ValueError(f"--config {value}: no such bundled config (bundled: {', '.join(names())})")
        return DIR / f"{value}.py"
    if not pathlib.Path(value).is_file():
        raise ValueError(f"--config {value}: no such file")
    _check_config_file(pathlib.Path(value))
    return pathlib.Path(value)


def _check_config_file(file: pathlib.Path) -> None:
    """ValueError unless `file` parses as Python and binds `get_config` at its top level (read, not run)."""
    must = "a config file is Python that defines get_config() returning an ml_collections.ConfigDict"
    try:
        tree = ast.parse(file.read_bytes(), filename=str(file))
    except SyntaxError as e:
        raise ValueError(f"--config {file}: line {e.lineno}: {e.msg}; {must}") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"--config {file}: cannot be read ({e}); {must}") from None
    bound = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.Assign | ast.ImportFrom | ast.Import):
            if isinstance(node, ast.FunctionDef):
                bound.add(node.name)
            elif isinstance(node, ast.Assign):
                bound |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            else:
                bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
    if "get_config" not in bound:
        raise ValueError(f"--config {file}: defines no get_config(); {must}")


def load(value: str) -> ml_collections.ConfigDict:
    """`get_config()` of a bundled name or a config file (see `resolve`)."""
    file = resolve(value)
    spec = importlib.util.spec_from_file_location(f"_fastgan_config_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
