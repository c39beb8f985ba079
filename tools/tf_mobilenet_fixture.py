"""A tiny TensorFlow checkpoint named as DeepLabCut 2.x's MobileNetV2 pose models, for fastpose's tests.

    /tmp/tfvenv/bin/python tools/tf_mobilenet_fixture.py   # writes tests/data/tf/mobilenet_v2/model.ckpt.{index,data-*}

A few variables under DeepLabCut's scopes (`MobilenetV2/Conv/...`, `MobilenetV2/expanded_conv/...`, the pose head
`pose/part_pred/block4`), shrunk to a few channels: fastpose must refuse it with one paragraph (fastpose.tfweights),
which needs only the names. TensorFlow writes it (tensorflow-cpu 2.21, as tools/tf_fixtures.py); it is not needed at
test time.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "tf" / "mobilenet_v2"
# name -> shape: the first layers of DeepLabCut's mobilenet_v2_1.0 (at 4 channels) and its part head for 2 joints
VARIABLES = {
    "MobilenetV2/Conv/weights": (3, 3, 3, 4),
    "MobilenetV2/Conv/BatchNorm/gamma": (4,),
    "MobilenetV2/Conv/BatchNorm/beta": (4,),
    "MobilenetV2/Conv/BatchNorm/moving_mean": (4,),
    "MobilenetV2/Conv/BatchNorm/moving_variance": (4,),
    "MobilenetV2/expanded_conv/depthwise/depthwise_weights": (3, 3, 4, 1),
    "MobilenetV2/expanded_conv/project/weights": (1, 1, 4, 4),
    "pose/part_pred/block4/weights": (3, 3, 2, 4),
    "pose/part_pred/block4/biases": (2,),
}


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # heavy and optional: only this generator needs it

    tf.compat.v1.disable_eager_execution()
    rng = np.random.default_rng(0)
    for name, shape in VARIABLES.items():
        tf.compat.v1.get_variable(name, initializer=rng.normal(0, 0.1, shape).astype(np.float32))
    tf.compat.v1.train.get_or_create_global_step()
    OUT.mkdir(parents=True, exist_ok=True)
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(sess, str(OUT / "model.ckpt"), write_meta_graph=False)
    (OUT / "checkpoint").unlink(missing_ok=True)  # TF's bookkeeping file, not part of the fixture
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
