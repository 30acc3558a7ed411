"""BigGAN image-to-z Jacobian: ours vs the paper's PyTorch approach:
``python -m benchmarks.bench_biggan``.

Three ways to get d(image [3, H, W]) / d(z [z_dim]) for one sample, on the same weights, machine and
run:

* ours:        ``jax.jit(jax.jacfwd(g))`` with ``g = BigGANGenerator.latent_fn('z', ...)``, timed after compiling,
               and the library's ``regfac_jax.jacobian.jacobian(g, z, tangent_chunk=k)`` (one
               linearisation, then ``z_dim / k`` batches of ``k`` JVPs: with small k the 64x64
               self-attention map of a tangent stays in cache, where ``jacfwd`` pushes all tangents
               through it at once);
* paper:       ``torch.autograd.functional.jacobian(f, z)`` on the package's model (what ReSeFa's code calls): one
               forward, then one reverse pass per output value. With ``H * W * 3`` above
               ``--paper_outputs`` it is run on that many random outputs and extrapolated linearly
               to all of them (forward + outputs x per-output cost, the forward timed on its own);
               the printout says when it did;
* torch.func:  ``torch.func.jacfwd(f)(z)`` (vectorised forward mode) on the package's model.

Models: the fixture BigGAN-deep (``shared/fixtures/biggan``, 32 px) and a random-weight 128 px model
with the released 128 px layer layout, z_dim 128, 1000 classes and a small ``--channel_width``.
Needs torch and pytorch-pretrained-biggan. Times are medians of ``--repeats`` runs after compiling
(ours) or one warm-up run (torch); the paper approach's subset run is timed once (it is long enough
to be stable). Runs on the CPU by default; ``JAX_PLATFORMS`` picks JAX's device, torch stays on the
CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from converters import biggan as conv
from regfac_jax import jacobian
from regfac_jax.models import biggan as bg

FIXTURES = pathlib.Path(
    os.environ.get(
        "REGFAC_FIXTURES", pathlib.Path(__file__).resolve().parents[2] / "shared" / "fixtures"
    )
)


def random_package_model(cfg: dict, seed: int = 0):
    """A random-weight ``pytorch_pretrained_biggan.BigGAN`` in eval mode with nothing trivially 0 or
    1.

    Standing statistics, the final batch norm (left uninitialised by the package) and the attention
    gamma get random values; five train-mode forwards advance the spectral-norm power iteration so
    u.(W v) is sensible.
    """
    import pytorch_pretrained_biggan as pb
    import torch
    from pytorch_pretrained_biggan.model import SelfAttn

    torch.manual_seed(seed)
    model = pb.BigGAN(pb.BigGANConfig(**cfg))
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_means"):
                buf.copy_(0.3 * torch.randn(buf.shape, generator=rng))
            elif name.endswith("running_vars"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=rng))
        bn = model.generator.bn
        bn.weight.copy_(1 + 0.1 * torch.randn(bn.weight.shape, generator=rng))
        bn.bias.copy_(0.1 * torch.randn(bn.bias.shape, generator=rng))
        for m in model.modules():
            if isinstance(m, SelfAttn):
                m.gamma.fill_(0.7)
        model.train()
        z, c = torch.randn(2, cfg["z_dim"], generator=rng), torch.eye(cfg["num_classes"])[:2]
        for _ in range(5):
            model(z, c, 1.0)
    return model.eval()


def fixture_models():
    import pytorch_pretrained_biggan as pb
    import torch

    d = FIXTURES / "biggan"
    cfg = json.loads((d / "config.json").read_text())
    sd = dict(np.load(d / "params.npz"))
    model = pb.BigGAN(pb.BigGANConfig(**cfg))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    return "fixture BigGAN-deep 32 px", cfg, sd, model.eval()


def big_models(channel_width: int):
    cfg = dict(bg.DEFAULT_CONFIG, channel_width=channel_width)
    model = random_package_model(cfg)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    return f"random BigGAN-deep 128 px, channel_width {channel_width}", cfg, sd, model


def _median_time(fn, repeats: int, warm_up: bool = True, min_total_s: float = 1.0):
    """Median seconds of at least ``repeats`` calls of ``fn`` (more, up to 50, until ``min_total_s``
    has passed, so that fast calls are not one noisy sample), after one untimed call if ``warm_up``;
    and the last value."""
    if warm_up:
        fn()
    times = []
    while len(times) < max(1, repeats) or (sum(times) < min_total_s and len(times) < 50):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def time_ours(gen, z, c, t, repeats, tangent_chunk=None):
    """(seconds, compile seconds, Jacobian [H, W, 3, z_dim]) of ``jax.jit(jax.jacfwd(g))``, or with
    ``tangent_chunk`` of ``regfac_jax.jacobian.jacobian`` (one linearisation, then chunks of that
    many JVPs)."""
    g = gen.latent_fn("z", class_vector=c, truncation=t)
    z = jnp.asarray(z)
    t0 = time.perf_counter()
    if tangent_chunk is None:
        jac = jax.jit(jax.jacfwd(lambda g, x: g(x), argnums=1)).lower(g, z).compile()

        def run():
            return jax.block_until_ready(jac(g, z))
    else:

        def run():
            return jax.block_until_ready(jacobian.jacobian(g, z, tangent_chunk=tangent_chunk))

        run()  # compiles (the jitted kernel is cached by the library)
    compile_s = time.perf_counter() - t0
    sec, out = _median_time(run, repeats, warm_up=False)
    return sec, compile_s, np.asarray(out)


def time_torch_func(model, z, c, t, repeats):
    """(seconds, Jacobian [H, W, 3, z_dim]) of ``torch.func.jacfwd`` on the package's model."""
    import torch

    def image(x):
        return model(x[None], c, t)[0]

    with torch.no_grad():
        sec, jac = _median_time(lambda: torch.func.jacfwd(image)(z), repeats)
    return sec, jac.numpy().transpose(1, 2, 0, 3)  # [3, H, W, z] -> [H, W, 3, z]


