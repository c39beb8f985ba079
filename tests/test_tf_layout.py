"""The slim layout against TensorFlow itself: the reference's network (TF-slim resnet_v1 + pose heads) with TF weights.

tests/data/tf/<fixture> (tools/tf_fixtures.py, TensorFlow 2.21): a reduced-width network with the real variable names,
its V2 and V1 checkpoints, its pose_cfg.yaml and TF's outputs on odd input sizes (golden.npz). fastpose builds the
network from the pose_cfg alone (backbone_layout auto -> slim for TF init_weights), loads the weights as `fastpose
train` does (tfweights.init_weights) and must give TF's part / locref / pairwise / intermediate maps within 1e-4.
Then: inference paths see each image unpadded (TF's outputs for any size), a reference config trains 2 steps from the
fixture, and wrong checkpoints end in one paragraph.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
import scipy.io
import torch

from fastpose import checkpoint, config
from fastpose.analyze import Options, analyze
from fastpose.convert import mat, synth
from fastpose.errors import UserError
from fastpose.evaluate import predict_split
from fastpose.export import InferenceGraph
from fastpose.images import batch_images, prepare_image
from fastpose.model import PoseNet, SamePool, build_model, infer
from fastpose.pairwise import write_stats
from fastpose.pipeline import decode_rgb
from fastpose.predict import predict_images, single_joints
from fastpose.shards import ShardDataset
from fastpose.tfckpt import open_checkpoint
from fastpose.tfweights import init_weights, load_tf, resolve_layout, tf_arch
from fastpose.tracks import read_table
from fastpose.train import train

TF = Path(__file__).resolve().parent / "data" / "tf"
FIXTURES = sorted(p.name for p in TF.iterdir() if (p / "golden.npz").is_file() and (p / "pose_cfg.yaml").is_file())
HEADS = ("part", "locref", "pairwise", "intermediate")
TOL = 1e-4  # the bar: absolute, float32


def fixture_cfg(name: str, *overrides: str, init: str = "model.ckpt") -> config.Config:
    """The fixture's pose_cfg.yaml as `fastpose train` resolves it (fp32, NCHW: the comparison is float32)."""
    cfg = config.load(TF / name / "pose_cfg.yaml", ["precision=fp32", "channels_last=false", *overrides])
    cfg = dataclasses.replace(cfg, init_weights=str(TF / name / init))
    return dataclasses.replace(cfg, backbone_layout=resolve_layout(cfg))


def loaded_model(name: str, init: str = "model.ckpt") -> tuple[PoseNet, config.Config]:
    cfg = fixture_cfg(name, init=init)
    model = build_model(cfg)
    init_weights(model, cfg)
    return model.eval(), cfg


def golden(name: str) -> tuple[dict, int]:
    g = dict(np.load(TF / name / "golden.npz"))
    return g, sum(1 for k in g if k.startswith("input_"))


def test_the_reference_fixtures_are_there():
    assert {"r50_all"} <= set(FIXTURES)
    assert fixture_cfg("r50_all").backbone_layout == "slim"  # auto: the init_weights are TensorFlow's


@pytest.mark.parametrize("init", ["model.ckpt", "model_v1.ckpt"])
@pytest.mark.parametrize("name", FIXTURES)
def test_heads_equal_tensorflows_on_odd_sizes(name, init):
    model, cfg = loaded_model(name, init)
    g, n = golden(name)
    assert n >= 3
    optional = (("locref", cfg.location_refinement), ("pairwise", cfg.pairwise_predict),
                ("intermediate", cfg.intermediate_supervision))
    expected = {"part"} | {head for head, on in optional if on}
    sizes = []
    for i in range(n):
        x = torch.from_numpy(g[f"input_{i}"]).permute(0, 3, 1, 2).contiguous()  # (1, 3, H, W) minus the mean
        sizes.append(tuple(x.shape[-2:]))
        with torch.no_grad():
            out = model(x)
        compared = set()
        for head in HEADS:
            if f"{head}_{i}" in g:
                ours = out[head].permute(0, 2, 3, 1).numpy()  # (1, h, w, C) as TF's NHWC
                assert ours.shape == g[f"{head}_{i}"].shape, (head, i)
                err = float(np.abs(ours - g[f"{head}_{i}"]).max())
                assert err <= TOL, f"{name} {init} input {i} {tuple(x.shape[-2:])}: {head} differs by {err:.2e}"
                compared.add(head)
        assert compared == expected  # every head the config has was compared, and no other
    assert any(h % 2 for h, _ in sizes) and any(h % 2 == 0 or w % 2 == 0 for h, w in sizes)  # both parities


