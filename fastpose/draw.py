"""Drawing poses on images: joints as dots and skeleton edges as lines, coloured by confidence or by person.

Used by `fastpose predict`, the trainer's TensorBoard images and the demo's picture. Images are (H, W, 3) uint8 RGB;
joints are in the image's pixels (pixel centres at integer coordinates, the project's convention).
"""

from __future__ import annotations

import cv2
import numpy as np


def score_colour(score: float) -> tuple[int, int, int]:
    """RGB colour of a confidence in [0, 1]: red (0) through yellow (0.5) to green (1)."""
    s = float(np.clip(score, 0.0, 1.0)) if np.isfinite(score) else 0.0
    return (int(round(255 * min(1.0, 2 - 2 * s))), int(round(255 * min(1.0, 2 * s))), 0)


def person_colour(index: int) -> tuple[int, int, int]:
    """RGB colour of person `index`: hues spaced by the golden angle (neighbours differ strongly), full brightness."""
    hue = int(round(((index * 0.618033988749895) % 1.0) * 179))  # OpenCV hue range 0..179
    hsv = np.array([[[hue, 210, 255]]], np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_pose(image: np.ndarray, joints, scores=None, skeleton=None, min_score: float = 0.0,
              colour: tuple[int, int, int] | None = None) -> np.ndarray:
    """A copy of `image` (H, W, 3) uint8 RGB with the skeleton drawn: joints as dots, edges as lines, each coloured
    by confidence (red -> green; an edge takes the weaker of its two joints), or all in `colour` when given (one
    colour per person: `draw_persons`). Joints with score < min_score or non-finite coordinates are not drawn, nor
    their edges.

    joints (K, 2+) x, y in the image's pixels; scores (K,) (default: joints[:, 2] when present, else all 1);
    skeleton a list of [a, b] joint-id pairs.
    """
    img = np.ascontiguousarray(image.copy())
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    joints = np.asarray(joints, dtype=np.float64)
    if scores is None:
        scores = joints[:, 2] if joints.shape[1] > 2 else np.ones(len(joints))
    scores = np.asarray(scores, dtype=np.float64)
    shown = np.isfinite(joints[:, :2]).all(axis=1) & (scores >= min_score)  # (K,)
    size = max(img.shape[0], img.shape[1])
    thickness = max(1, int(round(size / 250)))
    radius = max(2, int(round(size / 120)))
    # cv2 draws at integer pixel centres; shift=4 gives 1/16-pixel precision for the sub-pixel joint positions.
    pts = np.round(np.nan_to_num(joints[:, :2]) * 16).astype(np.int64)
    for a, b in skeleton or []:
        if a < len(joints) and b < len(joints) and shown[a] and shown[b]:
            line = colour or score_colour(min(scores[a], scores[b]))
            cv2.line(img, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]), line, thickness,
                     cv2.LINE_AA, shift=4)
    for k in np.flatnonzero(shown):
        centre = tuple(int(v) for v in pts[k])
        cv2.circle(img, centre, radius * 16, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
        cv2.circle(img, centre, max(1, radius - 1) * 16, colour or score_colour(scores[k]), -1, cv2.LINE_AA, shift=4)
    return img


def draw_persons(image: np.ndarray, persons, skeleton=None, min_score: float = 0.0) -> np.ndarray:
    """A copy of `image` with every person of persons (N, K, 3) x, y, score drawn in its own colour (person_colour)."""
    img = image
    for i, pose in enumerate(np.asarray(persons, np.float64)):
        img = draw_pose(img, pose[:, :2], pose[:, 2], skeleton, min_score, colour=person_colour(i))
    return np.ascontiguousarray(image.copy()) if len(persons) == 0 else img
