"""The bundled example: a small CNN classifier that this project owns, and data to feed it.

Nothing here is third-party: the model is built with ``onnx.helper`` from a seeded numpy random
generator, and the data are synthetic.

Data (:func:`make_data`): 16x16 grey images, values in [0, 1], each holding one Gaussian "blob"
whose position encodes the class: class ``k`` puts the blob at angle ``2 pi k / 10`` on a ring
around the image centre, with random jitter, width, brightness and background noise.

Model (:func:`build`)::

    image [1,1,16,16]
      -> Conv 8x3x3 pad 1 (+bias) -> Relu -> MaxPool 2x2      [1,8,8,8]
      -> Conv 16x3x3 pad 1 (+bias) -> Relu -> MaxPool 2x2     [1,16,4,4]
      -> Flatten -> Gemm 256x10 (+bias) -> Softmax            probs [1,10]

The convolution filters are seeded random numbers (no training). Only the final Gemm is fitted,
in closed form: a ridge regression from the convolutional features of 2,000 synthetic images to
their one-hot labels. That takes a fraction of a second, is fully deterministic, and makes the
classifier meaningful (its top-1 accuracy on fresh synthetic images is far above chance), so the
demo's accuracy and top-1-agreement figures say something.

Run it directly to write the model and the data::

    python examples/build_demo_model.py out/demo
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT = "image"
OUTPUT = "probs"
SIZE = 16
CLASSES = 10
SEED = 0
OPSET = 13
IR_VERSION = 8                    # readable by every onnxruntime this project supports


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic images and their labels.

    ``x`` is float32 [n, 1, 1, 16, 16]: n samples of the model input [1, 1, 16, 16] stacked on a
    leading batch axis, which is how cimc (``cimc run --input``, ``--calibration``, ``cimc.run``)
    takes a batch. ``y`` is int64 [n].
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, size=n)
    angle = 2 * np.pi * y / CLASSES
    radius = 4.5 + rng.normal(0.0, 0.4, n)
    cy = (SIZE - 1) / 2 + radius * np.sin(angle) + rng.normal(0.0, 0.6, n)
    cx = (SIZE - 1) / 2 + radius * np.cos(angle) + rng.normal(0.0, 0.6, n)
    sigma = rng.uniform(1.0, 2.0, n)
    bright = rng.uniform(0.6, 1.0, n)
    rows = np.arange(SIZE)[None, :, None]
    cols = np.arange(SIZE)[None, None, :]
    d2 = (rows - cy[:, None, None]) ** 2 + (cols - cx[:, None, None]) ** 2
    img = bright[:, None, None] * np.exp(-d2 / (2 * sigma[:, None, None] ** 2))
    img += rng.uniform(0.0, 0.15, (n, SIZE, SIZE))
    x = np.clip(img, 0.0, 1.0).astype(np.float32)[:, None, None]
    return x, y.astype(np.int64)


# -- a float reference of the convolutional part, used only to fit the readout -------------------
def _conv_relu_pool(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3x3 convolution with pad 1, bias, ReLU and 2x2 max pooling: [n,C,H,W] -> [n,F,H/2,W/2]."""
    n, c, h, wd = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # n,c,h,w,3,3
    y = np.einsum("nchwij,fcij->nfhw", patches, w, optimize=True) + b[None, :, None, None]
    y = np.maximum(y, 0.0)
    return y.reshape(n, w.shape[0], h // 2, 2, wd // 2, 2).max(axis=(3, 5))


def _weights(seed: int = SEED) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0.0, np.sqrt(2.0 / 9), (8, 1, 3, 3))
    b1 = rng.normal(0.0, 0.05, 8)
    w2 = rng.normal(0.0, np.sqrt(2.0 / 72), (16, 8, 3, 3))
    b2 = rng.normal(0.0, 0.05, 16)
    # Fit the readout: ridge regression from features to one-hot labels, bias as an extra column.
    x, y = make_data(2000, seed + 1000)
    feats = _conv_relu_pool(_conv_relu_pool(x[:, 0].astype(np.float64), w1, b1), w2, b2).reshape(len(x), -1)
    design = np.hstack([feats, np.ones((len(x), 1))])
    onehot = np.eye(CLASSES)[y]
    ridge = 1e-2 * np.trace(design.T @ design) / design.shape[1]
    coef = np.linalg.solve(design.T @ design + ridge * np.eye(design.shape[1]), design.T @ onehot)
    coef *= 10.0                       # logits, not probabilities: a confident softmax
    return {"conv1.w": w1, "conv1.b": b1, "conv2.w": w2, "conv2.b": b2,
            "fc.w": coef[:-1], "fc.b": coef[-1]}


def build_model(seed: int = SEED) -> onnx.ModelProto:
    w = _weights(seed)
    inits = [numpy_helper.from_array(v.astype(np.float32), name) for name, v in w.items()]
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [
        helper.make_node("Conv", [INPUT, "conv1.w", "conv1.b"], ["c1"], name="conv1", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", **pool),
        helper.make_node("Conv", ["p1", "conv2.w", "conv2.b"], ["c2"], name="conv2", **conv),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="pool2", **pool),
        helper.make_node("Flatten", ["p2"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], [OUTPUT], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "cimc_demo_cnn",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [1, 1, SIZE, SIZE])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, CLASSES])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="cimc examples/build_demo_model.py")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def build(path: "str | Path", seed: int = SEED) -> Path:
    """Write the demo model to ``path`` and return the path."""
    path = Path(path)
    onnx.save(build_model(seed), path)
    return path


CALIBRATION_IMAGES = 64
TEST_IMAGES = 256


def write_files(folder: "str | Path") -> np.ndarray:
    """Write ``model.onnx``, ``calib.npz``, ``batch.npz`` and ``labels.npy`` into ``folder``.

    The npz files hold one array named like the model input (``image``), shaped
    [samples, 1, 1, 16, 16]: the convention of ``cimc compile --calibration`` and
    ``cimc run --input``. Returns the labels of the batch.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build(folder / "model.onnx")
    calib, _ = make_data(CALIBRATION_IMAGES, seed=1)
    batch, labels = make_data(TEST_IMAGES, seed=2)
    np.savez(folder / "calib.npz", **{INPUT: calib})
    np.savez(folder / "batch.npz", **{INPUT: batch})
    np.save(folder / "labels.npy", labels)
    return labels


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else Path("out/demo")
    write_files(folder)
    print(f"wrote {folder}/model.onnx, calib.npz ({CALIBRATION_IMAGES} images), "
          f"batch.npz ({TEST_IMAGES} images), labels.npy")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
