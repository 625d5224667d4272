"""Nested dicts as params.yaml and the metrics files hold them, addressed by joined keys (``train.model.width``)."""

from __future__ import annotations

from typing import Any

MISSING: Any = object()  # what :func:`lookup` returns for an absent key (None is a value a YAML file can hold)


def flatten(node: dict, separator: str = ".", prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 2}}`` -> ``{"train.epochs": 2}``; lists and empty dicts stay values."""
    flat = {}
    for key, child in node.items():
        name = f"{prefix}{key}"
        if isinstance(child, dict) and child:
            flat.update(flatten(child, separator, name + separator))
        else:
            flat[name] = child
    return flat


def lookup(node: dict, key: str, separator: str = ".") -> Any:
    """The value at a joined ``key``, or :data:`MISSING` when some part of it is absent."""
    for part in key.split(separator):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def assign(node: dict, key: str, value: Any, separator: str = ".") -> None:
    """Set the value at a joined ``key`` in place, making the dicts on the way where they are absent. Raises
    ValueError naming the part of ``key`` that holds a value rather than a dict."""
    *parents, leaf = key.split(separator)
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"{part} is not a section")
    node[leaf] = value
