"""Run one function over many jobs in worker processes, results in job order."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from threadpoolctl import threadpool_limits
from tqdm import tqdm

from . import interrupts

Job = TypeVar("Job")
Result = TypeVar("Result")


def map_in_workers(
    function: Callable[[Job], Result], jobs: Sequence[Job], workers: int, progress: str | None = None
) -> Iterator[Result]:
    """Yield ``function(job)`` for every job, in job order, as soon as each is ready.

    ``workers`` > 1 forks that many processes (at most one per job), each taking one job at a time, so
    memory does not grow with the number of jobs as long as the caller consumes results as they come;
    one worker runs the jobs in this process. "fork" needs no ``if __name__ == "__main__"`` guard in the
    caller's script, and workers see the module state as it was when iteration began. ``function`` must
    be picklable by reference (a module-level function). ``progress``, when given, labels a tqdm bar on
    stderr that counts finished jobs (every caller's job is one subject).

    Workers die with the caller's process and ignore SIGINT: the caller handles a Ctrl-C (which reaches the
    whole process group) and ends them. A job's exception is raised here, in job order. Ending early (that
    exception, or the caller leaving its loop, which closes the iterator) terminates the workers at once,
    before the caller cleans up what they were writing.
    """
    # One BLAS thread per process, set before the pool forks so workers inherit it: processes give the
    # parallelism (more threads would oversubscribe the cores), and a fixed thread count keeps results
    # bit-identical for any number of workers.
    with threadpool_limits(limits=1, user_api="blas"):
        pool = None
        if workers > 1 and len(jobs) > 1:
            pool = multiprocessing.get_context("fork").Pool(min(workers, len(jobs)), interrupts.worker_started)
        # The bar's monitor thread starts after the fork: forking a process with threads is unsafe.
        bar = tqdm(total=len(jobs), desc=progress, unit="subject", disable=progress is None)
        try:
            for result in _in_order(pool, function, jobs):
                bar.update()
                interrupts.check()
                yield result
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()


def _in_order(pool, function, jobs):
    """``function`` over ``jobs`` in the pool (or here), in order; while waiting for a worker, a signal is noticed
    within a fraction of a second (a SIGTERM to the process group may have killed the workers: waiting for their
    results would never end)."""
    if pool is None:
        yield from map(function, jobs)
        return
    results = pool.imap(function, jobs)
    for _ in jobs:
        while True:
            try:
                yield results.next(timeout=0.2)
                break
            except multiprocessing.TimeoutError:
                interrupts.check("while waiting for worker processes")
