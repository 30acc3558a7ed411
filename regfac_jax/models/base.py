"""The generator-object API shared by every model port.

Every port (StyleGAN2, StyleGAN3, BigGAN) exposes a :class:`Generator` subclass holding

* ``kind``     -- 'stylegan2' | 'stylegan3' | 'biggan' (class attribute);
* ``config``   -- the official constructor kwargs (JSON-serialisable dict), from which every shape follows;
* ``params``   -- trainable parameters, a nested dict mirroring the official state_dict names split on '.'
                  (``synthesis.b8.conv0.affine.weight`` ->
                  ``params['synthesis']['b8']['conv0']['affine']['weight']``);
* ``buffers``  -- non-trainable arrays (``w_avg``, const noise, resampling filters, ...), same naming, kept
                  apart so Jacobians and optimisers never see them.

Images are NHWC float32 in the official value range.

:meth:`Generator.latent_fn` returns the pure ``g(latent [d]) -> image [H, W, C]`` that
:mod:`regfac_jax.jacobian` differentiates. It is a :class:`jax.tree_util.Partial` whose leaves are
the params and buffers, so passing it into a jitted function makes the weights traced arguments
rather than constants folded into the compiled program (which would make compiling a 1024x1024
generator slow and memory hungry).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Sequence

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

PyTree = Any


@dataclasses.dataclass(eq=False)
class Generator:
    """Base class: a converted generator with its configuration, parameters and buffers."""

    config: dict
    params: PyTree
    buffers: PyTree

    kind: ClassVar[str] = ""

    def __post_init__(self):
        self._fn_cache: dict = {}

    # ---- sizes every port provides ---------------------------------------------------------------
    @property
    def img_resolution(self) -> int:
        raise NotImplementedError

    @property
    def img_channels(self) -> int:
        raise NotImplementedError

    @property
    def latent_dim(self) -> int:
        """Width of the default editing latent (w_dim for StyleGANs, z_dim for BigGAN)."""
        raise NotImplementedError

    def latent_fn(self, space: str = "w", **kwargs) -> Callable[[jax.Array], jax.Array]:
        """Returns a pure ``g(latent [d]) -> image [H, W, C]``; ports document the spaces they
        support."""
        raise NotImplementedError

    def _cached(self, key, make: Callable[[], Callable]) -> Callable:
        """One pure function object per (space, options): stable identity keeps jit caches warm."""
        if key not in self._fn_cache:
            self._fn_cache[key] = make()
        return self._fn_cache[key]


class StyleGANBase(Generator):
    """Shared latent-space plumbing for StyleGAN2/3.

    Subclasses implement the two pure functions below (they must be jit-able and must not read
    ``self.params`` or ``self.buffers``: weights arrive as arguments), plus ``w_dim``, ``z_dim`` and
    ``c_dim``, and set ``spec`` (their parsed config, with ``num_ws``, ``img_resolution`` and
    ``img_channels``) in ``__post_init__``.
    """

    spec: Any
    w_dim: int
    z_dim: int
    c_dim: int

    @property
    def num_ws(self) -> int:
        """How many w vectors synthesis takes (one per modulated layer, plus the last toRGB for
        StyleGAN2)."""
        return self.spec.num_ws

    @property
    def img_resolution(self) -> int:
        return self.spec.img_resolution

    @property
    def img_channels(self) -> int:
        return self.spec.img_channels

    def mapping_apply(self, params, buffers, z, c, truncation_psi, truncation_cutoff) -> jax.Array:
        """z [N, z_dim], c [N, c_dim] -> ws [N, num_ws, w_dim]."""
        raise NotImplementedError

    def synthesis_apply(
        self, params, buffers, ws, noise_mode: str = "const", key=None, **kwargs
    ) -> jax.Array:
        """ws [N, num_ws, w_dim] -> images [N, H, W, C]."""
        raise NotImplementedError

    # ---- the public object API -------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return self.w_dim

    def mapping(self, z, c=None, truncation_psi: float = 1.0, truncation_cutoff: int | None = None):
        """z [N, z_dim] (and one-hot c [N, c_dim] for conditional models) -> ws [N, num_ws,
        w_dim]."""
        z = jnp.asarray(z, jnp.float32)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [N, {self.z_dim}], got {tuple(z.shape)}.")
        if self.c_dim > 0:
            if c is None:
                raise ValueError(
                    f"This generator is conditional (c_dim={self.c_dim}); "
                    f"pass c of shape [N, {self.c_dim}]."
                )
            c = jnp.asarray(c, jnp.float32)
            if c.shape != (z.shape[0], self.c_dim):
                raise ValueError(
                    f"c must have shape [{z.shape[0]}, {self.c_dim}], got {tuple(c.shape)}."
                )
        else:
            c = jnp.zeros((z.shape[0], 0), jnp.float32)
        fn = self._cached(
            ("mapping", truncation_cutoff),
            lambda: jax.jit(
                functools.partial(self.mapping_apply, truncation_cutoff=truncation_cutoff)
            ),
        )
        return fn(self.params, self.buffers, z, c, truncation_psi=jnp.float32(truncation_psi))

    def synthesis(self, ws, noise_mode: str = "const", key=None, **kwargs):
        """ws [N, num_ws, w_dim] -> images [N, H, W, C]."""
        ws = jnp.asarray(ws)
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(
                f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}."
            )
        if noise_mode == "random" and key is None:
            raise ValueError("noise_mode='random' needs a PRNG key (key=jax.random.key(seed)).")
        # Hashable options (strings, numbers, tuples) select the compiled program; arrays are traced
        # arguments.
        static = {
            k: v
            for k, v in kwargs.items()
            if isinstance(v, (str, int, float, bool, tuple, type(None)))
        }
        traced = {k: v for k, v in kwargs.items() if k not in static}
        fn = self._cached(
            ("synthesis", noise_mode, tuple(sorted(static.items())), tuple(sorted(traced))),
            lambda: jax.jit(
                functools.partial(self.synthesis_apply, noise_mode=noise_mode, **static)
            ),
        )
        return fn(self.params, self.buffers, ws, key=key, **traced)

    def generate(
        self,
        z,
        c=None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        key=None,
        **kwargs,
    ):
        """z -> images [N, H, W, C]: mapping then synthesis."""
        return self.synthesis(
            self.mapping(z, c, truncation_psi, truncation_cutoff), noise_mode, key, **kwargs
        )

    # ---- pure functions for Jacobians ------------------------------------------------------------
    def latent_fn(
        self,
        space: str = "w",
        layers: Sequence[int] | None = None,
        base_ws=None,
        noise_mode: str = "const",
        **options,
    ) -> Partial:
        """The pure function a Jacobian differentiates.

        Args:
          space: 'w'     -- g(w [w_dim]): w written into every layer (the paper's choice), or only into
                            ``layers`` when given, the other layers held at ``base_ws`` [num_ws,
                            w_dim];
                 'wplus' -- g(wp [num_ws * w_dim]): per-layer w vectors, flattened layer-major.
          layers: layer indices for space 'w' (e.g. the paper's 4-7); None means all layers.
          base_ws: [num_ws, w_dim] values of the layers not in ``layers`` (required when ``layers``
            is given).
          noise_mode: 'const' or 'none' (a Jacobian needs a deterministic function).
          **options: hashable keyword options passed on to ``synthesis_apply`` (e.g. StyleGAN2's
            ``modulation``).
        Returns:
          ``jax.tree_util.Partial`` g with g(latent) -> image [H, W, C].
        """
        if noise_mode not in ("const", "none"):
            raise ValueError(
                f"noise_mode must be 'const' or 'none' for a Jacobian, got {noise_mode!r}."
            )
        if space == "w":
            mask, base = self._layer_mask(layers, base_ws)
            key = ("latent_w", noise_mode, tuple(sorted(options.items())))
            fn = self._cached(key, lambda: functools.partial(_w_image, self, noise_mode, options))
            return Partial(fn, self.params, self.buffers, mask, base)
        if space == "wplus":
            key = ("latent_wplus", noise_mode, tuple(sorted(options.items())))
            fn = self._cached(
                key, lambda: functools.partial(_wplus_image, self, noise_mode, options)
            )
            return Partial(fn, self.params, self.buffers)
        raise ValueError(
            f"Unknown latent space {space!r} for {self.kind}; expected 'w' or 'wplus'."
        )

    def _layer_mask(self, layers: Sequence[int] | None, base_ws) -> tuple[jax.Array, jax.Array]:
        """(mask [num_ws]: 1 where w is written, base [num_ws, w_dim]: the other layers' values) for
        space 'w'."""
        if layers is None:
            return jnp.ones((self.num_ws,), jnp.float32), jnp.zeros(
                (self.num_ws, self.w_dim), jnp.float32
            )
        layers = tuple(int(i) for i in layers)
        bad = [i for i in layers if not 0 <= i < self.num_ws]
        if bad:
            raise ValueError(
                f"layers {bad} are outside this generator's 0..{self.num_ws - 1} "
                f"(num_ws={self.num_ws})."
            )
        if base_ws is None:
            raise ValueError(
                "space='w' with a layer subset needs base_ws [num_ws, w_dim] for the other layers."
            )
        base = jnp.asarray(base_ws, jnp.float32)
        if base.shape != (self.num_ws, self.w_dim):
            raise ValueError(
                f"base_ws must be [{self.num_ws}, {self.w_dim}], got {tuple(base.shape)}."
            )
        return jnp.zeros((self.num_ws,), jnp.float32).at[jnp.asarray(layers)].set(1.0), base


def _w_image(gen: StyleGANBase, noise_mode, options, params, buffers, mask, base, w):
    mask = mask.astype(w.dtype)[:, None]
    ws = mask * w[None, :] + (1 - mask) * base.astype(w.dtype)
    return gen.synthesis_apply(params, buffers, ws[None], noise_mode=noise_mode, **options)[0]


def _wplus_image(gen: StyleGANBase, noise_mode, options, params, buffers, wp):
    ws = wp.reshape(gen.num_ws, gen.w_dim)
    return gen.synthesis_apply(params, buffers, ws[None], noise_mode=noise_mode, **options)[0]
