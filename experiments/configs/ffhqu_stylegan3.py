"""Figure: eye edits on unaligned FFHQ with StyleGAN3 (T or R) 1024, under an input transform.

Checkpoint: NVIDIA's ``stylegan3-t-ffhqu-1024x1024.pkl`` (or ``stylegan3-r-ffhqu-1024x1024.pkl``).

  python -m experiments.find_directions --config experiments/configs/ffhqu_stylegan3.py:preset=eyesr2 \
      --config.model /path/stylegan3-t-ffhqu-1024x1024.pkl --config.translate '(0.1,0.0)' --workdir runs/ffhqu

``preset=`` picks the preset box (eyesr2, eyesr3, eyest0, eyest3 from the paper's code). Each box
matches where the eyes land under one translation/rotation of the output; the paper's code does not
record which transform each preset was made with, so set ``--config.translate`` and
``--config.rotate`` to put the eyes into the box (check ``masks/*.png`` against a generated image).
``:tiny`` (or ``:preset=eyest0,tiny``) runs on the StyleGAN3-T fixture with a small transform.
"""

from experiments.configs import base


def get_config(arg: str | None = None):
    a = base.parse_arg(arg, preset="eyesr2", tiny=False)
    cfg = base.base_config()
    cfg.model = "stylegan3-t-ffhqu-1024x1024.pkl"
    cfg.dataset = "ffhqu"
    cfg.regions = a.preset
    cfg.num_samples = 5
    if a.tiny:
        base.tiny(cfg, "stylegan3_t", a.preset, "ffhqu")
        cfg.translate = (0.1, -0.05)
        cfg.rotate = 10.0
    return cfg
