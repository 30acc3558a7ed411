r"""The first command after installing: ReSeFa on the shipped demo generator, measured against the baselines.

  python -m experiments.demo [--workdir DIR] [--overwrite]

Loads the 32x32 procedural-faces StyleGAN2 shipped in regfac_jax/data/demo_faces, finds directions for the eyes,
mouth and hair with ReSeFa, LowRankGAN, the foreground Jacobian's eigenvectors, SeFa and GANSpace, measures how
much of each edit stays inside its region on held-out samples, prints the table and writes DIR/locality.json,
DIR/report.json, the edit grids (compare_*.png, resefa_*.png) and one GIF per ReSeFa direction.
"""
from __future__ import annotations

import os

# The host-side linear algebra here works on small (64 x 64) matrices, thousands of times (LowRankGAN's robust
# PCA). Multi-threaded OpenBLAS gains nothing at that size and, on shared cores, loses up to 100x to thread
# spinning (measured: 0.24 s instead of 2 ms per 64 x 64 SVD). It must be set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from absl import flags  # noqa: E402

from experiments import cli  # noqa: E402

flags.DEFINE_string("workdir", "/tmp/regfac_demo", "Output directory (created).")
flags.DEFINE_bool("overwrite", False, "Replace a different run already in --workdir.")
flags.DEFINE_integer("num_discovery", 16, "Samples the directions are computed from.")
flags.DEFINE_integer("num_eval", 32, "Held-out samples the directions are measured on.")
flags.DEFINE_bool("robustness", True, "Also measure one-sample directions and wrong (larger/shifted) boxes.")
flags.DEFINE_integer("seed", 0, "Seed of the sampled latents.")

FLAGS = flags.FLAGS


def main(argv):
    del argv
    from regfac_jax import demo

    config = demo.DemoConfig(num_discovery=FLAGS.num_discovery, num_eval=FLAGS.num_eval,
                             robustness=FLAGS.robustness, seed=FLAGS.seed)
    report = demo.run_demo(FLAGS.workdir, config, overwrite=FLAGS.overwrite)
    print(report["table"])
    print(f"wrote {FLAGS.workdir}/locality.json, report.json, edit grids and GIFs in {report['seconds']:.0f} s")


if __name__ == "__main__":
    cli.run(main)
