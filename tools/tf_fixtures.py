"""Golden TensorFlow fixtures: the reference network (TF-slim resnet_v1 + pose-tensorflow's heads) built in
TensorFlow itself, with random weights, saved as V2 and V1 checkpoints with its outputs on a few odd input sizes.

fastpose never imports TensorFlow; this script is the only place it runs. Made with Python 3.11, tensorflow-cpu 2.21.0,
tf-keras 2.21.0 and tf-slim 1.1.0 in a scratch venv:

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 tf-slim==1.1.0
    /tmp/tfvenv/bin/python tools/tf_fixtures.py --out tests/data/tf              # all committed fixtures (~1 min)
    /tmp/tfvenv/bin/python tools/tf_fixtures.py --out tests/data/tf --only r50_all
    /tmp/tfvenv/bin/python tools/tf_fixtures.py --full-size /tmp/tf_fullsize   # full-width ResNet-50/101, not committed

Each fixture folder holds:
- `model.ckpt.index` + `model.ckpt.data-00000-of-00001`: the V2 checkpoint (`tf.compat.v1.train.Saver()`);
- `model_v1.ckpt`: the same variables in the V1 format (`Saver(write_version=SaverDef.V1)`);
- `pose_cfg.yaml`: the reference's keys for this network, plus fastpose's `backbone_width`;
- `golden.npz`: `input_<i>` (1, H, W, 3) float32 network inputs (already mean-subtracted) and TF's outputs for them,
  NHWC, raw (before any sigmoid): `part_<i>` (1, h, w, K), `locref_<i>` (1, h, w, 2K), `pairwise_<i>`
  (1, h, w, 2K(K-1)), `intermediate_<i>` (1, h, w, K), each present when the network has that head;
- `tensors.npz`: every variable as TensorFlow holds it, keyed by its checkpoint name (the reader's bit-for-bit test).

The network is pose-tensorflow's: `resnet_v1_<depth>(x, global_pool=False, output_stride=16, is_training=False)` in
`resnet_arg_scope()`, and heads `pose/<head>/block4` = `slim.conv2d_transpose(3x3, stride 2, SAME, no activation)`
on block4 (the intermediate head on `block3/unit_<N>/bottleneck_v1`). The committed fixtures are 1/16 wide (base
depths 4, 8, 16, 32 instead of 64, 128, 256, 512; the root conv keeps 64 channels as in slim), built from
`resnet_v1_block` with the real scope names, so the variable names are the real scheme.

Weights are random but not trivial: convolutions He-scaled; every batch norm's moving mean and variance set from the
statistics its input really has on a calibration batch (4 other random images, perturbed), gamma and beta random, so
no batch norm is the identity and the outputs stay O(1) through 23 residual units (a float32 comparison at 1e-4 then
means something).
A `global_step` int64 variable is saved too, as in TF-slim's ImageNet checkpoints. The `dtypes` fixture is a plain
bag of variables of every dtype the reader supports (no network), V2 and V1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MEAN_PIXEL = (123.68, 116.779, 103.939)
SIZES = [(37, 53), (50, 41), (64, 64), (29, 71)]  # (H, W), odd on purpose: SAME padding differs at odd borders
FULL_SIZES = [(157, 203), (128, 96)]

# name: depth, units per block, width, joints, heads, intermediate unit
FIXTURES = {
    "r50_all": dict(depth=50, units=(3, 4, 6, 3), width=1 / 16, joints=3, locref=True, pairwise=True,
                    intermediate=2, seed=50),
    "r101_plain": dict(depth=101, units=(3, 4, 23, 3), width=1 / 16, joints=2, locref=True, pairwise=False,
                       intermediate=None, seed=101),
}
FULL = {
    "resnet50_full": dict(depth=50, units=(3, 4, 6, 3), width=1.0, joints=14, locref=True, pairwise=True,
                          intermediate=5, seed=1050),
    "resnet101_full": dict(depth=101, units=(3, 4, 23, 3), width=1.0, joints=14, locref=True, pairwise=False,
                           intermediate=12, seed=1101),
}


def import_tf():
    """TensorFlow in graph mode with tf-slim importable under tf-keras 2.x (tf-slim imports the old layer modules
    under the tf_keras.legacy_tf_layers name)."""
    import tensorflow as tf
    import tf_keras.src.legacy_tf_layers as legacy
    import tf_keras.src.legacy_tf_layers.base
    import tf_keras.src.legacy_tf_layers.convolutional
    import tf_keras.src.legacy_tf_layers.core
    import tf_keras.src.legacy_tf_layers.normalization
    import tf_keras.src.legacy_tf_layers.pooling  # noqa: F401

    sys.modules["tf_keras.legacy_tf_layers"] = legacy
    for sub in ("base", "convolutional", "core", "normalization", "pooling"):
        sys.modules[f"tf_keras.legacy_tf_layers.{sub}"] = getattr(legacy, sub)
    tf.compat.v1.disable_eager_execution()
    import tf_slim as slim
    from tf_slim.nets import resnet_v1
    return tf, slim, resnet_v1


def build(tf, slim, resnet_v1, spec: dict):
    """The graph: placeholder (B, H, W, 3) -> {head name: output tensor}."""
    scope = f"resnet_v1_{spec['depth']}"
    base = [max(1, round(d * spec["width"])) for d in (64, 128, 256, 512)]
    blocks = [resnet_v1.resnet_v1_block(f"block{i + 1}", base_depth=base[i], num_units=spec["units"][i],
                                        stride=1 if i == 3 else 2) for i in range(4)]
    x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="input")
    with slim.arg_scope(resnet_v1.resnet_arg_scope()):
        net, end_points = resnet_v1.resnet_v1(x, blocks, num_classes=None, is_training=False, global_pool=False,
                                              output_stride=16, include_root_block=True, scope=scope)

    def head(inp, name, n):
        # pose-tensorflow's prediction_layer: outside the resnet arg scope, so biases and no batch norm.
        with slim.arg_scope([slim.conv2d, slim.conv2d_transpose], padding="SAME", activation_fn=None,
                            normalizer_fn=None):
            with tf.compat.v1.variable_scope(name):
                return slim.conv2d_transpose(inp, n, kernel_size=[3, 3], stride=2, scope="block4")

    k = spec["joints"]
    out = {}
    with tf.compat.v1.variable_scope("pose"):
        out["part"] = head(net, "part_pred", k)
        if spec["locref"]:
            out["locref"] = head(net, "locref_pred", 2 * k)
        if spec["pairwise"]:
            out["pairwise"] = head(net, "pairwise_pred", 2 * k * (k - 1))
        if spec["intermediate"]:
            inter = end_points[f"{scope}/block3/unit_{spec['intermediate']}/bottleneck_v1"]
            out["intermediate"] = head(inter, "intermediate_supervision", k)
    tf.compat.v1.train.get_or_create_global_step()
    return x, out


def randomise(tf, sess, x, rng: np.random.Generator, calib: np.ndarray) -> None:
    """Random He-scaled weights; batch norms calibrated on `calib` (see the module docstring)."""
    graph = tf.compat.v1.get_default_graph()
    variables = tf.compat.v1.global_variables()
    by_name = {v.op.name: v for v in variables}
    for v in variables:
        name, shape = v.op.name, v.shape.as_list()
        if name.endswith("/weights"):
            if "pose/" in name:  # conv2d_transpose (kh, kw, out, in): each output sums ~ (3/2)^2 * in inputs
                fan_in = shape[0] * shape[1] * shape[3] / 4
            else:  # conv2d (kh, kw, in, out)
                fan_in = shape[0] * shape[1] * shape[2]
            v.load(rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32), sess)
        elif name.endswith("/biases"):
            v.load(rng.normal(0, 0.1, shape).astype(np.float32), sess)
    # Batch norms in forward order (the variables' creation order): each one's moving statistics are taken from its
    # input as the network computes it with the batch norms before it already set.
    for v in variables:
        if not v.op.name.endswith("/BatchNorm/moving_mean"):
            continue
        bn = v.op.name[: -len("/moving_mean")]
        op = next(o for o in graph.get_operations() if o.name.startswith(bn + "/") and "FusedBatchNorm" in o.type)
        pre = sess.run(op.inputs[0], {x: calib})  # (B, h, w, C) the conv output
        mean, var = pre.mean(axis=(0, 1, 2)), pre.var(axis=(0, 1, 2)) + 1e-3
        c = mean.shape[0]
        std = np.sqrt(var)
        by_name[bn + "/moving_mean"].load((mean + rng.normal(0, 0.2, c) * std).astype(np.float32), sess)
        by_name[bn + "/moving_variance"].load((var * rng.uniform(0.6, 1.6, c)).astype(np.float32), sess)
        # The last batch norm of a residual unit (conv3) is damped so that 23 units do not add up to huge values.
        lo, hi = (0.2, 0.5) if bn.endswith("conv3/BatchNorm") else (0.5, 1.5)
        by_name[bn + "/gamma"].load(rng.uniform(lo, hi, c).astype(np.float32), sess)
        by_name[bn + "/beta"].load(rng.normal(0, 0.2, c).astype(np.float32), sess)
    by_name["global_step"].load(np.int64(int(rng.integers(1000, 2_000_000))), sess)


def pose_cfg(spec: dict) -> str:
    k = spec["joints"]
    all_joints = [[0, 1]] + [[j] for j in range(2, k)] if k >= 2 else [[0]]
    lines = [
        "# A fixture of fastpose's tests (tools/tf_fixtures.py): pose-tensorflow's keys for this network.",
        f"net_type: resnet_{spec['depth']}",
        f"backbone_width: {spec['width']}",
        f"num_joints: {k}",
        f"all_joints: {all_joints}",
        f"all_joints_names: {['-'.join(f'joint{j}' for j in group) for group in all_joints]}",  # one per group
        "init_weights: model.ckpt",
        "global_scale: 1.0",
        "stride: 8.0",
        f"mean_pixel: {list(MEAN_PIXEL)}",
        "pos_dist_thresh: 17",
        f"location_refinement: {str(spec['locref']).lower()}",
        "locref_stdev: 7.2801",
        "locref_huber_loss: true",
        "locref_loss_weight: 0.05",
        f"intermediate_supervision: {str(bool(spec['intermediate'])).lower()}",
    ]
    if spec["intermediate"]:
        lines.append(f"intermediate_supervision_layer: {spec['intermediate']}")
    lines.append(f"pairwise_predict: {str(spec['pairwise']).lower()}")
    lines += ["multi_step:", "- [0.005, 2]", "display_iters: 1", "save_iters: 2"]
    return "\n".join(lines) + "\n"


def make_network(name: str, spec: dict, out: Path, sizes: list[tuple[int, int]], compress: bool = True) -> None:
    tf, slim, resnet_v1 = import_tf()
    t0 = time.time()
    rng = np.random.default_rng(spec["seed"])
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        x, heads = build(tf, slim, resnet_v1, spec)
        # 8-bit images minus the mean: what fastpose computes from an image file, so `fastpose predict` on the PNG of
        # input i must give exactly TF's outputs (tests/test_import_tf.py)
        inputs = [(rng.integers(0, 256, (1, h, w, 3)) - np.array(MEAN_PIXEL)).astype(np.float32) for h, w in sizes]
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            calib = (rng.uniform(0, 255, (4, 64, 64, 3)) - np.array(MEAN_PIXEL)).astype(np.float32)
            randomise(tf, sess, x, rng, calib)
            golden = {}
            for i, image in enumerate(inputs):
                golden[f"input_{i}"] = image
                for head, tensor in heads.items():
                    golden[f"{head}_{i}"] = sess.run(tensor, {x: image})
            variables = tf.compat.v1.global_variables()
            tf.compat.v1.train.Saver(variables).save(sess, str(folder / "model.ckpt"), write_meta_graph=False,
                                                     write_state=False)
            tf.compat.v1.train.Saver(variables, write_version=tf.compat.v1.train.SaverDef.V1).save(
                sess, str(folder / "model_v1.ckpt"), write_meta_graph=False, write_state=False)
            values = {v.op.name: sess.run(v) for v in variables}
    np.savez_compressed(folder / "golden.npz", **golden)
    # Full-size tensors (100s of MB of random floats) do not compress; saving them plainly is much faster.
    (np.savez_compressed if compress else np.savez)(folder / "tensors.npz", **values)
    (folder / "pose_cfg.yaml").write_text(pose_cfg(spec))
    stats = ", ".join(f"{k} std {float(np.std(v)):.2f}" for k, v in golden.items() if k.endswith("_0"))
    print(f"{name}: {len(values)} variables, {time.time() - t0:.1f} s; {stats}", flush=True)


def make_dtypes(out: Path) -> None:
    """Variables of every dtype the reader supports (and one string), odd shapes (scalar, empty, 1-D, 4-D), and enough
    names with a long shared prefix that the .index table has many restart points."""
    tf, _, _ = import_tf()
    rng = np.random.default_rng(7)
    folder = out / "dtypes"
    folder.mkdir(parents=True, exist_ok=True)
    values = {
        "half": rng.normal(0, 3, (3, 5)).astype(np.float16),
        "float": rng.normal(0, 1, (2, 3, 4, 5)).astype(np.float32),
        "double": rng.normal(0, 1, (7,)).astype(np.float64),
        "int32": rng.integers(-2**31, 2**31, (4, 3), dtype=np.int64).astype(np.int32),
        "int64": np.array([-2**63, -1, 0, 1, 2**63 - 1, 123456789012345], dtype=np.int64),
        "scalar": np.float32(np.pi),
        "empty": np.zeros((0, 3), np.float32),
        "special": np.array([np.inf, -np.inf, np.nan, -0.0, 1e-45, 3.4e38], np.float32),
        "uint8": rng.integers(0, 256, (9,), dtype=np.uint8),
        "bool": np.array([True, False, True]),
    }
    for i in range(300):  # a long shared prefix: keys are stored as (shared, suffix) pairs
        values[f"many/scope/with/a/long/shared/prefix/var_{i:03d}"] = rng.normal(0, 1, (i % 4 + 1,)).astype(
            np.float32)
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(v, name=k) for k, v in values.items()]
        # A string tensor: the reader lists it and refuses to read it (not in tensors.npz: numpy would pickle it).
        variables.append(tf.compat.v1.Variable(b"not a number", name="string"))
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(variables).save(sess, str(folder / "model.ckpt"), write_meta_graph=False,
                                                     write_state=False)
            tf.compat.v1.train.Saver(variables, write_version=tf.compat.v1.train.SaverDef.V1).save(
                sess, str(folder / "model_v1.ckpt"), write_meta_graph=False, write_state=False)
            held = {v.op.name: sess.run(v) for v in variables if v.op.name != "string"}
    np.savez_compressed(folder / "tensors.npz", **held)
    print(f"dtypes: {len(held)} variables", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="fixtures folder (tests/data/tf)")
    parser.add_argument("--only", nargs="*", help=f"fixtures to make (of {sorted(FIXTURES)} and dtypes)")
    parser.add_argument("--full-size", type=Path, help="folder for the full-width ResNet-50/101 (not committed)")
    args = parser.parse_args()
    if args.out:
        for name, spec in FIXTURES.items():
            if not args.only or name in args.only:
                make_network(name, spec, args.out, SIZES)
        if not args.only or "dtypes" in args.only:
            make_dtypes(args.out)
    if args.full_size:
        for name, spec in FULL.items():
            make_network(name, spec, args.full_size, FULL_SIZES, compress=False)


if __name__ == "__main__":
    main()
