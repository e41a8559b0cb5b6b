"""Every preset from nothing (part 2 of 3): detect-shapes and segment-shapes, each from an empty
folder through the installed console script: train (tiny) → resume → eval → predict → export
ONNX → quantize → bench."""

from __future__ import annotations

import pytest
from readme_harness import preset_from_nothing


@pytest.mark.parametrize("preset", ["detect-shapes", "segment-shapes"])
def test_preset_from_an_empty_folder(preset, tmp_path):
    preset_from_nothing(preset, tmp_path)
