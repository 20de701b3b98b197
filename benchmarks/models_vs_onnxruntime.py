"""Real models through cimc, measured against onnxruntime (and against onnxruntime's own int8).

    .venv/bin/python benchmarks/models_vs_onnxruntime.py                  # everything, full test sets
    .venv/bin/python benchmarks/models_vs_onnxruntime.py --models mnist-8,resnet8 --limit 1000 --no-record
    .venv/bin/python benchmarks/models_vs_onnxruntime.py --sections hp16,light --no-record

Models: every model of the corpus (``models/``, see its README) and the nine ``light_*`` models of
the onnx wheel (``onnx/backend/test/data/light``). Sections (``--sections``, all by default):

* ``hp16``: each float model compiled for ``hp16`` (16-bit weights and activations), calibrated on
  its calibration data, run on real inputs (the first ``--hp16-samples`` test images, or the
  model's reference inputs); the relative L2 error ||cimc - ort|| / ||ort|| over all outputs must
  be <= 1e-2, and so must the error against the reference outputs that ship with the model
  (mnist-8, super-resolution-10);
* ``int8``: each float model compiled for ``isaac`` (8 bits) and calibrated on the corpus
  calibration sets (``mnist_train_5k`` for MNIST models with their own preprocessing,
  ``cifar10_train_1k`` for CIFAR models, a few training or random inputs for the others), run on
  the full test sets; accuracy targets: mnist-8 >= 98.4 %, ResNet-8 >= 74.5 %, winml CIFAR-10
  classifier >= 63 %, the two MNIST MLPs within 1 point of onnxruntime. Next to cimc's figures
  (relative L2 error and top-1 agreement against onnxruntime's float output, accuracy) the same
  figures for onnxruntime's own int8 quantization of the model
  (``onnxruntime.quantization.quantize_static``: QDQ, per-channel int8 weights, uint8 activations,
  MinMax calibration over the same calibration data);
* ``prequantized``: the corpus's int8 models (``*_int8_qdq.onnx``, ``*_int8_qop_std.onnx``)
  compiled for ``isaac`` and compared with onnxruntime running the same int8 model on the full
  test sets: top-1 agreement, accuracy, relative L2 error, and the fraction of output elements
  equal to onnxruntime's or within one quantization step of the output (the scale of the
  DequantizeLinear that produces the output), with the runtime's exact arithmetic and with
  ``arithmetic="onnxruntime"`` (onnxruntime's int8 arithmetic on this CPU: on x86 without VNNI its
  u8 x s8 kernels saturate pair sums to int16); the same figures against onnx's
  ``ReferenceEvaluator`` (exact integer semantics) on the first ``--exact-samples`` test samples,
  for cimc and for onnxruntime;
* ``light``: the ``light_*`` ImageNet topologies on their reference input (the onnx backend test's
  ``arange(n) / n`` input) at ``hp16`` (against the shipped reference output and onnxruntime) and
  at ``isaac`` (against onnxruntime). Their weights come from ConstantOfShape, so every reference
  output is a constant vector: a weak check of the arithmetic. ``light-random`` therefore also runs
  each of them with the constant weights replaced by seeded random ones (He-scaled for Conv and
  Gemm weights, jittered around the constant for everything else; the final Softmax dropped so
  that logits are compared) against onnxruntime on the same modified model, at ``hp16``.

A model cimc refuses (``cimc.CimcError``) is recorded with its message: a finding, not a crash.
Any other exception is recorded as an internal error (a bug in cimc).

Appends nothing: rewrites ``benchmarks/results/models_vs_onnxruntime.md`` (``--results`` for
another file, ``--no-record`` to print only); a run of only some sections rewrites only those
sections of it, and says so under the header. ``tests/test_models_corpus.py`` imports this module
and checks the fast models on test-set subsets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import re
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import DEFAULT_CORPUS, ROOT, corpus_root, git_commit, spread  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "models_vs_onnxruntime.md"
SECTIONS = ("hp16", "int8", "prequantized", "light", "light-random")
#: Each section's heading in the results file.
TITLES = {
    "hp16": "## hp16: float models against onnxruntime (target: relative L2 <= 1e-2)",
    "int8": "## isaac (8 bits): float models, cimc next to onnxruntime's own int8 quantization",
    "prequantized": "## isaac (8 bits): the corpus's int8 models against onnxruntime on the same model",
    "light": "## light_* models at isaac (8 bits), reference input, against onnxruntime",
    "light-random": "## light_* models with seeded random weights, hp16, against onnxruntime (target 1e-2)",
}
#: Headings of the lists that gather entries of every section, and of the closing notes.
INTERNAL_TITLE = "## Internal errors (bugs in cimc)"
REFUSALS_TITLE = "## Refusals (full messages)"
INPUTS_TITLE = "## Inputs of models without labelled data"
HP16_MAX_REL_L2 = 1e-2
LIGHT_NAMES = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
               "squeezenet", "vgg19", "zfnet512")


# -- locations ---------------------------------------------------------------------------------

def light_dir() -> Path:
    return Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "light"


def read_pb(path: Path) -> np.ndarray:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(Path(path).read_bytes())
    return numpy_helper.to_array(tensor)


# -- data --------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _npz(corpus: Path, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(corpus / "data" / name) as npz:
        return npz["x"], (npz["y"] if "y" in npz.files else None)


def images(corpus: Path, dataset: str, split: str, count: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw uint8 images (MNIST [N,28,28]; CIFAR [N,3,32,32] NCHW) and labels (None for calibration sets)."""
    name = {("mnist", "train"): "mnist_train_5k.npz", ("mnist", "test"): "mnist_test.npz",
            ("cifar", "train"): "cifar10_train_1k.npz", ("cifar", "test"): "cifar10_test.npz"}[dataset, split]
    x, y = _npz(corpus, name)
    pick = spread(len(x), count)
    x, y = x[pick], (y[pick] if y is not None else None)
    if dataset == "cifar":
        x = x.transpose(0, 3, 1, 2)
    return x, y


def _mnist_raw(x):        # [N,28,28] uint8 -> [N,1,1,28,28] raw 0..255
    return x.astype(np.float32)[:, None, None]


