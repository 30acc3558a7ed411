"""Costs of the work-directory design: ``python -m benchmarks.bench_workdir``.

Prints three measurements:

1. the weights digest of the fingerprint (``io_utils.tree_digest``) on a StyleGAN2 config-f sized
   parameter tree (about 30M float32 parameters, the shapes of the 1024x1024 generator's largest
   layers);
2. one orbax checkpoint of the Gram state at ``d = 512`` (sums only, and with per-sample Grams) for
   1 and 5 regions: seconds (median of ``--repeats`` saves) and bytes on disk;
3. the resumable path on one device against the plain per-sample loop the launcher used before
   (``jacobian.region_grams`` per sample): ``run_resumable`` with its default checkpoint interval
   (one save at the end) and with a checkpoint after every sample (the loop's old granularity).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time

import numpy as np

from benchmarks.timing import toy_problem


def _config_f_params(seed: int = 0) -> dict:
    """A tree of ~30M float32 values, as StyleGAN2 config-f's (mapping 8 x 512^2, synthesis convs 3
    x 3 x 512^2)."""
    rng = np.random.default_rng(seed)
    tree = {"mapping": {f"fc{i}": rng.standard_normal((512, 512), np.float32) for i in range(8)}}
    tree["synthesis"] = {
        f"conv{i}": rng.standard_normal((512, 512, 3, 3), np.float32) for i in range(12)
    }
    return tree


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def digest_cost(repeats: int) -> None:
    from regfac_jax import io_utils

    tree = _config_f_params()
    n = sum(a.size for group in tree.values() for a in group.values())
    seconds = _median(lambda: io_utils.tree_digest(tree), repeats)
    print(
        f"weights digest: {n / 1e6:.1f}M float32 parameters ({n * 4 / 2**20:.0f} MiB) in "
        f"{seconds:.3f} s ({n * 4 / seconds / 1e9:.2f} GB/s)"
    )


def checkpoint_cost(repeats: int, d: int = 512, samples: int = 5) -> None:
    from regfac_jax import resumable

    for regions in (1, 5):
        for per_sample in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                acc = resumable.ResumableGramAccumulator(
                    tmp,
                    "bench",
                    num_samples=samples,
                    gram_shape=(2 * regions, d, d),
                    per_sample=per_sample,
                    checkpoints=resumable.CheckpointOptions(save_interval_secs=0, max_to_keep=1),
                )
                g = np.random.default_rng(0).standard_normal((2 * regions, d, d)).astype(np.float32)
                times = []
                for i in range(min(repeats, samples)):
                    acc.add([i], g, g[None] if per_sample else None)
                    start = time.perf_counter()
                    acc.save()
                    times.append(time.perf_counter() - start)
                acc.close()
                size = sum(p.stat().st_size for p in pathlib.Path(tmp).rglob("*") if p.is_file())
            print(
                f"checkpoint d={d}, {regions} region(s), {samples} samples, "
                f"per_sample={per_sample}: "
                f"{statistics.median(times):.3f} s, {size / 2**20:.1f} MiB on disk"
            )


def _resumable_runner(fn, latents, masks, options, mesh):
    """``(save interval, block) ->`` a callable that runs ``run_resumable`` in a fresh directory."""
    from regfac_jax import resumable

    def resumable_run(interval: float, block: int | None):
        def run():
            with tempfile.TemporaryDirectory() as tmp:
                checkpoints = resumable.CheckpointOptions(
                    block_size=block, save_interval_secs=interval
                )
                resumable.run_resumable(
                    fn, latents, masks, tmp, options, mesh=mesh, checkpoints=checkpoints
                )

        return run

    return resumable_run


def loop_vs_resumable(repeats: int, samples: int, d: int, resolution: int) -> None:
    import jax

    from regfac_jax import distributed, jacobian

    fn, latents, masks = toy_problem(samples, d, resolution)
    mesh = distributed.make_mesh(jax.local_devices()[:1])
    options = jacobian.JacobianOptions(tangent_chunk=d)

    def loop():
        return [
            np.asarray(jacobian.region_grams(fn, latents[i], masks, options)[0])
            for i in range(samples)
        ]

    resumable_run = _resumable_runner(fn, latents, masks, options, mesh)
    loop()  # compile
    resumable_run(300.0, None)()
    resumable_run(0.0, 1)()
    t_loop = _median(loop, repeats)
    t_end = _median(resumable_run(300.0, None), repeats)
    t_each = _median(resumable_run(0.0, 1), repeats)
    print(
        f"toy {resolution}x{resolution}x3, d={d}, {samples} samples, 1 device: loop {t_loop:.3f} "
        "s; run_resumable "
        f"(one save at the end) {t_end:.3f} s = {t_end / t_loop:.2f}x; (a save after every "
        f"sample) {t_each:.3f} s = {t_each / t_loop:.2f}x"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--resolution", type=int, default=64)
    args = ap.parse_args(argv)
    digest_cost(args.repeats)
    checkpoint_cost(args.repeats)
    loop_vs_resumable(args.repeats, args.samples, args.d, args.resolution)


if __name__ == "__main__":
    main()
