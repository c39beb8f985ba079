"""The `fastpose` command: parse arguments, call one function of a stage module, print. No logic of its own.

Every subcommand has --help with an example. A `UserError` (bad data, config typo, ...) is printed as one paragraph
and exits with status 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from fastpose import analyze, assembly, bench, demo, evaluate, export, pairwise, predict, recipe, shards, train, weights
from fastpose.checkpoint import config_from_snapshot, latest_snapshot, load_snapshot
from fastpose.config import load
from fastpose.convert import coco, dlc, mat, mpii, synth
from fastpose.errors import UserError, out_file, out_folder
from fastpose.tfimport import import_tf

# `fastpose --help` lists the commands in the order a user meets them.
COMMAND_ORDER = ("convert", "info", "config", "train", "eval", "predict", "analyze", "export", "bench",
                 "pairwise-stats", "fit-assembly", "synth", "weights", "import-tf", "demo")


class _InOrder(TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        last = len(COMMAND_ORDER)
        return sorted(self.commands, key=lambda n: COMMAND_ORDER.index(n) if n in COMMAND_ORDER else last)

app = typer.Typer(help="fastpose: train DeeperCut-style keypoint detectors fast. Run `fastpose COMMAND --help`.",
                  cls=_InOrder, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
convert_app = typer.Typer(help="Convert a dataset into fastpose HDF5 shards.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect and write configs.", no_args_is_help=True)
app.add_typer(convert_app, name="convert")
app.add_typer(config_app, name="config")
out = Console()

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: --set key=value (YAML "
                                                  "value, repeatable), e.g. --set 'multi_step=[[0.005, 100]]'.")]
SplitOpt = Annotated[str | None, typer.Option(help="Held-out split, e.g. train=0.9,test=0.1 (default: all train).")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the split.")]
WorkersOpt = Annotated[int | None, typer.Option(help="Worker processes (default: the CPU count).")]
SkipOpt = Annotated[bool, typer.Option("--skip-bad", help="Skip bad entries (listed in the manifest) instead of "
                                       "stopping.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")]
ShardOpt = Annotated[int, typer.Option(help="Samples per shard file.")]
ReencodeOpt = Annotated[int | None, typer.Option("--reencode-jpeg", help="Re-encode images as JPEG of this quality "
                                                 "(smaller, faster to decode).")]


@config_app.command("show")
def config_show(config: Path, set_: SetOpt = None) -> None:
    """Print the resolved config (defaults filled, overrides applied, checked).

    Example: fastpose config show configs/mpii.yaml --set batch_size=16
    """
    out.print(load(config, set_).to_yaml(), end="", highlight=False)


@config_app.command("init")
def config_init(shards_dir: Annotated[Path, typer.Argument(metavar="SHARDS", help="A shards folder (convert).")],
                out_path: Annotated[Path, typer.Option("--out", help="The config file to write.")],
                split: Annotated[str, typer.Option(help="The split to measure (the one you train on).")] = "train",
                iters: Annotated[int | None, typer.Option(help="Training iterations (default: 200 epochs).")] = None,
                init_weights: Annotated[Path | None, typer.Option(help="ImageNet weights (fastpose weights download "
                                                                  "resnet50): resnet_50, frozen batch norm.")] = None,
                ) -> None:
    """Write a commented starting config chosen from a dataset's statistics (sizes, joint spacing, frames).

    Example: fastpose config init data/myproject --out my.yaml && fastpose train my.yaml
    """
    path, rows = recipe.init(shards_dir, out_path, split=split, iters=iters, init_weights=init_weights)
    values = dict((key, value) for key, value, _ in rows)
    out.print(f"wrote {path}: global_scale {values['global_scale']}, pos_dist_thresh {values['pos_dist_thresh']}, "
              f"{values['multi_step'][-1][1]} iterations of batch {values['batch_size']} (each key's comment says "
              f"why)", highlight=False)


@app.command("info")
def info_command(dataset: Path,
                 verify: Annotated[bool, typer.Option("--verify", help="Check the shards' sha256.")] = False,
                 json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Summarise a shards folder: samples, persons, joints per sample, image sizes per split.

    Example: fastpose info data/demo --verify
    """
    problems = shards.verify(dataset) if verify else []  # first: a damaged shard would stop the summary
    if problems:
        raise UserError(f"{dataset}: checksum verification failed: " + "; ".join(problems)
                        + ". Convert the dataset again.")
    summary = shards.summary(dataset)
    if verify:
        summary["verified"] = True
    if json_:
        print(json.dumps(summary, indent=1))
        return
    table = Table(title=f"{dataset}  ({summary['num_joints']} joints)")
    for col in ("split", "samples", "persons", "joints present", "joints/sample", "height", "width", "shards"):
        table.add_column(col, justify="right")
    for name, s in summary["splits"].items():
        table.add_row(name, str(s["samples"]), str(s["persons"]), str(s["joints_present"]),
                      f"{s['joints_per_sample']:.1f}", "{}-{}".format(*s["image_height"]),
                      "{}-{}".format(*s["image_width"]), str(s["shards"]))
    out.print(table)
    out.print("joints: " + ", ".join(summary["joint_names"]))
    if summary["skipped"]:
        out.print(f"[yellow]{summary['skipped']} source entries were skipped (see manifest.json)[/yellow]")
    if verify:
        out.print("[green]checksums OK[/green]")


