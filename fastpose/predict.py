"""`fastpose predict`: run a trained model on image files and write the joints (JSON) and a drawing (PNG) per image.

Images are decoded, resized by the config's global_scale and padded as the eval pipeline does (`fastpose.images`), and
run in batches on the CPU or GPU; `fastpose.decode` turns the heads' outputs into joints in the original image's pixels
(single person), `fastpose.assembly` into every person of the image (multi-person); `fastpose.draw` draws them.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from fastpose.assembly import assemble_persons, classifier_for
from fastpose.atomic import expand_paths, write_atomic
from fastpose.checkpoint import config_from_snapshot, load_model
from fastpose.decode import decode, to_sample
from fastpose.device import autocast, memory_format, pick_device
from fastpose.draw import draw_persons, draw_pose
from fastpose.errors import UserError, out_folder
from fastpose.export import OnnxModel, onnx_for
from fastpose.images import network_batch, read_image
from fastpose.model import infer

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Inference engines: torch runs the snapshot's network eagerly; onnxruntime runs the `fastpose export` ONNX graph
# (preprocessing and decoding inside). The default for a snapshot is torch (see README "Exporting" for the CPU figures).
ENGINES = ("torch", "onnxruntime")


def choose_engine(engine: str | None, checkpoint: str | Path) -> str:
    """The engine for a checkpoint: as asked, else onnxruntime for an .onnx file and torch for a snapshot."""
    onnx_file = Path(checkpoint).suffix == ".onnx"
    if engine is None:
        return "onnxruntime" if onnx_file else "torch"
    if engine not in ENGINES:
        raise UserError(f"--engine {engine!r} is not an engine: use one of {', '.join(ENGINES)}.")
    if engine == "torch" and onnx_file:
        raise UserError(f"--engine torch cannot run {checkpoint}, an ONNX file: pass --engine onnxruntime, or the "
                        f"snapshot .pt it was exported from.")
    return engine


def expand_inputs(items: list[str]) -> list[Path]:
    """Images files, folders of them and glob patterns -> paths in order, without duplicates."""
    return expand_paths(items, IMAGE_SUFFIXES, "images")


@torch.no_grad()
def _forward(model, cfg, images: list[np.ndarray], device: torch.device):
    """Heads of a list of (H, W, 3) uint8 RGB images: (heads dict, valid_hw (B, 2) resized h, w, ratio (B, 2) x, y)."""
    batch, valid_hw, ratio = network_batch(images, cfg)
    with autocast(cfg.precision, device):  # infer: the slim layout sees each image unpadded, as TF did
        heads = infer(model, batch.to(device).contiguous(memory_format=memory_format(cfg.channels_last, device)),
                      valid_hw)
    return heads, valid_hw, ratio


def single_joints(heads: dict, valid_hw: torch.Tensor, ratio: torch.Tensor, cfg) -> np.ndarray:
    """(B, K, 3) x, y, score in image pixels: the best cell per joint (single-person decoding)."""
    joints = decode(heads["part"], heads["locref"], cfg.stride, cfg.locref_stdev,
                    valid_hw.to(heads["part"].device)).cpu()
    return to_sample(joints, ratio).double().numpy()


def all_persons(heads: dict, valid_hw: torch.Tensor, ratio: torch.Tensor, cfg, assembly: dict | None) -> list:
    """Per image, every person (multi-person assembly): (P_i, K, 3) x, y, score in image pixels, score 0 for a joint
    the person lacks. `assembly` is the fitted edge classifier (fastpose fit-assembly) or None for its defaults."""
    return [assemble_persons(heads, b, valid_hw[b], ratio[b], None, float(ratio[b].mean()), cfg, assembly)
            for b in range(len(valid_hw))]


def onnx_batch(runner: OnnxModel, images: list[np.ndarray], cfg, assembly: dict | None,
               multi_person: bool) -> tuple[np.ndarray, list]:
    """What _single and _persons give, from the exported graph: ((B, K, 3) joints in image pixels, persons per image
    or Nones). Runs of images of one size go through ONNX Runtime together (the graph takes one size per call)."""
    joints, persons, start = [], [], 0
    while start < len(images):
        end = start + 1
        while end < len(images) and images[end].shape == images[start].shape:
            end += 1
        out = runner.run(np.stack(images[start:end]))
        joints.append(out["joints"].astype(np.float64))  # (n, K, 3)
        if multi_person:
            heads = {k: torch.from_numpy(out[k]) if k in out else None for k in ("part", "locref", "pairwise")}
            persons += all_persons(heads, torch.from_numpy(out["valid_hw"]), torch.from_numpy(out["ratio"]), cfg,
                                assembly)
        start = end
    return np.concatenate(joints), persons if multi_person else [None] * len(images)


@torch.no_grad()
def predict_images(model, cfg, images: list[np.ndarray], device: torch.device) -> np.ndarray:
    """Joints of a list of (H, W, 3) uint8 RGB images: (N, K, 3) x, y, score in each image's own pixels."""
    return single_joints(*_forward(model, cfg, images, device), cfg)


