"""Run one function over many jobs in worker processes, results in job order."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import pickle
import signal
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.pool import RemoteTraceback
from typing import TypeVar

from threadpoolctl import threadpool_limits
from tqdm import tqdm

from gliomil.errors import GliomilError, Interrupted
from gliomil.runtime import interrupts

Job = TypeVar("Job")
Result = TypeVar("Result")


def map_in_workers(
    function: Callable[[Job], Result], jobs: Sequence[Job], workers: int, progress: str | None = None
) -> Iterator[Result]:
    """Yield ``function(job)`` for every job, in job order, as soon as each is ready.

    ``workers`` > 1 forks that many processes (at most one per job), each taking one job at a time, so
    memory does not grow with the number of jobs as long as the caller consumes results as they come (results
    that finish before an earlier job's wait here in the meantime);
    one worker runs the jobs in this process. "fork" needs no ``if __name__ == "__main__"`` guard in the
    caller's script, and workers see the module state as it was when iteration began. ``function`` must
    be picklable by reference (a module-level function). ``progress``, when given, labels a tqdm bar on
    stderr that counts finished jobs (every caller's job is one subject).

    Workers die with the caller's process and ignore SIGINT: the caller handles a Ctrl-C (which reaches the
    whole process group) and ends them. A job's exception is raised here, in job order, as the same exception
    (:class:`_Failure` carries one whose constructor pickle cannot call, such as an OutputError): a
    :class:`GliomilError` alone, so that a stage reports it as one line; any other exception with the
    worker's traceback as its cause; a worker that dies (the OOM killer) is one line too. Ending early (that
    exception, or the caller leaving its loop, which closes the iterator) kills the workers at once,
    before the caller cleans up what they were writing.
    """
    # One BLAS thread per process, set before the workers fork so that they inherit it: processes give the
    # parallelism (more threads would oversubscribe the cores), and a fixed thread count keeps results
    # bit-identical for any number of workers.
    with threadpool_limits(limits=1, user_api="blas"):
        interrupts.check()  # workers forked after a signal would end at once (interrupts.worker_started)
        crew = _Crew(function, min(workers, len(jobs))) if workers > 1 and len(jobs) > 1 else None
        # The bar's monitor thread starts after the fork: forking a process with threads is unsafe.
        bar = tqdm(total=len(jobs), desc=progress, unit="subject", disable=progress is None)
        try:
            for result in map(function, jobs) if crew is None else crew.run(jobs):
                bar.update()
                interrupts.check()
                yield result
        finally:
            bar.close()
            if crew is not None:
                crew.stop()


class _Crew:
    """Forked worker processes, each taking one job at a time through its own pipe.

    Not :class:`multiprocessing.pool.Pool`: its workers send results through one queue guarded by one lock, and its
    ``terminate()`` waits for ever when it kills a worker holding that lock (one sending a result at the moment the
    caller stops early: about 1 stop in 130 here, and once on CI); it also waits for ever for the job of a worker
    that died (CPython bpo-22393). Here nothing is shared: a stop kills the workers (SIGKILL, at once), and a
    worker that dies is an error.
    """

    def __init__(self, function: Callable, size: int):
        context = multiprocessing.get_context("fork")
        self.workers = []
        for _ in range(size):
            here, there = context.Pipe()
            process = context.Process(target=_serve, args=(_Guarded(function), there), daemon=True)
            process.start()
            there.close()
            self.workers.append((process, here))
        self.process_of = {pipe: process for process, pipe in self.workers}

    def run(self, jobs: Sequence) -> Iterator:
        """Results in job order; a job's exception (carried by a :class:`_Failure`) is raised in its turn."""
        done: dict[int, object] = {}
        busy: dict[object, int] = {}  # a worker's pipe -> the index of the job it runs
        waiting = iter(enumerate(jobs))
        for _, pipe in self.workers:
            self._give(pipe, waiting, busy)
        for turn in range(len(jobs)):
            while turn not in done:
                self._collect(busy, done, waiting)
            result = done.pop(turn)
            if isinstance(result, _Failure):
                result.throw()
            yield result

    def _collect(self, busy: dict, done: dict, waiting: Iterator) -> None:
        """Wait for finished jobs (a signal is noticed within a fraction of a second) and give their workers more."""
        process_of = self.process_of
        ready = multiprocessing.connection.wait([*busy, *(process_of[pipe].sentinel for pipe in busy)], timeout=0.2)
        interrupts.check("while waiting for worker processes")
        for pipe in [pipe for pipe in busy if pipe in ready]:
            try:
                result = pipe.recv()
            except (EOFError, OSError):  # the worker died (mid-message: OSError): its exit code says how
                _died(process_of[pipe], busy[pipe])
            done[busy.pop(pipe)] = result
            self._give(pipe, waiting, busy)
        for pipe in [pipe for pipe in busy if process_of[pipe].sentinel in ready and not pipe.poll()]:
            _died(process_of[pipe], busy[pipe])

    def _give(self, pipe, waiting: Iterator, busy: dict) -> None:
        """Send the next waiting job, if any, to the idle worker at ``pipe``."""
        for index, job in waiting:
            busy[pipe] = index
            try:
                pipe.send(job)
            except OSError:  # the worker died since its last result (BrokenPipeError): its exit code says how
                _died(self.process_of[pipe], index)
            return

    def stop(self) -> None:
        """Kill the workers at once (before the caller cleans up what they were writing) and reap them."""
        for process, _ in self.workers:
            process.kill()
        for process, pipe in self.workers:
            process.join()
            pipe.close()


def _died(process, index: int) -> None:
    process.join()
    code = process.exitcode
    # The group's signal reached the worker before this process: killed by it, or ended by worker_started.
    for signum in (-code, code - 128):
        if signum in interrupts.SIGNALS:
            raise Interrupted(signum, "while waiting for worker processes")
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    hint = " (out of memory?)" if code == -signal.SIGKILL else ""  # what the OOM killer sends
    raise GliomilError(f"a worker process {how} during job {index + 1}{hint}")


def _serve(guarded: _Guarded, pipe) -> None:
    """A worker: run each job it receives and send back its result (or :class:`_Failure`) until the pipe closes."""
    interrupts.worker_started()
    while True:
        try:
            job = pipe.recv()
        except EOFError:
            return
        result = guarded(job)
        try:
            pipe.send(result)
        except Exception as error:  # a result pickle refuses: its error instead
            pipe.send(_Failure(error, traceback.format_exc()))


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
