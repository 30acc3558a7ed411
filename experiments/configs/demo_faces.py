"""The shipped demo model (32x32 procedural faces StyleGAN2): directions for eyes, mouth and hair.

  python -m experiments.find_directions --config experiments/configs/demo_faces.py --workdir runs/faces
  python -m experiments.manipulate --config experiments/configs/demo_faces.py \
      --directions runs/faces/directions/eyes.npy --workdir runs/faces_edit

Runs on any machine in well under a minute (8 samples, d = 64, CPU); ``:tiny`` uses 2 samples. The full demo with
the baselines and the locality table is ``python -m experiments.demo``.
"""
from experiments.configs import base


def get_config(arg: str | None = None):
    a = base.parse_arg(arg, tiny=False)
    c = base.base_config()
    c.model = "demo"
    c.dataset = "faces"
    c.regions = "eyes,mouth,hair"
    c.num_samples = 8
    c.manipulate.layers = None  # the demo model's directions are found for w in every layer
    c.manipulate.truncation_psi = 1.0
    c.manipulate.truncation_cutoff = None
    c.manipulate.step_start, c.manipulate.step_stop = -3.0, 3.0
    # docs/inversion/README.md: PSNR, locality of edits and time of these settings on 16 faces (2-core CPU).
    c.inversion.num_steps = 100
    c.inversion.w_prior, c.inversion.layer_spread = 0.03, 0.3
    if a.tiny:
        c.num_samples = 2
        c.solver.k = 5
        c.manipulate.num_samples = 2
        c.manipulate.num_steps = 3
        c.inversion.num_steps = 10
        c.inversion.w_avg_samples = 1000
    return c
