"""Keypoint accuracy metrics: PCK (the reference's definition) and PCKh (the MPII protocol), per joint.

Both take predictions and ground truth as (N, K, 2) arrays in one pixel frame and a (N, K) visibility mask, and return
the per-joint fraction of visible instances predicted correctly, shape (K,), NaN for a joint with no visible instance.
`summarise` turns the per-joint values into the numbers `fastpose eval` prints: symmetric-group means and the total.

- PCK@t: a joint is correct when its error is <= t x max(w, h) of the person's ground-truth joint bounding box (the
  box of that person's visible joints), the definition of the reference's evaluation script (t = 0.2 by default).
- PCKh@t: a joint is correct when error / (0.6 x head-box diagonal) < t, strictly, as MPII's eval_PCKh.m
  (t = 0.5 by default). A person whose head box is unknown (NaN) or degenerate is left out of PCKh.
- Pixel error (`pixel_error`, DeepLabCut's "train error / test error"): the mean Euclidean distance in pixels over
  labelled joints, per joint and over all instances, and the same over the joints predicted with score >= a p-cutoff,
  with the fraction kept. Multi-person: `oks` and `match_persons` pair predicted with ground-truth people first, as
  pycocotools' evaluation does (highest-scoring prediction first, each to the unmatched person of highest OKS).
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


def pixel_error(pred, gt, visible, scores, pcutoff: float = 0.6) -> dict:
    """Euclidean pixel errors of predictions against labelled joints, DeepLabCut's train/test error and p-cutoff.

    pred, gt (N, K, 2) in one pixel frame (`fastpose eval` passes the original image's), visible (N, K) labelled,
    scores (N, K) the predictions' confidences. A labelled joint whose prediction is not finite (a sample the pipeline
    did not yield, a joint a matched person lacks) has no distance: it is left out of the means, counted in
    `unpredicted` and never kept. Returns:
      errors (N, K): the distance, NaN where the joint is unlabelled or unpredicted;
      per_joint (K,), mean: the mean distance per joint and over all labelled, predicted instances (as DeepLabCut,
        the mean of every instance, not of the per-joint means); NaN when there is none;
      per_joint_above_pcutoff (K,), mean_above_pcutoff: the same over the instances with score >= pcutoff;
      kept: the fraction of labelled joints predicted with score >= pcutoff (NaN when nothing is labelled);
      labelled, predicted, above_pcutoff (K,) int counts per joint; unpredicted: their total.
    """
    pred, gt, visible = _check(pred, gt, visible)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != visible.shape:
        raise ValueError(f"scores must be (N, K) = {visible.shape}, got {scores.shape}")
    d = errors(pred, gt)  # (N, K), inf where the prediction is not finite
    predicted = visible & np.isfinite(d)  # (N, K)
    above = predicted & (scores >= pcutoff)  # a NaN score is never >= pcutoff
    dist = np.where(predicted, d, np.nan)  # (N, K)

    def means(counted: np.ndarray) -> tuple[np.ndarray, float]:
        n = counted.sum(axis=0)  # (K,)
        total = np.where(counted, dist, 0.0)
        per_joint = np.where(n > 0, total.sum(axis=0) / np.maximum(n, 1), np.nan)  # (K,)
        return per_joint, float(total.sum() / n.sum()) if n.sum() else float("nan")

    per_joint, mean = means(predicted)
    per_joint_above, mean_above = means(above)
    labelled = visible.sum(axis=0)
    return {"errors": dist, "per_joint": per_joint, "mean": mean, "per_joint_above_pcutoff": per_joint_above,
            "mean_above_pcutoff": mean_above,
            "kept": float(above.sum() / labelled.sum()) if labelled.sum() else float("nan"),
            "labelled": labelled, "predicted": predicted.sum(axis=0), "above_pcutoff": above.sum(axis=0),
            "unpredicted": int(labelled.sum() - predicted.sum())}


def oks(pred, gt, visible, areas, sigmas) -> np.ndarray:
    """(G, P) object keypoint similarity of G ground-truth people with P predicted ones, as pycocotools' computeOks:
    the mean over a person's labelled joints of exp(-d^2 / (2 (area + eps) (2 sigma)^2)).

    pred (P, K, 2), a non-finite joint contributing 0 (pycocotools puts a missing joint at (0, 0), far from any
    person); gt (G, K, 2), visible (G, K); areas (G,) the people's areas in pixels^2; sigmas (K,) (`oks_sigmas`). A
    person without a labelled joint has OKS 0 with everyone.
    """
    pred = np.asarray(pred, np.float64).reshape(-1, *np.shape(gt)[1:])
    gt = np.asarray(gt, np.float64)
    visible = np.asarray(visible, bool) & np.isfinite(gt).all(axis=2)  # (G, K)
    var = (2 * np.asarray(sigmas, np.float64)) ** 2  # (K,)
    d2 = ((pred[None] - gt[:, None]) ** 2).sum(axis=3)  # (G, P, K)
    area = np.asarray(areas, np.float64)[:, None, None] + np.spacing(1)  # (G, 1, 1)
    with np.errstate(invalid="ignore", over="ignore"):
        sim = np.exp(-d2 / var / area / 2)
    sim = np.where(np.isfinite(sim) & visible[:, None], sim, 0.0)  # (G, P, K)
    n = visible.sum(axis=1)[:, None]  # (G, 1)
    return np.where(n > 0, sim.sum(axis=2) / np.maximum(n, 1), 0.0)


def match_persons(similarity, scores, threshold: float = 0.5) -> np.ndarray:
    """Greedy matching of predicted to ground-truth people, pycocotools' evaluateImg at one OKS threshold: the
    predictions in order of decreasing score (ties: their order), each taking the still unmatched person of highest
    similarity, if it is >= threshold. similarity (G, P) (`oks`), scores (P,). Returns (G,) the index of each person's
    prediction, -1 for a person not found."""
    similarity = np.asarray(similarity, np.float64)
    match = np.full(similarity.shape[0], -1, np.int64)
    for p in np.argsort(-np.asarray(scores, np.float64), kind="mergesort"):
        best, g = min(threshold, 1 - 1e-10), -1
        for j in range(similarity.shape[0]):
            if match[j] < 0 and similarity[j, p] >= best:
                best, g = similarity[j, p], j
        if g >= 0:
            match[g] = p
    return match


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
