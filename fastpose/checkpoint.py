"""Training snapshots: save (atomic, keep the newest N), find the latest, load, restore RNG states and the config.

A snapshot `<prefix>-<iteration>.pt` holds everything `fastpose train --resume` needs to continue as if it had never
stopped: model and optimizer state, the iteration, the RNG states (python, numpy, torch CPU and CUDA), the data
pipeline's position, the resolved config and the fastpose version. It is written to a temporary name in the same
folder and renamed into place, so a crash mid-save never leaves a truncated file that looks like a snapshot.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastpose import __version__
from fastpose.config import FIELDS, Config, load, parse_override, validate
from fastpose.device import memory_format
from fastpose.errors import USER_FIXABLE_ERRNOS, UserError, cause
from fastpose.model import PoseNet, build_model, layout_of

# Wrappers that prefix parameter names: DistributedDataParallel ('module.') and torch.compile ('_orig_mod.').
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrapped_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict with DDP / torch.compile prefixes removed, so it loads into a bare PoseNet."""
    state = {}
    for key, value in model.state_dict().items():
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    changed = True
        state[key] = value
    return state


def rng_state() -> dict[str, Any]:
    """Every random generator training draws from (data order, augmentation, dropout-free init is already done)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Put back the generators saved by `rng_state` (CUDA only when this machine has the same number of devices)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def snapshot_path(out_dir: str | Path, iteration: int, prefix: str = "snapshot") -> Path:
    return Path(out_dir) / f"{prefix}-{iteration}.pt"


def list_snapshots(out_dir: str | Path, prefix: str = "snapshot") -> list[tuple[int, Path]]:
    """(iteration, path) of every `<prefix>-<iteration>.pt` in out_dir, by increasing iteration (not name order)."""
    pattern = re.compile(re.escape(prefix) + r"-(\d+)\.pt")
    found = []
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    for path in folder.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_snapshot(out_dir: str | Path, prefix: str = "snapshot") -> Path | None:
    """The snapshot with the highest iteration, or None when there is none."""
    found = list_snapshots(out_dir, prefix)
    return found[-1][1] if found else None



def write_snapshot(path: str | Path, iteration: int, *, model: torch.nn.Module, optimizer, cfg,
                   data_position: dict | None = None, extra: dict | None = None, advice: str = "") -> Path:
    """Write one snapshot file `path` atomically (the format load_snapshot reads; `fastpose import-tf` writes one
    with optimizer None). UserError naming the file, plus `advice`, when the disk is full or not writable."""
    path = Path(path)
    payload = {
        "iteration": int(iteration),
        "model": unwrapped_state_dict(model),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": rng_state(),
        "data_position": dict(data_position or {}),
        "config": cfg.to_dict(),
        "fastpose_version": __version__,
        "extra": dict(extra or {}),
    }
    # A temp name that list_snapshots never matches; same folder, so os.replace is an atomic rename.
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno not in USER_FIXABLE_ERRNOS:
            raise
        raise UserError(f"Could not write snapshot {path} at iteration {iteration} ({cause(e)}); nothing partial was "
                        f"left. {advice or f'Free space in {path.parent}, then run the command again.'}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_snapshot(out_dir: str | Path, iteration: int, *, model: torch.nn.Module, optimizer, cfg,
                  data_position: dict, extra: dict | None = None, prefix: str = "snapshot",
                  max_to_keep: int = 5) -> Path:
    """Write `<prefix>-<iteration>.pt` atomically; keep it and the newest `max_to_keep - 1` other snapshots."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = snapshot_path(out_dir, iteration, prefix)
    write_snapshot(path, iteration, model=model, optimizer=optimizer, cfg=cfg, data_position=data_position,
                   extra=extra, advice=f"Free space in {out_dir} (or lower max_to_keep), then continue with "
                   f"`fastpose train CONFIG --resume` from the newest snapshot there.")
    if max_to_keep > 0:
        # The snapshot just written always stays (even if a stale run left higher iterations), plus the newest
        # max_to_keep - 1 others.
        others = [p for _, p in list_snapshots(out_dir, prefix) if p != path]
        # max(.., 0): with fewer others than that, a negative end would slice off all but the last few
        for old in others[: max(len(others) - (max_to_keep - 1), 0)]:
            old.unlink(missing_ok=True)
    return path