def _joint_set(config: Path | None, set_: list[str] | None) -> dict:
    if config is None:
        return {}
    cfg = load(config, set_)
    return {"num_joints": cfg.num_joints or None, "joint_names": cfg.joint_names or None,
            "all_joints": cfg.all_joints or None, "skeleton": cfg.skeleton or None}


def _report_convert(result: dict, out_dir: Path, seconds: float) -> None:
    if result.get("note"):
        out.print(f"[yellow]{result['note']}[/yellow]")
    total = sum(result["samples"].values())
    out.print(f"wrote {total} samples to {out_dir} (" + ", ".join(f"{k}: {v}" for k, v in result["samples"].items())
              + f") in {seconds:.1f} s, {total / max(seconds, 1e-9):.1f} images/s")


@convert_app.command("mat")
def convert_mat_command(dataset: Path, out_dir: Annotated[Path, typer.Option("--out", help="Output shards folder.")],
                config: Annotated[Path | None, typer.Option(help="Config giving num_joints and joint names.")] = None,
                num_joints: Annotated[int | None, typer.Option(help="Number of joints (default: from --config, "
                                                               "else max id + 1).")] = None,
                images_root: Annotated[Path | None, typer.Option(help="Folder to resolve image paths against "
                                                                 "(default: the .mat's folder).")] = None,
                split: SplitOpt = None, seed: SeedOpt = 0, workers: WorkersOpt = None, skip_bad: SkipOpt = False,
                overwrite: OverwriteOpt = False, samples_per_shard: ShardOpt = 512, reencode_jpeg: ReencodeOpt = None,
                set_: SetOpt = None) -> None:
    """Convert the seed's dataset.mat (struct array `dataset`: image, size, joints) into shards.

    Example: fastpose convert mat data/dataset.mat --out data/shards --config pose_cfg.yaml --split train=0.9,test=0.1
    """

    joint_set = _joint_set(config, set_)
    if num_joints:
        joint_set["num_joints"] = num_joints
    t0 = time.perf_counter()
    result = mat.convert(dataset, out_dir, images_root=images_root, split=split, seed=seed, workers=workers,
                         skip_bad=skip_bad, overwrite=overwrite, samples_per_shard=samples_per_shard,
                         reencode_jpeg=reencode_jpeg, **joint_set)
    _report_convert(result, out_dir, time.perf_counter() - t0)


@convert_app.command("dlc")
def convert_dlc_command(project: Path, out_dir: Annotated[Path, typer.Option("--out", help="Output shards folder.")],
                split: SplitOpt = None, seed: SeedOpt = 0, workers: WorkersOpt = None, skip_bad: SkipOpt = False,
                overwrite: OverwriteOpt = False, samples_per_shard: ShardOpt = 512,
                reencode_jpeg: ReencodeOpt = None) -> None:
    """Convert a DeepLabCut project's labelled frames (labeled-data/*/CollectedData_*.csv) into shards.

    Example: fastpose convert dlc Reaching-Mackenzie-2018-08-30 --out data/reaching --split train=0.95,test=0.05
    """

    t0 = time.perf_counter()
    result = dlc.convert(project, out_dir, split=split, seed=seed, workers=workers, skip_bad=skip_bad,
                         overwrite=overwrite, samples_per_shard=samples_per_shard, reencode_jpeg=reencode_jpeg)
    _report_convert(result, out_dir, time.perf_counter() - t0)


