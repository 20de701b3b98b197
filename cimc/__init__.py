"""cimc: a compiler from ONNX models to programs for tiled computing-in-memory accelerators.

The API mirrors the command line::

    program = cimc.compile("model.onnx", "isaac", calibration="calib.npz")
    program.save("model.cimp")
    result = cimc.run(cimc.Program.load("model.cimp"), {"input": x})
    result.outputs, result.stats
    table = cimc.sweep("sweep.toml")        # a design-space sweep (see cimc.sweep)
"""

__version__ = "0.1.0"

from cimc.errors import CimcError  # noqa: E402
from cimc.program import Program  # noqa: E402
from cimc.driver import compile  # noqa: E402,A001
from cimc.runtime.interpreter import Result, run  # noqa: E402
from cimc.sweep import sweep  # noqa: E402

__all__ = ["CimcError", "Program", "Result", "compile", "run", "sweep", "__version__"]
