"""Differential tests on third-party models and data (the shared corpus; see tests/corpus.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import cimc

import corpus as corpus_module
from corpus import corpus_root, load_benchmark
from models import normalized_error, ort_batch, top1
from reference import evaluate_program



@pytest.fixture(scope="module")
def corpus() -> Path:
    return corpus_root()


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"corpus file {path} is missing")
    return path


def _read_pb(path: Path) -> np.ndarray:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(_need(path).read_bytes())
    return numpy_helper.to_array(tensor)


# -- the corpus location rule --------------------------------------------------------------------

def test_corpus_env_var_missing_folder_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("CIMC_CORPUS", str(tmp_path / "nowhere"))
    with pytest.raises(pytest.fail.Exception, match="CIMC_CORPUS"):
        corpus_root()


def test_corpus_absent_skips(monkeypatch, tmp_path):
    monkeypatch.delenv("CIMC_CORPUS", raising=False)
    monkeypatch.setattr(corpus_module, "DEFAULT_CORPUS", tmp_path / "absent")
    with pytest.raises(pytest.skip.Exception, match="corpus absent"):
        corpus_root()


def test_corpus_env_var_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("CIMC_CORPUS", str(tmp_path))
    assert corpus_root() == tmp_path


# -- mnist-8 ------------------------------------------------------------------------------------

SPREAD = load_benchmark("_shared").spread
MNIST_CALIBRATION = 500
MNIST_TEST = 2000


def _mnist(corpus: Path, name: str, count: int) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(_need(corpus / "data" / name)) as npz:
        pick = SPREAD(len(npz["x"]), count)              # the calibration set is sorted by class
        x = npz["x"][pick].reshape(-1, 1, 1, 28, 28).astype(np.float32)
        y = npz["y"][pick] if "y" in npz.files else None
    return x, y


@pytest.fixture(scope="module")
def mnist(corpus):
    path = _need(corpus / "models" / "mnist-8" / "model.onnx")
    calib, _ = _mnist(corpus, "mnist_train_5k.npz", MNIST_CALIBRATION)
    program = cimc.compile(path, "isaac", calibration={"Input3": calib})
    return path, program


def test_mnist8_accuracy_and_agreement(corpus, mnist):
    path, program = mnist
    x, y = _mnist(corpus, "mnist_test.npz", MNIST_TEST)
    assert x.shape == (MNIST_TEST, 1, 1, 28, 28) and y.shape == (MNIST_TEST,)
    result = cimc.run(program, {"Input3": x})
    (name,) = program.outputs
    got = result.outputs[name]
    ref = ort_batch(onnx.load(path), "Input3", x)
    assert got.shape == ref.shape == (MNIST_TEST, 1, 10)
    accuracy = float((top1(got) == y).mean())
    agreement = float((top1(got) == top1(ref)).mean())
    assert accuracy >= 0.98, f"accuracy {accuracy:.4f} (onnxruntime {(top1(ref) == y).mean():.4f})"
    assert agreement >= 0.99, f"top-1 agreement with onnxruntime {agreement:.4f}"
    assert 0 < result.stats["pe_utilization"] <= 1 and result.stats["latency_cycles"] > 0
    exact = evaluate_program(program, {"Input3": x[:200]})[name]
    assert normalized_error(got[:200], exact) < 1e-5


@pytest.mark.parametrize("case", [0, 1, 2])
def test_mnist8_reference_pairs(corpus, mnist, case):
    _, program = mnist
    folder = corpus / "models" / "mnist-8" / f"test_data_set_{case}"
    x = _read_pb(folder / "input_0.pb")
    expected = _read_pb(folder / "output_0.pb")
    assert x.shape == (1, 1, 28, 28)
    got = cimc.run(program, {"Input3": x}).outputs[next(iter(program.outputs))]
    assert got.shape == expected.shape
    err = normalized_error(got, expected)
    assert err < 3e-2, f"normalized error {err:.4f}"
    assert int(got.argmax()) == int(expected.argmax())


# -- MLPerf Tiny ResNet-8 ---------------------------------------------------------------------

def _cifar(corpus: Path, name: str, count: int) -> np.ndarray:
    with np.load(_need(corpus / "data" / name)) as npz:
        x = npz["x"][SPREAD(len(npz["x"]), count)]           # sorted by class
    assert x.shape[1:] == (32, 32, 3)
    return x.transpose(0, 3, 1, 2)[:, None].astype(np.float32)          # HWC -> [N, 1, 3, 32, 32]


def test_resnet8_agreement(corpus):
    path = _need(corpus / "models" / "mlperf_tiny_resnet8_cifar10.onnx")
    calib = _cifar(corpus, "cifar10_train_1k.npz", 200)
    program = cimc.compile(path, "isaac", calibration={"input_1": calib})
    assert program.report["crossbars_used"] > 9
    x = _cifar(corpus, "cifar10_test.npz", 500)
    got = cimc.run(program, {"input_1": x}).outputs[next(iter(program.outputs))]
    ref = ort_batch(onnx.load(path), "input_1", x)
    assert got.shape == ref.shape == (500, 1, 10)
    agreement = float((top1(got) == top1(ref)).mean())
    assert agreement >= 0.95, f"top-1 agreement with onnxruntime {agreement:.4f}"
    exact = evaluate_program(program, {"input_1": x[:100]})[next(iter(program.outputs))]
    assert normalized_error(got[:100], exact) < 1e-5


def test_vww_mobilenet_depthwise_matches_quantized_reference(corpus):
    """MobileNetV1 (13 depthwise convolutions): the runtime computes the program's quantized arithmetic.

    No labels ship with this model; CIFAR-10 images upscaled 3x stand in for 96x96 inputs. The
    reference (tests/reference.py) evaluates the same integer weights and scales on the graph.
    """
    path = _need(corpus / "models" / "mlperf_tiny_vww_mobilenetv1_96.onnx")

    def upscale(x):
        return x.repeat(3, axis=3).repeat(3, axis=4)          # [N, 1, 3, 32, 32] -> 96x96
    calib = upscale(_cifar(corpus, "cifar10_train_1k.npz", 32))
    program = cimc.compile(path, "isaac", calibration={"input_1": calib})
    groups = [n["attrs"].get("group", 1) for n in program.nodes if n["op"] == "Conv"]
    assert sum(g > 1 for g in groups) == 13
    x = upscale(_cifar(corpus, "cifar10_test.npz", 48))
    name = next(iter(program.outputs))
    got = cimc.run(program, {"input_1": x}).outputs[name]
    exact = evaluate_program(program, {"input_1": x})[name]
    assert got.shape == exact.shape == (48, 1, 2)
    err = normalized_error(got, exact)
    assert err < 1e-5, f"normalized error {err:.3g} against the quantized reference"
