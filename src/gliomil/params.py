"""Read params.yaml and check the values each stage uses before it does any work.

Every check raises :class:`ParamsError` with one line that names the key, what it must be
and what it was, e.g. ``params.yaml: preprocess.image_size must be an integer >= 8, got 'big'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ParamsError

_MISSING = object()


def load_params(path: str | Path = "params.yaml") -> dict:
    """Return the parsed params file as a dict."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found (run from the repository root)")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of keys to values")
    return params


def get(params: dict, key: str, default: Any = _MISSING) -> Any:
    """Look up a dotted key (``"preprocess.image_size"``); missing keys are an error unless a default is given."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not _MISSING:
                return default
            raise ParamsError(f"params.yaml: missing key '{key}'")
        node = node[part]
    return node


def _fail(key: str, expected: str, value: Any) -> ParamsError:
    return ParamsError(f"params.yaml: {key} must be {expected}, got {value!r}")


def _range_text(low, high) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def integer(params: dict, key: str, low: int | None = None, high: int | None = None, default: Any = _MISSING) -> int:
    """An int (bools rejected) within [low, high]."""
    value = get(params, key, default)
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        raise _fail(key, "an integer" + _range_text(low, high), value)
    return value


def number(params: dict, key: str, low: float | None = None, high: float | None = None, default: Any = _MISSING) -> float:
    """A real number within [low, high]."""
    value = get(params, key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        raise _fail(key, "a number" + _range_text(low, high), value)
    return float(value)


def boolean(params: dict, key: str, default: Any = _MISSING) -> bool:
    """true or false."""
    value = get(params, key, default)
    if not isinstance(value, bool):
        raise _fail(key, "true or false", value)
    return value


def choice(params: dict, key: str, options: tuple[str, ...], default: Any = _MISSING) -> str:
    """One of a fixed set of strings."""
    value = get(params, key, default)
    if value not in options:
        raise _fail(key, "one of " + ", ".join(options), value)
    return value


def text(params: dict, key: str, default: Any = _MISSING) -> str:
    """A non-empty string."""
    value = get(params, key, default)
    if not isinstance(value, str) or not value:
        raise _fail(key, "a non-empty string", value)
    return value


def integer_list(params: dict, key: str, length: int | None = None, low: int | None = None) -> list[int]:
    """A list of ints, optionally of a fixed length, each >= low."""
    value = get(params, key)
    expected = "a list of " + (f"{length} " if length else "") + "integers" + _range_text(low, None)
    if not isinstance(value, list) or (length is not None and len(value) != length) or not value:
        raise _fail(key, expected, value)
    for item in value:
        if not isinstance(item, int) or isinstance(item, bool) or (low is not None and item < low):
            raise _fail(key, expected, value)
    return value


def folds(params: dict) -> list[int]:
    """The top-level ``folds`` list: 0, 1, ..., K-1 with K >= 2."""
    value = integer_list(params, "folds", low=0)
    if value != list(range(len(value))) or len(value) < 2:
        raise _fail("folds", "the list 0, 1, ..., K-1 with K >= 2", value)
    return value


def number_list(params: dict, key: str, length: int, low: float | None = None, high: float | None = None,
                increasing: bool = False) -> list[float]:
    """A list of ``length`` numbers within [low, high], strictly increasing if asked."""
    value = get(params, key)
    expected = (f"a list of {length} numbers" + _range_text(low, high)
                + (" in increasing order" if increasing else ""))
    if not isinstance(value, list) or len(value) != length:
        raise _fail(key, expected, value)
    for item in value:
        if not isinstance(item, (int, float)) or isinstance(item, bool) \
                or (low is not None and item < low) or (high is not None and item > high):
            raise _fail(key, expected, value)
    if increasing and any(a >= b for a, b in zip(value, value[1:])):
        raise _fail(key, expected, value)
    return [float(v) for v in value]
