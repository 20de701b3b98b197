"""Where tasks run: a local process pool (default) or Ray, behind one small interface.

An executor takes the tasks still to do and yields their records as they finish; the
caller stores each record at once. Both run the same function
(:func:`cimc.sweep.evaluate.run_task`) on the same task objects, so a record does not depend
on the executor. Everything that can refuse (Ray not installed, a cluster address nobody
answers on) refuses when the executor is made, before any task runs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Iterator, TextIO
from urllib.parse import urlsplit

from cimc.errors import SweepError
from cimc.sweep.evaluate import run_task, set_threads
from cimc.sweep.models import ModelRef, load
from cimc.sweep.points import Task

EXECUTORS = ("local", "ray")
#: Seconds to wait for a Ray cluster's port to answer before calling it unreachable.
CONNECT_TIMEOUT = 5.0
RESUME = "the finished tasks are saved: rerun the same command to finish the rest"


def make_executor(name: str, workers: int | None = None, address: str | None = None) -> "LocalExecutor | RayExecutor":
    if name not in EXECUTORS:
        raise SweepError(f"unknown executor {name!r}; available: {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise SweepError(f"--workers must be at least 1, not {workers}")
    if name == "local":
        if address is not None:
            raise SweepError("--address names a Ray cluster; use it with --executor ray")
        return LocalExecutor(workers or os.cpu_count() or 1)
    if workers is not None and address is not None:
        raise SweepError("--workers sets the CPUs of a Ray instance started here; the cluster at --address "
                         "runs as many tasks at once as it has CPUs (drop --workers)")
    return RayExecutor(workers, address)


def _worker_init(threads: int) -> None:
    """Each pool worker: die with the sweep process (a SIGKILL of the sweep must not leave workers
    computing points nobody will store), leave Ctrl-C to the parent, and use its share of the cores."""
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)      # PR_SET_PDEATHSIG
        if os.getppid() == 1:                                          # the parent died before that
            os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_threads(threads)


class LocalExecutor:
    """A pool of ``workers`` processes on this machine (spawned, not forked: the parent may hold
    threads and onnxruntime state that a fork would copy half-way)."""

    name = "local"

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(self, tasks: list[Task], models: dict[str, ModelRef]) -> Iterator[dict]:
        if not tasks:
            return
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        pool = ProcessPoolExecutor(min(self.workers, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(threads,))
        finished = False
        try:
            pending = {pool.submit(run_task, task, models[task.model]) for task in tasks}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
            finished = True
        except BrokenProcessPool:
            raise SweepError(f"a worker process died: killed, out of memory, or started from a script that calls "
                             f"cimc.sweep outside `if __name__ == \"__main__\":` (workers import the script that "
                             f"started them, so the call needs that guard); {RESUME}") from None
        finally:
            if not finished:
                # Ctrl-C, or the caller stopped (a record it could not store): end the running tasks
                # now. Left alone, the pool would let them run to the end, minutes for a long point,
                # before the process can exit, and nobody would store their records.
                for process in list((pool._processes or {}).values()):
                    process.terminate()
            pool.shutdown(wait=finished, cancel_futures=True)

    def close(self) -> None:
        pass


def _import_ray():
    try:
        import ray
    except ImportError:
        raise SweepError("the ray executor needs Ray, which is not installed: pip install 'cimc[ray]' "
                         "(or pip install 'ray[client]')") from None
    return ray


def _probe(address: str) -> None:
    """Fail fast on an address nobody answers on (Ray's own client waits 30 s, then says little)."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None:
        raise SweepError(f"--address {address}: expected ray://HOST:PORT (a Ray client server) or HOST:PORT "
                         f"(a cluster's head node), or auto")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise SweepError(f"cannot reach the Ray cluster at {address}: {reason.lower()}; is its head node running "
                         f"(ray start --head) and the port open?") from None


class RayExecutor:
    """Tasks as Ray tasks, one CPU each: on a Ray instance started here (``workers`` CPUs, default
    all) or on an existing cluster (``address``). Each model's data goes into Ray's object store
    once; cluster nodes need cimc installed, not the files."""

    name = "ray"

    def __init__(self, workers: int | None, address: str | None) -> None:
        ray = _import_ray()
        if address is not None and address != "auto":
            _probe(address)
        try:
            if address is None:
                ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR)
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except Exception as exc:        # ConnectionError, RuntimeError, ...: Ray's own words
            raise SweepError(f"cannot start Ray{f' at {address}' if address else ''}: {exc}") from None
        self.ray = ray

    def run(self, tasks: list[Task], models: dict[str, ModelRef]) -> Iterator[dict]:
        ray = self.ray
        remote = ray.remote(num_cpus=1)(run_task)
        shared = {name: ray.put(load(models[name])) for name in {t.model for t in tasks}}
        pending = [remote.remote(task, shared[task.model]) for task in tasks]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    yield ray.get(done[0])
                except ray.exceptions.RayError as exc:
                    raise SweepError(f"a Ray task failed ({str(exc).splitlines()[0]}); {RESUME}") from None
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        self.ray.shutdown()