@app.command("synth")
def synth_command(out_dir: Annotated[Path, typer.Option("--out", help="Output folder (dataset.mat + images/).")],
          n: Annotated[int, typer.Option(help="Number of images.")] = 500, seed: SeedOpt = 0,
          min_size: Annotated[int, typer.Option(help="Smallest image side.")] = 144,
          max_size: Annotated[int, typer.Option(help="Largest image side.")] = 208) -> None:
    """Draw a learnable synthetic dataset (stick figures, 11 named joints) in the seed's dataset.mat format.

    Example: fastpose synth --out data/synth --n 500 --seed 0 && fastpose convert mat data/synth/dataset.mat \
    --out data/synth-shards --config configs/demo.yaml --split train=0.9,test=0.1
    """

    if n <= 0:
        raise UserError(f"--n {n}: the number of images must be positive.")
    if not 32 <= min_size <= max_size:
        raise UserError(f"--min-size {min_size} --max-size {max_size}: need 32 <= min-size <= max-size.")
    t0 = time.perf_counter()
    path = synth.make_dataset(out_dir, n=n, seed=seed, sizes=(min_size, max_size))
    out.print(f"wrote {n} images and {path} in {time.perf_counter() - t0:.1f} s "
              f"(joints: {', '.join(synth.JOINT_NAMES)})")


@convert_app.command("mpii")
def convert_mpii_command(root: Path, out_dir: Annotated[Path, typer.Option("--out", help="Output shards folder.")],
                 mat: Annotated[Path | None, typer.Option(help="RELEASE .mat (default: ROOT/"
                                                          "mpii_human_pose_v1_u12_1.mat).")] = None,
                 images: Annotated[Path | None, typer.Option(help="Image folder (default: ROOT/images).")] = None,
                 val_list: Annotated[Path | None, typer.Option(help="Persons held out as split 'test': lines "
                                                               "'image_index person_index' (1-based as RELEASE), or "
                                                               "a .mat with RELEASE_img_index/RELEASE_person_index."
                                                               )] = None,
                 split: SplitOpt = None, seed: SeedOpt = 0, workers: WorkersOpt = None, skip_bad: SkipOpt = False,
                 overwrite: OverwriteOpt = False, samples_per_shard: ShardOpt = 512,
                 jpeg_quality: Annotated[int, typer.Option(help="JPEG quality of the stored crops.")] = 95) -> None:
    """Convert MPII Human Pose (RELEASE .mat + images) into cropped, rescaled single-person shards (head ~50 px).

    Example: fastpose convert mpii data/mpii --out data/mpii-shards --val-list data/mpii/detections.mat
    """

    t0 = time.perf_counter()
    result = mpii.convert(root, out_dir, mat=mat, images=images, val_list=val_list, split=split, seed=seed,
                               workers=workers, skip_bad=skip_bad, overwrite=overwrite,
                               samples_per_shard=samples_per_shard, jpeg_quality=jpeg_quality)
    _report_convert(result, out_dir, time.perf_counter() - t0)


