"""The reference runtime: kernels, the IR evaluator and the instruction-stream interpreter."""

from cimc.runtime import kernels, quant_kernels  # noqa: F401  (operator registration)
