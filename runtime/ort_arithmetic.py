"""onnxruntime's int8 arithmetic where it departs from the specification, for the ``onnxruntime`` mode.

The ONNX specification sums integer products exactly, and so do the crossbars.
onnxruntime's u8 x s8 kernels on x86 with AVX2 but without VNNI (MLAS
``ConvSymKernelAvx2`` and ``MlasGemmU8S8KernelAvx2``) do not: ``vpmaddubsw``
adds each pair of adjacent products into a signed 16-bit lane, saturating, and
only those pair sums are accumulated exactly in 32 bits::

    acc = sum_j sat16(a[2j] w[2j] + a[2j+1] w[2j+1]) - x_zero * sum_k w[k]

``a`` are the raw uint8 activation codes (the zero point is taken off
afterwards, and padding holds the zero-point code), ``w`` the raw int8 weights,
K is ordered (kh, kw, c) as ORT's channels-last im2col orders it, and an odd K
is padded with a zero. The runtime keeps its exact sum and adds the correction
``sum_j (sat16(p_j) - p_j)``, which is zero unless a pair leaves int16; with
``a <= 255`` that needs two weights of one sign whose magnitudes add up to more
than 128, so only those weight pairs are ever evaluated.

Which layers ORT runs on these kernels (onnxruntime 1.31, measured bit-exact on
the corpus's int8 models): uint8 activations times int8 weights whose zero
points are all 0, in a layer that is not grouped, when it is a QLinearConv (or a
QDQ convolution ORT fuses into one: the layer has an output grid), a
QLinearMatMul, a QDQ Gemm/MatMul (ORT's QGemm) or a MatMulInteger. Not there:
uint8 weights (the U8U8 kernel widens to 16 bits and is exact), ConvInteger
(exact), and depthwise or grouped convolutions, which take other MLAS kernels
(``MlasConvSymDepthwise``, ``MlasConvDepthwise``) that are not reproduced here;
those layers keep the exact arithmetic.

One vector pattern rounds differently too: ORT fuses DequantizeLinear ->
GlobalAveragePool, or an AveragePool whose window covers the whole image, ->
QuantizeLinear into a quantized pool (``MlasQLinearGlobalAveragePoolNhwc`` /
``Nchw``) that sums the integer codes exactly and requantizes once,
``rint(float32(sum) * float32(x_scale / float32(y_scale * H * W)))``, where
the float pool's mean then quantized rounds some ties the other way (0.4 % of
the pooled codes of resnet8). :func:`requantized_pools` finds those pools in a
program and :func:`global_average_requantized` computes them.

Everything else the corpus's models do in integers already rounds as ORT does:
QuantizeLinear is a float32 division rounded half to even, requantization is
``rint(float32(acc) * float32(float32(x_scale * w_scale) / y_scale))``, and
QLinearAdd's fused multiply-adds give the float Add's results on these models.
ORT's QLinearSoftmax (a lookup table) is not reproduced: the float Softmax then
quantized differs from it by at most one step, on about 10 % of resnet8's
outputs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
#: Largest raw uint8 activation code.
CODE_MAX = 255
#: Weight pairs of one sign whose magnitudes add up to more than this can leave int16
#: (255 * 128 = 32640 cannot).
SAFE_PAIR_MAGNITUDE = 128
#: Gathered products per row chunk: bounds the memory of the correction.
CHUNK_ELEMENTS = 1 << 22


@functools.cache
def onnxruntime_saturates() -> bool:
    """Whether the installed onnxruntime saturates u8 x s8 pair sums on this CPU (probed once).

    MLAS picks its kernels at run time from the CPU: VNNI (``vpdpbusds``), AMX and
    ARM kernels are exact, the AVX2 ones saturate (and very likely the AVX-512 ones
    without VNNI, untested). The CPU flags alone do not say which kernel a given
    ORT build runs, so this runs
    two tiny QLinearConvs built to overflow int16 (inputs 255, weights 127), one
    for each kernel family: a 1x1 convolution with C=4, M=16 takes ``MlasConvSym``
    (it needs C % 4 == 0, M % 8 == 0, M >= 16) and a 3x3 one with C=1 the im2col
    GEMM. True when both give the saturated result, so emulation is needed.
    """
    return all(_probe_saturates(channels, size) for channels, size in ((4, 1), (1, 3)))


def _probe_saturates(channels: int, size: int) -> bool:
    """Whether a QLinearConv of ``channels`` x ``size`` x ``size`` taps, all 255 x 127, saturates."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = np.full((16, channels, size, size), 127, np.int8)
    constants = {"xs": np.float32(1.0), "xz": np.uint8(0), "w": w, "ws": np.float32(1.0), "wz": np.int8(0),
                 "ys": np.float32(1024.0), "yz": np.uint8(0)}
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"],
                            kernel_shape=[size, size])
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": np.full((1, channels, size, size), CODE_MAX, np.uint8)})[0]
    taps = channels * size * size
    exact = round(CODE_MAX * 127 * taps / 1024)
    saturated = round((INT16_MAX * (taps // 2) + CODE_MAX * 127 * (taps % 2)) / 1024)
    return int(y.ravel()[0]) == saturated != exact


def saturating_layer(op: str, quant: dict, w_zero: np.ndarray | None, group: int) -> bool:
    """Whether onnxruntime computes this crossbar layer with the saturating u8 x s8 kernels.

    Only layers whose quantization the model gave (``w_type`` set) qualify; see
    the module docstring for the rule and why ConvInteger and grouped
    convolutions are left out.
    """
    if quant.get("w_type") != "int8" or w_zero is None or np.any(w_zero != 0) or group != 1:
        return False
    if quant["x_signed"] or quant["x_bits"] != 8:
        return False
    return op == "MatMul" or quant["out"] is not None


@dataclass(frozen=True)
class SaturatingPairs:
    """The weight pairs of a (K, N) matrix whose pair sums can leave int16, grouped by column.

    ``first`` is the K index of a pair's first element (its second is the next
    one), ``w_first`` / ``w_second`` its two weights; the pairs of output column
    ``columns[i]`` are ``starts[i]`` up to ``starts[i + 1]``.
    """

    first: np.ndarray
    w_first: np.ndarray
    w_second: np.ndarray
    columns: np.ndarray
    starts: np.ndarray
    n: int


def saturating_pairs(w: np.ndarray, owned: np.ndarray | None = None) -> SaturatingPairs | None:
    """The pairs of raw int8 weights ``w`` (K, N), in ORT's K order, that can saturate; None if none can.

    ``owned`` (K, N), when given, keeps only the pairs whose first weight is marked:
    a layer spread over tiles corrects each pair in one of them.
    """
    k, n = w.shape
    w = np.asarray(w, dtype=np.int32)
    if k % 2:                                    # the lone last weight pairs with a zero
        w = np.concatenate([w, np.zeros((1, n), np.int32)])
    w0, w1 = w[0::2], w[1::2]                    # (K/2, N)
    candidate = (w0 * w1 > 0) & (np.abs(w0 + w1) > SAFE_PAIR_MAGNITUDE)
    if owned is not None:
        candidate &= np.asarray(owned, dtype=bool)[0::2]
    column, pair = np.nonzero(candidate.T)        # column-major: each column's pairs together
    if column.size == 0:
        return None
    columns, starts = np.unique(column, return_index=True)
    return SaturatingPairs(first=2 * pair, w_first=w0[pair, column], w_second=w1[pair, column],
                           columns=columns, starts=starts, n=n)


def pair_saturation(codes: np.ndarray, pairs: SaturatingPairs, offset: int = 0) -> np.ndarray:
    """``sum_j (sat16(p_j) - p_j)`` per row and column: what to add to the exact sums ``codes @ w``.

    ``codes`` (R, K) are activation codes in ORT's K order; ``codes + offset`` must
    be the raw uint8 codes ORT multiplies (the runtime's codes are centred on the
    zero point). Products are formed only for the candidate pairs, in row chunks.
    """
    rows = codes.shape[0]
    out = np.zeros((rows, pairs.n), dtype=np.int32)
    step = max(1, CHUNK_ELEMENTS // pairs.first.size)
    for r0 in range(0, rows, step):
        chunk = codes[r0:r0 + step]
        a0 = chunk[:, pairs.first].astype(np.int32) + offset
        a1 = chunk[:, pairs.first + 1].astype(np.int32) + offset
        p = a0 * pairs.w_first + a1 * pairs.w_second
        excess = np.clip(p, INT16_MIN, INT16_MAX) - p
        out[r0:r0 + step, pairs.columns] = np.add.reduceat(excess, pairs.starts, axis=1)
    return out


@dataclass(frozen=True)
class Grid:
    """A per-tensor integer grid: ``real = (q - zero) * scale`` with ``qmin <= q <= qmax``."""

    scale: np.float32
    zero: int
    qmin: int
    qmax: int


@dataclass(frozen=True)
class RequantizedPool:
    """An average pool over the whole image from grid ``x`` to grid ``y``: a quantized pool for ORT."""

    x: Grid
    y: Grid


def requantized_pools(nodes: list[dict], constants: dict[str, np.ndarray],
                      shapes: dict[str, list[int]]) -> dict[str, RequantizedPool]:
    """The pools of a program that onnxruntime runs as a quantized global average pool.

    Such a pool averages the whole image of an 8-bit quantized tensor (a FakeQuant,
    maybe behind the Identity a DequantizeLinear became) and is read only by a
    FakeQuant to 8 bits: ORT fuses the three into one quantized operator.
    """
    producer = {t: n for n in nodes for t in n["outputs"]}
    readers: dict[str, list[dict]] = {}
    for n in nodes:
        for t in n["inputs"]:
            readers.setdefault(t, []).append(n)
    pools = {}
    for n in nodes:
        if not (n["op"] == "GlobalAveragePool"
                or n["op"] == "AveragePool" and _whole_image(n["attrs"], shapes[n["inputs"][0]])):
            continue
        source = producer.get(n["inputs"][0])
        if source is not None and source["op"] == "Identity":
            source = producer.get(source["inputs"][0])
        sinks = readers.get(n["outputs"][0], [])
        if source is None or source["op"] != "FakeQuant" or len(sinks) != 1 or sinks[0]["op"] != "FakeQuant":
            continue
        x, y = _grid(source, constants), _grid(sinks[0], constants)
        if x is not None and y is not None and x.qmax - x.qmin == y.qmax - y.qmin == 255:
            pools[n["name"]] = RequantizedPool(x, y)
    return pools


def _whole_image(attrs: dict, shape: list[int]) -> bool:
    return (attrs.get("rank", 2) == 2 and list(attrs["kernel"]) == list(shape[-2:])
            and not any(attrs["pads"]) and list(attrs["output_hw"]) == [1, 1])


def _grid(fake_quant: dict, constants: dict[str, np.ndarray]) -> Grid | None:
    """A FakeQuant's grid when it is per tensor (its scale and zero point are constants)."""
    scale, zero = constants.get(fake_quant["inputs"][1]), constants.get(fake_quant["inputs"][2])
    if scale is None or zero is None or scale.size != 1 or zero.size != 1:
        return None
    attrs = fake_quant["attrs"]
    return Grid(np.float32(scale.reshape(())), int(zero.reshape(())), attrs["qmin"], attrs["qmax"])


def global_average_requantized(x: np.ndarray, pool: RequantizedPool) -> np.ndarray:
    """``MlasQLinearGlobalAveragePool*`` on real values ``x`` (B, N, C, *spatial) of grid ``pool.x``.

    The centred codes are summed exactly, the sum requantized in float32 with
    ``float32(x_scale / float32(y_scale * image size))``, rounded half to even and
    saturated; the result is returned as its real value on ``pool.y``, (B, N, C, 1, ...).
    """
    axes = tuple(range(3, x.ndim))
    count = int(np.prod(x.shape[3:]))
    codes = np.rint(x / pool.x.scale)                            # exact: |code| <= 2^16
    total = codes.sum(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
    scale = pool.x.scale / (pool.y.scale * np.float32(count))
    y = np.clip(np.rint(total * scale), pool.y.qmin - pool.y.zero, pool.y.qmax - pool.y.zero)
    return (y * pool.y.scale).astype(np.float32)