def load_snapshot(path: str | Path, map_location="cpu") -> dict:
    """Read a snapshot written by save_snapshot; UserError when it is missing, truncated or not a fastpose snapshot."""
    path = Path(path)
    if path.is_dir():
        newest = latest_snapshot(path)
        hint = f", e.g. its newest, {newest}" if newest else f"; {path} holds none (train first)"
        raise UserError(f"Snapshot {path} is a folder. Pass a snapshot-<iteration>.pt file{hint}.")
    if not path.is_file():
        raise UserError(f"Snapshot {path} does not exist. Pass an existing snapshot-<iteration>.pt file (training "
                        f"writes them into the config's out_dir).")
    try:
        # weights_only=False: the RNG states are numpy/python objects; snapshots are files this program wrote.
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise UserError(f"Snapshot {path} could not be read ({cause(e)}); it is corrupt or truncated. Delete it "
                        f"and use an earlier snapshot of {path.resolve().parent} (training with --resume continues "
                        f"from the newest one left).") from None
    required = ("iteration", "model", "optimizer", "rng", "data_position", "config")
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in required):
        raise UserError(f"{path} is not a fastpose training snapshot (it lacks "
                        f"{', '.join(k for k in required if not isinstance(ckpt, dict) or k not in ckpt)}). "
                        f"Pass a snapshot-<iteration>.pt written by `fastpose train`; an ImageNet .pth belongs in "
                        f"the config's init_weights instead.")
    return ckpt


def config_from_snapshot(ckpt: dict, path: str | Path = "the snapshot", overrides: list[str] | None = None):
    """The Config the snapshot (file `path`) was trained with (checked again, as if loaded from a file), with
    `--set key=value` overrides applied on top (where a command takes the snapshot instead of a config file)."""
    values = ckpt["config"]
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise UserError(f"{path}: the saved config is {type(values).__name__}, not a mapping of keys: the snapshot is "
                        f"damaged. Use another snapshot of that run, or pass a config file.")
    unknown = [k for k in values if k not in FIELDS]
    if unknown:
        raise UserError(f"{path}: the saved config has keys this fastpose {__version__} does not know: "
                        f"{', '.join(unknown)} (written by fastpose {ckpt.get('fastpose_version', '?')}). Use that "
                        f"version, or pass a config file instead of the snapshot's.")
    if values.get("num_joints") in (None, 0):  # training always saves the bound joint set
        raise UserError(f"{path}: the saved config has num_joints = {values.get('num_joints')!r}, but a trained "
                        f"network has a joint set: the snapshot is damaged or was not written by `fastpose train`. Use "
                        f"another snapshot, or pass the run's config file.")
    try:
        cfg = load(None, **values)
    except UserError as e:
        raise UserError(f"{path}: the saved config does not load: {e} The snapshot is damaged or from another "
                        f"fastpose version ({ckpt.get('fastpose_version', '?')}); use another snapshot of that run, "
                        f"or pass a config file.") from None
    if not overrides:
        return cfg
    overridden = {parse_override(text)[0] for text in overrides}  # --set beats the saved value; a bad one is named
    return load(None, overrides, **{k: v for k, v in values.items() if k not in overridden})  # as --set by load


# The joint set: what a config may leave open (0 / empty) for a snapshot or a dataset manifest to fill.
JOINT_KEYS = ("num_joints", "joint_names", "all_joints", "all_joints_names", "skeleton")


