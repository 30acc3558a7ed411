"""The matmul/convolution precision the ports trace with: ``HIGHEST`` (float32 throughout) unless a
caller asks for the backend's default passes (TF32/bf16 on GPU/TPU; no difference on CPU) inside
:func:`use`.

The value is read when a function is traced, so a jitted function keeps the precision of its trace;
:func:`regfac_jax.jacobian.weighted_grams` therefore takes it in its static
:class:`~regfac_jax.jacobian.JacobianOptions`.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from jax import lax

NAMES = {"highest": lax.Precision.HIGHEST, "default": lax.Precision.DEFAULT}
_STATE = threading.local()


def matmul_precision() -> lax.Precision:
    """The precision for matrix products and convolutions in the current trace (``HIGHEST`` by
    default)."""
    return getattr(_STATE, "value", lax.Precision.HIGHEST)


@contextlib.contextmanager
def use(name: str) -> Iterator[None]:
    """Traces inside this context use precision ``name`` ('highest' or 'default')."""
    if name not in NAMES:
        raise ValueError(f"precision must be one of {sorted(NAMES)}, got {name!r}.")
    previous = matmul_precision()
    _STATE.value = NAMES[name]
    try:
        yield
    finally:
        _STATE.value = previous
