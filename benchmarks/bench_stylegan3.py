"""StyleGAN3 port speed on this machine: the filtered leaky ReLU, synthesis, and the Jacobian
against its floor.

Run: ``python -m benchmarks.bench_stylegan3`` (about 3 minutes on 2 busy CPU cores; ``--help`` for
options).

* Filtered leaky ReLU: ``regfac_jax.ops.filtered_lrelu`` (polyphase up filter, strided down filter,
  no inserted zeros) against a naive version written here the way the official reference path runs
  it (zeros materialised, every pass a full depthwise convolution, the down pass evaluated
  everywhere then subsampled), on the shapes of the model's own layers; their max-abs difference
  relative to max |naive| is printed as a check (float32 rounding: ~1e-7).
* Synthesis and Jacobian for tiny random-weight T and R models: seconds for one image, for the floor
  (one forward pass at batch ``w_dim``: the arithmetic a forward-mode Jacobian cannot avoid) and for
  ``jax.jacfwd`` of ``latent_fn('w')`` (``w_dim`` tangents), with the ratios jacobian / floor and
  floor / (w_dim x one image).

All timings are medians of ``--repeats`` runs after one warm-up (compilation excluded), all on the
same machine in one process. Random weights: the values do not change the arithmetic, only the leaky
ReLU's branch choice.
"""

from __future__ import annotations

import argparse
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks.timing import median_seconds
from converters import stylegan3 as sg3_converter
from regfac_jax.models.stylegan3 import LayerSpec, StyleGAN3Generator
from regfac_jax.ops.filtered_lrelu import filtered_lrelu

KINDS = {
    "t": dict(conv_kernel=3, use_radial_filters=False),
    "r": dict(conv_kernel=1, use_radial_filters=True),
}


def tiny_config(kind: str, resolution: int, w_dim: int, channel_max: int) -> dict:
    return dict(
        z_dim=w_dim,
        w_dim=w_dim,
        c_dim=0,
        img_resolution=resolution,
        img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        channel_base=32 * resolution,
        channel_max=channel_max,
        num_fp16_res=0,
        **KINDS[kind],
    )


def build(config: dict) -> StyleGAN3Generator:
    """A generator with random weights (positive filters and magnitudes) of the right official
    shapes."""
    rng = np.random.default_rng(0)
    sd = {
        k: rng.standard_normal(s).astype(np.float32)
        for k, s in sg3_converter.expected_shapes(config).items()
    }
    for key in sd:
        if key.endswith(("magnitude_ema", "_filter")):
            sd[key] = np.abs(sd[key]) / sd[key].size + 0.1
    sd["synthesis.input.transform"] = np.eye(3, dtype=np.float32)
    return sg3_converter.convert(sd, config)


# ---- the naive filtered leaky ReLU: separate passes, as the official reference path runs them ----------------


def _depthwise_full(x: jax.Array, f: jax.Array) -> jax.Array:
    """Valid true convolution of every channel with f [kh, kw] (all outputs, no stride)."""
    c = x.shape[-1]
    kernel = jnp.broadcast_to(jnp.flip(f)[:, :, None, None], (*f.shape, 1, c))
    return lax.conv_general_dilated(
        x,
        kernel,
        (1, 1),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c,
        precision=lax.Precision.HIGHEST,
    )


def _naive_fir(x, f, up: int, down: int, pad: tuple[int, int, int, int], gain: float) -> jax.Array:
    n, h, w, c = x.shape
    z = (
        jnp.zeros((n, h, up, w, up, c), x.dtype)
        .at[:, :, 0, :, 0, :]
        .set(x)
        .reshape(n, h * up, w * up, c)
    )
    z = lax.pad(
        z, jnp.zeros((), x.dtype), [(0, 0, 0), (pad[2], pad[3], 0), (pad[0], pad[1], 0), (0, 0, 0)]
    )
    if f is not None:
        f = f * gain ** (f.ndim / 2)
        z = (
            _depthwise_full(z, f)
            if f.ndim == 2
            else _depthwise_full(_depthwise_full(z, f[None, :]), f[:, None])
        )
    elif gain != 1:
        z = z * gain
    return z[:, ::down, ::down, :]


def naive_filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp):
    x = x + b
    x = _naive_fir(x, fu, up, 1, padding, up**2)
    x = jnp.where(x > 0, x, x * slope) * gain
    if clamp is not None:
        x = jnp.clip(x, -clamp, clamp)
    return _naive_fir(x, fd, 1, down, (0, 0, 0, 0), 1)


