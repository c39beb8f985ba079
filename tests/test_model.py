"""The DeeperCut ResNet: output sizes, head alignment (TF SAME transposed conv), torchvision names, BN freezing."""

import math

import pytest
import torch

from fastpose import config
from fastpose.errors import UserError
from fastpose.model import HEAD_NAMES, PoseNet, TransposedHead, build_model, load_imagenet, output_size

# torchvision's documented parameter counts (ResNet*_Weights.IMAGENET1K_V1 meta "num_params") minus the classifier
# fc (2048*1000 + 1000 for the bottleneck nets, 512*1000 + 1000 for the basic ones).
TORCHVISION_TRUNK_PARAMS = {
    "resnet_18": 11689512 - 513000,
    "resnet_34": 21797672 - 513000,
    "resnet_50": 25557032 - 2049000,
    "resnet_101": 44549160 - 2049000,
    "resnet_152": 60192808 - 2049000,
}


def trunk_params(model):
    return sum(p.numel() for k, p in model.named_parameters() if k.split(".", 1)[0] not in HEAD_NAMES)


@pytest.mark.parametrize("net_type", list(TORCHVISION_TRUNK_PARAMS))
def test_every_net_type_builds_all_heads_and_matches_torchvision_size(net_type):
    torch.manual_seed(0)
    k = 3
    model = PoseNet(net_type, k, location_refinement=True, intermediate_supervision=True,
                    intermediate_supervision_layer=2, pairwise_predict=True).eval()
    assert trunk_params(model) == TORCHVISION_TRUNK_PARAMS[net_type]
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 40) * 255)
    assert tuple(out["part"].shape) == (1, k, 8, 6)  # 2*ceil(64/16), 2*ceil(40/16)
    assert tuple(out["locref"].shape) == (1, 2 * k, 8, 6)
    assert tuple(out["intermediate"].shape) == (1, k, 8, 6)
    assert tuple(out["pairwise"].shape) == (1, 2 * k * (k - 1), 8, 6)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_optional_heads_are_none_when_off():
    model = PoseNet("resnet_18", 5).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 32, 32))
    assert tuple(out["part"].shape) == (2, 5, 4, 4)
    assert out["locref"] is None and out["intermediate"] is None and out["pairwise"] is None
    assert not any(k.startswith(("locref", "pairwise", "intermediate")) for k in model.state_dict())


def test_output_size_is_twice_ceil_h_over_16_for_many_sizes():
    assert [output_size(s) for s in (368, 100, 17, 16, 1, 33)] == [46, 14, 4, 2, 2, 6]
    torch.manual_seed(0)
    model = PoseNet("resnet_18", 2).eval()
    layer4_sizes = []
    model.layer4.register_forward_hook(lambda m, i, o: layer4_sizes.append(tuple(o.shape[-2:])))
    sizes = [(368, 20), (100, 17), (17, 1), (1, 2), (15, 16), (31, 32), (33, 47), (48, 49), (64, 95), (129, 3)]
    with torch.no_grad():
        for h, w in sizes:
            out = model(torch.zeros(1, 3, h, w))
            assert tuple(out["part"].shape[-2:]) == (2 * math.ceil(h / 16), 2 * math.ceil(w / 16)), (h, w)
    # The trunk ends at stride 16: layer4 (dilated, no subsampling) gives ceil(n/16).
    assert layer4_sizes == [(math.ceil(h / 16), math.ceil(w / 16)) for h, w in sizes]


def test_layer4_is_dilated_as_torchvision_replace_stride_with_dilation():
    model = PoseNet("resnet_50", 1)
    first, second, third = model.layer4
    assert first.conv2.stride == (1, 1) and first.conv2.dilation == (1, 1)
    assert first.downsample[0].stride == (1, 1)
    assert second.conv2.dilation == (2, 2) and second.conv2.padding == (2, 2)
    assert third.conv2.dilation == (2, 2)
    assert model.layer3[0].conv2.stride == (2, 2) and model.layer3[0].conv2.dilation == (1, 1)


def test_transposed_head_matches_tf_same_alignment_by_hand():
    # TF conv2d_transpose(k=3, s=2, SAME): input cell i adds w[t] to output row 2i + t; rows >= 2n are cut.
    head = TransposedHead(1, 1)
    w = torch.arange(1.0, 10.0).view(3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]
    with torch.no_grad():
        head.deconv.weight.copy_(w.view(1, 1, 3, 3))
        head.deconv.bias.fill_(0.5)
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 0] = 1.0  # interior row, first column
    x[0, 0, 2, 2] = 10.0  # last row and column: its t=2 taps fall on the cut row/column
    out = head(x)[0, 0]
    expected = torch.full((6, 6), 0.5)
    expected[2:5, 0:3] += w  # rows 2..4, cols 0..2 from cell (1, 0)
    expected[4:6, 4:6] += 10 * w[:2, :2]  # rows 4..5, cols 4..5 from cell (2, 2); row/col 6 cut
    assert out.shape == (6, 6)
    torch.testing.assert_close(out, expected)
    # ConvTranspose2d(padding=1, output_padding=1) has the same size but keeps rows/cols 1..2n: shifted by one cell.
    shifted = torch.nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, output_padding=1)
    shifted.load_state_dict(head.deconv.state_dict())
    with torch.no_grad():
        y = shifted(x)[0, 0]
    torch.testing.assert_close(y[:5, :5], out[1:, 1:])
    assert not torch.equal(y, out)


