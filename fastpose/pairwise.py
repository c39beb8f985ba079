"""Pairwise statistics: mean and std of the offset between every ordered pair of joints of a person (`pairwise-stats`).

For every person and every ordered pair (s, e), s != e, of its labelled joints, the offset joint_e - joint_s is
collected; per pair and axis the mean and the (population, ddof 0) standard deviation over all persons of a split are
saved. The pairwise head is trained to predict ((joint_e - cell centre) - mean[s, e]) / std[s, e] at the cells of
joint s (fastpose.kernels.pairwise), so these numbers normalise its targets.

Scale: the statistics are computed in the shard samples' pixels (for COCO the original image's pixels, scale 1). A
training sample is resized by its scale s and may be mirrored, so `sample_stats` turns them into each sample's
network-input frame: mean and std times s, and for a mirrored sample the pair (s, e) takes the statistics of the
mirrored pair (perm[s], perm[e]) with the x mean negated (x -> W - 1 - x negates x offsets). The reference computed
them in image pixels too but never rescaled them (it trained pairwise at scale 1 only).

File: `.npz` or `.mat` (chosen by the suffix of cfg.pairwise_stats_fn), written atomically, holding mean (K, K, 2),
std (K, K, 2), count (K, K) persons per pair, and the split it came from. A pair never seen together gets mean 0 and
std 1 (with a warning), and so does the std of a pair whose offsets never vary (one person).

The reference's own `pairwise_stats.mat` (e.g. the released COCO statistics, layout in `reference_stats`) is read
directly wherever fastpose reads its statistics (`load_stats`, `stats_for`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import scipy.io
import torch

from fastpose import dataset
from fastpose.atomic import write_atomic
from fastpose.config import Config
from fastpose.errors import UserError, out_file
from fastpose.shards import ShardDataset

CHUNK = 4096  # persons per numpy block: (CHUNK, K, K, 2) float64 stays small for any K up to ~30


def _offsets(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, K, 3) x, y, visibility -> offsets (P, K, K, 2) joint_e - joint_s and valid (P, K, K) bool."""
    j = np.asarray(joints, np.float64)
    present = (j[..., 2] > 0) & np.isfinite(j[..., :2]).all(axis=-1)  # (P, K)
    k = j.shape[1]
    off = j[:, None, :, :2] - j[:, :, None, :2]  # (P, K_s, K_e, 2)
    valid = present[:, :, None] & present[:, None, :] & ~np.eye(k, dtype=bool)[None]  # (P, K, K)
    return np.where(valid[..., None], off, 0.0), valid


