"""`fastpose export`: the shared resize against hand-computed weights and OpenCV, the exported graphs (ONNX Runtime,
torch.export, TorchScript) against `fastpose predict` on odd sizes with N = 1 and N = 5, the metadata, the README's
onnxruntime-only example, predict --engine onnxruntime, and the user errors (nothing written)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from oracles import walkers

from fastpose import bench, cli
from fastpose import config as config_mod
from fastpose import export as export_mod
from fastpose import predict as predict_mod
from fastpose.assembly import assemble_persons
from fastpose.checkpoint import config_from_snapshot, save_snapshot
from fastpose.device import effective_precision, memory_format
from fastpose.export import export, read_metadata
from fastpose.images import eval_size, prepare_image, resize_weights
from fastpose.model import build_model
from fastpose.pairwise import save_stats
from fastpose.pipeline import eval_augment, sample_params
from fastpose.predict import predict, predict_images

REPO = Path(__file__).resolve().parents[1]
NAMES = ["head", "l_hand", "r_hand"]
BATCHES = [(1, 77, 91), (5, 50, 33), (2, 120, 64)]  # (N, H, W): odd sizes, shrunk by global_scale 0.8


def _cfg(**extra):
    values = dict(net_type="resnet_18", num_joints=3, joint_names=NAMES, all_joints=[[0], [1, 2]],
                  skeleton=[[0, 1], [0, 2]], location_refinement=True, global_scale=0.8, device="cpu",
                  precision="fp32", seed=0)
    values.update(extra)
    return config_mod.load(None, **values)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A resnet_18 snapshot with seeded random weights (heads with std 0.01: distinct logits, no argmax ties)."""
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model(cfg)
    return save_snapshot(tmp_path_factory.mktemp("run"), 1, model=model, optimizer=None, cfg=cfg, data_position={})


@pytest.fixture(scope="module")
def reference(snapshot):
    """fastpose predict's joints (torch eager) for each batch of BATCHES: (images, (N, K, 3))."""
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    rng = np.random.default_rng(1)
    out = []
    for n, h, w in BATCHES:
        images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        out.append((images, predict_images(model, cfg, list(images), torch.device("cpu"))))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The one resize.


def test_resize_weights_hand_computed():
    # 3 -> 2 pixels (r = 1.5): output 0 covers [0, 1.5): 1 of pixel 0, 0.5 of pixel 1, / 1.5; output 1 covers [1.5, 3)
    shrink = resize_weights(3, torch.tensor(2), 4).numpy()
    np.testing.assert_allclose(shrink, [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3], [0, 0, 0], [0, 0, 0]], atol=1e-7)
    # 2 -> 4 (r = 0.5): centres map to -0.25, 0.25, 0.75, 1.25, clamped into [0, 1]
    grow = resize_weights(2, torch.tensor(4), 4).numpy()
    np.testing.assert_allclose(grow, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], atol=1e-7)
    np.testing.assert_array_equal(resize_weights(5, torch.tensor(5), 5).numpy(), np.eye(5))


@pytest.mark.parametrize("h,w,scale", [(97, 81, 0.8), (50, 70, 1.7), (64, 64, 0.5), (33, 129, 0.35), (64, 64, 1.0)])
def test_prepare_image_equals_opencv_within_rounding(h, w, scale):
    """OpenCV's INTER_AREA (shrinking) / INTER_LINEAR (growing) round to uint8 (and INTER_LINEAR quantises its
    weights to 11 bits); the float32 resize stays within a grey level of them, at the pipeline's size."""
    cfg = _cfg(global_scale=scale)
    image = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    net, (rh, rw) = prepare_image(image, cfg)
    p = sample_params(eval_augment(cfg), 0, 0, w, h, np.zeros((0, 3, 3), np.float32))
    assert (rh, rw) == (p.res_h, p.res_w)
    shrink = rw < w or rh < h
    ref = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    diff = np.abs(net + np.float32(cfg.mean_pixel) - ref)
    assert diff.max() <= (0.5 + 1e-3 if shrink or scale == 1.0 else 1.0)
    assert diff.mean() < 0.3


