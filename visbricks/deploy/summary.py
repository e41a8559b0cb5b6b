"""``visbricks summary``: per-layer output shapes, parameters, FLOPs and receptive field (of the
centre cell of each output map, probed on an ``rf_size`` square image), and the receptive field
and stride of every feature level the backbone hands to the neck/head."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..models.blocks import CONV_TYPES, DeformableConv2d


@dataclass
class LevelInfo:
    stride: int
    channels: int
    receptive_field: int
    clipped: bool  # the field reached the probe image's border: the true value is at least this


def _leafish(model: nn.Module, depth: int) -> list[tuple[str, nn.Module]]:
    return [
        (name, m)
        for name, m in model.named_modules()
        if name
        and (
            name.count(".") + 1 == depth or (name.count(".") + 1 < depth and not list(m.children()))
        )
    ]


def layer_table(
    model: nn.Module, images: torch.Tensor, depth: int = 2
) -> list[tuple[str, str, str, int, int]]:
    """(name, type, output shape, parameters, FLOPs) for modules down to ``depth`` levels."""
    rows: dict[str, list] = {}
    hooks = []

    def shape_of(out) -> str:
        # Per-sample shapes (no batch dimension) keep multi-level outputs on one line.
        if isinstance(out, torch.Tensor):
            return "x".join(str(d) for d in out.shape[1:]) or "scalar"
        if isinstance(out, (list, tuple)):
            return " ".join(shape_of(o) for o in out)
        if isinstance(out, dict):
            return " ".join(f"{k}:{shape_of(v)}" for k, v in out.items())
        return "-"

    modules = _leafish(model, depth)
    for name, module in modules:
        rows[name] = [
            name,
            type(module).__name__,
            "-",
            sum(p.numel() for p in module.parameters()),
            0,
        ]
        hooks.append(
            module.register_forward_hook(
                lambda m, i, o, name=name: rows[name].__setitem__(2, shape_of(o))
            )
        )
    counter = FlopCounterMode(display=False, depth=depth + 1)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(images)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    counts = counter.get_flop_counts()
    for name in rows:
        # FlopCounterMode names modules by their path from the root module's class name.
        key = next((k for k in counts if k.endswith("." + name)), None)
        if key is not None:
            rows[name][4] = int(sum(counts[key].values()))
    return [tuple(r) for r in rows.values()]


def total_flops(model: nn.Module, images: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    with torch.no_grad(), counter:
        model(images)
    model.train(was_training)
    return int(counter.get_total_flops())


def _probe(model: nn.Module) -> nn.Module:
    """A float64 copy in which every convolution averages (weights 1/fan-in), norms are
    identities, max-pools are average pools and deformable offsets are zero (the regular
    grid): fed a small positive image, every path then carries a strictly positive gradient and
    nothing saturates, so the support of a cell's gradient is exactly its receptive field, for
    any topology (residuals, dense blocks, SE, ASPP's image pooling: the whole image)."""
    # Only the input's gradient is read: frozen parameters halve each backward pass.
    probe = copy.deepcopy(model).double().eval().requires_grad_(False)
    for name, module in list(probe.named_modules()):
        parent = probe.get_submodule(name.rpartition(".")[0]) if "." in name else probe
        if isinstance(module, nn.MaxPool2d):
            setattr(
                parent,
                name.rpartition(".")[2],
                nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode),
            )
        elif isinstance(module, nn.GroupNorm):
            # Normalising a near-constant map divides by ~0; the norm moves no pixel anyway.
            setattr(parent, name.rpartition(".")[2], nn.Identity())
    offsets = {id(m.offset) for m in probe.modules() if isinstance(m, DeformableConv2d)}
    with torch.no_grad():
        for module in probe.modules():
            if isinstance(module, CONV_TYPES):
                fan_in = module.weight[0].numel()
                module.weight.fill_(0.0 if id(module) in offsets else 1.0 / fan_in)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.zero_()
                module.running_var.fill_(1.0 - module.eps)
                if module.affine:
                    module.weight.fill_(1.0)
                    module.bias.zero_()
            elif isinstance(module, nn.Linear):
                module.weight.fill_(1.0 / module.in_features)
                if module.bias is not None:
                    module.bias.fill_(0.0)
    return probe