def compute_stats(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (K, K, 2), std (K, K, 2), count (K, K) int64) over persons (P, K, 3); see the module docstring.

    Two passes (sum, then squared deviations from the mean) in float64, CHUNK persons at a time.
    """
    joints = np.asarray(joints)
    if joints.ndim != 3 or joints.shape[-1] != 3:
        raise ValueError(f"joints must be (P, K, 3) x, y, visibility; got {joints.shape}")
    k = joints.shape[1]
    total = np.zeros((k, k, 2))
    count = np.zeros((k, k), np.int64)
    for a in range(0, len(joints), CHUNK):
        off, valid = _offsets(joints[a:a + CHUNK])
        total += off.sum(axis=0)
        count += valid.sum(axis=0)
    seen = count > 0
    mean = np.where(seen[..., None], total / np.maximum(count, 1)[..., None], 0.0)
    sq = np.zeros((k, k, 2))
    for a in range(0, len(joints), CHUNK):
        off, valid = _offsets(joints[a:a + CHUNK])
        sq += np.where(valid[..., None], (off - mean) ** 2, 0.0).sum(axis=0)
    std = np.sqrt(sq / np.maximum(count, 1)[..., None])
    std = np.where(seen[..., None] & (std > 0), std, 1.0)
    return mean, std, count


def stats_from_shards(dataset_dir: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """compute_stats over every person of a shards split (reads only the joints column)."""
    ds = ShardDataset(dataset_dir, split)
    try:
        joints = ds.column("joints").reshape(-1, ds.num_joints, 3)  # (P_total, K, 3)
    finally:
        ds.close()
    return compute_stats(joints)


def _unseen_note(count: np.ndarray) -> str:
    k = count.shape[0]
    unseen = [(s, e) for s in range(k) for e in range(k) if s != e and count[s, e] == 0]
    if not unseen:
        return ""
    shown = ", ".join(f"({s}, {e})" for s, e in unseen[:8]) + (" ..." if len(unseen) > 8 else "")
    return (f"{len(unseen)} of {k * (k - 1)} joint pairs never appear together in one person ({shown}); they get "
            f"mean 0 and std 1, so their pairwise targets are the raw offsets")


def save_stats(path: str | Path, mean: np.ndarray, std: np.ndarray, count: np.ndarray, split: str = "") -> Path:
    """Write the statistics to `path` (.npz or .mat) atomically (a temp name, then os.replace)."""
    path = Path(path)
    data = {"mean": np.asarray(mean, np.float64), "std": np.asarray(std, np.float64),
            "count": np.asarray(count, np.int64), "split": np.array(split)}
    out_file(path, "pairwise_stats_fn (or --out)", "pairwise_stats.npz")
    if path.suffix not in (".npz", ".mat"):
        raise UserError(f"pairwise_stats_fn {path}: the suffix must be .npz or .mat (got '{path.suffix}'). "
                        f"Rename it (pairwise_stats_fn in the config, or --out).")
    # The temp name keeps the suffix, so neither savez nor savemat appends one.
    save = (lambda tmp: np.savez(tmp, **data)) if path.suffix == ".npz" else (lambda tmp: scipy.io.savemat(tmp, data))
    return write_atomic(path, save)


# The reference's pairwise_stats.mat (pose-tensorflow's pairwise_stats.py `save_stats`, read by its
# dataset/pose_dataset.py `load_pairwise_stats`, and DeepLabCut 2.x's copies of both): `graph` (N, 2) 0-based
# [start, end] joint ids, one row per ordered pair s != e in the order s = 0..K-1, e = 0..K-1; `means` and
# `std_devs` (N, 2) the x, y mean and numpy (ddof 0) std of joint_e - joint_s in image pixels at scale 1, as
# fastpose computes them. The released COCO statistics (`pairwise_coco.tar.gz`) are such a file.
REFERENCE_KEYS = {"graph", "means", "std_devs"}


def reference_stats(data: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (K, K, 2), std (K, K, 2), count (K, K)) from the reference's `graph` / `means` / `std_devs` arrays;
    count is 1 for a pair the file lists (it keeps no counts) and 0 otherwise. K = the largest joint id + 1."""
    graph = np.asarray(data["graph"])
    means, stds = np.asarray(data["means"], np.float64), np.asarray(data["std_devs"], np.float64)
    n = len(graph)
    if (graph.ndim != 2 or graph.shape[1] != 2 or n == 0 or means.shape != (n, 2) or stds.shape != (n, 2)
            or not np.issubdtype(graph.dtype, np.number) or not np.all(graph == np.round(graph)) or graph.min() < 0):
        raise ValueError(f"its graph / means / std_devs must be (N, 2) with 0-based joint ids, got {graph.shape}, "
                         f"{means.shape}, {stds.shape}")
    s, e = graph[:, 0].astype(np.int64), graph[:, 1].astype(np.int64)
    if np.any(s == e):
        raise ValueError(f"graph row {int(np.flatnonzero(s == e)[0])} pairs a joint with itself")
    k = int(graph.max()) + 1
    mean, std, count = np.zeros((k, k, 2)), np.ones((k, k, 2)), np.zeros((k, k), np.int64)
    mean[s, e], std[s, e], count[s, e] = means, stds, 1
    return mean, std, count


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(mean (K, K, 2), std (K, K, 2)) float64 from a file written by `save_stats` or the reference's
    pairwise_stats.mat (`reference_stats`); warns about unseen pairs."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The pairwise statistics file {path} does not exist. Compute it with `fastpose "
                        f"pairwise-stats CONFIG` (it writes pairwise_stats_fn of the config), then run this command "
                        f"again.")
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                data = {k: z[k] for k in z.files}
        else:
            data = scipy.io.loadmat(path)
        if REFERENCE_KEYS <= set(data):
            mean, std, count = reference_stats(data)
        else:
            mean, std, count = (np.asarray(data[k]) for k in ("mean", "std", "count"))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path} is not a pairwise statistics file written by `fastpose pairwise-stats` ({e}). "
                        f"Compute it again with `fastpose pairwise-stats CONFIG`.") from None
    count = count.reshape(mean.shape[:2])
    k = mean.shape[0]
    if mean.shape != (k, k, 2) or std.shape != (k, k, 2) or not (np.isfinite(std).all() and (std > 0).all()):
        raise UserError(f"{path}: mean and std must be (K, K, 2) with positive std; got {mean.shape} and "
                        f"{std.shape}. Compute it again with `fastpose pairwise-stats CONFIG`.")
    note = _unseen_note(count)
    if note:
        warnings.warn(f"{path}: {note}", stacklevel=2)
    return mean.astype(np.float64), std.astype(np.float64)


