"""``visbricks report RUN``: an offline run report, one static folder opened by double-click.

``<run>/report/index.html`` (docs/architecture.md §3) shows the evaluator's numbers, table and
figures on a split, the loss and metric curves (results.csv), the resolved config and how it
differs from the preset it came from, a link to the data health page, and the task's error
views (``report_views.py``, ``report_boxes.py``, ``report_dense.py``): the worst samples drawn,
each linked to its PNG and its prediction record, a small JSON (``report_write.py`` writes the
files). Every link is relative and inside the folder: no network, no script, no remote font.
The folder is built beside its place and swapped in whole, so a reader never finds half a report.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from ..config import CONFIG_DIR, load_config
from ..engine.plots import plot_history
from ..engine.precision import resolve_workers, select_device
from ..engine.rundir import check_output, run_dir_of
from ..errors import ConfigError
from ..files import atomic_write_text
from ..metrics.base import EvalResult
from ..tasks.classify import ClassifyTask, MultiLabelTask
from ..tasks.depth import DepthTask
from ..tasks.detect import DetectTask
from ..tasks.lanes import LanesTask
from ..tasks.locate import LocateTask
from ..tasks.segment import SegmentTask
from .loading import LoadedRun, load_run
from .report_boxes import DetectView, LocateView
from .report_dense import DepthView, LanesView, SegmentView
from .report_views import LIMIT, ClassifyView, ErrorView, Gallery, MultiLabelView
from .report_write import page, write_galleries

# The first matching task class picks the view (a subclass before its parent): a user's task
# built on a shipped one gets that one's view; any other task gets the report without one.
VIEWS: list[tuple[type, type[ErrorView]]] = [
    (MultiLabelTask, MultiLabelView),
    (ClassifyTask, ClassifyView),
    (DetectTask, DetectView),
    (LocateTask, LocateView),
    (SegmentTask, SegmentView),
    (DepthTask, DepthView),
    (LanesTask, LanesView),
]


def view_for(task: Any, dataset: Any, limit: int = LIMIT) -> ErrorView | None:
    """The error view of ``task`` over ``dataset``, or None for a task without one."""
    for cls, view in VIEWS:
        if isinstance(task, cls):
            return view(task, dataset, limit)
    return None


def default_out(run: LoadedRun, split: str) -> Path:
    """``<run>/report`` (``report-<split>`` for another split); beside weights that belong to no
    run folder, ``<weights stem>-report``."""
    name = "report" if split == "val" else f"report-{split}"
    run_dir = run_dir_of(run.origin)
    if run_dir is not None:
        return run_dir / name
    return run.origin.parent / f"{run.origin.stem}-{name}"


def write_report(
    source: str | Path,
    split: str = "val",
    out: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    run: LoadedRun | None = None,
    limit: int = LIMIT,
    on_result: Callable[[EvalResult, int], None] | None = None,
) -> Path:
    """Evaluate ``source`` (a run folder or weights; or the already loaded ``run``) on
    ``split`` and write the report folder; returns its ``index.html``.

    ``out`` defaults to :func:`default_out`. An existing ``out`` is replaced only when it is an
    earlier report (its page says so); anything else there is refused, never overwritten.
    ``on_result(result, images)`` receives the evaluation as soon as it is computed: ``eval``
    saves its metrics from this one pass instead of evaluating the split a second time.
    """
    if run is None:
        overrides = list(overrides)
        if split != "val":  # the split to report on is read where the val split would be
            overrides.append(f"data.val={split}")
        run = load_run(source, overrides)
    run_dir = run_dir_of(run.origin)
    if out is None:
        out = default_out(run, split)
    else:
        out = check_output(out, [run.origin], "report --out")
    out = Path(out)
    _check_replaceable(out)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        result, galleries, count, health = _evaluate(run, split, tmp, limit)
        if on_result is not None:
            on_result(result, count)
        sections = {
            "figures": [p.relative_to(tmp).as_posix() for p in result.plots(tmp / "eval")],
            "curves": _curves(run_dir, tmp),
            "galleries": write_galleries(galleries, tmp),
            "config": _config(run, run_dir),
            "health": health,
        }
        text = page(run, run_dir, split, count, result, sections)
        atomic_write_text(tmp / "index.html", text)
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"


def _check_replaceable(out: Path) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    index = out / "index.html"
    ours = index.is_file() and 'name="generator" content="visbricks report"' in index.read_text(
        encoding="utf-8", errors="replace"
    )
    if not ours:
        raise ConfigError(
            f"report --out {out}: exists and is not a visbricks report; choose a new folder "
            "(a report only replaces an earlier report)"
        )


def _swap(tmp: Path, out: Path) -> None:
    """Put the finished folder at ``out``; an earlier report there goes only once it is done."""
    old = out.parent / f".{out.name}.old{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def _evaluate(
    run: LoadedRun, split: str, out: Path, limit: int
) -> tuple[EvalResult, list[Gallery], int, dict]:
    """One pass over the split: the evaluator's result, the error view's galleries, the number
    of samples and the data health link (written into ``out``)."""
    from torch.utils.data import DataLoader

    cfg, task = run.cfg, run.task
    device = select_device(cfg.device)
    data = task.build_data()
    loader = DataLoader(
        data.val,
        batch_size=cfg.batch_size,
        collate_fn=data.collate_fn,
        num_workers=resolve_workers(cfg.workers, device, bool(cfg.data.cache)),
    )
    view = view_for(task, data.val, limit)
    evaluator = task.evaluator(data.val, split)
    run.model.to(device).eval()
    for batch in loader:
        batch = task.to_device(batch, device)
        if view is not None:
            view.step(run.model, batch, evaluator)
        else:
            task.eval_step(run.model, batch, evaluator)
    result = evaluator.compute()
    galleries = view.galleries(result) if view is not None else []
    return result, galleries, len(data.val), health_link(data, out)


# Images per split the report's health page decodes (a seeded sample beyond): a run's report must
# stay cheap on a 100k-image set; `visbricks data check --html` reads them all.
HEALTH_SAMPLE = 2000


def health_link(data: Any, out: Path) -> dict:
    """The data health page (``data/health.py``), written into
    ``out/health``: ``{"href": ...}``, or ``{"note": ...}`` saying why there is none. Its
    failure is shown in the report, never raised: the report is about the model."""
    try:
        from ..data.health import write_health_report

        written = write_health_report(
            data.train, data.val, list(data.classes), out / "health", HEALTH_SAMPLE
        )
        return {"href": Path(written).resolve().relative_to(out.resolve()).as_posix()}
    except Exception as e:  # noqa: BLE001  (any failure becomes the visible note)
        first = (str(e).splitlines() or [""])[0]
        return {"note": f"data health report failed: {type(e).__name__}: {first}"}


# --------------------------------------------------------------------------- curves and config
def _curves(run_dir: Path | None, out: Path) -> list[str]:
    """loss.png and metrics.png: the run's own plots when it drew them, else drawn here from
    results.csv; relative paths (none without a run folder or results.csv)."""
    if run_dir is None or not (run_dir / "results.csv").is_file():
        return []
    names = ("loss.png", "metrics.png")
    folder = out / "curves"
    folder.mkdir()
    if all((run_dir / "plots" / n).is_file() for n in names):
        for n in names:
            shutil.copyfile(run_dir / "plots" / n, folder / n)
    else:
        plot_history(read_results(run_dir / "results.csv"), folder)
    return [f"curves/{n}" for n in names if (folder / n).is_file()]


def read_results(path: Path) -> list[dict[str, Any]]:
    """results.csv rows with numbers as floats (text such as the amp column kept)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            parsed: dict[str, Any] = {}
            for k, v in row.items():
                try:
                    parsed[k] = float(v)
                except (TypeError, ValueError):
                    parsed[k] = v
            rows.append(parsed)
    return rows


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix.rstrip("."): tree} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _config(run: LoadedRun, run_dir: Path | None) -> dict:
    """The resolved config (the run's config.yaml, else the weights' own) and its differences
    from the preset named by its ``name`` (else its task's preset)."""
    file = run_dir / "config.yaml" if run_dir is not None else None
    if file is not None and file.is_file():
        text = file.read_text(encoding="utf-8")
        resolved = yaml.safe_load(text) or {}
    else:
        resolved = dict(run.info.get("config") or {})
        text = yaml.safe_dump(resolved, sort_keys=False)
    preset = next(
        (
            n
            for n in (resolved.get("name"), resolved.get("task"))
            if isinstance(n, str) and (CONFIG_DIR / f"{n}.yaml").is_file()
        ),
        None,
    )
    out: dict[str, Any] = {"text": text, "preset": preset, "diff": [], "note": ""}
    if preset is None:
        out["note"] = "no shipped preset of this name or task to compare with"
        return out
    try:
        doc = yaml.safe_load((CONFIG_DIR / f"{preset}.yaml").read_text(encoding="utf-8")) or {}
        doc.setdefault("name", preset)
        base = _flat(load_config(doc).to_dict())  # a dict: $VISBRICKS_OVERRIDES stays out
    except Exception as e:  # noqa: BLE001  (a preset that no longer loads: say so, go on)
        out["note"] = f"preset {preset} could not be loaded: {e}"
        return out
    mine = _flat(resolved)
    missing = object()
    for key in sorted(set(base) | set(mine)):
        a, b = base.get(key, missing), mine.get(key, missing)
        if a != b:
            out["diff"].append((key, _show(a, missing), _show(b, missing)))
    return out


def _show(value: Any, missing: object) -> str:
    return "—" if value is missing else yaml.safe_dump(value, default_flow_style=True).strip()


__all__ = ["default_out", "read_results", "view_for", "write_report"]
