"""``visbricks report``: the offline run report, opened in a real browser (headless Chromium).

Tiny runs of every task are trained once for the module; each report must be self-contained
(every ``src``/``href`` a file inside its folder, no ``http(s)://`` resource, no script) and,
for classify, detect and segment, load in Chromium — driven over the DevTools protocol
(``--remote-debugging-pipe``) — with every image decoded, every link opening and no console
error. The other tasks are checked at the Python level: their error view is written.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from readme_harness import TINY

from visbricks.cli import run_training
from visbricks.config import load_config
from visbricks.deploy.report import write_report

pytestmark = pytest.mark.cost(20)  # seconds here: scheduled early (conftest.py)

# Tiny runs, and the gallery each one's report must show. detect keeps low-score boxes so that
# the error view has false positives and poor localisations to draw, not only missed objects.
RUNS = {
    "classify-shapes": ("top-losses", ()),
    "multilabel-shapes": ("class-0", ()),
    "locate-shapes": ("box-errors", ()),
    "detect-shapes": (
        "box-errors",
        ("eval.score_thresh=0", "eval.conf_thresh=0", "eval.max_detections=6"),
    ),
    "segment-shapes": ("worst-iou", ()),
    "depth-driving": ("worst-abs-rel", ()),
    "lanes-driving": ("lane-errors", ()),
}
IN_BROWSER = ("classify-shapes", "detect-shapes", "segment-shapes")


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """Each preset trained tiny in one empty folder (the presets' relative data paths land
    there) and its report written: preset → index.html."""
    home = tmp_path_factory.mktemp("report-runs")
    cwd = Path.cwd()
    os.chdir(home)
    torch.set_num_threads(1)
    out = {}
    try:
        for preset, (_, extra) in RUNS.items():
            overrides = [*shlex.split(TINY[preset]), "train.plots=false", *extra]
            cfg = load_config(preset, overrides)
            trainer, _ = run_training(cfg)
            out[preset] = write_report(trainer.run_dir).resolve()
    finally:
        os.chdir(cwd)
    yield out
    shutil.rmtree(home, ignore_errors=True)  # ~1.3 GB of runs: not kept until the session ends


class Links(HTMLParser):
    """Every ``src`` / ``href`` of a page, and every ``id``."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.ids: set[str] = set()
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.refs.append((tag, name, value))
            if name == "id":
                self.ids.add(value)


def check_self_contained(index: Path, folder: Path | None = None) -> Links:
    """Every reference is a relative file inside the report folder or an anchor on the page;
    so are those of the pages it links to (the data health page)."""
    html = index.read_text(encoding="utf-8")
    links = Links()
    links.feed(html)
    folder = folder or index.parent.resolve()
    assert "<script" not in html and "@import" not in html and "url(" not in html
    for tag, attr, value in links.refs:
        assert not value.startswith(("http://", "https://", "//", "data:", "file:")), value
        if value.startswith("#"):
            assert value[1:] in links.ids, f"{index}: anchor {value} has no target"
            continue
        target = (index.parent / value.split("#")[0]).resolve()
        assert target.is_file(), f"{index}: <{tag} {attr}={value!r}> names no file"
        assert target.is_relative_to(folder), f"{index}: {value} is outside the report"
        if target.suffix == ".html" and target != index.resolve():
            check_self_contained(target, folder)
    return links


def test_reports_are_self_contained_with_error_views(reports):
    for preset, index in reports.items():
        links = check_self_contained(index)
        gallery = RUNS[preset][0]
        images = [v for t, a, v in links.refs if t == "img" and v.startswith(f"images/{gallery}")]
        records = [v for t, a, v in links.refs if t == "a" and v.startswith(f"records/{gallery}")]
        assert images and len(images) == len(records) <= 24, (preset, len(images))
        assert {f"images/{gallery}-00.png", f"records/{gallery}-00.json"} <= {
            v for _, _, v in links.refs
        }
        record = json.loads((index.parent / records[0]).read_text())
        assert (index.parent / "records" / record["image"]).resolve().is_file()
        assert f'id="{gallery}"' in index.read_text() or f"id='{gallery}'" in index.read_text()
        assert "Metrics (val)" in index.read_text()


def test_detect_report_shows_each_error_kind(reports):
    folder = reports["detect-shapes"].parent
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("records/*.json"))]
    kinds = {p["kind"] for r in records for p in r["predictions"]}
    assert "fp" in kinds and any(r["missed"] for r in records), kinds
    for r in records:  # the counts are the listed predictions and objects
        assert r["missed"] == sum(not t["found"] for t in r["truth"])
        assert r["true_positives"] == sum(p["kind"] == "tp" for p in r["predictions"])
        assert r["poor_localisations"] == sum(p["kind"] == "poor" for p in r["predictions"])
    errors = [r["false_positives"] + r["poor_localisations"] + r["missed"] for r in records]
    assert errors == sorted(errors, reverse=True)  # most errors first


