"""The whole multi-person flow on the shared COCO excerpt: convert -> pairwise-stats -> train with the pairwise head ->
fit-assembly -> eval (COCO OKS AP) -> predict (every person in its own colour). A tiny ResNet-18, two iterations:
this checks that the stages fit together and write what they promise, not accuracy."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from pycocotools.coco import COCO as COCOapi
from pycocotools.cocoeval import COCOeval

from fastpose import config
from fastpose.assembly import classifier_path, fit_assembly
from fastpose.convert import coco
from fastpose.evaluate import evaluate, write_outputs
from fastpose.pairwise import load_stats, write_stats
from fastpose.predict import predict
from fastpose.shards import ShardDataset
from fastpose.train import train

COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmpose" / "coco"

CFG = """\
dataset: {root}/shards
dataset_type: coco
net_type: resnet_18
freeze_bn: false
global_scale: 0.3
location_refinement: true
locref_loss_weight: 0.05
pairwise_predict: true
pairwise_loss_weight: 0.05
pairwise_stats_fn: {root}/pairwise_stats.npz
det_min_score: 0.0    # an untrained net: every local maximum is a detection
nms_radius: 1.0
optimizer: adam
multi_step: [[0.001, 2]]
batch_size: 2
display_iters: 1
save_iters: 2
num_workers: 1
num_threads: 1
channels_last: false
test_split: train
out_dir: {root}/run
"""


def _cocoeval_ap(results: list[dict], root: Path) -> float:
    """COCOeval(iouType="keypoints") AP of results on the images of the shards' train split, pycocotools' defaults."""
    ids = sorted(int(i) for i in ShardDataset(root / "shards", "train").column("source_index"))
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCOapi(str(COCO / "test_coco.json"))
        if not results:
            return 0.0
        ev = COCOeval(truth, truth.loadRes([dict(r) for r in results]), "keypoints")  # loadRes adds keys
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


@pytest.mark.slow
@pytest.mark.skipif(not COCO.exists(), reason="../shared/data/mmpose/coco is absent (a user's fresh clone)")
def test_multi_person_flow(tmp_path):
    coco.convert(COCO, COCO / "test_coco.json", tmp_path / "shards", quiet=True, workers=1)
    (tmp_path / "coco.yaml").write_text(CFG.format(root=tmp_path))
    cfg = config.load(tmp_path / "coco.yaml")

    write_stats(cfg, quiet=True)
    mean, std = load_stats(cfg.pairwise_stats_fn)
    assert mean.shape == (17, 17, 2) and (std > 0).all()

    result = train(cfg, quiet=True)
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert result["iteration"] == 2 and "loss_pairwise" in lines[0]

    fitted = fit_assembly(cfg, result["snapshot"], device="cpu")
    assert Path(fitted["path"]) == classifier_path(result["snapshot"]) and classifier_path(result["snapshot"]).is_file()

    evaluation = evaluate(None, result["snapshot"], split="train", device="cpu")
    ap = evaluation["metrics"]["coco"]
    # An untrained net: any AP, but the one pycocotools' own COCOeval gives its results on the split's images.
    assert "note" not in ap and ap["AP"] == pytest.approx(_cocoeval_ap(evaluation["coco_results"], tmp_path))
    # Multi-person pixel error: every labelled person counted, matched ones (if any) scored in source pixels.
    px = evaluation["metrics"]["pixel_error"]
    labelled = [p for p in evaluation["ground_truth"]["persons"] for p in p if (p[:, 2] > 0).any()]
    assert px["persons"] == len(labelled) > 0 and 0.0 <= px["persons_found"] <= 1.0 and px["sigmas"] == "coco"
    found = sum(int((row["match"] >= 0).sum()) for row in evaluation["pixel_rows"])
    assert px["persons_found"] == pytest.approx(found / len(labelled))
    written = write_outputs(evaluation, tmp_path / "eval")
    assert any(p.name == "coco_results.json" for p in written)

    images = sorted(str(p) for p in COCO.glob("*.jpg"))
    docs = predict(result["snapshot"], images[:2], tmp_path / "pred", device="cpu", multi_person=True)
    assert all("persons" in d for d in docs)
    png = cv2.imread(str(tmp_path / "pred" / (Path(images[0]).stem + ".png")))
    assert png is not None and png.shape[:2] == (docs[0]["height"], docs[0]["width"])


@pytest.mark.skipif(not COCO.exists(), reason="../shared/data/mmpose/coco is absent")
def test_cli_pairwise_stats(tmp_path):
    coco.convert(COCO, COCO / "test_coco.json", tmp_path / "shards", quiet=True, workers=1)
    (tmp_path / "coco.yaml").write_text(CFG.format(root=tmp_path))
    done = subprocess.run([sys.executable, "-m", "fastpose", "pairwise-stats", str(tmp_path / "coco.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "pairwise_stats.npz").is_file()
