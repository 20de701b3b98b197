"""Numpy kernels for the IR's operators, batch-vectorized.

Convention: every activation carries one extra leading axis ``B`` (the batch of
independent inferences) in front of the model's own static shape, and every
constant is lifted to a leading axis of 1 by :func:`lift_constant`, so
operators broadcast over that axis without special cases. Attributes are the
normalized ones the importers produce (2-D windows, explicit pads).

Vector operators are registered in :data:`VECTOR_KERNELS` (one function per
operator, as in ONNX's reference evaluator); :func:`patches_nhwc` is the im2col
both the float evaluator and the crossbar runtime use.
"""

from cimc.runtime.kernels._base import VECTOR_KERNELS, Kernel, kernel, lift_constant
from cimc.runtime.kernels import elementwise, movement, normalization, pooling, quant, reduction, resize  # noqa: F401
from cimc.runtime.kernels.conv import conv_float, matmul_float, patches_nhwc, to_nhwc, weights_khwc

__all__ = ["VECTOR_KERNELS", "Kernel", "conv_float", "kernel", "lift_constant", "matmul_float", "patches_nhwc",
           "to_nhwc", "weights_khwc"]
