"""Multi-person assembly: part detections -> people (DeeperCut's bottom-up inference), and fitting its edge classifier.

Steps for one image (`assemble`):
1. `nms`: per joint, the local maxima (3x3) of sigmoid(part logits) with score >= det_min_score, kept greedily by
   score unless within nms_radius cells of a kept one. A detection sits at its cell centre (col * stride + stride / 2,
   row * stride + stride / 2) plus locref * locref_stdev.
2. Edges between detections of two joint types allowed by sparse_graph (every pair of types when it is empty). Each
   gets features from the pairwise head at both ends: from detection a (joint s) the head predicts the offset to
   joint e as pairwise[s->e] * std[s, e] + mean[s, e] from a's cell centre (the inverse of its training target).
   Per direction: the distance between that predicted endpoint and detection b, per axis divided by std[s, e], and the
   angle (radians) between the predicted and the real offset. Features = (1, dist_ab, dist_ba, angle_ab, angle_ba).
   A same-person probability p = sigmoid(features . weights), one logistic regression for all joint pairs (the
   normalisation by the pair's std makes distances comparable across pairs). Edge cost = log((1 - p) / p).
   Without a pairwise head (part-only models) the prediction is the mean offset itself, so the features measure how
   far the real offset is from the dataset's mean offset of that pair (a weaker cue: fit the model the same way).
3. Two detections of one joint type get a large repulsive cost (SAME_TYPE_COST): a person has at most one detection
   per joint.
4. `multicut` (the native solver, kernels/multicut.cpp) partitions the detections; each cluster is a person.
Steps 2-3 run natively in one pass over detection pairs (`edge_costs`; the numpy `edge_features` is the reference it
is tested against and the fitting path), which drops the repulsive edges between components of the attractive ones:
the solver splits the graph into those components first and ignores such edges, so they cannot change its labels
(in a crowded image that is nearly every edge, the O(N^2) same-type repulsions included).

Fitting (`fastpose fit-assembly`): on training images, detections are matched to the ground-truth joint of their type
nearest within pos_dist_thresh (in network pixels); edges between matched detections are positives when both belong
to one person, negatives otherwise; an L2-regularised logistic regression (Newton's method, numpy) gives the weights,
saved as JSON beside the checkpoint (`<checkpoint>.assembly.json`) with the pairwise statistics they were fitted with.

Statistics are in dataset pixels; `scale` (network pixels per dataset pixel, global_scale for COCO) rescales them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastpose import dataset
from fastpose.atomic import write_atomic
from fastpose.checkpoint import load_model
from fastpose.config import Config
from fastpose.decode import to_sample, valid_grid
from fastpose.device import autocast, pick_device
from fastpose.errors import UserError, out_file
from fastpose.images import batch_images, prepare_image
from fastpose.kernels import _multicut
from fastpose.kernels.pairwise import pair_id
from fastpose.model import infer
from fastpose.pairwise import stats_for
from fastpose.pipeline import decode_rgb
from fastpose.shards import ShardDataset

FEATURES = ("bias", "dist_ab", "dist_ba", "angle_ab", "angle_ba")
# Before any fit: p = 0.95 for a perfect prediction, 0.5 when each end misses by ~1.5 std; a prior, not a fitted model.
DEFAULT_WEIGHTS = (3.0, -1.0, -1.0, -0.5, -0.5)
# Repulsion between two detections of one joint type: far above any sum of clipped log-odds in a person (K^2 * 14).
SAME_TYPE_COST = 1e5
LOGIT_CLIP = 14.0  # |log-odds| cap: p in [1e-6, 1 - 1e-6]
MODEL_VERSION = 1


def multicut(n_nodes: int, edges, costs, *, method: str = "kl", exact_max_nodes: int = 10) -> np.ndarray:
    """Labels (n_nodes,) int64 (0, 1, ... in order of first node) of a partition minimising the summed cost of the
    edges whose ends share a label (negative costs attract, positive repel).

    method "kl": exact search on attractive components of <= exact_max_nodes nodes, else greedy additive edge
    contraction followed by Kernighan-Lin moves; "gaec": the contraction alone. See kernels/multicut.cpp.
    """
    if method not in ("kl", "gaec"):
        raise ValueError(f"method must be one of: kl, gaec; got {method!r}")
    edges = np.ascontiguousarray(np.asarray(edges, dtype=np.int64).reshape(-1, 2))
    costs = np.ascontiguousarray(np.asarray(costs, dtype=np.float64).reshape(-1))
    if len(costs) != len(edges):
        raise ValueError(f"edges (E, 2) and costs (E,) disagree: {len(edges)} edges, {len(costs)} costs")
    if not np.isfinite(costs).all():
        raise ValueError("multicut costs must be finite")
    if len(edges) and (edges.min() < 0 or edges.max() >= n_nodes):
        raise ValueError(f"edge ends must lie in 0..{n_nodes - 1}")
    if n_nodes == 0:
        return np.zeros(0, np.int64)
    return np.asarray(_multicut.solve(int(n_nodes), edges, costs, method, int(exact_max_nodes)), np.int64)


@dataclass
class Detections:
    """N detections of one image; all arrays (N,)."""

    k: np.ndarray  # joint type
    row: np.ndarray
    col: np.ndarray
    score: np.ndarray
    x: np.ndarray  # network-input pixels (centre + locref)
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.k)


def _peaks(score: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k, row, col) of the cells >= threshold that are 3x3 local maxima of score (K, H, W) (ties all count)."""
    k, row, col = np.nonzero(score >= threshold)  # few cells: the neighbourhood test runs on these only
    padded = np.pad(score, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    centre = score[k, row, col]
    peak = np.ones(len(k), bool)
    for dr in (0, 1, 2):
        for dc in (0, 1, 2):
            if dr != 1 or dc != 1:
                peak &= padded[k, row + dr, col + dc] <= centre
    return k[peak], row[peak], col[peak]


def _suppress(k, row, col, score, radius: float) -> np.ndarray:
    """Indices kept by greedy suppression: per joint by decreasing score (ties in raster order), a candidate within
    `radius` cells (Euclidean, <=) of a kept one of its joint is dropped."""
    order = np.lexsort((col, row, -score, k))  # by joint, then score
    k, row, col = k[order], row[order], col[order]
    d2 = (row[:, None] - row[None, :]) ** 2 + (col[:, None] - col[None, :]) ** 2  # (n, n) squared cells
    near = (d2 <= radius * radius) & (k[:, None] == k[None, :])
    np.fill_diagonal(near, False)
    alive = np.ones(len(k), bool)
    for i in np.flatnonzero(near.any(axis=1)):  # a candidate with no near one is kept and suppresses nothing
        if alive[i]:
            alive[i + 1:] &= ~near[i, i + 1:]
    return order[alive]


def nms(part_prob: np.ndarray, radius: float, min_score: float) -> list[tuple[int, int, int, float]]:
    """Per-joint grid non-maximum suppression of part_prob (K, H, W) in [0, 1]: [(k, row, col, score), ...], per joint
    by decreasing score. Candidates are 3x3 local maxima >= min_score; one within `radius` cells (Euclidean, <=) of a
    kept, higher one is dropped."""
    prob = np.asarray(part_prob, np.float32)
    if prob.ndim != 3:
        raise ValueError(f"part_prob must be (K, H, W), got shape {prob.shape}")
    k, row, col = _peaks(prob, min_score)
    score = prob[k, row, col]
    keep = _suppress(k, row, col, score, radius)
    return [(int(k[i]), int(row[i]), int(col[i]), float(score[i])) for i in keep]


def detect(part_logits: np.ndarray, locref: np.ndarray | None, cfg) -> Detections:
    """NMS on sigmoid(part_logits) (K, H, W), positions refined by locref (2K, H, W) (channels 2k, 2k + 1 = dx, dy).
    Works on the logits (sigmoid is monotone) and takes the sigmoid of the kept cells only."""
    logits = np.asarray(part_logits, np.float32)
    if logits.ndim != 3:
        raise ValueError(f"part_logits must be (K, H, W), got shape {logits.shape}")
    p = min(max(float(cfg.det_min_score), 1e-12), 1 - 1e-7)
    threshold = np.float32(math.log(p / (1 - p)))
    k, row, col = _peaks(logits, threshold)
    score = 1.0 / (1.0 + np.exp(-logits[k, row, col].astype(np.float64)))
    keep = _suppress(k, row, col, score, cfg.nms_radius)
    k, row, col, score = k[keep], row[keep], col[keep], score[keep]
    half = cfg.stride / 2.0
    x, y = col * cfg.stride + half, row * cfg.stride + half
    if locref is not None and len(k):
        loc = np.asarray(locref, np.float32)
        x = x + loc[2 * k, row, col] * cfg.locref_stdev
        y = y + loc[2 * k + 1, row, col] * cfg.locref_stdev
    return Detections(k.astype(np.int64), row.astype(np.int64), col.astype(np.int64), score,
                      x.astype(np.float64), y.astype(np.float64))


def _allowed_types(num_joints: int, sparse_graph) -> np.ndarray:
    """(K, K) bool: joint types whose detections get a scored edge (symmetric, no diagonal)."""
    if not sparse_graph:
        return ~np.eye(num_joints, dtype=bool)
    allowed = np.zeros((num_joints, num_joints), bool)
    for s, e in sparse_graph:
        if s != e:
            allowed[s, e] = allowed[e, s] = True
    return allowed


def _predicted_offsets(dets: Detections, pairwise, mean, std, k: int) -> np.ndarray:
    """(N, K, 2): the offset from each detection's cell centre to joint e of its person as the pairwise head predicts
    it, pairwise[s->e] * std[s, e] + mean[s, e] (s = the detection's joint; its own column is mean[s, s] = 0).
    Without a pairwise head the prediction is the mean offset."""
    m, sd = mean[dets.k], std[dets.k]  # (N, K, 2): row s of the statistics (a plain take, ~10x a 2-D fancy index)
    if pairwise is None:
        return m
    s = dets.k[:, None]  # (N, 1)
    e = np.arange(k)[None, :]  # (1, K)
    pid = np.where(s == e, 0, pair_id(s, e, k))  # (N, K); the diagonal has no channel, its value is never used
    raw = np.asarray(pairwise, np.float32)[2 * pid[..., None] + np.arange(2), dets.row[:, None, None],
                                           dets.col[:, None, None]]  # (N, K, 2) normalised offsets
    return raw * sd + m


def _directions(pred, centre, pos, kind, std) -> tuple[np.ndarray, np.ndarray]:
    """(N, N) normalised distance and angle between the offset predicted from a towards b's joint type and the real
    offset a -> b (from a's cell centre), for every ordered pair (a, b); float64 like the native `edge_costs`, so
    that the two agree to rounding (this numpy version is the reference and the fitting path)."""
    p = pred[:, kind].astype(np.float64)  # (N, N, 2) prediction of a towards joint kind[b]
    real = (pos[None, :, :] - centre[:, None, :]).astype(np.float64)  # (N, N, 2)
    sd = std[kind[:, None], kind[None, :]].astype(np.float64)  # (N, N, 2)
    diff = (p - real) / sd
    dist = np.sqrt(diff[..., 0] ** 2 + diff[..., 1] ** 2)
    cross = p[..., 0] * real[..., 1] - p[..., 1] * real[..., 0]
    angle = np.abs(np.arctan2(cross, p[..., 0] * real[..., 0] + p[..., 1] * real[..., 1]))
    return dist, angle


def edge_features(dets: Detections, pairwise, mean, std, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges (E, 2), features (E, 5), same_type (S, 2)): scored edges between detections of allowed joint types,
    their FEATURES, and the pairs of detections of one type (the repulsive edges)."""
    k = mean.shape[0]
    n = len(dets)
    a, b = np.triu_indices(n, 1)  # (P,) every detection pair once
    same = dets.k[a] == dets.k[b]
    allowed = _allowed_types(k, cfg.sparse_graph)[dets.k[a], dets.k[b]]
    ea, eb = a[allowed], b[allowed]
    pred = _predicted_offsets(dets, pairwise, mean, std, k)  # (N, K, 2)
    half = cfg.stride / 2.0
    centre = np.stack([dets.col * cfg.stride + half, dets.row * cfg.stride + half], axis=1)  # (N, 2)
    pos = np.stack([dets.x, dets.y], axis=1)  # (N, 2)
    dist, angle = _directions(pred, centre, pos, dets.k, std)  # (N, N) each
    feats = np.empty((len(ea), len(FEATURES)))
    feats[:, 0] = 1.0
    feats[:, 1], feats[:, 2] = dist[ea, eb], dist[eb, ea]
    feats[:, 3], feats[:, 4] = angle[ea, eb], angle[eb, ea]
    return np.stack([ea, eb], axis=1), feats, np.stack([a[same], b[same]], axis=1)


def edge_costs(dets: Detections, pairwise, mean, std, cfg, weights, *, prune: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """(edges (E, 2) int64, costs (E,) float64) of the multicut graph, natively in one pass over detection pairs
    (kernels/multicut.cpp), a < b in row-major order: every pair of one joint type with SAME_TYPE_COST, every pair of
    allowed types with log((1 - p) / p) = -clip(features . weights, +-LOGIT_CLIP), features as `edge_features` (the
    tested reference). prune drops the repulsive edges between components of the attractive ones: the "kl" solver
    drops exactly those itself, so its labels stay the same (most of a crowded image's edges)."""
    k = mean.shape[0]
    half = cfg.stride / 2.0
    centre = np.stack([dets.col * cfg.stride + half, dets.row * cfg.stride + half], axis=1).astype(np.float64)
    pos = np.stack([dets.x, dets.y], axis=1).astype(np.float64)  # (N, 2)
    pred = np.ascontiguousarray(_predicted_offsets(dets, pairwise, mean, std, k), np.float64)  # (N, K, 2)
    return _multicut.edge_costs(np.ascontiguousarray(dets.k, np.int64), centre, pos, pred,
                                np.ascontiguousarray(std, np.float64), _allowed_types(k, cfg.sparse_graph),
                                np.ascontiguousarray(weights, np.float64), LOGIT_CLIP, SAME_TYPE_COST, prune)


def _stats(model: dict | None, cfg, scale: float) -> tuple[np.ndarray, np.ndarray]:
    if model is not None and "mean" in model:
        mean, std = np.asarray(model["mean"], np.float64), np.asarray(model["std"], np.float64)
    else:
        mean, std = stats_for(cfg)
    return mean * scale, std * scale


def assemble(part_logits, locref, pairwise, cfg, model: dict | None, *, scale: float = 1.0) -> np.ndarray:
    """People of one image: (N_persons, K, 3) float64 x, y, score in network-input pixels, by decreasing summed
    score; a joint a person lacks is (0, 0, 0).

    part_logits (K, H, W); locref (2K, H, W) or None; pairwise (2K(K-1), H, W) or None; cfg: stride, locref_stdev,
    nms_radius, det_min_score, sparse_graph, pairwise_stats_fn; model: a fitted edge classifier (`load_classifier`; it
    carries its pairwise statistics) or None for DEFAULT_WEIGHTS with statistics from cfg.pairwise_stats_fn; scale:
    network pixels per dataset pixel (multiplies the statistics).
    """
    logits = np.asarray(part_logits)
    k = logits.shape[0]
    dets = detect(logits, locref, cfg)
    if len(dets) == 0:
        return np.zeros((0, k, 3))
    mean, std = _stats(model, cfg, scale)
    weights = np.asarray(model["weights"] if model is not None and "weights" in model else DEFAULT_WEIGHTS)
    edges, costs = edge_costs(dets, pairwise, mean, std, cfg, weights, prune=True)  # (E, 2), (E,)
    labels = multicut(len(dets), edges, costs)
    people = np.zeros((labels.max() + 1, k, 3))
    order = np.argsort(dets.score, kind="stable")  # ascending: the best detection of a type is written last
    people[labels[order], dets.k[order]] = np.stack([dets.x[order], dets.y[order], dets.score[order]], axis=1)
    rank = np.argsort(-people[:, :, 2].sum(axis=1), kind="stable")
    return people[rank]


def match_to_gt(dets: Detections, gt: np.ndarray, tol: float) -> np.ndarray:
    """(N,) index of the ground-truth person whose joint of the detection's type is nearest within tol pixels, or -1.
    gt (P, K, 3) x, y, visibility in network-input pixels (visibility 0 = not labelled)."""
    gt = np.asarray(gt, np.float64)
    out = np.full(len(dets), -1, np.int64)
    if len(gt) == 0 or len(dets) == 0:
        return out
    g = gt[:, dets.k]  # (P, N, 3)
    d = np.hypot(g[..., 0] - dets.x[None], g[..., 1] - dets.y[None])  # (P, N)
    d = np.where(g[..., 2] > 0, d, np.inf)
    best = d.argmin(axis=0)
    ok = d[best, np.arange(len(dets))] <= tol
    out[ok] = best[ok]
    return out


def training_pairs(part_logits, locref, pairwise, gt, cfg, mean, std, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """(features (E, 5), same person (E,) bool) of one image's edges between detections matched to the ground truth."""
    dets = detect(part_logits, locref, cfg)
    who = match_to_gt(dets, gt, tol)
    edges, feats, _ = edge_features(dets, pairwise, mean, std, cfg)
    keep = (who[edges[:, 0]] >= 0) & (who[edges[:, 1]] >= 0)
    return feats[keep], who[edges[keep, 0]] == who[edges[keep, 1]]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 50) -> np.ndarray:
    """Weights (F,) minimising mean log-loss + l2 / 2 |w[1:]|^2 (column 0 is the unpenalised bias), Newton's method."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, f = x.shape
    w = np.zeros(f)
    reg = np.full(f, l2)
    reg[0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))  # (n,)
        grad = x.T @ (p - y) / n + reg * w
        hess = (x * (p * (1 - p))[:, None]).T @ x / n + np.diag(reg) + 1e-9 * np.eye(f)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def fit_from_outputs(outputs, cfg, mean, std, *, l2: float = 1e-3) -> dict:
    """The edge classifier from an iterable of (part_logits, locref, pairwise, gt (P, K, 3), scale) per image (network
    outputs and ground truth in network pixels; scale rescales the dataset-pixel statistics mean, std (K, K, 2))."""
    xs, ys = [], []
    images = 0
    uses_pairwise = False
    for part, loc, pw, gt, scale in outputs:
        images += 1
        uses_pairwise = uses_pairwise or pw is not None
        x, y = training_pairs(part, loc, pw, gt, cfg, mean * scale, std * scale, cfg.pos_dist_thresh * scale)
        xs.append(x)
        ys.append(y)
    x = np.concatenate(xs) if xs else np.zeros((0, len(FEATURES)))
    y = np.concatenate(ys) if ys else np.zeros(0, bool)
    if y.sum() == 0 or (~y).sum() == 0:
        raise UserError(f"fit-assembly found {int(y.sum())} same-person and {int((~y).sum())} different-person "
                        f"detection pairs in {images} images: it needs both. Use images with several labelled people "
                        f"each, more images, or a lower det_min_score.")
    w = fit_logistic(x, y, l2)
    p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
    return {"version": MODEL_VERSION, "features": list(FEATURES), "weights": w.tolist(),
            "pairwise": uses_pairwise, "mean": np.asarray(mean).tolist(), "std": np.asarray(std).tolist(),
            "images": images, "positives": int(y.sum()), "negatives": int((~y).sum()),
            "train_accuracy": float(((p > 0.5) == y).mean()), "l2": l2}


def classifier_path(checkpoint: str | Path) -> Path:
    """Where fit-assembly saves the classifier of a checkpoint: `<checkpoint>.assembly.json`."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".assembly.json")


def save_classifier(path: str | Path, model: dict) -> Path:
    """Write the classifier JSON atomically (temp name, then rename)."""
    return write_atomic(path, json.dumps(model, indent=1))


def load_classifier(path: str | Path) -> dict:
    """A classifier saved by `save_classifier`, checked."""
    path = Path(path)
    try:
        model = json.loads(path.read_text())
        ok = (model.get("version") == MODEL_VERSION and list(model["features"]) == list(FEATURES)
              and len(model["weights"]) == len(FEATURES) and all(math.isfinite(v) for v in model["weights"]))
        mean, std = np.asarray(model["mean"]), np.asarray(model["std"])
        ok = ok and mean.ndim == 3 and mean.shape == std.shape and mean.shape[2] == 2 and (std > 0).all()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path} is not an assembly model written by `fastpose fit-assembly` ({e}). Fit it again "
                        f"with `fastpose fit-assembly CONFIG --checkpoint CKPT`.") from None
    if not ok:
        raise UserError(f"{path} is not an assembly model of this fastpose version (version {MODEL_VERSION}, features "
                        f"{', '.join(FEATURES)}). Fit it again with `fastpose fit-assembly CONFIG --checkpoint CKPT`.")
    return model