def test_config_difference_and_curves(reports):
    html = reports["classify-shapes"].read_text()
    assert "Differences from the preset classify-shapes" in html
    assert "data.synth.n_train" in html and "img_size" in html  # what the tiny run changed
    assert "curves/loss.png" in html and "curves/metrics.png" in html  # drawn from results.csv
    assert "eval/confusion_matrix.png" in html


def test_report_replaces_its_own_folder_only(reports, tmp_path):
    from visbricks.errors import ConfigError

    index = reports["classify-shapes"]
    run = index.parent.parent
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="mine.*not a visbricks report"):
        write_report(run, out=tmp_path / "mine")  # refused before anything is evaluated
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    cwd = Path.cwd()
    os.chdir(run.parent.parent.parent)  # the presets' data paths are relative to the run's cwd
    try:
        assert write_report(run, limit=2) == index  # a report replaces a report
    finally:
        os.chdir(cwd)
    assert len(list((index.parent / "images").glob("top-losses-*.png"))) == 2
    assert not [p for p in run.iterdir() if p.name.startswith(".report")]  # no temp left


# --------------------------------------------------------------------------- the browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """Chromium over ``--remote-debugging-pipe``: JSON messages ended by NUL on fds 3 and 4."""

    def __init__(self, profile: Path) -> None:
        assert CHROMIUM, "chromium is not installed (apt-get install chromium; .ci/run does)"
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()
        command = (
            f"exec {shlex.quote(CHROMIUM)} --headless --disable-gpu --no-sandbox "
            f"--remote-debugging-pipe --user-data-dir={shlex.quote(str(profile))} "
            f"--no-first-run --window-size=1200,3000 about:blank "
            f"3<&{to_child_r} 4>&{from_child_w}"
        )
        self.proc = subprocess.Popen(
            ["bash", "-c", command],
            pass_fds=(to_child_r, from_child_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []

    def _read(self, timeout: float) -> dict:
        import select

        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._r], [], [], max(left, 0))
            if not ready:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._w, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(30)
            if reply.get("id") == self._id:
                assert "error" not in reply, (method, reply["error"])
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read(timeout))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._r)
        os.close(self._w)


def open_page(url: str, screenshot: Path, profile: Path) -> list[str]:
    """Load ``url``, open every link it has, screenshot it: the problems the browser saw
    (console errors, exceptions, failed loads, undecoded images, links that do not open)."""
    tools = DevTools(profile)
    problems: list[str] = []
    try:
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.send(f"{domain}.enable", session=session)
        tools.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1200, "height": 3000, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        tools.events.clear()
        nav = tools.send("Page.navigate", {"url": url}, session=session)
        if nav.get("errorText"):
            return [f"{url}: {nav['errorText']}"]
        tools.wait_for("Page.loadEventFired")
        images = tools.send(
            "Runtime.evaluate",
            {
                "expression": "Array.from(document.images).map(i => "
                "[i.getAttribute('src'), i.complete, i.naturalWidth])",
                "returnByValue": True,
            },
            session=session,
        )["result"]["value"]
        problems += [f"image not loaded: {s}" for s, done, w in images if not (done and w > 0)]
        links = tools.send(
            "Runtime.evaluate",
            {
                "expression": "Array.from(document.querySelectorAll('a[href]')).map(a => a.href)",
                "returnByValue": True,
            },
            session=session,
        )["result"]["value"]
        shot = tools.send("Page.captureScreenshot", {"format": "png"}, session=session)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        for e in tools.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                problems.append(f"console: {p.get('args')}")
            elif method == "Runtime.exceptionThrown":
                problems.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                problems.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif method == "Network.loadingFailed":
                problems.append(f"load failed: {p.get('errorText')}")
        page = url.split("#")[0]
        for href in sorted({h.split("#")[0] for h in links} - {page}):
            opened = tools.send("Page.navigate", {"url": href}, session=session)
            if opened.get("errorText"):
                problems.append(f"link {href}: {opened['errorText']}")
    finally:
        tools.close()
    return problems


@pytest.mark.parametrize("preset", IN_BROWSER)
def test_report_opens_in_chromium(reports, preset, tmp_path):
    index = reports[preset]
    shot = tmp_path / f"{preset}.png"
    problems = open_page(index.as_uri(), shot, tmp_path / "profile")
    assert not problems, "\n".join(problems)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one


def test_browser_check_catches_a_broken_page(tmp_path):
    page = tmp_path / "index.html"
    (tmp_path / "ok.png").write_bytes((Path(__file__).parent / "../README.md").read_bytes()[:10])
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
        "<img src='missing.png'><img src='ok.png'><a href='gone.json'>x</a>"
        "<script>console.error('boom')</script></body></html>"
    )
    problems = "\n".join(open_page(page.as_uri(), tmp_path / "shot.png", tmp_path / "profile"))
    assert "image not loaded: missing.png" in problems
    assert "image not loaded: ok.png" in problems  # a file that is no image
    assert "gone.json" in problems
    assert "boom" in problems
