"""Every layer imports downward, and the WebUI's process loads only what mirroring needs.

The layer table below is ARCHITECTURE.md's "Layers and what they may
import", written once more as data: change both together. The imports are
read from the source (``ast``), every ``import`` and ``from … import`` of
the package, including those under ``TYPE_CHECKING`` and inside functions:
a lazy import is still a dependency. Between two modules of one layer, only
imports that run count as a cycle: two modules naming each other's types
(``TYPE_CHECKING``) is a pair of annotations, not an import order.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "webui_insights"

# ARCHITECTURE.md, "Layers and what they may import". A unit is a top-level
# module or package of webui_insights ("__init__" is the package's own
# module); each may import itself and the units listed for it.
BASE = frozenset({"snapshot", "profiles", "settings", "diagnostics", "forksafe"})
ALLOWED: dict[str, frozenset[str]] = {
    **{unit: BASE for unit in BASE},
    "demo_host": frozenset(),
    "engine": frozenset({"snapshot", "diagnostics"}),  # diagnostics: types only
    "sources": BASE | {"engine"},
    "writer": BASE | {"engine"},
    "routing": BASE | {"engine"},
    "sweep": BASE | {"engine", "sources", "routing"},
    "hook": BASE | {"engine", "writer", "sweep"},
    "__init__": BASE | {"hook", "writer"},
    "commands": BASE | {"engine", "sources", "routing", "sweep", "hook", "demo_host"},
    "launcher": BASE | {"hook"},
    "_bootstrap": frozenset({"launcher"}),
    "cli": BASE | {"__init__", "engine", "sources", "routing", "commands", "launcher"},
    "__main__": frozenset({"cli"}),
}

# What must never be loaded into the WebUI's process by mirroring: the
# command layer, the CLI, and the forking reader pool of the sources.
HOST_FORBIDDEN = ("webui_insights.commands", "webui_insights.cli", "webui_insights.sources.pool")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    base = PACKAGE.parent / relative
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    """The import statements under ``if TYPE_CHECKING:`` (never run)."""
    guarded: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            guarded.update(n for stmt in node.body for n in ast.walk(stmt))
    return guarded


def _imported(path: Path, *, runtime_only: bool = False) -> set[str]:
    """The package's modules ``path`` imports (``from . import x`` of a non-module names the package)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_only(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "webui_insights")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            elif node.module and node.module.split(".")[0] == "webui_insights":
                target = node.module
            else:
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _is_module(candidate) else target)
    found.discard(name)
    return found


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph(*, runtime_only: bool = False) -> dict[str, set[str]]:
    return {_module_name(path): _imported(path, runtime_only=runtime_only) for path in sorted(PACKAGE.rglob("*.py"))}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its nodes in order), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_every_unit_of_the_package_has_a_row_in_the_layer_table() -> None:
    assert {_unit(module) for module in _graph()} <= set(ALLOWED)


def test_every_module_imports_only_the_layers_below_it() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in sorted(targets)
        if _unit(target) != _unit(module) and _unit(target) not in ALLOWED[_unit(module)]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_two_layers_import_each_other() -> None:
    units: dict[str, set[str]] = defaultdict(set)
    for module, targets in _graph().items():
        units[_unit(module)].update(_unit(t) for t in targets if _unit(t) != _unit(module))
    assert _cycle(units) is None


def test_no_two_modules_import_each_other() -> None:
    graph = _graph(runtime_only=True)
    # A package's ``__init__`` re-exporting its modules is not a cycle with them.
    within = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}
    assert _cycle(within) is None


_HOST = """
import json, sys, tempfile
from pathlib import Path
import webui_insights
webui_insights.install(enabled=True)
from webui_insights.profiles import Homes
from webui_insights.sweep import reconcile_pass
home = Path(tempfile.mkdtemp())
(home / "sessions").mkdir()
reconcile_pass(Homes(home), home / "sessions")   # what the sweep runs in the WebUI's process
webui_insights.flush(1.0)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("webui_insights"))))
webui_insights.uninstall()
"""


def test_the_webui_process_loads_no_command_cli_or_reader_pool_module() -> None:
    done = subprocess.run([sys.executable, "-c", _HOST], capture_output=True, text=True, timeout=60, check=True)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "webui_insights.sweep" in loaded and "webui_insights.engine.batch" in loaded
    assert not [m for m in loaded if any(m == f or m.startswith(f + ".") for f in HOST_FORBIDDEN)]
