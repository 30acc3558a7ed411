"""Figure: car edits on StyleGAN2 LSUN car 512x384 (wheels, body).

Checkpoint: NVIDIA's StyleGAN2 ``stylegan2-car-config-f.pkl`` converted to PyTorch with
stylegan2-ada-pytorch's ``legacy.py`` (TensorFlow pickles are refused by our loader with a pointer
to that converter), or the paper's Hammer ``stylegan2-car-config-f-512x384.pth``.

  python -m experiments.find_directions --config experiments/configs/lsun_car_stylegan2.py \
      --config.model /path/stylegan2-car.pkl --workdir runs/car

The paper's code ships no car boxes; these boxes (ours, 256 grid, on the 512x512 output whose cars
occupy the middle 384 rows) are a starting point: 'box:180,70,60,70;box:180,186,60,70' are the two
wheels, 'box:128,128,100,230' the body. Expected run time: as the FFHQ config, at 512^2. ``:tiny``
runs on the StyleGAN2 fixture.
"""

from experiments.configs import base


def get_config(arg: str | None = None):
    a = base.parse_arg(arg, tiny=False)
    cfg = base.base_config()
    cfg.model = "stylegan2-car-config-f.pkl"
    cfg.dataset = "lsun_car"
    cfg.regions = "box:180,70,60,70;box:180,186,60,70;box:128,128,100,230"
    cfg.num_samples = 5
    if a.tiny:
        base.tiny(cfg, "stylegan2", "box:180,70,60,70;box:128,128,100,230")
    return cfg
