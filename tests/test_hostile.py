"""Hostile inputs through the command line (``cimc.cli.main``): every one gets one clear message
(``cimc: error: ...``), exit status 2, no traceback, and leaves no file behind.

Cases already covered elsewhere are not repeated here; ``benchmarks/results/fuzz.md`` lists every
case with the test that covers it (test_cli.py: target TOML with a wrong type or an unknown key,
input arrays with a wrong name or shape or NaN, a truncated or edited ``.cimp``; test_program.py:
single flipped bytes all over the middle of a ``.cimp``, truncations, a future format version
through the API).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cimc.inputs
import cimc.program
from cimc.cli import main
from cimc.program import FORMAT_VERSION, Program

from conftest import uniform
from models import conv_net, make_model, vinfo
from test_cli import _fails, files  # noqa: F401  (files: the shared model, inputs and program)

SMALL = "small"


def _raw_model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    """A model as written, without the checker (hostile models do not pass it)."""
    graph = helper.make_graph(nodes, "hostile", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _compile_fails(capsys, folder: Path, model, *extra) -> str:
    """Compile ``model`` (a ModelProto, saved first, or a path) in ``folder``; expect a user error."""
    path = model if isinstance(model, Path) else folder / "hostile.onnx"
    if not isinstance(model, Path):
        path.write_bytes(model.SerializeToString())
    return _fails(capsys, ["compile", path, "-t", SMALL, "-o", folder / "out.cimp",
                           "--report-json", folder / "report.json", *extra], folder)


def _random_bytes(seed: int, size: int, prefix: bytes = b"") -> bytes:
    return prefix + np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


# -- files of random bytes, for every file argument -----------------------------------------------

@pytest.mark.parametrize("seed,size,prefix", [(0, 1, b""), (1, 100, b""), (2, 5000, b""), (3, 3000, b"PK\x03\x04"),
                                              (4, 3000, b"CIMP"), (5, 3000, b"\x08\x08\x12")])
@pytest.mark.parametrize("role", ["model", "inspect", "target", "calibration", "program", "inspect-program",
                                  "input", "check"])
def test_random_bytes(files, tmp_path, capsys, role, seed, size, prefix):
    """Random bytes (some starting like a zip, a .cimp or a protobuf) wherever cimc reads a file."""
    junk = tmp_path / {"target": "junk.toml", "calibration": "junk.npz", "input": "junk.npz",
                       "program": "junk.cimp", "inspect-program": "junk.cimp"}.get(role, "junk.onnx")
    junk.write_bytes(_random_bytes(seed, size, prefix))
    out = tmp_path / "out.cimp"
    argv = {
        "model": ["compile", junk, "-t", SMALL, "-o", out],
        "inspect": ["inspect", junk],
        "target": ["compile", files / "model.onnx", "-t", junk, "-o", out],
        "calibration": ["compile", files / "model.onnx", "-t", SMALL, "-o", out, "--calibration", junk],
        "program": ["run", junk, "--input", files / "inputs.npz", "--output", tmp_path / "o.npz"],
        "inspect-program": ["inspect", junk, "--program"],
        "input": ["run", files / "model.cimp", "--input", junk, "--stats-json", tmp_path / "s.json"],
        "check": ["run", files / "model.cimp", "--input", files / "inputs.npz", "--check", junk,
                  "--stats-json", tmp_path / "s.json"],
    }[role]
    line = _fails(capsys, argv, tmp_path)
    assert junk.name in line, line


# -- ONNX files -----------------------------------------------------------------------------------

def test_truncated_onnx_file(files, tmp_path, capsys):
    """Every 1/40th of a serialized model, from one byte to all but the last."""
    data = (files / "model.onnx").read_bytes()
    cuts = sorted({max(1, len(data) * i // 40) for i in range(40)} | {len(data) - 1})
    for cut in cuts:
        path = tmp_path / "cut.onnx"
        path.write_bytes(data[:cut])
        line = _fails(capsys, ["compile", path, "-t", SMALL, "-o", tmp_path / "out.cimp"], tmp_path)
        assert "cut.onnx" in line or "node" in line or "graph" in line, (cut, line)
        path.unlink()


def test_cycle(tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["b"], ["a"], name="first"), helper.make_node("Relu", ["a"], ["b"], name="second"),
             helper.make_node("Add", ["x", "b"], ["y"], name="add")]
    line = _compile_fails(capsys, tmp_path, _raw_model(nodes, [vinfo("x", [1, 4])], [vinfo("y", [1, 4])]))
    assert "topologically sorted" in line and "'b'" in line and "Relu" in line


def test_dangling_input(tmp_path, capsys):
    """A node reads a tensor nothing produces (and that is no graph input)."""
    nodes = [helper.make_node("Add", ["x", "ghost"], ["y"], name="add")]
    line = _compile_fails(capsys, tmp_path, _raw_model(nodes, [vinfo("x", [1, 4])], [vinfo("y", [1, 4])]))
    assert "'ghost'" in line and "Add" in line


def test_missing_initializer(tmp_path, capsys):
    """A Conv's weight names an initializer that is not there."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", kernel_shape=[1, 1])]
    model = _raw_model(nodes, [vinfo("x", [1, 3, 4, 4])], [vinfo("y", [1, 2, 4, 4])])
    line = _compile_fails(capsys, tmp_path, model)
    assert "'W'" in line and "Conv" in line


