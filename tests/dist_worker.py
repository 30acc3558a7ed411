"""Subprocess side of ``tests/test_distributed.py`` (simulated devices and several processes need a
fresh JAX).

``python tests/dist_worker.py MODE --devices D --out OUT.npz [...]``; every mode writes its results
to ``OUT.npz``. The device count must be fixed before JAX starts, which is why these checks cannot
run inside pytest's process.

``python tests/dist_worker.py launch [--fault sigterm|sigkill --fault-block K] -- LAUNCHER FLAGS``
runs the real ``experiments.find_directions`` launcher with those flags; with ``--fault`` this
process sends itself the signal when it starts its K-th block of samples (a preemption notice, or a
crash, at a known point of the run).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

LATENT_DIM, RESOLUTION = 5, 8


def problem(num_samples: int, seed: int = 0):
    """The tiny float64 problem shared by the parent test and the workers: (fn, latents [N, d],
    masks [2, 8, 8])."""
    import jax
    import jax.numpy as jnp

    from regfac_jax import regions
    from regfac_jax.models import toy

    params = toy.init_toy(
        jax.random.key(seed), latent_dim=LATENT_DIM, resolution=RESOLUTION, channels=4
    )
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    latents = np.random.default_rng(seed + 1).standard_normal((num_samples, LATENT_DIM))
    soft = np.clip(
        np.random.default_rng(seed + 2).uniform(-0.5, 1.5, (RESOLUTION, RESOLUTION)), 0, 1
    )
    masks = np.stack([regions.box_mask((96, 128, 64, 96), RESOLUTION), soft.astype(np.float32)])
    return toy.toy_latent_fn(params), latents, masks


def shifted_apply(params, shift, latent):
    """A per-sample conditioned toy generator: ``toy(latent + shift)`` with a per-sample
    ``shift``."""
    from regfac_jax.models import toy

    return toy.toy_apply(params, latent + shift)


def per_sample_functions(fn, num_samples: int):
    """One function per sample sharing ``fn``'s weights (the same arrays), each with its own
    ``shift``."""
    from jax.tree_util import Partial

    shifts = 0.3 * np.random.default_rng(7).standard_normal((num_samples, LATENT_DIM))
    return [Partial(shifted_apply, fn.args[0], shifts[i]) for i in range(num_samples)]


def _start(devices: int) -> None:
    import jax

    jax.config.update("jax_num_cpu_devices", devices)
    jax.config.update("jax_enable_x64", True)


def mode_sharded(args) -> dict:
    from regfac_jax import distributed
    from regfac_jax.jacobian import JacobianOptions

    _start(args.devices)
    out = {}
    for n in (8, 5):  # 8 divides over 8 devices, 5 does not (padding)
        fn, lat, masks = problem(n)
        out[f"A{n}"], out[f"B{n}"] = distributed.sharded_region_grams(
            fn, lat, masks, JacobianOptions(tangent_chunk=2)
        )
        out[f"A{n}_per"], out[f"B{n}_per"] = distributed.sharded_region_grams(
            fn, lat, masks, JacobianOptions(tangent_chunk=5, strategy="transpose"), per_sample=True
        )
    fn, lat, masks = problem(5)
    out["A5_fns"], out["B5_fns"] = distributed.sharded_region_grams(
        per_sample_functions(fn, 5), lat, masks, JacobianOptions(tangent_chunk=5)
    )
    try:
        distributed.sharded_region_grams(fn, lat, masks, pad=False)
        out["pad_error"] = ""
    except ValueError as err:
        out["pad_error"] = str(err)
    out["num_devices"] = len(__import__("jax").devices())
    return {k: np.asarray(v) for k, v in out.items()}


def mode_resumable(args) -> dict:
    from regfac_jax import resumable
    from regfac_jax.jacobian import JacobianOptions

    _start(args.devices)
    fn, lat, masks = problem(args.samples)
    seen = []

    def callback(progress):
        seen.append(progress.computed)
        if (
            args.kill_after > 0
            and progress.saved_step is not None
            and progress.done >= args.kill_after
        ):
            # a preemption without notice, right after a checkpoint
            os.kill(os.getpid(), signal.SIGKILL)

    description = resumable.describe_inputs(fn, lat, masks, config={"name": "kill-test"})
    checkpoints = resumable.CheckpointOptions(
        block_size=args.block_size or None, save_interval_secs=0, callback=callback
    )
    a, b = resumable.run_resumable(
        fn,
        lat,
        masks,
        args.workdir,
        JacobianOptions(tangent_chunk=2),
        description=description,
        checkpoints=checkpoints,
    )
    return {"A": np.asarray(a), "B": np.asarray(b), "computed": np.asarray(seen[-1] if seen else 0)}


def mode_multiprocess(args) -> dict:
    from regfac_jax import distributed, io_utils

    _start(args.devices)  # device count before the backends start
    distributed.initialize_distributed(
        f"localhost:{args.port}",
        args.processes,
        args.process_id,
        initialization_timeout=60,
        heartbeat_timeout_seconds=20,
        shutdown_timeout_seconds=30,
    )
    import jax

    from regfac_jax import resumable
    from regfac_jax.jacobian import JacobianOptions

    out = {"process_count": jax.process_count(), "global_devices": jax.device_count()}
    fn, lat, masks = problem(args.samples)
    distributed.assert_hosts_agree(io_utils.fingerprint({"samples": args.samples}))
    out["A"], out["B"] = distributed.sharded_region_grams(
        fn, lat, masks, JacobianOptions(tangent_chunk=2)
    )
    out["A_per"], out["B_per"] = distributed.sharded_region_grams(
        fn, lat, masks, JacobianOptions(tangent_chunk=2), per_sample=True
    )
    # process 1 gets its own work directory: it must stay untouched (only process 0 writes)
    description = resumable.describe_inputs(fn, lat, masks, config={"name": "two-process"})
    out["A_res"], out["B_res"] = resumable.run_resumable(
        fn,
        lat,
        masks,
        f"{args.workdir}_{args.process_id}",
        JacobianOptions(tangent_chunk=2),
        description=description,
        checkpoints=resumable.CheckpointOptions(block_size=4, save_interval_secs=0),
    )
    try:  # hosts that disagree: process 1 claims another config
        distributed.assert_hosts_agree(io_utils.fingerprint({"seed": args.process_id}))
        out["disagree_error"] = ""
    except RuntimeError as err:
        out["disagree_error"] = str(err)
    return {k: np.asarray(v) for k, v in out.items()}


def launch(argv) -> None:
    """The launcher, with a fault injected at the start of block ``--fault-block`` (1-based)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--fault", choices=["sigterm", "sigkill"])
    ap.add_argument("--fault-block", type=int, default=1)
    args = ap.parse_args(argv[: argv.index("--")])
    if args.fault:
        from regfac_jax import distributed

        real, calls = distributed.GramPlan.block, []

        def block(self, indices, per_sample=False):
            calls.append(1)
            if len(calls) == args.fault_block:
                os.kill(os.getpid(), signal.SIGTERM if args.fault == "sigterm" else signal.SIGKILL)
                # A real notice comes ~30 s before the kill while the job runs on. These blocks take
                # milliseconds, so on a loaded machine the run could end before the notice has
                # reached every host (and then exit 0, correctly). Pausing this host, which the
                # others wait for at the block's psum, gives the notice the time the 30 s would.
                time.sleep(5)
            return real(self, indices, per_sample)

        distributed.GramPlan.block = block
    from absl import flags

    from experiments import cli, find_directions

    # as the launcher's __main__ does; then the launcher's own runner
    flags.mark_flags_as_required(["config"])
    cli.run(find_directions.main, argv=["find_directions", *argv[argv.index("--") + 1 :]])


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "launch":
        return launch(argv[1:])
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["sharded", "resumable", "multiprocess"])
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--samples", type=int, default=7)
    ap.add_argument("--workdir", default="")
    ap.add_argument("--block-size", type=int, default=0)
    ap.add_argument("--kill-after", type=int, default=0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--process-id", type=int, default=0)
    args = ap.parse_args(argv)
    result = {
        "sharded": mode_sharded,
        "resumable": mode_resumable,
        "multiprocess": mode_multiprocess,
    }[args.mode](args)
    np.savez(args.out, **result)


if __name__ == "__main__":
    main()
