"""The house rules of the tree: imports run one way (ARCHITECTURE.md), with no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Each folder of wavediff/ and what it may import (besides itself and the standard/third-party
# libraries). Read top to bottom: a layer imports only layers listed for it.
BASE = {"wavediff.config", "wavediff.errors", "wavediff.io"}
ALLOWED = {
    "wavediff.errors": set(),
    "wavediff.allocator": set(),
    "wavediff.config": {"wavediff.errors"},
    "wavediff.io": {"wavediff.errors", "wavediff.config"},
    "wavediff.shards": BASE,
    "wavediff.models": BASE,
    "wavediff.latents": BASE | {"wavediff.shards", "wavediff.models"},
    "wavediff.generation": BASE | {"wavediff.models"},
    "wavediff.evaluation": BASE | {"wavediff.shards", "wavediff.models", "wavediff.generation"},
    "wavediff.training": BASE | {"wavediff.shards", "wavediff.models", "wavediff.generation", "wavediff.evaluation"},
    "wavediff.interop": BASE | {"wavediff.models"},
    "data_tools": BASE | {"wavediff.shards"},
}
COMMANDS = {"wavediff.pipelines", "wavediff.studio", "wavediff.cli", "wavediff.__main__"}  # on top: may import anything


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("wavediff", "data_tools"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[0] if parts[0] == "data_tools" else ".".join(parts[:2])


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported project module, at module level?) for every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" for a in node.names]
            targets = [n for n in names if n in MODULES] or [node.module]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in ("wavediff", "data_tools") and target in MODULES:
                found.append((target, id(node) in top))
    return found


GRAPH = {module: _imports(path) for module, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "wavediff" and _layer(m) not in COMMANDS))
def test_a_module_imports_only_the_layers_below_it(module):
    layer = _layer(module)
    allowed = ALLOWED[layer] | {layer}
    wrong = sorted({target for target, _ in GRAPH[module] if _layer(target) not in allowed})
    assert not wrong, f"{module} ({layer}) imports {wrong}; {layer} may import only {sorted(allowed)}"


def test_nothing_imports_the_commands():
    for module, imports in GRAPH.items():
        if _layer(module) not in COMMANDS:
            assert not [t for t, _ in imports if _layer(t) in COMMANDS], module


def test_wavediff_imports_data_tools_only_inside_its_commands():
    """data_tools imports wavediff at module level, so wavediff's commands import data_tools only
    inside the function that needs it: no import runs both ways at module level."""
    for module, imports in GRAPH.items():
        if module.startswith("wavediff"):
            at_top = [t for t, top in imports if top and t.startswith("data_tools")]
            assert not at_top, f"{module} imports {at_top} at module level"


def test_module_level_imports_have_no_cycle():
    edges = {m: {t for t, top in imports if top and t != m} for m, imports in GRAPH.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_no_top_level_module_shares_a_name_with_one_in_a_subpackage():
    top = {p.stem for p in (ROOT / "wavediff").glob("*.py")} - {"__init__", "__main__"}
    nested = {p.stem for p in (ROOT / "wavediff").glob("*/*.py")}
    assert not top & nested, sorted(top & nested)


def test_the_layering_rules_name_every_folder():
    for module in MODULES:
        layer = _layer(module)
        assert layer in ALLOWED or layer in COMMANDS or module == "wavediff", f"{module}: no rule for {layer}"


def test_every_package_folder_is_listed_for_the_wheel():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    folders = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for package in ("wavediff", "data_tools")
        for init in (ROOT / package).rglob("__init__.py")
    }
    assert folders | {"wavediff.recipes"} == listed
