"""Pure ``jnp`` image ops shared by the StyleGAN ports (NHWC layout throughout)."""

from regfac_jax.ops.bias_act import ACTIVATIONS, bias_act
from regfac_jax.ops.filtered_lrelu import filtered_lrelu
from regfac_jax.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = [
    "ACTIVATIONS",
    "bias_act",
    "downsample2d",
    "filter2d",
    "filtered_lrelu",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]