def classifier_for(cfg: Config, checkpoint: str | Path | None) -> tuple[dict | None, str | None]:
    """(the edge classifier `fastpose fit-assembly` fitted for a snapshot, or None for DEFAULT_WEIGHTS; a note when
    multi-person assembly cannot run: no classifier and no pairwise statistics file)."""
    if checkpoint is not None and classifier_path(checkpoint).is_file():
        return load_classifier(classifier_path(checkpoint)), None
    if Path(cfg.pairwise_stats_fn).is_file():
        return None, None
    return None, (f"multi-person assembly needs `fastpose fit-assembly` for the snapshot or the pairwise statistics "
                  f"{cfg.pairwise_stats_fn} (`fastpose pairwise-stats CONFIG`)")


def assemble_persons(heads: dict, b: int, valid_hw, ratio: torch.Tensor, offset: torch.Tensor | None, scale: float,
                     cfg: Config, classifier: dict | None) -> np.ndarray:
    """Every person of image b of a batch's heads: (P, K, 3) float64 x, y, score in sample pixels (score 0 for a joint
    the person lacks), from `assemble` on the image's cells (decode.valid_grid) only.

    ratio (2,) x, y resize ratio of the image; offset (2,) its crop origin or None; scale: network pixels per dataset
    pixel, which scales the pairwise statistics."""
    gh, gw = valid_grid(torch.as_tensor(valid_hw), cfg.stride).tolist()
    cells = {k: None if heads.get(k) is None else heads[k][b, :, :gh, :gw].float().cpu().numpy()
             for k in ("part", "locref", "pairwise")}  # (C, gh, gw) each
    found = torch.as_tensor(assemble(cells["part"], cells["locref"], cells["pairwise"], cfg, classifier, scale=scale))
    found = found.reshape(-1, cfg.num_joints, 3).float()  # (P, K, 3) network-input pixels
    n = len(found)
    found = to_sample(found, ratio[None].expand(n, 2), None if offset is None else offset[None].expand(n, 2))
    return found.double().numpy()


