"""A sweep from spec to outputs: plan, connect the executor, run what is missing, write the outputs.

Order matters for bad input: the spec, the models, the data and the executor are all
checked before the results folder is created or any task runs, so a mistake costs one
clear message and leaves nothing behind.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from cimc.errors import SweepError
from cimc.sweep import report, table
from cimc.sweep.executors import Progress, duration, make_executor
from cimc.sweep.points import plan as make_plan
from cimc.sweep.spec import SweepSpec, load_spec
from cimc.sweep.store import Store, check_folder


def sweep(spec: "str | Path | dict | SweepSpec", output: "str | Path | None" = None, *, executor: str = "local",
          workers: int | None = None, address: str | None = None, progress: bool | None = None,
          stream: TextIO | None = None) -> table.SweepTable:
    """Run a design-space sweep and return its table; see ``cimc sweep --help``.

    ``spec``: a spec file, its parsed TOML (paths relative to the working folder) or a loaded
    :class:`~cimc.sweep.spec.SweepSpec`. ``output``: the results folder (default: next to the
    spec file, ``<stem>-results``); a rerun into the same folder skips every finished task.
    ``executor``: ``local`` (a process pool of ``workers``, default all cores) or ``ray`` (a
    Ray instance started here with ``workers`` CPUs, or the cluster at ``address``).
    ``progress``: show the progress line on ``stream`` (default stderr; by default only on a
    terminal). The table's ``summary`` says what ran and what was written.
    """
    if output is None:
        if not isinstance(spec, (str, Path)):
            raise SweepError("give the results folder: output=PATH")
        output = Path(spec).parent / f"{Path(spec).stem}-results"
    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    folder = Path(output)
    check_folder(folder)
    work = make_plan(spec)
    runner = make_executor(executor, workers, address)
    began = time.monotonic()
    try:
        store = Store(folder)
        todo = [t for t in work.tasks if not store.done(t)]
        bar = Progress(len(work.tasks), len(work.tasks) - len(todo), stream, progress, todo)
        for record in runner.run(todo, work.models):
            store.save(record)
            bar.update(record)
        bar.close()
    finally:
        runner.close()
    result = table.build(spec, work, store)
    failed = len(result.failed)
    summary = (f"{len(result)} points, {len(work.tasks)} tasks ({len(todo)} run now on the {runner.name} executor, "
               f"{len(work.tasks) - len(todo)} already done) in {duration(time.monotonic() - began)}"
               + (f"; {failed} points failed (see the error column)" if failed else ""))
    outputs = report.write(result, folder, summary)
    files = (f"{outputs.csv.name}" + (f", {outputs.parquet.name}" if outputs.parquet else "")
             + f", {len(outputs.plots) // 2} plots (SVG and PNG) in {report.PLOTS}/, {outputs.report.name}")
    return replace(result, summary=f"{summary}; wrote {files} in {folder}")
