"""TensorFlow-slim checkpoints onto a PoseNet: the reference's ImageNet and pose weights without TensorFlow.

A checkpoint (`fastpose.tfckpt.open_checkpoint`: V1 `.ckpt` or V2 prefix) of TF-slim's `resnet_v1_<depth>` (50, 101,
152), optionally with pose-tensorflow's / DeepLabCut 2.x's heads, loads into the slim layout of `fastpose.model`:

(shown for resnet_v1_50; U = `.../block<b>/unit_<u>/bottleneck_v1`, L = `layer<b>.<u-1>`)

| TF variable | PoseNet key |
|---|---|
| `resnet_v1_50/conv1/weights` (7, 7, 3, 64) HWIO | `conv1.weight` (64, 3, 7, 7) OIHW |
| `resnet_v1_50/conv1/BatchNorm/{gamma,beta,moving_mean,moving_variance}` | `bn1.{weight,bias,running_{mean,var}}` |
| `U/conv<j>/weights` (+ `/BatchNorm/*`) | `L.conv<j>.weight` (`L.bn<j>.*`) |
| `U/shortcut/weights` (+ `/BatchNorm/*`) | `L.downsample.0.weight` (`L.downsample.1.*`) |
| `pose/part_pred/block4/{weights,biases}` (3, 3, K, C) | `part.deconv.{weight,bias}` (C, K, 3, 3) |
| `pose/{locref_pred,pairwise_pred,intermediate_supervision}/block4/*` | `{locref,pairwise,intermediate}.deconv.*` |

Convolutions: TF's HWIO (kh, kw, in, out) -> torch's OIHW, a transpose (3, 2, 0, 1). Transposed convolutions: TF's
`conv2d_transpose` filter (kh, kw, out, in) -> torch's ConvTranspose2d (in, out, kh, kw), the same transpose and no
spatial flip (both add input cell i times w[t] to output row 2i + t; `fastpose.model.TransposedHead` crops as TF's
SAME). Batch norm without gamma (`batch_norm_scale: false`) means gamma 1. Ignored: `global_step`, optimiser slots
(`*/Momentum`, `*/Adam`, `*/Adam_1`, `beta1_power`, `beta2_power`), the ImageNet classifier (`*/logits/*`).

`tf_arch` reads the architecture from the names and shapes alone (depth, units per block, base depths hence
backbone_width, which heads, num_joints); which block3 unit feeds the intermediate head is not in a checkpoint (the
head reads any unit's output), so it comes from the config's intermediate_supervision_layer. `check_config` compares it
with a config, `load_tf` copies the tensors, `init_weights` is what `fastpose train` does with `init_weights:`.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from fastpose.config import SLIM_NET_TYPES
from fastpose.errors import UserError
from fastpose.model import ARCHS, BASE_DEPTHS, HEAD_NAMES, PoseNet, load_imagenet, stage_depths
from fastpose.tfckpt import is_tf_checkpoint, open_checkpoint

# Depths of TF-slim's resnet_v1 and the net_type each is.
DEPTHS = {50: "resnet_50", 101: "resnet_101", 152: "resnet_152"}
# Head module -> the reference's variable scope (pose-tensorflow nets/pose_net.py, DeepLabCut 2.x the same).
HEAD_SCOPES = {"part": "pose/part_pred/block4", "locref": "pose/locref_pred/block4",
               "pairwise": "pose/pairwise_pred/block4", "intermediate": "pose/intermediate_supervision/block4"}
# PoseNet BatchNorm2d tensor -> TF-slim batch_norm variable.
BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
# Variables that are not weights of the network: training state, optimiser slots, the ImageNet classifier.
IGNORED = re.compile(r"(^|/)(global_step|beta1_power|beta2_power|Momentum|Adam|Adam_1|ExponentialMovingAverage)$"
                     r"|(^|/)logits/")
# Scopes of architectures fastpose cannot build, with what they are (DeepLabCut 2.x's other backbones).
FOREIGN = (("mobilenet", "a MobileNet"), ("efficientnet", "an EfficientNet"), ("resnet_v2", "a ResNet v2"))
UNIT = re.compile(r"^resnet_v1_(\d+)/block(\d)/unit_(\d+)/bottleneck_v1/")


def _fix(path) -> str:
    return (f"fastpose reads TF-slim resnet_v1_50 / resnet_v1_101 / resnet_v1_152 checkpoints (the reference's "
            f"ImageNet weights, pose-tensorflow and DeepLabCut 2.x ResNet models); {path} is not one")


def tf_arch(ckpt) -> dict:
    """The network a TF checkpoint holds, from its variable names and shapes:
    {"net_type": "resnet_50", "depth": 50, "scope": "resnet_v1_50", "units": (3, 4, 6, 3), "base_depths": (64, ...),
    "width": 1.0, "heads": {"part": channels, ...} (only those present), "num_joints": K or None (no part head)}.
    UserError for another architecture (MobileNet, EfficientNet, ResNet v2, any other scope) or an inconsistent one."""
    names = [n for n in ckpt.names() if not IGNORED.search(n)]
    depths = sorted({int(m.group(1)) for n in names if (m := re.match(r"^resnet_v1_(\d+)/", n))})
    if not depths:
        scopes = sorted({n.split("/", 1)[0] for n in names})
        low = " ".join(names).lower()
        what = next((label for key, label in FOREIGN if key in low), None)
        kind = f"holds {what} network" if what else "has no resnet_v1_<depth> scope"
        raise UserError(f"The TensorFlow checkpoint {ckpt.path} {kind} (top-level scopes: "
                        f"{', '.join(scopes[:6]) or 'none'}), and fastpose reads only TF-slim resnet_v1_50 / "
                        f"resnet_v1_101 / resnet_v1_152 checkpoints (the reference's ImageNet weights, pose-tensorflow "
                        f"and DeepLabCut 2.x ResNet models). DeepLabCut's MobileNet and EfficientNet models are not "
                        f"supported: run those with DeepLabCut, or retrain the project with a ResNet in fastpose.")
    if len(depths) > 1 or depths[0] not in DEPTHS:
        raise UserError(f"{ckpt.path}: it holds the scopes {', '.join(f'resnet_v1_{d}' for d in depths)}. "
                        f"{_fix(ckpt.path)} (one network of depth 50, 101 or 152).")
    depth = depths[0]
    scope, net_type = f"resnet_v1_{depth}", DEPTHS[depth]
    units = [0, 0, 0, 0]
    for n in names:
        m = UNIT.match(n)
        if m and 1 <= int(m.group(2)) <= 4:
            units[int(m.group(2)) - 1] = max(units[int(m.group(2)) - 1], int(m.group(3)))
    expected = tuple(ARCHS[net_type][1])
    if tuple(units) != expected:
        raise UserError(f"{ckpt.path}: {scope} has {tuple(units)} units in block1..4, but resnet_v1_{depth} has "
                        f"{expected}. The checkpoint is incomplete or of a modified network; {_fix(ckpt.path)}.")
    base = []
    for b in range(4):
        name = f"{scope}/block{b + 1}/unit_1/bottleneck_v1/conv1/weights"
        if name not in names:
            raise UserError(f"{ckpt.path}: it lacks {name}. The checkpoint is incomplete; {_fix(ckpt.path)}.")
        base.append(int(ckpt.shape(name)[-1]))
    width = base[0] / BASE_DEPTHS[0]
    if stage_depths(width) != base:
        raise UserError(f"{ckpt.path}: its blocks' base depths {tuple(base)} are not one width multiple of "
                        f"{BASE_DEPTHS} (backbone_width scales all four alike). {_fix(ckpt.path)}.")
    heads = {}
    for head, head_scope in HEAD_SCOPES.items():
        name = f"{head_scope}/weights"
        if name in names:
            heads[head] = int(ckpt.shape(name)[2])  # (3, 3, out, in)
    k = heads.get("part")
    return {"net_type": net_type, "depth": depth, "scope": scope, "units": tuple(units), "base_depths": tuple(base),
            "width": width, "heads": heads, "num_joints": k}


def check_config(arch: dict, cfg, path, *, heads: bool) -> None:
    """UserError where the config's network cannot take the checkpoint's weights: net_type, backbone_width, the
    layout, and with heads the joint count (and the locref / pairwise channels that follow from it)."""
    if cfg.backbone_layout == "torchvision":
        raise UserError(f"init_weights {path} is a TensorFlow checkpoint, which needs the network in TF-slim's layout, "
                        f"but the config sets backbone_layout: torchvision. Set backbone_layout: slim (or auto, the "
                        f"default, which picks slim for TF weights).")
    if cfg.net_type != arch["net_type"]:
        raise UserError(f"init_weights {path} holds {arch['scope']} (ResNet-{arch['depth']}), but the config's "
                        f"net_type is {cfg.net_type}. Set net_type: {arch['net_type']}, or point init_weights at "
                        f"resnet_v1_{cfg.net_type.split('_')[1]} weights.")
    if stage_depths(cfg.backbone_width) != list(arch["base_depths"]):
        raise UserError(f"init_weights {path} has blocks of base depths {arch['base_depths']} (backbone_width "
                        f"{arch['width']:g}), but the config's backbone_width {cfg.backbone_width:g} gives "
                        f"{tuple(stage_depths(cfg.backbone_width))}. Set backbone_width: {arch['width']:g}.")
    k = arch["num_joints"]
    if heads and k is not None:
        if k != cfg.num_joints:
            raise UserError(f"init_weights {path} is a pose model whose part head predicts {k} joints "
                            f"(pose/part_pred/block4), but the config has num_joints = {cfg.num_joints}. Use the "
                            f"pose_cfg.yaml that model was trained with (num_joints: {k} and its all_joints), or "
                            f"start from ImageNet weights (a resnet_v1_{arch['depth']}.ckpt) to train new joints.")
        for head, channels in (("locref", 2 * k), ("pairwise", 2 * k * (k - 1))):
            got = arch["heads"].get(head)
            if got is not None and got != channels:
                raise UserError(f"init_weights {path}: its {HEAD_SCOPES[head]} has {got} channels, but {k} joints "
                                f"give {channels} (the reference's layout). The checkpoint's heads are of another "
                                f"design (e.g. DeepLabCut's multi-animal part affinity fields); fastpose cannot load "
                                f"them. Start from its ImageNet weights instead.")


def _tf_name(key: str, scope: str) -> tuple[str, str] | None:
    """(TF variable, kind) for a PoseNet state_dict key: kind 'conv' (transpose HWIO -> OIHW), 'deconv', 'bn', or
    'bias'; None for keys with no TF counterpart (BN's num_batches_tracked)."""
    parts = key.split(".")
    if parts[-1] == "num_batches_tracked":
        return None
    if parts[0] in HEAD_NAMES:  # part.deconv.weight / .bias
        return f"{HEAD_SCOPES[parts[0]]}/{'weights' if parts[-1] == 'weight' else 'biases'}", (
            "deconv" if parts[-1] == "weight" else "bias")
    if parts[0] in ("conv1", "bn1"):
        base, sub = f"{scope}/conv1", parts[0][:-1]  # conv1 -> conv, bn1 -> bn
    else:  # layer<b>.<i>.<conv<j>|bn<j>|downsample>.(<0|1>.)<tensor>
        unit = f"{scope}/block{parts[0][5:]}/unit_{int(parts[1]) + 1}/bottleneck_v1"
        if parts[2] == "downsample":
            base, sub = f"{unit}/shortcut", "conv" if parts[3] == "0" else "bn"
        else:
            base, sub = f"{unit}/conv{parts[2][-1]}", parts[2][:-1]
    if sub == "conv":
        return f"{base}/weights", "conv"
    return f"{base}/BatchNorm/{BN_NAMES[parts[-1]]}", "bn"


def load_tf(model: PoseNet, ckpt, *, heads: bool) -> dict:
    """Copy a TF checkpoint's backbone (and with heads, the heads it has) into a slim-layout PoseNet.

    Returns {"loaded": [PoseNet keys], "new": [PoseNet keys left as initialised: heads the checkpoint lacks or that
    were not asked for], "gamma_one": [BN keys set to 1: a checkpoint without gamma], "unused": [checkpoint variables
    not loaded, ignored ones (optimiser slots, global_step, logits) left out]}. UserError when the model is not in the
    slim layout, a backbone tensor is missing, or a shape differs (check_config reports those more precisely)."""
    if getattr(model, "layout", None) != "slim":
        raise UserError(f"{ckpt.path} is a TensorFlow checkpoint: it loads into the slim layout only (the network "
                        f"is in the {getattr(model, 'layout', '?')} layout). Set backbone_layout: slim or auto.")
    arch = tf_arch(ckpt)
    scope = arch["scope"]
    names = set(ckpt.names())
    state = model.state_dict()
    loaded, new, gamma_one, used = [], [], [], set()
    values: dict[str, torch.Tensor] = {}
    for key, own in state.items():
        mapped = _tf_name(key, scope)
        if mapped is None:
            continue
        name, kind = mapped
        if key.split(".", 1)[0] in HEAD_NAMES and (not heads or name not in names):
            new.append(key)
            continue
        if name not in names:
            if kind == "bn" and name.endswith("/gamma"):  # batch_norm(scale=False): gamma is 1
                values[key] = torch.ones_like(own)
                gamma_one.append(key)
                continue
            raise UserError(f"{ckpt.path}: it lacks {name} (for {key}); the checkpoint is incomplete. "
                            f"{_fix(ckpt.path)}.")
        array = np.asarray(ckpt.read(name), dtype=np.float32)
        if kind in ("conv", "deconv"):
            array = array.transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw); deconv (in, out, kh, kw)
        if tuple(array.shape) != tuple(own.shape):
            joints = f", num_joints {arch['num_joints']}" if arch["num_joints"] else ""
            raise UserError(f"{ckpt.path}: {name} has shape {tuple(ckpt.shape(name))}, which does not fit {key} "
                            f"{tuple(own.shape)} of the config's network (net_type {model.net_type}, "
                            f"{model.num_joints} joints, width {model.width:g}). Make the config match the "
                            f"checkpoint: net_type {arch['net_type']}, backbone_width {arch['width']:g}{joints}.")
        values[key] = torch.from_numpy(np.ascontiguousarray(array))
        loaded.append(key)
        used.add(name)
    model.load_state_dict(values, strict=False)
    unused = sorted(n for n in names - used if not IGNORED.search(n))
    return {"loaded": loaded, "new": new, "gamma_one": gamma_one, "unused": unused}


