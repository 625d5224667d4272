"""Run one function over many jobs in worker processes, results in job order."""

from __future__ import annotations

import multiprocessing
import pickle
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.pool import RemoteTraceback
from typing import TypeVar

from threadpoolctl import threadpool_limits
from tqdm import tqdm

from gliomil.errors import GliomilError
from gliomil.runtime import interrupts

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
    whole process group) and ends them. A job's exception is raised here, in job order, as the same exception
    (:class:`_Failure` carries one whose constructor pickle cannot call, such as an OutputError): a
    :class:`GliomilError` alone, so that a stage reports it as one line; any other exception with the
    worker's traceback as its cause. Ending early (that
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
    results = pool.imap(_Guarded(function), jobs)
    for _ in jobs:
        while True:
            try:
                result = results.next(timeout=0.2)
                break
            except multiprocessing.TimeoutError:
                interrupts.check("while waiting for worker processes")
        if isinstance(result, _Failure):
            result.throw()
        yield result


class _Guarded:
    """``function`` run in a worker, its exception returned as a :class:`_Failure` instead of raised: the pool
    pickles a raised exception as ``type(error)(*error.args)``, which an exception whose constructor takes
    other arguments (OutputError, InputError) cannot survive: the pool's result thread dies and the caller
    waits for ever."""

    def __init__(self, function):
        self.function = function

    def __call__(self, job):
        try:
            return self.function(job)
        except Exception as error:
            return _Failure(error, traceback.format_exc())


class _Failure:
    """A worker's exception on its way to the caller: pickled as itself when it survives pickle, else rebuilt
    from its class, ``args`` (its message) and attributes without calling its constructor."""

    def __init__(self, error: Exception, remote_traceback: str):
        self.error = error
        self.remote_traceback = remote_traceback

    def __reduce__(self):
        try:
            pickle.loads(pickle.dumps(self.error))
            return _Failure, (self.error, self.remote_traceback)
        except Exception:
            pass
        parts = (type(self.error), self.error.args, dict(vars(self.error)))
        try:
            pickle.loads(pickle.dumps(parts))
        except Exception:  # attributes that do not pickle: the class and message, as a plain error
            parts = (RuntimeError, (f"{type(self.error).__name__}: {self.error}",), {})
        return _rebuilt, (*parts, self.remote_traceback)

    def throw(self):
        if isinstance(self.error, GliomilError):
            raise self.error from None
        raise self.error from RemoteTraceback(self.remote_traceback)


def _rebuilt(cls, args, attributes, remote_traceback) -> _Failure:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(attributes)
    return _Failure(error, remote_traceback)
