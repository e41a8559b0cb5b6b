"""One way to run a trained network whatever form it takes: our weights (eager PyTorch), an ONNX
file (ONNX Runtime, fp32 or int8 QDQ) or a ``torch.export`` program (``.pt2``, fp32 or pt2e int8).

Every backend is wrapped as an ``nn.Module`` whose ``forward(images)`` returns the same dict the
eager model returns (``{"logits": ...}``, ``{"cls_logits", "box_deltas", "anchors"}``…), so the
task's own ``preprocess``/``postprocess``/``evaluate`` run unchanged on top of it: the same
pre-processing and the same decoding for every backend. The JSON beside an exported file
(written by ``export``/``quantize``) carries the config, the classes and the output keys that
rebuild the task without the original weights.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import load_config
from ..errors import ConfigError, DataError, WeightsError
from .export import check_input, check_outputs, read_sidecar, sidecar_output_names
from .loading import LoadedRun, load_run

BACKENDS = ("eager", "onnxruntime", "pt2")
EXPORTED_SUFFIXES = {".onnx": "onnxruntime", ".pt2": "pt2"}


def backend_for(path: str | Path) -> str:
    """The backend a file runs in, from its suffix: .onnx → onnxruntime, .pt2 → pt2, else eager."""
    return EXPORTED_SUFFIXES.get(Path(path).suffix.lower(), "eager")


def _key(raw: object) -> object:
    """JSON list → the tuple key it was (("disp", 0)); strings stay."""
    return tuple(raw) if isinstance(raw, list) else raw


def _check_size(images: torch.Tensor, shape: list, path: Path) -> None:
    expected = tuple(int(d) for d in shape[1:])
    if tuple(images.shape[1:]) != expected:
        raise DataError(
            f"{path.name} was exported for inputs (batch, {', '.join(map(str, expected))}), got "
            f"{tuple(images.shape)}; re-export at this size (img_size=...)"
        )


class OnnxRuntimeModel(nn.Module):
    """An ONNX file run by ONNX Runtime, returning the eager model's output dict."""

    is_runtime = True  # not an eager network: benchmark neither fuses nor counts FLOPs on it

    def __init__(
        self, path: str | Path, info: dict, device: str | torch.device = "cpu", threads: int = 0
    ) -> None:
        super().__init__()
        try:
            import onnxruntime
        except ImportError as e:
            raise ConfigError("running .onnx files needs: pip install 'visbricks[deploy]'") from e
        self.path = Path(path)
        self.info = info
        self.keys = [_key(k) for k in info["output_keys"]]
        self.input_shape = info["input"]["shape"]
        options = onnxruntime.SessionOptions()
        # Same thread count as PyTorch so a side-by-side comparison is fair.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if (
            torch.device(device).type == "cuda"
            and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        ):
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path), options, providers=providers
            )
        except Exception as e:  # ORT's errors share no base class but Exception
            # A truncated or foreign file fails inside ONNX Runtime's parser: one line naming it.
            raise WeightsError(
                f"{self.path}: not a loadable ONNX model ({_first_line(e)}); truncated or not "
                f"an export? export it again (visbricks export)"
            ) from None
        self.provider = self.session.get_providers()[0]
        got = [o.name for o in self.session.get_outputs()]
        check_outputs(self.path, info, got, got != sidecar_output_names(info))
        check_input(self.path, info, self.session.get_inputs()[0].shape)
        self.num_params = int(info.get("params", 0))

    def forward(self, images: torch.Tensor) -> dict:
        _check_size(images, self.input_shape, self.path)
        array = images.detach().float().cpu().numpy()
        outputs = self.session.run(None, {"images": np.ascontiguousarray(array)})
        pairs = zip(self.keys, outputs, strict=True)
        return {k: torch.from_numpy(o).to(images.device) for k, o in pairs}


