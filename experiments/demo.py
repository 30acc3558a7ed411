r"""The first command after installing: ReSeFa on the shipped demo generator, measured against the
baselines.

  python -m experiments.demo [--workdir DIR] [--config.overwrite True] [--config
  experiments/configs/demo.py:tiny]

Loads the 32x32 procedural-faces StyleGAN2 shipped in regfac_jax/data/demo_faces, finds directions
for the eyes, mouth and hair with ReSeFa, LowRankGAN, the foreground Jacobian's eigenvectors, SeFa
and GANSpace, measures how much of each edit stays inside its region on held-out samples, prints the
table and writes DIR/locality.json, DIR/report.json, the edit grids (compare_*.png, resefa_*.png)
and one GIF per ReSeFa direction.
"""

from __future__ import annotations

import os

# The host-side linear algebra here works on small (64 x 64) matrices, thousands of times
# (LowRankGAN's robust PCA). Multi-threaded OpenBLAS gains nothing at that size and, on shared
# cores, loses up to 100x to thread spinning (measured: 0.24 s instead of 2 ms per 64 x 64 SVD). It
# must be set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(__file__), "configs", "demo.py"),
    "Demo settings.",
    lock_config=True,
)
flags.DEFINE_string("workdir", "/tmp/regfac_demo", "Output directory (created).")

FLAGS = flags.FLAGS


def main(argv):
    del argv
    from regfac_jax import demo

    settings = _CONFIG.value.to_dict()
    overwrite = settings.pop("overwrite")  # the launcher's own setting
    report = demo.run_demo(
        FLAGS.workdir, demo.DemoConfig.from_config(settings), overwrite=overwrite
    )
    print(report["table"])
    print(
        f"wrote {FLAGS.workdir}/locality.json, report.json, edit grids and GIFs in "
        f"{report['seconds']:.0f} s"
    )


if __name__ == "__main__":
    cli.run(main)
