"""regfac-jax: Region-Based Semantic Factorization (ReSeFa) of GAN latent spaces in JAX/Flax.

Library modules are pure and importable without flags, I/O or downloads:

* ``regfac_jax.jacobian``   -- forward-mode image Jacobians and per-region Gram matrices.
* ``regfac_jax.directions`` -- the whitened generalized symmetric eigen-solver (and the paper's
  variant).
* ``regfac_jax.regions``    -- boxes, presets and masks.
* ``regfac_jax.edit``       -- applying directions in W, W+ (layer subsets) or Z.
* ``regfac_jax.models``     -- Flax generators (StyleGAN2, StyleGAN3, BigGAN) behind one object API.
"""

__version__ = "0.1.0"
