"""The reference runtime: kernels, the IR evaluator and the instruction-stream interpreter."""
