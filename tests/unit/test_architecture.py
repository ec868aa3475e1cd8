"""The library's floors: no module imports one on a higher floor, and no import cycle (docs/architecture.md).

Every import counts, also those inside functions: a lazy import is still a dependency."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "rankadaptor"
FLOORS = [  # lowest first; a module may import its own floor and the floors below
    ("foundation", ["errors", "config", "stats", "widths", "trial"]),
    ("infrastructure", ["infra"]),
    ("model", ["models", "data"]),
    ("stages", ["prune", "recover", "evaluate"]),
    ("search", ["search", "champion", "report"]),
    ("serving", ["serving"]),
    ("job", ["job"]),
    ("flows", ["flows", "ops"]),
    ("entry points", ["steps", "cli", "__init__"]),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def floor_of(module: str) -> int:
    head = module.split(".")[0]
    for i, (_, names) in enumerate(FLOORS):
        if head in names:
            return i
    raise AssertionError(f"rankadaptor.{module} is on no floor: add it to FLOORS and docs/architecture.md")


def imports_of(path: Path) -> set[str]:
    """The rankadaptor modules a file imports (names given as `from rankadaptor.x import y` resolved to x.y when
    y is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rankadaptor":
            base = node.module.removeprefix("rankadaptor").lstrip(".")
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                found.add(sub if (SRC / Path(*sub.split("."))).with_suffix(".py").exists()
                          or (SRC / Path(*sub.split("."))).is_dir() else base)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("rankadaptor.") for a in node.names if a.name.startswith("rankadaptor.")}
    return {m for m in found if m}


GRAPH = {module_name(p): imports_of(p) for p in sorted(SRC.rglob("*.py"))}


def test_every_module_is_on_a_floor():
    for module in GRAPH:
        floor_of(module)


def test_no_import_reaches_a_higher_floor():
    upward = [f"rankadaptor.{a} ({FLOORS[floor_of(a)][0]}) imports rankadaptor.{b} ({FLOORS[floor_of(b)][0]})"
              for a, targets in GRAPH.items() for b in sorted(targets) if floor_of(b) > floor_of(a)]
    assert not upward, "imports from a lower floor to a higher one:\n" + "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            if target == module or target not in GRAPH or module.startswith(target + "."):
                continue  # a package's own __init__ re-exports are not an edge back
            if state.get(target) == "open":
                return [*path, module, target]
            if target not in state and (cycle := visit(target, [*path, module])):
                return cycle
        state[module] = "done"
        return None

    for module in GRAPH:
        if module not in state and (cycle := visit(module, [])):
            start = cycle.index(cycle[-1])
            pytest.fail("import cycle: " + " -> ".join(f"rankadaptor.{m}" for m in cycle[start:]))
