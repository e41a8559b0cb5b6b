"""``export``: the file runs in its own runtime, matches eager PyTorch at another batch size, and
is only written when it does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import train_tiny_run
from visbricks.cli import main
from visbricks.deploy.export import ExportError, TensorOutputs, compare_outputs
from visbricks.deploy.loading import load_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("export"))


def test_onnx_runs_in_onnxruntime_and_matches_eager(run_dir, capsys):
    import onnxruntime

    out = run_dir / "model.onnx"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    assert "checked against eager PyTorch" in capsys.readouterr().out
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["input"]["shape"] == ["batch", 3, 32, 32] and info["outputs"] == ["logits"]
    assert info["classes"] == ["blue", "red"]  # write_colour_folder's classes

    run = load_run(run_dir)
    images = torch.randn(5, 3, 32, 32)  # a batch size the export never saw
    with torch.no_grad():
        expected = run.model(images)["logits"].numpy()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": images.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert not list(run_dir.glob(".tmp-*"))  # no temporary file left behind


def test_pt2_loads_with_torch_export_and_matches_eager(run_dir):
    out = run_dir / "weights" / "best.pt2"
    assert main(["export", str(run_dir), "--format", "pt2"]) == 0  # default: next to weights
    module = torch.export.load(str(out)).module()
    run = load_run(run_dir)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(module(images)[0], run.model(images)["logits"])


def test_dict_outputs_get_stable_names_and_a_mismatch_is_refused():
    class Two(torch.nn.Module):
        def forward(self, x):
            return {("disp", 1): x[:, :1] * 2, ("disp", 0): x[:, :1]}

    keys = sorted(Two()(torch.zeros(1, 3, 4, 4)), key=str)
    out = TensorOutputs(Two(), keys)(torch.ones(1, 3, 4, 4))
    assert [float(t.mean()) for t in out] == [1.0, 2.0]  # ("disp", 0) first
    names = ["disp_0", "disp_1"]
    ref = [np.zeros((2, 3)), np.ones((2, 3))]
    assert compare_outputs(names, ref, [r + 1e-6 for r in ref], 1e-4, 0) == pytest.approx(
        {"disp_0": 1e-6, "disp_1": 1e-6}, abs=1e-7  # compared in float32
    )
    with pytest.raises(ExportError, match="output disp_1 differs .* by up to 0.5"):
        compare_outputs(names, ref, [ref[0], ref[1] + 0.5], 1e-4, 1e-3)
    with pytest.raises(ExportError, match=r"output disp_0: exported shape \(3, 2\)"):
        compare_outputs(names, ref, [np.zeros((3, 2)), ref[1]], 1e-4, 1e-3)


def test_an_exporter_failure_is_one_error_and_writes_nothing(run_dir, monkeypatch, tmp_path):
    from visbricks.deploy.export import export

    def fail(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::something\nlong torch details")

    monkeypatch.setattr(torch.export, "export", fail)
    out = tmp_path / "model.pt2"
    with pytest.raises(ExportError, match="could not be exported to pt2: unsupported operator"):
        export(load_run(run_dir), out, "pt2")
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))
