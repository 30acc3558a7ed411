"""One place for the parity measures and bars that every port's tests share.

Why float32 Jacobians need their own measure
-------------------------------------------
Through a leaky ReLU (or ReLU, or a clamp) the Jacobian is J = ... D S U ..., where S is diagonal
and holds the slope on the side of the kink that the forward pass landed on. A pre-activation within
float32 rounding of a kink can land on either side, depending on summation order, which depends on
the instruction set XLA emits for (AVX2 vs AVX-512 vs a GPU) and on the library (PyTorch vs XLA).
Changing one diagonal entry of S is a rank-1 change of J: ``(slope difference) * g_u h_uᵀ``, with
``g_u`` the image's derivative with respect to that unit and ``h_u`` the unit's derivative with
respect to the latent. So two correct float32 Jacobians of the same network may differ by a matrix
of rank at most the number of kink flips (that matter), plus float32 rounding everywhere. That error
can be large in a few entries (1e-3 of max |J| for the StyleGAN3-T fixture's official float32 vs
float64 Jacobians), so a plain entrywise bound either fails on some CPU or is too loose to catch
bugs.

:func:`kink_residual` removes the top ``flips`` right-singular directions (in latent space) of the
difference and returns the largest remaining entry relative to ``scale``. Rounding alone leaves
~1e-6 there; a wrong tap, gain, filter or clamp changes J in every direction and shows up in the
residual at full size. What it cannot see is an error confined to ``flips`` latent directions; the
float64 tests, which have no kink ambiguity, cover that.
"""

from __future__ import annotations

import numpy as np

# Parity bar for float32 outputs against the official float32 outputs: float32 rounding through ~15
# layers gives ~1e-6 on images of magnitude ~1-5 (measured <= 4e-6); a real error (a wrong gain, tap
# or clamp) moves pixels by > 1e-2.
PARITY_TOL = 1e-4

# Float32 Jacobian bar relative to max |J|: rounding measures 1e-6 to 2.3e-6 on every fixture, ours
# vs official; 1e-5 keeps ~5x headroom and is 10x tighter than PARITY_TOL.
F32_JACOBIAN_TOL = 1e-5

# How many kink flips a float32 Jacobian may hold relative to another one. A flip needs a
# pre-activation within ~1e-6 (relative) of a kink AND a unit whose influence on the image exceeds
# the 1e-5 bar. Measured on the fixtures: the official float32 vs float64 Jacobians differ by
# exactly one such flip for StyleGAN3-T (singular values of the difference: 1.1e-2, then 3e-5, 2e-5,
# ... of max |J|) and by none for StyleGAN3-R and StyleGAN2. Two float32 runs can each flip a
# different unit, so 1 per side doubled gives 4, which leaves margin for rare extra flips on other
# instruction sets and still removes only 4 of the 16-32 latent directions the fixtures have.
MAX_KINK_FLIPS = 4


def max_abs(a, b) -> float:
    """Largest absolute difference, computed in float64."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def nchw(img):
    """Our NHWC images [N, H, W, C] in the official fixtures' NCHW layout [N, C, H, W]."""
    return np.asarray(img).transpose(0, 3, 1, 2)


def kink_residual(
    got, ref, scale: float, latent_axis: int = -1, flips: int = MAX_KINK_FLIPS
) -> float:
    """Largest entry of ``(got - ref) / scale`` once its ``flips`` leading latent-space directions
    are removed.

    Args:
      got, ref: Jacobians of the same shape, with the latent dimension at ``latent_axis``.
      scale: normaliser (max |J| of the reference).
      latent_axis: axis of the latent (the Jacobian's input) dimension.
      flips: number of rank-1 kink flips to allow (see the module docstring).

    Returns:
      The max-abs residual relative to ``scale``; 0 <= it <= max_abs(got, ref) / scale.
    """
    diff = np.moveaxis(np.asarray(got, np.float64) - np.asarray(ref, np.float64), latent_axis, -1)
    diff = diff.reshape(-1, diff.shape[-1]) / scale
    _, _, vt = np.linalg.svd(diff, full_matrices=False)
    top = vt[:flips]
    return float(np.abs(diff - (diff @ top.T) @ top).max())