weights_app = typer.Typer(help="Download ImageNet weights for init_weights.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("download")
def weights_download(
    name: Annotated[str, typer.Argument(help="resnet50, resnet101 or resnet152 (also resnet18, resnet34).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the .pth into.")] = Path("weights"),
) -> None:
    """Download torchvision's ImageNet ResNet weights, check their sha256, print the init_weights line.

    Example: fastpose weights download resnet101 --out weights   (mirror: FASTPOSE_WEIGHTS_URL=https://...)
    """
    path = weights.download(name, out_dir, progress=sys.stderr.isatty())
    out.print(f"init_weights: {path.resolve()}", highlight=False, soft_wrap=True)


def _eval_table(metrics: dict, title: str | None = None) -> Table:
    """PCK (and PCKh) per symmetric group, then per joint, then the mean, as percentages; beside them the mean pixel
    error (original image pixels), the same over joints scoring >= the p-cutoff, and the percentage kept."""
    table = Table(title=title)
    table.add_column("")
    table.add_column("name")
    pck, pckh, px = metrics["pck"], metrics["pckh"], metrics.get("pixel_error")
    table.add_column(f"PCK@{pck['threshold']:g}", justify="right")
    if pckh:
        table.add_column(f"PCKh@{pckh['threshold']:g}", justify="right")
    if px:
        for column in ("error px", f"px, p>={px['pcutoff']:g}", "kept %"):
            table.add_column(column, justify="right")

    def pct(v) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    def pixels(v) -> str:
        return "-" if v is None else f"{v:.2f}"

    def row(label: str, name: str, key: str, end: bool = False) -> None:
        cells = [pct(pck[key].get(name))] + ([pct(pckh[key].get(name))] if pckh else [])
        if px and key == "per_joint":
            cells += [pixels(px["per_joint"].get(name)), pixels(px["per_joint_above_pcutoff"].get(name)),
                      pct(px["kept_per_joint"].get(name))]
        elif px:
            cells += [pixels(px["per_group"].get(name)), "", ""]
        table.add_row(label, name, *cells, end_section=end)

    groups, joints = list(pck["per_group"]), list(pck["per_joint"])
    for i, name in enumerate(groups):
        row("group" if i == 0 else "", name, "per_group", end=i == len(groups) - 1)
    for i, name in enumerate(joints):
        row("joint" if i == 0 else "", name, "per_joint", end=i == len(joints) - 1)
    table.add_row("mean", "all joints", pct(pck["mean"]), *([pct(pckh["mean"])] if pckh else []),
                  *([pixels(px["mean"]), pixels(px["mean_above_pcutoff"]), pct(px["kept"])] if px else []),
                  style="bold")
    return table


def _pixel_line(results: dict) -> str:
    """DeepLabCut's summary: 'train error: 2.01 px, test error: 2.69 px; with p-cutoff 0.6: ...', people found."""
    px = {name: r["metrics"]["pixel_error"] for name, r in results.items()}

    def value(v, unit: str = " px") -> str:
        return "-" if v is None else f"{v:.2f}{unit}"

    line = ", ".join(f"{name} error: {value(p['mean'])}" for name, p in px.items())
    cutoff = next(iter(px.values()))["pcutoff"]
    line += f"; with p-cutoff {cutoff:g}: " + ", ".join(
        f"{name} {value(p['mean_above_pcutoff'])} ({value(None if p['kept'] is None else 100 * p['kept'], '%')} "
        f"of joints kept)" for name, p in px.items())
    found = [f"{name} {100 * p['persons_found']:.1f}% of {p['persons']} (OKS >= {p['min_oks']:g})"
             for name, p in px.items() if p.get("persons_found") is not None]
    if found:
        line += "; people found: " + ", ".join(found)
    return line + " (original image pixels)"


@app.command("eval")
def eval_command(config: Annotated[Path | None, typer.Argument(help="Config file (default: the one stored in the "
                                                        "snapshot).")] = None,
          checkpoint: Annotated[Path | None, typer.Option(help="Snapshot .pt (default: the latest in the config's "
                                                          "out_dir).")] = None,
          split: Annotated[str | None, typer.Option(help="Split (default: the config's test_split).")] = None,
          data: Annotated[Path | None, typer.Option(help="Shards folder (default: the config's dataset).")] = None,
          json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics as JSON here.")] = None,
          out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for predictions.mat/.json (default: "
                                                       "<snapshot folder>/eval-<split>).")] = None,
          batch_size: Annotated[int | None, typer.Option(help="Batch size (default: the config's).")] = None,
          device: Annotated[str | None, typer.Option(help="cpu | cuda | auto (default: the config's).")] = None,
          pck_threshold: Annotated[float | None, typer.Option(help="PCK threshold (default 0.2).")] = None,
          pckh_threshold: Annotated[float | None, typer.Option(help="PCKh threshold (default 0.5).")] = None,
          splits: Annotated[str | None, typer.Option(help="Splits to evaluate, e.g. train,test; the first is the "
                                                     "one written to --out (default: --split, then the training "
                                                     "split when the data has one).")] = None,
          pcutoff: Annotated[float | None, typer.Option(help="Pixel error also over joints scoring >= this "
                                                        "(default 0.6, as DeepLabCut).")] = None,
          plot: Annotated[Path | None, typer.Option(help="Folder for a PNG per evaluated image (worst first) and "
                                                    "summary.png.")] = None,
          set_: SetOpt = None) -> None:
    """PCK (and PCKh where the data has head boxes) and the pixel error of a snapshot, per joint and symmetric group,
    on the test and the training split.

    Example: fastpose eval configs/demo.yaml --checkpoint demo_out/run/snapshot-600.pt --json m.json --plot errors
    """
    # Output paths are checked before the run, not when it is over.
    if json_out is not None:
        out_file(json_out, "--json", "metrics.json")
    if out_dir is not None:
        out_folder(out_dir, "--out")
    if plot is not None:
        out_folder(plot, "--plot")
    cfg = None
    if config is not None:
        cfg = load(config, set_)
    elif set_ and checkpoint is not None:  # no config file: --set applies to the snapshot's own config
        cfg = config_from_snapshot(load_snapshot(checkpoint), checkpoint, set_)
    if checkpoint is None:
        if cfg is None:
            raise UserError("fastpose eval needs --checkpoint SNAPSHOT, or a CONFIG whose out_dir holds snapshots.")
        checkpoint = latest_snapshot(cfg.out_dir, cfg.snapshot_prefix)
        if checkpoint is None:
            raise UserError(f"No snapshot in {cfg.out_dir} (the config's out_dir). Train first, or pass "
                            f"--checkpoint SNAPSHOT.")
    results = evaluate.evaluate_splits(cfg, checkpoint, split, evaluate.parse_splits(splits) if splits else None,
                                       data, batch_size=batch_size, device=device, pck_threshold=pck_threshold,
                                       pckh_threshold=pckh_threshold, pcutoff=pcutoff)
    result = next(iter(results.values()))
    split = result["split"]
    written = evaluate.write_outputs(result, out_dir or Path(checkpoint).parent / f"eval-{split}", json_out, results)
    for name, res in results.items():
        out.print(f"{checkpoint}: split '{name}', {res['metrics']['samples']} samples with labelled joints "
                  f"(PCK in percent; errors in the original image's pixels)", highlight=False)
        out.print(_eval_table(res["metrics"]))
        coco = res["metrics"].get("coco")
        if coco:  # COCO shards: multi-person OKS keypoint AP/AR (pycocotools)
            out.print(coco["note"] if "note" in coco else
                      "COCO keypoints (OKS, sigmas " + coco["sigmas"] + "): " + "  ".join(
                          f"{k} {coco[k]:.3f}" for k in ("AP", "AP50", "AP75", "AR")), highlight=False)
    out.print(_pixel_line(results), highlight=False)
    if plot is not None:
        pictures = evaluate.write_plots(results, plot)
        out.print(f"drew {len(pictures) - 1} images (worst first) and {pictures[-1]}", highlight=False)
    out.print("wrote " + ", ".join(str(p) for p in written))


