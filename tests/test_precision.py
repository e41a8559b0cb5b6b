"""Precision, layout and worker choices (engine/precision.py) and the bounded decode cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visbricks.config import load_config
from visbricks.data.io import DecodeCache, cache_budget
from visbricks.engine import precision
from visbricks.engine.precision import (
    resolve_amp,
    resolve_channels_last,
    resolve_workers,
    to_float32,
)
from visbricks.errors import ConfigError

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_native_bf16_detection_agrees_with_torch_cpu_probes():
    expected = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    assert precision.cpu_has_native_bf16() == expected


@pytest.mark.parametrize("native", [True, False])
def test_auto_picks_bf16_only_on_cpus_with_native_bf16(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    p = resolve_amp("auto", CPU)
    assert p.mode == ("bf16" if native else "fp32")
    assert p.dtype == (torch.bfloat16 if native else None)
    assert not p.needs_scaler  # bf16 keeps fp32's exponent range
    assert resolve_channels_last("auto", CPU, p) is native
    assert resolve_channels_last(None, CPU, p) is native  # old configs: null meant auto


def test_cuda_auto_is_fp16_with_a_scaler_and_forced_modes_win(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    p = resolve_amp("auto", CUDA)
    assert (p.mode, p.needs_scaler, p.dtype) == ("fp16", True, torch.float16)
    assert resolve_channels_last("auto", CUDA, p) is True
    assert resolve_amp(True, CPU).mode == "bf16"  # asked for: emulated where not native
    assert resolve_amp(False, CUDA).mode == "fp32"
    assert resolve_amp("FP32", CPU).mode == "fp32"
    assert resolve_amp("fp16", CPU).mode == "fp16"
    assert resolve_amp("bf16", CPU).mode == "bf16"
    assert resolve_channels_last(False, CUDA, p) is False
    assert resolve_channels_last(True, CPU, resolve_amp(False, CPU)) is True


def test_bad_choices_name_their_key():
    with pytest.raises(ConfigError, match="train.amp"):
        resolve_amp("half", CPU)
    with pytest.raises(ConfigError, match="model.channels_last"):
        resolve_channels_last("sometimes", CPU, resolve_amp(False, CPU))
    with pytest.raises(ConfigError, match="workers"):
        resolve_workers(-1, CPU, cached=True)
    with pytest.raises(ConfigError, match="workers"):
        resolve_workers("many", CPU, cached=True)


def test_config_takes_auto_or_the_explicit_value_it_stands_for():
    cfg = load_config(
        "classify-shapes", ["workers=3", "train.amp=false", "model.channels_last=true"]
    )
    assert (cfg.workers, cfg.train.amp, cfg.model.channels_last) == (3, False, True)
    default = load_config("detect-shapes")
    assert (default.workers, default.train.amp, default.model.channels_last) == ("auto",) * 3
    assert default.train.compile is False
    with pytest.raises(ConfigError, match="train.amp"):
        load_config("classify-shapes", ["train.amp=[1]"])


def test_worker_rule():
    # Augmentation overlaps the step in a worker even on 2 cores (cached decodes or not).
    assert resolve_workers("auto", CPU, cached=True, cores=2) == 1
    assert resolve_workers("auto", CPU, cached=False, cores=2) == 1
    assert resolve_workers("auto", CPU, cached=True, cores=32) == 4
    assert resolve_workers("auto", CPU, cached=True, cores=1) == 0
    assert resolve_workers("auto", CUDA, cached=True, cores=16) == 8
    assert resolve_workers("auto", CUDA, cached=False, cores=2) == 1
    # Deterministic runs restart workers each epoch: the main process keeps its decode cache.
    assert resolve_workers("auto", CPU, cached=True, cores=16, deterministic=True) == 0
    assert resolve_workers(5, CPU, cached=True, deterministic=True) == 5


def test_to_float32_casts_nested_low_precision_tensors_only():
    out = to_float32(
        {
            "a": torch.ones(2, dtype=torch.bfloat16),
            ("disp", 0): [torch.ones(1, dtype=torch.float16), torch.ones(1, dtype=torch.int64)],
            "d": torch.ones(1, dtype=torch.float64),
            "n": 3,
        }
    )
    assert out["a"].dtype == torch.float32
    assert [t.dtype for t in out[("disp", 0)]] == [torch.float32, torch.int64]
    assert out["d"].dtype == torch.float64 and out["n"] == 3


def test_decode_cache_stays_within_its_byte_budget():
    image = np.zeros((10, 10, 3), np.uint8)  # 300 bytes
    cache = DecodeCache(1000)
    loads = []

    def load(i):
        loads.append(i)
        return image.copy()

    for _ in range(2):
        for i in range(5):
            cache.get(i, lambda i=i: load(i))
    assert len(cache) == 3 and cache.nbytes == 900 <= 1000
    # The first three stay; the two that did not fit are decoded again on every visit.
    assert loads == [0, 1, 2, 3, 4, 3, 4]
    assert (cache.hits, cache.misses) == (3, 7)
    off = DecodeCache(False)
    off.get(0, lambda: image)
    assert len(off) == 0 and not off.enabled
    unbounded = DecodeCache(True)
    for i in range(50):
        unbounded.get(i, lambda: image.copy())
    assert len(unbounded) == 50
    assert cache_budget(False, 10) is False
    assert cache_budget(True, 2) == 2 * 2**20
    assert cache_budget(True, None) is True


def test_decode_cache_budget_is_split_between_loader_workers():
    # Each worker holds its own copy of the cache: together they stay within the budget.
    class Items(torch.utils.data.Dataset):
        def __init__(self):
            self.cache = DecodeCache(2000)

        def __len__(self):
            return 20

        def __getitem__(self, i):
            self.cache.get(i, lambda: np.zeros(300, np.uint8))
            return torch.tensor([len(self.cache), self.cache.nbytes])

    loader = torch.utils.data.DataLoader(Items(), batch_size=1, num_workers=2)
    stats = torch.cat(list(loader))
    assert stats[:, 1].max() <= 1000  # 2000 bytes / 2 workers
    assert stats[:, 0].max() == 3


def test_cpu_bf16_never_runs_nchw():
    # bf16 autocast in NCHW on a CPU gave a ResNet-18 wrong BatchNorm statistics here (eval
    # accuracy 0.0 where train-mode was 1.0): the combination is overridden, with a warning.
    bf16 = resolve_amp("bf16", CPU)
    with pytest.warns(UserWarning, match="model.channels_last=false"):
        assert resolve_channels_last(False, CPU, bf16) is True
    assert resolve_channels_last(False, CPU, resolve_amp("fp32", CPU)) is False
