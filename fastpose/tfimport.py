"""`fastpose import-tf`: a TensorFlow model of the reference network (pose-tensorflow, DeepLabCut 2.x) as a fastpose
snapshot, without TensorFlow.

The source is either
- a checkpoint: a V2 prefix (`mpii-single-resnet-101`, `snapshot-50000`), its `.index` or `.data-*` file (a `.meta`
  beside an `.index` is taken for its prefix), or a V1 `.ckpt` file, with the `pose_cfg.yaml` it was trained with
  (`--config`, else the one beside the checkpoint, as in a DeepLabCut training folder); or
- a DeepLabCut 2.x training folder (`dlc-models/iteration-<i>/<Task><date>-trainset<N>shuffle<M>/train`, or the
  shuffle folder above it): its newest `snapshot-<N>` by N (not by file date) and the `pose_cfg.yaml` there, whose
  DeepLabCut-only keys `fastpose.config.from_dlc` recognises and reports; ResNet models only.

The snapshot (`fastpose.checkpoint.write_snapshot`, the format `fastpose train` writes, optimizer None) holds the
network in the slim layout (`fastpose.model`: TF-slim resnet_v1 numerics) with the checkpoint's backbone_width, the
weights copied by `fastpose.tfweights.load_tf`, and the config resolved for it: joint names, init_weights emptied (the
weights are inside), iteration N. `fastpose eval / predict / analyze / export` take it like any snapshot.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import yaml

from fastpose.checkpoint import write_snapshot
from fastpose.config import Config, load, parse_override, validate
from fastpose.errors import UserError, out_file
from fastpose.model import build_model
from fastpose.tfckpt import open_checkpoint
from fastpose.tfweights import HEAD_SCOPES, check_config, load_tf, tf_arch

# DeepLabCut's snapshots in a training folder: `snapshot-<N>.index` + `.data-00000-of-00001` (+ `.meta`, the graph).
SNAPSHOT_INDEX = re.compile(r"snapshot-(\d+)\.index")
SNAPSHOT_META = re.compile(r"snapshot-(\d+)\.meta")
# The training iteration in a checkpoint's name: TF's Saver appends `-<global step>` to the prefix it is given.
ITERATION = re.compile(r"(?:snapshot|ckpt)-(\d+)")
# A config flag -> the head it needs from the checkpoint.
HEAD_FLAGS = (("location_refinement", "locref"), ("pairwise_predict", "pairwise"),
              ("intermediate_supervision", "intermediate"))
WHERE_DLC = ("a DeepLabCut training folder (dlc-models/iteration-<i>/<Task><date>-trainset<N>shuffle<M>/train, where "
             "deeplabcut.train_network writes snapshot-<N>.index and snapshot-<N>.data-00000-of-00001)")


def dlc_snapshots(folder: Path) -> list[tuple[int, Path]]:
    """(N, prefix) of every `snapshot-<N>.index` in a folder, by increasing N (snapshot-40 after snapshot-5)."""
    found = [(int(m.group(1)), folder / f"snapshot-{m.group(1)}") for p in folder.iterdir()
             if (m := SNAPSHOT_INDEX.fullmatch(p.name)) and p.is_file()]
    return sorted(found)


def newest_dlc_snapshot(folder: Path) -> tuple[Path, Path]:
    """(prefix of the newest snapshot, the training folder) of a DeepLabCut training folder or the shuffle folder
    above it; UserError naming what is there instead (only `.meta` graphs, nothing, a project's model folders)."""
    found = dlc_snapshots(folder)
    if not found and (folder / "train").is_dir():  # the shuffle folder: its train/ holds the snapshots
        folder = folder / "train"
        found = dlc_snapshots(folder)
    if found:
        return found[-1][1], folder
    metas = sorted(int(m.group(1)) for p in folder.iterdir() if (m := SNAPSHOT_META.fullmatch(p.name)))
    if metas:
        raise UserError(f"{folder} holds snapshot-{metas[-1]}.meta but no snapshot-{metas[-1]}.index: a .meta file is "
                        f"TensorFlow's graph, not the weights. Copy snapshot-<N>.index and "
                        f"snapshot-<N>.data-00000-of-00001 from the machine that trained the model into {folder}, then "
                        f"run the command again.")
    trained = sorted({str(p.parent) for p in folder.glob("dlc-models*/iteration-*/*/train/snapshot-*.index")})
    hint = (f" The project's trained models are in: {', '.join(trained[:5])}" + (" ..." if len(trained) > 5 else "")
            + "." if trained else "")
    raise UserError(f"{folder} holds no snapshot-<N>.index. Pass {WHERE_DLC}, a checkpoint prefix (e.g. "
                    f"models/mpii/mpii-single-resnet-101) or a V1 .ckpt file.{hint}")


def resolve_source(source: str | Path, config: str | Path | None) -> tuple[Path, Path, bool]:
    """(checkpoint path for open_checkpoint, the config file, whether the source was a folder) of import-tf's
    arguments; UserError when the source does not exist or no config is given or beside it."""
    source = Path(source)
    folder = source.is_dir()
    if folder:
        ckpt, beside = newest_dlc_snapshot(source)
    elif source.suffix == ".meta":
        prefix = source.with_suffix("")
        if not Path(f"{prefix}.index").is_file():
            raise UserError(f"{source} is a TensorFlow .meta file: the graph, not the weights. The weights are "
                            f"{prefix.name}.index + {prefix.name}.data-00000-of-00001 beside it (absent here): copy "
                            f"them there and pass the prefix {prefix}.")
        ckpt, beside = prefix, source.parent
    elif not source.exists() and not Path(f"{source}.index").is_file():
        raise UserError(f"{source} does not exist (neither a file nor a checkpoint prefix with {source.name}.index). "
                        f"Pass {WHERE_DLC}, a V2 checkpoint prefix or a V1 .ckpt file.")
    else:
        ckpt, beside = source, source.parent
    if config is None:
        if not (beside / "pose_cfg.yaml").is_file():
            raise UserError(f"No config for {ckpt}: pass --config with the pose_cfg.yaml the model was trained with "
                            f"(its net_type, num_joints and joint set; e.g. the reference's models/mpii/test/"
                            f"pose_cfg.yaml), or put it beside the checkpoint as {beside / 'pose_cfg.yaml'}.")
        config = beside / "pose_cfg.yaml"
    return Path(ckpt), Path(config), folder


def check_dlc_single_animal(config: Path) -> None:
    """UserError for a multi-animal DeepLabCut model: its heads (part affinity fields, identity channels, DLCRNet
    stages) are not the reference's, so fastpose cannot build its network."""
    raw = yaml.safe_load(config.read_text()) or {}  # load() already read it: valid YAML, a mapping
    multi = [f"{k}: {raw[k]}" for k in ("partaffinityfield_predict", "multi_stage") if raw.get(k) is True]
    if isinstance(raw.get("num_idchannel"), int) and raw["num_idchannel"] > 0:
        multi.append(f"num_idchannel: {raw['num_idchannel']}")
    if raw.get("dataset_type") == "multi-animal-imgaug":
        multi.append("dataset_type: multi-animal-imgaug")
    if multi:
        raise UserError(f"{config} is a multi-animal DeepLabCut model ({', '.join(multi)}): its part affinity "
                        f"fields, identity channels and multi-stage heads are not the reference's network, which is "
                        f"all fastpose builds. Import single-animal ResNet shuffles, or use DeepLabCut for this one.")


def iteration_of(ckpt, prefix: Path) -> int:
    """The training iteration of a checkpoint: N of its name (`snapshot-N`, `model.ckpt-N`), else its global_step
    variable, else 0 (the reference's released `mpii-single-resnet-101` names none)."""
    match = ITERATION.search(prefix.name)
    if match and match.end() == len(prefix.name):
        return int(match.group(1))
    if "global_step" in ckpt.names():
        return int(np.asarray(ckpt.read("global_step")).reshape(-1)[0])
    return 0


def config_for(cfg: Config, arch: dict, ckpt_path: Path, where: str) -> Config:
    """The config of the imported network: slim layout, the checkpoint's joint count where the config leaves it open,
    init_weights emptied (the snapshot holds the weights); UserError where the config and the checkpoint disagree
    (net_type, backbone_width, num_joints: `check_config`; a head the config needs that the checkpoint lacks)."""
    if arch["num_joints"] is None:
        raise UserError(f"{ckpt_path} has no pose heads ({HEAD_SCOPES['part']}): it is an ImageNet backbone "
                        f"({arch['scope']}), not a trained pose model. Train from it (init_weights: {ckpt_path} in "
                        f"the config, then `fastpose train`); import-tf takes trained pose-tensorflow or DeepLabCut "
                        f"models.")
    cfg = dataclasses.replace(cfg, backbone_layout="slim", num_joints=cfg.num_joints or arch["num_joints"])
    check_config(arch, cfg, ckpt_path, heads=True)
    for flag, head in HEAD_FLAGS:
        if getattr(cfg, flag) and head not in arch["heads"]:
            raise UserError(f"{where} sets {flag}: true, but {ckpt_path} has no {HEAD_SCOPES[head]} head: the model "
                            f"was trained without it. Use the pose_cfg.yaml it was trained with, or import with "
                            f"--set {flag}=false.")
    cfg = dataclasses.replace(cfg, init_weights="")
    validate(cfg, where)
    return cfg


def import_tf(source: str | Path, out: str | Path, *, config: str | Path | None = None,
              overrides: list[str] | None = None) -> dict:
    """Write the fastpose snapshot `out` of a TF checkpoint or DeepLabCut training folder (see the module doc).
    Returns {"path", "checkpoint", "config", "iteration", "arch", "format", "loaded", "unused", "notes"}."""
    ckpt_path, cfg_path, _ = resolve_source(source, config)
    out = out_file(out, "--out", "model.pt")
    cfg = load(cfg_path, overrides)  # a DeepLabCut pose_cfg.yaml is recognised and its keys reported here
    check_dlc_single_animal(cfg_path)
    ckpt = open_checkpoint(ckpt_path)
    arch = tf_arch(ckpt)
    cfg = config_for(cfg, arch, Path(ckpt.path), str(cfg_path))
    model = build_model(cfg)
    report = load_tf(model, ckpt, heads=True)
    iteration = iteration_of(ckpt, Path(ckpt.path))
    notes = []
    if cfg.precision == "auto" and "precision" not in {parse_override(o)[0] for o in overrides or []}:
        # auto would run bf16 where the device has it: TF's float32 outputs only up to bf16 rounding
        cfg = dataclasses.replace(cfg, precision="fp32")
        notes.append("precision fp32, TensorFlow's float32 numbers (import with --set precision=auto for bf16 where "
                     "the device runs it faster)")
    unused_heads = [h for h in arch["heads"] if not any(k.startswith(f"{h}.") for k in report["loaded"])]
    if unused_heads:
        notes.append(f"heads in the checkpoint the config leaves off (not imported): {', '.join(unused_heads)}")
    if cfg.pairwise_predict and not Path(cfg.pairwise_stats_fn).is_file():
        notes.append(f"multi-person prediction needs the pairwise statistics the model was trained with, but "
                     f"pairwise_stats_fn {cfg.pairwise_stats_fn} does not exist: import again with --set "
                     f"pairwise_stats_fn=<its pairwise_stats.mat>")
    extra = {"imported_from": str(ckpt.path), "tensorflow_format": ckpt.version, "config_file": str(cfg_path),
             "tf_scope": arch["scope"], "unused_variables": report["unused"]}
    write_snapshot(out, iteration, model=model, optimizer=None, cfg=cfg, extra=extra,
                   advice=f"Free space in {out.parent} or pass another --out, then run fastpose import-tf again.")
    return {"path": str(out), "checkpoint": str(ckpt.path), "config": str(cfg_path), "iteration": iteration,
            "arch": arch, "format": ckpt.version, "loaded": len(report["loaded"]), "unused": report["unused"],
            "notes": notes, "joint_names": list(cfg.joint_names)}
