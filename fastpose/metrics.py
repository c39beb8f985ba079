"""Keypoint accuracy metrics: PCK (the reference's definition) and PCKh (the MPII protocol), per joint.

Both take predictions and ground truth as (N, K, 2) arrays in one pixel frame and a (N, K) visibility mask, and return
the per-joint fraction of visible instances predicted correctly, shape (K,), NaN for a joint with no visible instance.
`summarise` turns the per-joint values into the numbers `fastpose eval` prints: symmetric-group means and the total.

- PCK@t: a joint is correct when its error is <= t x max(w, h) of the person's ground-truth joint bounding box (the
  box of that person's visible joints), the definition of the reference's evaluation script (t = 0.2 by default).
- PCKh@t: a joint is correct when error / (0.6 x head-box diagonal) < t, strictly, as MPII's eval_PCKh.m
  (t = 0.5 by default). A person whose head box is unknown (NaN) or degenerate is left out of PCKh.
- COCO keypoint AP/AR (`coco_ap`, multi-person): pycocotools' COCOeval(iouType="keypoints") on a results list against
  the annotation json, with OKS sigmas: COCO's 17 for 17 keypoints, CrowdPose's 14 for 14, else uniform 0.1 (said in
  the result's "sigmas").
"""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path

import numpy as np

# MPII's head size: 0.6 x the diagonal of the annotated head rectangle (eval_PCKh.m).
HEAD_SIZE_FACTOR = 0.6


def _check(pred, gt, visible) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    visible = np.asarray(visible, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[2] != 2:
        raise ValueError(f"pred and gt must both be (N, K, 2) arrays, got {pred.shape} and {gt.shape}")
    if visible.shape != pred.shape[:2]:
        raise ValueError(f"visible must be (N, K) = {pred.shape[:2]}, got {visible.shape}")
    # A ground-truth joint without finite coordinates cannot be scored; treat it as not visible.
    visible = visible & np.isfinite(gt).all(axis=2)
    return pred, gt, visible


def _fraction(correct: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """Per-joint fraction of counted instances that are correct; NaN where a joint has none. Both (N, K) bool."""
    n = counted.sum(axis=0).astype(np.float64)  # (K,)
    hits = (correct & counted).sum(axis=0).astype(np.float64)  # (K,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hits / np.maximum(n, 1), np.nan)


def errors(pred, gt) -> np.ndarray:
    """Euclidean distance per instance, (N, K). A non-finite prediction is an infinite error (never correct)."""
    d = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=2)
    return np.where(np.isfinite(d), d, np.inf)


def pck_sizes(gt, visible) -> np.ndarray:
    """max(w, h) of each person's visible-joint bounding box, (N,); 0 for a person with fewer than one joint."""
    gt = np.asarray(gt, dtype=np.float64)
    visible = np.asarray(visible, dtype=bool) & np.isfinite(gt).all(axis=2)
    lo = np.where(visible[..., None], gt, np.inf).min(axis=1)  # (N, 2)
    hi = np.where(visible[..., None], gt, -np.inf).max(axis=1)  # (N, 2)
    size = (hi - lo).max(axis=1)  # (N,)
    return np.where(visible.any(axis=1), size, 0.0)


def head_sizes(head_boxes) -> np.ndarray:
    """0.6 x the diagonal of each head box [[x1, y1], [x2, y2]], (N,); NaN where the box is unknown."""
    boxes = np.asarray(head_boxes, dtype=np.float64)
    if boxes.ndim != 3 or boxes.shape[1:] != (2, 2):
        raise ValueError(f"head_boxes must be (N, 2, 2) as [[x1, y1], [x2, y2]], got {boxes.shape}")
    return HEAD_SIZE_FACTOR * np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=1)


def pck(pred, gt, visible, threshold: float = 0.2) -> np.ndarray:
    """Per-joint PCK@threshold, (K,): correct when error <= threshold x max(w, h) of the GT joint box."""
    pred, gt, visible = _check(pred, gt, visible)
    limit = threshold * pck_sizes(gt, visible)  # (N,)
    correct = errors(pred, gt) <= limit[:, None]  # (N, K)
    return _fraction(correct, visible)