def test_weight_that_is_a_graph_input(tmp_path, capsys):
    """The weight is declared as a graph input, not an initializer: it is not known at compile time."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", kernel_shape=[1, 1])]
    model = _raw_model(nodes, [vinfo("x", [1, 3, 4, 4]), vinfo("W", [2, 3, 1, 1])], [vinfo("y", [1, 2, 4, 4])])
    line = _compile_fails(capsys, tmp_path, model)
    assert "'conv'" in line and "constant weights" in line


def test_initializer_claiming_2_to_the_31_elements(tmp_path, capsys):
    """An initializer whose dims promise 2^31 x 3 values and whose data holds four."""
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2 ** 31, 3, 1, 1], raw_data=b"\0" * 16)
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", kernel_shape=[1, 1])]
    model = _raw_model(nodes, [vinfo("x", [1, 3, 4, 4])], [vinfo("y", [1, 2 ** 31, 4, 4])], [weight])
    line = _compile_fails(capsys, tmp_path, model)
    assert "tensor name: W" in line and "too small" in line


@pytest.fixture
def four_gib(monkeypatch):
    """A machine with 4 GiB available, whatever this one has: the refusals below do not depend on it."""
    monkeypatch.setattr(cimc.inputs, "available_memory", lambda: 4 << 30)


def test_input_of_2_to_the_31_elements(tmp_path, capsys, four_gib):
    """A model input of 2^31 elements: one inference needs more memory than the machine has. Refused up
    front, with the estimate, instead of an internal MemoryError (or the process being killed)."""
    w = np.ones((2, 1, 1, 1), np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", kernel_shape=[1, 1])]
    model = _raw_model(nodes, [vinfo("x", [1, 1, 2 ** 16, 2 ** 15])], [vinfo("y", [1, 2, 2 ** 16, 2 ** 15])],
                       [numpy_helper.from_array(w, "W")])
    line = _compile_fails(capsys, tmp_path, model)
    assert "6,442,450,944 activation values" in line and "24.0 GiB" in line and "4.0 GiB available" in line


def test_huge_input_shape_option(tmp_path, capsys, four_gib):
    """--input-shape asking for 2^31 elements of a dynamic input."""
    w = np.ones((2, 3, 1, 1), np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", kernel_shape=[1, 1])]
    model = _raw_model(nodes, [vinfo("x", [1, 3, "h", "w"])], [vinfo("y", [1, 2, "h", "w"])],
                       [numpy_helper.from_array(w, "W")])
    path = tmp_path / "dyn.onnx"
    onnx.save(model, path)
    line = _fails(capsys, ["compile", path, "-t", SMALL, "-o", tmp_path / "o.cimp", "--input-shape",
                           "x=1x3x65536x32768"], tmp_path)
    assert "GiB" in line and "--input-shape" in line


def test_constant_folding_bomb(tmp_path, capsys, four_gib):
    """ConstantOfShape of 2^32 values, summed to one number: folding it would allocate 16 GiB first."""
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="bomb"),
             helper.make_node("ReduceSum", ["big"], ["total"], name="sum", keepdims=0),
             helper.make_node("Add", ["x", "total"], ["y"], name="add")]
    model = _raw_model(nodes, [vinfo("x", [1, 4])], [vinfo("y", [1, 4])],
                       [numpy_helper.from_array(np.array([2 ** 16, 2 ** 16], np.int64), "shape")])
    line = _compile_fails(capsys, tmp_path, model)
    assert "'bomb'" in line and "4,294,967,296 values" in line


def test_astronomical_shape(tmp_path, capsys):
    """2^40 x 2^40 values: refused on any machine (no int64 overflow in the estimate)."""
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    model = _raw_model(nodes, [vinfo("x", [2 ** 40, 2 ** 40])], [vinfo("y", [2 ** 40, 2 ** 40])])
    line = _compile_fails(capsys, tmp_path, model)
    assert "2,417,851,639,229,258,349,412,352 activation values" in line


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("tensor,role,node", [("W", "weight", "conv"), ("B", "constant", "bias_add"),
                                              ("G", "weight", "fc"), ("GC", "bias", "fc")])
def test_non_finite_weights(tmp_path, capsys, value, tensor, role, node):
    """NaN and Inf in conv_net's Conv weight, its bias (an Add folded into the Conv), the Gemm weight and
    bias. They used to compile (with numpy warnings) into a program of garbage integers."""
    model = conv_net()
    for init in model.graph.initializer:
        if init.name == tensor:
            data = numpy_helper.to_array(init).copy()
            data.flat[data.size // 2] = value
            init.CopyFrom(numpy_helper.from_array(data, tensor))
    line = _compile_fails(capsys, tmp_path, model)
    assert f"'{node}'" in line and f"{role} '{tensor}'" in line and "NaN or infinite" in line


@pytest.mark.parametrize("variance,match", [(np.nan, "NaN or infinite"), (-1.0, "not positive")])
def test_non_finite_batch_norm(tmp_path, capsys, variance, match):
    params = {"s": np.ones(2, np.float32), "b": np.zeros(2, np.float32), "m": np.zeros(2, np.float32),
              "v": np.array([1.0, variance], np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", kernel_shape=[1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn")]
    model = make_model(nodes, [vinfo("x", [1, 3, 4, 4])], ["y"], {"W": np.ones((2, 3, 1, 1), np.float32), **params})
    line = _compile_fails(capsys, tmp_path, model)
    assert "'bn'" in line and match in line


def test_future_opset(tmp_path, capsys):
    model = conv_net()
    model.opset_import[0].version = 99
    line = _compile_fails(capsys, tmp_path, model)
    assert "opset 99" in line


def test_output_that_is_an_input(tmp_path, capsys):
    """A graph whose output is its input, unchanged: used to be an internal KeyError in code generation."""
    model = _raw_model([], [vinfo("x", [1, 4])], [vinfo("x", [1, 4])])
    line = _compile_fails(capsys, tmp_path, model)
    assert "'x'" in line and "passed through" in line


# -- target files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text,match", [
    ('name = "t"\ndescription = "d"\nchip = 3\n', "chip: expected a table"),
    ('name = 7\n', "'name' must be a string"),
    ("\xff\xfe not utf-8", "cannot read target file"),
])
def test_target_toml_of_the_wrong_structure(files, tmp_path, capsys, text, match):
    """Beyond test_cli's wrong field types and unknown keys: a section that is not a table, a name that
    is not a string, a file that is not UTF-8."""
    target = tmp_path / "t.toml"
    target.write_bytes(text.encode("latin-1"))
    line = _fails(capsys, ["compile", files / "model.onnx", "-t", target, "-o", tmp_path / "o.cimp"], tmp_path)
    assert match in line


# -- .cimp programs -------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["magic", "version", "hash", "first payload byte", "last byte"])
def test_flipped_byte_in_the_header_and_at_the_ends(files, tmp_path, capsys, where):
    """test_program.py flips every byte of the middle; these are the header's fields and the ends."""
    data = bytearray((files / "model.cimp").read_bytes())
    pos = {"magic": 1, "version": 4, "hash": 20, "first payload byte": 40, "last byte": len(data) - 1}[where]
    data[pos] ^= 0x01
    path = tmp_path / "flipped.cimp"
    path.write_bytes(bytes(data))
    for argv in (["run", path, "--input", files / "inputs.npz", "--output", tmp_path / "o.npz"],
                 ["inspect", path, "--schedule"]):
        line = _fails(capsys, argv, tmp_path)
        assert "flipped.cimp" in line


