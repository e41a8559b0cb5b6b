"""SSD inference post-processing: scores, decoding, per-class NMS, user class ids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torchvision.ops import batched_nms, clip_boxes_to_image

from ..errors import ConfigError
from ..ops.box_coder import BoxCoder


def ssd_postprocess(
    outputs: Mapping[str, torch.Tensor],
    box_coder: BoxCoder,
    image_sizes: Sequence[tuple[int, int]],
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    max_detections: int = 100,
    topk_candidates: int = 400,
    focal: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Detections per image from :class:`SSDHead` outputs.

    ``image_sizes[i] = (height, width)`` is the region boxes are clipped to. Class scores are a
    softmax over background + C classes (a sigmoid over the C columns when ``focal``); every
    (anchor, class) pair scoring above ``score_thresh`` is a candidate, the ``topk_candidates``
    best are decoded with ``box_coder`` (the loss's own instance), suppressed per class with
    ``nms_thresh`` and the ``max_detections`` best kept. Returns dicts of ``boxes`` (N, 4) XYXY
    pixels, ``scores`` (N,) and ``labels`` (N,) in user ids 0..C-1, sorted by score.
    """
    logits = outputs["cls_logits"].float()
    deltas = outputs["box_deltas"].float()
    anchors = outputs["anchors"].float()
    if len(image_sizes) != logits.shape[0]:
        raise ConfigError(f"got {len(image_sizes)} image sizes for a batch of {logits.shape[0]}")
    if focal:
        scores = logits[..., 1:].sigmoid()
    else:
        scores = logits.softmax(dim=-1)[..., 1:]
    num_classes = scores.shape[-1]

    results = []
    for img_scores, img_deltas, size in zip(scores, deltas, image_sizes):
        # Flatten (anchor, class) so thresholding, top-k and NMS handle all classes at once.
        flat = img_scores.reshape(-1)
        keep = torch.nonzero(flat > score_thresh).squeeze(1)
        top = flat[keep].topk(min(topk_candidates, keep.numel()))
        idx = keep[top.indices]
        anchor_idx = idx // num_classes
        labels = idx % num_classes
        boxes = box_coder.decode(img_deltas[anchor_idx], anchors[anchor_idx])
        boxes = clip_boxes_to_image(boxes, (int(size[0]), int(size[1])))
        # Anchors that lie in padding decode to zero-area boxes once clipped: not detections.
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, top_scores, labels = boxes[valid], top.values[valid], labels[valid]
        kept = batched_nms(boxes, top_scores, labels, nms_thresh)[:max_detections]
        results.append({"boxes": boxes[kept], "scores": top_scores[kept], "labels": labels[kept]})
    return results
