"""Figure: local face edits on StyleGAN2 FFHQ 1024 (config-f): eyes, eyebrow, nose, mouth, chin.

Checkpoint: NVIDIA's ``stylegan2-ffhq-1024x1024.pkl`` (the StyleGAN3 repository's StyleGAN2 FFHQ
model) or stylegan2-ada-pytorch's ``ffhq.pkl``; the paper's Hammer file
``stylegan2-ffhq-config-f-1024x1024.pth`` loads too.

  python -m experiments.find_directions --config experiments/configs/ffhq_stylegan2.py \
      --config.model /path/stylegan2-ffhq-1024x1024.pkl --workdir runs/ffhq
  python -m experiments.manipulate --config experiments/configs/ffhq_stylegan2.py \
      --config.model /path/stylegan2-ffhq-1024x1024.pkl --workdir runs/ffhq_edit \
      --directions runs/ffhq/directions/eyes_sample000.npy

Paper setting: Jacobian w.r.t. w broadcast to all 18 layers, per-sample directions, edits on layers
4-7 (8-11 for eyebrows), steps -10..10 in 7, truncation 0.7 on the first 8 layers. Expected run
time: 5 samples x 5 regions at 1024^2 with d = 512, 'transpose' strategy: minutes on one
A100/H100-class GPU (not measured here: no GPU); hours on a CPU. ``:tiny`` runs on the 32x32
StyleGAN2 fixture in seconds.
"""

from experiments.configs import base


def get_config(arg: str | None = None):
    a = base.parse_arg(arg, tiny=False)
    cfg = base.base_config()
    cfg.model = "stylegan2-ffhq-1024x1024.pkl"
    cfg.dataset = "ffhq"
    cfg.regions = "eyes,eyebrow,nose,mouth,chin"
    cfg.num_samples = 5
    cfg.aggregation = "per_sample"
    cfg.jacobian.tangent_chunk = 32
    if a.tiny:
        base.tiny(cfg, "stylegan2", "eyes,mouth")
    return cfg