def test_future_format_version(files, tmp_path, capsys, monkeypatch):
    """A .cimp written by a future cimc, through the command line (test_program.py: through the API)."""
    program = Program.load(files / "model.cimp")
    program.manifest["format_version"] = FORMAT_VERSION + 1
    with monkeypatch.context() as m:
        m.setattr(cimc.program, "FORMAT_VERSION", FORMAT_VERSION + 1)
        data = program.to_bytes()
    path = tmp_path / "future.cimp"
    path.write_bytes(data)
    line = _fails(capsys, ["run", path, "--input", files / "inputs.npz", "--output", tmp_path / "o.npz"], tmp_path)
    assert f"version {FORMAT_VERSION + 1}" in line and f"version {FORMAT_VERSION})" in line


# -- run inputs and calibration data --------------------------------------------------------------

def _reading(files: Path, tmp_path: Path, role: str, data: Path) -> list:
    """The command that reads ``data`` in ``role``: `run --input` or `compile --calibration`."""
    if role == "input":
        return ["run", files / "model.cimp", "--input", data, "--output", tmp_path / "o.npz",
                "--stats-json", tmp_path / "s.json"]
    return ["compile", files / "model.onnx", "-t", SMALL, "-o", tmp_path / "o.cimp", "--calibration", data]


