"""Outputs written atomically: a reader or a crash never meets a half-written file or folder.

Every file goes to a temporary name beside its target and is renamed into place (``os.replace``), so a
crash, a kill or a full disk at any moment leaves the old file or the new one. A write that fails (a full
disk, an unwritable folder) raises :class:`OutputError`, one line naming the target and the problem.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gliomil.errors import GliomilError, OutputError


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it, flushed to disk, then renamed into place.

    On failure the temporary file is removed, ``path`` keeps its old content, and :class:`OutputError` says why.
    """
    path = Path(path)
    tmp = _partial_name(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputError(path, f"{path.parent} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise OutputError(path, exc) from None


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`write_bytes`)."""
    write_bytes(path, text.encode())


def write_json(path: str | Path, data) -> None:
    """Write ``data`` as indented JSON (atomically)."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_with(path: str | Path, writer) -> None:
    """Write what ``writer(file_object)`` writes to an in-memory buffer to ``path`` atomically: for libraries that
    write to a file object (``torch.save``, ``Figure.savefig``) and would otherwise leave a torn file behind."""
    buffer = io.BytesIO()
    writer(buffer)
    write_bytes(path, buffer.getvalue())


def make_directory(path: str | Path) -> Path:
    """Create the folder ``path`` and its missing parents (an existing folder is kept); a folder that cannot be
    created (a full disk, a file in the way) raises :class:`OutputError` naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(path, exc) from None
    return path


def _partial_name(path: Path) -> Path:
    """A fresh hidden sibling of ``path`` naming this process: ``.<name>.partial-<pid>-<random>``."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(path: Path) -> None:
    """Remove the hidden siblings of ``path`` left by processes that died before renaming them into place
    (a SIGKILL leaves no time to clean up). Those of a live process are left alone."""
    for stale in path.parent.glob(f".{path.name}.partial-*"):
        pid = stale.name.rsplit(".partial-", 1)[1].split("-")[0]
        if not (pid.isdigit() and _pid_alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Build a folder in a fresh hidden sibling and rename it to ``path`` once the block succeeds.

    Yields the empty sibling ``.<name>.partial-<pid>-<random>`` (a pattern .gitignore and .dvcignore skip). On
    success the old ``path``, if any, is renamed aside, the sibling renamed into place, and only then the old
    one deleted; on any exception the sibling is removed and ``path`` is left as it was. Siblings left by dead
    processes are removed first (:func:`remove_stale_partials`). A failed write inside the block, or a folder
    that cannot be created or renamed, raises :class:`OutputError` naming ``path`` (not the hidden sibling).
    """
    path = Path(path)
    tmp = _partial_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(path)
        tmp.mkdir()
    except OSError as exc:
        raise OutputError(path, exc) from exc
    try:
        yield tmp
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_directory(built: str | Path, path: str | Path) -> None:
    """Rename the finished folder ``built`` to ``path`` (same file system): the old ``path``, if any, is renamed
    aside first and deleted only after, so ``path`` is always whole, old or new. Raises :class:`OutputError`
    naming ``path``."""
    built, path = Path(built), Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if path.exists() or path.is_symlink():
            old = _partial_name(path)
            os.replace(path, old)
        os.replace(built, path)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    except OSError as exc:
        raise OutputError(path, exc) from exc


@contextmanager
def exclusive(path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` for the block, or raise GliomilError naming ``what`` and the
    process that holds it. An flock: a process that dies releases it; keep ``path`` inside the workspace (for
    example under ``.dvc/tmp``), so that every process writing the workspace sees the same lock."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path, "a+")
    except OSError as exc:
        raise GliomilError(f"{path}: cannot open the lock of {what} ({exc.strerror})") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip()
            raise GliomilError(f"{what} is being written by another process ({holder}); wait or end it") from None
        try:  # unbuffered: a full disk fails here, not again when the file is closed
            os.ftruncate(lock.fileno(), 0)
            os.write(lock.fileno(), f"pid {os.getpid()}".encode())  # opened for appending: lands at 0
        except OSError as exc:
            raise OutputError(path, exc) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
