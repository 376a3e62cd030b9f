"""The layers a newcomer can name from the tree, kept as they are drawn in DEVELOPING.md:
cli → commands → adapters → boto3, with domain and output beside them, and no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "jobguard"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (relative imports resolved), top-level statements and functions alike."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


MODULES = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else module


def _uses(module: str, prefix: str) -> list[str]:
    return sorted(i for i in MODULES[module] if i == prefix or i.startswith(prefix + "."))


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) == "domain"))
def test_the_domain_layer_needs_no_aws_and_nothing_above_it(module: str) -> None:
    for forbidden in ("boto3", "botocore", "jobguard.adapters", "jobguard.commands", "jobguard.output", "jobguard.cli", "jobguard.sim"):
        assert not _uses(module, forbidden), f"{module} imports {_uses(module, forbidden)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) == "commands"))
def test_commands_never_touch_boto3_or_a_particular_store(module: str) -> None:
    for forbidden in ("boto3", "botocore", "jobguard.cli", "jobguard.sim", "jobguard.adapters.stores.file"):
        assert not _uses(module, forbidden), f"{module} imports {_uses(module, forbidden)}"
    stores = [
        i for i in _uses(module, "jobguard.adapters.stores") if i.count(".") > 3 and not i.endswith((".Page", ".Store", ".Versioned"))
    ]
    assert not stores, f"{module} knows a particular store: {stores}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) in ("adapters", "output", "domain")))
def test_nothing_below_the_commands_knows_about_them(module: str) -> None:
    assert not _uses(module, "jobguard.commands") and not _uses(module, "jobguard.cli"), module


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) != "sim" and m not in ("jobguard.demo", "jobguard.cli")))
def test_only_the_demo_imports_the_simulation(module: str) -> None:
    assert not _uses(module, "jobguard.sim"), f"{module} imports the simulation"


def test_there_are_no_import_cycles() -> None:
    graph = {
        m: {i for i in imports if i in MODULES and i != m}
        | {i.rsplit(".", 1)[0] for i in imports if i.rsplit(".", 1)[0] in MODULES and i.rsplit(".", 1)[0] != m}
        for m, imports in MODULES.items()
    }
    # A package's __init__ re-exporting its own modules is not a cycle between layers.
    graph = {
        m: {d for d in deps if not (d.startswith(m + ".") or (m.startswith(d + ".") and d in MODULES and _is_package(d)))}
        for m, deps in graph.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def _is_package(module: str) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").exists()
