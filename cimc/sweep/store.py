"""The results store: one JSON file per finished task, named by its key, written durably.

``RESULTS/points/<key>.json`` and ``RESULTS/accuracy/<key>.json`` hold task records,
``RESULTS/schedules/<key>.html`` the schedule page of a compiled point. A record is written
to a temporary file, flushed to disk (fsync) and renamed over its name, and the folder
is synced: a record either exists whole or not at all, so a sweep killed at any moment
(power cut, SIGKILL) loses at most the tasks that were running, and a rerun skips every
task whose record exists. Only the process that runs the sweep writes here (workers return
records), so a worker orphaned by a kill cannot write behind a rerun's back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cimc.errors import SweepError
from cimc.fsutil import write_bytes_durably
from cimc.sweep.points import Task

KINDS = ("points", "accuracy")
SCHEDULES = "schedules"


def check_folder(root: Path) -> None:
    """Refuse, before any work, a results folder that cannot be one."""
    for parent in (root, *root.parents):
        if parent.exists():
            if not parent.is_dir():
                raise SweepError(f"cannot use {root} as the results folder: {parent} is a file")
            if not os.access(parent, os.W_OK):
                raise SweepError(f"cannot use {root} as the results folder: {parent} is not writable")
            return


class Store:
    """A results folder, used by one sweep at a time: opening it removes the temporary files a
    killed sweep may have left half-written."""

    def __init__(self, root: "str | Path") -> None:
        self.root = Path(root)
        for name in (*KINDS, SCHEDULES):
            folder = self.root / name
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def record(self, kind: str, key: str) -> dict | None:
        """The finished record, or None (absent, or unreadable: then the task runs again)."""
        try:
            return json.loads(self.path(kind, key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def done(self, task: Task) -> bool:
        return self.record(task.kind, task.key) is not None

    def save(self, record: dict) -> None:
        """The schedule page first, the record last: the record marks the task finished."""
        html = record.pop("schedule_html", None)
        if html is not None:
            write_bytes_durably(self.root / SCHEDULES / f"{record['key']}.html", html.encode("utf-8"))
        text = json.dumps(record, sort_keys=True, indent=1) + "\n"
        write_bytes_durably(self.path(record["kind"], record["key"]), text.encode("utf-8"))
