r"""Trains the shipped demo generator; settings in experiments/configs/train_demo.py (its docstring
has the command).

Re-running the same command resumes from the newest checkpoint in ``--workdir``.
"""

from __future__ import annotations

import os

# Small host-side matrices only: multi-threaded OpenBLAS just spins on shared cores (see
# experiments/demo.py).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(__file__), "configs", "train_demo.py"),
    "Training settings.",
    lock_config=True,
)
flags.DEFINE_string(
    "workdir", "/tmp/regfac_demo_train", "Checkpoints and logs (resumed from when present)."
)

FLAGS = flags.FLAGS


def main(argv):
    del argv
    from regfac_jax.demo import training

    report = training.train_and_export(_CONFIG.value, FLAGS.workdir)
    print(
        f"stopped at step {report['step']} ({report['images_seen']} images, "
        f"{report['train_minutes']:.1f} min of training in total)"
    )
    if _CONFIG.value.export:
        print(f"exported the EMA generator to {_CONFIG.value.export}")
    if report["docs_report"]:
        print(report["docs_report"])


if __name__ == "__main__":
    cli.run(main)