def time_paper(model, z, c, t, max_outputs, repeats):
    """The paper's approach: (seconds for the full Jacobian, extrapolated?, (output indices, their
    Jacobian rows)).

    Beyond ``max_outputs`` outputs it runs on the first ``max_outputs`` of a random permutation of
    the outputs and extrapolates: full = forward + outputs * (subset time - forward) / max_outputs,
    the forward timed on its own.
    """
    import torch

    with torch.no_grad():
        t_fwd, y = _median_time(lambda: model(z[None], c, t), repeats)
    n_out = int(np.prod(y.shape))
    idx = torch.from_numpy(np.random.RandomState(0).permutation(n_out))
    k = min(n_out, max_outputs)

    def sampled_outputs(x):
        return model(x[None], c, t).reshape(-1)[idx[:k]]

    torch.autograd.functional.jacobian(lambda x: model(x[None], c, t).reshape(-1)[:1], z)  # warm-up
    t0 = time.perf_counter()
    jac = torch.autograd.functional.jacobian(sampled_outputs, z).numpy()
    t_sub = time.perf_counter() - t0
    if k == n_out:
        return t_sub, False, (idx.numpy(), jac)
    per_output = max(t_sub - t_fwd, 0.0) / k
    return t_fwd + n_out * per_output, True, (idx[:k].numpy(), jac)


def _inputs(cfg: dict, t: float) -> tuple[np.ndarray, np.ndarray]:
    """One truncated z [z_dim] and a one-hot class vector [num_classes], as numpy."""
    z_np = bg.truncated_noise_numpy(1, cfg["z_dim"], t, seed=1)[0]
    c_np = np.zeros(cfg["num_classes"], np.float32)
    c_np[1 % cfg["num_classes"]] = 1.0
    return z_np, c_np


def _time_all(gen, model, z_np: np.ndarray, c_np: np.ndarray, args) -> dict:
    """Times the four Jacobians (paper, torch.func, ours, ours chunked); torch first."""
    import torch

    t = args.truncation
    z, c = torch.from_numpy(z_np), torch.from_numpy(c_np[None])
    r = {}
    # torch first: once XLA's CPU thread pool has run, it competes with torch's threads for a while
    r["t_paper"], r["extrapolated"], (r["idx"], r["j_sub"]) = time_paper(
        model, z, c, t, args.paper_outputs, args.repeats
    )
    r["t_func"], r["j_func"] = time_torch_func(model, z, c, t, args.repeats)
    r["t_ours"], r["t_compile"], r["j_ours"] = time_ours(gen, z_np, c_np, t, args.repeats)
    r["t_chunk"], r["t_compile_chunk"], r["j_chunk"] = time_ours(
        gen, z_np, c_np, t, args.repeats, tangent_chunk=args.tangent_chunk
    )
    return r


