"""ONNX import: validation, opset conversion, constant folding, and lowering to the IR.

The frontend is the only module that knows ONNX. It checks the model, converts
old opsets, fixes input shapes, folds every subgraph that does not depend on a
graph input (the ``light_*`` zoo models build their weights from
ConstantOfShape), runs shape inference, and hands each remaining node to the
importer registered for its op type in :mod:`cimc.importers`. Anything without
an importer is refused with the node's name, its op type and the supported list.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference, version_converter
from onnx.reference import ReferenceEvaluator

from cimc.errors import ModelError, UnsupportedOperatorError
from cimc.importers import IMPORTERS, ImportContext, QuantizedConstant
from cimc.inputs import check_memory
from cimc.ir import Graph, Node, Tensor

#: Models older than this opset are converted to it, so importers see one semantics per op.
MIN_OPSET = 13
#: Operators never folded even when their inputs are constant.
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Multinomial", "Bernoulli"}


@dataclass(frozen=True)
class ImportedModel:
    graph: Graph
    model_hash: str
    opset: int
    source: str


def load_model(model: "str | Path | onnx.ModelProto") -> tuple[onnx.ModelProto, bytes, str]:
    """Read a model from a path or take a ``ModelProto``; raise :class:`ModelError` if unreadable."""
    if isinstance(model, onnx.ModelProto):
        return model, model.SerializeToString(), "<ModelProto>"
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    data = path.read_bytes()
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and, on some inputs, RuntimeError
        raise ModelError(f"{path} is not an ONNX model ({type(exc).__name__}: {exc})") from None
    if not proto.HasField("graph") or not proto.opset_import:
        raise ModelError(f"{path} is not an ONNX model (no graph or no opset import)")
    return proto, data, str(path)


def parse_input_shapes(specs: "list[str] | dict[str, tuple[int, ...]] | None") -> dict[str, tuple[int, ...]]:
    """``["x=1x3x224x224"]`` -> ``{"x": (1, 3, 224, 224)}``."""
    if not specs:
        return {}
    if isinstance(specs, dict):
        return {k: tuple(int(d) for d in v) for k, v in specs.items()}
    shapes = {}
    for spec in specs:
        name, sep, dims = spec.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise ModelError(f"--input-shape {spec!r} is not of the form NAME=1x3x224x224")
        shapes[name] = shape
    return shapes


def _one_line(exc: Exception, limit: int = 400) -> str:
    """An exception's message on one line: the checker spreads a node's description over several."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ModelError("model imports no version of the default ONNX operator set")


def _fix_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> None:
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = {i.name: i for i in model.graph.input if i.name not in initializers}
    for name in shapes:
        if name not in graph_inputs:
            raise ModelError(f"--input-shape names {name!r}, which is not a model input; inputs: "
                             f"{', '.join(graph_inputs)}")
    for name, value in graph_inputs.items():
        dims = value.type.tensor_type.shape.dim
        if name in shapes:
            new = shapes[name]
            if len(new) != len(dims):
                raise ModelError(f"--input-shape {name}: rank {len(new)} given, model input has rank "
                                 f"{len(dims)}")
            for d, n in zip(dims, new):
                if d.HasField("dim_value") and d.dim_value not in (0, n):
                    raise ModelError(f"--input-shape {name}: dimension {n} conflicts with the model's "
                                     f"fixed {d.dim_value}")
                d.Clear()
                d.dim_value = n
        elif any(d.HasField("dim_value") and d.dim_value == 0 for d in dims):
            shown = "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)
            raise ModelError(f"model input {name!r} has an empty dimension (shape {shown}); cimc runs models "
                             f"whose inputs hold at least one element")
        elif any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
            shown = "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                             for d in dims)
            example = "x".join(str(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0
                               else "1" for d in dims)
            raise ModelError(f"model input {name!r} has dynamic shape {shown}; fix it with "
                             f"--input-shape {name}={example}")


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise ModelError(f"shape inference failed: {exc}".splitlines()[0]) from None


def _infer_declared(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]]]:
    """Strict shape inference of the model as given; the static shapes its graph outputs declare.

    A ceil_mode pool whose last window onnxruntime drops makes the model's declared shapes
    (exporters declare what the runtime computes) contradict ONNX's own inference, which keeps the
    window, before :func:`_settle_ceil_mode` can reconcile the two. When the declared shapes are
    the only conflict, inference runs without them; the caller checks the graph outputs' declared
    shapes against the settled ones.
    """
    try:
        return _infer(model), {}
    except ModelError as first:
        declared = {}
        for out in model.graph.output:
            dims = out.type.tensor_type.shape.dim
            if out.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                declared[out.name] = tuple(d.dim_value for d in dims)
        stripped = onnx.ModelProto()
        stripped.CopyFrom(model)
        del stripped.graph.value_info[:]
        for out in stripped.graph.output:
            out.type.tensor_type.ClearField("shape")
        try:
            return _infer(stripped), declared
        except ModelError:
            raise first from None