@app.command("predict")
def predict_command(images: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.")],
            checkpoint: Annotated[Path, typer.Option(help="Snapshot .pt of a trained model, or an .onnx file of "
                                                     "`fastpose export`.")],
            out_dir: Annotated[Path, typer.Option("--out", help="Output folder (a .json and .png per image).")],
            batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 8,
            device: Annotated[str, typer.Option(help="cpu | cuda | auto.")] = "auto",
            min_score: Annotated[float, typer.Option(help="Do not draw joints scoring below this (the JSON keeps "
                                                     "every joint with its score).")] = 0.0,
            multi_person: Annotated[bool | None, typer.Option("--multi-person/--single-person", help="Assemble every "
                                    "person (default: automatic for models with a pairwise head or COCO data).")]
            = None,
            skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip images that cannot be decoded (listed "
                                                   "at the end) instead of stopping.")] = False,
            engine: Annotated[str | None, typer.Option(help="torch | onnxruntime (runs the `fastpose export` ONNX "
                                                       "graph; a snapshot is exported once beside itself). Default: "
                                                       "onnxruntime for an .onnx --checkpoint, else torch.")]
            = None) -> None:
    """Predict joints on images: <name>.json (joint names, x, y, score in image pixels) and <name>.png per image.

    Example: fastpose predict --checkpoint demo_out/run/snapshot-400.pt 'photos/*.jpg' --out preds --min-score 0.3
    """

    t0 = time.perf_counter()
    skipped: list = []
    docs = predict.predict(checkpoint, images, out_dir, batch_size=batch_size, device=device, min_score=min_score,
                       multi_person=multi_person, skip_bad=skip_bad, skipped=skipped, engine=engine)
    seconds = time.perf_counter() - t0
    out.print(f"wrote {len(docs)} predictions (.json + .png) to {out_dir} in {seconds:.1f} s")
    if skipped:
        out.print(f"[yellow]skipped {len(skipped)} unreadable input(s):[/yellow] "
                  + "; ".join(path for path, _ in skipped[:10]) + (" ..." if len(skipped) > 10 else ""),
                  highlight=False)


@app.command("export")
def export_command(
        checkpoint: Annotated[Path, typer.Argument(help="Snapshot .pt of a trained model.")],
        fmt: Annotated[str, typer.Option("--format", help="onnx (ONNX Runtime, C++, C#, browsers) | exported "
                                         "(torch.export .pt2) | torchscript (C++ libtorch).")] = "onnx",
        out_file_: Annotated[Path | None, typer.Option("--out", help="Output file (default: beside the snapshot, "
                                                       ".onnx / .pt2 / .ts.pt).")] = None,
        multi_person: Annotated[bool, typer.Option("--multi-person", help="Also return the heads and the pairwise "
                                                   "offsets, for fastpose.assembly (needs a pairwise head).")] = False,
        heatmaps: Annotated[bool, typer.Option("--heatmaps", help="Also return the raw part and locref maps, "
                                               "valid_hw and ratio, for users who decode themselves.")] = False,
        opset: Annotated[int, typer.Option(help="ONNX opset (17 or newer).")] = export.DEFAULT_OPSET,
        static: Annotated[tuple[int, int] | None, typer.Option("--static", metavar="H W", help="Fix the input "
                                                               "height and width (N stays dynamic).")] = None) -> None:
    """Export a trained model as one file that runs without fastpose: uint8 (N, H, W, 3) RGB in, joints (N, K, 3)
    x, y, score in input pixels out (resize, mean, network and decoding inside), metadata in the file.

    Example: fastpose export demo_out/run/snapshot-400.pt --format onnx --out pose.onnx
    """
    t0 = time.perf_counter()
    path = export.export(checkpoint, fmt, out_file_, multi_person=multi_person, heatmaps=heatmaps, opset=opset,
                         static=static)
    out.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {fmt}) in {time.perf_counter() - t0:.1f} s")