@pytest.mark.parametrize("array,match", [
    (np.zeros((1, 3, 8, 8), np.complex64), "dtype complex64"),
    (np.full((1, 3, 8, 8), "a"), "dtype <U1"),
    (np.empty((1, 3, 8, 8), object), "allow_pickle"),
    (np.zeros((1, 3, 8, 8), "datetime64[s]"), "dtype datetime64"),
    (np.full((2, 1, 3, 8, 8), np.inf, np.float32), "NaN or Inf"),
    (np.full((1, 3, 8, 8), 1e300), "beyond float32's range"),
    (np.zeros((0, 1, 3, 8, 8), np.float32), r"shape \(0, 1, 3, 8, 8\)"),
    (np.float32(1.0), r"shape \(\)"),
])
@pytest.mark.parametrize("role", ["input", "calibration"])
def test_bad_arrays(files, tmp_path, capsys, role, array, match):
    """Wrong dtypes, Inf, overflow to float32, an empty batch, a scalar (test_cli.py: wrong names, wrong
    shapes, NaN inputs)."""
    import re
    np.savez(tmp_path / "a.npz", x=array)
    line = _fails(capsys, _reading(files, tmp_path, role, tmp_path / "a.npz"), tmp_path)
    assert re.search(match, line), line


def _npz_claiming(path: Path, shape: tuple[int, ...]) -> None:
    """An .npz whose x.npy header promises ``shape`` float32 values and holds none."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", header.getvalue())


@pytest.mark.parametrize("role", ["input", "calibration"])
def test_huge_batch_is_refused_before_reading(files, tmp_path, capsys, role):
    """A batch of 2^31 samples: sized from the .npy header and refused with the estimate, before numpy
    tries to allocate 3 TiB."""
    _npz_claiming(tmp_path / "huge.npz", (2 ** 31, 1, 3, 8, 8))
    line = _fails(capsys, _reading(files, tmp_path, role, tmp_path / "huge.npz"), tmp_path)
    assert "2147483648x1x3x8x8 float32" in line and "3072.0 GiB" in line and "fewer samples" in line


def test_batch_too_large_for_this_machine(files, tmp_path, capsys, four_gib):
    """The same check with an ordinary-sized file on a (simulated) 4 GiB machine: 2^23 samples of
    192 float32 values are 6 GiB stored plus 6 GiB converted."""
    _npz_claiming(tmp_path / "big.npz", (2 ** 23, 1, 3, 8, 8))
    line = _fails(capsys, ["run", files / "model.cimp", "--input", tmp_path / "big.npz"], tmp_path)
    assert "12.0 GiB" in line and "4.0 GiB available" in line


def test_batch_too_large_through_the_api(files, monkeypatch):
    """cimc.run with an in-memory float64 batch whose float32 copy would not fit."""
    from cimc.errors import CapacityError
    monkeypatch.setattr(cimc.inputs, "available_memory", lambda: 1 << 20)     # 1 MiB
    program = Program.load(files / "model.cimp")
    with pytest.raises(CapacityError, match="float32"):
        cimc.run(program, {"x": np.zeros((2000, 1, 3, 8, 8))})


def test_available_memory_is_plausible():
    avail = cimc.inputs.available_memory()
    assert avail is None or 0 <= avail < 1 << 50


# -- what remains in files this change does not own -----------------------------------------------

def test_run_refuses_a_batch_whose_execution_cannot_fit(files, monkeypatch):
    """Float32 inputs (no conversion copy) on a (simulated) machine with 16 KiB free: one inference of
    conv_net holds about 1,500 activation values, which the runtime itself sizes at 24 bytes each."""
    from cimc.errors import CapacityError
    program = Program.load(files / "model.cimp")
    monkeypatch.setattr(cimc.inputs, "available_memory", lambda: 16 << 10)
    with pytest.raises(CapacityError, match="memory"):
        cimc.run(program, {"x": uniform(conv_net(), 4, seed=0)})


def test_inspect_a_model_too_large_to_run(tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    model = _raw_model(nodes, [vinfo("x", [2 ** 40, 2 ** 40])], [vinfo("y", [2 ** 40, 2 ** 40])])
    onnx.save(model, tmp_path / "huge.onnx")
    assert main(["inspect", str(tmp_path / "huge.onnx")]) == 0
    assert "1099511627776x1099511627776" in capsys.readouterr().out
