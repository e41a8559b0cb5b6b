"""Every preset from nothing (part 1 of 3): classify/multilabel/locate-shapes, each from an empty
folder through the installed console script: train (tiny) → resume → eval → predict → export
ONNX → quantize → bench; and the two classification presets on two processes (devices=2)."""

from __future__ import annotations

import pytest
from readme_harness import preset_from_nothing, synthetic_presets, train_on_two_devices

pytestmark = pytest.mark.cost(63)  # seconds here: scheduled early (conftest.py)

PRESETS = ["classify-shapes", "multilabel-shapes", "locate-shapes"]
# The presets of the other two parts: together every shipped preset with data.synth.
OTHERS = ["detect-shapes", "segment-shapes", "depth-driving", "lanes-driving"]


def test_the_three_parts_cover_every_synthetic_preset():
    assert sorted(PRESETS + OTHERS) == synthetic_presets()


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_from_an_empty_folder(preset, tmp_path):
    preset_from_nothing(preset, tmp_path)


@pytest.mark.parametrize("preset", ["classify-shapes", "multilabel-shapes"])
def test_preset_on_two_processes_from_an_empty_folder(preset, tmp_path):
    train_on_two_devices(preset, tmp_path)
