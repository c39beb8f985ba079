"""A config's dataset: where its shards are, and the joint set it brings.

`dataset:` in a config is a shards folder (`fastpose convert ...`) or the seed's `dataset.mat`, which is converted on
first use into a cache beside it (`fastpose.convert.mat.cached_shards`). A config may leave the joint set open
(num_joints, joint_names, all_joints, skeleton); `bind_joints` fills it from the shards' manifest and checks that
what the config does say agrees with it. Every command that reads a dataset with a config goes through here.
"""

from __future__ import annotations

from pathlib import Path

from fastpose.config import Config, with_joints
from fastpose.convert.mat import cached_shards
from fastpose.errors import UserError
from fastpose.shards import read_manifest


def resolve(cfg: Config, quiet: bool = False) -> Path:
    """The shards folder of cfg.dataset; a `.mat` (the seed's format) is converted on first use into a cache."""
    if not cfg.dataset:
        raise UserError("The config has no `dataset:`. Set it to a shards folder (fastpose convert ...) or a "
                        "dataset.mat.")
    path = Path(cfg.dataset)
    if path.suffix == ".mat":
        return cached_shards(path, cfg, quiet=quiet)
    read_manifest(path)  # a clear error when it is not a dataset
    return path


def bind_joints(cfg: Config, quiet: bool = False, what: str = "The config") -> tuple[Config, Path]:
    """(cfg with the joint set of its dataset's manifest, the shards folder); a UserError when they disagree.
    `what` names where cfg's joint set came from in that message (a snapshot bound by checkpoint.load_model)."""
    data = resolve(cfg, quiet)
    manifest = read_manifest(data)
    if cfg.num_joints and cfg.num_joints != manifest["num_joints"]:
        raise UserError(f"{what} says num_joints = {cfg.num_joints} but the dataset {data} has "
                        f"{manifest['num_joints']} joints ({', '.join(map(str, manifest['joint_names'][:20]))}). "
                        f"Remove num_joints from the config (the dataset brings its joint set), use the dataset this "
                        f"joint set belongs to, or convert the data with --num-joints {cfg.num_joints}.")
    cfg = with_joints(cfg, manifest["num_joints"], manifest["joint_names"], manifest["all_joints"],
                      manifest.get("skeleton"))
    return cfg, data