class Progress:
    """One line on stderr, rewritten in place on a terminal: tasks done of all, failures, elapsed
    time and ETA. Off a terminal it stays quiet; the caller prints a summary.

    The ETA weighs what is left by what such tasks took so far: ``todo`` (the tasks still to
    run) groups them by kind and model, since a sweep's tasks differ by orders of magnitude (an
    accuracy run of ResNet-8 takes minutes, a compile of mnist-8 a second). The remaining tasks
    of each group count at the mean task time of that group's finished ones (the mean of all
    finished tasks for a group none of which has finished), divided by the pace at which task
    time is done (task seconds per elapsed second: about the number of busy workers)."""

    def __init__(self, total: int, done: int, stream: TextIO | None = None, show: bool | None = None,
                 todo: "list[Task] | None" = None) -> None:
        self.stream = stream or sys.stderr
        self.show = self.stream.isatty() if show is None else show
        self.total, self.done, self.skipped = total, done, done
        self.failed = 0
        self.left: dict[tuple, int] = {}
        for task in todo or ():
            group = (task.kind, task.model)
            self.left[group] = self.left.get(group, 0) + 1
        self.spent: dict[tuple, list[float]] = {}
        self.began = time.monotonic()
        self._draw()

    def update(self, record: dict) -> None:
        self.done += 1
        self.failed += record["error"] is not None
        group = (record.get("kind"), record.get("model"))
        if group in self.left:
            self.left[group] -= 1
        if record.get("seconds") is not None:
            self.spent.setdefault(group, []).append(record["seconds"])
        self._draw()

    def close(self) -> None:
        if self.show:
            self.stream.write("\n")
            self.stream.flush()

    def eta(self) -> float | None:
        elapsed = time.monotonic() - self.began
        ran = self.done - self.skipped
        if not ran or self.done >= self.total:
            return None
        work = sum(sum(v) for v in self.spent.values())
        if not self.left or not work or not elapsed:
            return elapsed / ran * (self.total - self.done)
        mean = work / sum(len(v) for v in self.spent.values())
        remaining = sum(n * (sum(self.spent[g]) / len(self.spent[g]) if self.spent.get(g) else mean)
                        for g, n in self.left.items() if n > 0)
        return remaining / (work / elapsed)

    def _draw(self) -> None:
        if not self.show:
            return
        elapsed = time.monotonic() - self.began
        eta = self.eta()
        line = (f"sweep: {self.done}/{self.total} tasks" + (f" ({self.skipped} already done)" if self.skipped else "")
                + (f", {self.failed} failed" if self.failed else "") + f", {duration(elapsed)} elapsed"
                + (f", ETA {duration(eta)}" if eta is not None else ""))
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()


def duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
