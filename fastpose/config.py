"""The training configuration: one typed dataclass loaded from a pose-tensorflow style `pose_cfg.yaml`.

Every key of the reference trainer's `pose_cfg.yaml` is a field here, with the reference's default, plus the keys that
fastpose adds (batch_size, precision, seed, ...). Loading is strict where the reference was silent:

- an unknown key is an error naming the file, the key and the closest valid key;
- a value of the wrong type, or an impossible one (negative stride, jitter lo > up, a joint id >= num_joints), is an
  error naming the key, the value and what is allowed;
- `dataset_type: mpii | coco` brings its joint set; a user value that contradicts it is an error, not overwritten.

`load(path, overrides)` applies `--set key=value` overrides (value parsed as YAML) before the same checks. Relative
paths (`dataset`, `init_weights`, `out_dir`, ...) are resolved against the config file's folder, as the reference
resolved them against the experiment folder it ran in.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastpose.atomic import write_atomic
from fastpose.errors import UserError

NET_DEPTHS = {"resnet_18": 18, "resnet_34": 34, "resnet_50": 50, "resnet_101": 101, "resnet_152": 152}
# Residual blocks in torchvision's layer3 (TF-slim block3) per network: the valid intermediate_supervision_layer range.
LAYER3_BLOCKS = {"resnet_18": 2, "resnet_34": 6, "resnet_50": 6, "resnet_101": 23, "resnet_152": 36}
DATASET_TYPES = ("default", "mpii", "coco")
OPTIMIZERS = ("sgd", "adam")
ADAM_SCHEDULES = ("constant", "multi_step", "cosine")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
BACKBONE_LAYOUTS = ("auto", "torchvision", "slim")
SLIM_NET_TYPES = ("resnet_50", "resnet_101", "resnet_152")  # TF-slim's resnet_v1 has bottleneck units only

# DeeperCut's 14 MPII joints (MPII ids [0,1,2,3,4,5,10,11,12,13,14,15,8,9] become 0..13) and their symmetric groups.
MPII_JOINT_NAMES = [
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder",
    "l_elbow", "l_wrist", "upper_neck", "head_top",
]  # fmt: skip
MPII_ALL_JOINTS = [[0, 5], [1, 4], [2, 3], [6, 11], [7, 10], [8, 9], [12], [13]]
MPII_GROUP_NAMES = ["ankle", "knee", "hip", "wrist", "elbow", "shoulder", "chin", "forehead"]
MPII_SKELETON = [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [6, 7], [7, 8], [8, 12], [9, 12], [9, 10], [10, 11],
                 [12, 13], [2, 8], [3, 9]]  # fmt: skip

COCO_JOINT_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
]  # fmt: skip
COCO_ALL_JOINTS = [[0], [1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]]
COCO_GROUP_NAMES = ["nose", "eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle"]
COCO_SKELETON = [[15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12], [5, 6], [5, 7], [6, 8], [7, 9],
                 [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6]]  # fmt: skip

# Keys of the reference's pose_cfg.yaml that fastpose accepts (so its configs load unchanged) but does not act on,
# with what to do instead. Setting one to a non-default value prints a note, so nobody believes it took effect.
NO_EFFECT = {
    "dataset_phase": "fastpose converts COCO before training: `fastpose convert coco --images ... --annotations ...`",
    "dataset_ann": "fastpose converts COCO before training: `fastpose convert coco`",
    "coco_only_images_with_people": "`fastpose convert coco` keeps only images with labelled people",
    "crop": "use crop_size: [w, h] (a random crop that keeps the person)",
    "crop_pad": "use crop_size: [w, h]",
    "weigh_part_predictions": "per-joint score weights from the dataset are not supported",
    "weigh_negatives": "negative-cell subsampling (fg_fraction) is not supported; all cells are weighted",
    "fg_fraction": "negative-cell subsampling is not supported; all cells are weighted",
    "pairwise_stats_collect": "run `fastpose pairwise-stats CONFIG`",
    "tensorflow_pairwise_order": "fastpose has one pairwise channel order: pair id (K-1)s + e - [s < e]",
    "pairwise_model_dir": "`fastpose fit-assembly` writes <checkpoint>.assembly.json",
    "use_gt_segm": "ground-truth segmentations are not used; crowd regions come from `fastpose convert coco`",
    "scmap_threshold": "not used at test time; see det_min_score for multi-person detections",
    "scoremap_dir": "`fastpose eval --out DIR` sets where predictions go",
    "video": "video input is not supported; extract frames and use `fastpose predict`",
    "video_batch": "video input is not supported",
}

# The augmentation ranges ([] or [lo, hi]) and the bounds of each value; their probabilities.
AUGMENT_RANGES = (("rotation_range", -180.0, 180.0), ("brightness_range", 0.0, 10.0), ("contrast_range", 0.0, 10.0),
                  ("saturation_range", 0.0, 10.0), ("hue_range", -180.0, 180.0), ("gaussian_blur_range", 0.05, 20.0),
                  ("motion_blur_range", 1.0, 64.0), ("motion_blur_angle_range", -360.0, 360.0),
                  ("gaussian_noise_range", 0.0, 255.0))
AUGMENT_PROBABILITIES = ("rotation_p", "color_p", "gaussian_blur_p", "motion_blur_p", "gaussian_noise_p")

# Keys whose values are file system paths, resolved against the config file's folder.
PATH_KEYS = ("dataset", "init_weights", "out_dir", "pairwise_stats_fn", "pairwise_model_dir")

# The one exception to rejecting unknown keys: a DeepLabCut 2.x pose_cfg.yaml (dlc-models/iteration-*/<shuffle>/
# train/pose_cfg.yaml). DeepLabCut writes its template plus `project_path` (2.3's create_training_dataset) into every
# training pose_cfg.yaml and its own code reads the keys below; fastpose has no use for them. Key -> why it is ignored.
DLC_AUGMENTATION = ("DeepLabCut's imgaug/tensorpack augmentation; fastpose's own: scale_jitter_lo/up, mirror, "
                    "crop_size, rotation_range and the colour, blur and noise ranges")
DLC_SCALECROP = "DeepLabCut's scalecrop cropping; fastpose has crop_size"
DLC_BOOKKEEPING = "DeepLabCut project bookkeeping"
DLC_MULTI_ANIMAL = "multi-animal DeepLabCut: part affinity fields, identity channels, DLCRNet; not supported"
DLC_OTHER_NETS = "options of DeepLabCut's MobileNet/EfficientNet/DLCRNet networks, not supported"
DLC_COSINE = "DeepLabCut's cosine schedule of EfficientNets; fastpose has multi_step"
DLC_LOADER = "DeepLabCut's data loader"
DLC_KEYS = {
    **dict.fromkeys(("project_path", "metadataset", "snapshotindex", "num_outputs", "pseudo_label",
                     "pseudo_threshold", "superanimal", "resume_weights_only", "freezeencoder"), DLC_BOOKKEEPING),
    **dict.fromkeys(("apply_prob", "pre_resize", "max_shift", "crop_sampling", "cropratio", "rotation", "rotratio",
                     "rotateratio", "contrast", "convolution", "scaleratio", "fliplr", "symmetric_pairs",
                     "elastic_transform", "covering", "motion_blur", "motion_blur_params", "hist_eq", "grayscale",
                     "gaussian_noise", "crop_by", "traintime_resize", "blur_max_window_size", "blurratio",
                     "brightness_dif", "brightnessratio", "contrast_factor_lo", "contrast_factor_up",
                     "contrastratio", "noise_sigma", "noiseratio", "saturation_max_dif", "saturationratio",
                     "processratio", "to_clip", "is_rgb"), DLC_AUGMENTATION),
    **dict.fromkeys(("minsize", "leftwidth", "rightwidth", "topheight", "bottomheight"), DLC_SCALECROP),
    **dict.fromkeys(("multi_stage", "partaffinityfield_predict", "partaffinityfield_graph", "pafwidth", "paf_best",
                     "num_limbs", "num_idchannel", "bank3", "bank5", "smfactor", "sigma", "nmsradius", "minconfidence",
                     "locref_smooth", "scmap_type"), DLC_MULTI_ANIMAL),
    **dict.fromkeys(("use_batch_norm", "use_drop_out"), DLC_OTHER_NETS),
    **dict.fromkeys(("lr_init", "decay_steps", "alpha_r"), DLC_COSINE),
    "num_prefetch": DLC_LOADER,
}
# Keys both programs have that mean something else in DeepLabCut: left at fastpose's default.
DLC_REDEFINED = {"min_input_size": "DeepLabCut skips smaller training images; fastpose's scales them up, at inference "
                                   "too, so it stays 0"}
# DeepLabCut's own dataset_type values (its data loaders); they mean fastpose's `default` (the project's joint set).
DLC_DATASET_TYPES = ("imgaug", "scalecrop", "tensorpack", "deterministic", "default", "multi-animal-imgaug")


@dataclass
class Config:
    """All keys of a pose_cfg.yaml. Reference defaults unless marked `fastpose`."""

    # --- data ---
    dataset: str = ""  # a shards folder (fastpose convert) or a dataset.mat (converted on first use)
    dataset_type: str = "default"  # default | mpii | coco
    dataset_phase: str = "train2014"  # COCO: image folder / annotation split name
    dataset_ann: str = "person_keypoints"  # COCO: annotation file prefix
    coco_only_images_with_people: bool = True
    num_joints: int = 0  # 0: taken from the dataset
    all_joints: list[list[int]] = field(default_factory=list)  # symmetric groups, e.g. [[0, 5], [1, 4], [12]]
    all_joints_names: list[str] = field(default_factory=list)  # one name per group of all_joints
    joint_names: list[str] = field(default_factory=list)  # fastpose: one name per joint
    skeleton: list[list[int]] = field(default_factory=list)  # fastpose: edges drawn by predict
    split: str = "train"  # fastpose: the shards split to train on
    test_split: str = "test"  # fastpose: the split eval uses by default

    # --- augmentation ---
    global_scale: float = 1.0
    scale_jitter_lo: float = 1.0
    scale_jitter_up: float = 1.0
    mirror: bool = False
    max_input_size: int = 1500
    min_input_size: int = 0  # a smaller scaled side is scaled up to this (0: off; the reference skipped such images)
    crop: bool = False
    crop_pad: int = 0
    crop_size: list[int] = field(default_factory=list)  # fastpose: [w, h] random crop that keeps the person
    mean_pixel: list[float] = field(default_factory=lambda: [123.68, 116.779, 103.939])
    shuffle: bool = True
    # fastpose, training only, all off by default (the reference's configs train exactly as before). A range is [] (off)
    # or [lo, hi], drawn uniformly per sample from (seed, epoch, sample); `_p` is the chance a sample gets that op.
    rotation_range: list[float] = field(default_factory=list)  # degrees, counter-clockwise, about the image centre
    rotation_p: float = 0.5
    brightness_range: list[float] = field(default_factory=list)  # factor, 1 = unchanged (DALI color_twist)
    contrast_range: list[float] = field(default_factory=list)  # factor around grey 128, 1 = unchanged
    saturation_range: list[float] = field(default_factory=list)  # factor, 0 = grey, 1 = unchanged
    hue_range: list[float] = field(default_factory=list)  # degrees of hue rotation (YIQ), 0 = unchanged
    color_p: float = 0.5  # one coin for the four colour ranges above
    gaussian_blur_range: list[float] = field(default_factory=list)  # sigma, network-input pixels
    gaussian_blur_p: float = 0.5
    motion_blur_range: list[float] = field(default_factory=list)  # line kernel length, network-input pixels (>= 1)
    motion_blur_angle_range: list[float] = field(default_factory=lambda: [0.0, 180.0])  # the line's direction, degrees
    motion_blur_p: float = 0.5
    gaussian_noise_range: list[float] = field(default_factory=list)  # standard deviation, grey levels (0-255)
    gaussian_noise_p: float = 0.5

    # --- targets ---
    stride: int = 8
    pos_dist_thresh: float = 17.0
    locref_stdev: float = 7.2801
    weigh_part_predictions: bool = False
    weigh_negatives: bool = False
    fg_fraction: float = 0.25
    weigh_only_present_joints: bool = False

    # --- network ---
    net_type: str = "resnet_101"
    init_weights: str = ""  # torchvision ImageNet .pth (fastpose weights download) or empty for random init
    location_refinement: bool = False
    locref_loss_weight: float = 1.0
    locref_huber_loss: bool = True
    intermediate_supervision: bool = False
    intermediate_supervision_layer: int = 12
    freeze_bn: bool = True  # fastpose: batch-norm statistics frozen as in the reference
    # fastpose: multiplies the stages' base depths 64, 128, 256, 512 (the root conv stays 64 channels): thin, fast nets
    backbone_width: float = 1.0
    # fastpose: auto | torchvision | slim. slim = TF-slim resnet_v1 (the reference's own network and weights); auto =
    # slim when init_weights is a TensorFlow checkpoint, else torchvision. Training saves the resolved value.
    backbone_layout: str = "auto"

    # --- multi-person ---
    sparse_graph: list[list[int]] = field(default_factory=list)
    pairwise_stats_collect: bool = False
    pairwise_stats_fn: str = "pairwise_stats.mat"
    pairwise_predict: bool = False
    pairwise_huber_loss: bool = True
    pairwise_loss_weight: float = 1.0
    tensorflow_pairwise_order: bool = True
    pairwise_model_dir: str = ""
    use_gt_segm: bool = False
    nms_radius: float = 5.0
    det_min_score: float = 0.1
    scmap_threshold: float = 0.0

    # --- optimisation ---
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.9
    adam_lr: float = 0.0001
    # fastpose: Adam's rate per iteration. constant = adam_lr throughout (the reference); multi_step = multi_step's
    # rates, as DeepLabCut 2.x feeds its schedule to Adam; cosine = adam_lr along half a cosine towards 0 at the end
    adam_schedule: str = "constant"
    multi_step: list[list[float]] = field(default_factory=lambda: [[0.005, 10000], [0.02, 430000],
                                                                   [0.002, 730000], [0.001, 1030000]])  # fmt: skip
    regularize: bool = False
    weight_decay: float = 0.0001
    batch_size: int = 8  # the reference supported 1 only

    # --- run ---
    display_iters: int = 20
    save_iters: int = 60000
    max_to_keep: int = 5  # fastpose
    snapshot_prefix: str = "snapshot"
    log_dir: str = "log"
    scoremap_dir: str = "test"
    video: bool = False
    video_batch: bool = False
    out_dir: str = "run"  # fastpose: snapshots, logs, resolved config
    seed: int = 42  # fastpose
    deterministic: bool = False  # fastpose: fixed seeds, deterministic algorithms, fixed data order
    device: str = "auto"  # fastpose: auto | cpu | cuda
    # fastpose: auto | fp32 | bf16 | fp16; auto = bf16 autocast where the device runs it fast (CUDA with bf16, CPUs
    # with AMX / AVX512-BF16 that a probe finds faster), else fp32 (fastpose.device.resolve_precision)
    precision: str = "auto"
    channels_last: bool | str = "auto"  # fastpose: true | false | auto (= true on CUDA and the CPU)
    compile: bool | str = "auto"  # fastpose: true | false | auto (fastpose.device.resolve_compile)
    num_workers: int = 2  # fastpose: data loading worker processes
    num_threads: int = 2  # fastpose: DALI threads
    worker_timeout: float = 300.0  # fastpose: seconds a batch may take before the data workers count as stuck (0: none)
    pck_threshold: float = 0.2  # fastpose: eval
    pckh_threshold: float = 0.5  # fastpose: eval
    pcutoff: float = 0.6  # fastpose: eval, pixel error over joints scoring >= this too (DeepLabCut's p-cutoff)

    def max_iter(self) -> int:
        """The last iteration of the multi_step schedule."""
        return int(self.multi_step[-1][1])

    def lr_at(self, iteration: int) -> float:
        """Learning rate of a 1-based iteration: lr_k for iterations (end_{k-1}, end_k], as the reference."""
        for lr, end in self.multi_step:
            if iteration <= end:
                return float(lr)
        return float(self.multi_step[-1][0])

    def symmetric_permutation(self) -> list[int]:
        """perm[k] = the joint that k becomes under mirroring (from the pairs in all_joints)."""
        return list(symmetric_permutation(self.num_joints, self.all_joints))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)

    def save(self, path: str | Path) -> None:
        """Write the resolved config atomically (temp name, then rename)."""
        write_atomic(path, self.to_yaml())


def symmetric_permutation(num_joints: int, all_joints: list[list[int]]) -> tuple[int, ...]:
    """perm[k] = the joint id k becomes under mirroring: the two ids of each pair of all_joints swap."""
    perm = list(range(num_joints))
    for group in all_joints:
        if len(group) == 2:
            a, b = group
            perm[a], perm[b] = b, a
    return tuple(perm)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
HINTS = typing.get_type_hints(Config)


def closest_key(key: str, candidates=None) -> str | None:
    """The valid key closest to a misspelt one, or None when nothing is close."""
    candidates = list(candidates if candidates is not None else FIELDS)
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if match:
        return match[0]
    # A typo that only drops or adds an underscore-separated word ("locref_weight") still deserves a hint.
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.4)
    return match[0] if match else None


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_type(key: str, value: Any, tp, where: str) -> Any:
    """Return `value` converted to `tp` (int -> float only), or raise UserError naming key, value and type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(key, value, arg, where)
            except UserError:
                pass
        raise _type_error(key, value, tp, where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise _type_error(key, value, tp, where)
        return [_check_type(key, v, item_tp, where) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(key, value, tp, where)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # YAML reads 1e4 as a float
            return int(value)
        raise _type_error(key, value, tp, where)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _type_error(key, value, tp, where)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(key, value, tp, where)
    raise TypeError(f"unsupported config type {tp} for {key}")  # a bug in this file, not a user error


def _type_error(key, value, tp, where) -> UserError:
    return UserError(
        f"{where}: key '{key}' has value {value!r} of type {type(value).__name__}, but it must be "
        f"{_type_name(tp)} (default: {_default(key)!r}). Fix the value in the config file or in --set."
    )


def _default(key: str):
    f = FIELDS[key]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _yaml_problem(e: yaml.YAMLError) -> str:
    """' at line L, column C: <problem>' of a YAML error, on one line (PyYAML's own text spans several)."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    return f"{where}: {problem}" + (f" ({context})" if context else "")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `--set key=value`; the value is read as YAML (`--set 'multi_step=[[0.005, 100]]'`)."""
    if "=" not in text:
        raise UserError(f"--set '{text}': expected key=value, e.g. --set batch_size=16 or --set 'mirror=true'.")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise UserError(f"--set {key}: the value {raw!r} is not valid YAML{_yaml_problem(e)}. Quote the whole "
                        f"option for the shell, e.g. --set 'multi_step=[[0.005, 100]]'.") from None
    return key.strip(), value


def load(path: str | Path | None = None, overrides: list[str] | None = None, **values: Any) -> Config:
    """Load a config file (or only defaults when path is None), apply `--set` overrides and keyword values, check."""
    raw: dict[str, Any] = {}
    where = "config"
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        where = str(path)
        base = path.resolve().parent
        if path.is_dir():
            raise UserError(f"Config file {path} is a folder. Pass the path of a pose_cfg.yaml / fastpose config "
                            f"file (e.g. {path}/pose_cfg.yaml).")
        if not path.is_file():
            raise UserError(f"Config file {path} does not exist. Pass the path of a pose_cfg.yaml / fastpose config.")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path} is not valid YAML{_yaml_problem(e)}. Fix the syntax (note: `all_joints = [...]` "
                            f"as in the seed README is not YAML; write `all_joints: [...]`).") from None
        except UnicodeDecodeError:
            raise UserError(f"{path} is not a text file (not UTF-8). Pass the YAML config file.") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: the top level must be a mapping of key: value, got {type(raw).__name__}.")
        if is_dlc_pose_cfg(raw, path):
            raw, note = from_dlc(raw, path)
            sys.stderr.write(note + "\n")
    _check_keys(raw, where)
    explicit = dict(raw)
    for text in overrides or []:
        key, value = parse_override(text)
        _check_keys({key: value}, "--set")
        explicit[key] = value
    _check_keys(values, "arguments")
    explicit.update(values)

    overridden = {parse_override(text)[0] for text in overrides or []}
    kwargs = {k: _check_type(k, v, HINTS[k], where if k in raw and k not in overridden else "--set")
              for k, v in explicit.items()}
    cfg = Config(**kwargs)
    if path is not None:  # defaults too, so that a saved resolved config loads back identical
        for key in PATH_KEYS:
            value = getattr(cfg, key)
            if value and not Path(value).is_absolute():
                setattr(cfg, key, str(base / value))
    _apply_dataset_type(cfg, set(explicit), where)
    validate(cfg, where)
    lowest = min_pos_dist_thresh(cfg.stride, cfg.global_scale, cfg.scale_jitter_lo)
    if cfg.pos_dist_thresh < lowest:
        radius = cfg.pos_dist_thresh * cfg.global_scale * cfg.scale_jitter_lo
        sys.stderr.write(
            f"note: {where}: pos_dist_thresh x global_scale x scale_jitter_lo = {radius:.2f} px is below "
            f"stride / sqrt(2) = {cfg.stride / math.sqrt(2):.2f} px, so some joints get no positive score-map cell "
            f"and cannot be learnt. pos_dist_thresh is in dataset pixels: raise it to at least "
            f"{math.ceil(lowest)}.\n")
    for key in explicit:
        if key in NO_EFFECT and getattr(cfg, key) != _default(key):
            sys.stderr.write(f"note: {where}: {key} = {getattr(cfg, key)!r} has no effect in fastpose "
                             f"({NO_EFFECT[key]}).\n")
    return cfg


def min_pos_dist_thresh(stride: float, global_scale: float, scale_jitter_lo: float) -> float:
    """The smallest pos_dist_thresh (dataset pixels) that gives every joint a positive score-map cell.

    A joint midway between four cell centres is stride / sqrt(2) network pixels from each: with a smaller radius some
    joints get no positive cell at all and cannot be learnt, while the loss still falls (all negative). The radius in
    network pixels is pos_dist_thresh x the sample's scale, smallest at global_scale x scale_jitter_lo.
    """
    return stride / math.sqrt(2) / (global_scale * scale_jitter_lo)


def _check_keys(raw: dict, where: str) -> None:
    for key in raw:
        if key not in FIELDS:
            hint = closest_key(str(key))
            fix = f"Did you mean '{hint}'?" if hint else "See `fastpose config show` for every valid key."
            raise UserError(f"{where}: unknown key {str(key)!r}. {fix} (fastpose rejects unknown keys instead of "
                            f"silently ignoring them, so a typo cannot change your training.)")


def dlc_project(path: Path, raw: dict) -> Path | None:
    """The DeepLabCut project folder of a pose_cfg.yaml: the parent of the `dlc-models*` folder above it (the project
    may have moved since training), else its `project_path`; None when neither is known."""
    for parent in path.resolve().parents:
        if parent.name.startswith("dlc-models"):
            return parent.parent
    value = raw.get("project_path")
    return Path(value) if isinstance(value, str) and value else None


def is_dlc_pose_cfg(raw: dict, path: Path) -> bool:
    """Whether a config file is DeepLabCut 2.x's: it has `project_path` (DeepLabCut writes it into every training
    pose_cfg.yaml; the reference never had it) or lies in a project's dlc-models* folder."""
    return "project_path" in raw or any(p.name.startswith("dlc-models") for p in path.resolve().parents)


def from_dlc(raw: dict, path: Path) -> tuple[dict, str]:
    """(fastpose's keys of a DeepLabCut 2.x pose_cfg.yaml, a one-paragraph note of what is used and ignored).

    DeepLabCut-only keys (DLC_KEYS) are dropped, its dataset_type (imgaug, ...) becomes default, a relative `dataset`
    is resolved against the project folder (DeepLabCut's convention) and joint_names come from all_joints_names (one
    name per joint in DeepLabCut, whose all_joints are singletons). A key neither fastpose nor DeepLabCut 2.x knows is
    still an error, and so is a network fastpose cannot build."""
    where = str(path)
    for key in raw:
        if key not in FIELDS and key not in DLC_KEYS:
            hint = closest_key(str(key), [*FIELDS, *DLC_KEYS])
            fix = f"Did you mean '{hint}'?" if hint else "Remove it."
            raise UserError(f"{where}: unknown key {str(key)!r}: neither a fastpose key nor one DeepLabCut 2.x writes "
                            f"into pose_cfg.yaml. {fix} (fastpose rejects unknown keys, so a typo cannot change "
                            f"training.)")
    net = raw.get("net_type")
    if isinstance(net, str) and net not in NET_DEPTHS:
        raise UserError(f"{where}: net_type {net} is a DeepLabCut network fastpose does not support: fastpose builds "
                        f"the ResNets (resnet_50, resnet_101, resnet_152 for DeepLabCut's TensorFlow weights), not "
                        f"MobileNet, EfficientNet or DLCRNet models. Train a ResNet shuffle of the project "
                        f"(deeplabcut.create_training_dataset(config, net_type='resnet_50')) or use DeepLabCut for "
                        f"this one.")
    out = {k: v for k, v in raw.items() if k in FIELDS and k not in DLC_REDEFINED}
    ignored: dict[str, list[str]] = {why: [key] for key, why in DLC_REDEFINED.items() if key in raw}
    extras: list[str] = []
    mapped = set()  # DeepLabCut keys that become fastpose keys
    if out.get("dataset_type") == "imgaug" and "rotation_range" not in out:
        # DeepLabCut's imgaug loader (pose_imgaug.py): `rotation` R (an int; true or absent: 25; 0/false: off) rotates
        # by U(-R, R) degrees with probability `rotateratio` (default 0.4; it never reads the template's rotratio).
        angle = raw.get("rotation", True)
        angle = angle if isinstance(angle, int) and not isinstance(angle, bool) else 25 if angle else 0
        if angle > 0:
            out["rotation_range"], out["rotation_p"] = [-angle, angle], raw.get("rotateratio", 0.4)
            extras.append(f"rotation as its imgaug loader: rotation_range {out['rotation_range']}, rotation_p "
                          f"{out['rotation_p']}")
            mapped = {"rotation", "rotateratio"}
    if out.get("optimizer") == "adam" and "adam_schedule" not in out:
        # DeepLabCut 2.x feeds multi_step's rates to Adam as well (its LearningRate schedule serves both optimizers).
        out["adam_schedule"] = "multi_step"
        extras.append("Adam at multi_step's rates, as DeepLabCut 2.x trains it: adam_schedule multi_step")
    if out.get("dataset_type") in DLC_DATASET_TYPES and out["dataset_type"] != "default":
        ignored[DLC_LOADER + "; fastpose's dataset_type is default"] = [f"dataset_type {out['dataset_type']}"]
        out["dataset_type"] = "default"
    for key in raw:
        if key in DLC_KEYS and key not in mapped:
            ignored.setdefault(DLC_KEYS[key], []).append(key)
    project = dlc_project(path, raw)
    dataset = out.get("dataset")
    if isinstance(dataset, str) and dataset and not Path(dataset).is_absolute() and project is not None:
        out["dataset"] = str(project / dataset)
        extras.append(f"dataset relative to the project folder {project}")
    names, groups = out.get("all_joints_names"), out.get("all_joints")
    if ("joint_names" not in out and isinstance(names, list) and isinstance(groups, list) and len(names) == len(groups)
            and all(isinstance(g, list) and len(g) == 1 and isinstance(g[0], int) for g in groups)):
        by_joint = {g[0]: n for g, n in zip(groups, names)}
        if sorted(by_joint) == list(range(len(groups))):
            out["joint_names"] = [by_joint[j] for j in range(len(groups))]
            extras.append("joint names from all_joints_names")
    used = sorted({k for k in out if k in raw and k not in NO_EFFECT and k != "dataset_type"} | (mapped & set(raw)))
    note = (f"note: {where} is a DeepLabCut 2.x pose_cfg.yaml. fastpose uses {', '.join(used) or 'none of its keys'}"
            + (f" ({'; '.join(extras)})" if extras else "") + "; it ignores "
            + ("; ".join(f"{', '.join(keys)} ({why})" for why, keys in ignored.items()) or "nothing") + ".")
    return out, note


def _apply_dataset_type(cfg: Config, explicit: set[str], where: str) -> None:
    """mpii and coco bring their joint sets; a contradicting explicit value is an error."""
    if cfg.dataset_type == "mpii":
        preset = dict(num_joints=14, all_joints=MPII_ALL_JOINTS, all_joints_names=MPII_GROUP_NAMES,
                      joint_names=MPII_JOINT_NAMES, skeleton=MPII_SKELETON)
    elif cfg.dataset_type == "coco":
        preset = dict(num_joints=17, all_joints=COCO_ALL_JOINTS, all_joints_names=COCO_GROUP_NAMES,
                      joint_names=COCO_JOINT_NAMES, skeleton=COCO_SKELETON)
    else:
        return
    for key, value in preset.items():
        if key in explicit and getattr(cfg, key) != value:
            if key in ("skeleton", "joint_names"):  # display-only keys: the user may rename or redraw
                continue
            raise UserError(f"{where}: dataset_type '{cfg.dataset_type}' defines {key} = {value}, but the config "
                            f"sets {key} = {getattr(cfg, key)}. Remove the key (it comes with the dataset type) or "
                            f"use dataset_type: default with your own joint set.")
        if key not in explicit:
            setattr(cfg, key, [list(v) if isinstance(v, list) else v for v in value] if isinstance(value, list)
                    else value)


def validate(cfg: Config, where: str = "config") -> None:
    """Value checks beyond types. Raises UserError naming the key, the value and what is allowed."""

    def bad(key: str, allowed: str) -> UserError:
        return UserError(f"{where}: {key} = {getattr(cfg, key)!r} is not allowed: {allowed}.")

    def choice(key: str, allowed) -> None:
        if getattr(cfg, key) not in allowed:
            hint = closest_key(str(getattr(cfg, key)), allowed)
            extra = f" Did you mean '{hint}'?" if hint else ""
            raise bad(key, "one of " + ", ".join(allowed) + "." + extra)

    choice("dataset_type", DATASET_TYPES)
    choice("net_type", list(NET_DEPTHS))
    choice("optimizer", OPTIMIZERS)
    choice("adam_schedule", ADAM_SCHEDULES)
    choice("precision", PRECISIONS)
    if isinstance(cfg.channels_last, str) and cfg.channels_last != "auto":
        raise bad("channels_last", "true, false or auto")
    if isinstance(cfg.compile, str) and cfg.compile != "auto":
        raise bad("compile", "true, false or auto")
    choice("device", DEVICES)
    choice("backbone_layout", BACKBONE_LAYOUTS)
    if cfg.backbone_layout == "slim" and cfg.net_type not in SLIM_NET_TYPES:
        raise bad("backbone_layout", f"the slim layout (TF-slim resnet_v1) has bottleneck units only, so net_type "
                  f"must be one of {', '.join(SLIM_NET_TYPES)} (it is {cfg.net_type}); or use backbone_layout: "
                  f"torchvision")
    # Every stage keeps at least one channel: round(64 * width) >= 1.
    if not (math.isfinite(cfg.backbone_width) and 1 / 64 <= cfg.backbone_width <= 16):
        raise bad("backbone_width", "it must be a number from 1/64 (one channel in the first stage) to 16; 1 is the "
                  "standard ResNet, 0.0625 a sixteenth of its channels")
    for key in ("stride", "batch_size", "display_iters", "save_iters", "max_to_keep", "max_input_size"):
        if getattr(cfg, key) <= 0:
            raise bad(key, "it must be a positive integer")
    for key in ("num_joints", "num_workers", "crop_pad", "min_input_size"):
        if getattr(cfg, key) < 0:
            raise bad(key, "it must be >= 0")
    for key in ("pos_dist_thresh", "locref_stdev", "global_scale", "scale_jitter_lo", "scale_jitter_up"):
        value = getattr(cfg, key)
        if not (math.isfinite(value) and value > 0):
            raise bad(key, "it must be a positive number")
    if not (math.isfinite(cfg.worker_timeout) and cfg.worker_timeout >= 0):
        raise bad("worker_timeout", "it must be a number of seconds >= 0 (0 waits for a batch forever)")
    if not 0 <= cfg.pcutoff <= 1:
        raise bad("pcutoff", "it must be between 0 and 1 (a joint's score is a probability)")
    if cfg.scale_jitter_lo > cfg.scale_jitter_up:
        raise UserError(f"{where}: scale_jitter_lo = {cfg.scale_jitter_lo} is larger than scale_jitter_up = "
                        f"{cfg.scale_jitter_up}; the scale is drawn from U(lo, up), so lo must be <= up.")
    if len(cfg.mean_pixel) != 3:
        raise bad("mean_pixel", "it must be three numbers (R, G, B)")
    for key, lo, hi in AUGMENT_RANGES:
        value = getattr(cfg, key)
        if value and not (len(value) == 2 and all(math.isfinite(v) and lo <= v <= hi for v in value)
                          and value[0] <= value[1]):
            raise bad(key, f"it must be [] (off) or [lo, hi] with {lo:g} <= lo <= hi <= {hi:g}")
    for key in AUGMENT_PROBABILITIES:
        if not 0 <= getattr(cfg, key) <= 1:
            raise bad(key, "it must be a probability between 0 and 1")
    if len(cfg.motion_blur_angle_range) != 2:
        raise bad("motion_blur_angle_range", "it must be [lo, hi] in degrees (the default [0, 180] is every direction)")
    if cfg.crop_size and (len(cfg.crop_size) != 2 or min(cfg.crop_size) <= 0):
        raise bad("crop_size", "it must be [] or [width, height] with positive values")
    if not cfg.multi_step:
        raise bad("multi_step", "it must list at least one [learning_rate, end_iteration]")
    last_end = 0
    for i, step in enumerate(cfg.multi_step):
        if len(step) != 2 or step[0] <= 0 or step[1] <= last_end:
            raise UserError(f"{where}: multi_step entry {i} = {step} is not allowed: each entry is [lr, end] with "
                            f"lr > 0 and end iterations strictly increasing (lr_k is used for (end_k-1, end_k]).")
        last_end = step[1]
    k = cfg.num_joints
    if k > 0:
        for key in ("all_joints", "sparse_graph", "skeleton"):
            for group in getattr(cfg, key):
                for j in group:
                    if not 0 <= j < k:
                        raise UserError(f"{where}: {key} contains joint id {j} in {group}, but num_joints is {k}: "
                                        f"ids must be 0..{k - 1}.")
        if cfg.joint_names and len(cfg.joint_names) != k:
            raise bad("joint_names", f"it must have num_joints = {k} names, it has {len(cfg.joint_names)}")
        seen = [j for group in cfg.all_joints for j in group]
        if len(seen) != len(set(seen)):
            raise bad("all_joints", "each joint id may appear in at most one group")
    for group in cfg.all_joints:
        if not 1 <= len(group) <= 2:
            raise bad("all_joints", "each group is [id] or a symmetric pair [left, right]")
    for edge in cfg.sparse_graph + cfg.skeleton:
        if len(edge) != 2:
            raise UserError(f"{where}: edge {edge} in sparse_graph/skeleton must be a pair [a, b].")
    if cfg.all_joints_names and cfg.all_joints and len(cfg.all_joints_names) != len(cfg.all_joints):
        raise bad("all_joints_names", f"it names the groups of all_joints, so it needs {len(cfg.all_joints)} names")
    if cfg.intermediate_supervision:
        blocks = LAYER3_BLOCKS[cfg.net_type]
        if not 1 <= cfg.intermediate_supervision_layer <= blocks:
            raise UserError(
                f"{where}: intermediate_supervision_layer = {cfg.intermediate_supervision_layer}, but {cfg.net_type} "
                f"has {blocks} blocks in layer3 (the reference's block3), so the valid range is 1..{blocks}. "
                f"Use a deeper net_type (resnet_101 has 23) or a smaller layer.")


def with_joints(cfg: Config, num_joints: int, joint_names: list[str], all_joints: list[list[int]],
                skeleton: list[list[int]] | None = None) -> Config:
    """Fill the joint set from a dataset manifest where the config left it open, and check agreement."""
    if cfg.num_joints and cfg.num_joints != num_joints:
        raise UserError(f"The config says num_joints = {cfg.num_joints} but the dataset {cfg.dataset} has "
                        f"{num_joints} joints. Remove num_joints from the config or convert the data with "
                        f"--num-joints {cfg.num_joints}.")
    cfg.num_joints = num_joints
    if not cfg.joint_names:
        cfg.joint_names = list(joint_names)
    if not cfg.all_joints:
        cfg.all_joints = [list(g) for g in all_joints] or [[j] for j in range(num_joints)]
    if not cfg.skeleton and skeleton:
        cfg.skeleton = [list(e) for e in skeleton]
    validate(cfg, "config + dataset manifest")
    return cfg
