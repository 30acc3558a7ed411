"""Figure: church edits on StyleGAN2 LSUN church 256 (tower and sky regions).

Checkpoint: NVIDIA's ``stylegan2-church-config-f.pkl`` converted with stylegan2-ada-pytorch's
``legacy.py``, or the Hammer ``stylegan2-church-config-f-256x256.pth``.

  python -m experiments.find_directions --config experiments/configs/lsun_church_stylegan2.py \
      --config.model /path/stylegan2-church.pkl --workdir runs/church

Boxes are ours (the paper's code ships none for churches): top-centre tower and the sky band.
Expected run time: minutes on a GPU at 256^2 (the 'materialize' strategy fits). ``:tiny`` uses the
fixture.
"""

from experiments.configs import base


def get_config(arg: str | None = None):
    a = base.parse_arg(arg, tiny=False)
    cfg = base.base_config()
    cfg.model = "stylegan2-church-config-f.pkl"
    cfg.dataset = "lsun_church"
    cfg.regions = "box:80,128,100,60;box:30,128,50,256"
    cfg.num_samples = 5
    if a.tiny:
        base.tiny(cfg, "stylegan2", "box:80,128,100,60")
    return cfg