def test_state_dict_names_are_torchvision_names():
    sd18 = PoseNet("resnet_18", 2).state_dict()
    assert list(sd18)[:12] == [
        "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
        "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias", "layer1.0.bn1.running_mean",
        "layer1.0.bn1.running_var", "layer1.0.bn1.num_batches_tracked",
    ]  # fmt: skip
    assert "layer1.0.downsample.0.weight" not in sd18 and "layer1.0.conv3.weight" not in sd18
    assert tuple(sd18["layer2.0.downsample.0.weight"].shape) == (128, 64, 1, 1)
    assert tuple(sd18["layer4.1.conv2.weight"].shape) == (512, 512, 3, 3)
    assert tuple(sd18["part.deconv.weight"].shape) == (512, 2, 3, 3)
    sd50 = PoseNet("resnet_50", 2).state_dict()
    assert tuple(sd50["layer1.0.conv1.weight"].shape) == (64, 64, 1, 1)
    assert tuple(sd50["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1)
    assert tuple(sd50["layer1.0.downsample.1.running_mean"].shape) == (256,)
    assert tuple(sd50["layer4.2.conv3.weight"].shape) == (2048, 512, 1, 1)
    assert tuple(sd50["layer4.2.bn3.running_var"].shape) == (2048,)
    assert "layer4.3.conv1.weight" not in sd50 and "fc.weight" not in sd50


def test_freeze_bn_keeps_running_stats_and_trains_affine():
    torch.manual_seed(0)
    model = PoseNet("resnet_18", 2, freeze_bn=True)
    model.train()
    assert model.training and model.part.training and not model.bn1.training and not model.layer3[1].bn2.training
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    out = model(torch.rand(2, 3, 48, 48) * 255)
    out["part"].sum().backward()
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert model.bn1.weight.requires_grad and model.bn1.weight.grad is not None
    assert model.bn1.weight.grad.abs().sum() > 0

    model = PoseNet("resnet_18", 2, freeze_bn=False).train()
    assert model.bn1.training
    mean0 = model.bn1.running_mean.clone()
    model(torch.rand(2, 3, 48, 48) * 255)
    assert not torch.equal(mean0, model.bn1.running_mean)
    assert model.bn1.num_batches_tracked.item() == 1


def test_input_mean_subtracted_is_divided_by_imagenet_std():
    # The pipeline subtracts mean_pixel; the model only rescales by torchvision's std (its weights expect it).
    model = PoseNet("resnet_18", 1).eval()
    seen = []
    model.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    image = torch.zeros(1, 3, 16, 16)
    image[0, :, 3, 5] = torch.tensor([0.229 * 255, 0.0, -2 * 0.225 * 255])
    with torch.no_grad():
        model(image)
    torch.testing.assert_close(seen[0][0, :, 3, 5], torch.tensor([1.0, 0.0, -2.0]))
    torch.testing.assert_close(seen[0][0, 0, 0, 0], torch.tensor(0.0))


def test_head_init_is_small_normal_with_zero_bias():
    torch.manual_seed(0)
    model = PoseNet("resnet_50", 14, location_refinement=True)
    w = model.part.deconv.weight
    assert abs(w.std().item() - 0.01) < 0.0005 and abs(w.mean().item()) < 0.0005
    assert torch.count_nonzero(model.part.deconv.bias) == 0 and torch.count_nonzero(model.locref.deconv.bias) == 0


def test_build_model_from_config():
    cfg = config.load(None, net_type="resnet_18", num_joints=4, location_refinement=True,
                      intermediate_supervision=True, intermediate_supervision_layer=2, freeze_bn=False)
    model = build_model(cfg)
    assert model.locref is not None and model.intermediate_index == 1 and model.pairwise is None
    assert not model.freeze_bn
    with pytest.raises(UserError, match="num_joints"):
        build_model(config.load(None, net_type="resnet_18"))


def test_load_imagenet_round_trip_reports_missing_and_unexpected(tmp_path):
    torch.manual_seed(1)
    source = PoseNet("resnet_18", 2)
    state = {k: v for k, v in source.state_dict().items() if k.split(".", 1)[0] not in HEAD_NAMES}
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    state["extra.scale"] = torch.ones(3)
    del state["layer4.1.bn2.running_var"]
    del state["bn1.num_batches_tracked"]  # older torchvision files have no counters: not reported
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)

    torch.manual_seed(2)
    target = PoseNet("resnet_18", 2)
    head_before = target.part.deconv.weight.clone()
    var_before = target.layer4[1].bn2.running_var.clone()
    report = load_imagenet(target, path)
    assert report == {"missing": ["layer4.1.bn2.running_var"], "unexpected": ["extra.scale"]}
    loaded = target.state_dict()
    for key in ("conv1.weight", "layer3.1.conv2.weight", "layer2.0.downsample.1.running_mean", "bn1.bias"):
        assert torch.equal(loaded[key], state[key]), key
    assert torch.equal(target.part.deconv.weight, head_before)  # the heads are new: untouched
    assert torch.equal(target.layer4[1].bn2.running_var, var_before)


def test_load_imagenet_bad_files_are_user_errors(tmp_path):
    model = PoseNet("resnet_18", 1)
    with pytest.raises(UserError, match="does not exist"):
        load_imagenet(model, tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="could not be read"):
        load_imagenet(model, bad)
    torch.save({"something": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(UserError, match="no key of a torchvision ResNet"):
        load_imagenet(model, tmp_path / "foreign.pth")
    # resnet_50 weights into resnet_18: same key, other shape -> names the key and both shapes.
    torch.save({"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)}, tmp_path / "r50.pth")
    with pytest.raises(UserError, match=r"layer1.0.conv1.weight.*\(64, 64, 1, 1\).*\(64, 64, 3, 3\)"):
        load_imagenet(model, tmp_path / "r50.pth")
