"""`fastpose export`: a trained snapshot as one self-contained file for ONNX Runtime, torch.export or TorchScript.

The exported graph (`InferenceGraph`) takes what a camera gives, uint8 images (N, H, W, 3) RGB of one size with
dynamic N, H and W, and does inside the graph what `fastpose predict` does around the network: the eval resize, mean
subtraction and padding (`fastpose.images.network_input`, the very function predict runs), the network, then
`fastpose.decode` (sigmoid, per-joint arg-max, location refinement, the stride mapping and the resize undone). Output
`joints` (N, K, 3) = x, y, score in input pixels; with heatmaps or multi-person also the raw heads, valid_hw and
ratio, which `fastpose.assembly` turns into persons (the multicut solver stays native, outside the graph).

Every file carries its metadata (joint names, skeleton, symmetric groups, stride, mean pixel, input convention,
outputs, the training config and the fastpose version): ONNX in `metadata_props`, the others as the extra file
`fastpose.json`. Files are written to a temp name and renamed (`write_atomic`): a failed export leaves nothing.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
from torch import nn

from fastpose import __version__
from fastpose.atomic import write_atomic
from fastpose.checkpoint import load_model, load_snapshot
from fastpose.decode import decode, to_sample
from fastpose.errors import UserError, cause, out_file
from fastpose.images import eval_size, network_input
from fastpose.model import runs_unpadded
from fastpose.pipeline import ALIGN

FORMATS = ("onnx", "exported", "torchscript")
SUFFIXES = {"onnx": ".onnx", "exported": ".pt2", "torchscript": ".ts.pt"}
MIN_OPSET = 17  # LayerNormalization-era opsets; torch.onnx's dynamo exporter emits nothing older
DEFAULT_OPSET = 18
INPUT = "images"
CONVENTION = ("images: uint8 (N, H, W, 3) RGB, one size per call; joints: (N, K, 3) x, y, score in input pixels, "
              "0-based, pixel centres at integer coordinates")


class InferenceGraph(nn.Module):
    """uint8 (N, H, W, 3) RGB -> joints (N, K, 3) float32 x, y, score in input pixels (+ raw heads, see `outputs`).

    heads: also return part (N, K, h, w) logits, locref (N, 2K, h, w) when the model has it, valid_hw (N, 2) int64
    and ratio (N, 2) float64 x, y (what `fastpose.decode` / `fastpose.assembly` take); multi_person adds pairwise
    (N, 2K(K-1), h, w). static: a fixed input (H, W), whose resized size is then a constant of the graph."""

    def __init__(self, model: nn.Module, cfg, heads: bool = False, multi_person: bool = False,
                 static: tuple[int, int] | None = None):
        super().__init__()
        self.model, self.cfg = model, cfg
        self.heads = heads or multi_person
        self.multi_person = multi_person
        self.resized = None
        if static is not None:
            rh, rw = eval_size(torch.tensor(static[0]), torch.tensor(static[1]), cfg)
            self.resized = (int(rh), int(rw))

    def outputs(self) -> list[str]:
        names = ["joints"]
        if self.heads:
            names += ["part"] + (["locref"] if self.model.locref is not None else []) + ["valid_hw", "ratio"]
        if self.multi_person:
            names.append("pairwise")
        return names

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # (N, 3, H', W'), (N, 2), (N, 2); unpadded for the slim layout (one size per call: TF's outputs as they are)
        batch, valid_hw, ratio = network_input(images, self.cfg, self.resized,
                                               1 if runs_unpadded(self.model) else ALIGN)
        # detached: a loaded TorchScript / torch.export module runs with autograd on, and no user wants its graph
        out = {k: None if v is None else v.detach() for k, v in self.model(batch).items()}
        joints = decode(out["part"], out["locref"], self.cfg.stride, self.cfg.locref_stdev, valid_hw)  # (N, K, 3)
        result = [to_sample(joints, ratio)]
        if self.heads:
            result += [out["part"]] + ([out["locref"]] if out["locref"] is not None else []) + [valid_hw, ratio]
        if self.multi_person:
            result.append(out["pairwise"])
        return tuple(result)


def metadata(cfg, graph: InferenceGraph, fmt: str) -> dict[str, str]:
    """The file's self-description, as string values (ONNX metadata_props are strings; JSON inside)."""
    k = cfg.num_joints
    return {
        "fastpose_version": __version__,
        "format": fmt,
        "input": INPUT,
        "outputs": json.dumps(graph.outputs()),
        "convention": CONVENTION,
        "joint_names": json.dumps(cfg.joint_names or [f"joint{i}" for i in range(k)]),
        "skeleton": json.dumps(cfg.skeleton),
        "symmetric_joints": json.dumps(cfg.all_joints),
        "stride": str(cfg.stride),
        "locref_stdev": str(cfg.locref_stdev),
        "mean_pixel": json.dumps([float(v) for v in cfg.mean_pixel]),
        "net_type": cfg.net_type,
        "static_size": json.dumps(None),
        "config": json.dumps(cfg.to_dict()),
    }


