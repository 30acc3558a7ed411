"""Saving and restoring converted generators: an orbax checkpoint of the arrays plus a JSON
description.

Layout of a generator directory::

    DIR/generator.json   {"format": "regfac-jax-generator", "format_version": 1, "kind": ..., "config": {...},
                          "empty_arrays": {...}}
    DIR/arrays/          orbax PyTree checkpoint of {"params": ..., "buffers": ...}

Writes are atomic: everything goes to a temporary sibling directory which is renamed into place only
when complete, so an interrupted save never leaves a half-written DIR. This module needs no torch.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import uuid
from typing import Any

import numpy as np

from regfac_jax import io_utils

FORMAT = "regfac-jax-generator"
FORMAT_VERSION = 1
META_FILE = "generator.json"
ARRAYS_DIR = "arrays"

__all__ = ["FORMAT_VERSION", "META_FILE", "is_generator_dir", "load_generator", "save_generator"]


def is_generator_dir(path: str | os.PathLike) -> bool:
    """True if ``path`` is a directory written by :func:`save_generator`."""
    return (pathlib.Path(path) / META_FILE).is_file()


def _split_empty(tree: Any, prefix: str, empty: dict) -> Any:
    """Copies ``tree`` as numpy arrays, moving zero-size arrays (which orbax refuses) into
    ``empty``."""
    if isinstance(tree, dict):
        return {
            k: _split_empty(v, f"{prefix}.{k}" if prefix else k, empty) for k, v in tree.items()
        }
    arr = np.asarray(tree)
    if arr.size == 0:
        empty[prefix] = {"shape": list(arr.shape), "dtype": arr.dtype.str}
        return {}
    return arr


def _put_empty(tree: dict, empty: dict) -> dict:
    for name, info in empty.items():
        node = tree
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = np.zeros(info["shape"], np.dtype(info["dtype"]))
    return tree


def _tree_and_meta(gen) -> tuple[dict, dict]:
    """The arrays orbax writes ({params, buffers}, empty arrays left out) and the JSON meta."""
    empty: dict = {}
    tree = {
        "params": _split_empty(gen.params, "params", empty),
        "buffers": _split_empty(gen.buffers, "buffers", empty),
    }
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": gen.kind,
        "config": gen.config,
        "empty_arrays": empty,
    }
    return tree, meta


def save_generator(gen, directory: str | os.PathLike, overwrite: bool = False) -> pathlib.Path:
    """Writes ``gen`` (kind, config, params, buffers) to ``directory`` atomically.

    Args:
      gen: a :class:`regfac_jax.models.base.Generator`.
      directory: the destination; must not exist unless ``overwrite``.
      overwrite: replace an existing destination (only after the new one is completely written).
    Returns:
      The destination path.
    Raises:
      FileExistsError: ``directory`` exists and ``overwrite`` is False.
    """
    import orbax.checkpoint as ocp  # local: keeps `import regfac_jax` light

    dest = pathlib.Path(directory).absolute()
    if dest.exists() and not overwrite:
        raise FileExistsError(
            f"{dest} already exists; pass overwrite=True (CLI: --overwrite) to replace it."
        )
    tree, meta = _tree_and_meta(gen)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        ocp.PyTreeCheckpointer().save(tmp / ARRAYS_DIR, tree)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        io_utils.replace_dir(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


def load_generator(directory: str | os.PathLike):
    """Rebuilds the generator saved by :func:`save_generator` (arrays come back as numpy arrays).

    Raises:
      FileNotFoundError: ``directory`` is not a generator directory.
      ValueError: it was written by an unknown format version.
    """
    import orbax.checkpoint as ocp

    from regfac_jax import models

    src = pathlib.Path(directory).absolute()
    if not is_generator_dir(src):
        raise FileNotFoundError(
            f"{src} is not a regfac-jax generator directory (no {META_FILE}); create one "
            "with `python -m converters --src CHECKPOINT --dst DIR`."
        )
    meta = json.loads((src / META_FILE).read_text())
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{src}/{META_FILE} has format {meta.get('format')!r} version "
            f"{meta.get('format_version')!r}; this code reads {FORMAT!r} version {FORMAT_VERSION}."
        )
    tree = ocp.PyTreeCheckpointer().restore(src / ARRAYS_DIR)
    tree = _put_empty(
        {"params": dict(tree.get("params", {})), "buffers": dict(tree.get("buffers", {}))},
        meta.get("empty_arrays", {}),
    )
    return models.build(meta["kind"], meta["config"], tree["params"], tree["buffers"])
