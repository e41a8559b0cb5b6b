"""Every preset from nothing (part 2 of 3): segment-shapes from an empty folder through the
installed console script: train (tiny) → resume → eval → predict → export ONNX → quantize →
bench.

detect-shapes runs the same chain from an empty folder as the README's deploy block
(tests/test_readme_deploy.py: train, predict images and a clip, bench, export, quantize, bench
--compare, predict and eval from the exported files); running it twice cost ~45 s of the suite.
"""

from __future__ import annotations

import pytest
from readme_harness import preset_from_nothing

pytestmark = pytest.mark.cost(16)  # seconds here: scheduled early (conftest.py)


@pytest.mark.parametrize("preset", ["segment-shapes"])
def test_preset_from_an_empty_folder(preset, tmp_path):
    preset_from_nothing(preset, tmp_path)
