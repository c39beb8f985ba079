"""`fastpose bench` writes the documented JSON fields (tiny sizes, one timed run; no timing asserts)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from fastpose import bench
from fastpose.cli import app
from fastpose.errors import UserError
from fastpose.shards import Sample, ShardWriter

K = 3


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    """A tiny shards set (6 train images of 48-64 px) and a resnet_18 config for it."""
    root = tmp_path_factory.mktemp("bench")
    rng = np.random.default_rng(0)
    with ShardWriter(root / "shards", K, ["a", "b", "c"]) as writer:
        for i in range(6):
            h, w = 48 + 8 * (i % 3), 64 - 8 * (i % 2)
            ok, png = cv2.imencode(".png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            joints = np.concatenate([rng.uniform(4, 40, (1, K, 2)), np.full((1, K, 1), 2)], axis=2)
            writer.add(Sample(image=png.tobytes(), image_format="png", size=(3, h, w), joints=joints))
        writer.close()
    cfg = {"dataset": "shards", "net_type": "resnet_18", "location_refinement": True, "batch_size": 2,
           "num_workers": 1, "num_threads": 1, "device": "cpu", "precision": "fp32", "optimizer": "adam",
           "multi_step": [[0.001, 100]], "pos_dist_thresh": 8}
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_bench_json_fields(config_file, tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "step", "--config", str(config_file), "--size", "32", "--iters", "1",
                                   "--warmup", "1", "--device", "cpu", "--json", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["device"].startswith("cpu")
    assert doc["versions"]["torch"] == torch.__version__
    step = doc["results"]["step"]
    assert step["images_per_s"] > 0 and step["ms_per_batch"] > 0 and step["batch_size"] == 2
    # images/s and ms per batch describe the same median time.
    assert step["images_per_s"] == pytest.approx(2 / (step["ms_per_batch"] / 1e3), rel=1e-9)
    assert step["peak_memory_mb"] > 0 and step["memory_kind"] == "cpu_max_rss"
    assert "step" in res.output


def test_bench_data_targets_e2e(config_file):
    report = bench.run(["data", "targets", "e2e"], config=config_file, iters=2, warmup=1, device="cpu")
    targets = report["results"]["targets"]
    assert targets["implementation"] == "torch_cpu" and targets["images_per_s"] > 0
    assert set(targets["cases"]) == {"mpii", "coco"} and targets["cases"]["mpii"]["triton_ms"] is None
    data, e2e = report["results"]["data"], report["results"]["e2e"]
    assert data["images_per_s"] > 0 and data["baseline_images_per_s"] > 0
    assert data["ratio"] == pytest.approx(data["images_per_s"] / data["baseline_images_per_s"])
    # CPU time per image (this process's threads and the data workers; /proc clock ticks, so 0 is possible here)
    assert data["cpu_ms_per_image"] >= 0 and data["baseline_cpu_ms_per_image"] >= 0
    aug = data["augmented"]  # the same comparison with every augmentation on
    assert aug["images_per_s"] > 0 and aug["settings"]["rotation_p"] == 1.0
    assert aug["ratio"] == pytest.approx(aug["images_per_s"] / aug["baseline_images_per_s"])
    assert e2e["iterations"] == 3 and e2e["runs"] == 2 and e2e["images_per_s"] > 0


def test_targets_share_of_a_reference_training_step():
    # On a GPU `fastpose bench targets` sets the targets against a ResNet-101 step; here a small step on the CPU.
    res = bench.bench_targets_part(torch.device("cpu"), 1, reference_step=("resnet_18", 2, 64))
    ref = res["reference_step"]
    assert (ref["net_type"], ref["batch_size"], ref["size"], ref["precision"]) == ("resnet_18", 2, 64, "fp32")
    assert ref["ms_per_batch"] > 0
    assert ref["targets_share"] == pytest.approx(res["ms_per_batch"] * 2 / 16 / ref["ms_per_batch"])
    assert "% of a resnet_18 step" in _notes(bench.table({"device": "cpu", "versions": {"torch": "x"},
                                                          "results": {"targets": res}}))
    assert "reference_step" not in bench.bench_targets_part(torch.device("cpu"), 1)  # CPU default: no step


def _notes(table) -> str:
    from rich.console import Console

    console = Console(width=400, record=True)
    console.print(table)
    return console.export_text()


def test_unknown_part():
    with pytest.raises(UserError, match="Unknown bench part 'stpe'"):
        bench.parse_parts("stpe")
    assert bench.parse_parts("all") == ["data", "targets", "step", "e2e"]
