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

Pixel error (`pixel_errors`, DeepLabCut's train/test error): the mean Euclidean distance between predicted and
labelled joints in the original image's pixels (both brought there by the sample's transform), per joint and overall,
and over the predictions scoring >= the p-cutoff only, with the fraction kept; multi-person (COCO shards), after
matching predicted to labelled people on OKS as pycocotools does, with the fraction of people found.
`evaluate_splits` runs `evaluate` on the chosen split and the training split (`fastpose eval` prints both);
`write_plots` draws every evaluated image (worst first) and a summary (`fastpose eval --plot DIR`).

Outputs (`write_outputs`): predictions.mat (cell `joints`, one (K, 3) [x y score] array per sample, 0-based sample
pixels: the reference's test output format), predictions.json (the same plus the source-image coordinates), and the
metrics dict {"pck": {"threshold", "per_joint", "per_group", "mean"}, "pckh": {...} or None, "samples": n,
"pixel_error": {"mean", "per_joint", "per_group", "pcutoff", "mean_above_pcutoff", "per_joint_above_pcutoff", "kept",
...}}; with several splits the JSON is the first split's dict plus "splits": {split: its dict}.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import cv2
import numpy as np
import scipy.io
import torch

from fastpose import dataset, metrics, plots
from fastpose.assembly import assemble_persons, classifier_for
from fastpose.atomic import write_atomic
from fastpose.checkpoint import load_model
from fastpose.config import Config, with_joints
from fastpose.decode import decode, to_sample, to_source
from fastpose.device import autocast, memory_format, pick_device
from fastpose.errors import UserError, out_file, out_folder
from fastpose.model import infer
from fastpose.pipeline import build_loader, decode_rgb
from fastpose.shards import ShardDataset, read_manifest


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
    layout = memory_format(cfg.channels_last, device)
    for batch in loader:
        images = batch.images.to(device, non_blocking=True).contiguous(memory_format=layout)
        with autocast(cfg.precision, device):  # infer: the slim layout sees each image unpadded, as TF did
            heads = infer(model, images, batch.valid_hw)
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
    """First person of each sample: joints (N, K, 2), visible (N, K), head_boxes (N, 2, 2), transform (N, 6); and
    every person: persons, a list of N (P_i, K, 3) x, y, visibility arrays, person_area, a list of N (P_i,)."""
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
    bounds = np.concatenate([[0], np.cumsum(persons)]).astype(np.int64)  # (N + 1,) person rows of each sample
    areas = ds.column("person_area").astype(np.float64)
    return {"joints": gt[..., :2], "visible": gt[..., 2] > 0, "head_boxes": boxes.reshape(n, 2, 2),
            "transform": ds.column("transform").reshape(n, 6).astype(np.float64),
            "persons": [joints[bounds[i]:bounds[i + 1]].astype(np.float64) for i in range(n)],
            "person_area": [areas[bounds[i]:bounds[i + 1]] for i in range(n)]}


def _joint_names(cfg: Config) -> tuple[list[str], list[list[int]], list[str]]:
    """(joint names, symmetric groups, group names) of the config, with numbers and '+'-joined names by default."""
    names = cfg.joint_names or [str(j) for j in range(cfg.num_joints)]
    groups = cfg.all_joints or [[j] for j in range(cfg.num_joints)]
    return names, groups, cfg.all_joints_names or ["+".join(names[j] for j in group) for group in groups]


def score(pred: np.ndarray, gt: dict, cfg: Config, pck_threshold: float, pckh_threshold: float) -> dict:
    """The metrics dict of `fastpose eval --json` from (N, K, 3) predictions and `ground_truth`."""
    used = gt["visible"].any(axis=1)  # samples with at least one labelled joint
    p, g, v, boxes = pred[used, :, :2], gt["joints"][used], gt["visible"][used], gt["head_boxes"][used]
    names, groups, group_names = _joint_names(cfg)
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


def _present(found: np.ndarray) -> np.ndarray:
    """Predicted people (P, K, 3) with the joints a person lacks (score <= 0 or not finite) set to NaN."""
    found = np.asarray(found, np.float64).reshape(-1, *np.shape(found)[1:]).copy()
    lacks = ~(np.isfinite(found).all(axis=2) & (np.nan_to_num(found[..., 2]) > 0))  # (P, K)
    found[lacks] = np.nan
    return found


def pixel_errors(pred: np.ndarray, persons: list | None, gt: dict, cfg: Config, pcutoff: float,
                 min_oks: float = 0.5) -> tuple[dict, list[dict]]:
    """The metrics' "pixel_error" entry, in the original image's pixels, and what `write_plots` draws per sample.

    Single-person (persons None): the first person of each sample against pred (N, K, 3) sample-pixel x, y, score.
    Multi-person: every person of a sample against its predicted people (persons, N arrays (P_i, K, 3), sample
    pixels), matched as pycocotools does at OKS >= min_oks (`metrics.oks`, `metrics.match_persons`; a prediction's
    score is its mean joint score; areas from the shards, else the square of the labelled joints' larger extent);
    unmatched people add to "persons" but not to the errors. Both sides go through the sample's transform
    (`decode.to_source`).
    Returns (summary, rows): rows holds, per sample with a labelled joint, {"index", "gt" (G, K, 3) and "pred"
    (P, K, 3) in sample pixels, "match" (G,) prediction of each person or -1, "errors" (G, K) source pixels}.
    """
    k = cfg.num_joints
    sigmas, sigma_name = metrics.oks_sigmas(k)
    rows, stacked = [], {"pred": [], "gt": [], "visible": []}
    found_people, people = 0, 0
    for i, labelled in enumerate(gt["persons"]):
        transform = torch.from_numpy(gt["transform"][i])
        if persons is None:
            labelled = np.concatenate([gt["joints"][i], gt["visible"][i][:, None]], axis=1)[None]  # (1, K, 3)
            found = pred[i][None]  # (1, K, 3)
        else:
            found = _present(persons[i])
        labelled = labelled[(labelled[..., 2] > 0).any(axis=1)]  # (G, K, 3) people with a labelled joint
        if not len(labelled):
            continue
        visible = labelled[..., 2] > 0  # (G, K)
        gt_src = to_source(torch.from_numpy(labelled), transform).double().numpy()[..., :2]  # (G, K, 2)
        found_src = to_source(torch.from_numpy(found), transform).double().numpy()  # (P, K, 3)
        if persons is None:
            match = np.zeros(1, np.int64)
        else:
            areas = gt["person_area"][i][(gt["persons"][i][..., 2] > 0).any(axis=1)]  # (G,)
            span = np.where(visible[..., None], gt_src, np.nan)  # (G, K, 2) labelled joints only (>= 1 each)
            # Without a segmentation area: the square of the labelled joints' larger extent (a box's w * h would
            # be 0 for joints on one line, and no prediction would ever match such a person).
            box = (np.nanmax(span, axis=1) - np.nanmin(span, axis=1)).max(axis=1) ** 2  # (G,)
            areas = np.where(np.isfinite(areas), areas, box)
            score = np.where(np.isfinite(found_src[..., 2]), found_src[..., 2], 0.0).mean(axis=1)  # (P,)
            match = metrics.match_persons(metrics.oks(found_src[..., :2], gt_src, visible, areas, sigmas), score,
                                          min_oks)
        people += len(labelled)
        found_people += int((match >= 0).sum())
        hit = match >= 0
        stacked["pred"].append(found_src[match[hit]])
        stacked["gt"].append(gt_src[hit])
        stacked["visible"].append(visible[hit])
        rows.append({"index": i, "gt": labelled, "pred": found, "match": match, "hit": hit})
    cat = {key: np.concatenate(v) if v else np.zeros((0, k, 3 if key == "pred" else 2)) for key, v in stacked.items()}
    if not stacked["visible"]:
        cat["visible"] = np.zeros((0, k), bool)
    err = metrics.pixel_error(cat["pred"][..., :2], cat["gt"], cat["visible"], cat["pred"][..., 2], pcutoff)
    start = 0
    for row in rows:  # the matched people's errors back to their samples; NaN for people not found
        n = int(row["hit"].sum())
        row["errors"] = np.full((len(row["gt"]), k), np.nan)
        row["errors"][row.pop("hit")] = err["errors"][start:start + n]
        start += n
    names, groups, group_names = _joint_names(cfg)
    labelled = err["labelled"]
    summary = {"frame": "original image pixels", "mean": _num(err["mean"]),
               **{key: v for key, v in metrics.summarise(err["per_joint"], names, groups, group_names,
                                                          err["predicted"]).items() if key != "mean"},
               "pcutoff": pcutoff, "mean_above_pcutoff": _num(err["mean_above_pcutoff"]),
               "per_joint_above_pcutoff": {n: _num(v) for n, v in zip(names, err["per_joint_above_pcutoff"])},
               "kept": _num(err["kept"]),
               "kept_per_joint": {n: _num(a / c) if c else None
                                  for n, a, c in zip(names, err["above_pcutoff"], labelled)},
               "joints": int(labelled.sum()), "unpredicted": err["unpredicted"]}
    if persons is not None:
        summary.update({"persons": people, "persons_found": _num(found_people / people) if people else None,
                        "min_oks": min_oks, "sigmas": sigma_name})
    return summary, rows


def _num(v) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None


def evaluate(cfg: Config | None, model_or_checkpoint, split: str | None = None, dataset_dir: str | Path | None = None,
             batch_size: int | None = None, device: str | torch.device | None = None,
             pck_threshold: float | None = None, pckh_threshold: float | None = None,
             pcutoff: float | None = None) -> dict:
    """Evaluate a model object or a snapshot path on a split of the shards.

    Returns {"metrics": the metrics dict, "predictions": (N, K, 3) sample-pixel x, y, score (NaN rows for samples the
    pipeline did not yield), "source_predictions": the same in source-image pixels, "ground_truth": ground_truth(),
    "config": the Config used, "pixel_rows": the per-sample rows of `pixel_errors`, "dataset_dir", "split"}. cfg may
    be None with a snapshot path (its stored config is used). pcutoff: default cfg.pcutoff (0.6).
    """
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1 (or left out to use the config's).")
    for flag, value in (("--pck-threshold", pck_threshold), ("--pckh-threshold", pckh_threshold)):
        if value is not None and not value > 0:
            raise UserError(f"{flag} {value}: must be positive (a fraction of the reference length, e.g. 0.2 for "
                            f"PCK, 0.5 for PCKh).")
    check_pcutoff(pcutoff)
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
    if cfg.num_joints and ds.num_joints != cfg.num_joints:  # cfg's joint set is the snapshot's (load_model)
        raise UserError(f"{dataset_dir} has {ds.num_joints} joints but the model predicts {cfg.num_joints}. Evaluate "
                        f"on a dataset with the joint set the model was trained on.")
    if not cfg.num_joints or not cfg.joint_names:
        cfg = with_joints(cfg, ds.num_joints, ds.joint_names, ds.all_joints, ds.skeleton)
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
    result["pixel_error"], rows = pixel_errors(pred, persons if coco else None, gt, cfg,
                                               cfg.pcutoff if pcutoff is None else pcutoff)
    return {"metrics": result, "predictions": pred, "source_predictions": src, "ground_truth": gt, "config": cfg,
            "coco_results": results, "pixel_rows": rows, "dataset_dir": dataset_dir, "split": split}


def check_pcutoff(pcutoff: float | None) -> None:
    """UserError unless pcutoff is None or in [0, 1] (a score, the sigmoid of the part logit)."""
    if pcutoff is not None and not 0 <= pcutoff <= 1:
        raise UserError(f"--pcutoff {pcutoff}: must be between 0 and 1 (a joint's score is a probability; "
                        f"DeepLabCut's default is 0.6).")


def parse_splits(text: str) -> list[str]:
    """'train,test' -> ['train', 'test'] (`fastpose eval --splits`); UserError for an empty name."""
    names = [part.strip() for part in text.split(",")]
    if not text.strip() or not all(names):
        raise UserError(f"--splits {text!r}: give split names separated by commas, e.g. --splits train,test.")
    return list(dict.fromkeys(names))


def evaluate_splits(cfg: Config | None, checkpoint: str | Path, split: str | None = None,
                    splits: list[str] | None = None, dataset_dir: str | Path | None = None, **options) -> dict:
    """`fastpose eval`: {split: evaluate() result} for `splits`, or else for `split` (default the config's
    test_split) followed by the training split (cfg.split) when the dataset has one. options go to evaluate()."""
    check_pcutoff(options.get("pcutoff"))  # before the first split is evaluated
    if split and splits:
        raise UserError(f"--split {split} and --splits {','.join(splits)}: give one of them (--splits lists every "
                        f"split to evaluate, the first written to --out).")
    first = (splits or [split])[0]
    results = {}
    results_first = evaluate(cfg, checkpoint, first, dataset_dir, **options)
    results[results_first["split"]] = results_first
    used = results_first["config"]
    if splits is None:
        available = read_manifest(results_first["dataset_dir"])["splits"]
        splits = [used.split] if used.split in available else []
    for name in splits:
        if name not in results:
            results[name] = evaluate(cfg, checkpoint, name, dataset_dir, **options)
    return results


def write_outputs(result: dict, out_dir: str | Path, json_path: str | Path | None = None,
                  splits: dict | None = None) -> list[Path]:
    """predictions.mat and predictions.json into out_dir, and the metrics as JSON to json_path when given: result's
    metrics with its "split", plus "splits": {split: metrics} of every result in `splits` (evaluate_splits)."""
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
        doc = dict(result["metrics"], **({"split": result["split"]} if result.get("split") else {}))
        if splits:
            doc["splits"] = {name: r["metrics"] for name, r in splits.items()}
        write_atomic(json_path, json.dumps(doc, indent=1))
        written.append(json_path)
    return written


def _rows(a: np.ndarray) -> list[list[float | None]]:
    return [[float(v) if np.isfinite(v) else None for v in row] for row in a]


def write_plots(results: dict, folder: str | Path) -> list[Path]:
    """`fastpose eval --plot DIR`: DIR/<split>/<rank>_<error>px_<sample>_<name>.png for every evaluated image of each
    result of evaluate_splits (labelled joints, predictions coloured by score and faded below the p-cutoff, a line
    per pair; `plots.error_image`), the worst first: people not found first, then the highest mean error in the
    original image's pixels; and DIR/summary.png (error per joint and the error distribution per split)."""
    folder = out_folder(folder, "--plot")
    written, summary = [], {}
    for split, result in results.items():
        cfg, rows, pixel = result["config"], result["pixel_rows"], result["metrics"]["pixel_error"]
        names = list(pixel["per_joint"])
        errors = np.concatenate([r["errors"].ravel() for r in rows]) if rows else np.zeros(0)
        summary[split] = {"per_joint": [np.nan if v is None else v for v in pixel["per_joint"].values()],
                          "errors": errors[np.isfinite(errors)], "mean": pixel["mean"]}

        def badness(row: dict) -> tuple[int, float]:
            err = row["errors"][np.isfinite(row["errors"])]
            return int((row["match"] < 0).sum()), float(err.mean()) if err.size else np.inf

        rows = sorted(rows, key=badness, reverse=True)
        sub = out_folder(folder / split, "--plot")
        ds = ShardDataset(result["dataset_dir"], split)
        sources = [p.decode() if isinstance(p, bytes) else str(p) for p in ds.column("source_path")]
        try:
            for rank, row in enumerate(rows):
                i = row["index"]
                image = decode_rgb(ds.image_bytes(i))
                if image is None:
                    raise UserError(f"sample {i} of {ds.root} split '{split}': its image bytes do not decode. "
                                    f"Convert the dataset again.")
                missed, mean = badness(row)
                title = (f"{split} #{i}: " + ("no joint predicted" if not np.isfinite(mean) else f"{mean:.1f} px")
                         + (f", {missed} of {len(row['gt'])} people not found" if missed else ""))
                drawn = plots.error_image(image, row["gt"], row["pred"], row["match"], pcutoff=pixel["pcutoff"],
                                          skeleton=cfg.skeleton, title=title)
                label = "none" if not np.isfinite(mean) else f"{mean:.1f}"
                stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(sources[i] or f"sample{i}").stem)[:60]
                written.append(_write_png(sub / f"{rank:04d}_{label}px_s{i:05d}_{stem}.png", drawn))
        finally:
            ds.close()
    return written + [_write_png(folder / "summary.png", plots.summary_image(summary, names))]


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    """(H, W, 3) uint8 RGB as a PNG, atomically; UserError when it cannot be written."""
    def write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[:, :, ::-1])):
            raise UserError(f"--plot: {path} could not be written. Pass a folder you can write to.")
    return write_atomic(path, write)
