"""Outputs written atomically: a reader or a crash never meets a half-written file or folder.

Every file goes to a temporary name beside its target and is renamed into place (``os.replace``), so a
crash, a kill or a full disk at any moment leaves the old file or the new one. A write that fails (a full
disk, an unwritable folder) raises :class:`OutputError`, one line naming the target and the problem.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import GliomilError, OutputError


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it, flushed to disk, then renamed into place.

    On failure the temporary file is removed, ``path`` keeps its old content, and :class:`OutputError` says why.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:12]}")
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


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Build a folder in a fresh hidden sibling and rename it to ``path`` once the block succeeds.

    Yields the empty sibling ``.<name>.partial-<random>`` (a pattern .gitignore and .dvcignore skip). On success
    whatever was at ``path`` is removed and the sibling takes its place; on any exception the sibling is removed
    and ``path`` is left as it was. Siblings left by a killed run (SIGKILL leaves no time to clean up) are
    removed first: one writer per target at a time, which ``dvc``'s own lock and the per-fold lock
    (:func:`exclusive`) ensure. A folder that cannot be created or renamed raises :class:`OutputError`.
    """
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:12]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise OutputError(path, exc) from exc
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(path, exc) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def exclusive(name: str, what: str) -> Iterator[None]:
    """Hold the lock ``name`` of this workspace (the current folder) for the block, or raise GliomilError naming
    ``what`` and the process that holds it.

    An flock on a file under the system's temporary folder, keyed by the workspace's path: two processes writing the
    same fold of one workspace are refused, other workspaces are not concerned, and a killed holder releases it.
    """
    workspace = hashlib.sha256(str(Path.cwd().resolve()).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "gliomil-locks" / f"{workspace}-{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise GliomilError(
                f"{what} is being written by another process ({lock.read().strip()}); wait for it to finish or end it"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} in {Path.cwd()}")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
