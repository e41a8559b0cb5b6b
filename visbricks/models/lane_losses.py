"""UFLD-V2's losses: cell classification, existence, expectation ("mean") loss, auxiliary seg.

Targets come from :func:`visbricks.ops.lanes.encode_lanes`: ``row_pos`` (B, R, L) and
``col_pos`` (B, C, L) continuous cell positions, -1 where the lane does not cross the anchor.

* ``loss_cls``: cross-entropy over the cells of every anchor the lane crosses (ignored
  elsewhere), row and column anchors summed. ``soft`` > 0 is the neighbour-smoothed target:
  ``1 - soft`` on the true cell and ``soft / 2`` on each neighbour (folded back at the ends).
* ``loss_exist``: 2-way cross-entropy "does the lane cross this anchor", over all anchors.
* ``loss_mean``: smooth-L1 between the softmax expectation of the cell index and the target
  position (UFLD-V2's mean loss; weight 0.05 in its configs), on crossed anchors.
* ``loss_seg``: cross-entropy of the auxiliary segmentation (lane slot per stride-8 cell).

Everything is computed in float32 whatever the autocast dtype of the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.lanes import cell_labels


def cell_ce(logits: torch.Tensor, pos: torch.Tensor, soft: float = 0.0) -> torch.Tensor:
    """Mean (soft) cross-entropy over anchors with a lane; ``logits`` (B, cells, A, L)."""
    labels = cell_labels(pos)
    valid = labels >= 0
    if not valid.any():
        return logits.sum() * 0.0
    logp = logits.float().log_softmax(1)
    cells = logits.shape[1]
    lab = labels.clamp(min=0).unsqueeze(1)
    nll = -logp.gather(1, lab).squeeze(1)
    if soft > 0:
        lo = (lab - 1).clamp(min=0)
        hi = (lab + 1).clamp(max=cells - 1)
        nll = (1 - soft) * nll - soft / 2 * (
            logp.gather(1, lo).squeeze(1) + logp.gather(1, hi).squeeze(1)
        )
    return nll[valid].mean()


def expectation_loss(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 between the softmax expectation of the cell index and ``pos`` (crossed only)."""
    valid = pos >= 0
    if not valid.any():
        return logits.sum() * 0.0
    idx = torch.arange(logits.shape[1], device=logits.device, dtype=torch.float32)
    expect = (logits.float().softmax(1) * idx.view(1, -1, 1, 1)).sum(1)
    return F.smooth_l1_loss(expect[valid], pos[valid].float())


def exist_ce(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), (pos >= 0).long())


def ufld_loss(
    outputs: dict[str, torch.Tensor],
    row_pos: torch.Tensor,
    col_pos: torch.Tensor,
    seg: torch.Tensor | None = None,
    cls_weight: float = 1.0,
    exist_weight: float = 1.0,
    mean_weight: float = 0.05,
    seg_weight: float = 1.0,
    soft: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Every term (detached, for logging) and their weighted sum ``loss``."""
    cls = cell_ce(outputs["loc_row"], row_pos, soft) + cell_ce(outputs["loc_col"], col_pos, soft)
    exist = exist_ce(outputs["exist_row"], row_pos) + exist_ce(outputs["exist_col"], col_pos)
    mean = expectation_loss(outputs["loc_row"], row_pos) + expectation_loss(
        outputs["loc_col"], col_pos
    )
    loss = cls_weight * cls + exist_weight * exist + mean_weight * mean
    terms = {"loss_cls": cls.detach(), "loss_exist": exist.detach(), "loss_mean": mean.detach()}
    if seg is not None and "seg" in outputs:
        s = F.cross_entropy(outputs["seg"].float(), seg.long())
        loss = loss + seg_weight * s
        terms["loss_seg"] = s.detach()
    return {"loss": loss, **terms}


__all__ = ["cell_ce", "exist_ce", "expectation_loss", "ufld_loss"]
