"""Design-space sweeps: many compiles (and runs) of models over target and compiler parameters.

``cimc sweep SPEC.toml -o RESULTS`` and ``cimc.sweep(spec)`` expand a spec
(:mod:`~cimc.sweep.spec`) into content-addressed tasks (:mod:`~cimc.sweep.points`), run the
missing ones on a local process pool or on Ray (:mod:`~cimc.sweep.executors`,
:mod:`~cimc.sweep.evaluate`), keep every finished one in a results store that survives
interruption (:mod:`~cimc.sweep.store`), and write the table, the Pareto plots and an HTML
report (:mod:`~cimc.sweep.table`, :mod:`~cimc.sweep.report`).
"""

from cimc.sweep.runner import sweep
from cimc.sweep.spec import SweepSpec, load_spec
from cimc.sweep.table import TIMING_COLUMNS, SweepTable

__all__ = ["SweepSpec", "SweepTable", "TIMING_COLUMNS", "load_spec", "sweep"]
