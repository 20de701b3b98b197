"""The shared test corpus, as far as a sweep needs it: where it is, its labelled models, their data.

A spec names a corpus model (``corpus = "resnet8"``) instead of a path so that an example
spec runs from a fresh checkout next to the corpus, with the right preprocessing, the
calibration set and the test set of the model, without a line of numpy from the user. The
corpus lives outside the repository: ``$CIMC_CORPUS``, else ``../shared/corpus`` next to
the source checkout (the layout the tests and benchmarks use).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cimc.errors import CimcError

#: ``../shared/corpus`` next to the source checkout this module belongs to.
DEFAULT_CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
#: Calibration samples taken (spread evenly) from a corpus model's calibration set.
CALIBRATION_SAMPLES = 500


@dataclass(frozen=True)
class Dataset:
    """A labelled corpus data set: its test file, its calibration file, and how raw images
    (uint8) become model inputs."""
    test: str
    calibration: str
    prepare: str


@dataclass(frozen=True)
class CorpusModel:
    path: str                       # relative to the corpus
    input: str                      # the model's (only) input
    dataset: str                    # key of DATASETS
    input_shapes: tuple[str, ...] = ()


DATASETS = {
    "mnist": Dataset("data/mnist_test.npz", "data/mnist_train_5k.npz", "mnist_raw"),
    "cifar": Dataset("data/cifar10_test.npz", "data/cifar10_train_1k.npz", "cifar_raw"),
    "cifar_winml": Dataset("data/cifar10_test.npz", "data/cifar10_train_1k.npz", "cifar_winml"),
}

#: The corpus models with labelled test data (see the corpus README for what each one is).
MODELS = {
    "mnist-8": CorpusModel("models/mnist-8/model.onnx", "Input3", "mnist"),
    "mnist-8_opset13": CorpusModel("models/mnist-8_opset13.onnx", "Input3", "mnist"),
    "mnist-8_int8_qdq": CorpusModel("models/mnist-8_int8_qdq.onnx", "Input3", "mnist"),
    "mnist-8_int8_qop": CorpusModel("models/mnist-8_int8_qop_std.onnx", "Input3", "mnist"),
    "resnet8": CorpusModel("models/mlperf_tiny_resnet8_cifar10.onnx", "input_1", "cifar"),
    "resnet8_int8_qdq": CorpusModel("models/resnet8_int8_qdq.onnx", "input_1", "cifar"),
    "resnet8_int8_qop": CorpusModel("models/resnet8_int8_qop_std.onnx", "input_1", "cifar"),
    "winml_cifar10": CorpusModel("models/winml_cifar10_ImageClassifier.onnx", "modelInput", "cifar_winml",
                                 ("modelInput=1x3x32x32",)),
}


def corpus_root() -> Path:
    """``$CIMC_CORPUS`` if set, else ``../shared/corpus``; a clear error when neither exists."""
    configured = os.environ.get("CIMC_CORPUS")
    root = Path(configured) if configured else DEFAULT_CORPUS
    if not root.is_dir():
        where = f"CIMC_CORPUS={configured}" if configured else f"{DEFAULT_CORPUS} (the default)"
        raise CimcError(f"the shared test corpus is not available: {where} does not exist; set CIMC_CORPUS "
                        f"to the corpus folder, or name the model by path")
    return root


def spread(total: int, count: int | None) -> np.ndarray:
    """Indices of ``count`` samples spread evenly over ``total`` (all of them for None).

    The corpus's CIFAR-10 test set and both calibration sets are sorted by class (the
    first 1,000 CIFAR-10 test images are all airplanes), so a leading slice is a biased
    sample; evenly spaced indices cover every class.
    """
    if count is None or count >= total:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, count).astype(np.int64))


def prepare(kind: str, x: np.ndarray) -> np.ndarray:
    """Raw uint8 corpus images to float32 model inputs with a leading sample axis."""
    if kind == "mnist_raw":                      # [N,28,28] -> [N,1,1,28,28], pixels 0..255
        return x.astype(np.float32)[:, None, None]
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)[:, None]   # [N,1,3,32,32]
    if kind == "cifar_raw":
        return nchw
    if kind == "cifar_winml":                    # (x/255 - 0.5) / 0.5
        return (nchw / 255 - 0.5) / 0.5
    raise ValueError(f"unknown corpus preparation {kind!r}")
