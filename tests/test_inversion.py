"""Inversion (W / W+), the LPIPS port and its converter, image-file validation, the invert launcher and edits of
inverted images."""
from __future__ import annotations

import importlib.util
import json
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import converters
from converters import lpips as lpips_conv
from regfac_jax import inversion
from regfac_jax import lpips as lpips_lib

_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


# ----------------------------------------------------------------------------------------------------------
# LPIPS: parity with the lpips package
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture
def lpips_package(monkeypatch):
    """The `lpips` package, imported with a stand-in `torchvision` that builds VGG16's trunk.

    Why a stand-in: `lpips` imports torchvision only to call `torchvision.models.vgg16(pretrained=False).features`
    (an nn.Sequential of 3x3 convs with padding 1, in-place ReLUs and 2x2 max-pools, configuration "D"). The
    torchvision wheels available for torch==2.13.0 here are CUDA builds that fail to import next to the CPU torch;
    the trunk is rebuilt below from torch.nn with the same layer indices, so everything the lpips package computes
    (input scaling, slicing at relu1_2..relu5_3, normalisation, linear heads, averaging) is its own code.
    """
    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("lpips") is None:
        pytest.fail("the `lpips` package is part of the [test] extra: pip install -e '.[test]'")
    nn = torch.nn

    def vgg16(pretrained=False, **unused):
        assert not pretrained, "the test never asks for downloaded weights"
        layers, cin = [], 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        return types.SimpleNamespace(features=nn.Sequential(*layers))

    tv, models = types.ModuleType("torchvision"), types.ModuleType("torchvision.models")
    models.vgg16, tv.models = vgg16, models
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, name)
    import lpips
    yield lpips
    for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
        del sys.modules[name]


def _reference_model(lpips, seed=0):
    import torch
    torch.manual_seed(seed)
    model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)  # shipped heads, random trunk
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    vgg = {"features." + k.split(".", 2)[2]: v for k, v in sd.items() if k.startswith("net.slice")}
    heads = {k: v for k, v in sd.items() if k.startswith("lin") and not k.startswith("lins.")}  # lins.* aliases
    return model, vgg, heads


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 40, 36)])
def test_lpips_matches_lpips_package(lpips_package, shape):
    import torch
    model, vgg, heads = _reference_model(lpips_package)
    vgg["classifier.0.weight"] = np.zeros((4, 4), np.float32)  # a full torchvision state_dict: classifier ignored
    params = lpips_conv.convert(vgg, heads)
    rng = np.random.default_rng(1)
    n, h, w = shape
    x0 = rng.uniform(-1, 1, (n, h, w, 3)).astype(np.float32)
    x1 = np.clip(x0 + rng.normal(0, 0.3, x0.shape), -1, 1).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x0.transpose(0, 3, 1, 2)), torch.from_numpy(x1.transpose(0, 3, 1, 2)))
    ref = ref.numpy().reshape(n)
    ours = np.asarray(jax.jit(lpips_lib.distance)(params, x0, x1))
    assert np.all(ref > 1e-3)  # a real comparison, not two zeros
    print("lpips max abs diff", np.abs(ours - ref).max(), ref)
    # The bound; both sides are float32 with ~1e-7 relative rounding on distances of order 0.1-1.
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_lpips_converter_reads_the_shipped_heads_without_torch(lpips_package):
    _, vgg, heads = _reference_model(lpips_package)
    from converters import torch_pickle
    shipped = torch_pickle.read_state_dict(lpips_conv.default_linear_path())
    assert sorted(shipped) == sorted(heads)
    for k in heads:
        np.testing.assert_array_equal(shipped[k], heads[k])


def test_lpips_converter_names_bad_entries():
    vgg = {f"features.{i}.{p}": np.zeros((cout, cin, 3, 3) if p == "weight" else (cout,), np.float32)
           for stage in lpips_lib.STAGES for i, cin, cout in stage for p in ("weight", "bias")}
    heads = {f"lin{k}.model.1.weight": np.zeros((1, c, 1, 1), np.float32) for k, c in enumerate(lpips_lib.CHANNELS)}
    lpips_lib.check_params(lpips_conv.convert(vgg, heads))
    bad = dict(vgg)
    bad["features.2.weight"] = np.zeros((64, 32, 3, 3), np.float32)
    del bad["features.28.bias"]
    with pytest.raises(converters.ConversionError, match=r"features\.28\.bias.*\n.*features\.2\.weight"):
        lpips_conv.convert(bad, heads)
    with pytest.raises(converters.ConversionError, match=r"lin4\.model\.1\.weight"):
        lpips_conv.convert(vgg, {k: v for k, v in heads.items() if not k.startswith("lin4")})


def test_lpips_properties():
    params = lpips_lib.init_params(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1), minval=-1, maxval=1)
    d = lpips_lib.distance(params, x, x)
    np.testing.assert_array_equal(np.asarray(d), 0.0)
    # The gradient at identical images (zero feature vectors after ReLU included) must be finite for optimisation.
    g = jax.grad(lambda y: lpips_lib.distance(params, y, x).sum())(x)
    assert np.isfinite(np.asarray(g)).all()
    with pytest.raises(ValueError, match="at least 16x16"):
        lpips_lib.distance(params, x[:, :8, :8], x[:, :8, :8])
    with pytest.raises(ValueError, match="lin2.weight"):
        lpips_lib.check_params({**params, "lin2": {"weight": jnp.zeros(3)}})