def stats_for(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) (K, K, 2) float64 of cfg.pairwise_stats_fn, checked against the config's joint set."""
    mean, std = load_stats(cfg.pairwise_stats_fn)
    if cfg.num_joints and mean.shape[0] != cfg.num_joints:
        raise UserError(f"{cfg.pairwise_stats_fn} holds statistics for {mean.shape[0]} joints but the dataset has "
                        f"{cfg.num_joints}. Compute them for this dataset with `fastpose pairwise-stats CONFIG`.")
    return mean, std


def write_stats(cfg, out: str | Path | None = None, quiet: bool = False) -> dict:
    """`fastpose pairwise-stats`: statistics of cfg.split of cfg.dataset, saved to `out` or cfg.pairwise_stats_fn."""
    cfg, data_dir = dataset.bind_joints(cfg, quiet=quiet)
    mean, std, count = stats_from_shards(data_dir, cfg.split)
    note = _unseen_note(count)
    if note:
        warnings.warn(note, stacklevel=2)
    path = save_stats(out or cfg.pairwise_stats_fn, mean, std, count, cfg.split)
    k = cfg.num_joints
    return {"path": str(path), "joints": k, "pairs_seen": int(((count > 0) & ~np.eye(k, dtype=bool)).sum()),
            "pairs": k * (k - 1), "note": note}


def sample_stats(mean, std, scale: torch.Tensor, flipped: torch.Tensor | None = None,
                 perm: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample statistics in the network-input frame: ((B, K, K, 2), (B, K, K, 2)) float32 on scale's device.

    mean, std (K, K, 2) in dataset pixels; scale (B,) the samples' scales; flipped (B,) bool and perm (perm[k] = the
    joint id k becomes under mirroring) for mirrored samples (see the module docstring).
    """
    device = scale.device
    m = torch.as_tensor(mean, dtype=torch.float32, device=device)  # (K, K, 2)
    sd = torch.as_tensor(std, dtype=torch.float32, device=device)
    b = scale.shape[0]
    m_b, sd_b = m.expand(b, -1, -1, -1), sd.expand(b, -1, -1, -1)  # (B, K, K, 2)
    if flipped is not None and perm is not None:
        p = torch.as_tensor(perm, dtype=torch.long, device=device)
        m_f = m[p][:, p] * torch.tensor([-1.0, 1.0], device=device)  # pair (s, e) takes (perm s, perm e), x negated
        sd_f = sd[p][:, p]
        f = flipped.to(device=device, dtype=torch.bool)[:, None, None, None]  # (B, 1, 1, 1)
        m_b, sd_b = torch.where(f, m_f, m_b), torch.where(f, sd_f, sd_b)
    s = scale.to(torch.float32)[:, None, None, None]  # (B, 1, 1, 1)
    return (m_b * s).contiguous(), (sd_b * s).contiguous()


__all__ = ["compute_stats", "stats_for", "stats_from_shards", "save_stats", "load_stats", "reference_stats",
           "write_stats", "sample_stats"]
