"""The files of the run report (``report.py``): gallery PNGs and JSON records, and the page.

The page is plain HTML with its style inline: no script, no remote resource, every ``src`` and
``href`` a relative path inside the report folder (the browser test checks each one loads).
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from ..data.io import write_image
from ..files import atomic_write_text
from ..metrics.base import EvalResult, fmt
from .loading import LoadedRun
from .report_views import Gallery

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1180px; padding: 0 16px;
       color: #222; }
h1 { margin: 18px 0 4px; } h2 { border-bottom: 1px solid #ccc; margin-top: 28px; }
nav a { margin-right: 12px; }
table { border-collapse: collapse; margin: 8px 0; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; border: 1px solid #ddd; padding: 4px; max-width: 400px; }
figure img { display: block; max-width: 100%; image-rendering: pixelated; }
figcaption { font-size: 12px; }
.note { color: #666; } .warn { color: #a00; }
img.plot { max-width: 100%; border: 1px solid #eee; margin: 4px 0; }
"""


def to_json(value: Any) -> Any:
    """``json.dumps`` default: numpy scalars and arrays, paths as plain values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (nested) as None: JSON has no such numbers."""
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    if isinstance(value, np.ndarray):
        return finite(value.tolist())
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def write_galleries(galleries: list[Gallery], out: Path) -> list[dict[str, Any]]:
    """Each item's PNG (``images/``) and record (``records/``), drawn now; the galleries as
    the page lists them, with relative paths."""
    listed = []
    for g in galleries:
        items = []
        for n, item in enumerate(g.items):
            stem = f"{g.key}-{n:02d}"
            image, record = f"images/{stem}.png", f"records/{stem}.json"
            write_image(out / image, item.draw())
            doc = {"title": item.title, "image": f"../{image}", **item.record}
            text = json.dumps(finite(doc), indent=1, default=to_json, allow_nan=False)
            atomic_write_text(out / record, text)
            items.append({"title": item.title, "image": image, "record": record})
        listed.append({"key": g.key, "title": g.title, "note": g.note, "items": items})
    return listed


def _e(text: Any) -> str:
    return escape(str(text), quote=True)


def _metrics(result: EvalResult) -> str:
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td class='num'>{_e(fmt(v))}</td></tr>"
        for k, v in result.metrics.items()
    )
    table = f"<pre>{_e(result.table)}</pre>" if result.table else ""
    return f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>{table}"


def _gallery(g: dict[str, Any]) -> str:
    if not g["items"]:
        return (
            f"<h3 id='{_e(g['key'])}'>{_e(g['title'])}</h3><p class='note'>{_e(g['note'])}</p>"
            "<p class='note'>No errors of this kind on this split.</p>"
        )
    figures = "".join(
        f"<figure><a href='{_e(it['image'])}'><img src='{_e(it['image'])}' "
        f"alt='{_e(it['title'])}'></a><figcaption>{_e(it['title'])} · "
        f"<a href='{_e(it['record'])}'>record</a></figcaption></figure>"
        for it in g["items"]
    )
    return (
        f"<h3 id='{_e(g['key'])}'>{_e(g['title'])}</h3><p class='note'>{_e(g['note'])}</p>"
        f"<div class='grid'>{figures}</div>"
    )


def _images(paths: list[str], empty: str) -> str:
    shown = [p for p in paths if p.endswith(".png")]
    files = [p for p in paths if not p.endswith(".png")]
    html = "".join(f"<img class='plot' src='{_e(p)}' alt='{_e(p)}'>" for p in shown)
    if files:
        html += "<p>Files: " + ", ".join(f"<a href='{_e(p)}'>{_e(p)}</a>" for p in files) + "</p>"
    return html or f"<p class='note'>{_e(empty)}</p>"


def _config(c: dict[str, Any]) -> str:
    if c["diff"]:
        rows = "".join(
            f"<tr><td>{_e(k)}</td><td>{_e(a)}</td><td>{_e(b)}</td></tr>" for k, a, b in c["diff"]
        )
        head = f"<tr><th>key</th><th>preset {_e(c['preset'])}</th><th>this run</th></tr>"
        diff = f"<p>Differences from the preset {_e(c['preset'])}:</p><table>{head}{rows}</table>"
    elif c["preset"] and not c["note"]:
        diff = f"<p>Same as the preset {_e(c['preset'])}.</p>"
    else:
        diff = ""
    note = f"<p class='note'>{_e(c['note'])}</p>" if c["note"] else ""
    return (
        f"{diff}{note}<details><summary>Resolved config (config.yaml)</summary>"
        f"<pre>{_e(c['text'])}</pre></details>"
    )


def _health(h: dict[str, Any]) -> str:
    if "href" in h:
        return (
            f"<p><a href='{_e(h['href'])}'>Data health report</a> (class balance, "
            "duplicates, train/val leakage).</p>"
        )
    css = "warn" if "failed" in h["note"] else "note"
    return f"<p class='{css}'>{_e(h['note'])}</p>"


def page(
    run: LoadedRun,
    run_dir: Path | None,
    split: str,
    count: int,
    result: EvalResult,
    sections: dict[str, Any],
) -> str:
    """index.html of the report."""
    name = run_dir.name if run_dir is not None else run.weights.name
    task = run.cfg.task
    galleries = "".join(_gallery(g) for g in sections["galleries"]) or (
        f"<p class='note'>The {_e(task)} task has no error view.</p>"
    )
    nav = "".join(
        f"<a href='#{k}'>{t}</a>"
        for k, t in (
            ("metrics", "Metrics"),
            ("errors", "Errors"),
            ("curves", "Curves"),
            ("figures", "Figures"),
            ("config", "Config"),
            ("health", "Data health"),
        )
    )
    body = [
        f"<h1>{_e(name)}</h1>",
        f"<p>{_e(task)} · {_e(split)} split, {count} samples · weights {_e(run.weights)}</p>",
        f"<nav>{nav}</nav>",
        f"<h2 id='metrics'>Metrics ({_e(split)})</h2>{_metrics(result)}",
        f"<h2 id='errors'>Errors</h2>{galleries}",
        "<h2 id='curves'>Curves</h2>"
        + _images(sections["curves"], "No results.csv beside these weights."),
        "<h2 id='figures'>Evaluation figures</h2>"
        + _images(sections["figures"], "The evaluator draws no figures."),
        f"<h2 id='config'>Config</h2>{_config(sections['config'])}",
        f"<h2 id='health'>Data health</h2>{_health(sections['health'])}",
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        '<meta name="generator" content="visbricks report">'
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(name)}: visbricks report</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