class ProgramModel(nn.Module):
    """A ``torch.export`` program (``.pt2``; a pt2e int8 one too), returning the output dict."""

    is_runtime = True

    def __init__(self, path: str | Path, info: dict, compile: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.info = info
        self.keys = [_key(k) for k in info["output_keys"]]
        self.input_shape = info["input"]["shape"]
        if info.get("quantized", {}).get("backend") == "torch":
            _register_quantized_ops()
        program = _load_program(self.path)
        # The graph's output names (strings in this torch; OutputSpecs in some older ones).
        outputs = [
            o if isinstance(o, str) else str(getattr(getattr(o, "arg", None), "name", "?"))
            for o in program.graph_signature.user_outputs
        ]
        check_outputs(self.path, info, outputs, len(outputs) != len(self.keys))
        self.program = program.module()
        # pt2e int8 is a reference graph (quantize → fp32 op → dequantize): only inductor turns
        # it into int8 kernels, so benchmarks compile it; predictions need not.
        self.runner = torch.compile(self.program) if compile else self.program
        self.num_params = int(info.get("params", 0))

    def train(self, mode: bool = True) -> ProgramModel:
        # An exported program has no train mode (torch refuses the call); it is always eval.
        self.training = mode
        return self

    def forward(self, images: torch.Tensor) -> dict:
        _check_size(images, self.input_shape, self.path)
        outputs = self.runner(images)
        return dict(zip(self.keys, outputs, strict=True))


def _load_program(path: Path) -> torch.export.ExportedProgram:
    """``torch.export.load`` of a user's file, or one WeightsError line naming it."""

    def refuse(why: str) -> WeightsError:
        return WeightsError(
            f"{path}: not a torch.export program ({why}); truncated or not an export? export it "
            f"again (visbricks export --format pt2)"
        )

    # A .pt2 is a zip archive: anything else (random bytes, a cut-short copy without its central
    # directory) is refused before torch, which would log its own traceback on the way.
    if not zipfile.is_zipfile(path):
        raise refuse("not a zip archive")
    # torch logs the real reason as a warning with its traceback and raises a generic "see the
    # warnings above": the record is kept here for the one line, not shown.
    logger = logging.getLogger("torch.export")
    handler = _Keep()
    saved = logger.handlers, logger.propagate  # torch gives this logger its own stderr handler
    logger.handlers, logger.propagate = [handler], False
    try:
        return torch.export.load(str(path))
    except Exception as e:  # zipfile, pickle and torch deserialiser errors alike
        causes = [r.exc_info[1] for r in handler.records if r.exc_info and r.exc_info[1]]
        if causes:
            raise refuse(_first_line(causes[-1])) from None
        if "warnings above" in str(e):  # a zip archive, but no exported program in it
            raise refuse("a zip archive without an exported program") from None
        raise refuse(_first_line(e)) from None
    finally:
        logger.handlers, logger.propagate = saved


class _Keep(logging.Handler):
    """Keeps log records instead of printing them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _register_quantized_ops() -> None:
    try:  # registers the quantized_decomposed ops a pt2e program refers to
        import torchao.quantization.pt2e  # noqa: F401
    except ImportError as e:
        raise ConfigError("an int8 .pt2 from quantize needs: pip install torchao") from e


def load_exported(
    path: str | Path,
    backend: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    device: str | torch.device = "cpu",
    compile: bool = False,
) -> LoadedRun:
    """A LoadedRun whose ``model`` runs ``path`` (.onnx / .pt2) in its runtime."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no exported model at {path}")
    backend = backend or backend_for(path)
    info = read_sidecar(path)
    config = dict(info["config"])
    config["resume"] = None
    config.setdefault("data", {})["classes"] = list(info["classes"])
    cfg = load_config(config, overrides)
    cfg["model"]["pretrained"] = None
    from ..tasks import build_task

    task = build_task(cfg)
    if backend == "onnxruntime":
        model: nn.Module = OnnxRuntimeModel(path, info, device)
    elif backend == "pt2":
        model = ProgramModel(path, info, compile=compile).to(device)
    else:
        raise ConfigError(f"--backend {backend!r} cannot run {path.name}: use onnxruntime or pt2")
    return LoadedRun(cfg, task, model.eval(), list(info["classes"]), path, info)


def load_any(
    path: str | Path,
    backend: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    device: str | torch.device = "cpu",
    compile: bool = False,
) -> LoadedRun:
    """Weights, a run folder, an .onnx or a .pt2 → a LoadedRun for predict/eval/bench.

    The file type picks the backend; ``backend`` forces one. Forcing ``onnxruntime``/``pt2`` on
    our weights exports them first (verified against eager) into a temporary folder.
    """
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    kind = backend_for(path)
    if kind != "eager":
        if backend == "eager":
            raise ConfigError(
                f"{Path(path).name} is an exported file: it runs in {kind}, not eager PyTorch "
                f"(give the weights it came from)"
            )
        return load_exported(path, backend, overrides, device, compile)
    run = load_run(path, overrides, device)
    if backend in (None, "eager"):
        return run
    from .export import export

    # The export lives as long as the process: bench re-opens it on another device. A folder per
    # call left in /tmp filled CI's disk, so it goes when the process ends.
    folder = Path(tempfile.mkdtemp(prefix="visbricks-export-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    out = folder / f"model.{'onnx' if backend == 'onnxruntime' else 'pt2'}"
    export(run, out, "onnx" if backend == "onnxruntime" else "pt2")
    exported = load_exported(out, backend, overrides, device, compile)
    exported.source = run.weights
    return exported


def describe(run: LoadedRun) -> str:
    """What predictions ran in: eager PyTorch, onnxruntime (its provider), fp32 or int8."""
    model = run.model
    if isinstance(model, OnnxRuntimeModel):
        text = f"onnxruntime ({model.provider})"
    elif isinstance(model, ProgramModel):
        text = "torch.export program" + (" (compiled)" if model.runner is not model.program else "")
    else:
        return "eager PyTorch"
    quant = run.info.get("quantized")
    return f"{text}, int8 ({quant['backend']})" if quant else f"{text}, fp32"
