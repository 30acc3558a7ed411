"""Figure (teaser): BigGAN-deep 256 region edits (centre and head boxes) in Z.

Checkpoint: pytorch-pretrained-biggan's ``biggan-deep-256`` directory (``config.json`` +
``pytorch_model.bin``, as its ``from_pretrained`` caches them).

  python -m experiments.find_directions --config experiments/configs/biggan_deep256.py \
      --config.model /path/biggan-deep-256 --config.classes 'golden retriever' --workdir runs/biggan

Z space (d = 128), truncation 0.4, boxes from the paper's code (center0..2, left_side, top_side,
head0, head1). Expected run time: minutes on a GPU. ``:tiny`` runs on the BigGAN fixture (32x32, 10
classes).
"""

from experiments.configs import base


def get_config(arg: str | None = None):
    a = base.parse_arg(arg, tiny=False)
    cfg = base.base_config()
    cfg.model = "biggan-deep-256"
    cfg.dataset = "biggan"
    cfg.regions = "center0,head0"
    cfg.space = "z"
    cfg.classes = "207"
    cfg.truncation = 0.4
    cfg.num_samples = 5
    if a.tiny:
        base.tiny(cfg, "biggan", "center1", "biggan")
        cfg.classes = "3"
    return cfg