def bind_snapshot_joints(cfg: Config, ckpt: dict, checkpoint: str | Path) -> Config:
    """cfg with its open joint set filled from the snapshot's saved config; a UserError where what cfg does set
    (num_joints, joint_names, all_joints) disagrees with the joint set the snapshot was trained with.

    The one binding of a (config, snapshot) pair: eval, predict and fit-assembly go through it (via load_model); where a
    dataset is read, `fastpose.dataset.bind_joints` then checks the result against the shards' manifest."""
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        raise UserError(f"{checkpoint}: the snapshot holds no saved config (found {type(saved).__name__}); it is "
                        f"damaged. Use another snapshot of that run.")
    trained = {key: saved.get(key) for key in JOINT_KEYS}
    k = trained["num_joints"]
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise UserError(f"{checkpoint}: the snapshot's saved config has num_joints = {k!r}, not a positive integer; "
                        f"the snapshot is damaged or was not written by `fastpose train`. Use another snapshot.")
    for key in ("num_joints", "joint_names", "all_joints"):
        given = getattr(cfg, key)
        if given and trained[key] and given != trained[key]:
            raise UserError(f"The config sets {key} = {given}, but {checkpoint} was trained with {key} = "
                            f"{trained[key]}. Remove {key} from the config (the snapshot brings its joint set), or "
                            f"pass the snapshot of a run trained with this joint set.")
    cfg = dataclasses.replace(cfg)  # the caller's config is left as it was
    for key in JOINT_KEYS:
        if not getattr(cfg, key) and trained[key]:
            setattr(cfg, key, trained[key] if key == "num_joints" else [list(v) if isinstance(v, list) else v
                                                                        for v in trained[key]])
    validate(cfg, f"config + {checkpoint}")
    return cfg


def bind_snapshot_network(cfg: Config, ckpt: dict, checkpoint: str | Path) -> Config:
    """cfg with the backbone the snapshot was trained in: its backbone_layout (resolved; a snapshot older than the
    key is torchvision) where cfg says auto, its backbone_width where cfg has the default 1. Both layouts have the same
    parameter names and shapes, so a wrong layout would load silently: a cfg that names another one is a UserError."""
    saved = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    trained = {"backbone_layout": layout_of(saved.get("backbone_layout", "auto")),
               "backbone_width": saved.get("backbone_width", 1.0)}
    cfg = dataclasses.replace(cfg)  # the caller's config is left as it was
    for key, default in (("backbone_layout", "auto"), ("backbone_width", 1.0)):
        given = getattr(cfg, key)
        if given != default and given != trained[key]:
            raise UserError(f"The config sets {key} = {given}, but {checkpoint} was trained with {key} = "
                            f"{trained[key]}: the weights belong to that network. Remove {key} from the config (the "
                            f"snapshot brings it), or pass a snapshot trained with {key} = {given}.")
        setattr(cfg, key, trained[key])
    validate(cfg, f"config + {checkpoint}")
    return cfg


def load_model(checkpoint: str | Path, device: torch.device, cfg: Config | None = None) -> tuple[PoseNet, Config]:
    """(the network in eval mode on `device`, its Config) from a snapshot path; cfg defaults to the snapshot's own,
    and a given cfg's open joint set is filled from the snapshot (`bind_snapshot_joints`). A config whose network does
    not fit the snapshot's weights is a UserError naming the first mismatches."""
    ckpt = load_snapshot(checkpoint)
    cfg = config_from_snapshot(ckpt, checkpoint) if cfg is None else bind_snapshot_joints(cfg, ckpt, checkpoint)
    cfg = bind_snapshot_network(cfg, ckpt, checkpoint)  # the returned cfg names the layout built, never auto
    if not isinstance(ckpt["model"], dict):
        raise UserError(f"{checkpoint}: its model weights are a {type(ckpt['model']).__name__}, not a state_dict: the "
                        f"snapshot is damaged. Use another snapshot of that run.")
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:
        own, saved = model.state_dict(), ckpt["model"]
        shapes = [f"{k} is {tuple(v.shape)} in the snapshot, {tuple(own[k].shape)} for the config"
                  for k, v in saved.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
        keys = [f"{len(set(saved) - set(own))} snapshot keys the config's network lacks (e.g. "
                f"{sorted(set(saved) - set(own))[0]})"] if set(saved) - set(own) else []
        keys += [f"{len(set(own) - set(saved))} keys of the config's network the snapshot lacks (e.g. "
                 f"{sorted(set(own) - set(saved))[0]})"] if set(own) - set(saved) else []
        raise UserError(f"{checkpoint}: its weights do not fit the network of the config (net_type {cfg.net_type}, "
                        f"{cfg.num_joints} joints, location_refinement {cfg.location_refinement}): "
                        f"{'; '.join((shapes[:2] + keys) or ['the state_dict does not load'])}. Evaluate with the "
                        f"config the snapshot was trained with (leave out the config argument to use the one stored "
                        f"in the snapshot).") from None
    # The layout inference runs in (channels_last where it is faster): inputs follow it, see fastpose.device.
    return model.to(device, memory_format=memory_format(cfg.channels_last, device)).eval(), cfg