def _image_outputs(net, cfg, data: ShardDataset, indices, device):
    """(part, locref, pairwise, gt, scale) per shard sample: the network run on the eval-prepared image."""
    for i in indices:
        image = decode_rgb(data.image_bytes(i))
        if image is None:
            raise UserError(f"sample {i} of {data.root}: its image bytes do not decode. Convert the dataset again.")
        prepared, (h, w) = prepare_image(image, cfg)
        scale = h / image.shape[0]
        with torch.no_grad(), autocast(cfg.precision, device):
            heads = infer(net, batch_images([prepared]).to(device), torch.tensor([[h, w]]))  # slim: unpadded
        gt = np.asarray(data.joints(i), np.float64).copy()  # (P, K, 3) sample pixels
        gt[..., :2] = (gt[..., :2] + 0.5) * scale - 0.5
        # Only the cells inside the unpadded image: padding never detects.
        hh, ww = valid_grid(torch.tensor([h, w]), cfg.stride).tolist()
        part, loc, pw = (None if heads.get(name) is None else heads[name][0, :, :hh, :ww].float().cpu().numpy()
                         for name in ("part", "locref", "pairwise"))
        yield part, loc, pw, gt, scale


def fit_assembly(cfg: Config, checkpoint: str | Path, *, out: str | Path | None = None, max_images: int | None = 500,
                 device: str = "auto", l2: float = 1e-3) -> dict:
    """`fastpose fit-assembly`: fit the edge classifier on up to max_images training images of cfg.dataset with the
    checkpoint's network; save it to `out` or `<checkpoint>.assembly.json`. Returns the saved model plus its path."""
    if max_images is not None and max_images < 1:
        raise UserError(f"--max-images {max_images}: must be at least 1 (default 500).")
    dev = pick_device(device)
    net, cfg = load_model(checkpoint, dev, cfg)  # the config's open joint set from the snapshot, checked
    cfg, data_dir = dataset.bind_joints(cfg, quiet=True, what=f"The network of {checkpoint}")  # against the data
    out = out_file(out or classifier_path(checkpoint), "--out", "assembly.json")  # before the fit, not after
    mean, std = stats_for(cfg)
    data = ShardDataset(data_dir, cfg.split)
    n = len(data) if max_images is None else min(len(data), max_images)
    indices = np.random.default_rng(0).permutation(len(data))[:n]
    model = fit_from_outputs(_image_outputs(net, cfg, data, indices, dev), cfg, mean, std, l2=l2)
    model["checkpoint"] = str(checkpoint)
    path = save_classifier(out, model)
    return {**model, "path": str(path)}
