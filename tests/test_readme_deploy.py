"""README.md's "Deploy" section, run as a user types it: every line of its bash block in order
(train, predict images and a clip, bench, export, quantize, compare, predict and eval the
exported files, score eval's results file) through the console script, from an empty folder that
is also $HOME."""

from __future__ import annotations

import re

import pytest
from readme_harness import empty_dir, run_bash_block, section_blocks, write_photos, write_video

pytestmark = pytest.mark.cost(21)  # seconds here: scheduled early (conftest.py)


def test_deploy_block_runs_in_order_from_an_empty_folder(tmp_path):
    home = empty_dir(tmp_path / "readme-deploy")
    write_photos(home / "photos", empty_dir(tmp_path / "readme-deploy-scratch"))
    write_video(home / "clip.mp4")
    (block,) = section_blocks("Deploy", "bash")
    done = run_bash_block(block, home)
    weights = home / "runs" / "detect" / "detect-shapes" / "weights"
    for name in ("best.onnx", "best.int8.onnx"):
        assert (weights / name).is_file(), name
    compare = next(r for r in done if r.argv[1] == "bench" and "--compare" in r.argv)
    assert "onnxruntime" in compare.stdout.lower() and "int8" in compare.stdout.lower()
    evals = [r for r in done if r.argv[1] == "eval" and "--predictions" not in r.argv]
    assert evals and all("val/mAP50" in r.stdout for r in evals)
    # eval's own coco_results.json, scored as a file against the labels: the COCO numbers eval
    # printed for the int8 network (same results, same ground truth).
    (scored,) = [r for r in done if r.argv[1] == "eval" and "--predictions" in r.argv]
    for name in ("AP", "AP50", "AR100"):
        pattern = rf"^\s+val/{name}\s+(\S+)$"
        printed = [re.search(pattern, r.stdout, re.M) for r in (evals[-1], scored)]
        assert all(printed) and printed[0].group(1) == printed[1].group(1), name
