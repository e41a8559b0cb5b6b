"""Imports run one way (DESIGN.md 9): a module never imports from a layer above its own.

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
    "ops": 1,
    "models": 2,
    "data": 2,
    "engine": 3,
    "metrics": 3,
    "tasks": 4,
    "deploy": 5,
    "cli": 6,
    "__init__": 7,
    "__main__": 7,
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
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
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
