"""SIGINT and SIGTERM stop a stage, always: never lost, never half-recorded.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to be; when that is a
garbage-collector finalizer (matplotlib, torch and weakref run many), the exception is printed as "Exception
ignored" and lost, and training went on. Here the handler raises nothing: it records the signal and says so
on stderr, and the long loops call :func:`check` at their safe points (every training step and epoch, every
subject or case of a worker pool or prediction, every scored bag), which raises :class:`Interrupted` there.
A stage that finishes after a signal still fails (:func:`gliomil.stage.run_stage` checks once more), so
``dvc`` stops the pipeline and records nothing. A second signal takes the default action: the process ends
at once. Outputs are written atomically (:mod:`gliomil.files`), so even that leaves no torn file.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from .errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PARENT_AT_START = os.getppid()  # read when gliomil.interrupts is first imported: a stage's first lines
_received: int | None = None


def _handler(signum, frame) -> None:
    global _received
    if _received is not None:  # asked twice: stop now, the default way
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
        return
    _received = signum
    # os.write, not print: the handler may run in the middle of another write to the same stream.
    name = signal.Signals(signum).name
    os.write(2, f"{name} received: stopping at the next safe point (again to stop at once)\n".encode())


def install() -> None:
    """Handle SIGINT and SIGTERM in this process (the main thread) as described above. Calling it again keeps a
    signal already recorded."""
    for signum in SIGNALS:
        signal.signal(signum, _handler)


def check(where: str = "") -> None:
    """Raise :class:`Interrupted` (saying ``where``) if a signal has arrived since :func:`install`."""
    if _received is not None:
        raise Interrupted(_received, where)


def die_with_parent(parent: int | None = None) -> None:
    """Ask the kernel to kill this process (SIGKILL) the moment its parent dies: a killed ``dvc`` (``kill -9``, the
    OOM killer) leaves no orphan training into the folders the next ``dvc repro`` writes. Nothing it was building
    is lost or recorded: outputs are renamed into place only when a stage succeeds. Linux only; elsewhere a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    # The parent as it was: by default when this module was first imported (a stage's first lines).
    parent = _PARENT_AT_START if parent is None else parent
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def worker_started() -> None:
    """In a worker process (a pool's initializer): die with the stage that forked it, ignore SIGINT (the stage
    handles a Ctrl-C, which reaches the whole process group, and ends its workers), default SIGTERM."""
    die_with_parent(os.getppid())  # this module's import-time parent is the stage's, not this worker's
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