def test_the_torchvision_layout_with_the_same_weights_is_not_tensorflow():
    """The layout is what makes the numbers TF's: the same tensors in torchvision's layout are far off."""
    model, cfg = loaded_model("r50_all")
    other = build_model(dataclasses.replace(cfg, backbone_layout="torchvision")).eval()
    other.load_state_dict(model.state_dict())
    g, _ = golden("r50_all")
    with torch.no_grad():
        out = other(torch.from_numpy(g["input_0"]).permute(0, 3, 1, 2).contiguous())
    assert float(np.abs(out["part"].permute(0, 2, 3, 1).numpy() - g["part_0"]).max()) > 100 * TOL


def tf_same_pool(x: np.ndarray) -> np.ndarray:
    """TF's max_pool(3x3, stride 2, SAME) by its definition: per axis of size m, ceil(m/2) windows starting at
    2i - pad_before with pad_before = (total padding) // 2, total = max(3 - 2, 0) if m is even else max(3 - 1, 0)."""
    h, w = x.shape[-2:]
    top, left = (3 - (2 if h % 2 == 0 else 1)) // 2, (3 - (2 if w % 2 == 0 else 1)) // 2
    out = np.empty(x.shape[:-2] + (-(-h // 2), -(-w // 2)), x.dtype)
    for i in range(out.shape[-2]):
        for j in range(out.shape[-1]):
            r0, c0 = max(2 * i - top, 0), max(2 * j - left, 0)
            out[..., i, j] = x[..., r0:2 * i - top + 3, c0:2 * j - left + 3].max(axis=(-2, -1))
    return out


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
def test_same_pool_is_tfs_for_every_parity_eager_and_traced():
    pool = SamePool()
    traced = torch.jit.trace(pool, torch.randn(1, 2, 7, 9))  # the path exports take: both windows, parity picks
    gen = torch.Generator().manual_seed(0)
    for h, w in ((7, 9), (8, 10), (7, 10), (8, 9), (1, 2), (2, 1)):
        x = torch.randn(2, 3, h, w, generator=gen)
        expected = torch.from_numpy(tf_same_pool(x.numpy()))
        assert torch.equal(pool(x), expected), (h, w)
        assert torch.equal(traced(x), expected), (h, w)
    assert not torch.equal(pool(x := torch.randn(1, 1, 8, 8, generator=gen)), torch.nn.MaxPool2d(3, 2, 1)(x))


def odd_images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((37, 53), (50, 41), (37, 53))]


def test_infer_runs_each_size_unpadded_where_padding_would_change_the_heads():
    model, cfg = loaded_model("r50_all")
    prepared = [prepare_image(im, cfg) for im in odd_images()]
    batch = batch_images([p for p, _ in prepared])  # (3, 3, 64, 64): zero padding after the mean
    valid_hw = torch.tensor([hw for _, hw in prepared])
    with torch.no_grad():
        padded = model(batch)
        heads = infer(model, batch, valid_hw)
        for b, (image, _) in enumerate(prepared):
            alone = model(torch.from_numpy(image).permute(2, 0, 1)[None].contiguous())  # TF's way: one, unpadded
            for name in HEADS:
                gh, gw = alone[name].shape[-2:]
                # float32 rounding only (oneDNN blocks a batch of 2 unlike a batch of 1)
                assert torch.allclose(heads[name][b, :, :gh, :gw], alone[name][0], atol=TOL, rtol=0)
                assert not heads[name][b, :, gh:].any() and not heads[name][b, :, :, gw:].any()
            # what infer avoids: the padded batch's heads differ from TF's inside the image
            assert float((padded["part"][b, :, :gh, :gw] - alone["part"][0]).abs().max()) > 100 * TOL


def test_predict_and_the_export_graph_give_the_unpadded_networks_joints():
    model, cfg = loaded_model("r50_all")
    images = odd_images(1)
    joints = predict_images(model, cfg, images, torch.device("cpu"))  # one batch of two sizes
    graph = InferenceGraph(model, cfg).eval()
    for image, found in zip(images, joints):
        x, (h, w) = prepare_image(image, cfg)
        with torch.no_grad():
            heads = model(torch.from_numpy(x).permute(2, 0, 1)[None].contiguous())
            exported = graph(torch.from_numpy(image)[None])[0][0].numpy()  # uint8 in, unpadded inside
        ratio = torch.tensor([[w / image.shape[1], h / image.shape[0]]], dtype=torch.float64)
        alone = single_joints(heads, torch.tensor([[h, w]]), ratio, cfg)[0]  # (K, 3)
        np.testing.assert_allclose(found, alone, atol=1e-3, rtol=0)  # pixels and scores; float32 rounding
        np.testing.assert_allclose(exported, alone, atol=1e-3, rtol=0)


def test_a_joint_count_that_disagrees_is_one_paragraph():
    cfg = fixture_cfg("r50_all", "num_joints=2", "all_joints=[[0, 1]]", "all_joints_names=[]",
                      "pairwise_predict=false")
    with pytest.raises(UserError) as e:
        init_weights(build_model(cfg), cfg)
    text = str(e.value)
    assert "predicts 3 joints" in text and "num_joints = 2" in text and "\n" not in text


def test_other_depth_width_or_layout_is_one_paragraph():
    for overrides, needle in ((["net_type=resnet_101"], "Set net_type: resnet_50"),
                              (["backbone_width=0.125"], "Set backbone_width: 0.0625"),
                              (["backbone_layout=torchvision"], "backbone_layout: slim")):
        cfg = fixture_cfg("r50_all", *overrides)
        with pytest.raises(UserError) as e:
            init_weights(build_model(cfg), cfg)
        assert needle in str(e.value) and "\n" not in str(e.value), overrides
    with pytest.raises(UserError, match="net_type is resnet_18"):  # slim has no basic blocks
        fixture_cfg("r50_all", "net_type=resnet_18")


def test_a_mobilenet_checkpoint_is_one_paragraph():
    ckpt = open_checkpoint(TF / "mobilenet_v2" / "model.ckpt")  # tools/tf_mobilenet_fixture.py
    with pytest.raises(UserError) as e:
        tf_arch(ckpt)
    text = str(e.value)
    assert "MobileNet" in text and "MobilenetV2" in text and "resnet_v1_50" in text and "\n" not in text


class Edited:
    """A checkpoint seen through a filter: names dropped (pose heads: an ImageNet checkpoint; gamma: batch_norm
    without scale) and training-state names added (optimiser slots, global_step, the ImageNet classifier)."""

    def __init__(self, ckpt, drop: str, add: dict[str, np.ndarray]):
        self.ckpt, self.drop, self.add = ckpt, drop, add
        self.path, self.version = ckpt.path, ckpt.version

    def names(self) -> list[str]:
        return sorted([n for n in self.ckpt.names() if not re.search(self.drop, n)] + list(self.add))

    def shape(self, name):
        return self.add[name].shape if name in self.add else self.ckpt.shape(name)

    def read(self, name):
        return self.add[name] if name in self.add else self.ckpt.read(name)


def test_without_gamma_or_heads_and_with_optimiser_slots():
    ckpt = open_checkpoint(TF / "r50_all" / "model.ckpt")
    slots = {"resnet_v1_50/conv1/weights/Momentum": np.zeros((7, 7, 3, 64), np.float32),
             "global_step": np.array(5, np.int64), "resnet_v1_50/logits/weights": np.zeros((1, 1, 128, 10), np.float32),
             "resnet_v1_50/conv1/BatchNorm/beta/Adam_1": np.zeros(64, np.float32),
             "extra/thing": np.zeros(2, np.float32)}
    no_gamma = Edited(ckpt, r"/gamma$", slots)
    model = build_model(fixture_cfg("r50_all"))
    report = load_tf(model, no_gamma, heads=True)
    bn = {k: m for k, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert sorted(report["gamma_one"]) == sorted(f"{k}.weight" for k in bn) and len(bn) == 1 + 16 * 3 + 4
    assert all(bool((m.weight == 1).all()) for m in bn.values())
    assert report["unused"] == ["extra/thing"]  # slots, step and classifier are ignored, not reported
    np.testing.assert_array_equal(model.bn1.bias.detach().numpy(), ckpt.read("resnet_v1_50/conv1/BatchNorm/beta"))
    imagenet = Edited(ckpt, r"^pose/", {})
    arch = tf_arch(imagenet)
    assert arch["num_joints"] is None and arch["heads"] == {} and arch["width"] == 0.0625
    fresh = build_model(fixture_cfg("r50_all"))
    before = fresh.part.deconv.weight.detach().clone()
    report = load_tf(fresh, imagenet, heads=True)
    assert {k.split(".")[0] for k in report["new"]} == {"part", "locref", "pairwise", "intermediate"}
    assert torch.equal(fresh.part.deconv.weight, before)  # heads keep their initialisation
    hwio = ckpt.read("resnet_v1_50/block4/unit_3/bottleneck_v1/conv3/weights")  # (1, 1, 32, 128)
    np.testing.assert_array_equal(fresh.layer4[2].conv3.weight.detach().numpy(), hwio.transpose(3, 2, 0, 1))


def test_layout_and_width_keys():
    for overrides, needle in ((["backbone_layout=tf"], "one of auto, torchvision, slim"),
                              (["backbone_width=0"], "backbone_width"), (["backbone_width=0.01"], "1/64"),
                              (["backbone_layout=slim", "net_type=resnet_34"], "bottleneck units only")):
        with pytest.raises(UserError, match=needle):
            config.load(None, overrides)
    # width in the torchvision layout: the stages' base depths scale, the root conv keeps 64 channels
    model = PoseNet("resnet_50", 2, width=0.25)
    assert model.conv1.out_channels == 64 and model.layer1[0].conv1.out_channels == 16
    assert (model.layer3_channels, model.out_channels) == (256, 512)  # 4 x (64, 128) at a quarter width
    assert model.part.deconv.in_channels == 512
    with torch.no_grad():
        assert tuple(model.eval()(torch.zeros(1, 3, 33, 47))["part"].shape) == (1, 2, 6, 6)


def three_joint_shards(root: Path) -> Path:
    """Synthetic stick figures with only their first 3 joints: a dataset for the fixture's 3-joint network."""
    synth.make_dataset(root / "synth", n=6, seed=5, sizes=(48, 64))
    data = scipy.io.loadmat(root / "synth" / "dataset.mat")["dataset"]
    for entry in data[0]:
        cell = entry["joints"]  # (1, 1) cell: one person, (n, 3) [id, x, y]
        cell[0, 0] = cell[0, 0][cell[0, 0][:, 0] < 3]
    scipy.io.savemat(root / "synth" / "dataset.mat", {"dataset": data})
    mat.convert(root / "synth" / "dataset.mat", root / "shards", num_joints=3, split="train=1.0", quiet=True,
                workers=1)
    return root / "shards"


@pytest.fixture(scope="module")
def slim_run(tmp_path_factory) -> tuple[Path, Path]:
    """(the run folder, the shards) of 2 training steps with the r50 fixture's pose_cfg.yaml as written
    (init_weights: model.ckpt), plus a dataset: the reference's flow."""
    tmp = tmp_path_factory.mktemp("slim_run")
    shards = three_joint_shards(tmp)
    base = [f"dataset={shards}", f"out_dir={tmp / 'run'}", f"pairwise_stats_fn={tmp / 'stats.mat'}",
            "batch_size=2", "num_workers=1", "num_threads=1", "precision=fp32", "channels_last=false"]
    write_stats(config.load(TF / "r50_all" / "pose_cfg.yaml", base), quiet=True)
    cfg = config.load(TF / "r50_all" / "pose_cfg.yaml", base)
    assert cfg.backbone_layout == "auto" and cfg.init_weights == str(TF / "r50_all" / "model.ckpt")
    train(cfg, quiet=True)
    return tmp / "run", shards


def unpadded_joints(model, cfg, image: np.ndarray) -> np.ndarray:
    """(K, 3) joints of one (H, W, 3) uint8 image from the network run on it alone, unpadded: TF's way."""
    x, (h, w) = prepare_image(image, cfg)
    with torch.no_grad():
        heads = model(torch.from_numpy(x).permute(2, 0, 1)[None].contiguous())
    ratio = torch.tensor([[w / image.shape[1], h / image.shape[0]]], dtype=torch.float64)
    return single_joints(heads, torch.tensor([[h, w]]), ratio, cfg)[0]


@pytest.mark.slow
def test_the_reference_config_trains_two_steps_from_the_tf_fixture(slim_run):
    """A slim snapshot whose frozen batch-norm statistics are TF's bit for bit, loaded back in the slim layout."""
    run, _ = slim_run
    saved = config.load(run / "config.yaml")
    assert saved.backbone_layout == "slim" and saved.backbone_width == 0.0625
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(np.isfinite(losses))
    state = checkpoint.load_snapshot(run / "snapshot-2.pt")["model"]
    tensors = np.load(TF / "r50_all" / "tensors.npz")
    unit = "resnet_v1_50/block3/unit_6/bottleneck_v1"
    for key, name in (("bn1.running_mean", "resnet_v1_50/conv1/BatchNorm/moving_mean"),
                      ("layer3.5.bn2.running_var", f"{unit}/conv2/BatchNorm/moving_variance"),
                      ("layer1.0.downsample.1.running_mean", "resnet_v1_50/block1/unit_1/bottleneck_v1/shortcut/"
                                                             "BatchNorm/moving_mean")):
        assert np.array_equal(state[key].numpy(), tensors[name]), key
    model, bound = checkpoint.load_model(run / "snapshot-2.pt", torch.device("cpu"))  # the snapshot's own config
    assert model.layout == "slim" and bound.backbone_layout == "slim" and model.width == 0.0625
    with pytest.raises(UserError, match="trained with backbone_layout = slim"):
        checkpoint.load_model(run / "snapshot-2.pt", torch.device("cpu"),
                              config.load(None, ["backbone_layout=torchvision", "net_type=resnet_50"]))


@pytest.mark.slow
def test_eval_and_analyze_give_the_unpadded_networks_joints(slim_run, tmp_path):
    """eval's DALI batches (mixed sizes, padded) and analyze's padded frames: the joints of each image run alone."""
    run, shards = slim_run
    model, cfg = checkpoint.load_model(run / "snapshot-2.pt", torch.device("cpu"))
    data = ShardDataset(shards, "train")
    images = [decode_rgb(data.image_bytes(i)) for i in range(len(data))]
    data.close()
    assert len({im.shape for im in images}) > 1  # one batch holds several sizes
    found, n = predict_split(model, cfg, shards, "train", 3, torch.device("cpu"))
    assert n == len(images)
    for i, image in enumerate(images):  # global_scale 1: sample pixels are the image's
        np.testing.assert_allclose(found[i], unpadded_joints(model, cfg, image), atol=1e-3, rtol=0)
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (50, 66, 3), dtype=np.uint8) for _ in range(3)]
    video = tmp_path / "clip.avi"
    with av.open(str(video), "w") as c:  # mpeg4 at q 1: decoded frames are what analyze sees, read back below
        stream = c.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 66, 50, "yuv420p"
        for f in frames:
            c.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(stream.encode())
    with av.open(str(video)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    # global_scale 0.75: the network sees 37 x 49 frames, padded to 48 x 64 in analyze's batches
    result = analyze(run / "config.yaml", [str(video)], checkpoint=run / "snapshot-2.pt", out_dir=tmp_path,
                     device="cpu", overrides=["global_scale=0.75"], options=Options(progress=False, batch_size=3))
    table = read_table(Path(result["rows"][0]["outputs"][0])).to_numpy().reshape(3, cfg.num_joints, 3)
    scaled = dataclasses.replace(cfg, global_scale=0.75)
    for row, image in zip(table, decoded):
        np.testing.assert_allclose(row, unpadded_joints(model, scaled, image), atol=1e-3, rtol=0)
