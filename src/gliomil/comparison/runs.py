"""A run's params and files as DVC stored them, read through ``dvc.api``: the one reader behind ``gliomil compare``
and ``gliomil repeats``. ``rev`` is a git revision or experiment name; ``workspace`` (or None) reads the working tree.

Any failure (an unknown revision, a file the run never wrote, DVC raising one of its many types) is one
:class:`GliomilError` line: "cannot read the <what> of '<name>' (<path>): <type>: <message>".
"""

from __future__ import annotations

import io
import json

import dvc.api
import pandas as pd

from gliomil.errors import GliomilError


def _rev(rev: str | None) -> str | None:
    return None if rev in (None, "", "workspace") else rev


def _error(what: str, name: str, path: str | None, exc: Exception) -> GliomilError:
    where = f" ({path})" if path else ""
    return GliomilError(f"cannot read the {what} of '{name}'{where}: {type(exc).__name__}: {exc}")


def read_params(rev: str | None, what: str = "params", name: str | None = None) -> dict:
    """The run's params (every params file DVC tracks, merged as ``dvc.api.params_show`` merges them)."""
    try:
        return dvc.api.params_show(rev=_rev(rev))
    except Exception as exc:  # DVC raises many types for an unknown rev or unreadable params
        raise _error(what, name or str(rev), None, exc) from None


def read_text(path: str, rev: str | None, what: str, name: str | None = None) -> str:
    """The text of a file of the run (git-tracked or DVC-cached)."""
    try:
        return dvc.api.read(path, rev=_rev(rev))
    except Exception as exc:  # DVC raises many types for an unknown rev or a missing file
        raise _error(what, name or str(rev), path, exc) from None


def read_json(path: str, rev: str | None, what: str, name: str | None = None) -> dict:
    """A JSON file of the run (metrics files)."""
    return json.loads(read_text(path, rev, what, name))


def read_csv(path: str, rev: str | None, what: str, name: str | None = None) -> pd.DataFrame:
    """A CSV file of the run (prediction tables)."""
    return pd.read_csv(io.StringIO(read_text(path, rev, what, name)))
