"""Figure: eye edits on StyleGAN3-R AFHQv2 512 (cats, dogs, wild animals).

Checkpoint: NVIDIA's ``stylegan3-r-afhqv2-512x512.pkl``; or the paper's Hammer
``stylegan3-r-afhqv2-512x512.pth``.

  python -m experiments.find_directions --config experiments/configs/afhq_stylegan3r.py \
      --config.model /path/stylegan3-r-afhqv2-512x512.pkl --workdir runs/afhq

The paper's AFHQ eye region is the FFHQ 'eyes' box ([120, 128, 20, 115] on the 256 grid), which is
what its released ``directions/afhq/stylegan3/eyes-r.npy`` was computed with; the paper edits layers
4-7. Expected run time: minutes on a GPU at 512^2. ``:tiny`` runs on the StyleGAN3-R fixture.
"""

from experiments.configs import base


def get_config(arg: str | None = None):
    a = base.parse_arg(arg, tiny=False)
    cfg = base.base_config()
    cfg.model = "stylegan3-r-afhqv2-512x512.pkl"
    cfg.dataset = "ffhq"
    cfg.regions = "eyes"
    cfg.num_samples = 5
    if a.tiny:
        base.tiny(cfg, "stylegan3_r", "eyes", "ffhq")
    return cfg
