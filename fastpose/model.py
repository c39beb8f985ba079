"""The DeeperCut network: a ResNet backbone at output stride 16 and transposed-convolution heads at stride 8.

Two layouts of the same backbone (`backbone_layout`), with the same module and parameter names, so one PoseNet serves
train, eval, predict, analyze and export: `torchvision` (below) and `slim`, TensorFlow-slim's resnet_v1 as the reference
ran it (see "The slim layout"). `backbone_width` multiplies the four stages' base depths 64, 128, 256, 512 (the root
conv keeps 64 channels, as in slim) in both layouts.

The torchvision layout: ResNet-18/34/50/101/152 with torchvision's module names (conv1, bn1, layer1..layer4, blocks with
conv1/bn1/conv2/bn2[/conv3/bn3]/downsample.0/downsample.1), so `init_weights:` loads torchvision's ImageNet `.pth`
directly (`load_imagenet`); torchvision itself is not a dependency. As in the reference (TF-slim resnet_v1 with
output_stride 16), the last stage does not subsample: layer4 runs at stride 1 with its 3x3 convolutions dilated by 2
(torchvision's `replace_stride_with_dilation=[False, False, True]`: layer4[0] keeps dilation 1, the later blocks use 2).

Sizes: every stride-2 step of torchvision's ResNet (7x7/2 conv pad 3, 3x3/2 max-pool pad 1, 3x3/2 conv pad 1, 1x1/2
downsample) maps n -> ceil(n/2), and ceil(ceil(n/a)/b) = ceil(n/(ab)), so the backbone gives exactly ceil(H/16) for any
H with no extra padding. The heads double that: output = 2*ceil(H/16) per side (368 -> 46, 100 -> 14, 17 -> 4).

Head alignment: the reference's heads are TF `conv2d_transpose(kernel 3, stride 2, padding SAME)`. TF computes SAME for
the matching forward convolution (2n -> n) with total padding 1, all of it after the data (pad_before = total // 2 = 0),
so input cell i adds w[t] to output row 2i + t (t = 0, 1, 2) and the row 2n of the full (2n+1)-long transposed output is
cut. PyTorch's ConvTranspose2d(padding=1, output_padding=1) instead cuts row 0 and keeps rows 1..2n: the same size but
shifted by one output cell (8 input pixels). TransposedHead uses padding 0 and drops the last row and column.

Input: `forward(images)` takes what the pipeline gives, RGB with mean_pixel subtracted (as the reference), and divides
by torchvision's per-channel std (0.229, 0.224, 0.225) * 255, because torchvision's ImageNet weights were trained on
std-scaled inputs (the reference's TF-slim weights were not). With frozen batch-norm statistics, inputs ~57x too large
would wreck the pretrained features.

The slim layout (`tf_slim/nets/resnet_v1.py` and `resnet_utils.py` with `global_pool=False, output_stride=16`, the
reference's and DeepLabCut 2.x's network; ResNet-50/101/152 only, slim has no basic blocks). Its numerics differ from
torchvision's, so TF weights (`fastpose.tfweights`) give TF's outputs only in this layout:
- Root: `conv2d_same(64, 7, stride 2)` pads 3 on each side explicitly, as torchvision's conv1; then `max_pool2d(3x3,
  stride 2)` with TF's SAME padding, which depends on the size m: (0 before, 1 after) when m is even, (1, 1) when odd
  (torchvision always pads 1, 1). Padded cells never win (-inf).
- Bottleneck v1 units (module names as torchvision's Bottleneck: conv1 1x1, conv2 3x3, conv3 1x1, bn1..3; TF-slim
  `bottleneck_v1/{conv1,conv2,conv3}` and `shortcut`): a block subsamples in its LAST unit (torchvision: the first);
  a strided 3x3 is `conv2d_same` (explicit symmetric padding (k_eff - 1) // 2 = 1, then VALID), an atrous 3x3 at
  rate r is SAME (r on each side). The shortcut is a 1x1 conv + BN when the depth changes (`downsample`, with the
  unit's stride: 1 except in a one-unit block), else `max_pool 1x1 stride s`: plain subsampling x[::s, ::s].
- output_stride 16: block1 and block2 subsample in their last unit (stride 8, then 16); block3 then runs entirely at
  stride 16 and rate 1 (its last unit's stride 2 turns into rate 2 for what follows), block4 at rate 2.
- Batch norm eps 1e-5 (`resnet_arg_scope`'s batch_norm_epsilon), as torch's default; inputs are RGB minus mean_pixel
  only, no std division (the reference fed `image - mean_pixel` to the slim weights).
Every stride-2 step still maps n -> ceil(n/2), so the heads are 2*ceil(H/16) as in the torchvision layout.

Batch padding: TF ran each image at its own size. The slim layout's max-pool padding depends on the parity of the size
and every SAME padding sees zeros where a padded batch holds activations of the padding, so no padding of the input
reproduces TF's outputs near the bottom and right borders (or, through the pool's parity, anywhere). `infer` is the one
decision for inference (predict, eval, analyze, fit-assembly; export feeds unpadded inputs, `runs_unpadded`): the slim
layout runs every group of equal-size images cropped to their size; the torchvision layout runs the padded batch it
was trained on. Training pads batches in both layouts (the losses ignore padding cells).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastpose.config import BACKBONE_LAYOUTS
from fastpose.errors import UserError, cause

# torchvision's ImageNet std per RGB channel, in 0..255 units (its weights expect (x/255 - mean) / std).
IMAGENET_STD_255 = (0.229 * 255, 0.224 * 255, 0.225 * 255)

# The heads' module names: their keys are new in a model loaded from ImageNet weights.
HEAD_NAMES = ("part", "locref", "pairwise", "intermediate")

# Backbone layouts a PoseNet is built in: the config's, less "auto", which is resolved before building (build_model).
LAYOUTS = tuple(layout for layout in BACKBONE_LAYOUTS if layout != "auto")
# Base depth (bottleneck width) of the four stages at backbone_width 1; bottleneck outputs are 4x that.
BASE_DEPTHS = (64, 128, 256, 512)

# (block kind, blocks per stage) for each net_type, as in the ResNet paper / torchvision.
ARCHS = {
    "resnet_18": ("basic", [2, 2, 2, 2]),
    "resnet_34": ("basic", [3, 4, 6, 3]),
    "resnet_50": ("bottleneck", [3, 4, 6, 3]),
    "resnet_101": ("bottleneck", [3, 4, 23, 3]),
    "resnet_152": ("bottleneck", [3, 8, 36, 3]),
}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride and the dilation, as torchvision's "v1.5"), 1x1 expand (ResNet-50+).

    Also TF-slim's bottleneck_v1: there a strided unit without a depth change has no downsample and its shortcut is
    the input subsampled (`max_pool 1x1 stride s`); in torchvision every strided unit has a downsample."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            identity = self.downsample(x)
        else:  # (B, C, ceil(H/s), ceil(W/s)): slim's 1x1 max-pool subsampling (s = 1: the input itself); a pool, not
            # x[::s, ::s], so that traced sizes have the strided conv's formula floor((H - 1) / s) + 1
            identity = x if self.stride == 1 else F.max_pool2d(x, 1, self.stride)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class SamePool(nn.Module):
    """TF's max_pool2d(3x3, stride 2, padding SAME) on any size: per axis of size m, pad (m % 2) before and 1 after
    with -inf (TF: total max(3 - s, 0) or max(3 - m % s, 0), the smaller half before), then a VALID pool.

    Traced (torch.export, ONNX, TorchScript, torch.compile) a pad that depends on the parity gives sizes the symbolic
    shape engine cannot compare, so there each axis is pooled both ways, windows [2i - 1, 2i + 1] (odd m) and [2i,
    2i + 2] (even m), both of size ceil(m/2), and the parity picks one (max pooling is separable, so per axis)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return self._axis(self._axis(x, 2), 3)
        h, w = x.shape[-2:]
        x = F.pad(x, (w % 2, 1, h % 2, 1), value=float("-inf"))  # (B, C, H + 1 + H % 2, W + 1 + W % 2)
        return F.max_pool2d(x, 3, 2)  # (B, C, ceil(H/2), ceil(W/2))

    @staticmethod
    def _axis(x: torch.Tensor, dim: int) -> torch.Tensor:
        """(B, C, H, W) pooled 3 / stride 2 along dim (2: rows, 3: columns) with TF's SAME windows."""
        rows = dim == 2
        kernel, stride = ((3, 1), (2, 1)) if rows else ((1, 3), (1, 2))
        centred = F.max_pool2d(x, kernel, stride, padding=(1, 0) if rows else (0, 1))  # pads count as -inf
        shifted = F.max_pool2d(F.pad(x, (0, 0, 0, 2) if rows else (0, 2), value=float("-inf")), kernel, stride)
        odd = torch.remainder(torch.scalar_tensor(x.shape[dim], dtype=torch.int64, device=x.device), 2) == 1
        return torch.where(odd, centred, shifted)