@app.command("analyze")
def analyze_command(
        target: Annotated[Path, typer.Argument(metavar="CONFIG_OR_CHECKPOINT", help="A config (its out_dir's newest "
                                               "snapshot, or --checkpoint), a snapshot .pt or an exported .onnx.")],
        videos: Annotated[list[str], typer.Argument(help="Video files (mp4, avi, mov, mkv, webm) and folders.")],
        checkpoint: Annotated[Path | None, typer.Option(help="Snapshot .pt (default: the newest in the config's "
                                                        "out_dir).")] = None,
        out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder (default: beside each "
                                                     "video).")] = None,
        batch_size: Annotated[int, typer.Option(help="Frames per forward pass.")] = 8,
        labeled_video: Annotated[bool, typer.Option("--labeled-video", help="Also write <video><scorer>_labeled.mp4 "
                                                    "(H.264, the source's rate and size).")] = False,
        pcutoff: Annotated[float, typer.Option(help="Draw joints whose likelihood is at least this.")] = 0.6,
        multi_person: Annotated[bool, typer.Option("--multi-person", help="Assemble every person per frame and "
                                                   "track identities (an `individuals` column level).")] = False,
        max_gap: Annotated[int, typer.Option(help="--multi-person: a track unseen for more frames ends.")] = 10,
        track_by: Annotated[str, typer.Option(help="--multi-person: match people to tracks by oks | iou.")] = "oks",
        start: Annotated[float | None, typer.Option(help="First second to analyse.")] = None,
        stop: Annotated[float | None, typer.Option(help="Second to stop at.")] = None,
        frames: Annotated[str | None, typer.Option(help="Frame range a:b instead of --start/--stop.")] = None,
        skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip videos whose outputs are complete "
                                                    "(their _meta.json is written last).")] = False,
        device: Annotated[str, typer.Option(help="cpu | cuda | auto.")] = "auto",
        decoder: Annotated[str, typer.Option(help="auto (DALI on a GPU, PyAV on the CPU) | pyav | dali.")] = "auto",
        engine: Annotated[str | None, typer.Option(help="torch | onnxruntime (runs the `fastpose export` ONNX graph; "
                                                   "a snapshot is exported once beside itself). Default: onnxruntime "
                                                   "for an .onnx checkpoint, else torch.")] = None,
        set_: SetOpt = None) -> None:
    """Run a trained model over videos: DeepLabCut-compatible <video><scorer>.h5/.csv and _meta.json per video.

    Example: fastpose analyze runs/mouse/snapshot-30000.pt videos/ --labeled-video --batch-size 16
    Many GPUs: torchrun --nproc-per-node 4 -m fastpose analyze CONFIG videos/   (rank r takes videos r, r+4, ...)
    """
    options = analyze.Options(batch_size=batch_size, labeled_video=labeled_video, pcutoff=pcutoff,
                              multi_person=multi_person, max_gap=max_gap, track_by=track_by, start=start, stop=stop,
                              frames=frames, decoder=decoder, progress=sys.stderr.isatty())
    result = analyze.analyze(target, videos, checkpoint=checkpoint, out_dir=out_dir, options=options,
                             skip_existing=skip_existing, device=device, overrides=set_, engine=engine)
    title = f"fastpose analyze, scorer {result['scorer']}" + (f" (rank {result['rank']} of {result['world']})"
                                                              if result["world"] > 1 else "")
    table = Table(title=title)
    for col in ("video", "frames", "fps achieved", "missing", "outputs"):
        table.add_column(col, justify="right" if col in ("frames", "fps achieved", "missing") else "left")
    for row in result["rows"]:
        if row["status"] == "exists":
            table.add_row(escape(Path(row["video"]).name), "-", "-", "-", "already done (--skip-existing)")
            continue
        missing = f"{row['missing_frames']}" + (f" ({row['corrupt_frames']} corrupt)" if row["corrupt_frames"] else "")
        table.add_row(escape(Path(row["video"]).name), str(row["frames"]), f"{row['fps_achieved']:.1f}", missing,
                      escape(", ".join(Path(p).name for p in row["outputs"])))
    out.print(table)
    for video, reason in result["skipped"]:
        out.print(f"[yellow]skipped {escape(video)}:[/yellow] {escape(reason)}", highlight=False)


