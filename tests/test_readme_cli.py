"""README.md's "Command line" section, run as a user types it: every line of its bash block in
order, through the installed console script, from an empty folder that is also $HOME; plus the
error example and the check that every README command is run by some test."""

from __future__ import annotations

import re
import shutil

import pytest
from readme_harness import (
    README,
    REPO,
    SECTIONS_RUN,
    empty_dir,
    readme_blocks,
    results_rows,
    run,
    run_bash_block,
    section_blocks,
    split_command,
    write_photos,
    write_video,
)

pytestmark = pytest.mark.cost(36)  # seconds here: scheduled early (conftest.py)


def test_command_line_block_runs_in_order_from_an_empty_folder(tmp_path):
    home = empty_dir(tmp_path / "readme-cli")
    scratch = empty_dir(tmp_path / "readme-cli-scratch")
    (block,) = section_blocks("Command line", "bash")
    # What the block's commands name that a user brings: their own YAML (a preset's copy),
    # photos and a clip.
    shutil.copy(REPO / "visbricks" / "configs" / "classify-shapes.yaml", home / "my.yaml")
    write_photos(home / "photos", scratch)
    write_video(home / "drive.mp4")
    done = run_bash_block(block, home)
    assert len(done) == len(block.commands())
    # The resume line continued classify-shapes (epochs 1 and 2 in one folder, no -2 copy).
    assert [r["epoch"] for r in results_rows(home / "runs/classify/classify-shapes")] == ["1", "2"]
    assert not (home / "runs/classify/classify-shapes-2").exists()
    # my.yaml's overrides reached its run.
    assert "backbone: resnet34" in (home / "runs/classify/my/config.yaml").read_text()


def test_error_example_prints_what_the_readme_shows(tmp_path):
    shown = [
        b for b in section_blocks("Command line", "")
        if b.lines and b.lines[0][1].startswith("$ visbricks ")
    ]
    assert shown
    for block in shown:
        lineno, text = block.lines[0]
        ran = run(split_command(text[2:]), tmp_path, overrides="", expect_rc=2,
                  where=f"README.md:{lineno}: {text}")
        for n, expected in block.lines[1:]:
            assert expected in ran.stderr, f"README.md:{n}: {expected!r} not in:\n{ran.stderr}"


_SHELL = re.compile(r"[|;&<>`]|\$\(")


def test_every_readme_command_is_run_by_a_test():
    """A README bash or python block is run by the test SECTIONS_RUN names (its source says so)
    or marked `<!-- readme-test: skip REASON -->`; every line of a bash block is a visbricks
    command the harness runs as written (no pipes or redirections it would not reproduce)."""
    problems = []
    marks = 0
    blocks = readme_blocks()
    fences = {b.start for b in blocks}
    for n, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if "readme-test:" in line and n + 1 not in fences:
            problems.append(f"README.md:{n}: a readme-test mark must be the line before a fence")
    for block in blocks:
        if block.lang not in ("bash", "python"):
            continue
        if block.skip:
            marks += 1
            continue
        test = next((f for s, f in SECTIONS_RUN.items() if block.section.startswith(s)), None)
        if test is None:
            problems.append(
                f"README.md:{block.start}: a ```{block.lang} block under '## {block.section}' "
                "that no test runs: add the section to SECTIONS_RUN (tests/readme_harness.py) "
                "and run it, or mark it <!-- readme-test: skip REASON -->"
            )
            continue
        source = (REPO / "tests" / test).read_text()
        if f'"{block.section.split(":")[0]}' not in source:
            problems.append(f"README.md:{block.start}: {test} does not run '{block.section}'")
        if block.lang == "bash":
            for n, text in block.commands():
                argv = split_command(text)
                if not argv or argv[0] != "visbricks":
                    problems.append(f"README.md:{n}: not a visbricks command: {text.strip()}")
                elif _SHELL.search(text.split(" #")[0]):
                    problems.append(f"README.md:{n}: shell syntax the harness does not run")
    assert marks <= 3, f"{marks} README blocks are marked skip: keep them few"
    assert not problems, "\n".join(problems)
