"""README.md's "Deploy" section, run as a user types it: every line of its bash block in order
(train, predict images and a clip, bench, export, quantize, compare, predict and eval the
exported files) through the console script, from an empty folder that is also $HOME."""

from __future__ import annotations

from readme_harness import run_bash_block, section_blocks, write_photos, write_video


def test_deploy_block_runs_in_order_from_an_empty_folder(tmp_path_factory):
    home = tmp_path_factory.mktemp("readme-deploy")
    write_photos(home / "photos", tmp_path_factory.mktemp("readme-deploy-scratch"))
    write_video(home / "clip.mp4")
    (block,) = section_blocks("Deploy", "bash")
    done = run_bash_block(block, home)
    weights = home / "runs" / "detect" / "detect-shapes" / "weights"
    for name in ("best.onnx", "best.int8.onnx"):
        assert (weights / name).is_file(), name
    compare = next(r for r in done if r.argv[1] == "bench" and "--compare" in r.argv)
    assert "onnxruntime" in compare.stdout.lower() and "int8" in compare.stdout.lower()
    evals = [r for r in done if r.argv[1] == "eval"]
    assert evals and all("val/mAP50" in r.stdout for r in evals)
