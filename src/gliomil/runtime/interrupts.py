"""SIGINT, SIGTERM and SIGHUP stop a stage, always: never lost, never half-recorded.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to be; when that is a
garbage-collector finalizer (matplotlib, torch and weakref run many), the exception is printed as "Exception
ignored" and lost, and training went on. Here the handler raises nothing: it records the signal and says so
on stderr, and the long loops call :func:`check` at their safe points (every training step and epoch, every
subject or case of a worker pool or prediction, every scored bag), which raises :class:`Interrupted` there.
A stage that finishes after a signal still fails (:func:`gliomil.runtime.stage.run_stage` checks once more), so
``dvc`` stops the pipeline and records nothing. A second signal takes the default action: the process ends
at once. Outputs are written atomically (:mod:`gliomil.runtime.files`), so even that leaves no torn file.

SIGHUP is what a stage receives when ``dvc`` dies (:func:`die_with_parent`): a scheduler's pre-emption sends
SIGTERM to ``dvc`` and the stage together, ``dvc`` ends at once, and the stage must still reach its safe point
(a train stage saves its state there), so a SIGHUP after another signal is not taken as the second one. The two
arrive together and Python runs its handlers in signal-number order, so the SIGHUP is often handled first: the
SIGTERM that follows it is the same stop, recorded as SIGTERM (what the scheduler sent), not a second signal.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path

from gliomil.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PARENT_AT_START = os.getppid()  # read when gliomil.runtime.interrupts is first imported: a stage's first lines
_received: int | None = None
_group_stop = False  # a SIGTERM taken with dvc's SIGHUP as one stop (see the module's docstring)


def _handler(signum, frame) -> None:
    global _received, _group_stop
    if _received is not None:  # asked twice: stop now, the default way
        if signum == signal.SIGHUP:  # dvc ending with this stage (a group SIGTERM): the stop is under way
            return
        if _received == signal.SIGHUP and signum == signal.SIGTERM and not _group_stop:
            _received, _group_stop = signum, True  # the group SIGTERM whose dvc's SIGHUP was handled first
            return
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
        return
    _received = signum
    # os.write, not print: the handler may run in the middle of another write to the same stream.
    name = signal.Signals(signum).name
    why = " (dvc or the terminal ended)" if signum == signal.SIGHUP else ""
    os.write(2, f"{name} received{why}: stopping at the next safe point (again to stop at once)\n".encode())


def install() -> None:
    """Handle SIGINT, SIGTERM and SIGHUP in this process (the main thread) as described above. Calling it again keeps a
    signal already recorded."""
    for signum in SIGNALS:
        signal.signal(signum, _handler)


def check(where: str = "") -> None:
    """Raise :class:`Interrupted` (saying ``where``) if a signal has arrived since :func:`install`."""
    if _received is not None:
        raise Interrupted(_received, where)


SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "fish"}  # what runs a dvc.yaml cmd: $SHELL, else /bin/sh


def _parent_of(pid: int) -> int | None:
    """The parent PID of ``pid`` (from /proc), or None when ``pid`` is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _runs_one_command(pid: int) -> bool:
    """Whether ``pid`` is a shell started as ``SHELL -c COMMAND`` (as dvc starts a stage), not a script."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return comm in SHELLS and b"-c" in argv[1:3]


def _watch(shell: int, dvc: int, signum: int, interval: float) -> None:
    while _parent_of(shell) == dvc:
        time.sleep(interval)
    os.kill(os.getpid(), signum)


def die_with_parent(parent: int | None = None, signum: int = signal.SIGHUP, interval: float = 0.5) -> None:
    """Ask the kernel to send this process ``signum`` the moment its parent dies: a killed ``dvc`` (``kill -9``,
    the OOM killer, a scheduler's SIGTERM) leaves no orphan training into the folders the next ``dvc repro``
    writes. A stage takes the default SIGHUP, which it handles (:func:`install`): it stops at its next safe point
    (a train stage after saving its state); worker processes take SIGKILL. Nothing is recorded: outputs are renamed
    into place only when a stage succeeds, and it then fails. Linux only; elsewhere a no-op.

    ``dvc`` runs a stage through ``$SHELL -c`` (``/bin/sh`` when unset). bash replaces itself with the command, but
    dash (Debian's ``/bin/sh``) waits for it and outlives a killed ``dvc``: when the parent is such a shell, a
    daemon thread also watches the shell's own parent every ``interval`` seconds and sends ``signum`` when it
    changes.
    """
    if not sys.platform.startswith("linux"):
        return
    # The parent as it was: by default when this module was first imported (a stage's first lines).
    parent = _PARENT_AT_START if parent is None else parent
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signum)
        return
    grandparent = _parent_of(parent)
    if _runs_one_command(parent) and grandparent not in (None, 0, 1):
        threading.Thread(target=_watch, args=(parent, grandparent, signum, interval), daemon=True).start()


def worker_started() -> None:
    """In a worker process (a pool's initializer): die with the stage that forked it, ignore SIGINT (the stage
    handles a Ctrl-C, which reaches the whole process group, and ends its workers), default SIGTERM."""
    die_with_parent(os.getppid(), signal.SIGKILL)  # this module's import-time parent is the stage's, not this worker's
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if _received is not None:
        # A signal between the fork and this line went to the stage's inherited handler, which only records it (or
        # the stage was already stopping when it forked): a pool's terminate() must not wait for this worker's job.
        os._exit(128 + _received)