def _picked_layers(gen: StyleGAN3Generator) -> dict[str, LayerSpec]:
    """One layer of each kind: the first (margins), the first 4x upsampler, the last critical one."""
    layers: list[LayerSpec] = list(gen.spec.layers)
    return {
        layer.name: layer
        for layer in [layers[0]]
        + [spec for spec in layers if spec.up_factor == 4][:1]
        + [layers[-2]]
    }


def _lrelu_options(gen: StyleGAN3Generator, name: str, s: LayerSpec) -> dict:
    """Layer ``name``'s filtered leaky ReLU arguments: filters, bias, factors, padding, gain, clamp."""
    bufs = gen.buffers["synthesis"][name]
    return dict(
        fu=bufs.get("up_filter"),
        fd=bufs.get("down_filter"),
        b=gen.params["synthesis"][name]["bias"],
        up=s.up_factor,
        down=s.down_factor,
        padding=s.padding,
        gain=math.sqrt(2),
        slope=0.2,
        clamp=s.conv_clamp,
    )


def _lrelu_row(name: str, s: LayerSpec, x: jax.Array, opts: dict, repeats: int) -> None:
    """Times ours and the naive version on ``x`` [batch, size, size, channels]; prints one row."""
    ours = jax.jit(functools.partial(filtered_lrelu, **opts))
    naive = jax.jit(functools.partial(naive_filtered_lrelu, **opts))
    t_ours = median_seconds(functools.partial(ours, x), repeats)
    t_naive = median_seconds(functools.partial(naive, x), repeats)
    diff = float(jnp.max(jnp.abs(ours(x) - naive(x))) / jnp.max(jnp.abs(naive(x))))
    fd, size = opts["fd"], x.shape[1]
    kind = "-" if fd is None else ("radial" if fd.ndim == 2 else "separable")
    print(
        f"{name:>12} {f'{size}x{size}x{s.out_channels}':>9} "
        f"{f'{s.up_factor}/{s.down_factor}':>8} {kind:>11} "
        f"{t_ours * 1e3:9.2f} {t_naive * 1e3:9.2f} {t_naive / t_ours:7.1f}x {diff:9.1e}"
    )


def bench_filtered_lrelu(gen: StyleGAN3Generator, batch: int, repeats: int) -> None:
    picks = _picked_layers(gen)
    print(f"filtered_lrelu, batch {batch}: ours vs naive separate passes (ms, median of {repeats})")
    print(
        f"{'layer':>12} {'in':>9} {'up/down':>8} {'down filter':>11} {'ours':>9} {'naive':>9} "
        f"{'speedup':>8} {'rel diff':>9}"
    )
    rng = np.random.default_rng(0)
    for name, s in picks.items():
        size = s.in_size + s.conv_kernel - 1
        x = jnp.asarray(rng.standard_normal((batch, size, size, s.out_channels)), jnp.float32)
        _lrelu_row(name, s, x, _lrelu_options(gen, name, s), repeats)


def bench_synthesis_and_jacobian(gen: StyleGAN3Generator, repeats: int) -> None:
    d = gen.w_dim
    ws = jax.random.normal(jax.random.key(1), (d, gen.num_ws, d))
    one = median_seconds(lambda: gen.synthesis(ws[:1]), repeats)
    floor = median_seconds(lambda: gen.synthesis(ws), repeats)
    g = gen.latent_fn("w")
    jac_fn = jax.jit(lambda g, w: jax.jacfwd(g)(w))
    jac = median_seconds(lambda: jac_fn(g, ws[0, 0]), repeats)
    print(
        f"  one image {one * 1e3:8.1f} ms | floor (batch {d}) {floor * 1e3:8.1f} ms | jacobian "
        f"({d} tangents) "
        f"{jac * 1e3:8.1f} ms | jacobian / floor {jac / floor:5.2f} | floor / ({d} x one image) "
        f"{floor / (d * one):5.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--kinds", nargs="+", default=["t", "r"], choices=sorted(KINDS))
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--w_dim", type=int, default=32)
    parser.add_argument("--channel_max", type=int, default=64)
    parser.add_argument(
        "--batch", type=int, default=4, help="batch of the filtered_lrelu comparison"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}"
    )
    for kind in args.kinds:
        gen = build(tiny_config(kind, args.resolution, args.w_dim, args.channel_max))
        print(
            f"\nStyleGAN3-{kind.upper()} {args.resolution}px, channel_max {args.channel_max}, "
            f"w_dim {args.w_dim}, layers {', '.join(gen.layer_names)}"
        )
        bench_filtered_lrelu(gen, args.batch, args.repeats)
        print("synthesis and Jacobian (float32):")
        bench_synthesis_and_jacobian(gen, args.repeats)


if __name__ == "__main__":
    main()
