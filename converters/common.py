"""Shared pieces of every converter: strict key accounting and the name-to-tree rule.

Layout rules (the only place they are stated; every converter applies them through these helpers):

* names: an official state_dict key ``a.b.c`` becomes the nested path ``tree['a']['b']['c']``;
* arrays are converted to numpy float32 unless a converter says otherwise; PyTorch layouts
  (conv ``[out, in, kh, kw]``, dense ``[out, in]``) are kept unless the port's docstring states a
  transpose.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from regfac_jax.errors import UserError
from regfac_jax.trees import flatten, nest  # the name rule, shared with the library

__all__ = ["ConversionError", "StrictStateDict", "conv_weight", "dense_weight", "flatten", "nest"]


class ConversionError(UserError, ValueError):
    """A checkpoint does not fit the generator it is being converted to."""


class StrictStateDict:
    """Wraps a flat state_dict and insists that every key is used exactly once with the expected
    shape.

    Use ``take(key, shape)`` for each expected entry, then ``finish()``: it raises one
    :class:`ConversionError` listing every missing key, every unexpected (unused) key and every
    shape mismatch.
    """

    def __init__(self, state_dict: Mapping[str, object], what: str = "checkpoint"):
        self._sd = dict(state_dict)
        self._what = what
        self._used: set[str] = set()
        self._missing: list[str] = []
        self._mismatch: list[str] = []

    def __contains__(self, key: str) -> bool:
        return key in self._sd

    def keys(self) -> Iterable[str]:
        return self._sd.keys()

    def take(self, key: str, shape: tuple | None = None, dtype=np.float32) -> np.ndarray | None:
        """Returns the array under ``key`` (as ``dtype``), recording it as used; None if missing."""
        if key in self._used:
            raise ConversionError(f"{self._what}: key {key!r} was consumed twice (converter bug).")
        if key not in self._sd:
            self._missing.append(key if shape is None else f"{key} {tuple(shape)}")
            return None
        self._used.add(key)
        arr = np.asarray(self._sd[key])
        if shape is not None and tuple(arr.shape) != tuple(shape):
            self._mismatch.append(
                f"{key}: checkpoint has {tuple(arr.shape)}, expected {tuple(shape)}"
            )
        if arr.dtype == np.float16:
            raise ConversionError(
                f"{self._what}: {key!r} is stored as float16; convert the checkpoint to float32 "
                "first "
                "(e.g. the model's .float() in PyTorch) -- half-precision weights would silently "
                "lose accuracy."
            )
        if dtype is not None:
            arr = arr.astype(dtype)
        return arr

    def finish(self) -> None:
        """Raises :class:`ConversionError` if any key was missing, unused or of the wrong shape."""
        unexpected = sorted(set(self._sd) - self._used)
        if not (self._missing or unexpected or self._mismatch):
            return
        lines = [f"{self._what} does not match the generator built from its config:"]
        if self._missing:
            lines.append(f"  missing keys ({len(self._missing)}): " + ", ".join(self._missing))
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
        if self._mismatch:
            lines.append(
                f"  shape mismatches ({len(self._mismatch)}): " + "; ".join(self._mismatch)
            )
        lines.append(
            "  Check that the config (resolution, channel_base/channel_max, mapping "
            "depth, c_dim, ...) is the one this checkpoint was trained with."
        )
        raise ConversionError("\n".join(lines))


def conv_weight(oihw: np.ndarray) -> np.ndarray:
    """PyTorch conv weight ``[out, in, kh, kw]`` -> Flax/JAX ``[kh, kw, in, out]`` (HWIO)."""
    return np.ascontiguousarray(np.transpose(oihw, (2, 3, 1, 0)))


def dense_weight(out_in: np.ndarray) -> np.ndarray:
    """PyTorch dense weight ``[out, in]`` -> Flax ``[in, out]``."""
    return np.ascontiguousarray(np.transpose(out_in))