def resolve_layout(cfg) -> str:
    """The config's backbone_layout with auto decided: slim when init_weights is a TensorFlow checkpoint (V1 file or
    V2 prefix), else torchvision."""
    if cfg.backbone_layout != "auto":
        return cfg.backbone_layout
    if not (cfg.init_weights and is_tf_checkpoint(cfg.init_weights)):
        return "torchvision"
    if cfg.net_type not in SLIM_NET_TYPES:
        raise UserError(f"init_weights {cfg.init_weights} is a TensorFlow checkpoint (TF-slim resnet_v1, bottleneck "
                        f"units only), but net_type is {cfg.net_type}. Set net_type to the checkpoint's depth "
                        f"({', '.join(SLIM_NET_TYPES)}), or use torchvision weights (`fastpose weights download`).")
    return "slim"


def init_weights(model: PoseNet, cfg) -> str:
    """Load cfg.init_weights into a fresh model, as `fastpose train` does; returns the line it prints.

    A TF checkpoint: an ImageNet one (no pose heads) fills the backbone, a pose model (pose-tensorflow, DeepLabCut
    2.x) the backbone and its heads, after check_config. Anything else is a torchvision .pth (`load_imagenet`)."""
    path = cfg.init_weights
    if not is_tf_checkpoint(path):
        report = load_imagenet(model, path)
        return (f"init_weights {path}: {len(report['missing'])} missing, {len(report['unexpected'])} unexpected keys "
                f"(the heads are new)" + (f"; missing: {report['missing'][:5]}" if report["missing"] else "")
                + (f"; unexpected: {report['unexpected'][:5]}" if report["unexpected"] else ""))
    ckpt = open_checkpoint(path)
    arch = tf_arch(ckpt)
    check_config(arch, cfg, path, heads=True)
    report = load_tf(model, ckpt, heads=True)
    kind = "pose model" if arch["heads"] else "ImageNet backbone"
    heads = sorted({k.split(".", 1)[0] for k in report["loaded"] if k.split(".", 1)[0] in HEAD_NAMES})
    new = sorted({k.split(".", 1)[0] for k in report["new"]})
    return (f"init_weights {path} (TensorFlow {ckpt.version}, {arch['scope']}, {kind}): {len(report['loaded'])} "
            f"tensors; heads loaded: {', '.join(heads) or 'none'}; new: {', '.join(new) or 'none'}"
            + (f"; gamma 1 (none in the file): {len(report['gamma_one'])}" if report["gamma_one"] else "")
            + (f"; not used: {report['unused'][:5]}" if report["unused"] else ""))