def _mnist_mlir(x):       # torchvision MNIST normalization
    return ((x.astype(np.float32) / 255 - 0.1307) / 0.3081)[:, None, None]


def _mnist_onnx2c(x):     # [N,1,784] in [0, 1]
    return (x.astype(np.float32) / 255).reshape(-1, 1, 784)


def _cifar_raw(x):        # [N,3,32,32] -> [N,1,3,32,32] raw 0..255
    return x.astype(np.float32)[:, None]


def _cifar_winml(x):      # (x/255 - 0.5) / 0.5
    return ((x.astype(np.float32) / 255 - 0.5) / 0.5)[:, None]


def _cifar_up(factor: int):
    def prep(x):          # nearest upscale, [0, 1]
        return (x.astype(np.float32) / 255).repeat(factor, axis=2).repeat(factor, axis=3)[:, None]
    return prep


def _cifar_crop4(x):      # 4x4 crops of the image centre, [0, 1]
    return (x[:, :, 14:18, 14:18].astype(np.float32) / 255)[:, None]


def _cifar_gray224(x):    # luma, upscaled 7x to 224x224, [0, 1]
    y = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]) / 255
    return y.astype(np.float32).repeat(7, axis=1).repeat(7, axis=2)[:, None, None]


def _uniform(shape):
    def gen(count: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).random((count,) + tuple(shape)).astype(np.float32)
    return gen


# -- the models --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    key: str
    path: str                                   # relative to the corpus, or "light:<name>"
    input: str
    dataset: str | None = None                  # "mnist" | "cifar": images from the corpus
    prepare: Callable | None = None             # raw images -> model inputs with a leading sample axis
    generate: Callable | None = None            # (count, seed) -> inputs, for models without data
    input_shapes: tuple[str, ...] | None = None
    accuracy_min: float | None = None           # isaac accuracy target
    within_ort_points: float | None = None      # isaac accuracy within this many points of onnxruntime
    prequantized: bool = False
    classifier: bool = True                     # top-1 figures make sense
    reference_pairs: str | None = None          # folder holding test_data_set_*
    max_samples: int | None = None              # cap on test samples (large outputs, no labels)
    calibration: int | None = None              # calibration samples when the data has no labels
    labelled: bool = True                       # the dataset's labels are this model's classes
    note: str = ""

    def count(self, requested: int | None) -> int | None:
        """Test samples to use when ``requested`` are asked for (None: the full set)."""
        if self.max_samples is None:
            return requested
        return self.max_samples if requested is None else min(requested, self.max_samples)

    @property
    def light(self) -> bool:
        return self.path.startswith("light:")


SPECS: dict[str, Spec] = {s.key: s for s in [
    Spec("mnist-8", "models/mnist-8/model.onnx", "Input3", "mnist", _mnist_raw, accuracy_min=0.984,
         reference_pairs="models/mnist-8"),
    Spec("mnist-8_opset13", "models/mnist-8_opset13.onnx", "Input3", "mnist", _mnist_raw, accuracy_min=0.984),
    Spec("resnet8", "models/mlperf_tiny_resnet8_cifar10.onnx", "input_1", "cifar", _cifar_raw,
         accuracy_min=0.745),
    Spec("winml_cifar10", "models/winml_cifar10_ImageClassifier.onnx", "modelInput", "cifar", _cifar_winml,
         input_shapes=("modelInput=1x3x32x32",), accuracy_min=0.63),
    Spec("onnx-mlir_mnist_mlp", "models/onnx-mlir_mnist_mlp.onnx", "image", "mnist", _mnist_mlir,
         within_ort_points=1.0),
    Spec("onnx2c_mnist_mlp", "models/onnx2c_mnist_pytorch_mlp.onnx", "network_input", "mnist", _mnist_onnx2c,
         within_ort_points=1.0),
    Spec("vww_mobilenetv1", "models/mlperf_tiny_vww_mobilenetv1_96.onnx", "input_1", "cifar", _cifar_up(3),
         max_samples=1000, labelled=False, calibration=200,
         note="no labelled data: CIFAR-10 images upscaled 3x to 96x96, [0, 1]; calibrated on 200 training "
              "images"),
    Spec("qonnx_residual_block", "models/qonnx_residual_block_clean.onnx", "global_in",
         generate=_uniform((1, 1, 200, 200)), classifier=False, max_samples=16, calibration=16,
         note="uniform random inputs in [0, 1), calibrated on 16 others"),
    Spec("qonnx_espcn_nn_resize", "models/qonnx_espcn_nn_resize_float.onnx", "onnx::Relu_0", "cifar",
         _cifar_up(4), classifier=False, max_samples=32, labelled=False, calibration=16,
         note="CIFAR-10 images upscaled 4x to 128x128, [0, 1]; calibrated on 16 training images (its "
              "calibration is slow)"),
    Spec("qonnx_espcn_subpixel", "models/qonnx_espcn_subpixel_float.onnx", "input", "cifar", _cifar_crop4,
         classifier=False, max_samples=1000, labelled=False, calibration=1000,
         note="4x4 centre crops of CIFAR-10 images, [0, 1]; calibrated on the 1,000 training crops (16 "
              "crops leave test activations outside the calibrated range: relative L2 1.1e-2 at hp16)"),
    Spec("super-resolution-10", "models/super-resolution-10/model.onnx", "input", "cifar", _cifar_gray224,
         input_shapes=("input=1x1x224x224",), classifier=False, reference_pairs="models/super-resolution-10",
         max_samples=8, labelled=False, calibration=8,
         note="its reference pair plus CIFAR-10 luma upscaled 7x to 224x224, [0, 1]; calibrated on 8 "
              "training images and the reference input (its calibration is slow)"),
    Spec("mnist-8_int8_qdq", "models/mnist-8_int8_qdq.onnx", "Input3", "mnist", _mnist_raw, prequantized=True),
    Spec("mnist-8_int8_qop", "models/mnist-8_int8_qop_std.onnx", "Input3", "mnist", _mnist_raw,
         prequantized=True),
    Spec("resnet8_int8_qdq", "models/resnet8_int8_qdq.onnx", "input_1", "cifar", _cifar_raw, prequantized=True),
    Spec("resnet8_int8_qop", "models/resnet8_int8_qop_std.onnx", "input_1", "cifar", _cifar_raw,
         prequantized=True),
] + [Spec(f"light_{n}", f"light:{n}", "", classifier=True) for n in LIGHT_NAMES]}