def _check_declared(model: onnx.ModelProto, declared: dict[str, tuple[int, ...]]) -> None:
    for out in model.graph.output:
        if out.name in declared:
            shape = tuple(d.dim_value for d in out.type.tensor_type.shape.dim)
            if shape != declared[out.name]:
                raise ModelError(f"graph output {out.name!r} is declared with shape {list(declared[out.name])} "
                                 f"but the model computes {list(shape)}")


def _fold_constants(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, QuantizedConstant]]:
    """Evaluate every node whose inputs are all known, with ONNX's reference evaluator.

    ``Shape`` of a statically shaped tensor is known too, which removes the
    Shape/Gather/Concat chains PyTorch exports put in front of Reshape. A folded
    DequantizeLinear also leaves its integer form behind, so quantized weights and
    biases keep their exact integers.
    """
    graph = model.graph
    known: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    static_shapes: dict[str, tuple[int, ...]] = {}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            static_shapes[vi.name] = tuple(d.dim_value for d in dims)
    opsets = {imp.domain or "": imp.version for imp in model.opset_import}
    integers: dict[str, QuantizedConstant] = {}
    kept = []
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "Shape" and node.input[0] in static_shapes and node.domain in ("", "ai.onnx"):
            shape = np.array(static_shapes[node.input[0]], dtype=np.int64)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            known[node.output[0]] = shape[attrs.get("start", 0):attrs.get("end", len(shape))]
            continue
        foldable = (node.op_type not in _NONDETERMINISTIC and node.domain in ("", "ai.onnx")
                    and all(i in known for i in inputs) and node.op_type != "Identity"
                    and not any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute))
        if foldable and (inputs or node.op_type in ("Constant", "ConstantOfShape")):
            count = sum(math.prod(static_shapes[o]) for o in node.output if o in static_shapes)
            check_memory(8 * count, f"folding node {node.name!r} ({node.op_type}) into a constant of "
                                    f"{count:,} values", "the model's constants must fit in memory")
            try:
                values = ReferenceEvaluator(node, opsets=opsets).run(
                    None, {i: known[i] for i in inputs})
            except Exception as exc:
                raise ModelError(f"node {node.name!r} ({node.op_type}) failed while folding constants: "
                                 f"{exc}".splitlines()[0]) from None
            for name, value in zip(node.output, values):
                if name:
                    known[name] = np.asarray(value)
            if node.op_type == "DequantizeLinear":
                args = [known[i] for i in node.input if i]
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                integers[node.output[0]] = QuantizedConstant(
                    args[0], args[1], args[2] if len(args) > 2 else np.zeros_like(args[0], shape=()),
                    axis % max(args[0].ndim, 1))
            continue
        kept.append(node)
    used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    new_graph = onnx.helper.make_graph(
        kept, graph.name,
        [i for i in graph.input if i.name not in known],
        list(graph.output),
        [numpy_helper.from_array(v, name=k) for k, v in known.items() if k in used])
    out = onnx.helper.make_model(new_graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return out, integers


def _settle_ceil_mode(model: onnx.ModelProto) -> bool:
    """Make ONNX's shape inference agree with onnxruntime on ceil_mode pools.

    onnxruntime and ONNX's reference evaluator drop a last window that would
    start in the end padding (or past the input); ONNX's shape inference keeps
    it, and every shape downstream would inherit the extra row. Such an axis has
    exactly the floor-mode size, so the node becomes floor mode when no axis
    needs ceil; otherwise the dropped axes' end padding is trimmed to what the
    kept windows reach. Kept windows are unchanged either way.
    """
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(model.graph.input) + list(model.graph.value_info)}
    changed = False
    for node in model.graph.node:
        if node.op_type not in ("MaxPool", "AveragePool") or node.input[0] not in shapes:
            continue
        attrs = {a.name: a for a in node.attribute}
        if "ceil_mode" not in attrs or not attrs["ceil_mode"].i:
            continue
        spatial = shapes[node.input[0]][2:]
        rank = len(spatial)
        kernel = list(attrs["kernel_shape"].ints)
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * rank
        dilations = list(attrs["dilations"].ints) if "dilations" in attrs else [1] * rank
        pads = list(attrs["pads"].ints) if "pads" in attrs else [0] * (2 * rank)
        dropped, needs_ceil = [], False
        for i in range(rank):
            reach = (kernel[i] - 1) * dilations[i] + 1
            span = spatial[i] + pads[i] + pads[i + rank] - reach
            ceil_out, floor_out = -(-span // strides[i]) + 1, span // strides[i] + 1
            if (ceil_out - 1) * strides[i] >= spatial[i] + pads[i]:
                dropped.append((i, floor_out, reach))
            elif ceil_out != floor_out:
                needs_ceil = True
        if not dropped:
            continue
        changed = True
        if not needs_ceil:
            attrs["ceil_mode"].i = 0
            continue
        for i, floor_out, reach in dropped:
            trimmed = (floor_out - 1) * strides[i] + reach - spatial[i] - pads[i]
            counted = node.op_type == "AveragePool" and "count_include_pad" in attrs \
                and attrs["count_include_pad"].i
            if trimmed < 0 or counted:
                raise UnsupportedOperatorError(
                    f"node {node.name!r} ({node.op_type}): ceil_mode where one axis drops a window "
                    f"that starts in the padding while another keeps a partial one is not supported")
            pads[i + rank] = trimmed
        attrs["pads"].ints[:] = pads
    return changed


def _legacy_resize_outputs(model: onnx.ModelProto) -> set[str]:
    """Outputs of the Upsample (opsets 7, 9) and Resize-10 nodes of a model older than opset 11."""
    return {n.output[0] for n in model.graph.node
            if n.op_type in ("Upsample", "Resize") and n.domain in ("", "ai.onnx")}


def _legacy_resize_modes(model: onnx.ModelProto, outputs: set[str]) -> None:
    """Give converted Upsample / Resize-10 nodes the coordinates they had before opset 11.

    onnx's version converter turns them into Resize-11+ without
    coordinate_transformation_mode, which then defaults to half_pixel. Before opset 11
    (and in onnxruntime for those opsets) coordinates are asymmetric, ``x_out / scale``,
    and the nearest pixel is the truncated coordinate when upsampling, its ceiling
    when downsampling (onnxruntime's nearest mode for Resize-10): floor and ceil for
    the non-negative coordinates asymmetric gives. Scales that are not constants yet
    count as upsampling (Upsample allows nothing else); the frontend calls this again
    after folding, when computed scales are known.
    """
    if not outputs:
        return
    known = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            known[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    for node in model.graph.node:
        if node.op_type != "Resize" or node.output[0] not in outputs:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("mode", b"nearest")
        settings = {"coordinate_transformation_mode": "asymmetric"}
        if (mode.decode() if isinstance(mode, bytes) else mode) == "nearest":
            scales = known.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            down = scales is not None and bool((np.asarray(scales) < 1).any())
            up = scales is not None and bool((np.asarray(scales) > 1).any())
            if down and up:
                raise UnsupportedOperatorError(
                    f"node {node.name or node.output[0]!r} (Resize, opset < 11): nearest resizing that "
                    f"upsamples some axes and downsamples others is not supported (onnxruntime rounds "
                    f"them differently); supported: upsampling or downsampling only")
            settings["nearest_mode"] = "ceil" if down else "floor"
        kept = [a for a in node.attribute if a.name not in settings]
        del node.attribute[:]
        node.attribute.extend(kept + [onnx.helper.make_attribute(k, v) for k, v in settings.items()])


def _freeze_inputs(model: onnx.ModelProto, constants: dict[str, np.ndarray]) -> None:
    """Turn the named graph inputs into initializers (weights supplied apart from the graph)."""
    inputs = {i.name: i for i in model.graph.input}
    for name, value in constants.items():
        if name not in inputs:
            raise ModelError(f"constant {name!r} is not a model input; inputs: {', '.join(inputs)}")
        elem = inputs[name].type.tensor_type.elem_type
        array = np.asarray(value, dtype=onnx.helper.tensor_dtype_to_np_dtype(elem))
        model.graph.initializer.append(numpy_helper.from_array(array, name=name))


def import_onnx(model: "str | Path | onnx.ModelProto",
                input_shapes: "list[str] | dict[str, tuple[int, ...]] | None" = None,
                constants: dict[str, np.ndarray] | None = None, memory_check: bool = True) -> ImportedModel:
    """Import a model; ``constants`` fixes graph inputs (weights fed as inputs) to given values.

    ``memory_check``: refuse a model one inference of which cannot fit in this machine's memory
    (compile and run need that much; a mere look at the graph does not)."""
    proto, raw, source = load_model(model)
    model_hash = hashlib.sha256(raw).hexdigest()
    proto = onnx.ModelProto.FromString(raw) if isinstance(model, onnx.ModelProto) else proto
    if constants:
        _freeze_inputs(proto, constants)
    opset = _default_opset(proto)
    if opset > onnx.defs.onnx_opset_version():
        raise ModelError(f"{source} uses ONNX opset {opset}; this cimc (onnx {onnx.__version__}) knows opsets "
                         f"up to {onnx.defs.onnx_opset_version()}")
    # Weights that are also listed as graph inputs are constants, not user inputs.
    initializers = {i.name for i in proto.graph.initializer}
    kept_inputs = [i for i in proto.graph.input if i.name not in initializers]
    del proto.graph.input[:]
    proto.graph.input.extend(kept_inputs)
    proto.ir_version = max(proto.ir_version, 4)  # IR 4 lets initializers stand apart from inputs
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelError(f"{source} fails the ONNX checker: {_one_line(exc)}") from None
    legacy_resizes = _legacy_resize_outputs(proto) if opset < 11 else set()
    if opset < MIN_OPSET:
        try:
            proto = version_converter.convert_version(proto, MIN_OPSET)
        except Exception as exc:
            raise ModelError(f"cannot convert {source} from opset {opset} to {MIN_OPSET}: "
                             f"{str(exc).splitlines()[0]}") from None
        _legacy_resize_modes(proto, legacy_resizes)
    _fix_input_shapes(proto, parse_input_shapes(input_shapes))
    inferred, declared = _infer_declared(proto)
    folded, integers = _fold_constants(inferred)
    _legacy_resize_modes(folded, legacy_resizes)          # scales computed from shapes are known now
    proto = _infer(folded)
    if _settle_ceil_mode(proto):
        del proto.graph.value_info[:]
        for out in proto.graph.output:               # declared with the extra window too
            out.type.tensor_type.ClearField("shape")
        proto = _infer(proto)
    _check_declared(proto, declared)
    graph = _lower(proto, source, integers)
    if memory_check:
        _check_memory(graph, input_shapes)
    return ImportedModel(graph=graph, model_hash=model_hash, opset=max(opset, MIN_OPSET), source=source)


#: Model input types. The runtime computes in float32: float16 and float64 inputs are converted
#: (a float64 model is computed at float32 precision); integer inputs hold raw integers.
_INPUT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                onnx.TensorProto.UINT8, onnx.TensorProto.INT8,
                onnx.TensorProto.UINT16, onnx.TensorProto.INT16, onnx.TensorProto.INT32}


def _check_memory(graph: Graph, input_shapes) -> None:
    """Refuse up front a model one inference of which cannot fit in this machine's memory.

    The estimate is a lower bound: every activation of one inference in float32 (the runtime keeps
    each in a tile buffer; calibration evaluates the graph sample by sample), plus the constants.
    """
    values = sum(math.prod(t.shape) for t in graph.tensors.values() if not t.is_constant)
    constants = sum(t.data.nbytes for t in graph.tensors.values() if t.is_constant)
    largest = max((t for t in graph.tensors.values() if not t.is_constant), key=lambda t: math.prod(t.shape),
                  default=None)
    if largest is None:
        return
    fix = ("give smaller shapes with --input-shape" if input_shapes else
           "cimc needs the model's activations of one inference in memory")
    check_memory(4 * values + constants,
                 f"one inference of this model ({values:,} activation values; the largest, {largest.name!r}, "
                 f"is {'x'.join(map(str, largest.shape))})", fix)


def _constant_output(graph: Graph, name: str, declared: tuple[int, ...] | None) -> None:
    """A graph output that folded to a constant: a BatchConstant node repeats it over the batch (of the
    first graph input); nodes that read it keep reading the constant, under a new name. ``declared`` is
    the output's inferred shape (graph constants are at least 1-D, a scalar output is not)."""
    data = graph.tensors[name].data
    if declared is not None and min(declared, default=0) >= 0 and int(np.prod(declared)) == data.size:
        data = data.reshape(declared)
    if not graph.inputs:
        raise ModelError(f"graph output {name!r} is a constant and the model has no input; there is "
                         f"nothing to run")
    if data.dtype.kind not in "biuf" or (data.dtype.kind in "iu" and data.size
                                         and np.abs(data.astype(np.float64)).max() > 2 ** 24):
        raise UnsupportedOperatorError(
            f"graph output {name!r} is a constant of type {data.dtype.name} whose values float32 does not "
            f"hold exactly; supported: constant outputs of numbers exact in float32")
    value = name + ":value"
    while value in graph.tensors:
        value += "'"
    graph.add_constant(value, data)
    graph.replace_uses(name, value)
    dtype = data.dtype if data.dtype.kind in "iub" else np.dtype(np.float32)
    graph.add_tensor(Tensor(name, tuple(data.shape), dtype))
    graph.add_node(Node(f"{name}:constant", "BatchConstant", [graph.inputs[0], value], [name],
                        {"shape": list(data.shape)}))


def _lower(model: onnx.ModelProto, source: str, integers: dict[str, QuantizedConstant]) -> Graph:
    g = model.graph
    graph = Graph(g.name or Path(source).stem)
    for init in g.initializer:
        graph.add_constant(init.name, numpy_helper.to_array(init))
    shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        shapes[vi.name] = (dims, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
    for inp in g.input:
        dims, dtype = shapes[inp.name]
        if inp.type.tensor_type.elem_type not in _INPUT_TYPES:
            raise UnsupportedOperatorError(
                f"model input {inp.name!r} has type {np.dtype(dtype).name}; cimc takes float16/32/64 and "
                f"8/16/32-bit integer inputs")
        graph.add_tensor(Tensor(inp.name, dims, np.dtype(dtype)))
        graph.inputs.append(inp.name)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    ctx = ImportContext(graph, shapes, integers, consumers, {o.name for o in g.output})
    for index, node in enumerate(g.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"
        importer = IMPORTERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if importer is None:
            raise UnsupportedOperatorError(
                f"node {node.name!r} has operator {node.op_type}"
                + (f" (domain {node.domain})" if node.domain not in ("", "ai.onnx") else "")
                + f", which cimc does not support. Supported operators: {', '.join(sorted(IMPORTERS))}")
        for out in node.output:
            if out and out in shapes and min(shapes[out][0], default=1) < 0:
                raise ModelError(f"node {node.name!r} ({node.op_type}): output {out!r} has no static "
                                 f"shape after shape inference; fix the input shapes with --input-shape")
        importer(ctx, node)
    for out in g.output:
        if out.name not in graph.tensors:
            raise ModelError(f"graph output {out.name!r} is produced by no node")
        if out.name in graph.inputs:
            raise UnsupportedOperatorError(
                f"graph output {out.name!r} is a graph input passed through unchanged; supported: outputs "
                f"computed by the model's operators")
        if graph.tensors[out.name].is_constant:
            _constant_output(graph, out.name, shapes.get(out.name, (None,))[0])
        graph.outputs.append(out.name)
    graph.prune()
    return graph
