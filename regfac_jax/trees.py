"""Dotted names <-> nested dicts: the rule that maps official state_dict keys to parameter trees."""

from __future__ import annotations

from typing import Mapping


def nest(flat: Mapping[str, object]) -> dict:
    """``{'a.b.c': x}`` -> ``{'a': {'b': {'c': x}}}``."""
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def flatten(tree: Mapping, prefix: str = "") -> dict:
    """Inverse of :func:`nest`."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out
