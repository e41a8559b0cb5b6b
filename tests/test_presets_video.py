"""Every preset from nothing (part 3 of 3): depth-driving and lanes-driving, each from an empty
folder through the installed console script: train (tiny) → resume → eval → predict an image
and a clip → export ONNX → quantize → bench."""

from __future__ import annotations

import pytest
from readme_harness import preset_from_nothing

pytestmark = pytest.mark.cost(43)  # seconds here: scheduled early (conftest.py)


@pytest.mark.parametrize("preset", ["depth-driving", "lanes-driving"])
def test_preset_from_an_empty_folder(preset, tmp_path):
    preset_from_nothing(preset, tmp_path)
