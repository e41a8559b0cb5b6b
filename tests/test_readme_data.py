"""README.md's "Train on your own data" and "Python" sections, run as a user types them: the
bash block against datasets written in each format's own layout under $HOME (VOC, COCO, an
Ultralytics data.yaml, ImageFolder, CSV, label masks, TuSimple, CULane, sequences), the data-YAML
example as a file, and the Python example as a script."""

from __future__ import annotations

import pytest
from readme_harness import (
    REPO,
    empty_dir,
    run_bash_block,
    run_python_block,
    section_blocks,
    write_own_data,
    write_yaml_example,
)

pytestmark = pytest.mark.cost(33)  # seconds here: scheduled early (conftest.py)


def test_own_data_block_trains_on_every_format(tmp_path):
    home = empty_dir(tmp_path / "readme-data")
    write_own_data(home, empty_dir(tmp_path / "readme-data-scratch"))
    (block,) = section_blocks("Train on your own data", "bash")
    done = run_bash_block(block, home)
    trained = [r for r in done if r.argv[1] == "train"]
    runs = sorted(p.parent.parent.relative_to(home / "runs").as_posix()
                  for p in (home / "runs").glob("*/*/weights/best.safetensors"))
    assert len(runs) == len(trained), runs
    assert (home / "voc-yolo" / "data.yaml").is_file() and (home / "cleaned").is_dir()


def test_data_yaml_example_is_a_dataset_that_loads(tmp_path):
    from visbricks.data.check import check_dataset
    from visbricks.data.formats import read_dataset

    home = empty_dir(tmp_path / "readme-yaml")
    (block,) = section_blocks("Train on your own data", "yaml")
    path = write_yaml_example(block, home, empty_dir(tmp_path / "readme-yaml-scratch"))
    report = check_dataset(path)  # what `visbricks data check` prints
    assert "no problems found" in report.format(), report.format()
    root = path.parent / "../raccoon"
    for split in ("train", "val"):
        ds = read_dataset(path, split=split)
        listed = (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        assert ds.classes == ["raccoon"] and len(ds.records) == len(listed) > 0


def test_python_example_runs_as_a_script(tmp_path):
    import torch
    import torchvision

    (block,) = section_blocks("Python", "python")
    # The user's weights.pth: a torchvision ResNet-34 state dict (names differ from ours, shapes
    # agree: what strategy="shape" is for).
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "weights.pth")
    out = run_python_block(block, tmp_path)
    assert "top1" in out or "accuracy" in out.lower(), out[-2000:]
    assert (tmp_path / "runs" / "classify" / "classify-shapes" / "weights" / "last.ckpt").is_file()
    assert REPO.is_dir()
