"""Worker processes for the analyze and report stages: their independent parts run side by side.

The parts of an analysis (each attack's tables, the run-level analyses) and the report's figures
are pure numpy, pandas and matplotlib work that holds the GIL, so threads do not help; processes
do. Workers are forked from Python's forkserver, which imports the analysis and report modules once
(:func:`warm_up`, called before training so that those imports overlap it): a worker starts in
milliseconds with everything imported, whatever the parent process has done (torch's threads
included, which forking the parent itself would not survive).

Every task writes only its own files and returns what it made; the calling process records them
in the manifest, so the run directory keeps one writer. The results do not depend on the number
of workers (each part is seeded on its own); ``analysis.workers: 1`` runs everything in the
calling process, as do machines with one core, platforms without the forkserver and daemonic
processes (which may not start children).
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from privdyn.errors import PrivdynError

T = TypeVar("T")

#: What the forkserver imports once (:mod:`privdyn.pipeline.preload`), so that no worker pays for
#: scipy, scikit-learn, pandas, matplotlib or plotly, nor for the report page's constant parts.
PRELOAD = ("privdyn.pipeline.preload",)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. under SLURM or taskset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def can_fork_workers() -> bool:
    """True where worker processes can be started: a forkserver exists and this is not a daemon."""
    return "forkserver" in multiprocessing.get_all_start_methods() and not multiprocessing.current_process().daemon


#: Checkpoint x model x sample entries per attack below which workers cost more than they save (a
#: worker computes its own copy of the training measures); the quickstart has 3.8 million.
MIN_AUTO_WORK = 1_000_000


def n_workers(requested: int | None, n_tasks: int, work: int) -> int:
    """Workers for ``n_tasks`` independent tasks on a run of ``work`` entries per attack
    (checkpoints x models x samples): ``requested``, or with None one per usable CPU when the run
    is large enough to gain from them (:data:`MIN_AUTO_WORK`); never more than one per task, and 1
    (the calling process) where workers cannot be started."""
    if requested is None:
        requested = usable_cpus() if work >= MIN_AUTO_WORK else 1
    return max(1, min(requested, n_tasks)) if can_fork_workers() else 1


def _forkserver() -> multiprocessing.context.ForkServerContext:
    """The forkserver context, its server to import :data:`PRELOAD` when it starts."""
    multiprocessing.set_forkserver_preload(list(PRELOAD))
    return multiprocessing.get_context("forkserver")


def warm_up(requested: int | None, work: int) -> None:
    """Start the forkserver and its imports now, in the background, where workers will be used: a
    stage that starts workers later finds them ready."""
    if n_workers(requested, 2, work) > 1:
        from multiprocessing import forkserver

        _forkserver()
        forkserver.ensure_running()


def call(target: str, *args: Any) -> Any:
    """Run ``"module:function"`` with ``args``: what a worker is sent, so that the caller names a
    task without importing its module (and scipy, matplotlib, ...) itself."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)(*args)


#: What a worker keeps for the tasks of one stage (:func:`stage_value`), by the stage's token.
_STAGE_VALUES: dict[tuple[str, str], Any] = {}


def stage_value(token: str, name: str, make: Callable[[], T]) -> T:
    """``make()``, computed once per worker for all the tasks it runs for the stage ``token`` (its
    inputs, e.g. the training measures or the report's data); another stage's values are dropped."""
    if (token, name) not in _STAGE_VALUES:
        for key in [k for k in _STAGE_VALUES if k[0] != token]:
            del _STAGE_VALUES[key]
        _STAGE_VALUES[(token, name)] = make()
    value: T = _STAGE_VALUES[(token, name)]
    return value


def _start_worker(threads: int, caller: Connection) -> None:
    """A worker's initializer. Numpy's BLAS and scikit-learn's OpenMP use ``threads`` threads, so
    that the workers together do not oversubscribe the CPUs. The worker ends as soon as the calling
    process does (``caller`` reaches its end then): a pool's workers would otherwise wait for work
    forever after a kill, and keep the forkserver alive with them."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            caller.recv()
        os._exit(1)

    threading.Thread(target=watch, name="privdyn-caller-watch", daemon=True).start()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Hide the caller's ``__main__`` while workers start: a started process would otherwise run
    it again (a user's script without an ``if __name__ == "__main__"`` guard, from the top). The
    tasks are named by module (:func:`call`) and never need it."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


@contextlib.contextmanager
def pool(n: int) -> Iterator[ProcessPoolExecutor]:
    """``n`` worker processes (from :func:`n_workers`: more than 1). When the caller's block
    raises, the tasks that are running finish and the queued ones are cancelled. A worker that
    dies (killed, out of memory) ends the stage with an error that says what to do; everything
    that was recorded before is kept, so the next run redoes only the rest."""
    context = _forkserver()
    watched, alive = context.Pipe(duplex=False)  # the workers' end reads EOF once this process is gone
    try:
        with ProcessPoolExecutor(n, mp_context=context, initializer=_start_worker,
                                 initargs=(max(1, usable_cpus() // n), watched)) as ex:
            with _main_module_hidden():  # each submission starts a worker until there are n
                for _ in range(n):
                    ex.submit(os.getpid)
            try:
                yield ex
            except BaseException:
                ex.shutdown(wait=True, cancel_futures=True)
                raise
    except BrokenProcessPool as e:
        raise PrivdynError(f"A worker process of the analysis or report died before finishing ({e}); it was "
                           "probably killed or ran out of memory. What finished is kept: run the same command "
                           "again, with `--set analysis.workers=1` to do every part in one process (less "
                           "memory at once).") from e
    finally:
        watched.close()
        alive.close()
