"""Paper-scale figures side by side in one run: auto's plan, forward speed vs the official PyTorch
code, Gram times.

Run: ``python -m benchmarks.bench_paper_scale --sg2ada /path/to/stylegan2-ada-pytorch --json
OUT.json`` (about 10-15 minutes on an idle 2-core CPU; ``--help`` for options).

* ``plans``: what ``region_grams(strategy='auto')`` picks at 1024^2, d = 512, 3 regions,
  ``--budget_gib``, for StyleGAN2 config-f with and without the paper's official preprocessing
  (``--plan_models`` adds StyleGAN3): strategy, tangent chunk, block and XLA's analysed peak bytes
  (compile only, nothing runs).
* ``forward``: seconds of one synthesis call (noise const) of our port and of the official
  stylegan2-ada-pytorch ``Generator`` (a local checkout given by ``--sg2ada``; it is not
  pip-installable) holding the same random config-f weights (converted with
  ``converters.convert_state_dict``), at each resolution and batch size; runs are interleaved (ours,
  torch, ours, torch, ...) and the ratio is torch / ours (> 1: ours is faster).
* ``grams``: at 1024^2 (``--gram_resolution``), seconds per tangent of our auto plan's JVP chunk and
  of ``torch.func`` forward mode (``vmap`` of ``jvp``, what ``jacfwd`` runs) on the same weights and
  tangents, timed on ``--gram_chunks`` chunks; the per-sample figures (all d = 512 tangents; for
  ours also the plan's block recomputation and Gram products) are extrapolated from them and
  labelled so.

Every timing is a median over the timed runs after one untimed warm-up (ours: compile; torch: first
call).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import paper_configs
from regfac_jax import io_utils, jacobian

D = 512  # w_dim of config-f


def _now(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def _interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable; one untimed warm-up each, then ``repeats`` rounds
    alternating them."""
    for fn in fns.values():
        _now(fn)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_now(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def _plan_row(spec: str, budget: int) -> dict:
    """Plans one ``name:preprocess`` spec at 1024^2 and returns its row."""
    name, pre = spec.split(":")
    pre = None if pre == "none" else pre
    gen = paper_configs.abstract_generator(name, 1024)
    rows = 1024 * 1024 * 3 if pre is None else 256 * 256
    start = time.perf_counter()
    plan = jacobian.plan_grams(
        gen.latent_fn("w"),
        jax.ShapeDtypeStruct((D,), jnp.float32),
        jax.ShapeDtypeStruct((6, rows), jnp.float32),
        jacobian.JacobianOptions(preprocess=pre, memory_budget=budget),
    )
    row = {
        "model": name,
        "preprocess": pre or "none",
        "strategy": plan.strategy,
        "tangent_chunk": plan.tangent_chunk,
        "block": plan.block,
        "analysed_peak_bytes": plan.peak_bytes,
        "limit_bytes": plan.limit_bytes,
        "relative_cost": plan.relative_cost,
        "planning_seconds": time.perf_counter() - start,
    }
    return row


def bench_plans(models: list[str], budget: int) -> list[dict]:
    out = []
    for spec in models:
        row = _plan_row(spec, budget)
        print(
            f"plan {row['model']:12s} {row['preprocess']:8s}: {row['strategy']} chunk "
            f"{row['tangent_chunk']} block {row['block']} peak "
            f"{row['analysed_peak_bytes'] / 2**30:.2f} GiB (planned in "
            f"{row['planning_seconds']:.0f} s)",
            flush=True,
        )
        out.append(row)
    return out


def official_pair(sg2ada: str, resolution: int, seed: int = 0):
    """(torch official Generator, our converted port) with the same random config-f weights."""
    import torch

    import converters

    if sg2ada not in sys.path:
        sys.path.insert(0, sg2ada)
    from training.networks import Generator  # the official code, from the user's checkout

    _, cfg = paper_configs.config("stylegan2-f", resolution)
    torch.manual_seed(seed)
    g = Generator(**cfg).eval().requires_grad_(False)
    sd = {k: v.detach().numpy() for k, v in g.state_dict().items()}
    return g, converters.convert_state_dict("stylegan2", sd, cfg)


def _forward_row(g_torch, ours, res: int, n: int, repeats: int) -> dict:
    """Times one resolution and batch size, ours against torch, and returns (and prints) its row."""
    import torch

    ws = np.random.RandomState(n).randn(n, ours.num_ws, D).astype(np.float32)
    ws_t, ws_j = torch.from_numpy(ws), jnp.asarray(ws)
    with torch.no_grad():
        t = _interleaved(
            {
                "ours": lambda ours=ours, ws_j=ws_j: ours.synthesis(ws_j),
                "torch": lambda g=g_torch, ws_t=ws_t: g.synthesis(ws_t, noise_mode="const"),
            },
            repeats,
        )
        ours_images = np.asarray(ours.synthesis(ws_j))
        torch_images = g_torch.synthesis(ws_t, noise_mode="const").permute(0, 2, 3, 1).numpy()
        diff = float(np.max(np.abs(ours_images - torch_images)))
    row = {
        "resolution": res,
        "batch": n,
        "ours_s": t["ours"],
        "torch_s": t["torch"],
        "torch_over_ours": t["torch"] / t["ours"],
        "max_abs_image_difference": diff,
    }
    print(
        f"forward {res:5d}px batch {n}: ours {t['ours']:.2f} s, torch {t['torch']:.2f} s, "
        f"torch/ours {row['torch_over_ours']:.2f} (images agree to {diff:.1e})",
        flush=True,
    )
    return row


def bench_forward(
    sg2ada: str, resolutions: list[int], batches: list[int], repeats: int
) -> list[dict]:
    out = []
    for res in resolutions:
        g_torch, ours = official_pair(sg2ada, res)
        out.extend(_forward_row(g_torch, ours, res, n, repeats) for n in batches)
    return out


def _chunk_seconds(jvp, fn, w, tangents, k: int, chunks: int) -> list[float]:
    """Seconds of each of our first ``chunks`` JVP chunks of ``k`` tangents, after one warm-up."""
    _now(lambda: jvp(fn, w, tangents[:k]))  # compile + warm-up
    return [_now(lambda i=i: jvp(fn, w, tangents[i * k : (i + 1) * k])) for i in range(chunks)]


def _torch_chunk_seconds(g_torch, w, k: int, chunks: int) -> list[float]:
    """Seconds of each of torch.func's first ``chunks`` forward-mode chunks, after one warm-up."""
    import torch

    def torch_chunk(v):
        def f(x):
            return g_torch.synthesis(
                x[None, None].repeat(1, g_torch.num_ws, 1), noise_mode="const"
            )[0]

        x0 = torch.from_numpy(np.array(w))  # a writable copy
        return torch.func.vmap(lambda t: torch.func.jvp(f, (x0,), (t,))[1])(v)

    times_torch = []
    with torch.no_grad():
        torch_chunk(torch.eye(D)[:k])  # warm-up
        for i in range(chunks):
            v = torch.eye(D)[i * k : (i + 1) * k]
            times_torch.append(_now(lambda v=v: torch_chunk(v)))
    return times_torch


def _plan_counts(k: int, block: int) -> tuple[int, int]:
    """(chunk JVPs, Gram products) per sample of a blocked plan with chunk ``k`` and ``block``."""
    n = -(-D // k)
    per_block = -(-block // k)
    n_blocks = -(-n // per_block)
    # chunk JVPs per sample
    jvps = sum(per_block + max(0, n - (i + 1) * per_block) for i in range(n_blocks))
    crosses = n_blocks * per_block + sum(max(0, n - (i + 1) * per_block) for i in range(n_blocks))
    return jvps, crosses


def _cross_seconds(k: int, block: int, p: int) -> float:
    """Median seconds of one of our Gram products of a ``block`` by a ``k``-tangent chunk."""
    cross = jax.jit(lambda a, b_, m: jacobian._cross(a, b_, m, jax.lax.Precision.HIGHEST))
    u_block = jnp.zeros((block, p), jnp.float32)
    u_chunk = jnp.zeros((k, p), jnp.float32)
    rows = jnp.full((6, p), 1.0 / p, jnp.float32)
    return statistics.median(_now(lambda: cross(u_block, u_chunk, rows)) for _ in range(2))


def bench_grams(sg2ada: str, resolution: int, budget: int, chunks: int) -> dict:
    g_torch, ours = official_pair(sg2ada, resolution)
    fn = ours.latent_fn("w")
    w = jnp.asarray(np.random.RandomState(0).randn(D).astype(np.float32))
    p = resolution * resolution * 3
    weights = jax.ShapeDtypeStruct((6, p), jnp.float32)
    plan = jacobian.plan_grams(fn, w, weights, jacobian.JacobianOptions(memory_budget=budget))
    k, block = plan.tangent_chunk, plan.block or D
    tangents = jnp.eye(D, dtype=jnp.float32)
    jvp = jax.jit(lambda f, x, v: jacobian._jvp_chunk(f, x, None)(v))
    times_ours = _chunk_seconds(jvp, fn, w, tangents, k, chunks)
    times_torch = _torch_chunk_seconds(g_torch, w, k, chunks)
    t_cross = _cross_seconds(k, block, p)
    jvps, crosses = _plan_counts(k, block)
    ours_tan = statistics.median(times_ours) / k
    torch_tan = statistics.median(times_torch) / k
    row = {
        "resolution": resolution,
        "plan": {
            "strategy": plan.strategy,
            "tangent_chunk": k,
            "block": plan.block,
            "analysed_peak_bytes": plan.peak_bytes,
        },
        "ours_seconds_per_tangent": ours_tan,
        "torch_func_seconds_per_tangent": torch_tan,
        "ours_chunk_seconds": times_ours,
        "torch_func_chunk_seconds": times_torch,
        "ours_gram_product_seconds_per_chunk": t_cross,
        "ours_seconds_per_sample_extrapolated": jvps * ours_tan * k + crosses * t_cross,
        "torch_func_jacobian_seconds_per_sample_extrapolated": D * torch_tan,
        "note": "per-sample figures are extrapolated from the timed chunks; torch.func's "
        "excludes its Gram "
        "products and needs the whole 6 GiB Jacobian",
    }
    _print_grams(row, block)
    return row


def _print_grams(row: dict, block: int) -> None:
    """Prints the one-line summary of ``bench_grams``' row."""
    plan = row["plan"]
    print(
        f"grams {row['resolution']}px: per tangent ours {row['ours_seconds_per_tangent']:.2f} s "
        f"({plan['strategy']}, chunk {plan['tangent_chunk']}, block {block}), torch.func "
        f"{row['torch_func_seconds_per_tangent']:.2f} s; per sample (extrapolated) ours "
        f"{row['ours_seconds_per_sample_extrapolated'] / 3600:.2f} h, torch.func Jacobian alone "
        f"{row['torch_func_jacobian_seconds_per_sample_extrapolated'] / 3600:.2f} h",
        flush=True,
    )


def _parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--json", help="write the results here (atomically) as JSON")
    parser.add_argument(
        "--sg2ada",
        default=os.environ.get("SG2ADA"),
        help="local checkout of NVlabs/stylegan2-ada-pytorch (or $SG2ADA); needed "
        "for the torch side",
    )
    parser.add_argument("--budget_gib", type=float, default=8.0)
    parser.add_argument(
        "--plan_models",
        nargs="*",
        default=["stylegan2-f:none", "stylegan2-f:official"],
        help="name:preprocess pairs (names: %s)" % ", ".join(paper_configs.NAMES),
    )
    parser.add_argument("--resolutions", type=int, nargs="*", default=[256, 512, 1024])
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    parser.add_argument(
        "--repeats", type=int, default=1, help="timed rounds per forward measurement"
    )
    parser.add_argument("--gram_resolution", type=int, default=1024, help="0 skips the Gram timing")
    parser.add_argument("--gram_chunks", type=int, default=2)
    return parser


def _machine() -> dict:
    """The machine's description at the start of the run."""
    return {
        "cpus": os.cpu_count(),
        "load_average_start": os.getloadavg(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
    }


def _torch_side(args: argparse.Namespace, budget: int, result: dict) -> None:
    """Runs the comparisons against the official code into ``result``, or records why not."""
    if not args.sg2ada or not os.path.isfile(os.path.join(args.sg2ada, "training", "networks.py")):
        msg = (
            f"the official stylegan2-ada-pytorch checkout is missing ({args.sg2ada!r}: no "
            "training/networks.py); "
            "pass --sg2ada PATH to a local clone of NVlabs/stylegan2-ada-pytorch. Torch "
            "comparisons skipped."
        )
        print(msg, flush=True)
        result["torch_skipped"] = msg
        return
    import torch

    result["machine"]["torch"] = torch.__version__
    result["machine"]["torch_threads"] = torch.get_num_threads()
    result["forward"] = bench_forward(args.sg2ada, args.resolutions, args.batches, args.repeats)
    if args.gram_resolution:
        result["grams"] = bench_grams(args.sg2ada, args.gram_resolution, budget, args.gram_chunks)


def main() -> None:
    args = _parser().parse_args()
    budget = int(args.budget_gib * 2**30)
    result = {"machine": _machine()}
    print(f"load average at start: {os.getloadavg()} on {os.cpu_count()} CPUs", flush=True)
    result["plans"] = bench_plans(args.plan_models, budget)
    _torch_side(args, budget, result)
    result["machine"]["load_average_end"] = os.getloadavg()
    print(f"load average at end: {os.getloadavg()}", flush=True)
    if args.json:
        io_utils.write_json(args.json, result)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