def test_eval_size_equals_sample_params():
    """The tensor geometry equals the pipeline's Python geometry, clamps included (min_input_size, max_input_size)."""
    rng = np.random.default_rng(0)
    for scale, lo, hi in [(0.8452830189, 0, 1500), (0.35, 100, 1500), (1.0, 0, 300), (2.5, 64, 700)]:
        cfg = _cfg(global_scale=scale, min_input_size=lo, max_input_size=hi)
        hs, ws = rng.integers(2, 2000, 200), rng.integers(2, 2000, 200)
        got_h, got_w = eval_size(torch.from_numpy(hs), torch.from_numpy(ws), cfg)
        for h, w, gh, gw in zip(hs, ws, got_h.tolist(), got_w.tolist()):
            p = sample_params(eval_augment(cfg), 0, 0, int(w), int(h), np.zeros((0, 3, 3), np.float32))
            assert (gh, gw) == (p.res_h, p.res_w), (h, w, scale)


# ---------------------------------------------------------------------------------------------------------------------
# The exported graphs.


def _check_joints(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    np.testing.assert_allclose(got[..., :2], want[..., :2], rtol=0, atol=1e-3)  # pixels
    np.testing.assert_allclose(got[..., 2], want[..., 2], rtol=0, atol=1e-5)  # score


@pytest.fixture(scope="module")
def onnx_file(snapshot):
    return export(snapshot, "onnx", snapshot.with_name("model.onnx"))


@pytest.mark.slow
def test_onnx_equals_predict_and_carries_metadata(onnx_file, reference):
    model = onnx.load(str(onnx_file))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17
    meta = read_metadata(onnx_file)
    assert json.loads(meta["joint_names"]) == NAMES
    assert json.loads(meta["skeleton"]) == [[0, 1], [0, 2]]
    assert json.loads(meta["symmetric_joints"]) == [[0], [1, 2]]
    assert json.loads(meta["config"])["global_scale"] == 0.8 and meta["stride"] == "8"
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for images, want in reference:
        _check_joints(session.run(["joints"], {"images": images})[0], want)


@pytest.mark.slow
def test_exported_program_equals_predict(snapshot, reference):
    path = export(snapshot, "exported")
    assert path == snapshot.with_name(snapshot.stem + ".pt2")
    assert json.loads(read_metadata(path)["joint_names"]) == NAMES
    program = torch.export.load(path).module()
    for images, want in reference:
        _check_joints(program(torch.from_numpy(images))[0].numpy(), want)


@pytest.mark.slow
def test_torchscript_equals_predict_with_heatmaps(snapshot, reference):
    path = export(snapshot, "torchscript", snapshot.with_name("heads.ts.pt"), heatmaps=True)
    meta = read_metadata(path)
    assert json.loads(meta["outputs"]) == ["joints", "part", "locref", "valid_hw", "ratio"]
    module = torch.jit.load(str(path))
    for images, want in reference:
        joints, part, locref, valid_hw, ratio = module(torch.from_numpy(images))
        _check_joints(joints.numpy(), want)
        n, h, w = images.shape[:3]
        rh, rw = int(np.floor(h * 0.8)), int(np.floor(w * 0.8))
        assert part.shape == (n, 3, 2 * -(-rh // 16), 2 * -(-rw // 16)) and locref.shape[1] == 6
        assert valid_hw.tolist() == [[rh, rw]] * n
        np.testing.assert_allclose(ratio.numpy(), [[rw / w, rh / h]] * n)


@pytest.mark.slow
def test_static_size_export_through_the_cli(snapshot, reference, monkeypatch, capsys):
    images, want = reference[1]  # (5, 50, 33)
    path = snapshot.with_name("static.ts.pt")
    monkeypatch.setattr(sys, "argv", ["fastpose", "export", str(snapshot), "--format", "torchscript", "--static", "50",
                                      "33", "--out", str(path)])
    with pytest.raises(SystemExit) as info:  # click ends a successful command with exit status 0
        cli.main()
    assert info.value.code == 0
    assert f"wrote {path}" in " ".join(capsys.readouterr().out.split())
    assert json.loads(read_metadata(path)["static_size"]) == [50, 33]
    _check_joints(torch.jit.load(str(path))(torch.from_numpy(images[:2]))[0].numpy(), want[:2])


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- onnx-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its onnxruntime example"
    return match.group(1)


@pytest.mark.slow
def test_readme_onnx_example_runs_without_fastpose(onnx_file, reference, tmp_path):
    code = _readme_example()
    assert len(code.strip().splitlines()) <= 12 and "fastpose" not in code
    images, want = reference[0]
    cv2.imwrite(str(tmp_path / "frame.png"), cv2.cvtColor(images[0], cv2.COLOR_RGB2BGR))
    (tmp_path / "pose.onnx").symlink_to(onnx_file)
    # fastpose made unimportable: the example must run on onnxruntime, numpy and Pillow alone
    run = subprocess.run([sys.executable, "-c", "import sys; sys.modules['fastpose'] = None\n" + code],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 3
    for line, name, (x, y, s) in zip(lines, NAMES, want[0]):
        assert line == f"{name}: x={x:.1f} y={y:.1f} score={s:.2f}"


@pytest.mark.slow
def test_predict_engine_onnxruntime_equals_torch(snapshot, onnx_file, reference, tmp_path):
    images = reference[1][0]  # five 50 x 33 images
    for i, image in enumerate(images):
        cv2.imwrite(str(tmp_path / f"im{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    torch_docs = predict(snapshot, [str(tmp_path / "*.png")], tmp_path / "torch", engine="torch")
    ort_docs = predict(onnx_file, [str(tmp_path / "*.png")], tmp_path / "ort")  # an .onnx: onnxruntime by default
    assert len(torch_docs) == len(ort_docs) == 5
    for a, b in zip(torch_docs, ort_docs):
        got = np.array([[j["x"], j["y"], j["score"]] for j in b["joints"]])
        _check_joints(got, np.array([[j["x"], j["y"], j["score"]] for j in a["joints"]]))


@pytest.mark.slow
def test_multi_person_outputs_assemble_as_predict(tmp_path):
    """--multi-person: the graph returns the heads; assembling them (predict's ONNX path, here over the TorchScript
    file behind the same run() interface) gives predict's persons."""
    k = 3
    stats = save_stats(tmp_path / "stats.mat", np.zeros((k, k, 2)), np.full((k, k, 2), 10.0), np.ones((k, k)))
    cfg = _cfg(pairwise_predict=True, pairwise_stats_fn=str(stats))
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    snap = save_snapshot(tmp_path, 1, model=model, optimizer=None, cfg=cfg, data_position={})
    path = export(snap, "torchscript", multi_person=True)
    names = json.loads(read_metadata(path)["outputs"])
    assert names == ["joints", "part", "locref", "valid_hw", "ratio", "pairwise"]
    module = torch.jit.load(str(path))

    class Runner:  # OnnxModel's interface
        outputs = names

        def run(self, images):
            return {n: t.numpy() for n, t in zip(names, module(torch.from_numpy(images)))}

    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (61, 75, 3), dtype=np.uint8), rng.integers(0, 256, (48, 90, 3), dtype=np.uint8)]
    joints, persons = predict_mod.onnx_batch(Runner(), images, cfg, None, True)
    for image, got_joints, got in zip(images, joints, persons):
        heads, valid_hw, ratio = predict_mod._forward(model, cfg, [image], torch.device("cpu"))
        want = predict_mod.all_persons(heads, valid_hw, ratio, cfg, None)[0]
        _check_joints(got_joints[None], predict_mod.single_joints(heads, valid_hw, ratio, cfg))
        assert got.shape == want.shape and len(want) > 0
        _check_joints(got, want)


def _persons(doc: dict) -> np.ndarray:
    """(P, K, 3) x, y, score of a predict JSON document's persons, ordered by head x (each call's own order aside)."""
    found = np.array([[[j["x"], j["y"], j["score"]] for j in person] for person in doc["persons"]])
    return found[np.argsort(found[:, 0, 0], kind="stable")]


@pytest.mark.slow
def test_multi_person_onnx_file_assembles_as_predict(tmp_path):
    """--multi-person to ONNX: the file run by ONNX Runtime alone, its part/locref/pairwise maps fed to
    fastpose.assembly.assemble_persons (what a user of the file does), gives predict --multi-person's persons (torch)
    on the same images, to 1e-3 px and 1e-5 in score; so does predict on the .onnx file. The model is the hand-set
    two-walker detector (tests/oracles/walkers.py), so there are two real persons per image."""
    cfg = walkers.config(tmp_path / "stats.npz", pairwise_predict=True)
    snap = save_snapshot(tmp_path / "run", 2, model=walkers.detector(cfg), optimizer=None, cfg=cfg, data_position={})
    path = export(snap, "onnx", tmp_path / "walk.onnx", multi_person=True)
    frames = walkers.frames()[3:8]  # N = 5, the two walkers closing in, then passing
    images = []
    for i, frame in enumerate(frames):
        images.append(str(tmp_path / f"f{i}.png"))
        cv2.imwrite(images[-1], cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    want = [_persons(d) for d in predict(snap, images, tmp_path / "torch", device="cpu", multi_person=True)]
    assert all(p.shape == (2, 3, 3) for p in want)

    runner = export_mod.OnnxModel(path, torch.device("cpu"))
    assert runner.session.get_session_options().intra_op_num_threads == torch.get_num_threads()  # torch's count
    out = {k: torch.from_numpy(v) for k, v in runner.run(np.stack(frames)).items()}
    file_cfg = config_from_snapshot({"config": runner.config_values})  # the file carries its config
    for b, expected in enumerate(want):
        got = assemble_persons(out, b, out["valid_hw"][b], out["ratio"][b], None, float(out["ratio"][b].mean()),
                               file_cfg, None)  # (P, K, 3)
        _check_joints(got[np.argsort(got[:, 0, 0], kind="stable")], expected)
    onnx_docs = predict(path, images, tmp_path / "ort", device="cpu", multi_person=True)
    for doc, expected in zip(onnx_docs, want):
        _check_joints(_persons(doc), expected)


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: one paragraph, exit status 2, no file.


def _cli(monkeypatch, capsys, *args: str) -> str:
    """Run `fastpose ARGS` as the user does; assert exit status 2 without a traceback; return stderr on one line."""
    monkeypatch.setattr(sys, "argv", ["fastpose", *args])
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ")
    return " ".join(err.split())


@pytest.mark.parametrize("args,expect", [
    (["--format", "tflite"], "'tflite' is not an export format: use one of onnx, exported, torchscript"),
    (["--opset", "16"], "--opset 16 is too old"),
    (["--multi-person"], "has no pairwise head"),
    (["--static", "1", "40"], "at least 2 pixels"),
])
def test_export_user_errors(snapshot, tmp_path, monkeypatch, capsys, args, expect):
    err = _cli(monkeypatch, capsys, "export", str(snapshot), "--out", str(tmp_path / "m.onnx"), *args)
    assert expect in err
    assert list(tmp_path.iterdir()) == []


def test_export_rejects_a_folder_and_a_foreign_file(snapshot, tmp_path, monkeypatch, capsys):
    assert "is a folder" in _cli(monkeypatch, capsys, "export", str(snapshot), "--out", str(tmp_path))
    foreign = tmp_path / "weights.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, foreign)
    err = _cli(monkeypatch, capsys, "export", str(foreign), "--out", str(tmp_path / "m.onnx"))
    assert "is not a fastpose training snapshot" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pth"]


def test_a_failing_exporter_leaves_no_file(snapshot, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::foo. More text.")

    monkeypatch.setattr(export_mod, "to_torchscript", fail)
    with pytest.raises(export_mod.UserError, match="could not express this model"):
        export(snapshot, "torchscript", tmp_path / "m.ts.pt")
    assert list(tmp_path.iterdir()) == []


def test_predict_engine_errors(snapshot, tmp_path):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(export_mod.UserError, match="not an engine"):
        predict(snapshot, [str(image)], tmp_path / "o", engine="tensorrt")
    fake = tmp_path / "m.onnx"
    fake.write_bytes(b"not a model")
    with pytest.raises(export_mod.UserError, match="--engine torch cannot run"):
        predict(fake, [str(image)], tmp_path / "o", engine="torch")
    with pytest.raises(export_mod.UserError, match="could not be loaded by ONNX Runtime"):
        predict(fake, [str(image)], tmp_path / "o")


@pytest.mark.slow
def test_bench_export_part_times_every_engine():
    report = bench.run(["export"], overrides=["net_type=resnet_18", "num_joints=3"], batch_size=2, size=48, iters=1,
                       warmup=0, device="cpu")
    res = report["results"]["export"]
    assert list(res["engines"]) == ["torch_eager", "torch_eager_as_predict", "torch_compile", "torch_export",
                                    "onnxruntime"]
    assert res["engines"]["torch_eager"]["over_eager"] == 1.0
    dev = torch.device("cpu")
    assert res["as_predict"] == {"precision": effective_precision("auto", dev),
                                 "channels_last": memory_format("auto", dev) == torch.channels_last}
    # torch.compile may lack a C++ compiler: then it reports an error instead
    for name in ("torch_eager", "torch_eager_as_predict", "torch_export", "onnxruntime"):
        engine = res["engines"][name]
        assert engine["images_per_s"] == pytest.approx(2 / engine["seconds"][0])
    assert res["fastest"] in res["engines"] and res["net_type"] == "resnet_18" and res["size"] == 48
