"""The package's layout: imports point down the layers only, no import circles, README's Layout section is the
tree, and the package's front door names only what exists."""

import ast
import pathlib
import re

import fastgan_jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fastgan_jax"

# Lower layers never import higher ones; `train` and `sr` (one layer) do not import each other.
LAYERS = {"base": 0, "nn": 1, "interop": 2, "metrics": 3, "train": 4, "sr": 4, "commands": 5}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
# The recipes: the checkout's configs/, installed as fastgan_jax.configs (pyproject.toml's package-dir).
MODULES |= {f"fastgan_jax.{module_name(p)}": p for p in sorted((ROOT / "configs").glob("*.py"))}


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
    assert "fastgan_jax.train.step" in GRAPH["fastgan_jax.train.trainer"]
    assert "fastgan_jax.data" in GRAPH["fastgan_jax.configs.default"]
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


def test_public_names_import():
    for name in fastgan_jax.__all__:
        assert getattr(fastgan_jax, name).__name__ == name, name


def test_tests_read_nothing_outside_the_project():
    # A clone without ../shared must pass, with nothing skipped: fixtures live in tests/data.
    readers = {p.name for p in (ROOT / "tests").rglob("*.py") if re.search(r"[\"']shared[\"']", p.read_text())}
    assert readers == set(), readers


def test_tests_mirror_the_package():
    # A test of fastgan_jax/sr/x.py is in tests/sr/; the top-level modules' tests, the pages' and the wheel's are
    # in tests/, the benchmark scripts' in tests/benchmarks/, fixtures in tests/data/.
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == {name for name in LAYERS if name != "base"} | {"benchmarks", "data"}, folders
    misplaced = [str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*_test.py") if p.parent.name == "data"]
    assert not misplaced, misplaced


def test_no_module_over_450_lines_and_a_short_init():
    lengths = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in lengths.items() if n > 450} == {}
    assert lengths["fastgan_jax/__init__.py"] <= 80