def pckh(pred, gt, visible, head_boxes, threshold: float = 0.5) -> np.ndarray:
    """Per-joint PCKh@threshold, (K,): correct when error / (0.6 x head-box diagonal) < threshold (strict, as MPII)."""
    pred, gt, visible = _check(pred, gt, visible)
    size = head_sizes(head_boxes)  # (N,)
    if size.shape[0] != pred.shape[0]:
        raise ValueError(f"head_boxes has {size.shape[0]} persons, pred has {pred.shape[0]}")
    known = np.isfinite(size) & (size > 0)  # (N,)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = errors(pred, gt) / np.where(known, size, 1.0)[:, None]  # (N, K)
    correct = normalised < threshold
    return _fraction(correct, visible & known[:, None])


def summarise(per_joint, joint_names: list[str], groups: list[list[int]], group_names: list[str],
              counts=None) -> dict:
    """Per-joint and per-group values plus the mean, as plain floats (None for NaN) for JSON.

    A group's value is the mean of its joints' values (left and right averaged, as MPII's tables). The mean is over
    all joints with a value, weighted by `counts` (visible instances per joint) when given, which makes it the
    fraction of all visible joint instances that are correct.
    """
    per_joint = np.asarray(per_joint, dtype=np.float64)
    out_joints = {name: _float(v) for name, v in zip(joint_names, per_joint)}
    out_groups = {}
    for name, group in zip(group_names, groups):
        values = per_joint[list(group)]
        values = values[np.isfinite(values)]
        out_groups[name] = float(values.mean()) if values.size else None
    finite = np.isfinite(per_joint)
    if counts is not None:
        w = np.where(finite, np.asarray(counts, dtype=np.float64), 0.0)
        mean = float((np.where(finite, per_joint, 0.0) * w).sum() / w.sum()) if w.sum() > 0 else None
    else:
        mean = float(per_joint[finite].mean()) if finite.any() else None
    return {"per_joint": out_joints, "per_group": out_groups, "mean": mean}


def _float(v) -> float | None:
    return float(v) if np.isfinite(v) else None


# OKS per-keypoint sigmas: COCO's (pycocotools' default, person_keypoints order) and CrowdPose's (its crowdposetools:
# 12 limb joints as COCO's, then head top and neck at 0.079).
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10
CROWDPOSE_SIGMAS = np.array([.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89, .79, .79]) / 10
COCO_STATS = ("AP", "AP50", "AP75", "AP_medium", "AP_large", "AR", "AR50", "AR75", "AR_medium", "AR_large")


def oks_sigmas(num_joints: int) -> tuple[np.ndarray, str]:
    """(sigmas (K,), name) for a keypoint count: COCO for 17, CrowdPose for 14, else uniform 0.1."""
    if num_joints == 17:
        return COCO_SIGMAS, "coco"
    if num_joints == 14:
        return CROWDPOSE_SIGMAS, "crowdpose"
    return np.full(num_joints, 0.1), "uniform 0.1"


def coco_ap(results: list[dict], annotation_json: str | Path, image_ids=None, sigmas=None) -> dict:
    """OKS keypoint AP/AR of `results` (COCO results: image_id, category_id, keypoints [x, y, v] * K, score).

    image_ids restricts the evaluation to those images (default: every image of the json); sigmas overrides the
    per-keypoint OKS sigmas (default `oks_sigmas(K)`). Returns {"AP", "AP50", ..., "AR_large": float, "sigmas": name,
    "detections": len(results), "images": count}. No results at all give AP = AR = 0.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        gt = COCO(str(annotation_json))
    cats = [c for c in gt.dataset.get("categories", []) if c.get("keypoints")]
    k = len(cats[0]["keypoints"]) if cats else 17
    if sigmas is None:
        sigmas, name = oks_sigmas(k)
    else:
        sigmas, name = np.asarray(sigmas, np.float64), "given"
    if len(sigmas) != k:
        raise ValueError(f"{len(sigmas)} OKS sigmas for {k} keypoints")
    ids = sorted(gt.getImgIds()) if image_ids is None else sorted(int(i) for i in image_ids)
    out = {"sigmas": name, "detections": len(results), "images": len(ids)}
    if not results:
        return {**{s: 0.0 for s in COCO_STATS}, **out}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(list(results)))  # loadRes writes area, bbox and id into the dicts
        ev = COCOeval(gt, dt, iouType="keypoints")
        ev.params.imgIds = ids
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # COCOeval reports -1 for an area range without ground truth (kept: it means 'not measured', not 0).
    return {**{s: float(v) for s, v in zip(COCO_STATS, ev.stats)}, **out}
