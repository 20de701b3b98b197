"""One importer per ONNX operator: normalize attributes and emit IR nodes.

Importers see a node whose constant inputs are already folded and whose tensors
all have static shapes. They resolve every ONNX convenience (``auto_pad``,
``ceil_mode``, Gemm's ``alpha``/``beta``/transposes, Flatten's axis, negative
axes) into explicit attributes, so passes and the runtime implement each
operator's semantics once. Each module registers its importers in
:data:`IMPORTERS` when imported.
"""

from cimc.importers import (crossbar, elementwise, movement, normalization, pooling,  # noqa: F401  (registration)
                            quantized, reduction, resize)
from cimc.importers._core import IMPORTERS, ImportContext, QuantizedConstant

__all__ = ["IMPORTERS", "ImportContext", "QuantizedConstant"]