FLOAT_CORPUS = [k for k, s in SPECS.items() if not s.light and not s.prequantized]
PREQUANTIZED = [k for k, s in SPECS.items() if s.prequantized]
LIGHT = [k for k, s in SPECS.items() if s.light]


def model_path(spec: Spec, corpus: Path | None) -> Path:
    if spec.light:
        return light_dir() / f"light_{spec.path[6:]}.onnx"
    if corpus is None:
        raise FileNotFoundError("the corpus is absent")
    return corpus / spec.path


def graph_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    inits = {i.name for i in model.graph.initializer}
    return next(i for i in model.graph.input if i.name not in inits)


def light_reference(spec: Spec) -> tuple[np.ndarray, np.ndarray, str]:
    """The onnx backend runner's input for light models (arange(n)/n) and the shipped output."""
    path = model_path(spec, None)
    model = onnx.load(str(path), load_external_data=False)
    vi = graph_input(model)
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    x = (np.arange(n).reshape(shape) / n).astype(np.float32)
    return x, read_pb(path.with_name(path.stem + "_output_0.pb")), vi.name


def input_name(spec: Spec, corpus: Path | None) -> str:
    if spec.input:
        return spec.input
    return graph_input(onnx.load(str(model_path(spec, corpus)), load_external_data=False)).name


def samples(spec: Spec, corpus: Path | None, split: str, count: int | None, seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """Model inputs with a leading sample axis, and labels when the data has them."""
    if spec.dataset is not None:
        x, y = images(corpus, spec.dataset, split, count)
        return np.ascontiguousarray(spec.prepare(x)), (y if spec.labelled else None)
    if spec.generate is not None:
        return spec.generate(count or 16, seed + (0 if split == "test" else 1000)), None
    if spec.light:
        x, _, _ = light_reference(spec)
        if split == "test" or not count or count <= 1:
            return x[None], None
        extra = np.random.default_rng(seed + 1000).random((count - 1,) + x.shape).astype(np.float32)
        return np.concatenate([x[None], extra]), None
    raise ValueError(spec.key)


def reference_pairs(spec: Spec, corpus: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    if spec.reference_pairs is None:
        return []
    folder = corpus / spec.reference_pairs
    return [(read_pb(d / "input_0.pb"), read_pb(d / "output_0.pb"))
            for d in sorted(folder.glob("test_data_set_*"))]


# -- onnxruntime ---------------------------------------------------------------------------------

def ort_session(model: "str | Path | onnx.ModelProto", threads: int = 1):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def ort_outputs(session, name: str, xs: np.ndarray) -> np.ndarray:
    """First output for each sample of ``xs`` (leading sample axis), stacked."""
    return np.stack([session.run(None, {name: x.astype(np.float32)})[0] for x in xs])


class _Reader:
    """CalibrationDataReader over a sample array."""

    def __init__(self, name: str, xs: np.ndarray):
        self.name, self.xs, self.i = name, xs, 0

    def get_next(self):
        if self.i >= len(self.xs):
            return None
        self.i += 1
        return {self.name: self.xs[self.i - 1].astype(np.float32)}

    def rewind(self):
        self.i = 0


def static_shape_model(path: Path, input_shapes: tuple[str, ...] | None) -> onnx.ModelProto:
    """The model with fixed input shapes and at least opset 13 (what quantize_static's QDQ needs)."""
    model = onnx.load(str(path))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        model = onnx.version_converter.convert_version(model, 13)
    for spec in input_shapes or ():
        name, dims = spec.split("=")
        for vi in model.graph.input:
            if vi.name == name:
                for d, n in zip(vi.type.tensor_type.shape.dim, dims.split("x")):
                    d.Clear()
                    d.dim_value = int(n)
    return model


def ort_int8(path: Path, spec: Spec, calib: np.ndarray, name: str, workdir: Path) -> tuple[Path, str]:
    """onnxruntime's own static int8 quantization: QDQ, per-channel int8 weights, uint8 activations.

    The model is first run through ``quant_pre_process`` (without symbolic shape inference, as
    sympy is not a dependency); if quantizing that fails, the plain model is quantized. Returns the
    quantized model and which input was used.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = static_shape_model(path, spec.input_shapes)
    src = workdir / f"{spec.key}_fp32.onnx"
    onnx.save(model, str(src))
    pre = workdir / f"{spec.key}_pre.onnx"
    candidates = []
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)   # sympy is not a dependency
        candidates.append((pre, "pre-processed"))
    except Exception:  # noqa: BLE001 - pre-processing is an optimization; quantize the plain model
        pass
    candidates.append((src, "plain"))
    out = workdir / f"{spec.key}_ort_int8.onnx"
    for k, (model_in, variant) in enumerate(candidates):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_static(str(model_in), str(out), _Reader(name, calib), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
            return out, variant
        except Exception:  # noqa: BLE001
            if k == len(candidates) - 1:
                raise
    raise AssertionError("unreachable")


def output_step(model: onnx.ModelProto) -> float | None:
    """Scale of the DequantizeLinear producing the first output (through scale-preserving ops)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR}
    inits.update(consts)
    name = model.graph.output[0].name
    for _ in range(8):
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type == "DequantizeLinear":
            scale = inits.get(node.input[1])
            return float(np.max(scale)) if scale is not None else None
        if node.op_type in ("Reshape", "Flatten", "Transpose", "Identity", "Squeeze", "Unsqueeze"):
            name = node.input[0]
        elif node.op_type in ("Add", "Sub") and any(i in inits for i in node.input):
            name = next(i for i in node.input if i not in inits)
        else:
            return None
    return None


# -- measures ----------------------------------------------------------------------------------

def rel_l2(got: np.ndarray, ref: np.ndarray) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    denom = np.linalg.norm(ref)
    return float(np.linalg.norm(got - ref) / denom) if denom > 0 else float(np.linalg.norm(got - ref))


def worst_sample_rel_l2(got: np.ndarray, ref: np.ndarray) -> float:
    got = np.asarray(got, np.float64).reshape(len(got), -1)
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    num = np.linalg.norm(got - ref, axis=1)
    den = np.maximum(np.linalg.norm(ref, axis=1), 1e-30)
    return float((num / den).max())


def top1(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape(len(a), -1).argmax(-1)


def within_step(got: np.ndarray, ref: np.ndarray, step: float) -> float:
    diff = np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64))
    return float((diff <= step * (1 + 1e-4)).mean())