def stage_depths(width: float) -> list[int]:
    """Base depths of the four stages at a backbone_width: round(d * width), at least 1 ((4, 8, 16, 32) at 1/16)."""
    return [max(1, round(d * width)) for d in BASE_DEPTHS]


class ResNet(nn.Module):
    """ResNet trunk without the classifier at output stride 16, in one of LAYOUTS. Names match torchvision's."""

    def __init__(self, net_type: str, layout: str = "torchvision", width: float = 1.0):
        super().__init__()
        if net_type not in ARCHS:
            raise ValueError(f"net_type {net_type!r}: allowed values are {', '.join(ARCHS)}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r}: allowed values are {', '.join(LAYOUTS)}")
        kind, layers = ARCHS[net_type]
        if layout == "slim" and kind != "bottleneck":
            raise ValueError(f"the slim layout has bottleneck units only; {net_type} has basic blocks")
        block = BasicBlock if kind == "basic" else Bottleneck
        self.layout = layout
        self.width = width
        depths = stage_depths(width)
        self.inplanes = 64
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)  # = slim's conv2d_same(7, stride 2): pads 3, 3
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        if layout == "torchvision":
            self.maxpool = nn.MaxPool2d(3, 2, padding=1)
            self.layer1 = self._make_layer(block, depths[0], layers[0], stride=1, dilate=False)
            self.layer2 = self._make_layer(block, depths[1], layers[1], stride=2, dilate=False)
            self.layer3 = self._make_layer(block, depths[2], layers[2], stride=2, dilate=False)
            self.layer4 = self._make_layer(block, depths[3], layers[3], stride=2, dilate=True)
        else:
            self.maxpool = SamePool()
            # slim's stack_blocks_dense with output_stride 16 (4 after the root): (stride, rate) of every unit.
            current, rate, plan = 4, 1, []
            for units, block_stride in zip(layers, (2, 2, 2, 1)):
                stage = []
                for i in range(units):
                    unit_stride = block_stride if i == units - 1 else 1
                    if current == 16:  # target reached: atrous from here on, the stride multiplies the rate
                        stage.append((1, rate))
                        rate *= unit_stride
                    else:
                        stage.append((unit_stride, 1))
                        current *= unit_stride
                plan.append(stage)
            self.layer1, self.layer2, self.layer3, self.layer4 = (
                self._make_slim_layer(depth, stage) for depth, stage in zip(depths, plan))
        self.layer3_channels = depths[2] * block.expansion
        self.out_channels = depths[3] * block.expansion

    def _make_slim_layer(self, depth: int, units: list[tuple[int, int]]) -> nn.Sequential:
        """One slim block: bottleneck_v1 units of base depth `depth` with the (stride, rate) of `units`; a unit whose
        input depth differs from its output's (4 * depth) gets a 1x1 conv + BN shortcut with its stride."""
        blocks = []
        for stride, rate in units:
            downsample = None
            out = depth * Bottleneck.expansion
            if self.inplanes != out:
                downsample = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            blocks.append(Bottleneck(self.inplanes, depth, stride, rate, downsample))
            self.inplanes = out
        return nn.Sequential(*blocks)

    def _make_layer(self, block, planes: int, blocks: int, stride: int, dilate: bool) -> nn.Sequential:
        # With dilate, the stage's stride becomes dilation: the first block keeps the previous dilation (its 3x3 sees
        # neighbours 1 apart on the input grid, as the strided conv did); later blocks, which ran on the twice coarser
        # grid, see neighbours `stride` apart.
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        blocks_ = [block(self.inplanes, planes, stride, previous_dilation, downsample)]
        self.inplanes = planes * block.expansion
        blocks_ += [block(self.inplanes, planes, 1, self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*blocks_)


class TransposedHead(nn.Module):
    """3x3 stride-2 transposed convolution with bias and no activation, aligned as TF's SAME (see the module doc)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.deconv(x)[..., : 2 * h, : 2 * w]  # (B, C, 2h+1, 2w+1) -> (B, C, 2h, 2w): drop TF's cut row/col


class PoseNet(ResNet):
    """ResNet backbone + part / locref / pairwise / intermediate heads. forward returns a dict of (B, C, h, w).

    The trunk's modules sit at the top level (state_dict keys 'conv1.weight', 'layer1.0.conv1.weight', ... exactly as
    torchvision's), the heads beside them ('part.deconv.weight', 'locref.deconv.bias', ...).
    """

    def __init__(self, net_type: str, num_joints: int, location_refinement: bool = False,
                 intermediate_supervision: bool = False, intermediate_supervision_layer: int = 12,
                 pairwise_predict: bool = False, freeze_bn: bool = True, layout: str = "torchvision",
                 width: float = 1.0):
        super().__init__(net_type, layout, width)
        if num_joints <= 0:
            raise ValueError(f"num_joints must be positive, got {num_joints}")
        self.net_type = net_type
        self.num_joints = k = num_joints
        self.freeze_bn = freeze_bn
        c = self.out_channels
        self.part = TransposedHead(c, k)
        self.locref = TransposedHead(c, 2 * k) if location_refinement else None
        self.pairwise = TransposedHead(c, 2 * k * (k - 1)) if pairwise_predict else None
        self.intermediate = None
        self.intermediate_index = None
        if intermediate_supervision:
            n3 = len(self.layer3)
            if not 1 <= intermediate_supervision_layer <= n3:
                raise ValueError(f"intermediate_supervision_layer must be in 1..{n3} for {net_type}, "
                                 f"got {intermediate_supervision_layer}")
            self.intermediate_index = intermediate_supervision_layer - 1
            self.intermediate = TransposedHead(self.layer3_channels, k)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD_255, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # Backbone: He (kaiming) normal for ReLU nets, BN scale 1 / shift 0 (replaced by ImageNet weights when given).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Heads: N(0, 0.01) weights and zero bias, so every head starts out predicting ~0 (sigmoid 0.5 for parts,
        # zero offsets for locref/pairwise) with small gradients into the pretrained trunk; 0.01 is also about the
        # std of TF-slim's default Xavier initialiser for these shapes: sqrt(2 / (9 * (K + 2048))) = 0.0104 at K=14.
        for head in (self.part, self.locref, self.pairwise, self.intermediate):
            if head is not None:
                nn.init.normal_(head.deconv.weight, 0.0, 0.01)
                nn.init.zeros_(head.deconv.bias)

    def train(self, mode: bool = True) -> PoseNet:
        """As nn.Module.train, but with freeze_bn the BN layers stay in eval mode: their running statistics are
        neither used from the batch nor updated (the reference froze them); their scale and shift still train."""
        super().train(mode)
        if self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """images: (B, 3, H, W) RGB minus mean_pixel -> heads at 2*ceil(H/16) x 2*ceil(W/16)."""
        # (B, 3, H, W); slim weights were trained on mean-subtracted inputs as they are
        x = images / self.pixel_std.to(images.dtype) if self.layout == "torchvision" else images
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        x = self.layer2(self.layer1(x))  # (B, C2, H/8, W/8)
        intermediate = None
        for i, block in enumerate(self.layer3):  # (B, C3, H/16, W/16)
            x = block(x)
            if i == self.intermediate_index:
                intermediate = self.intermediate(x)  # (B, K, H/8, W/8)
        x = self.layer4(x)  # (B, C4, H/16, W/16): dilated, no subsampling
        return {
            "part": self.part(x),  # (B, K, h, w)
            "locref": self.locref(x) if self.locref is not None else None,  # (B, 2K, h, w)
            "intermediate": intermediate,  # (B, K, h, w)
            "pairwise": self.pairwise(x) if self.pairwise is not None else None,  # (B, 2K(K-1), h, w)
        }


def output_size(size: int) -> int:
    """Side length of the head outputs for an input side length: 2 * ceil(size / 16)."""
    return 2 * (-(-size // 16))


def layout_of(backbone_layout: str) -> str:
    """The layout a config's backbone_layout builds, "auto" as torchvision. Training resolves auto before
    (`fastpose.tfweights.resolve_layout`: slim for TF init_weights) and saves the result, so an "auto" that reaches
    here is a config without TF weights or a snapshot older than the key: both torchvision."""
    return "slim" if backbone_layout == "slim" else "torchvision"


def build_model(cfg) -> PoseNet:
    """The network a Config describes (heads from num_joints, location_refinement, pairwise_predict, ...)."""
    if cfg.num_joints <= 0:
        raise UserError(f"num_joints is {cfg.num_joints}: the network needs the number of joints. Set num_joints in "
                        f"the config or let the dataset manifest fill it (config.with_joints) before building.")
    return PoseNet(cfg.net_type, cfg.num_joints, location_refinement=cfg.location_refinement,
                   intermediate_supervision=cfg.intermediate_supervision,
                   intermediate_supervision_layer=cfg.intermediate_supervision_layer,
                   pairwise_predict=cfg.pairwise_predict, freeze_bn=cfg.freeze_bn,
                   layout=layout_of(cfg.backbone_layout), width=cfg.backbone_width)


def runs_unpadded(model: nn.Module) -> bool:
    """Whether inference must see every image at its own size (the slim layout, see the module doc) rather than the
    padded batch. model: a PoseNet, or one wrapped by DistributedDataParallel / torch.compile."""
    net = getattr(model, "module", model)  # DistributedDataParallel; torch.compile forwards attribute reads
    return getattr(net, "layout", "torchvision") == "slim"


def infer(model: nn.Module, images: torch.Tensor, valid_hw: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """The heads of an inference batch as its layout defines them: images (B, 3, H, W) zero-padded after the mean,
    valid_hw (B, 2) each image's unpadded (h, w). torchvision layout: model(images). slim layout: each group of
    equal-size images runs cropped to that size (TF's outputs), its heads written into a zero grid of the padded
    batch's size (B, C, 2*ceil(H/16), 2*ceil(W/16)); the cells beyond an image's own heads are 0 and outside the
    image (`fastpose.decode.valid_grid` never reads them)."""
    sizes = [tuple(s) for s in valid_hw.tolist()]
    h_pad, w_pad = images.shape[-2:]
    if not runs_unpadded(model) or all(s == (h_pad, w_pad) for s in sizes):
        return model(images)
    # keep the layout the caller chose (channels_last where it is faster); a crop of a channels_last tensor is not
    fmt = torch.channels_last if (images.is_contiguous(memory_format=torch.channels_last)
                                  and not images.is_contiguous()) else torch.contiguous_format
    out: dict[str, torch.Tensor | None] = {}
    for h, w in dict.fromkeys(sizes):  # distinct sizes in order of appearance
        rows = torch.tensor([i for i, s in enumerate(sizes) if s == (h, w)], device=images.device)
        heads = model(images.index_select(0, rows)[:, :, :h, :w].contiguous(memory_format=fmt))
        for name, value in heads.items():  # (n, C, 2*ceil(h/16), 2*ceil(w/16)) each
            if value is None:
                out[name] = None
                continue
            if name not in out:
                out[name] = value.new_zeros(len(sizes), value.shape[1], output_size(h_pad), output_size(w_pad))
            out[name][rows, :, : value.shape[-2], : value.shape[-1]] = value
    return out


def load_imagenet(model: PoseNet, path: str | Path) -> dict[str, list[str]]:
    """Load a torchvision ImageNet ResNet state_dict into the backbone.

    Returns {"missing": backbone keys the file lacks, "unexpected": file keys the backbone lacks}; the classifier
    (fc.*) is expected to be unused and not listed, nor are the BN `num_batches_tracked` counters (older torchvision
    files lack them; they play no role with a fixed momentum). The heads are new and never listed. Raises UserError for
    a missing or unreadable file, a file that is not a ResNet state_dict, or a tensor of the wrong shape (another
    net_type's weights).
    """
    path = Path(path)
    fix = "Run `fastpose weights download resnet50` (or resnet101 / resnet152) and point init_weights at its file."
    if not path.is_file():
        raise UserError(f"init_weights: {path} {'is a folder, not a file' if path.is_dir() else 'does not exist'}. "
                        f"{fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise UserError(f"init_weights: {path} could not be read as a PyTorch weights file ({cause(e)}). It may be "
                        f"truncated or another kind of file; download it again. {fix}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"init_weights: {path} is not a state_dict of tensors (a torchvision ResNet .pth). "
                        f"To continue a fastpose run use `fastpose train --resume`, not init_weights. {fix}")
    own = {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] not in HEAD_NAMES}
    unexpected = sorted(k for k in state if k not in own and not k.startswith("fc."))
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    usable = {k: v for k, v in state.items() if k in own}
    if not usable:
        raise UserError(f"init_weights: {path} has no key of a torchvision ResNet (first keys: "
                        f"{', '.join(list(state)[:3])}). {fix}")
    for key, value in usable.items():
        if value.shape != own[key].shape:
            raise UserError(f"init_weights: {path}: '{key}' has shape {tuple(value.shape)} but {model.net_type} "
                            f"needs {tuple(own[key].shape)}; the file holds another ResNet depth. Set net_type to "
                            f"match the file, or download the weights for {model.net_type}.")
    model.load_state_dict(usable, strict=False)
    return {"missing": missing, "unexpected": unexpected}