def predict(checkpoint: str | Path, inputs: list[str], out_dir: str | Path, *, batch_size: int = 8,
            device: str = "auto", min_score: float = 0.0, cfg=None, multi_person: bool | None = None,
            skip_bad: bool = False, skipped: list | None = None, engine: str | None = None) -> list[dict]:
    """Run a snapshot on images; write <name>.json (joints with names, x, y, score in the image's pixels) and
    <name>.png (the skeleton drawn) per image into out_dir. Returns the JSON documents.

    skip_bad: an input that cannot be decoded is skipped and appended to `skipped` as (path, reason) instead of
    stopping the run (whose earlier outputs are complete either way).

    multi_person: assemble every person of the image (fastpose.assembly; each drawn in its own colour, the JSON gets a
    "persons" list). None = automatic: on for models with a pairwise head or trained on COCO-type data, when an edge
    classifier (fastpose fit-assembly) or pairwise statistics are at hand.

    engine: torch | onnxruntime (`choose_engine`; None = onnxruntime for an .onnx checkpoint, else torch). With
    onnxruntime a snapshot is exported once to `<snapshot>.onnx` beside it (`fastpose.export.onnx_for`).
    """
    paths = expand_inputs(inputs)
    if batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {batch_size}.")
    dev = pick_device(device)
    engine = choose_engine(engine, checkpoint)
    runner = model = None
    if engine == "onnxruntime":
        runner = OnnxModel(onnx_for(checkpoint, multi_person=bool(multi_person)), dev)
        cfg = cfg or config_from_snapshot({"config": runner.config_values})
    else:
        model, cfg = load_model(checkpoint, dev, cfg)
    names = cfg.joint_names or [f"joint{k}" for k in range(cfg.num_joints)]
    assembly, note = None, None
    if multi_person is not False:
        assembly, note = classifier_for(cfg, checkpoint)
        if note is not None and multi_person:
            raise UserError(f"--multi-person: {note}.")
        multi_person = note is None and (bool(multi_person) or cfg.pairwise_predict or cfg.dataset_type == "coco")
    if runner is not None and multi_person and "pairwise" not in runner.outputs:
        if Path(checkpoint).suffix == ".onnx":
            raise UserError(f"{checkpoint} was exported without --multi-person, so it lacks the pairwise offsets the "
                            f"assembly needs. Export it again with --multi-person, or pass --single-person.")
        runner = OnnxModel(onnx_for(checkpoint, multi_person=True), dev)
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
        if runner is not None:
            joints, persons = onnx_batch(runner, images, cfg, assembly, multi_person)
        else:
            try:
                with torch.no_grad():
                    heads, valid_hw, ratio = _forward(model, cfg, images, dev)
            except torch.OutOfMemoryError:
                raise UserError(f"Out of GPU memory predicting {chunk[0]} and the {len(chunk) - 1} images after it "
                                f"(batch size {batch_size}; the largest image is {max(i.shape[1] for i in images)} x "
                                f"{max(i.shape[0] for i in images)} before scaling). Pass a smaller --batch-size, or "
                                f"--device cpu.") from None
            joints = single_joints(heads, valid_hw, ratio, cfg)  # (B, K, 3)
            persons = all_persons(heads, valid_hw, ratio, cfg, assembly) if multi_person else [None] * len(chunk)
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
