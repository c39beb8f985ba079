"""Pose tracks of a video: DeepLabCut-compatible tables (the `.h5` and `.csv` of DeepLabCut's analyze_videos) and
the tracker that keeps people's identities from frame to frame (`fastpose analyze --multi-person`).

Tables: index = frame number, float64 columns MultiIndex (scorer, [individuals,] bodyparts, coords) with coords
x, y, likelihood in the video's pixels (pixel centres at integer coordinates), NaN where a joint or person is
missing. The h5 is written by pandas + PyTables under key "df_with_missing" in table format, as DeepLabCut writes
it, plus the `pandas_version` attribute that pandas >= 3.1 no longer writes and pandas <= 3.0 needs to read the file
(pandas-dev/pandas#62792).

Tracker: each frame's people are matched to the live tracks by an optimal assignment (scipy's
linear_sum_assignment) on 1 - similarity, the similarity being OKS or box IoU between the person and the track's
position predicted at constant velocity from its last two observations; pairs below `min_similarity` are not
matched. Unmatched people start tracks; a track unseen for more than `max_gap` frames ends. The constant-velocity
prediction is what carries identities through a crossing: two people passing each other are matched to where each
was heading, not to where the other one was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from fastpose import metrics
from fastpose.atomic import write_atomic
from fastpose.errors import USER_FIXABLE_ERRNOS, UserError

H5_KEY = "df_with_missing"
# The value pandas 0.15.2 - 3.0 write; pandas <= 3.0 reads a table without it as a pre-0.10.1 file and fails.
PANDAS_VERSION_ATTR = "0.15.2"
OKS_KAPPA = 0.1  # per-joint OKS constant (COCO's sigmas are 0.025-0.107; kappa = 2 sigma for a mid-sized joint)


def scorer_name(net_type: str, iteration: int) -> str:
    """DeepLabCut-style scorer (its tools find `<video stem><scorer>.h5` by this prefix and expect 'DLC' in it)."""
    return f"DLC_{net_type.replace('_', '').capitalize()}_fastpose_snapshot_{int(iteration)}"


def dlc_table(poses: np.ndarray, index, scorer: str, bodyparts: list[str],
              individuals: list[str] | None = None) -> pd.DataFrame:
    """DeepLabCut's table of poses (N, K, 3) (or (N, T, K, 3) with individuals) x, y, likelihood, rows = frames."""
    poses = np.asarray(poses, np.float64)
    if individuals is None:
        columns = pd.MultiIndex.from_product([[scorer], bodyparts, ["x", "y", "likelihood"]],
                                             names=["scorer", "bodyparts", "coords"])
    else:
        columns = pd.MultiIndex.from_product([[scorer], individuals, bodyparts, ["x", "y", "likelihood"]],
                                             names=["scorer", "individuals", "bodyparts", "coords"])
    return pd.DataFrame(poses.reshape(len(poses), -1), index=pd.Index(np.asarray(index, np.int64)), columns=columns)


def _put_h5(tmp: Path, table: pd.DataFrame) -> None:
    with pd.HDFStore(tmp, mode="w") as store:
        store.put(H5_KEY, table, format="table", track_times=False)
        store.get_storer(H5_KEY).attrs.pandas_version = PANDAS_VERSION_ATTR


def write_table(path: str | Path, table: pd.DataFrame) -> tuple[Path, Path]:
    """Write `<path>.h5` and `<path>.csv` (path without suffix), each atomically; a full disk is a UserError and
    leaves neither file's temp behind."""
    path = Path(path)
    h5, csv = path.with_name(path.name + ".h5"), path.with_name(path.name + ".csv")
    try:
        write_atomic(h5, lambda tmp: _put_h5(tmp, table))
        write_atomic(csv, lambda tmp: table.to_csv(tmp))
    except OSError as e:
        if e.errno not in USER_FIXABLE_ERRNOS:
            raise
        raise UserError(f"Could not write {h5.name} / {csv.name} in {path.parent} ({e.strerror or e}); nothing "
                        f"partial was left. Free space there (or pass another --out) and run again with "
                        f"--skip-existing to continue after the videos already done.") from None
    return h5, csv


def read_table(path: str | Path) -> pd.DataFrame:
    """A table written by `write_table` (or by DeepLabCut)."""
    return pd.read_hdf(path, H5_KEY)


