"""`fastpose eval`: predict every sample of a split; score the predictions with PCK and (given head boxes) PCKh.

Evaluation is single-person, in the shard sample's pixel frame: the ground truth is the first person of each sample
(as the reference used only the first person of each dataset entry); samples without a labelled joint are skipped. The
model runs on the eval pipeline's batches (every sample once, no mirror, scale = global_scale); `fastpose.decode`
brings the joints back to the sample's pixels. `evaluate()` is the plain function behind the command, also called by
the training loop and the demo with a model object.

COCO shards (fastpose convert coco) are also evaluated multi-person: every image's heads go through
`fastpose.assembly.assemble` (restricted to the cells inside the image), the persons are mapped back to the source
image's pixels and written as a COCO results json (image_id, category_id 1, keypoints [x, y, 1] * K, score = the mean
keypoint score), scored with pycocotools' OKS keypoint AP/AR (`metrics.coco_ap`) against the annotation json the
manifest names; metrics["coco"] holds AP, AP50, ..., AR_large.

Outputs (`write_outputs`): predictions.mat (cell `joints`, one (K, 3) [x y score] array per sample, 0-based sample
pixels: the reference's test output format), predictions.json (the same plus the source-image coordinates), and the
metrics dict {"pck": {"threshold", "per_joint", "per_group", "mean"}, "pckh": {...} or None, "samples": n}.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import scipy.io
import torch

from fastpose import dataset, metrics
from fastpose.assembly import assemble_persons, classifier_for
from fastpose.atomic import write_atomic
from fastpose.checkpoint import load_model
from fastpose.config import Config, with_joints
from fastpose.decode import decode, to_sample, to_source
from fastpose.device import autocast, pick_device
from fastpose.errors import UserError, out_file, out_folder
from fastpose.pipeline import build_loader
from fastpose.shards import ShardDataset


@torch.no_grad()
def predict_split(model, cfg: Config, dataset_dir: str | Path, split: str, batch_size: int,
                  device: torch.device, persons: list | None = None,
                  assembly: dict | None = None) -> tuple[np.ndarray, int]:
    """Predictions for every sample of a split: ((N, K, 3) float64 x, y, score in sample pixels, N).

    With a list `persons`, it is filled with N entries: each sample's multi-person predictions (P_i, K, 3) float64 in
    sample pixels, score 0 for a joint a person lacks (fastpose.assembly.assemble on the sample's cells inside the
    image, with the edge classifier `assembly` or its defaults).
    """
    ds = ShardDataset(dataset_dir, split)
    n = len(ds)
    sizes = torch.from_numpy(ds.column("size").reshape(n, 3)[:, [2, 1]].astype(np.float64))  # (N, 2) W, H
    ds.close()
    out = np.full((n, cfg.num_joints, 3), np.nan)
    if persons is not None:
        persons[:] = [np.zeros((0, cfg.num_joints, 3)) for _ in range(n)]
    loader = build_loader(cfg, dataset_dir, split, train=False, batch_size=batch_size, device=device)
    memory_format = torch.channels_last if cfg.channels_last and device.type == "cuda" else torch.contiguous_format
    for batch in loader:
        images = batch.images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        with autocast(cfg.precision, device):
            heads = model(images)
        joints = decode(heads["part"], heads["locref"], cfg.stride, cfg.locref_stdev,
                        batch.valid_hw.to(device))  # (B, K, 3) network-input pixels
        index = batch.index.cpu()
        keep = index >= 0  # padding rows of the last batch have index -1
        # The resize's real per-axis ratio (resized / original size; eval has no crop, so valid_hw is the resized
        # size), not the nominal scale: floor(W s) / W differs from s by up to 1 / W.
        ratio = batch.valid_hw.cpu().flip(1).double() / sizes[index.clamp(min=0)]  # (B, 2) x, y
        joints = to_sample(joints.cpu(), ratio, batch.offset.cpu())  # (B, K, 3) sample pixels
        out[index[keep].numpy()] = joints.numpy().astype(np.float64)[keep.numpy()]
        if persons is not None:
            offsets = batch.offset.cpu()
            for b in torch.nonzero(keep).flatten().tolist():
                persons[int(index[b])] = assemble_persons(heads, b, batch.valid_hw[b], ratio[b], offsets[b],
                                                          float(batch.scale[b]), cfg, assembly)
    return out, n


def coco_results(persons: list[np.ndarray], image_ids, transforms: np.ndarray) -> list[dict]:
    """COCO keypoint results from per-sample persons (P_i, K, 3) in sample pixels: source pixels via the shards'
    transforms (N, 6); keypoints [x, y, 1] * K (non-finite or score-0 joints at 0, 0, 0), score = mean joint score."""
    results = []
    for i, found in enumerate(persons):
        if found is None or len(found) == 0:
            continue
        src = to_source(torch.as_tensor(found, dtype=torch.float64), torch.as_tensor(transforms[i]))  # (P, K, 3)
        for pose in src.double().numpy():
            ok = np.isfinite(pose).all(axis=1) & (np.nan_to_num(pose[:, 2]) > 0)  # (K,) joints the person has
            kp = np.where(ok[:, None], np.concatenate([pose[:, :2], np.ones((len(pose), 1))], axis=1), 0.0)
            score = float(np.where(ok, pose[:, 2], 0.0).mean())
            results.append({"image_id": int(image_ids[i]), "category_id": 1,
                            "keypoints": [round(float(v), 3) for v in kp.ravel()], "score": score})
    return results


def coco_metrics(results: list[dict], ds: ShardDataset, image_ids) -> dict:
    """metrics.coco_ap against the annotation json named in the manifest; {"note": why} where it cannot be read."""
    ann = Path(ds.manifest.get("source", {}).get("annotations", ""))
    if not ann.is_file():
        return {"note": f"COCO AP not computed: the annotation json {ann} named in {ds.root}/manifest.json is not "
                        f"there (the results json is still written; score it with pycocotools)"}
    return metrics.coco_ap(results, ann, image_ids)


def ground_truth(ds: ShardDataset) -> dict:
    """First person of each sample: joints (N, K, 2), visible (N, K), head_boxes (N, 2, 2), transform (N, 6)."""
    n, k = len(ds), ds.num_joints
    persons = ds.persons_per_sample()  # (N,)
    first = np.concatenate([[0], np.cumsum(persons)[:-1]]).astype(np.int64)  # row of each sample's first person
    joints = ds.column("joints").reshape(-1, k, 3)
    heads = ds.column("head_box").reshape(-1, 4)
    gt = np.zeros((n, k, 3), np.float64)
    boxes = np.full((n, 4), np.nan)
    has = persons > 0
    gt[has] = joints[first[has]]
    boxes[has] = heads[first[has]]
    return {"joints": gt[..., :2], "visible": gt[..., 2] > 0, "head_boxes": boxes.reshape(n, 2, 2),
            "transform": ds.column("transform").reshape(n, 6).astype(np.float64)}


def score(pred: np.ndarray, gt: dict, cfg: Config, pck_threshold: float, pckh_threshold: float) -> dict:
    """The metrics dict of `fastpose eval --json` from (N, K, 3) predictions and `ground_truth`."""
    used = gt["visible"].any(axis=1)  # samples with at least one labelled joint
    p, g, v, boxes = pred[used, :, :2], gt["joints"][used], gt["visible"][used], gt["head_boxes"][used]
    names = cfg.joint_names or [str(j) for j in range(cfg.num_joints)]
    groups = cfg.all_joints or [[j] for j in range(cfg.num_joints)]
    group_names = cfg.all_joints_names or ["+".join(names[j] for j in group) for group in groups]
    result = {"samples": int(used.sum()), "pckh": None}
    pck = metrics.pck(p, g, v, pck_threshold)
    result["pck"] = {"threshold": pck_threshold, **metrics.summarise(pck, names, groups, group_names, v.sum(0))}
    sizes = metrics.head_sizes(boxes)
    known = np.isfinite(sizes) & (sizes > 0)
    if known.any():
        pckh = metrics.pckh(p, g, v, boxes, pckh_threshold)
        counts = (v & known[:, None]).sum(0)
        result["pckh"] = {"threshold": pckh_threshold,
                          **metrics.summarise(pckh, names, groups, group_names, counts), "samples": int(known.sum())}
    return result


def evaluate(cfg: Config | None, model_or_checkpoint, split: str | None = None, dataset_dir: str | Path | None = None,
             batch_size: int | None = None, device: str | torch.device | None = None,
             pck_threshold: float | None = None, pckh_threshold: float | None = None) -> dict:
    """Evaluate a model object or a snapshot path on a split of the shards.

    Returns {"metrics": the metrics dict, "predictions": (N, K, 3) sample-pixel x, y, score (NaN rows for samples the
    pipeline did not yield), "source_predictions": the same in source-image pixels, "ground_truth": ground_truth(),
    "config": the Config used}. cfg may be None with a snapshot path (its stored config is used).
    """
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1 (or left out to use the config's).")
    for flag, value in (("--pck-threshold", pck_threshold), ("--pckh-threshold", pckh_threshold)):
        if value is not None and not value > 0:
            raise UserError(f"{flag} {value}: must be positive (a fraction of the reference length, e.g. 0.2 for "
                            f"PCK, 0.5 for PCKh).")
    if isinstance(model_or_checkpoint, str | Path):
        dev = pick_device(str(device) if device is not None else (cfg.device if cfg else "auto"))
        model, cfg = load_model(model_or_checkpoint, dev, cfg)
    else:
        if cfg is None:
            raise ValueError("evaluate() with a model object needs its cfg")
        model = model_or_checkpoint
        dev = next(model.parameters()).device if device is None else torch.device(device)
    split = split or cfg.test_split
    if not (dataset_dir or cfg.dataset):
        raise UserError("Nothing to evaluate on: the config has no `dataset:`. Pass --data SHARDS_DIR or set dataset "
                        "in the config.")
    dataset_dir = Path(dataset_dir or cfg.dataset)
    if dataset_dir.suffix == ".mat":  # the seed's dataset.mat: converted into cached shards once, as training does
        dataset_dir = dataset.resolve(dataclasses.replace(cfg, dataset=str(dataset_dir)), quiet=True)
    ds = ShardDataset(dataset_dir, split)
    if not cfg.num_joints or not cfg.joint_names:
        cfg = with_joints(cfg, ds.num_joints, ds.joint_names, ds.all_joints, ds.skeleton)
    if ds.num_joints != cfg.num_joints:
        raise UserError(f"{dataset_dir} has {ds.num_joints} joints but the model predicts {cfg.num_joints}. Evaluate "
                        f"on a dataset with the joint set the model was trained on.")
    was_training = model.training
    model.eval()
    coco, assembly, coco_note = ds.manifest.get("source", {}).get("format") == "coco", None, None
    if coco:
        assembly, coco_note = classifier_for(cfg, model_or_checkpoint if isinstance(model_or_checkpoint, str | Path)
                                             else None)
        coco = coco_note is None
        if coco_note:
            coco_note = f"COCO AP not computed: {coco_note}"
    persons: list | None = [] if coco else None
    try:
        pred, _ = predict_split(model, cfg, dataset_dir, split, batch_size or cfg.batch_size, dev, persons, assembly)
    except torch.OutOfMemoryError:
        raise UserError(f"Out of GPU memory evaluating {dataset_dir} split '{split}' with batch size "
                        f"{batch_size or cfg.batch_size} (max_input_size {cfg.max_input_size}). Pass a smaller "
                        f"--batch-size.") from None
    finally:
        model.train(was_training)
    gt = ground_truth(ds)
    results = None
    if coco:
        image_ids = ds.column("source_index").astype(np.int64)  # COCO image ids (the converter's entry indices)
        results = coco_results(persons, image_ids, gt["transform"])
    ds.close()
    if not gt["visible"].any():
        raise UserError(f"{dataset_dir} split '{split}' has no sample with a labelled joint, so there is nothing to "
                        f"evaluate. Pick another split (fastpose info {dataset_dir} lists them).")
    result = score(pred, gt, cfg, pck_threshold or cfg.pck_threshold, pckh_threshold or cfg.pckh_threshold)
    if results is not None:
        result["coco"] = coco_metrics(results, ds, image_ids)  # reads only the manifest (already loaded)
    elif coco_note:
        result["coco"] = {"note": coco_note}
    src = to_source(torch.from_numpy(pred), torch.from_numpy(gt["transform"])).double().numpy()  # (N, K, 3)
    return {"metrics": result, "predictions": pred, "source_predictions": src, "ground_truth": gt, "config": cfg,
            "coco_results": results}


def write_outputs(result: dict, out_dir: str | Path, json_path: str | Path | None = None) -> list[Path]:
    """predictions.mat and predictions.json into out_dir, and the metrics as JSON to json_path when given."""
    out_dir = out_folder(out_dir, "--out")
    if json_path is not None:
        json_path = out_file(json_path, "--json", "metrics.json")
    pred, src, cfg = result["predictions"], result["source_predictions"], result["config"]
    cell = np.empty((len(pred),), dtype=object)  # MATLAB cell array: one (K, 3) [x y score] per sample
    for i, p in enumerate(pred):
        cell[i] = p
    mat_path, json_out = out_dir / "predictions.mat", out_dir / "predictions.json"
    write_atomic(mat_path, lambda tmp: scipy.io.savemat(tmp, {"joints": cell}))
    names = cfg.joint_names or [str(j) for j in range(cfg.num_joints)]
    doc = {"joint_names": names, "frame": "sample pixels (0-based, pixel centres at integers); source_joints: the "
           "original image's pixels", "samples": [
               {"index": i, "joints": _rows(pred[i]), "source_joints": _rows(src[i])} for i in range(len(pred))]}
    write_atomic(json_out, json.dumps(doc))
    written = [mat_path, json_out]
    if result.get("coco_results") is not None:
        coco_out = out_dir / "coco_results.json"
        write_atomic(coco_out, json.dumps(result["coco_results"]))
        written.append(coco_out)
    if json_path is not None:
        json_path = Path(json_path)
        write_atomic(json_path, json.dumps(result["metrics"], indent=1))
        written.append(json_path)
    return written


def _rows(a: np.ndarray) -> list[list[float | None]]:
    return [[float(v) if np.isfinite(v) else None for v in row] for row in a]
