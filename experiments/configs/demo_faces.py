"""The shipped demo model (32x32 procedural faces StyleGAN2): directions for eyes, mouth and hair.

  python -m experiments.find_directions --config experiments/configs/demo_faces.py --workdir
  runs/faces
  python -m experiments.manipulate --config experiments/configs/demo_faces.py \
      --directions runs/faces/directions/eyes.npy --workdir runs/faces_edit

Runs on any machine in well under a minute (8 samples, d = 64, CPU); ``:tiny`` uses 2 samples. The
full demo with the baselines and the locality table is ``python -m experiments.demo``.
"""

from experiments.configs import base


def get_config(arg: str | None = None):
    a = base.parse_arg(arg, tiny=False)
    cfg = base.base_config()
    cfg.model = "demo"
    cfg.dataset = "faces"
    cfg.regions = "eyes,mouth,hair"
    cfg.num_samples = 8
    cfg.manipulate.layers = None  # the demo model's directions are found for w in every layer
    cfg.manipulate.truncation_psi = 1.0
    cfg.manipulate.truncation_cutoff = None
    cfg.manipulate.step_start, cfg.manipulate.step_stop = -3.0, 3.0
    # docs/inversion/README.md: PSNR, locality of edits and time of these settings on 16 faces
    # (2-core CPU).
    cfg.inversion.num_steps = 100
    cfg.inversion.w_prior, cfg.inversion.layer_spread = 0.03, 0.3
    if a.tiny:
        cfg.num_samples = 2
        cfg.solver.k = 5
        cfg.manipulate.num_samples = 2
        cfg.manipulate.num_steps = 3
        cfg.inversion.num_steps = 10
        cfg.inversion.w_avg_samples = 1000
    return cfg