def _visible(pose: np.ndarray) -> np.ndarray:
    """(K,) bool: joints with finite coordinates and a positive score."""
    return np.isfinite(pose[:, :2]).all(axis=1) & (np.nan_to_num(pose[:, 2]) > 0)


def _box(pose: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(4,) x0, y0, x1, y1 of the joints in mask, widened to at least 1 px per side (a line of joints has an area)."""
    xy = pose[mask, :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    pad = np.maximum(1.0 - (hi - lo), 0) / 2
    return np.concatenate([lo - pad, hi + pad])


def oks(a: np.ndarray, b: np.ndarray, kappa: float = OKS_KAPPA) -> float:
    """Object keypoint similarity of two poses (K, 3): mean over joints visible in both of exp(-d^2 / (2 s^2 k^2)),
    s^2 = the larger of the two poses' box areas; 0 when they share no joint."""
    both = _visible(a) & _visible(b)
    if not both.any():
        return 0.0
    area = max(float(np.prod(np.diff(_box(p, _visible(p)).reshape(2, 2), axis=0))) for p in (a, b))
    # metrics.oks's formula (pycocotools' computeOks) with kappa = 2 sigma, over the joints both poses have
    sigmas = np.full(len(a), kappa / 2)
    return float(metrics.oks(b[None, :, :2], a[None, :, :2], both[None], [area], sigmas)[0, 0])


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the boxes around two poses' visible joints (K, 3); 0 when either has none."""
    va, vb = _visible(a), _visible(b)
    if not va.any() or not vb.any():
        return 0.0
    ba, bb = _box(a, va), _box(b, vb)
    iw = max(0.0, min(ba[2], bb[2]) - max(ba[0], bb[0]))
    ih = max(0.0, min(ba[3], bb[3]) - max(ba[1], bb[1]))
    inter = iw * ih
    union = (ba[2] - ba[0]) * (ba[3] - ba[1]) + (bb[2] - bb[0]) * (bb[3] - bb[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class Tracker:
    """Identities across frames (see the module's docstring). `update(frame, persons)` -> a track id per person."""

    def __init__(self, max_gap: int = 10, metric: str = "oks", min_similarity: float = 0.05):
        if metric not in ("oks", "iou"):
            raise ValueError(f"metric must be one of oks, iou; got {metric!r}")
        if max_gap < 0:
            raise ValueError(f"max_gap must be >= 0; got {max_gap}")
        self.max_gap, self.metric, self.min_similarity = max_gap, metric, min_similarity
        self.count = 0  # tracks started so far (ids 0 .. count - 1)
        # live tracks: id -> (last frame, last pose (K, 3), velocity (2,) pixels per frame of the visible joints' mean)
        self.live: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}

    def _predict(self, track: int, frame: int) -> np.ndarray:
        last, pose, velocity = self.live[track]
        out = pose.copy()
        out[:, :2] += velocity * (frame - last)
        return out

    def update(self, frame: int, persons: np.ndarray) -> list[int]:
        persons = np.asarray(persons, np.float64)  # (P, K, 3)
        self.live = {t: v for t, v in self.live.items() if frame - v[0] - 1 <= self.max_gap}  # frames unseen
        tracks = sorted(self.live)
        sim_fn = oks if self.metric == "oks" else box_iou
        sim = np.zeros((len(persons), len(tracks)))
        for j, t in enumerate(tracks):
            predicted = self._predict(t, frame)
            for i, person in enumerate(persons):
                sim[i, j] = sim_fn(person, predicted)
        ids = [-1] * len(persons)
        if sim.size:
            rows, cols = linear_sum_assignment(1.0 - sim)
            for i, j in zip(rows, cols):
                if sim[i, j] >= self.min_similarity:
                    ids[i] = tracks[j]
        for i, person in enumerate(persons):
            vis = _visible(person)
            if ids[i] < 0:
                if not vis.any():
                    continue  # nobody to follow: a person without a single joint starts no track
                ids[i] = self.count
                self.count += 1
                velocity = np.zeros(2)
            else:
                last, pose, velocity = self.live[ids[i]]
                both = vis & _visible(pose)
                if both.any():
                    velocity = (person[both, :2] - pose[both, :2]).mean(axis=0) / max(frame - last, 1)
            self.live[ids[i]] = (frame, person, velocity)
        return ids