def _field(x: torch.Tensor, f: torch.Tensor, retain: bool, size: int) -> tuple[int, int, bool]:
    """(stride, receptive field, clipped) of the centre cell of ``f`` (1, C, h, w)."""
    if x.grad is not None:
        x.grad = None
    h, w = f.shape[-2:]
    f[0, :, h // 2, w // 2].sum().backward(retain_graph=retain)
    support = x.grad[0].abs().sum(0) > 0
    rows = torch.nonzero(support.any(1)).flatten()
    cols = torch.nonzero(support.any(0)).flatten()
    extent = int(max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1))
    clipped = bool(
        rows.min() == 0 or cols.min() == 0 or rows.max() == size - 1 or cols.max() == size - 1
    )
    return max(size // h, 1), extent, clipped


def _first_size(size: int) -> int:
    """The probe image tried first: half of ``size`` costs ~6x less in float64 (the maps are a
    quarter, and fit the caches). A field that fits there is the field at any size: every
    interior cell's field is a translated copy; only fields reaching the border are probed
    again at ``size``."""
    return max(64, size // 2) if size > 64 else size


def receptive_fields(backbone: nn.Module, in_channels: int = 3, size: int = 512) -> list[LevelInfo]:
    """Measure each level's receptive field: the input pixels with a non-zero gradient for the
    centre cell of that level (on the probe copy of :func:`_probe`), first on a smaller image
    (:func:`_first_size`), again at ``size`` for the levels whose field was clipped there."""
    probe = _probe(backbone)
    out: dict[int, LevelInfo] = {}
    for probe_size in dict.fromkeys((_first_size(size), size)):
        todo = [k for k, lv in out.items() if lv.clipped] if out else None
        x = torch.full(
            (1, in_channels, probe_size, probe_size), 1e-3, dtype=torch.float64, requires_grad=True
        )
        feats = probe(x)
        levels = range(len(feats)) if todo is None else todo
        for n, level in enumerate(levels):
            f = feats[level]
            stride, extent, clipped = _field(x, f, n + 1 < len(levels), probe_size)
            out[level] = LevelInfo(stride, f.shape[1], extent, clipped)
        if not any(lv.clipped for lv in out.values()):
            break
    return [out[k] for k in sorted(out)]


def layer_receptive_fields(
    model: nn.Module, names: list[str], in_channels: int = 3, size: int = 512
) -> dict[str, list[tuple[int, bool]]]:
    """Per named module, the receptive field (pixels, clipped) of the centre cell of each 4-D
    map it outputs (a tensor, or each of a list of them), measured like
    :func:`receptive_fields`; modules without spatial outputs (flattened head outputs) get []."""
    probe = _probe(model)
    first = _first_size(size)
    result = _layer_fields_at(probe, names, in_channels, first)
    again = [n for n, fields in result.items() if any(clipped for _, clipped in fields)]
    if again and first < size:  # fields that reached the smaller image's border, at full size
        result.update(_layer_fields_at(probe, again, in_channels, size))
    return result


def _layer_fields_at(
    probe: nn.Module, names: list[str], in_channels: int, size: int
) -> dict[str, list[tuple[int, bool]]]:
    """:func:`layer_receptive_fields` on one ``size`` x ``size`` image of the probe copy."""
    captured: dict[str, list[torch.Tensor]] = {}
    hooks = []

    def maps(out) -> list[torch.Tensor]:
        if isinstance(out, torch.Tensor):
            return [out] if out.ndim == 4 else []
        if isinstance(out, (list, tuple)):
            return [t for o in out for t in maps(o)]
        return []

    for name in names:
        module = probe.get_submodule(name)
        hooks.append(
            module.register_forward_hook(
                lambda m, i, o, name=name: captured.__setitem__(name, maps(o))
            )
        )
    x = torch.full((1, in_channels, size, size), 1e-3, dtype=torch.float64, requires_grad=True)
    try:
        probe(x)
    finally:
        for h in hooks:
            h.remove()
    result: dict[str, list[tuple[int, bool]]] = {}
    for name in names:
        fields = []
        for f in captured.get(name, []):
            if not f.requires_grad:
                continue
            _, extent, clipped = _field(x, f, True, size)
            fields.append((extent, clipped))
        result[name] = fields
    return result


def summarize(
    model: nn.Module,
    img_size: tuple[int, int],
    in_channels: int = 3,
    depth: int = 2,
    rf_size: int = 512,
) -> str:
    images = torch.zeros(1, in_channels, *img_size)
    table = layer_table(model, images, depth)
    fields = layer_receptive_fields(model, [row[0] for row in table], in_channels, rf_size)

    def rf(name: str) -> str:
        return "/".join(f"≥{e}" if c else str(e) for e, c in fields[name]) or "-"

    lines = [
        f"{'layer':<36} {'type':<20} {'output (C x H x W)':<40} {'params':>11} {'FLOPs':>14}"
        f"  receptive field"
    ]
    for name, kind, shape, params, flops in table:
        lines.append(
            f"{name:<36} {kind[:20]:<20} {shape:<40} {params:>11,} {flops:>14,}  {rf(name)}"
        )
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flops = total_flops(model, images)
    lines.append("")
    lines.append(f"parameters: {n_params:,} ({n_train:,} trainable)")
    lines.append(
        f"FLOPs at {img_size[1]}x{img_size[0]}: {flops / 1e9:.3f} G (torch.utils.flop_counter; "
        "a multiply-add counts 2)"
    )
    backbone = getattr(model, "backbone", None)
    if backbone is not None:
        lines.append("")
        lines.append(f"backbone levels (receptive field probed on a {rf_size}x{rf_size} image):")
        lines.append(f"  {'level':<6} {'stride':>6} {'channels':>9} {'receptive field':>16}")
        for i, lv in enumerate(receptive_fields(backbone, in_channels, rf_size)):
            rf = f"≥{lv.receptive_field}" if lv.clipped else str(lv.receptive_field)
            lines.append(f"  {i:<6} {lv.stride:>6} {lv.channels:>9} {rf:>16}")
    return "\n".join(lines)
