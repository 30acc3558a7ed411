"""Applying directions: to W (all layers), to W+ on a layer subset, or to Z.

An edit moves a latent along a unit direction ``n`` by steps ``a``: ``w + a * n``. The paper edits
the layers 4-7 by default (8-11 for eyebrows and lipstick) with steps from -10 to 10 in 7 steps.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from regfac_jax import errors

#: The paper's default layers and steps.
PAPER_LAYERS = (4, 5, 6, 7)
PAPER_STEPS = (-10.0, 10.0, 7)


def step_range(
    start: float = PAPER_STEPS[0], stop: float = PAPER_STEPS[1], num: int = PAPER_STEPS[2]
) -> jnp.ndarray:
    """Evenly spaced edit strengths, ``[num]`` (the paper: -10..10 in 7 steps)."""
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}.")
    return jnp.linspace(start, stop, num)


def direction_per_layer(direction, num_ws: int, w_dim: int) -> jnp.ndarray:
    """Brings a direction to ``[num_ws, w_dim]``.

    Accepted: ``[w_dim]`` or ``[1, w_dim]`` (one direction, the same for every layer, as the paper's
    files store it), ``[num_ws, w_dim]`` (per layer) or ``[num_ws * w_dim]`` (a flattened W+
    direction).

    Raises:
      ValueError: any other shape, e.g. a file made for another latent width.
    """
    n = jnp.asarray(direction, jnp.float32)
    if n.shape in ((w_dim,), (1, w_dim)):
        return jnp.broadcast_to(n.reshape(1, w_dim), (num_ws, w_dim))
    if n.shape == (num_ws, w_dim):
        return n
    if n.shape == (num_ws * w_dim,):
        return n.reshape(num_ws, w_dim)
    raise ValueError(
        f"A direction of shape {tuple(n.shape)} does not fit this latent space (num_ws={num_ws}, "
        f"w_dim={w_dim}); "
        f"expected [{w_dim}], [1, {w_dim}], [{num_ws}, {w_dim}] or [{num_ws * w_dim}]. Was it "
        "computed for another generator?"
    )


def layer_mask(num_ws: int, layers: Sequence[int] | None) -> jnp.ndarray:
    """``[num_ws]`` with ones on ``layers`` (all layers when None)."""
    if layers is None:
        return jnp.ones((num_ws,), jnp.float32)
    layers = [int(i) for i in layers]
    bad = [i for i in layers if not 0 <= i < num_ws]
    if bad:
        raise ValueError(
            f"Layers {bad} are beyond this generator's layers 0..{num_ws - 1} (num_ws={num_ws})."
        )
    return jnp.zeros((num_ws,), jnp.float32).at[jnp.asarray(layers, jnp.int32)].set(1.0)


def edit_ws(ws, direction, steps, layers: Sequence[int] | None = None) -> jnp.ndarray:
    """Edits per-layer latents.

    Args:
      ws: ``[N, num_ws, w_dim]``.
      direction: see :func:`direction_per_layer`.
      steps: ``[S]`` edit strengths.
      layers: layers to edit (None: all).

    Returns:
      ``[N, S, num_ws, w_dim]``: ``ws + step * direction`` on the chosen layers.
    """
    ws = jnp.asarray(ws)
    if ws.ndim != 3:
        raise ValueError(f"ws must be [N, num_ws, w_dim]; got shape {tuple(ws.shape)}.")
    _, num_ws, w_dim = ws.shape
    n = direction_per_layer(direction, num_ws, w_dim) * layer_mask(num_ws, layers)[:, None]
    steps = jnp.atleast_1d(jnp.asarray(steps, ws.dtype))
    return ws[:, None] + steps[None, :, None, None] * n[None, None].astype(ws.dtype)


def edit_latent(latent, direction, steps) -> jnp.ndarray:
    """Edits flat latents (W broadcast later, or Z): ``[N, d]`` -> ``[N, S, d]``."""
    latent = jnp.asarray(latent)
    if latent.ndim != 2:
        raise ValueError(f"latent must be [N, d]; got shape {tuple(latent.shape)}.")
    n = jnp.asarray(direction, latent.dtype)
    if n.shape not in ((latent.shape[1],), (1, latent.shape[1])):
        raise ValueError(
            f"A direction of shape {tuple(n.shape)} does not fit latents of width "
            f"{latent.shape[1]}."
        )
    steps = jnp.atleast_1d(jnp.asarray(steps, latent.dtype))
    return latent[:, None] + steps[None, :, None] * n.reshape(1, 1, -1)


def _load_finite(path, what: str) -> np.ndarray:
    """Reads a plain numeric ``.npy`` file and refuses NaN or inf (they would render garbage
    images)."""
    if not os.path.isfile(path):
        raise errors.InputFileError(f"{what} file {os.fspath(path)!r} does not exist.")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as err:  # pickled objects, or not a .npy file at all
        raise errors.InputFileError(
            f"{path}: not a plain numeric .npy array of {what} ({err})."
        ) from None
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.number):
        raise errors.InputFileError(
            f"{path}: expected a numeric .npy array of {what}, got {type(arr).__name__} "
            f"{getattr(arr, 'dtype', '')}."
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.argwhere(bad)[:, 0]).tolist() if arr.ndim > 1 else []
        where = f" (rows {rows[:10]}{' ...' if len(rows) > 10 else ''})" if rows else ""
        raise errors.InputFileError(
            f"{path}: {int(bad.sum())} of {arr.size} values of these {what} are NaN or "
            f"inf{where}; recompute or replace the file."
        )
    return arr


def load_directions(path, latent_dim: int) -> np.ndarray:
    """Reads a direction file in the paper's layout (``.npy``, rows ``[k, d]``) and checks its
    width.

    Returns:
      ``[k, latent_dim]`` float32 (a single ``[d]`` direction becomes ``[1, d]``).
    Raises:
      errors.InputFileError (a ValueError): missing file, not a numeric array, NaN/inf values, or a
        width other than ``latent_dim``.
    """
    arr = _load_finite(path, "directions")
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != latent_dim:
        raise errors.InputFileError(
            f"{path}: directions of shape {arr.shape} do not fit a latent of width "
            f"{latent_dim}; expected [k, {latent_dim}] (one direction per row)."
        )
    return arr.astype(np.float32)


def load_latents(path, latent_dim: int) -> np.ndarray:
    """Reads latent codes ``[N, latent_dim]`` from a ``.npy`` file (e.g. ``--config.latents_file``).

    Raises:
      errors.InputFileError (a ValueError): missing file, not a numeric array, NaN/inf values, or
        not ``[N, latent_dim]``.
    """
    arr = _load_finite(path, "latents")
    if arr.ndim != 2 or arr.shape[1] != latent_dim or arr.shape[0] < 1:
        raise errors.InputFileError(
            f"{path}: latents of shape {arr.shape} do not fit this generator; expected "
            f"[N, {latent_dim}] (one latent per row)."
        )
    return arr.astype(np.float32)
