"""`fastpose predict`: run a trained model on image files and write the joints (JSON) and a drawing (PNG) per image.

Images are decoded with OpenCV, resized by the config's global_scale (bilinear, the pipeline's pixel convention), padded
to a multiple of 16 and run in batches on the CPU or GPU; `fastpose.decode` turns the heads' outputs into joints in the
original image's pixels. `draw_pose` is also what the trainer's TensorBoard images and the demo use.
"""

from __future__ import annotations

import glob
import json
import math
from pathlib import Path

import cv2
import numpy as np
import torch

from fastpose.atomic import write_atomic
from fastpose.errors import UserError, out_folder

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PAD_MULTIPLE = 16  # the backbone's output stride: 2 * ceil(H / 16) cells at stride 8


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


def expand_inputs(items: list[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image paths, in order, without duplicates."""
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            if not found:
                raise UserError(f"{p} is a folder without images ({', '.join(IMAGE_SUFFIXES)}). Pass image files, a "
                                f"folder of images or a glob such as '{p}/*.jpg'.")
            paths += found
        elif p.is_file():
            paths.append(p)
        elif glob.has_magic(item):
            found = sorted(Path(q) for q in glob.glob(item, recursive=True) if Path(q).is_file())
            if not found:
                raise UserError(f"The pattern '{item}' matched no files. Check the path (quote the pattern so the "
                                f"shell does not expand it).")
            paths += found
        else:
            raise UserError(f"{item} does not exist. Pass image files, folders or glob patterns.")
    seen, unique = set(), []
    for p in paths:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def read_image(path: Path, where: str = "") -> np.ndarray:
    """(H, W, 3) uint8 RGB, or UserError for a file OpenCV cannot decode (`where` is added after the path)."""
    data = np.fromfile(str(path), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise UserError(f"{path}{where} could not be decoded as an image. Pass PNG/JPEG files, or remove this one.")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def prepare(image: np.ndarray, cfg) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) uint8 RGB -> ((h, w, 3) float32 network input, (h, w)) as the eval pipeline makes it: scale =
    global_scale (clamped by min/max_input_size, `pipeline.sample_params`), resized to floor(W s) x floor(H s) with the
    pixel-centre convention, mean_pixel subtracted."""
    from fastpose.pipeline import Augment, sample_params

    h, w = image.shape[:2]
    aug = Augment(train=False, global_scale=float(cfg.global_scale), jitter_lo=1.0, jitter_up=1.0, mirror=False,
                  max_input_size=int(cfg.max_input_size), min_input_size=int(cfg.min_input_size), crop_w=0,
                  crop_h=0, seed=0, perm=())
    p = sample_params(aug, 0, 0, w, h, np.zeros((0, max(cfg.num_joints, 1), 3), np.float32))
    if (p.res_w, p.res_h) != (w, h):
        # Area averaging when shrinking (antialiased, as DALI's resize), bilinear when enlarging; both map pixel
        # centres x -> (x + 0.5) * (w' / w) - 0.5.
        shrink = p.res_w < w or p.res_h < h
        image = cv2.resize(image, (p.res_w, p.res_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    net = image.astype(np.float32) - np.asarray(cfg.mean_pixel, np.float32)  # (h, w, 3)
    return net, (p.res_h, p.res_w)


def batch_images(prepared: list[np.ndarray]) -> torch.Tensor:
    """(B, 3, H, W) float32, each image padded with 0 (after mean subtraction, as the pipeline) to the batch's
    largest size rounded up to a multiple of 16."""
    hmax = math.ceil(max(a.shape[0] for a in prepared) / PAD_MULTIPLE) * PAD_MULTIPLE
    wmax = math.ceil(max(a.shape[1] for a in prepared) / PAD_MULTIPLE) * PAD_MULTIPLE
    out = np.zeros((len(prepared), 3, hmax, wmax), np.float32)
    for i, a in enumerate(prepared):
        out[i, :, :a.shape[0], :a.shape[1]] = a.transpose(2, 0, 1)
    return torch.from_numpy(out)


@torch.no_grad()
def _forward(model, cfg, images: list[np.ndarray], device: torch.device):
    """Heads of a list of (H, W, 3) uint8 RGB images: (heads dict, valid_hw (B, 2) resized h, w, ratio (B, 2) x, y)."""
    from fastpose.evaluate import autocast

    prepared = [prepare(im, cfg) for im in images]
    batch = batch_images([p[0] for p in prepared]).to(device)
    valid_hw = torch.tensor([p[1] for p in prepared], dtype=torch.int64)  # (B, 2) resized h, w
    with autocast(cfg, device):
        heads = model(batch)
    orig = torch.tensor([im.shape[:2] for im in images], dtype=torch.float64)  # (B, 2) H, W
    ratio = (valid_hw.double() / orig).flip(1)  # (B, 2) x, y: the real resize ratios
    return heads, valid_hw, ratio


def _single(heads: dict, valid_hw: torch.Tensor, ratio: torch.Tensor, cfg) -> np.ndarray:
    """(B, K, 3) x, y, score in image pixels: the best cell per joint (single-person decoding)."""
    from fastpose.decode import decode, to_sample

    joints = decode(heads["part"], heads["locref"], cfg.stride, cfg.locref_stdev,
                    valid_hw.to(heads["part"].device)).cpu()
    return to_sample(joints, ratio).double().numpy()


def _persons(heads: dict, valid_hw: torch.Tensor, ratio: torch.Tensor, cfg, assembly: dict | None) -> list:
    """Per image, every person (multi-person assembly): (P_i, K, 3) x, y, score in image pixels, score 0 for a joint
    the person lacks. `assembly` is the fitted edge classifier (fastpose fit-assembly) or None for its defaults."""
    from fastpose.evaluate import assemble_persons

    return [assemble_persons(heads, b, valid_hw[b], ratio[b], None, float(ratio[b].mean()), cfg, assembly)
            for b in range(len(valid_hw))]


@torch.no_grad()
def predict_images(model, cfg, images: list[np.ndarray], device: torch.device) -> np.ndarray:
    """Joints of a list of (H, W, 3) uint8 RGB images: (N, K, 3) x, y, score in each image's own pixels."""
    return _single(*_forward(model, cfg, images, device), cfg)


def predict(checkpoint: str | Path, inputs: list[str], out_dir: str | Path, *, batch_size: int = 8,
            device: str = "auto", min_score: float = 0.0, cfg=None, multi_person: bool | None = None,
            skip_bad: bool = False, skipped: list | None = None) -> list[dict]:
    """Run a snapshot on images; write <name>.json (joints with names, x, y, score in the image's pixels) and
    <name>.png (the skeleton drawn) per image into out_dir. Returns the JSON documents.

    skip_bad: an input that cannot be decoded is skipped and appended to `skipped` as (path, reason) instead of
    stopping the run (whose earlier outputs are complete either way).

    multi_person: assemble every person of the image (fastpose.assembly; each drawn in its own colour, the JSON gets a
    "persons" list). None = automatic: on for models with a pairwise head or trained on COCO-type data, when an edge
    classifier (fastpose fit-assembly) or pairwise statistics are at hand.
    """
    from fastpose.device import pick_device
    from fastpose.evaluate import _assembly_model, load_model

    paths = expand_inputs(inputs)
    if batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {batch_size}.")
    dev = pick_device(device)
    model, cfg = load_model(checkpoint, dev, cfg)
    names = cfg.joint_names or [f"joint{k}" for k in range(cfg.num_joints)]
    assembly, note = None, None
    if multi_person is not False:
        assembly, note = _assembly_model(cfg, checkpoint)
        if note is not None and multi_person:
            raise UserError(f"--multi-person: {note.replace('COCO AP not computed: ', '')}.")
        multi_person = note is None and (bool(multi_person) or cfg.pairwise_predict or cfg.dataset_type == "coco")
    out_dir = out_folder(out_dir, "--out")
    stems = _unique_stems(paths)
    docs = []
    for start in range(0, len(paths), batch_size):
        chunk, chunk_stems, images = [], [], []
        for i, (p, stem) in enumerate(zip(paths[start:start + batch_size], stems[start:start + batch_size])):
            # where: how far the run got (the outputs of the batches before are written)
            where = (f" (input {start + i + 1} of {len(paths)}; the outputs of the {start} before its batch are in "
                     f"{out_dir})" if start else f" (input {start + i + 1} of {len(paths)})")
            try:
                images.append(read_image(p, where))
            except UserError as e:
                if not skip_bad:
                    raise UserError(f"{e} Or pass --skip-bad to skip unreadable images.") from None
                if skipped is not None:
                    skipped.append((str(p), str(e)))
                continue
            chunk.append(p)
            chunk_stems.append(stem)
        if not images:
            continue
        try:
            with torch.no_grad():
                heads, valid_hw, ratio = _forward(model, cfg, images, dev)
        except torch.OutOfMemoryError:
            raise UserError(f"Out of GPU memory predicting {chunk[0]} and the {len(chunk) - 1} images after it "
                            f"(batch size {batch_size}; the largest image is {max(i.shape[1] for i in images)} x "
                            f"{max(i.shape[0] for i in images)} before scaling). Pass a smaller --batch-size, or "
                            f"--device cpu.") from None
        joints = _single(heads, valid_hw, ratio, cfg)  # (B, K, 3)
        persons = _persons(heads, valid_hw, ratio, cfg, assembly) if multi_person else [None] * len(chunk)
        for path, stem, image, pose, people in zip(chunk, chunk_stems, images, joints, persons):
            doc = {"image": str(path), "width": int(image.shape[1]), "height": int(image.shape[0]),
                   "frame": "image pixels, 0-based, pixel centres at integer coordinates",
                   "joints": [{"name": n, "x": float(x), "y": float(y), "score": float(s)}
                              for n, (x, y, s) in zip(names, pose)]}
            if people is not None:
                doc["persons"] = [[{"name": n, "x": float(x), "y": float(y), "score": float(s)}
                                   for n, (x, y, s) in zip(names, person)] for person in people]
                drawn = draw_persons(image, people, cfg.skeleton, min_score=max(min_score, 1e-6))
            else:
                drawn = draw_pose(image, pose[:, :2], pose[:, 2], cfg.skeleton, min_score=min_score)
            write_atomic(out_dir / f"{stem}.json", json.dumps(doc, indent=1).encode())
            ok, png = cv2.imencode(".png", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            if not ok:
                raise RuntimeError(f"OpenCV could not encode the drawing of {path} as PNG")
            write_atomic(out_dir / f"{stem}.png", png.tobytes())
            docs.append(doc)
    return docs


def _unique_stems(paths: list[Path]) -> list[str]:
    """Output names: the file stem, with the parent folder's name prepended where two inputs share a stem."""
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    stems, used = [], set()
    for p in paths:
        stem = p.stem if counts[p.stem] == 1 else f"{p.parent.name}_{p.stem}"
        base, n = stem, 1
        while stem in used:
            n += 1
            stem = f"{base}_{n}"
        used.add(stem)
        stems.append(stem)
    return stems
