"""`fastpose analyze` on small videos made here (PyAV, H.264 and MPEG-4) from a real labelled frame of the shared
DeepLabCut project, moving: DeepLabCut's table layout, agreement with `fastpose predict` on the same frames, the
labelled video, the tracker's golden crossing, and every bad input of the issue."""

from __future__ import annotations

import dataclasses
import errno
import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from oracles import walkers
from typer.testing import CliRunner

from fastpose import bench, tracks
from fastpose import config as config_mod
from fastpose.analyze import Options, analyze, cpu_batches, dali_net_batches
from fastpose.checkpoint import load_model, save_snapshot
from fastpose.cli import app
from fastpose.errors import UserError
from fastpose.export import export
from fastpose.model import build_model
from fastpose.predict import predict, predict_images
from fastpose.tracks import Tracker, dlc_table, read_table, write_table
from fastpose.video import DecodeCounts, probe

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "deeplabcut" / "Reaching-Mackenzie-2018-08-30"
FRAME = DATA / "labeled-data" / "reachingvideo1" / "img005.png"
NAMES = ["Hand", "Finger1", "Tongue", "Joystick1", "Joystick2"]
H, W, N = 48, 64, 12


def _frames(n: int = N) -> list[np.ndarray]:
    """n RGB frames (H, W): a 4x-downscaled window of the real frame, sliding 3 px right and 2 px down per frame."""
    if not FRAME.is_file():
        pytest.skip(f"shared data missing: {FRAME}")
    image = cv2.cvtColor(cv2.imread(str(FRAME)), cv2.COLOR_BGR2RGB)
    small = cv2.resize(image, (image.shape[1] // 4, image.shape[0] // 4), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(small[20 + 2 * i:20 + 2 * i + H, 30 + 3 * i:30 + 3 * i + W]) for i in range(n)]


def _write(path: Path, codec: str, frames: list[np.ndarray], rate=25, pts: list[int] | None = None,
           options: dict | None = None, gop: int | None = None) -> Path:
    with av.open(str(path), "w", options=options or {}) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        if gop:
            s.codec_context.gop_size = gop
        if pts is not None:
            s.time_base = Fraction(1, rate)
        for i, f in enumerate(frames):
            fr = av.VideoFrame.from_ndarray(f, format="rgb24")
            if pts is not None:
                fr.pts, fr.time_base = pts[i], s.time_base
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _decoded(path: Path) -> list[np.ndarray]:
    """Every frame as the decoder gives it (what predict is fed, so the two see the same pixels)."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    cfg = config_mod.load(None, net_type="resnet_18", num_joints=5, joint_names=NAMES, skeleton=[[0, 1], [3, 4]],
                          location_refinement=True, device="cpu", precision="fp32", global_scale=0.8, seed=0)
    torch.manual_seed(0)
    return save_snapshot(tmp_path_factory.mktemp("run"), 7, model=build_model(cfg), optimizer=None, cfg=cfg,
                         data_position={})


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return {"h264": _write(root / "clip.mp4", "libx264", _frames()),
            "mpeg4": _write(root / "clip4.avi", "mpeg4", _frames())}


def _run(snapshot, video, out, **opts) -> dict:
    return analyze(snapshot, [str(video)], out_dir=out, device="cpu",
                   options=Options(progress=False, **{"batch_size": 5, **opts}))


@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
def test_h5_is_deeplabcuts_and_equals_predict(snapshot, videos, tmp_path, codec):
    video = videos[codec]
    result = _run(snapshot, video, tmp_path, labeled_video=True)
    scorer = result["scorer"]
    assert scorer == "DLC_Resnet18_fastpose_snapshot_7"
    base = tmp_path / f"{video.stem}{scorer}"
    df = pd.read_hdf(base.with_name(base.name + ".h5"), "df_with_missing")
    assert list(df.columns.names) == ["scorer", "bodyparts", "coords"]
    assert list(df.columns) == [(scorer, b, c) for b in NAMES for c in ("x", "y", "likelihood")]
    assert list(df.index) == list(range(N)) and (df.dtypes == np.float64).all()
    # The same frames through predict's path: equal to 1e-3 px.
    expected = predict_images(*_model(snapshot), _decoded(video), torch.device("cpu"))  # (N, K, 3)
    np.testing.assert_allclose(df.to_numpy().reshape(N, 5, 3), expected, atol=1e-3)
    # The csv holds the same numbers under DeepLabCut's three header rows.
    csv = pd.read_csv(base.with_name(base.name + ".csv"), header=[0, 1, 2], index_col=0)
    np.testing.assert_allclose(csv.to_numpy(), df.to_numpy(), rtol=1e-12)
    assert list(csv.columns) == list(df.columns)
    # The pandas_version attribute older pandas needs to read the table (pandas-dev/pandas#62792).
    with pd.HDFStore(base.with_name(base.name + ".h5"), "r") as store:
        assert store.get_storer("df_with_missing").attrs.pandas_version == "0.15.2"
    labelled = probe(base.with_name(base.name + "_labeled.mp4"))
    assert (labelled.frames, labelled.rate, labelled.width, labelled.height) == (N, Fraction(25), W, H)
    assert labelled.codec == "h264"
    meta = json.loads(base.with_name(base.name + "_meta.json").read_text())
    assert (meta["fps"], meta["frames"], meta["missing_frames"], meta["batch_size"]) == (25.0, N, 0, 5)
    assert meta["frame_dimensions"] == [H, W] and meta["checkpoint"] == str(snapshot)
    assert not list(tmp_path.glob("*.tmp*"))


def _model(snapshot):
    return load_model(snapshot, torch.device("cpu"))


def test_frames_range_and_skip_existing(snapshot, videos, tmp_path):
    result = _run(snapshot, videos["h264"], tmp_path, frames="3:9")
    df = read_table(Path(result["rows"][0]["outputs"][0]))
    assert list(df.index) == list(range(3, 9))
    full = predict_images(*_model(snapshot), _decoded(videos["h264"])[3:9], torch.device("cpu"))
    np.testing.assert_allclose(df.to_numpy().reshape(6, 5, 3), full, atol=1e-3)
    again = _run(snapshot, videos["h264"], tmp_path, frames="3:9")
    assert len(again["rows"]) == 1  # not skipped without --skip-existing
    skipped = analyze(snapshot, [str(videos["h264"])], out_dir=tmp_path, device="cpu", skip_existing=True,
                      options=Options(progress=False))
    assert skipped["rows"][0]["status"] == "exists"



def test_set_on_a_snapshot_target_changes_the_run(snapshot, videos, tmp_path):
    """`analyze SNAPSHOT.pt --set global_scale=0.5`: the override applies to the snapshot's own config (it was
    silently ignored before): the joints equal predict's at scale 0.5 and differ from the saved 0.8's."""
    result = analyze(snapshot, [str(videos["h264"])], out_dir=tmp_path, device="cpu", overrides=["global_scale=0.5"],
                     options=Options(progress=False, batch_size=5, frames="0:4"))
    got = read_table(Path(result["rows"][0]["outputs"][0])).to_numpy().reshape(4, 5, 3)
    model, cfg = _model(snapshot)
    frames = _decoded(videos["h264"])[:4]
    half = predict_images(model, dataclasses.replace(cfg, global_scale=0.5), frames, torch.device("cpu"))
    np.testing.assert_allclose(got, half, atol=1e-3)
    assert np.abs(got - predict_images(model, cfg, frames, torch.device("cpu")))[..., :2].max() > 1
    with pytest.raises(UserError, match=r"--set.*'global_scal'.*global_scale"):
        analyze(snapshot, [str(videos["h264"])], out_dir=tmp_path, device="cpu", overrides=["global_scal=0.5"])
    with pytest.raises(UserError, match=r"--set global_scale=0\.3: .*m\.onnx is an exported graph"):
        analyze(tmp_path / "m.onnx", [str(videos["h264"])], out_dir=tmp_path, overrides=["global_scale=0.3"])

def test_variable_frame_rate_numbers_frames_by_timestamp(snapshot, tmp_path):
    pts = [0, 1, 2, 4, 5, 6, 8, 9, 10, 11]  # 25 fps grid, frames 3 and 7 never shown
    frames = _frames(len(pts))
    video = _write(tmp_path / "vfr.mp4", "libx264", frames, pts=pts)
    result = _run(snapshot, video, tmp_path)
    df = read_table(Path(result["rows"][0]["outputs"][0]))
    assert list(df.index) == list(range(12))
    values = df.to_numpy().reshape(12, 5, 3)
    assert np.isnan(values[[3, 7]]).all() and not np.isnan(values[pts]).any()
    expected = predict_images(*_model(snapshot), _decoded(video), torch.device("cpu"))
    np.testing.assert_allclose(values[pts], expected, atol=1e-3)
    assert result["rows"][0]["missing_frames"] == 2


def test_corrupt_frame_is_a_counted_nan_row(snapshot, tmp_path):
    video = _write(tmp_path / "intra.avi", "mpeg4", _frames(), gop=1)  # every frame a keyframe
    with av.open(str(video)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    data = bytearray(video.read_bytes())
    pos, size = packets[6]
    data[pos + 8:pos + size] = np.random.default_rng(0).integers(0, 256, size - 8, dtype=np.uint8).tobytes()
    video.write_bytes(bytes(data))
    meta = _run(snapshot, video, tmp_path)["rows"][0]
    values = read_table(Path(meta["outputs"][0])).to_numpy().reshape(N, 5, 3)
    assert np.isnan(values[6]).all() and not np.isnan(np.delete(values, 6, axis=0)).any()
    assert (meta["corrupt_frames"], meta["missing_frames"]) == (1, 1)


def test_truncated_video_keeps_what_decodes(snapshot, tmp_path):
    frames = [np.roll(f, i, axis=1) for i, f in enumerate(_frames(N) * 3)]  # 36 frames
    whole = _write(tmp_path / "whole.mp4", "libx264", frames, options={"movflags": "faststart"}, gop=6)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:int(whole.stat().st_size * 0.6)])
    meta = _run(snapshot, cut, tmp_path)["rows"][0]
    values = read_table(Path(meta["outputs"][0])).to_numpy().reshape(len(frames), 5, 3)
    done = ~np.isnan(values).all(axis=(1, 2))
    assert 0 < done.sum() < len(frames) and not done[done.argmin():].any()  # a prefix decoded, the rest NaN
    assert meta["missing_frames"] == len(frames) - done.sum() == meta["frames"] - meta["analysed_frames"]


def test_bad_inputs_are_one_paragraph_errors(snapshot, videos, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(UserError, match="could not be opened as a video"):
        _run(snapshot, text, tmp_path)
    empty = tmp_path / "empty.avi"
    with av.open(str(empty), "w") as c:  # a header, a stream, no frame (an mp4 would drop the empty track)
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        c.start_encoding()
    assert empty.stat().st_size > 0
    with pytest.raises(UserError, match="without frames"):
        _run(snapshot, empty, tmp_path)
    # a bad video among good ones is a counted skip, the others are analysed
    result = analyze(snapshot, [str(text), str(videos["h264"])], out_dir=tmp_path / "o", device="cpu",
                     options=Options(progress=False))
    assert [r["video"] for r in result["rows"]] == [str(videos["h264"])]
    assert [v for v, _ in result["skipped"]] == [str(text)]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        _run(snapshot, videos["h264"], blocker)
    with pytest.raises(UserError, match="--frames"):
        _run(snapshot, videos["h264"], tmp_path, frames="9:3")


def test_checkpoint_with_another_joint_set_is_a_user_error(snapshot, videos, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("net_type: resnet_18\nnum_joints: 4\njoint_names: [a, b, c, d]\nglobal_scale: 0.8\n")
    with pytest.raises(UserError, match="joint|num_joints"):
        analyze(config, [str(videos["h264"])], checkpoint=snapshot, out_dir=tmp_path, device="cpu",
                options=Options(progress=False))


def test_full_disk_leaves_no_h5(snapshot, videos, tmp_path, monkeypatch):
    def full(tmp, table):
        Path(tmp).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tracks, "_put_h5", full)
    with pytest.raises(UserError, match="nothing partial"):
        _run(snapshot, videos["h264"], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_summary(snapshot, videos, tmp_path):
    res = CliRunner().invoke(app, ["analyze", str(snapshot), str(videos["h264"]), "--out", str(tmp_path), "--device",
                                   "cpu", "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    assert "clip.mp4" in res.output and f"{N}" in res.output
    res = CliRunner().invoke(app, ["analyze", str(snapshot), str(tmp_path / "nothing.mp4")])
    assert isinstance(res.exception, UserError) and "does not exist" in str(res.exception)  # main() exits 2


@pytest.mark.slow
def test_engine_onnxruntime_equals_torch(snapshot, videos, tmp_path):
    # the exported graph, passed as the checkpoint, run through the CLI; the torch engine through the function
    onnx_file = export(snapshot, "onnx", tmp_path / "model.onnx")
    video = videos["h264"]
    torch_run = analyze(snapshot, [str(video)], out_dir=tmp_path / "torch", device="cpu", engine="torch",
                        options=Options(progress=False, batch_size=5))
    res = CliRunner().invoke(app, ["analyze", str(onnx_file), str(video), "--out", str(tmp_path / "ort"), "--device",
                                   "cpu", "--batch-size", "5", "--engine", "onnxruntime"])
    assert res.exit_code == 0, res.output
    scorer = torch_run["scorer"]
    assert scorer == "DLC_Resnet18_fastpose_snapshot_7"  # the iteration travels in the exported file's metadata
    name = f"{video.stem}{scorer}"
    a = pd.read_hdf(tmp_path / "torch" / f"{name}.h5", "df_with_missing")
    b = pd.read_hdf(tmp_path / "ort" / f"{name}.h5", "df_with_missing")
    assert list(a.columns) == list(b.columns) and list(a.index) == list(b.index) == list(range(N))
    a, b = a.to_numpy().reshape(N, 5, 3), b.to_numpy().reshape(N, 5, 3)  # (N, K, 3) x, y, likelihood
    assert np.isfinite(b).all()
    np.testing.assert_allclose(b[..., :2], a[..., :2], atol=1e-3, rtol=0)
    np.testing.assert_allclose(b[..., 2], a[..., 2], atol=1e-4, rtol=0)
    meta = json.loads((tmp_path / "ort" / f"{name}_meta.json").read_text())
    assert (meta["engine"], meta["precision"], meta["frames"], meta["decoder"]) == ("onnxruntime", "fp32", N, "pyav")
    assert json.loads((tmp_path / "torch" / f"{name}_meta.json").read_text())["engine"] == "torch"


def test_engine_errors_through_the_cli(snapshot, videos, tmp_path):
    fake = tmp_path / "m.onnx"
    fake.write_bytes(b"not a model")
    cases = [([str(fake), "--engine", "torch"], "--engine torch cannot run"),
             ([str(snapshot), "--engine", "tensorrt"], "not an engine: use one of torch, onnxruntime"),
             ([str(snapshot), "--engine", "onnxruntime", "--decoder", "dali"], "--decoder pyav"),
             ([str(fake)], "could not be loaded by ONNX Runtime")]  # an .onnx: onnxruntime by default
    for args, expect in cases:
        res = CliRunner().invoke(app, ["analyze", *args[:1], str(videos["h264"]), *args[1:], "--out",
                                       str(tmp_path / "o"), "--device", "cpu"])
        assert isinstance(res.exception, UserError), (args, res.output)  # main() exits 2
        assert expect in str(res.exception), (args, str(res.exception))
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_table_multi_person_layout(tmp_path):
    poses = np.arange(2 * 3 * 2 * 3, dtype=np.float64).reshape(2, 3, 2, 3)  # (N, T, K, 3)
    poses[1, 2] = np.nan
    df = dlc_table(poses, [10, 11], "DLC_x", ["a", "b"], ["ind1", "ind2", "ind3"])
    assert list(df.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    assert df.loc[11, ("DLC_x", "ind2", "b", "likelihood")] == poses[1, 1, 1, 2]
    h5, csv = write_table(tmp_path / "v", df)
    back = pd.read_hdf(h5, "df_with_missing")
    pd.testing.assert_frame_equal(back, df)
    assert np.isnan(back.loc[11, ("DLC_x", "ind3")]).all()
    assert csv.read_text().splitlines()[:4] == ["scorer,DLC_x,DLC_x,DLC_x,DLC_x,DLC_x,DLC_x,DLC_x,DLC_x,DLC_x,DLC_x,"
                                                "DLC_x,DLC_x,DLC_x,DLC_x,DLC_x,DLC_x,DLC_x,DLC_x",
                                                "individuals,ind1,ind1,ind1,ind1,ind1,ind1,ind2,ind2,ind2,ind2,ind2,"
                                                "ind2,ind3,ind3,ind3,ind3,ind3,ind3",
                                                "bodyparts,a,a,a,b,b,b,a,a,a,b,b,b,a,a,a,b,b,b",
                                                "coords,x,y,likelihood,x,y,likelihood,x,y,likelihood,x,y,likelihood,"
                                                "x,y,likelihood,x,y,likelihood"]


def _person(x: float, y: float) -> np.ndarray:
    """A 3-joint person (K, 3): head at (x, y), feet 40 px below and 20 px to each side (a 40 x 40 box), all seen."""
    return np.array([[x, y, 0.9], [x - 20, y + 40, 0.8], [x + 20, y + 40, 0.8]])


def test_tracker_keeps_two_crossing_people_apart():
    """A walks right 4 px per frame from x = 10, B left from x = 98, on the same row: they meet at frame 11 (both at
    x = 54, identical) and pass. Each frame lists them in a shuffled order; the ids must follow the walkers."""
    rng = np.random.default_rng(0)
    tracker = Tracker(max_gap=3)
    seen = []
    for f in range(23):
        people = [("A", _person(10 + 4 * f, 50)), ("B", _person(98 - 4 * f, 50))]
        order = rng.permutation(2)
        ids = tracker.update(f, np.stack([people[i][1] for i in order]))
        seen.append({people[i][0]: t for i, t in zip(order, ids)})
    assert tracker.count == 2
    assert all(s == seen[0] for s in seen) and seen[0]["A"] != seen[0]["B"]


def test_tracker_gap_and_new_tracks():
    tracker = Tracker(max_gap=2)
    assert tracker.update(0, np.stack([_person(10, 10)])) == [0]
    assert tracker.update(1, np.zeros((0, 3, 3))) == []
    assert tracker.update(3, np.stack([_person(10, 10)])) == [0]  # unseen for 2 frames: still track 0
    assert tracker.update(7, np.stack([_person(10, 10)])) == [1]  # unseen for 3 > max_gap: a new track
    far = tracker.update(8, np.stack([_person(10, 10), _person(200, 200)]))
    assert far == [1, 2]  # far from every track: a new one
    nothing = _person(0, 0)
    nothing[:, 2] = 0
    assert tracker.update(9, np.stack([nothing])) == [-1]  # no joint: starts no track


def test_oks_and_iou_goldens():
    a = _person(10, 10)
    assert tracks.oks(a, a) == pytest.approx(1.0)
    b = a.copy()
    b[:, 0] += 4  # box 40 x 40 = 1600 px^2; d^2 = 16; exp(-16 / (2 * 1600 * 0.01)) = exp(-0.5)
    assert tracks.oks(a, b) == pytest.approx(np.exp(-0.5))
    assert tracks.box_iou(a, b) == pytest.approx((36 * 40) / (2 * 1600 - 36 * 40))
    assert tracks.oks(a, _person(200, 10)) < 1e-6 and tracks.box_iou(a, _person(200, 10)) == 0


@pytest.mark.slow  # ~7 s of CPU (H.264 encoding, analyze, predict on 12 frames)
def test_multi_person_video_keeps_two_walkers_apart_as_predict_finds_them(tmp_path):
    """End to end: an H.264 video of two people walking past each other (tests/oracles/walkers.py: known joints, a
    hand-set network that finds them), `analyze --multi-person` through the assembly, the tracker and the h5 writer.
    Every frame's two tracks equal `fastpose predict --multi-person` on the decoded frames (as PNG files) to 1e-3 px,
    and each track follows one walker through the crossing."""
    video = _write(tmp_path / "walk.mp4", "libx264", walkers.frames())
    cfg = walkers.config(tmp_path / "stats.npz")
    snap = save_snapshot(tmp_path / "run", 3, model=walkers.detector(cfg), optimizer=None, cfg=cfg, data_position={})
    result = analyze(snap, [str(video)], out_dir=tmp_path / "out", device="cpu",
                     options=Options(progress=False, batch_size=5, multi_person=True))
    h5 = tmp_path / "out" / f"walk{result['scorer']}.h5"
    df = pd.read_hdf(h5, "df_with_missing")
    n, k = walkers.N, len(walkers.NAMES)
    assert list(df.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    assert list(df.columns.get_level_values("individuals").unique()) == ["ind1", "ind2"]
    assert list(df.index) == list(range(n))
    poses = df.to_numpy().reshape(n, 2, k, 3)  # (N, tracks, K, 3) x, y, likelihood
    assert np.isfinite(poses).all()  # both people, every joint, every frame
    # predict's persons on the same decoded pixels (PNG is lossless), in its own order per frame.
    images = []
    for i, frame in enumerate(_decoded(video)):
        images.append(str(tmp_path / f"f{i:02d}.png"))
        cv2.imwrite(images[-1], cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    docs = predict(snap, images, tmp_path / "pred", device="cpu", multi_person=True)
    truth = walkers.truth()  # (N, 2, K, 2)
    follows = []
    for f, doc in enumerate(docs):
        found = np.array([[[j["x"], j["y"], j["score"]] for j in person] for person in doc["persons"]])  # (P, K, 3)
        assert found.shape == (2, k, 3)
        match = [int(np.argmin(np.abs(found[:, 0, 0] - pose[0, 0]))) for pose in poses[f]]  # by head x
        assert sorted(match) == [0, 1]
        np.testing.assert_allclose(poses[f], found[match], atol=1e-3, rtol=0)
        # which walker each track is on: the network puts a joint 12 px right of and below its blob (module doc)
        dist = np.linalg.norm(poses[f][:, None, :, :2] - 12 - truth[f][None], axis=-1).max(-1)  # (tracks, walkers)
        assert dist.min(axis=1).max() < 1.0
        follows.append(tuple(dist.argmin(axis=1)))
    assert truth[0, 0, 0, 0] < truth[0, 1, 0, 0] and truth[-1, 0, 0, 0] > truth[-1, 1, 0, 0]  # they do cross
    assert set(follows) == {follows[0]} and sorted(follows[0]) == [0, 1]  # one walker per track, all the way
    meta = json.loads(h5.with_name(f"walk{result['scorer']}_meta.json").read_text())
    assert (meta["multi_person"], meta["tracks"], meta["frames"]) == (True, 2, n)


@pytest.mark.slow
def test_bench_analyze_reports_decode_model_and_end_to_end(videos, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("net_type: resnet_18\nnum_joints: 5\nglobal_scale: 0.8\nbatch_size: 4\n")
    report = bench.run(["analyze"], config=config, device="cpu", video=videos["h264"], iters=2, warmup=1)
    res = report["results"]["analyze"]
    assert (res["frames"], res["frame_size"], res["network_input"]) == (N, [W, H], [51, 38])  # floor(0.8 x size)
    assert res["decoder"] == "pyav" and res["runs"] == 1
    assert res["end_to_end_over_model"] == pytest.approx(res["end_to_end_fps"] / res["model_fps"])
    assert min(res["decode_fps"], res["model_fps"], res["end_to_end_fps"]) > 0
    with pytest.raises(UserError, match="--video"):
        bench.run(["analyze"], config=config, device="cpu")


def test_dali_path_feeds_the_network_what_predict_does(snapshot, tmp_path):
    """The GPU path's DALI graph, run on DALI's CPU decoder (VP9): the same frame numbers, frames and network inputs
    within a few grey levels of PyAV + `fastpose.images.network_batch` (colour conversion; bilinear antialiased
    resize vs exact area averaging)."""
    video = _write(tmp_path / "clip.webm", "libvpx-vp9", _frames())
    info = probe(video)
    model, cfg = _model(snapshot)
    dali = list(dali_net_batches(info, 2, N, cfg, 4, torch.device("cpu"), True))
    ref = list(cpu_batches(info, 2, N, cfg, 4, DecodeCounts(), True))
    # DALI's sequences start at frame 0 (the first one is cut to frames 2, 3); the frames themselves must agree.
    assert sum((d[0] for d in dali), []) == sum((r[0] for r in ref), []) == list(range(2, N))
    batch, rbatch = torch.cat([d[1] for d in dali]), torch.cat([r[1] for r in ref])  # (10, 3, 48, 64) padded
    assert batch.shape == rbatch.shape
    assert torch.equal(torch.cat([d[2] for d in dali]), torch.cat([r[2] for r in ref]))  # valid_hw
    assert torch.allclose(torch.cat([d[3] for d in dali]), torch.cat([r[3] for r in ref]))  # ratio
    frames = np.stack(sum((d[4] for d in dali), [])).astype(int) - np.stack(sum((r[4] for r in ref), []))
    assert np.abs(frames).max() <= 3 and np.abs(frames).mean() < 1  # DALI's YUV -> RGB vs FFmpeg's swscale
    assert (batch - rbatch).abs().mean() < 2.0  # grey levels, after the mean pixel
    meta = _run(snapshot, video, tmp_path, decoder="dali")["rows"][0]
    assert (meta["decoder"], meta["analysed_frames"]) == ("dali", N)
    with pytest.raises(UserError, match="VP8, VP9 and MJPEG only"):
        _run(snapshot, _write(tmp_path / "c.mp4", "libx264", _frames(3)), tmp_path, decoder="dali")
