"""Imports run one way (docs/architecture.md §9): a module never imports from a layer above its own.

Every ``import`` / ``from ... import`` in the package is parsed with ``ast`` — module level and
inside functions alike (a deferred import is still a dependency) — and resolved to the
visbricks layer it names. ``visbricks/__init__.py`` is the lazy public facade and sits above
everything; ``data/draw.py`` is in the data layer like the rest of ``data/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "visbricks"

# Lower number = lower layer. Modules on one level may import each other.
LAYERS: dict[str, int] = {
    "config": 0,
    "registry": 0,
    "errors": 0,
    "files": 0,
    "ops": 1,
    "models": 2,
    "data": 2,
    "metrics": 3,  # below the engine: metrics never import engine (the Trainer reads them)
    "engine": 4,
    "tasks": 5,
    "deploy": 6,
    "cli": 7,
    "__init__": 8,
    "__main__": 8,
}


def _module_name(path: Path, package: Path) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _layer_of(module: str) -> str | None:
    """The layer name of ``visbricks.x.y`` (``x``), or None for modules outside the package."""
    parts = module.split(".")
    if parts[0] != "visbricks":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _from_target(node: ast.ImportFrom, package: str) -> str:
    """The absolute module of ``from X import ...`` written in ``package``."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported_modules(path: Path, package: Path) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every visbricks import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = _module_name(path, package)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(node, package)
            # ``from .. import tasks`` imports the sub-module ``tasks``: judge by it.
            if node.module is None:
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, m) for line, m in found if m.split(".")[0] == "visbricks"]


def layering_violations(package: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(package.rglob("*.py")):
        own = _layer_of(_module_name(path, package))
        if own is None or own not in LAYERS:
            problems.append(f"{path}: module in no layer ({own}); add it to LAYERS")
            continue
        for line, module in _imported_modules(path, package):
            other = _layer_of(module)
            if other not in LAYERS:
                problems.append(f"{path}:{line}: imports {module}, which is in no layer")
            elif LAYERS[other] > LAYERS[own]:
                problems.append(
                    f"{path.relative_to(package.parent)}:{line}: {own} (layer {LAYERS[own]}) "
                    f"imports {module} ({other}, layer {LAYERS[other]})"
                )
    return problems


def test_no_module_imports_from_a_layer_above_it():
    problems = layering_violations()
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def _fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "visbricks"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    return root


@pytest.mark.parametrize(
    "source",
    [
        "from ..tasks import base\n",  # relative, module level
        "def f():\n    from ..deploy.draw import draw_boxes\n",  # deferred, inside a function
        "import visbricks.engine.trainer\n",  # absolute
        "from .. import cli\n",  # a sub-module named in the import list
    ],
)
def test_an_upward_import_is_caught_wherever_it_is_written(tmp_path, source):
    root = _fake_package(tmp_path, {"data/draw.py": source, "config.py": ""})
    problems = layering_violations(root)
    assert len(problems) == 1 and "draw.py" in problems[0] and "data (layer 2)" in problems[0]


def test_downward_and_sideways_imports_pass(tmp_path):
    root = _fake_package(
        tmp_path,
        {
            "tasks/detect.py": "from ..data.draw import x\nfrom ..metrics import coco\n"
            "from ..engine.plots import y\nimport torch\n",
            "data/detection.py": "from ..models import z\nfrom .io import read_image\n",
        },
    )
    assert layering_violations(root) == []


# ---- no import cycles, between any two modules -------------------------------------------------


def _module_files(package: Path) -> dict[str, Path]:
    return {_module_name(p, package): p for p in sorted(package.rglob("*.py"))}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the visbricks modules it imports (module level and deferred alike; only the
    ``if TYPE_CHECKING:`` imports of annotations are left out: they never run). ``from pkg
    import name`` where ``name`` is a sub-module counts as an import of that sub-module (and of
    ``pkg``, whose ``__init__`` runs first)."""
    files = _module_files(package)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        typing_only = {
            id(child)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
            for stmt in node.body
            for child in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = _from_target(node, own_package)
                targets = [target]
                targets += [
                    f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in files
                ]
            for target in targets:
                # The deepest module of the package that the dotted name reaches.
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name and target.split(".")[0] == "visbricks":
                    graph[name].add(target)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle_between_modules_deferred_imports_included():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_metrics_never_import_the_engine():
    graph = import_graph()
    bad = [
        f"{m} imports {t}"
        for m, targets in graph.items()
        if m.startswith("visbricks.metrics")
        for t in targets
        if t.startswith("visbricks.engine")
    ]
    assert not bad, bad


def test_a_deferred_cycle_is_caught(tmp_path):
    root = _fake_package(
        tmp_path,
        {
            "deploy/a.py": "def f():\n    from .b import g\n",
            "deploy/b.py": "def g():\n    from .a import f\n",
            "deploy/c.py": "from .a import f\n",
        },
    )
    assert import_cycles(import_graph(root)) == [["visbricks.deploy.a", "visbricks.deploy.b"]]
