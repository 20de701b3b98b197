"""Accuracy of a corpus model compiled by cimc, next to onnxruntime's, on a full labelled test set.

    .venv/bin/python examples/mnist_accuracy.py                    # mnist-8 on the 10,000 MNIST test images
    .venv/bin/python examples/mnist_accuracy.py --model resnet8    # MLPerf Tiny ResNet-8 on CIFAR-10
    .venv/bin/python examples/mnist_accuracy.py --limit 1000       # the first 1,000 test images only

The model is compiled with the Python API (``cimc.compile``) for a target preset (``isaac`` by
default), calibrated on 500 training images that are not in the test set; the test set then goes
through the reference runtime (``cimc.run``, level ``ideal``) in one call and through onnxruntime
(``cimc.compare.onnxruntime_outputs``, one inference per image). The script prints both top-1
accuracies against the labels and how often the two agree.

The models and data live in the shared test corpus, found at ``$CIMC_CORPUS`` or else at
``../shared/corpus`` next to the repository; it is not part of the repository.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import cimc
from cimc.compare import onnxruntime_outputs

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    title: str
    model: str                                  # relative to the corpus
    input: str                                  # the model's input name
    calibration: str                            # npz in the corpus's data/, key x
    test: str                                   # npz in the corpus's data/, keys x and y
    prepare: Callable[[np.ndarray], np.ndarray]  # uint8 images -> [N, *input shape] float32
    reference: str                              # onnxruntime accuracy quoted by the corpus README


def _mnist(x: np.ndarray) -> np.ndarray:        # [N,28,28] raw pixels -> [N,1,1,28,28]
    return x.astype(np.float32)[:, None, None]


def _cifar(x: np.ndarray) -> np.ndarray:        # [N,32,32,3] HWC -> [N,1,3,32,32] NCHW, raw 0..255
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)[:, None]


CASES = {
    "mnist": Case("mnist-8 (ONNX model zoo) on the MNIST test set", "models/mnist-8/model.onnx", "Input3",
                  "mnist_train_5k.npz", "mnist_test.npz", _mnist, "98.91 %"),
    "resnet8": Case("MLPerf Tiny ResNet-8 on the CIFAR-10 test set", "models/mlperf_tiny_resnet8_cifar10.onnx",
                    "input_1", "cifar10_train_1k.npz", "cifar10_test.npz", _cifar, "75.48 %"),
}


def corpus_dir() -> Path:
    """The corpus folder, or exit with status 2 and a message saying where it was looked for."""
    env = os.environ.get("CIMC_CORPUS")
    path = Path(env) if env else ROOT.parent / "shared" / "corpus"
    if not (path / "models").is_dir() or not (path / "data").is_dir():
        where = f"CIMC_CORPUS={env}" if env else f"{path} (set CIMC_CORPUS to point elsewhere)"
        print(f"{Path(sys.argv[0]).name}: error: the test corpus is not available: no models/ and data/ "
              f"in {where}. This example needs the shared corpus of models and data sets; it is not "
              f"part of the repository.", file=sys.stderr)
        sys.exit(2)
    return path


def top1(probs: np.ndarray) -> np.ndarray:
    return probs.reshape(len(probs), -1).argmax(-1)


def _spread(total: int, count: int | None) -> np.ndarray:
    """``count`` indices spread evenly over ``total`` (all for None)."""
    if count is None or count >= total:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, count).astype(np.int64))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(CASES), default="mnist", help="which corpus model (default: mnist)")
    ap.add_argument("--limit", type=int, metavar="N", help="use only the first N test images")
    ap.add_argument("--target", default="isaac", help="target preset or TOML file (default: isaac)")
    ap.add_argument("--calibration-images", type=int, default=500, metavar="N",
                    help="training images used for calibration (default: 500)")
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be at least 1")
    case = CASES[args.model]
    corpus = corpus_dir()

    # The corpus's calibration sets and CIFAR-10 test set are sorted by class: take evenly spread images.
    with np.load(corpus / "data" / case.calibration) as npz:
        calib = case.prepare(npz["x"][_spread(len(npz["x"]), args.calibration_images)])
    with np.load(corpus / "data" / case.test) as npz:
        pick = _spread(len(npz["y"]), args.limit)
        x, y = npz["x"][pick], npz["y"][pick].astype(np.int64)
    x = case.prepare(x)
    model = corpus / case.model
    print(f"{case.title}: {len(x)} test images, target {args.target}, {len(calib)} calibration images")

    began = time.perf_counter()
    program = cimc.compile(model, args.target, calibration={case.input: calib})
    compile_s = time.perf_counter() - began
    r = program.report
    print(f"compiled in {compile_s:.1f} s: {r['crossbars_used']} crossbars on {r['tiles_used']} tile(s), "
          f"makespan {r['makespan_cycles']} cycles ({r['makespan_us']:.1f} us)")

    began = time.perf_counter()
    result = cimc.run(program, {case.input: x})
    cimc_s = time.perf_counter() - began
    began = time.perf_counter()
    reference = onnxruntime_outputs(model, {case.input: x}, batched=True)
    ort_s = time.perf_counter() - began

    output = next(iter(program.outputs))
    ours, theirs = top1(result.outputs[output]), top1(reference[output])
    print(f"cimc (runtime level {result.stats['level']}): accuracy {100 * (ours == y).mean():.2f} %  "
          f"({cimc_s:.1f} s)")
    print(f"onnxruntime:                 accuracy {100 * (theirs == y).mean():.2f} %  ({ort_s:.1f} s; "
          f"the corpus README quotes {case.reference} on the full set)")
    print(f"top-1 agreement cimc vs onnxruntime: {100 * (ours == theirs).mean():.2f} % "
          f"({int((ours != theirs).sum())} of {len(x)} images differ)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except cimc.CimcError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