def dynamic_shapes(static: tuple[int, int] | None) -> dict:
    """torch.export dynamic_shapes for the one input: N always dynamic, H and W unless fixed."""
    n = torch.export.Dim("batch", min=1, max=4096)
    if static is not None:
        return {"images": {0: n}}
    return {"images": {0: n, 1: torch.export.Dim("height", min=2, max=16384),
                       2: torch.export.Dim("width", min=2, max=16384)}}


def example_input(static: tuple[int, int] | None) -> torch.Tensor:
    """A traced example: two odd-sized images (N = 1 would make torch.export specialise the batch size)."""
    h, w = static if static is not None else (67, 93)
    return torch.randint(0, 256, (2, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _check_out(out: Path | None, checkpoint: Path, fmt: str) -> Path:
    if out is None:
        out = checkpoint.with_name(checkpoint.stem + SUFFIXES[fmt])
    return out_file(out, "--out", f"model{SUFFIXES[fmt]}")


def export(checkpoint: str | Path, fmt: str, out: str | Path | None = None, *, multi_person: bool = False,
           heatmaps: bool = False, opset: int = DEFAULT_OPSET, static: tuple[int, int] | None = None) -> Path:
    """Write the snapshot's InferenceGraph as `fmt` (onnx | exported | torchscript) to `out` (default: beside the
    snapshot, `<stem>.onnx` / `.pt2` / `.ts.pt`). Returns the path written."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not an export format: use one of {', '.join(FORMATS)}.")
    if opset < MIN_OPSET:
        raise UserError(f"--opset {opset} is too old: the exported graph needs ONNX opset {MIN_OPSET} or newer "
                        f"(torch.onnx's exporter writes nothing older). Pass --opset {DEFAULT_OPSET}.")
    if static is not None and min(static) < 2:
        raise UserError(f"--static {static[0]} {static[1]}: both sizes must be at least 2 pixels.")
    checkpoint = Path(checkpoint)
    model, cfg = load_model(checkpoint, torch.device("cpu"))
    if multi_person and model.pairwise is None:
        raise UserError(f"--multi-person: {checkpoint} has no pairwise head (it was trained with pairwise_predict "
                        f"false), so there are no pairwise offsets to export. Export it without --multi-person, or "
                        f"train with pairwise_predict: true.")
    path = _check_out(None if out is None else Path(out), checkpoint, fmt)
    graph = InferenceGraph(model, cfg, heads=heatmaps, multi_person=multi_person, static=static).eval()
    meta = metadata(cfg, graph, fmt)
    meta["static_size"] = json.dumps(list(static) if static is not None else None)
    meta["iteration"] = str(int(load_snapshot(checkpoint)["iteration"]))  # analyze's DeepLabCut scorer name
    example = example_input(static)
    try:
        if fmt == "onnx":
            data = to_onnx(graph, example, static, opset, meta)
        elif fmt == "exported":
            data = to_exported(graph, example, static, meta)
        else:
            data = to_torchscript(graph, example, meta)
    except UserError:
        raise
    except Exception as e:  # the exporters raise many types for an operator or a shape they cannot express
        raise UserError(f"{checkpoint}: the {fmt} exporter could not express this model ({cause(e)}). Nothing was "
                        f"written. Try another --format"
                        f"{' or a newer --opset' if fmt == 'onnx' else ''}, or report the model's config.") from None
    return write_atomic(path, data)


def to_onnx(graph: InferenceGraph, example: torch.Tensor, static, opset: int, meta: dict[str, str]) -> bytes:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=opset, input_names=[INPUT],
                                    output_names=graph.outputs(), dynamic_shapes=dynamic_shapes(static), verbose=False,
                                    optimize=True)
    model = program.model_proto
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def to_exported(graph: InferenceGraph, example: torch.Tensor, static, meta: dict[str, str]) -> bytes:
    with torch.no_grad():
        program = torch.export.export(graph, (example,), dynamic_shapes=dynamic_shapes(static))
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={"fastpose.json": json.dumps(meta)})
    return buffer.getvalue()


def to_torchscript(graph: InferenceGraph, example: torch.Tensor, meta: dict[str, str]) -> bytes:
    # Traced, not scripted: the sizes flow through tensor ops (see fastpose.images.network_input), so the trace keeps
    # N, H and W dynamic; check_trace would re-run on the same example only.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, (example,), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={"fastpose.json": json.dumps(meta)})  # deprecated, still C++'s
    return buffer.getvalue()


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata an exported file carries (any of the three formats), as written by `metadata`."""
    path = Path(path)
    if not zipfile.is_zipfile(path):  # ONNX is a protobuf; the torch formats are zip archives
        model = onnx.load(str(path), load_external_data=False)
        return {p.key: p.value for p in model.metadata_props}
    extra = {"fastpose.json": ""}
    with zipfile.ZipFile(path) as archive:
        torchscript = any(name.endswith("/constants.pkl") for name in archive.namelist())
    if torchscript:
        torch.jit.load(str(path), _extra_files=extra, map_location="cpu")
    else:
        torch.export.load(path, extra_files=extra)
    return json.loads(extra["fastpose.json"])


class OnnxModel:
    """An exported ONNX file run by ONNX Runtime (its CPU or CUDA provider): `run(images)` -> {output name: array}.

    `cfg` is the training config the file carries, so predict needs nothing but the file."""

    def __init__(self, path: str | Path, device: torch.device):
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path} does not exist. Pass an .onnx file written by `fastpose export`.")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UserError(f"--engine onnxruntime on {device}: this onnxruntime {ort.__version__} has no CUDA "
                                f"provider. Install onnxruntime-gpu instead of onnxruntime, or pass --device cpu.")
            providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        options = ort.SessionOptions()
        # as many threads as torch would use (torch.set_num_threads / OMP_NUM_THREADS), so that the engines compare at
        # equal threads and a user's thread limit holds for both; ORT's own default is the physical core count
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own types for a foreign or truncated file
            raise UserError(f"{path} could not be loaded by ONNX Runtime ({cause(e)}). Pass an .onnx file written "
                            f"by `fastpose export`, or export the snapshot again.") from None
        self.meta = dict(self.session.get_modelmeta().custom_metadata_map)
        if "config" not in self.meta:
            raise UserError(f"{path} is an ONNX model without fastpose's metadata (no 'config' entry). Pass a file "
                            f"written by `fastpose export`.")
        self.config_values = json.loads(self.meta["config"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, images) -> dict[str, object]:
        """images: uint8 (N, H, W, 3) RGB numpy array of one size -> {output name: numpy array}."""
        return dict(zip(self.outputs, self.session.run(None, {INPUT: images})))


def onnx_for(checkpoint: str | Path, *, multi_person: bool = False) -> Path:
    """The ONNX file for a checkpoint: the checkpoint itself when it is one, else `<snapshot>.onnx` beside it,
    exported now unless one newer than the snapshot is there already (exporting takes a minute on a CPU)."""
    checkpoint = Path(checkpoint)
    if checkpoint.suffix == ".onnx":
        return checkpoint
    path = checkpoint.with_name(checkpoint.stem + (".multi.onnx" if multi_person else ".onnx"))
    if not (path.is_file() and checkpoint.is_file() and path.stat().st_mtime >= checkpoint.stat().st_mtime):
        export(checkpoint, "onnx", path, multi_person=multi_person)
    return path
