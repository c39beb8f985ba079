"""Pictures of evaluation errors (`fastpose eval --plot`): one image per sample with labelled and predicted joints, and
a summary chart of the pixel error per joint and its distribution. Drawn with OpenCV, no plotting library.

Images are (H, W, 3) uint8 RGB; joints are in the image's pixels (pixel centres at integer coordinates).
"""

from __future__ import annotations

import cv2
import numpy as np

from fastpose.draw import person_colour, score_colour

# Predictions below the p-cutoff are blended into the image at this opacity: visible, but clearly not trusted.
FADED = 0.35
LABEL = (255, 255, 255)  # labelled joints: white crosses
MISSED = (255, 0, 255)  # labelled joints of a person no prediction was matched to: magenta crosses
PAIR = (0, 255, 255)  # the line from a labelled joint to its prediction
MIN_SIDE = 400  # smaller images are enlarged to this long side so that markers stay readable
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _pt(xy, scale: float) -> tuple[int, int]:
    """Image pixel (x, y) -> the enlarged picture's integer pixel (pixel centres map (x + 0.5) s - 0.5)."""
    return int(round((xy[0] + 0.5) * scale - 0.5)), int(round((xy[1] + 0.5) * scale - 0.5))


def error_image(image: np.ndarray, gt, pred, match, pcutoff: float = 0.6, skeleton=None, title: str = "") -> np.ndarray:
    """A picture of one sample's errors: labelled joints as crosses (white; magenta for a person not found), the
    predictions as dots coloured by score (`draw.score_colour`, red 0 to green 1) and faded below pcutoff, a line
    from each labelled joint to its prediction, and `title` on a dark band on top.

    image (H, W, 3) uint8 RGB; gt (G, K, 3) x, y, visibility (> 0: labelled); pred (P, K, 3) x, y, score (NaN: not
    predicted); match (G,) the prediction of each labelled person or -1; skeleton [a, b] pairs drawn thinly between
    predicted joints. Images with a long side under MIN_SIDE are enlarged first.
    """
    img = np.ascontiguousarray(image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2))
    h, w = img.shape[:2]
    scale = max(1.0, MIN_SIDE / max(h, w))
    if scale > 1:
        img = cv2.resize(img, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_LINEAR)
    size = max(img.shape[:2])
    thick, radius, marker = max(1, size // 400), max(3, size // 110), max(7, size // 55)
    gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
    solid, faint = img.copy(), img.copy()  # predictions >= pcutoff go on `solid`, the others on `faint`
    for g, person in enumerate(gt):
        p = int(match[g])
        for k in np.flatnonzero(person[:, 2] > 0):
            if p >= 0 and np.isfinite(pred[p, k]).all():
                layer = solid if pred[p, k, 2] >= pcutoff else faint
                cv2.line(layer, _pt(person[k], scale), _pt(pred[p, k], scale), PAIR, thick, cv2.LINE_AA)
    for p, pose in enumerate(pred):
        ok = np.isfinite(pose).all(axis=1)  # (K,)
        for a, b in skeleton or []:
            if a < len(pose) and b < len(pose) and ok[a] and ok[b]:
                layer = solid if min(pose[a, 2], pose[b, 2]) >= pcutoff else faint
                cv2.line(layer, _pt(pose[a], scale), _pt(pose[b], scale), person_colour(p), thick, cv2.LINE_AA)
        for k in np.flatnonzero(ok):
            layer = solid if pose[k, 2] >= pcutoff else faint
            centre = _pt(pose[k], scale)
            cv2.circle(layer, centre, radius + 1, (0, 0, 0), -1, cv2.LINE_AA)
            cv2.circle(layer, centre, radius, score_colour(pose[k, 2]), -1, cv2.LINE_AA)
    # Faded drawings blended in at FADED opacity; pixels nothing was drawn on are equal in both and stay unchanged.
    out = cv2.addWeighted(faint, FADED, img, 1 - FADED, 0)
    drawn = np.any(solid != img, axis=2)  # (H', W') pixels of trusted predictions: drawn fully
    out[drawn] = solid[drawn]
    for g, person in enumerate(gt):
        colour = LABEL if int(match[g]) >= 0 else MISSED
        for k in np.flatnonzero(person[:, 2] > 0):
            centre = _pt(person[k], scale)
            cv2.drawMarker(out, centre, (0, 0, 0), cv2.MARKER_TILTED_CROSS, marker, thick + 2, cv2.LINE_AA)
            cv2.drawMarker(out, centre, colour, cv2.MARKER_TILTED_CROSS, marker, thick, cv2.LINE_AA)
    if title:
        band = 22 + 6 * (size // 600)
        font = 0.5 * band / 22
        out = np.concatenate([np.full((band, out.shape[1], 3), 32, np.uint8), out])
        cv2.putText(out, title, (6, band - 7), FONT, font, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.putText(out, f"x labelled  o predicted (faded: score < {pcutoff:g})", (out.shape[1] // 2, band - 7),
                    FONT, font * 0.8, (200, 200, 200), 1, cv2.LINE_AA)
    return out


SPLIT_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def _axes(img: np.ndarray, box: tuple[int, int, int, int], top: float, title: str, xlabel: str, ylabel: str,
          ticks: int = 5, fmt: str = "{:g}") -> None:
    """Frame, title, axis labels and y ticks 0..top of a chart occupying box (x0, y0, x1, y1) of img, in place."""
    x0, y0, x1, y1 = box
    cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
    for t in range(ticks + 1):
        value = top * t / ticks
        y = int(round(y1 - (y1 - y0) * t / ticks))
        cv2.line(img, (x0 - 4, y), (x0, y), (0, 0, 0), 1)
        cv2.line(img, (x0 + 1, y), (x1 - 1, y), (225, 225, 225), 1)
        cv2.putText(img, fmt.format(value), (x0 - 48, y + 4), FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, title, (x0, y0 - 12), FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, xlabel, ((x0 + x1) // 2 - 4 * len(xlabel), y1 + 62), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    label = np.full((18, 8 * len(ylabel) + 8, 3), 255, np.uint8)
    cv2.putText(label, ylabel, (2, 13), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    label = np.rot90(label)  # vertical text, read bottom to top
    ly = max(0, (y0 + y1) // 2 - label.shape[0] // 2)
    img[ly:ly + label.shape[0], x0 - 72:x0 - 72 + label.shape[1]] = label[:img.shape[0] - ly]


def _nice(value: float) -> float:
    """The smallest 1, 2 or 5 x 10^n >= value (a chart's top), 1 for nothing to show."""
    if not np.isfinite(value) or value <= 0:
        return 1.0
    base = 10 ** np.floor(np.log10(value))
    return float(next(m * base for m in (1, 2, 5, 10) if m * base >= value))


def summary_image(splits: dict, joint_names: list[str], width: int = 1200, height: int = 520) -> np.ndarray:
    """The summary chart, (height, width, 3) uint8 RGB: left, the mean pixel error per joint as bars, one colour per
    split; right, the error distribution: the fraction of labelled joints with error <= x, one curve per split.

    splits {name: {"per_joint": (K,) mean error per joint (NaN: none), "errors": 1-D finite errors, "mean": float or
    None}}, in the order drawn.
    """
    img = np.full((height, width, 3), 255, np.uint8)
    names = list(splits)
    colours = {name: SPLIT_COLOURS[i % len(SPLIT_COLOURS)] for i, name in enumerate(names)}
    per_joint = np.array([np.asarray(splits[n]["per_joint"], np.float64) for n in names]).reshape(len(names), -1)
    k = per_joint.shape[1]
    # Left: bars. Box (x0, y0, x1, y1); joints spread evenly, the splits' bars side by side within a joint's slot.
    box = (90, 50, width // 2 - 30, height - 110)
    top = _nice(np.nanmax(per_joint) if np.isfinite(per_joint).any() else 0.0)
    _axes(img, box, top, "mean error per joint", "joint", "error (px)")
    x0, y0, x1, y1 = box
    slot = (x1 - x0) / max(k, 1)
    bar = max(1.0, 0.8 * slot / max(len(names), 1))
    for j in range(k):
        for s, name in enumerate(names):
            v = per_joint[s, j]
            if np.isfinite(v):
                left = int(round(x0 + j * slot + 0.1 * slot + s * bar))
                cv2.rectangle(img, (left, int(round(y1 - (y1 - y0) * min(v, top) / top))),
                              (int(round(left + bar - 1)), y1), colours[name], -1)
        text = joint_names[j] if j < len(joint_names) else str(j)
        label = np.full((16, 7 * min(len(text), 14) + 6, 3), 255, np.uint8)
        cv2.putText(label, text[:14], (2, 12), FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        label = np.rot90(label)  # (w, 16, 3): names read upwards under their slot
        cx = int(round(x0 + (j + 0.5) * slot)) - 8
        label = label[-56:]  # at most 56 rows under the axis, the start of the name kept
        img[y1 + 4:y1 + 4 + label.shape[0], cx:cx + 16] = label
    # Right: cumulative distribution of the errors, x up to the largest 99th percentile.
    box = (width // 2 + 90, 50, width - 40, height - 110)
    finite = [np.sort(np.asarray(splits[n]["errors"], np.float64)) for n in names]
    xmax = _nice(max((np.percentile(e, 99) for e in finite if e.size), default=0.0))
    _axes(img, box, 1.0, "error distribution", "error (px)", "fraction of joints", fmt="{:.1f}")
    x0, y0, x1, y1 = box
    for t in range(6):
        x = int(round(x0 + (x1 - x0) * t / 5))
        cv2.line(img, (x, y1), (x, y1 + 4), (0, 0, 0), 1)
        cv2.putText(img, f"{xmax * t / 5:g}", (x - 10, y1 + 18), FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    for name, errors in zip(names, finite):
        if errors.size:
            xs = np.concatenate([[0.0], errors])
            ys = np.concatenate([[0.0], np.arange(1, errors.size + 1) / errors.size])  # fraction with error <= x
            pts = np.stack([x0 + (x1 - x0) * np.minimum(xs, xmax) / xmax, y1 - (y1 - y0) * ys], axis=1)
            cv2.polylines(img, [np.round(pts).astype(np.int32)], False, colours[name], 2, cv2.LINE_AA)
    # Legend: one line per split with its mean.
    for s, name in enumerate(names):
        mean = splits[name].get("mean")
        y, x = height - 14, 90 + s * 300
        cv2.rectangle(img, (x, y - 10), (x + 14, y + 2), colours[name], -1)
        text = f"{name}: {'-' if mean is None else f'{mean:.2f}'} px mean, {np.size(splits[name]['errors'])} joints"
        cv2.putText(img, text, (x + 20, y), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img
