"""The package's layout: imports point down the layers only, no import circles, README's Layout section is the
tree, and the modules of the old flat layout still import as the modules they moved to."""

import ast
import importlib
import pathlib
import re
import runpy
import sys

import pytest

import fastgan_jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fastgan_jax"

# Lower layers never import higher ones; `train` and `sr` (one layer) do not import each other.
LAYERS = {"base": 0, "nn": 1, "interop": 2, "metrics": 3, "train": 4, "sr": 4, "commands": 5}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def group(module: str) -> str:
    """`nn`, `train`, ... for a module of a folder; `base` for images, visual, data and the configs."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else "base"


def imports(module: str) -> set[str]:
    """The package's modules that `module` imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {n for n in names if n in MODULES and n != "fastgan_jax"}
    return found - {module}


GRAPH = {m: imports(m) for m in MODULES if m != "fastgan_jax"}  # the package's __init__ is the lazy front door


def test_imports_point_down_the_layers_only():
    wrong = [
        f"{m} imports {i}"
        for m, targets in GRAPH.items()
        for i in targets
        if LAYERS[group(i)] > LAYERS[group(m)] or (LAYERS[group(i)] == LAYERS[group(m)] and group(i) != group(m))
    ]
    assert not wrong, wrong


def test_no_import_circles():
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", " -> ".join([*path, m])
        state[m] = "open"
        for i in sorted(GRAPH[m]):
            visit(i, [*path, m])
        state[m] = "done"

    for m in sorted(GRAPH):
        visit(m, [])


def test_the_layer_test_sees_imports():
    # A check that finds nothing would pass on anything: these edges exist.
    assert "fastgan_jax.train.step" in GRAPH["fastgan_jax.train.loop"]
    assert "fastgan_jax.nn.losses" in GRAPH["fastgan_jax.train.validate"]
    assert "fastgan_jax.nn.models" in GRAPH["fastgan_jax.metrics.inception"]


def readme_layout() -> set[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Layout\n.*?```\n(.*?)```", text, re.S).group(1)
    entries, folder = set(), None
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        name = line.split()[0] if line.strip() else ""
        if indent == 2 and name.endswith("/"):
            folder = name
            entries.add(f"fastgan_jax/{name}")
        elif indent == 4 and folder and name.endswith(".py"):
            entries.add(f"fastgan_jax/{folder}{name}")
        elif indent == 2 and name.endswith(".py"):
            folder = None
            entries.add(f"fastgan_jax/{name}")
    return entries


def test_readme_layout_matches_the_tree():
    tree = {str(p.relative_to(ROOT)) for p in PACKAGE.glob("*.py")} - {"fastgan_jax/__init__.py"}
    for folder in sorted(p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"):
        tree.add(f"fastgan_jax/{folder.name}/")
        if folder.name in LAYERS:  # code folders list their modules; configs/ and assets/ are data
            tree |= {str(p.relative_to(ROOT)) for p in folder.glob("*.py")} - {f"fastgan_jax/{folder.name}/__init__.py"}
    assert readme_layout() == tree


@pytest.mark.parametrize("old", sorted(fastgan_jax.MOVED))
def test_old_flat_module_names_are_the_moved_modules(old):
    new = importlib.import_module(f"fastgan_jax.{fastgan_jax.MOVED[old]}")
    assert importlib.import_module(f"fastgan_jax.{old}") is new
    assert getattr(fastgan_jax, old) is new
    assert new.__spec__.name == new.__name__  # the moved module keeps its own spec


def test_old_names_work_in_from_imports_and_python_m(monkeypatch, capsys):
    from fastgan_jax.models import init_generator  # README of 0.1
    from fastgan_jax.training import make_train_step, train_step

    assert init_generator.__module__ == "fastgan_jax.nn.models"
    assert (train_step.__module__, make_train_step.__module__) == ("fastgan_jax.train.step",) * 2
    monkeypatch.setattr(sys, "argv", ["x", "--help"])
    monkeypatch.delitem(sys.modules, "fastgan_jax.weights", raising=False)  # as in a fresh `python -m`
    with pytest.raises(SystemExit) as e:
        runpy.run_module("fastgan_jax.weights", run_name="__main__")  # python -m fastgan_jax.weights --help
    assert e.value.code == 0 and "--export DIR" in capsys.readouterr().out


def test_tests_read_nothing_outside_the_project():
    # A clone without ../shared must pass, with nothing skipped: fixtures live in tests/data.
    readers = {p.name for p in (ROOT / "tests").glob("*.py") if re.search(r"[\"']shared[\"']", p.read_text())}
    assert readers == set(), readers
