"""`fastpose synth`: a procedurally drawn, learnable keypoint dataset (the embedded default for the demo and tests).

Each image shows one articulated stick figure with 11 named joints on a textured, cluttered background. Pose (limb
angles), scale, position, image size, colours and clutter vary; left limbs are drawn blue and right limbs red, so left
and right are visible (the demo trains without mirroring, which would swap the colour cue). Joints that fall outside the
image are left unlabelled, as in real data. The output is the seed format: `dataset.mat` (struct array `dataset` with
image, size, joints) beside an `images/` folder of PNGs, so `fastpose convert mat` reads it like a user's own data.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from fastpose.atomic import write_atomic
from fastpose.errors import UserError, out_folder

JOINT_NAMES = ["head", "neck", "pelvis", "r_elbow", "r_wrist", "l_elbow", "l_wrist", "r_knee", "r_ankle", "l_knee",
               "l_ankle"]
ALL_JOINTS = [[0], [1], [2], [3, 5], [4, 6], [7, 9], [8, 10]]
ALL_JOINTS_NAMES = ["head", "neck", "pelvis", "elbow", "wrist", "knee", "ankle"]
SKELETON = [[0, 1], [1, 2], [1, 3], [3, 4], [1, 5], [5, 6], [2, 7], [7, 8], [2, 9], [9, 10]]
RIGHT, LEFT = (220, 50, 40), (40, 80, 230)  # RGB


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-frequency colour noise plus clutter (lines, circles, rectangles) in muted colours. (H, W, 3) uint8 RGB."""
    coarse = rng.uniform(40, 200, size=(rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.float32)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 12, size=(h, w, 3)).astype(np.float32)  # fine texture
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(3, 9)):
        grey = int(rng.integers(30, 220))
        colour = tuple(int(np.clip(grey + rng.normal(0, 25), 0, 255)) for _ in range(3))  # muted: close to grey
        kind = rng.integers(3)
        p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if kind == 0:
            q = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, p, q, colour, int(rng.integers(1, 5)), cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(img, p, int(rng.integers(3, 20)), colour, -1, cv2.LINE_AA)
        else:
            q = (p[0] + int(rng.integers(-30, 30)), p[1] + int(rng.integers(-30, 30)))
            cv2.rectangle(img, p, q, colour, -1)
    return img


def _figure(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Joint positions (11, 2) of one random pose that fits (mostly) in an h x w image."""
    size = rng.uniform(0.13, 0.22) * min(h, w)  # torso length in pixels
    tilt = rng.normal(0, 0.25)  # torso angle from vertical
    up = np.array([math.sin(tilt), -math.cos(tilt)])
    pelvis = np.array([rng.uniform(0.3, 0.7) * w, rng.uniform(0.5, 0.62) * h])
    neck = pelvis + size * up
    head = neck + 0.45 * size * up
    j = np.zeros((11, 2))
    j[0], j[1], j[2] = head, neck, pelvis

    def limb(start, base_angle, spread, length):
        a = base_angle + rng.uniform(-spread, spread)
        return start + length * np.array([math.cos(a), math.sin(a)]), a

    down = math.atan2(-up[1], -up[0])
    # image right is the figure's left (it faces the camera): right limbs start towards image left.
    j[3], a = limb(neck, down + 0.9, 1.1, 0.7 * size)
    j[4], _ = limb(j[3], a, 1.3, 0.6 * size)
    j[5], a = limb(neck, down - 0.9, 1.1, 0.7 * size)
    j[6], _ = limb(j[5], a, 1.3, 0.6 * size)
    j[7], a = limb(pelvis, down + 0.25, 0.45, 0.85 * size)
    j[8], _ = limb(j[7], a, 0.6, 0.8 * size)
    j[9], a = limb(pelvis, down - 0.25, 0.45, 0.85 * size)
    j[10], _ = limb(j[9], a, 0.6, 0.8 * size)
    return j


def draw_sample(rng: np.random.Generator, sizes: tuple[int, int] = (144, 208)) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3) uint8 RGB, H and W in [sizes], and its joints (11, 3) x, y, visibility (0 outside)."""
    h, w = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, size=2))
    img = _background(rng, h, w)
    j = _figure(rng, h, w)
    size = np.linalg.norm(j[1] - j[2])
    thick = max(2, int(round(0.16 * size)))
    jitter = rng.integers(-25, 26, size=3)

    def col(c):
        return tuple(int(np.clip(v + d, 0, 255)) for v, d in zip(c, jitter))

    def seg(a, b, colour, t=thick):
        pa, pb = (int(round(j[a][0] * 4)), int(round(j[a][1] * 4))), (int(round(j[b][0] * 4)), int(round(j[b][1] * 4)))
        cv2.line(img, pa, pb, colour, t, cv2.LINE_AA, shift=2)

    seg(1, 2, col((230, 200, 60)), int(thick * 1.8))  # torso
    for a, b, c in ((1, 3, RIGHT), (3, 4, RIGHT), (2, 7, RIGHT), (7, 8, RIGHT), (1, 5, LEFT), (5, 6, LEFT),
                    (2, 9, LEFT), (9, 10, LEFT)):
        seg(a, b, col(c))
    head_r = int(round(0.28 * size * 4))
    cv2.circle(img, (int(round(j[0][0] * 4)), int(round(j[0][1] * 4))), head_r, col((240, 215, 175)), -1, cv2.LINE_AA,
               shift=2)
    for k in range(1, 11):  # darker joint discs give a local cue at each joint
        cv2.circle(img, (int(round(j[k][0] * 4)), int(round(j[k][1] * 4))), int(thick * 0.7 * 4), (30, 30, 30), -1,
                   cv2.LINE_AA, shift=2)
    inside = (j[:, 0] >= 0) & (j[:, 0] <= w - 1) & (j[:, 1] >= 0) & (j[:, 1] <= h - 1)
    joints = np.concatenate([j, np.where(inside, 2.0, 0.0)[:, None]], axis=1)
    return img, joints


def make_dataset(out: str | Path, n: int = 500, seed: int = 0, sizes: tuple[int, int] = (144, 208)) -> Path:
    """Write `out/dataset.mat` and `out/images/*.png` (image sides in [sizes]); returns the .mat path."""
    out = Path(out)
    if n <= 0:
        raise UserError(f"--n {n}: the number of images must be positive.")
    if not 32 <= sizes[0] <= sizes[1]:
        raise UserError(f"--min-size {sizes[0]} --max-size {sizes[1]}: need 32 <= min-size <= max-size.")
    out_folder(out / "images", "--out")
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        img, joints = draw_sample(rng, sizes)
        name = f"images/img{i:05d}.png"
        cv2.imwrite(str(out / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        rows = [[k, joints[k, 0], joints[k, 1]] for k in range(len(JOINT_NAMES)) if joints[k, 2] > 0]
        person = np.empty((1, 1), dtype=object)
        person[0, 0] = np.array(rows, dtype=np.float64).reshape(-1, 3)
        records.append((name, np.array([3, img.shape[0], img.shape[1]], dtype=np.float64), person))
    dataset = np.empty((1, n), dtype=[("image", object), ("size", object), ("joints", object)])
    for i, rec in enumerate(records):
        dataset[0, i] = rec
    return write_atomic(out / "dataset.mat", lambda tmp: scipy.io.savemat(tmp, {"dataset": dataset}))
