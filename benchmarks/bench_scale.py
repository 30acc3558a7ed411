"""Region-Gram throughput against device count: ``python -m benchmarks.bench_scale``.

Runs :func:`regfac_jax.distributed.sharded_region_grams` on the toy generator of
``regfac_jax.models.toy`` with 1, 2, 4 and 8 devices (simulated CPU devices,
``jax_num_cpu_devices``; one subprocess per count, because the count is fixed when JAX starts) and
prints samples per second and the ratio to one device. Each time is the median of ``--repeats`` runs
after a compiling warm-up. The 1-device row also times the plain per-sample loop of
``jacobian.region_grams`` in the same process, which shows what the sharded path costs on one
device.

What the numbers show: the code scales out without recompiling per device count or losing samples,
and its overhead (sharding the inputs, the psum, gathering flags). What they do not show: speed-up
from more hardware. Simulated CPU devices share the machine's cores, so on a machine with few cores
(2 on the development box) the ideal ratio is about 1, not the device count; on real accelerators
each device has its own compute and the ratio approaches the device count when each device has at
least one sample per call and the per-sample Jacobian dominates the psum of ``2R * d * d`` values.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from benchmarks.timing import median_seconds, toy_problem


def _measure(args) -> dict:
    import jax

    jax.config.update("jax_num_cpu_devices", args.devices)
    import numpy as np

    from regfac_jax import distributed, jacobian

    fn, latents, masks = toy_problem(args.samples, args.d, args.resolution, args.channels)
    options = jacobian.JacobianOptions(tangent_chunk=args.chunk)
    plan = distributed.plan_grams(fn, latents, masks, options)
    all_samples = np.arange(args.samples)

    def sharded():
        return plan.block(all_samples).total

    def looped():
        return jax.block_until_ready(jacobian.region_grams(fn, latents, masks, options))

    out = {
        "devices": jax.device_count(),
        "cpu_cores": os.cpu_count(),
        "strategy": plan.options.strategy,
        "sharded_s": median_seconds(sharded, args.repeats),
    }
    if args.devices == 1:
        out["loop_s"] = median_seconds(looped, args.repeats)
    return out


def _run_child(args, devices: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_scale", "--child", "--devices", str(devices)]
    for name in ("samples", "resolution", "d", "channels", "chunk", "repeats"):
        cmd += [f"--{name}", str(getattr(args, name))]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = " ".join(
        f
        for f in env.get("XLA_FLAGS", "").split()
        if "xla_force_host_platform_device_count" not in f
    )
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child with {devices} devices failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _parser() -> argparse.ArgumentParser:
    """The command line's options (``--child`` and ``--devices`` are the subprocesses')."""
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument(
        "--devices-list", default="1,2,4,8", help="comma-separated simulated device counts"
    )
    ap.add_argument(
        "--samples",
        type=int,
        default=32,
        help="samples per call (a multiple of every device count)",
    )
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    return ap


def _print_table(args, rows: list[dict]) -> None:
    """Prints the setting, one row per device count, the plain loop's rate and the caveat."""
    base = args.samples / rows[0]["sharded_s"]
    print(
        f"toy generator {args.resolution}x{args.resolution}x3, d={args.d}, {args.samples} "
        "samples per call, "
        f"tangent_chunk={args.chunk}, strategy={rows[0]['strategy']}, CPU cores on this machine: "
        f"{rows[0]['cpu_cores']}"
    )
    print(f"{'devices':>7s} {'seconds':>9s} {'samples/s':>10s} {'ratio to 1':>11s}")
    for row in rows:
        rate = args.samples / row["sharded_s"]
        print(f"{row['devices']:7d} {row['sharded_s']:9.3f} {rate:10.2f} {rate / base:11.2f}")
    if "loop_s" in rows[0]:
        print(
            "plain jacobian.region_grams loop on 1 device: "
            f"{args.samples / rows[0]['loop_s']:.2f} samples/s"
        )
    print(
        f"Simulated CPU devices share the {rows[0]['cpu_cores']} cores of this machine: the "
        "ratios show the "
        "scale-out overhead, not the speed-up of real devices (ideal here ~1 once devices "
        "outnumber cores)."
    )


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args)))
        return
    rows = [_run_child(args, int(n)) for n in args.devices_list.split(",")]
    _print_table(args, rows)


if __name__ == "__main__":
    main()