@app.command("bench")
def bench_command(part: Annotated[str, typer.Argument(help="data | targets | step | e2e | all | analyze | "
                                                             "export")] = "all",
          config: Annotated[Path | None, typer.Option(help="Config (default: fastpose defaults, resnet_50).")] = None,
          data: Annotated[Path | None, typer.Option(help="Shards folder for data/e2e (default: the config's "
                                                    "dataset).")] = None,
          batch_size: Annotated[int | None, typer.Option(help="Batch size (default: the config's).")] = None,
          size: Annotated[int, typer.Option(help="Image side of the synthetic training-step batch.")] = 368,
          iters: Annotated[int, typer.Option(help="Timed runs per part (after warm-up).")] = 5,
          warmup: Annotated[int, typer.Option(help="Untimed warm-up runs per part.")] = 2,
          device: Annotated[str, typer.Option(help="cpu | cuda | auto.")] = "auto",
          json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
          video: Annotated[Path | None, typer.Option(help="Video for the analyze part.")] = None,
          set_: SetOpt = None) -> None:
    """Images/s, ms per batch and peak memory of the data pipeline, targets, a training step and end-to-end training
    (and with `analyze --video V`: frames/s of video decoding, the model, and `fastpose analyze` end to end).

    Example: fastpose bench step --config configs/demo.yaml --batch-size 8 --size 256 --json bench.json
    """
    if json_out is not None:  # checked before the run, not when it is over
        out_file(json_out, "--json", "bench.json")
    report = bench.run(bench.parse_parts(part), config=config, overrides=set_, data=data,
                           batch_size=batch_size, size=size, iters=iters, warmup=warmup, device=device, video=video)
    out.print(bench.table(report))
    if json_out is not None:
        bench.write_json(report, json_out)
        out.print(f"wrote {json_out}")


@app.command("train")
def train_command(config: Path, set_: SetOpt = None,
          resume: Annotated[bool, typer.Option("--resume", help="Continue the run in out_dir from its newest "
                                               "snapshot (exactly: same weights as an uninterrupted run).")] = False,
          max_iters: Annotated[int | None, typer.Option(help="Stop after this iteration (the schedule is "
                                                        "unchanged).")] = None) -> None:
    """Train a part detector as CONFIG says (one GPU, the CPU, or many GPUs under torchrun).

    Example: fastpose train configs/mpii.yaml --set batch_size=16
    Many GPUs: torchrun --nproc-per-node 8 -m fastpose train configs/mpii.yaml
    """
    result = train.train(load(config, set_), resume=resume, max_iters=max_iters)
    out.print(f"finished at iteration {result['iteration']}; snapshot {result['snapshot']}")


@app.command("pairwise-stats")
def pairwise_stats_command(config: Path, set_: SetOpt = None,
                   out_path: Annotated[Path | None, typer.Option("--out", help="Output .npz/.mat (default: the "
                                                                 "config's pairwise_stats_fn).")] = None) -> None:
    """Mean and std of every joint pair's offset over the persons of the training split (for the pairwise head).

    Example: fastpose pairwise-stats configs/coco.yaml   (then train with --set pairwise_predict=true)
    """
    result = pairwise.write_stats(load(config, set_), out_path)
    out.print(f"wrote {result['path']}: {result['pairs_seen']} of {result['pairs']} joint pairs seen "
              f"({result['joints']} joints)")


@app.command("fit-assembly")
def fit_assembly_command(config: Path,
                         checkpoint: Annotated[Path, typer.Option(help="Snapshot .pt of a trained model.")],
                         set_: SetOpt = None,
                 out_path: Annotated[Path | None, typer.Option("--out", help="Output .json (default: "
                                                               "<checkpoint>.assembly.json).")] = None,
                 max_images: Annotated[int, typer.Option(help="Training images to fit on.")] = 500,
                 device: Annotated[str, typer.Option(help="cpu | cuda | auto.")] = "auto") -> None:
    """Fit the multi-person edge classifier (same person or not, from the pairwise head) on training images.

    Example: fastpose fit-assembly configs/coco.yaml --checkpoint runs/coco/snapshot-225000.pt
    """
    result = assembly.fit_assembly(load(config, set_), checkpoint, out=out_path, max_images=max_images, device=device)
    out.print(f"wrote {result['path']}: {result['images']} images, {result['positives']} same-person and "
              f"{result['negatives']} different-person pairs, train accuracy {result['train_accuracy']:.3f}")