def _errors(r: dict, z_dim: int) -> dict:
    """Each method's max |dJ| against ours (``jacfwd``), relative to max |J|."""
    scale = np.abs(r["j_func"]).max()
    j_ours_chw = r["j_ours"].transpose(2, 0, 1, 3).reshape(-1, z_dim)  # torch's output order
    return {
        "func": np.abs(r["j_ours"] - r["j_func"]).max() / scale,
        "paper": np.abs(j_ours_chw[r["idx"]] - r["j_sub"]).max() / scale,
        "chunk": np.abs(r["j_chunk"] - r["j_ours"]).max() / scale,
    }


def _print_table(r: dict, errs: dict, k: int) -> None:
    """Prints one row per method: seconds, ratios to ``jacfwd`` and to chunked, error."""
    print(
        f"{'method':52s} {'seconds':>10s} {'/ jacfwd':>9s} {'/ chunked':>10s} "
        f"{'max|dJ|/max|J|':>15s}"
    )
    t_ours, t_chunk = r["t_ours"], r["t_chunk"]
    rows = [
        (
            f"ours: jax.jit(jax.jacfwd) (compile {r['t_compile']:.1f} s, excluded)",
            t_ours,
            "reference",
        ),
        (
            f"ours: jacobian.jacobian(tangent_chunk={k}) (compile {r['t_compile_chunk']:.1f} s)",
            t_chunk,
            f"{errs['chunk']:.2e}",
        ),
        (
            "paper: torch.autograd.functional.jacobian"
            + (" (extrap.)" if r["extrapolated"] else ""),
            r["t_paper"],
            f"{errs['paper']:.2e}",
        ),
        ("torch.func.jacfwd", r["t_func"], f"{errs['func']:.2e}"),
    ]
    for label, sec, err in rows:
        print(f"{label:52s} {sec:10.4f} {sec / t_ours:9.2f} {sec / t_chunk:10.2f} {err:>15s}")


def _print_notes(r: dict, cfg: dict, args) -> None:
    """Prints the extrapolation note (when the paper approach was extrapolated) and the speed-ups."""
    k, t_ours, t_chunk = args.tangent_chunk, r["t_ours"], r["t_chunk"]
    if r["extrapolated"]:
        print(
            f"  (paper approach run on {args.paper_outputs} random outputs of "
            f"{r['j_ours'].size // cfg['z_dim']:,} and "
            "extrapolated linearly in the number of outputs; its error column compares those "
            "outputs)"
        )
    print(
        f"  speed-up of jax.jacfwd: {r['t_paper'] / t_ours:.0f}x the paper's approach, "
        f"{r['t_func'] / t_ours:.2f}x "
        f"torch.func.jacfwd; of tangent_chunk={k}: {r['t_paper'] / t_chunk:.0f}x and "
        f"{r['t_func'] / t_chunk:.2f}x"
    )


def bench(name, cfg, sd, model, args):
    for p in model.parameters():
        p.requires_grad_(False)  # only z is differentiated; spares torch any parameter bookkeeping
    gen = conv.convert(sd, cfg)
    z_np, c_np = _inputs(cfg, args.truncation)
    r = _time_all(gen, model, z_np, c_np, args)
    errs = _errors(r, cfg["z_dim"])
    h = cfg["output_dim"]
    print(
        f"\n== {name}: Jacobian [{h}, {h}, 3] x z_dim {cfg['z_dim']} = {r['j_ours'].size:,} "
        f"entries, truncation {args.truncation}"
    )
    _print_table(r, errs, args.tangent_chunk)
    _print_notes(r, cfg, args)


def _parser() -> argparse.ArgumentParser:
    """The command line's options."""
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--models", default="fixture,big128", help="comma list of: fixture, big128")
    ap.add_argument(
        "--channel_width", type=int, default=8, help="channel width of the random 128 px model"
    )
    ap.add_argument("--truncation", type=float, default=0.4)
    ap.add_argument(
        "--paper_outputs",
        type=int,
        default=32,
        help="largest number of outputs the paper approach is run on; beyond it, extrapolate",
    )
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--tangent_chunk",
        type=int,
        default=1,
        help="JVPs per batch for regfac_jax.jacobian.jacobian (1 keeps the 64x64 "
        "attention map of one "
        "tangent in cache)",
    )
    return ap


def main():
    args = _parser().parse_args()
    import torch

    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind} | torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads | {os.cpu_count()} CPUs"
    )
    makers = {"fixture": fixture_models, "big128": lambda: big_models(args.channel_width)}
    t0 = time.perf_counter()
    for key in args.models.split(","):
        bench(*makers[key.strip()](), args)
    print(f"\ntotal benchmark wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