# -- running cimc ---------------------------------------------------------------------------------

@dataclass
class Run:
    """One model on one target."""
    key: str
    target: str
    section: str
    status: str = "ok"                           # ok | refused | internal error
    message: str = ""
    samples: int = 0
    calibration_samples: int = 0
    compile_s: float = 0.0
    run_s: float = 0.0
    figures: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)   # name -> bool (targets)

    @property
    def met(self) -> bool | None:
        if self.status != "ok":
            return False
        return all(self.checks.values()) if self.checks else None


def _describe(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = next((f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(tb)
                  if any(part in f.filename for part in ("/cimc/", "/runtime/", "/passes/", "/targets/"))), "")
    first = (str(exc).splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {first}" + (f" (at {where})" if where else "")


def compile_and_run(run: Run, model, target: str, name: str, calib: np.ndarray, xs: np.ndarray,
                    input_shapes=None, arithmetic: str = "exact") -> np.ndarray | None:
    """Compile (timed), run (timed) with the runtime's ``arithmetic``; on failure set
    ``run.status``/``message`` and return None."""
    import cimc

    run.calibration_samples, run.samples = len(calib), len(xs)
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = cimc.compile(model, target, calibration={name: calib},
                                   input_shapes=list(input_shapes) if input_shapes else None)
        run.compile_s = time.perf_counter() - started
        run.figures["crossbars"] = program.report.get("crossbars_used")
        started = time.perf_counter()
        result = cimc.run(program, {name: xs}, arithmetic=arithmetic)
        run.run_s = time.perf_counter() - started
    except cimc.CimcError as exc:
        run.status, run.message = "refused", str(exc)
    except Exception as exc:  # noqa: BLE001 - an internal error is a finding
        run.status, run.message = "internal error", _describe(exc)
    else:
        return result.outputs[next(iter(program.outputs))]
    elapsed = time.perf_counter() - started          # up to the failure, in compile or in run
    if run.compile_s:
        run.run_s = elapsed
    else:
        run.compile_s = elapsed
    return None


# -- sections ----------------------------------------------------------------------------------

def run_hp16(spec: Spec, corpus: Path | None, count: int | None, calib_count: int | None) -> Run:
    """hp16: relative L2 against onnxruntime on real inputs, and against shipped reference outputs."""
    run = Run(spec.key, "hp16", "hp16")
    path = model_path(spec, corpus)
    name = input_name(spec, corpus)
    calib, _ = samples(spec, corpus, "train", calib_count)
    xs, _ = samples(spec, corpus, "test", count)
    pairs = reference_pairs(spec, corpus) if corpus is not None else []
    if spec.light:
        x_ref, y_ref, _ = light_reference(spec)
        pairs = [(x_ref, y_ref)]
    if pairs:          # reference inputs are evaluated too, after the real ones
        xs = np.concatenate([xs] + [p[0][None] for p in pairs]) if not spec.light else xs
        calib = np.concatenate([calib] + [p[0][None] for p in pairs]) if not spec.light else calib
    got = compile_and_run(run, path, "hp16", name, calib, xs, spec.input_shapes)
    if got is None:
        return run
    ref = ort_outputs(ort_session(path), name, xs)
    n_real = len(xs) - (len(pairs) if not spec.light else 0)
    run.figures["rel_l2"] = rel_l2(got, ref)
    run.figures["worst_sample_rel_l2"] = worst_sample_rel_l2(got, ref)
    if spec.classifier and ref.reshape(len(ref), -1).shape[1] > 1:
        run.figures["agreement"] = float((top1(got) == top1(ref)).mean())
    run.checks["rel L2 vs onnxruntime <= 1e-2"] = run.figures["rel_l2"] <= HP16_MAX_REL_L2
    if pairs:
        errs = []
        for k, (_, y) in enumerate(pairs):
            g = got[n_real + k] if not spec.light else got[0]
            errs.append(rel_l2(g.reshape(y.shape), y))
        run.figures["reference_rel_l2"] = max(errs)
        run.checks["rel L2 vs reference outputs <= 1e-2"] = max(errs) <= HP16_MAX_REL_L2
    return run


def run_int8(spec: Spec, corpus: Path | None, count: int | None, calib_count: int | None,
             workdir: Path, with_ort_int8: bool = True) -> Run:
    """isaac: accuracy and closeness to onnxruntime's float output, next to onnxruntime's int8."""
    run = Run(spec.key, "isaac", "int8")
    path = model_path(spec, corpus)
    name = input_name(spec, corpus)
    calib, _ = samples(spec, corpus, "train", calib_count)
    xs, labels = samples(spec, corpus, "test", count)
    session = ort_session(path)
    ref = ort_outputs(session, name, xs)
    if labels is not None:
        run.figures["ort_accuracy"] = float((top1(ref) == labels).mean())
    if with_ort_int8:
        try:
            q_path, run.figures["ort_int8_input"] = ort_int8(path, spec, calib, name, workdir)
            q_ref = ort_outputs(ort_session(q_path), name, xs)
            run.figures["ort_int8_rel_l2"] = rel_l2(q_ref, ref)
            if spec.classifier:
                run.figures["ort_int8_agreement"] = float((top1(q_ref) == top1(ref)).mean())
            if labels is not None:
                run.figures["ort_int8_accuracy"] = float((top1(q_ref) == labels).mean())
        except Exception as exc:  # noqa: BLE001 - onnxruntime's tool failing is recorded, not fatal
            run.figures["ort_int8_error"] = _describe(exc)
    got = compile_and_run(run, path, "isaac", name, calib, xs, spec.input_shapes)
    if got is None:
        return run
    run.figures["rel_l2"] = rel_l2(got, ref)
    if spec.classifier:
        run.figures["agreement"] = float((top1(got) == top1(ref)).mean())
    if labels is not None:
        acc = float((top1(got) == labels).mean())
        run.figures["accuracy"] = acc
        if spec.accuracy_min is not None:
            run.checks[f"accuracy >= {100 * spec.accuracy_min:.1f} %"] = acc >= spec.accuracy_min
        if spec.within_ort_points is not None:
            run.checks[f"accuracy within {spec.within_ort_points:g} point of onnxruntime"] = \
                acc >= run.figures["ort_accuracy"] - spec.within_ort_points / 100
    return run


#: Operators whose semantics at opset 21 equal those of the opsets the corpus's int8 models import
#: (11 and 13), for the inputs those models give them; see ``exact_int8_outputs``.
_SAFE_AT_21 = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "Conv", "Gemm", "MatMul",
               "Add", "Relu", "MaxPool", "AveragePool", "Reshape", "Transpose", "Softmax"}


def exact_int8_outputs(path: Path, name: str, xs: np.ndarray) -> np.ndarray:
    """The int8 model evaluated by onnx's ReferenceEvaluator: exact integer semantics.

    The evaluator has no DequantizeLinear before opset 19, so the model's default opset import is
    raised to 21 (refused unless every operator is in ``_SAFE_AT_21``; the models' Softmax inputs
    are 2-D, where the opset-13 change of its axis semantics does not show).
    """
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    if not ops <= _SAFE_AT_21:
        raise ValueError(f"operators {sorted(ops - _SAFE_AT_21)} may change meaning at opset 21")
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = max(imp.version, 21)
    evaluator = ReferenceEvaluator(model)
    return np.stack([evaluator.run(None, {name: x.astype(np.float32)})[0] for x in xs])


def run_prequantized(spec: Spec, corpus: Path, count: int | None, calib_count: int | None,
                     exact_count: int | None = 1000) -> Run:
    """isaac on an int8 model, against onnxruntime on the same int8 model (with the runtime's exact
    arithmetic and with ``arithmetic="onnxruntime"``, figures ``ort_arith_*``), and against onnx's
    ReferenceEvaluator (exact integer semantics) on the first ``exact_count`` test samples."""
    run = Run(spec.key, "isaac", "prequantized")
    path = model_path(spec, corpus)
    name = input_name(spec, corpus)
    calib, _ = samples(spec, corpus, "train", calib_count)
    xs, labels = samples(spec, corpus, "test", count)
    model = onnx.load(str(path))
    ref = ort_outputs(ort_session(path), name, xs)
    step = output_step(model)
    run.figures["step"] = step
    if labels is not None:
        run.figures["ort_accuracy"] = float((top1(ref) == labels).mean())
    got = compile_and_run(run, path, "isaac", name, calib, xs, spec.input_shapes)
    if got is None:
        return run
    run.figures["rel_l2"] = rel_l2(got, ref)
    run.figures["agreement"] = float((top1(got) == top1(ref)).mean())
    run.figures["equal"] = float((np.asarray(got, np.float64) == np.asarray(ref, np.float64)).mean())
    if step is not None:
        run.figures["within_step"] = within_step(got, ref, step)
    if labels is not None:
        run.figures["accuracy"] = float((top1(got) == labels).mean())
    # The model's own integer layers keep their 8 bits on either target; layers the model leaves
    # in float (resnet8_int8_qop's Gemm) take the target's precision, 8 bits on isaac, 16 on hp16.
    for target, prefix in (("isaac", "ort_arith"), ("hp16", "hp16_ort_arith")):
        ort_arith = Run(spec.key, target, "prequantized")
        emulated = compile_and_run(ort_arith, path, target, name, calib, xs, spec.input_shapes, "onnxruntime")
        if emulated is None:
            run.figures[f"{prefix}_error"] = ort_arith.message
            continue
        run.figures[f"{prefix}_run_s"] = ort_arith.run_s
        run.figures[f"{prefix}_agreement"] = float((top1(emulated) == top1(ref)).mean())
        run.figures[f"{prefix}_equal"] = float((np.asarray(emulated, np.float64) ==
                                                 np.asarray(ref, np.float64)).mean())
        if step is not None:
            run.figures[f"{prefix}_within_step"] = within_step(emulated, ref, step)
    if exact_count:
        n = min(exact_count, len(xs))
        try:
            exact = exact_int8_outputs(path, name, xs[:n])
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal
            run.figures["exact_error"] = _describe(exc)
            return run
        run.figures["exact_samples"] = n
        for who, out in (("", got[:n]), ("ort_", ref[:n])):
            run.figures[f"{who}exact_agreement"] = float((top1(out) == top1(exact)).mean())
            run.figures[f"{who}exact_rel_l2"] = rel_l2(out, exact)
            if step is not None:
                run.figures[f"{who}exact_within_step"] = within_step(out, exact, step)
    return run


def run_light_isaac(spec: Spec, calib_count: int) -> Run:
    run = Run(spec.key, "isaac", "light")
    path = model_path(spec, None)
    x_ref, _, name = light_reference(spec)
    calib, _ = samples(spec, None, "train", calib_count)
    got = compile_and_run(run, path, "isaac", name, calib, x_ref[None], None)
    if got is None:
        return run
    ref = ort_outputs(ort_session(path), name, x_ref[None])
    run.figures["rel_l2"] = rel_l2(got, ref)
    return run


def randomize_light(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Replace each ConstantOfShape weight by seeded random values.

    Conv and Gemm weights: normal, He-scaled (std sqrt(2 / fan_in)); everything else (biases,
    batch-norm statistics, scales): the constant times (1 + 0.1 N(0, 1)), with variances kept
    positive. A final Softmax is dropped (the logits become the output: a softmax over 1000 classes
    of a random network is nearly flat). The structure is otherwise untouched.
    """
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in out.graph.node:
        for pos, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, pos))
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    kept, new_inits = [], []
    for node in out.graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in inits:
            kept.append(node)
            continue
        shape = tuple(int(d) for d in inits[node.input[0]])
        value = 0.0
        for a in node.attribute:
            if a.name == "value":
                value = float(numpy_helper.to_array(a.t).reshape(-1)[0])
        uses = consumers.get(node.output[0], [])
        ops = {(n.op_type, pos) for n, pos in uses}
        if ("Conv", 1) in ops or ("Gemm", 1) in ops:
            gemm_trans = any(n.op_type == "Gemm" and pos == 1 and any(a.name == "transB" and a.i for a in n.attribute)
                             for n, pos in uses)
            if ("Conv", 1) in ops:
                fan_in = int(np.prod(shape[1:]))
            else:
                fan_in = shape[1] if gemm_trans else shape[0]
            data = rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))
        else:
            data = value * (1 + 0.1 * rng.standard_normal(shape))
            if any(n.op_type == "BatchNormalization" and pos == 4 for n, pos in uses):
                data = np.abs(data) + 1e-3
        new_inits.append(numpy_helper.from_array(data.astype(np.float32), node.output[0]))
    # A final Softmax over 1000 classes of a random network is nearly flat: compare the logits.
    dropped_softmax = kept and kept[-1].op_type == "Softmax" and kept[-1].output[0] == out.graph.output[0].name
    if dropped_softmax:
        out.graph.output[0].name = kept.pop().input[0]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    out.graph.initializer.extend(new_inits)
    if dropped_softmax:       # the logits have the probabilities' shape; let inference confirm it
        inferred = onnx.shape_inference.infer_shapes(out)
        out.graph.output[0].CopyFrom(inferred.graph.output[0])
    return out


def run_light_random(spec: Spec, seed: int = 0) -> Run:
    run = Run(spec.key, "hp16", "light-random")
    path = model_path(spec, None)
    model = randomize_light(onnx.load(str(path)), seed)
    x_ref, _, name = light_reference(spec)
    xs = np.concatenate([x_ref[None], np.random.default_rng(seed + 7).random((1,) + x_ref.shape, dtype=np.float32)])
    got = compile_and_run(run, model, "hp16", name, xs, xs, None)
    if got is None:
        return run
    ref = ort_outputs(ort_session(model), name, xs)
    run.figures["rel_l2"] = rel_l2(got, ref)
    run.figures["agreement"] = float((top1(got) == top1(ref)).mean())
    run.checks["rel L2 vs onnxruntime <= 1e-2"] = run.figures["rel_l2"] <= HP16_MAX_REL_L2
    return run


# -- report ------------------------------------------------------------------------------------

def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def _sci(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _secs(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _msg(run: Run, limit: int = 260) -> str:
    text = " ".join(run.message.split())
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return text.replace("|", "\\|")


def _status(run: Run) -> str:
    if run.status != "ok":
        return "**INTERNAL ERROR**" if run.status == "internal error" else "refused"
    met = run.met
    return "ok" if met is None else ("meets" if met else "**misses**")


def stamp(args, wall: float) -> str:
    """When, at which commit, with which versions and options a run measured."""
    import cimc
    import onnxruntime

    return (f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit `{git_commit()}`, cimc "
            f"{cimc.__version__}, onnxruntime {onnxruntime.__version__}, {os.cpu_count()} cores, {wall:.0f} s "
            f"wall; options: `{' '.join(args.argv) or '(defaults)'}`")


def report(runs: list[Run], args, wall: float) -> str:
    by_section: dict[str, list[Run]] = {}
    for r in runs:
        by_section.setdefault(r.section, []).append(r)
    lines = [
        "# Real models: cimc against onnxruntime",
        "",
        f"Written by `benchmarks/models_vs_onnxruntime.py` on {stamp(args, wall)}. "
        "See `benchmarks/README.md` for what each section measures. Relative L2 = ||cimc - ref|| / ||ref|| over "
        "all outputs of all samples; agreement = top-1 agreement.",
    ]
    internal = [r for r in runs if r.status == "internal error"]
    if internal:
        lines += ["", INTERNAL_TITLE, "", "| model | section | target | error |",
                  "|---|---|---|---|"]
        lines += [f"| {r.key} | {r.section} | {r.target} | {_msg(r, 400)} |" for r in internal]
    if "hp16" in by_section:
        lines += ["", TITLES["hp16"], "",
                  "| model | status | samples | rel. L2 vs ort | worst sample | agreement | rel. L2 vs reference "
                  "outputs | crossbars | compile s | run s | message |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in by_section["hp16"]:
            f = r.figures
            lines.append(f"| {r.key} | {_status(r)} | {r.samples} | {_sci(f.get('rel_l2'))} | "
                         f"{_sci(f.get('worst_sample_rel_l2'))} | {_pct(f.get('agreement'))} | "
                         f"{_sci(f.get('reference_rel_l2'))} | {f.get('crossbars', '-')} | {r.compile_s:.1f} | "
                         f"{r.run_s:.1f} | {_msg(r)} |")
    if "int8" in by_section:
        lines += ["", TITLES["int8"], "",
                  "Both calibrated on the same data; figures against onnxruntime's float output on the test set. "
                  "Targets: mnist-8 >= 98.4 %, ResNet-8 >= 74.5 %, winml >= 63 %, MNIST MLPs within 1 point of "
                  "onnxruntime.", "",
                  "| model | status | calib. | test | cimc acc. | ort float acc. | ort int8 acc. | cimc rel. L2 | "
                  "ort int8 rel. L2 | cimc agreement | ort int8 agreement | compile s | run s | targets | message |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in by_section["int8"]:
            f = r.figures
            targets = "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in r.checks.items()) or "-"
            msg = _msg(r) or (f"onnxruntime int8 failed: {f['ort_int8_error']}" if "ort_int8_error" in f else "")
            lines.append(f"| {r.key} | {_status(r)} | {r.calibration_samples} | {r.samples} | "
                         f"{_pct(f.get('accuracy'))} | {_pct(f.get('ort_accuracy'))} | "
                         f"{_pct(f.get('ort_int8_accuracy'))} | {_sci(f.get('rel_l2'))} | "
                         f"{_sci(f.get('ort_int8_rel_l2'))} | {_pct(f.get('agreement'))} | "
                         f"{_pct(f.get('ort_int8_agreement'))} | {r.compile_s:.1f} | {r.run_s:.1f} | {targets} | "
                         f"{msg.replace('|', '/')} |")
    if "prequantized" in by_section:
        lines += ["", TITLES["prequantized"], "",
                  "Against onnxruntime on the full test set (agreement, elements equal, within one step of the "
                  "output's quantization, relative L2), and against the exact integer semantics of onnx's "
                  "`ReferenceEvaluator` on the first test samples (\"exact\" columns; onnxruntime's own distance "
                  "to it alongside). onnxruntime's int8 outputs are not exact on this machine: its u8 x s8 "
                  "kernels for x86 CPUs without VNNI (this one has AVX2 only) saturate the sums of adjacent "
                  "product pairs to int16. The \"ORT arith.\" columns run the same program with "
                  "`arithmetic=\"onnxruntime\"`, which reproduces that (and onnxruntime's quantized global "
                  "average pool) to give onnxruntime's outputs. resnet8_int8_qop ends in a float Gemm, which "
                  "cimc quantizes itself at the target's precision: the \"hp16 ORT arith.\" columns compile the "
                  "same model for hp16, where the model's int8 layers keep their 8 bits and the float Gemm gets "
                  "16.", "",
                  "| model | status | test | cimc acc. | ort acc. | agreement | equal | within 1 step | "
                  "ORT arith.: agreement | ORT arith.: equal | ORT arith.: within 1 step | "
                  "hp16 ORT arith.: agreement | hp16 ORT arith.: equal | hp16 ORT arith.: within 1 step | step | "
                  "rel. L2 | exact: samples | cimc agreement | cimc within 1 step | cimc rel. L2 | ort agreement | "
                  "ort within 1 step | ort rel. L2 | compile s | run s | ORT arith. run s | message |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
                  "---|---|---|"]
        for r in by_section["prequantized"]:
            f = r.figures
            na = "n/a (float output)"
            within = _pct(f.get("within_step")) if f.get("step") is not None else na
            ex_within = _pct(f.get("exact_within_step")) if f.get("step") is not None else na
            ort_within = _pct(f.get("ort_exact_within_step")) if f.get("step") is not None else na
            arith_within = _pct(f.get("ort_arith_within_step")) if f.get("step") is not None else na
            hp16_within = _pct(f.get("hp16_ort_arith_within_step")) if f.get("step") is not None else na
            msg = _msg(r) or "; ".join(f"{what} failed: {f[key]}" for what, key in (
                ("exact reference", "exact_error"), ("ORT arithmetic", "ort_arith_error"),
                ("hp16 ORT arithmetic", "hp16_ort_arith_error")) if key in f)
            lines.append(f"| {r.key} | {_status(r)} | {r.samples} | {_pct(f.get('accuracy'))} | "
                         f"{_pct(f.get('ort_accuracy'))} | {_pct(f.get('agreement'))} | {_pct(f.get('equal'))} | "
                         f"{within} | {_pct(f.get('ort_arith_agreement'))} | {_pct(f.get('ort_arith_equal'))} | "
                         f"{arith_within} | {_pct(f.get('hp16_ort_arith_agreement'))} | "
                         f"{_pct(f.get('hp16_ort_arith_equal'))} | {hp16_within} | "
                         f"{_sci(f.get('step'))} | {_sci(f.get('rel_l2'))} | "
                         f"{f.get('exact_samples', '-')} | {_pct(f.get('exact_agreement'))} | {ex_within} | "
                         f"{_sci(f.get('exact_rel_l2'))} | {_pct(f.get('ort_exact_agreement'))} | {ort_within} | "
                         f"{_sci(f.get('ort_exact_rel_l2'))} | {r.compile_s:.1f} | {r.run_s:.1f} | "
                         f"{_secs(f.get('ort_arith_run_s'))} | {msg.replace('|', '/')} |")
    if "light" in by_section:
        lines += ["", TITLES["light"], "",
                  "(Their hp16 rows are in the hp16 table, where the reference outputs are checked.)", "",
                  "| model | status | rel. L2 vs ort | crossbars | compile s | run s | message |",
                  "|---|---|---|---|---|---|---|"]
        for r in by_section["light"]:
            lines.append(f"| {r.key} | {_status(r)} | {_sci(r.figures.get('rel_l2'))} | "
                         f"{r.figures.get('crossbars', '-')} | {r.compile_s:.1f} | {r.run_s:.1f} | {_msg(r)} |")
    if "light-random" in by_section:
        lines += ["", TITLES["light-random"], "",
                  "The shipped weights are constants, so the reference outputs are constant vectors; here every "
                  "ConstantOfShape weight is replaced by random values and the final Softmax dropped, so logits are "
                  "compared (`randomize_light`); inputs: the reference input and one uniform random image.", "",
                  "| model | status | rel. L2 vs ort | agreement | crossbars | compile s | run s | message |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in by_section["light-random"]:
            lines.append(f"| {r.key} | {_status(r)} | {_sci(r.figures.get('rel_l2'))} | "
                         f"{_pct(r.figures.get('agreement'))} | {r.figures.get('crossbars', '-')} | "
                         f"{r.compile_s:.1f} | {r.run_s:.1f} | {_msg(r)} |")
    refused = [r for r in runs if r.status == "refused"]
    if refused:
        lines += ["", REFUSALS_TITLE, ""]
        lines += [f"- {r.key} ({r.section}, {r.target}): {' '.join(r.message.split())}" for r in refused]
    notes = [f"- {s.key}: {s.note}" for s in SPECS.values() if s.note]
    lines += ["", INPUTS_TITLE, ""] + notes
    return "\n".join(lines) + "\n"


def _blocks(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """A results file as its header and its ``## `` blocks (heading -> lines, without the blank line
    that separates blocks)."""
    head: list[str] = []
    blocks: dict[str, list[str]] = {}
    current = head
    for line in text.rstrip("\n").split("\n"):
        if line.startswith("## "):
            current = blocks[line] = [line]
        else:
            current.append(line)
    for lines in [head, *blocks.values()]:
        while lines and not lines[-1]:
            lines.pop()
    return head, blocks


def _entry_section(line: str) -> str | None:
    """The section of an internal-error row (``| model | section | ...``) or of a refusal
    (``- model (section, target): ...``)."""
    match = re.match(r"\| [^|]+ \| ([^|]+) \|", line) or re.match(r"- \S+ \(([^,]+), ", line)
    return match.group(1).strip() if match and match.group(1).strip() in SECTIONS else None


def _gathered(old: list[str] | None, new: list[str] | None, sections: set[str]) -> list[str] | None:
    """A list gathering every section's entries: the other sections' entries of ``old``, then ``new``'s."""
    base = new or old or []
    head = [line for line in base if _entry_section(line) is None]
    kept = [line for line in old or [] if _entry_section(line) not in sections | {None}]
    entries = kept + [line for line in new or [] if _entry_section(line) in sections]
    return head + entries if entries else None


def _superseded(line: str, sections: set[str]) -> bool:
    """Whether ``line`` is the note of an earlier partial run whose sections are all rewritten now."""
    match = re.match(r"Sections? (.+) rewritten on ", line)
    return bool(match) and set(re.findall(r"`([^`]+)`", match.group(1))) <= sections


def merge_results(old: str, new: str, sections: list[str], when: str) -> str:
    """The recorded results ``old`` with the sections of a run that did only ``sections`` (its report
    ``new``) replaced: the other sections keep their text, the internal-error and refusal lists keep
    their entries, and the header says which sections the later run (``when``) rewrote."""
    old_head, old_blocks = _blocks(old)
    _, new_blocks = _blocks(new)
    done = set(sections)
    note = f"Section{'s' * (len(sections) > 1)} {', '.join(f'`{s}`' for s in sections)} rewritten on {when}."
    head = [line for line in old_head if not _superseded(line, done)]
    while head and not head[-1]:
        head.pop()
    head += ["", note]
    order = [INTERNAL_TITLE] + [TITLES[s] for s in SECTIONS] + [REFUSALS_TITLE, INPUTS_TITLE]
    blocks = {
        INTERNAL_TITLE: _gathered(old_blocks.get(INTERNAL_TITLE), new_blocks.get(INTERNAL_TITLE), done),
        REFUSALS_TITLE: _gathered(old_blocks.get(REFUSALS_TITLE), new_blocks.get(REFUSALS_TITLE), done),
        INPUTS_TITLE: new_blocks.get(INPUTS_TITLE),
        **{TITLES[s]: (new_blocks if s in done else old_blocks).get(TITLES[s]) for s in SECTIONS},
    }
    lines = head
    for title in order:
        if blocks[title]:
            lines += [""] + blocks[title]
    return "\n".join(lines) + "\n"


def limit_memory(gb: float) -> None:
    """Cap this process's address space, so a model too large for the host fails alone."""
    if gb and gb > 0:
        import resource
        cap = int(gb * (1 << 30))
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def quiet() -> None:
    """Silence onnxruntime's graph warnings and its quantization tool's advice."""
    import logging

    import onnxruntime
    onnxruntime.set_default_logger_severity(3)
    logging.getLogger().setLevel(logging.ERROR)


def print_run(r: Run) -> None:
    f = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.figures.items()}
    checks = {k: v for k, v in r.checks.items()}
    extra = f" -- {r.message[:200]}" if r.message else ""
    print(f"[{r.section:>12}] {r.key:<24} {r.target:<5} {r.status:<8} n={r.samples} "
          f"compile {r.compile_s:.1f}s run {r.run_s:.1f}s {json.dumps(f)} {json.dumps(checks)}{extra}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {SECTIONS}")
    parser.add_argument("--models", default=None, help="comma-separated model keys (default: all); see SPECS")
    parser.add_argument("--limit", type=int, default=None, help="test samples per model (default: full sets)")
    parser.add_argument("--hp16-samples", type=int, default=1000, help="test samples per model at hp16")
    parser.add_argument("--calibration-samples", type=int, default=None,
                        help="calibration samples (default: the full calibration sets; 16 for generated inputs)")
    parser.add_argument("--no-ort-int8", action="store_true", help="skip onnxruntime's own int8 quantization")
    parser.add_argument("--exact-samples", type=int, default=1000,
                        help="test samples evaluated by onnx's ReferenceEvaluator for the int8 models (0: none)")
    parser.add_argument("--memory-gb", type=float, default=12.0,
                        help="address-space limit for this process (the machine is shared; 0: none). A model "
                             "that needs more fails with MemoryError, recorded as an internal error")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="results file; a run of only some --sections rewrites only those sections of it")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    args.argv = argv
    quiet()
    limit_memory(args.memory_gb)
    try:
        corpus = corpus_root()
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    keys = args.models.split(",") if args.models else list(SPECS)
    unknown = [k for k in keys if k not in SPECS]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(SPECS)}")
    if corpus is None:
        print(f"note: corpus absent ({DEFAULT_CORPUS}); set CIMC_CORPUS. Only light_* models run.", file=sys.stderr)
        keys = [k for k in keys if SPECS[k].light]
    runs: list[Run] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for key in keys:
            spec = SPECS[key]
            # labelled models: the full calibration set unless told; the others: a few inputs
            calib = spec.calibration if spec.calibration else args.calibration_samples
            jobs = []
            if "hp16" in sections and not spec.prequantized:
                hp_count = spec.count(min(args.hp16_samples, args.limit or args.hp16_samples))
                jobs.append(lambda s=spec, n=hp_count, c=(1 if spec.light else calib): run_hp16(s, corpus, n, c))
            if "int8" in sections and not spec.prequantized and not spec.light:
                jobs.append(lambda s=spec, c=calib: run_int8(s, corpus, s.count(args.limit), c, Path(tmp),
                                                             not args.no_ort_int8))
            if "prequantized" in sections and spec.prequantized:
                jobs.append(lambda s=spec, c=calib: run_prequantized(s, corpus, s.count(args.limit), c,
                                                                     args.exact_samples))
            if "light" in sections and spec.light:
                jobs.append(lambda s=spec: run_light_isaac(s, 4))
            if "light-random" in sections and spec.light:
                jobs.append(lambda s=spec: run_light_random(s))
            for job in jobs:
                r = job()
                runs.append(r)
                print_run(r)
    wall = time.perf_counter() - started
    if not args.no_record:
        text = report(runs, args, wall)
        if set(sections) != set(SECTIONS) and args.results.exists():
            text = merge_results(args.results.read_text(), text, sections, stamp(args, wall))
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(text)
        print(f"wrote {args.results}")
    bad = [r for r in runs if r.status == "internal error"]
    if bad:
        print(f"\n!!! {len(bad)} INTERNAL ERRORS (bugs in cimc): " + ", ".join(f"{r.key} ({r.section})" for r in bad))
    return 0


if __name__ == "__main__":
    sys.exit(main())