@convert_app.command("coco")
def convert_coco_command(images: Annotated[Path, typer.Option(help="Folder of the json's images (file_name).")],
                 annotations: Annotated[Path, typer.Option(help="COCO keypoints json (person_keypoints_*.json; "
                                                           "OCHuman/CrowdPose files work too).")],
                 out_dir: Annotated[Path, typer.Option("--out", help="Output shards folder.")],
                 min_keypoints: Annotated[int, typer.Option(help="Persons with fewer labelled keypoints become "
                                                            "ignore regions.")] = 1,
                 split: SplitOpt = None, seed: SeedOpt = 0, workers: WorkersOpt = None, skip_bad: SkipOpt = False,
                 overwrite: OverwriteOpt = False, samples_per_shard: ShardOpt = 512,
                 reencode_jpeg: ReencodeOpt = None) -> None:
    """Convert COCO-style keypoint annotations into multi-person shards (crowds and 0-keypoint persons as ignore RLE).

    Example: fastpose convert coco --images coco/val2017 --annotations coco/annotations/person_keypoints_val2017.json \
    --out data/coco-val
    """

    t0 = time.perf_counter()
    result = coco.convert(images, annotations, out_dir, min_keypoints=min_keypoints, split=split, seed=seed,
                               workers=workers, skip_bad=skip_bad, overwrite=overwrite,
                               samples_per_shard=samples_per_shard, reencode_jpeg=reencode_jpeg)
    _report_convert(result, out_dir, time.perf_counter() - t0)


@app.command("import-tf")
def import_tf_command(
        source: Annotated[Path, typer.Argument(metavar="PREFIX_OR_FOLDER", help="A TensorFlow checkpoint (V2 prefix, "
                                               "its .index, or a V1 .ckpt) or a DeepLabCut 2.x training folder "
                                               "(dlc-models/iteration-*/<shuffle>/train: its newest snapshot).")],
        out_path: Annotated[Path, typer.Option("--out", help="The fastpose snapshot to write (.pt).")],
        config: Annotated[Path | None, typer.Option(help="The pose_cfg.yaml the model was trained with (default: the "
                                                    "one beside the checkpoint).")] = None,
        set_: SetOpt = None) -> None:
    """Import a pose-tensorflow or DeepLabCut 2.x TensorFlow model as a fastpose snapshot (no TensorFlow needed) that
    eval, predict, analyze and export take.

    Example: fastpose import-tf models/mpii/mpii-single-resnet-101 --config demo/pose_cfg.yaml --out mpii.pt
    """
    t0 = time.perf_counter()
    result = import_tf(source, out_path, config=config, overrides=set_)
    arch = result["arch"]
    for note in result["notes"]:
        out.print(f"[yellow]note: {escape(note)}[/yellow]", highlight=False)
    out.print(f"wrote {result['path']} ({arch['net_type']}, backbone_width {arch['width']:g}, {arch['num_joints']} "
              f"joints, heads {', '.join(arch['heads'])}; iteration {result['iteration']}) from {result['checkpoint']} "
              f"(TensorFlow {result['format']}, {result['loaded']} tensors) and {result['config']} in "
              f"{time.perf_counter() - t0:.1f} s", highlight=False)


@app.command("demo")
def demo_command(out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("demo_out"),
         config: Annotated[Path, typer.Option(help="The demo config.")] = Path("configs/demo.yaml"),
         n: Annotated[int, typer.Option(help="Synthetic images to draw.")] = 600,
         max_iters: Annotated[int | None, typer.Option(help="Stop training early.")] = None,
         set_: SetOpt = None) -> None:
    """The embedded demo: draw a synthetic dataset, convert, train a small ResNet, evaluate, draw predictions.

    Example: fastpose demo --out demo_out   (what `make demo` runs)
    """
    result = demo.run(config, out_dir, n=n, overrides=set_, max_iters=max_iters)
    out.print(_eval_table(result["metrics"], f"held-out synthetic images ({result['metrics']['samples']} samples)"))
    out.print(f"predictions drawn in {result['picture']}; snapshot {result['train']['snapshot']}")


def main() -> None:
    try:
        app()
    except UserError as e:
        # escape: a message quoting the user's text ("[unclosed" in a YAML error) must not be read as rich markup
        Console(stderr=True).print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
