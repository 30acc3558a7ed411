"""Checkpoint formats: torch files read without torch, NVlabs / Hammer / plain / BigGAN loading,
clear errors, the orbax round trip and the CLI.

torch is used here only to WRITE files (as researchers' files were written); every read goes through
``converters.torch_pickle``, which never imports torch.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from parity import PARITY_TOL, max_abs, nchw

import converters
from converters import ConversionError, convert_state_dict, formats, nvlabs
from converters.common import flatten
from converters.torch_pickle import CheckpointFormatError, read_state_dict, read_torch_file
from regfac_jax import checkpoint

torch = pytest.importorskip("torch")


# ---- torch files without torch -------------------------------------------------------------------


def _tricky_state():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    conv = torch.randn(4, 3, 3, 3, generator=g).to(memory_format=torch.channels_last)
    return {
        "base": base,
        "view_rows": base[2:5],  # shares base's storage with an offset
        "view_cols": base[:, 1:7:2],  # non-contiguous strides
        "transposed": base.t(),  # shares storage, swapped strides
        "channels_last": conv,  # NVlabs layers may store channels_last weights
        "param": torch.nn.Parameter(torch.randn(5, generator=g)),
        "scalar": torch.tensor(0.25),
        "f64": torch.randn(3, dtype=torch.float64, generator=g),
        "f16": torch.randn(3, generator=g).half(),
        "bf16": torch.randn(3, generator=g).bfloat16(),
        "i64": torch.arange(-3, 4),
        "i32": torch.arange(5, dtype=torch.int32),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 4),
    }


def _as_numpy(t):
    t = t.detach()
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_save_reads_exactly_like_torch_load(tmp_path, zip_format):
    path = tmp_path / "sd.pt"
    torch.save(_tricky_state(), path, _use_new_zipfile_serialization=zip_format)
    ours, ref = read_torch_file(path), torch.load(path)
    assert list(ours) == list(ref)
    for key, tensor in ref.items():
        want = _as_numpy(tensor)
        got = ours[key].astype(np.float32) if key == "bf16" else ours[key]
        assert got.shape == want.shape and got.dtype == want.dtype, key
        assert np.array_equal(got, want), key  # exact: the same bytes, decoded
    # Storage sharing survives as in torch: a write through one view shows in the others.
    ours["base"][3, 1] = 1234.0
    assert ours["view_rows"][1, 1] == 1234.0 and ours["transposed"][1, 3] == 1234.0
    assert ours["view_cols"][3, 0] == 1234.0


def test_plain_pickle_of_tensors(tmp_path):
    """NVlabs .pkl files are plain pickle.dump output: storages go through
    torch.storage._load_from_bytes."""
    state = {k: v for k, v in _tricky_state().items() if k != "empty"}
    path = tmp_path / "plain.pkl"
    with open(path, "wb") as f:
        pickle.dump(state, f)
    ours = read_torch_file(path)
    for key, tensor in state.items():
        got = ours[key].astype(np.float32) if key == "bf16" else ours[key]
        assert np.array_equal(got, _as_numpy(tensor)) and got.dtype == _as_numpy(tensor).dtype, key


def test_reader_never_imports_torch(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, path)
    code = textwrap.dedent(f"""
        import sys
        sys.modules['torch'] = None  # any 'import torch' now fails
        from converters.torch_pickle import read_state_dict
        sd = read_state_dict({str(path)!r})
        assert sd['w'].tolist() == [[0, 1, 2], [3, 4, 5]], sd
        assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]
    """)
    env = dict(os.environ, PYTHONPATH=str(formats.pathlib.Path(__file__).resolve().parents[1]))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_read_state_dict_rejects_non_state_dicts(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"w": torch.ones(2), "epoch": 3}, path)
    with pytest.raises(CheckpointFormatError, match="not a flat state_dict"):
        read_state_dict(path)


# ---- NVlabs pickles, built with a stand-in of NVIDIA's persistence module ------------------------

PERSISTENCE_STANDIN = '''
"""Test stand-in: reduces modules the way torch_utils.persistence does (meta dict -> reconstruct function)."""
import torch

def _reconstruct_persistent_obj(meta):
    raise RuntimeError("the loader under test must never call this")

class Persistent(torch.nn.Module):
    src = ""
    def __init__(self, class_name, init_kwargs=None):
        super().__init__()
        self.class_name = class_name
        self._init_args = ()
        self._init_kwargs = init_kwargs or {}
    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.src, class_name=self.class_name,
                    state=dict(self.__dict__))
        return (_reconstruct_persistent_obj, (meta,), None)
'''
EASYDICT_STANDIN = "class EasyDict(dict):\n    pass\n"
# Only the text of the official source matters to the loader (it is never executed): these are the
# features by which it tells the official files apart (the class each defines; the paper title in
# the docstring of NVlabs/stylegan3's StyleGAN2 file; the filtered_lrelu op of the StyleGAN3 file).
SOURCES = {
    "stylegan2-ada-pytorch": "class SynthesisBlock(torch.nn.Module):\n    pass  # "
    "training/networks.py\n",
    "stylegan3/networks_stylegan2": (
        '"""Networks of "Analyzing and Improving the Image Quality of StyleGAN"."""\n'
        "class SynthesisBlock(torch.nn.Module):\n    pass\n"
    ),
    "stylegan3/networks_stylegan3": "class SynthesisInput(torch.nn.Module):\n    pass  # uses "
    "filtered_lrelu\n",
    "augment": "class AugmentPipe(torch.nn.Module):\n    pass  # training/augment.py\n",
}
BUFFER_NAMES = (
    "w_avg",
    "noise_const",
    "resample_filter",
    "up_filter",
    "down_filter",
    "magnitude_ema",
    "transform",
    "freqs",
    "phases",
    "p",
)
# 2: any file re-saved with protocol=2 (bytes as _codecs.encode); 4: pickle.dump's default
PROTOCOLS = (2, 3, 4, 5)


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """Imports the stand-in torch_utils.persistence and dnnlib.util from a temp dir (only while
    pickling)."""
    root = tmp_path / "standin"
    (root / "torch_utils").mkdir(parents=True)
    (root / "dnnlib").mkdir()
    (root / "torch_utils" / "__init__.py").write_text("")
    (root / "torch_utils" / "persistence.py").write_text(PERSISTENCE_STANDIN)
    (root / "dnnlib" / "__init__.py").write_text("")
    (root / "dnnlib" / "util.py").write_text(EASYDICT_STANDIN)
    monkeypatch.syspath_prepend(str(root))
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import dnnlib.util
    import torch_utils.persistence

    yield torch_utils.persistence, dnnlib.util
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        sys.modules.pop(name, None)


def build_persistent(persistence, easydict, state_dict, class_name, src, init_kwargs):
    """A module tree whose state_dict() is ``state_dict``, every module a persistent stand-in."""
    cls = type("Persistent", (persistence.Persistent,), {"src": src})
    root = cls(
        class_name,
        easydict(
            {k: (easydict(v) if isinstance(v, dict) else v) for k, v in (init_kwargs or {}).items()}
        ),
    )
    for key, value in state_dict.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            if part not in node._modules:
                node.add_module(part, cls("Sub"))
            node = node._modules[part]
        tensor = torch.from_numpy(np.array(value))
        if leaf in BUFFER_NAMES:
            node.register_buffer(leaf, tensor)
        else:
            node.register_parameter(leaf, torch.nn.Parameter(tensor, requires_grad=False))
    return root


def load_fixture(fixtures_dir, name):
    folder = fixtures_dir / name
    meta = json.loads((folder / "config.json").read_text())
    return dict(np.load(folder / "params.npz")), meta, dict(np.load(folder / "io.npz"))


@pytest.fixture(scope="module")
def sg2(fixtures_dir):
    params, meta, io = load_fixture(fixtures_dir, "stylegan2")
    gen = convert_state_dict("stylegan2", params, meta["init_kwargs"])
    return dict(
        params=params,
        config=meta["init_kwargs"],
        io=io,
        gen=gen,
        img=nchw(gen.generate(io["z"], io["c"])),
    )


def assert_same_generator(gen, sg2):
    """The loaded generator computes exactly what the one converted straight from params.npz
    computes."""
    img = nchw(gen.generate(sg2["io"]["z"], sg2["io"]["c"]))
    assert max_abs(img, sg2["img"]) == 0.0  # same arrays, same program, same CPU: bit-identical
    assert max_abs(img, sg2["io"]["img"]) <= PARITY_TOL


def training_weights(params: dict) -> dict:
    """Stand-in for the raw training generator G: same shapes as G_ema, different values (a 0.5
    offset)."""
    return {k: v + np.float32(0.5) for k, v in params.items()}


def write_snapshot(
    path,
    standin,
    params,
    src,
    init_kwargs,
    entries=("G", "D", "G_ema", "augment_pipe"),
    protocol=pickle.DEFAULT_PROTOCOL,
):
    """A training snapshot as NVIDIA's training_loop.py writes it: G, D, G_ema, augment_pipe,
    training_set_kwargs.

    G_ema holds ``params``; G holds :func:`training_weights` of them, so loading the wrong one
    shows.
    """
    persistence, util = standin
    make = functools.partial(build_persistent, persistence, util.EasyDict)
    nets = {
        "G": lambda: make(training_weights(params), "Generator", src, init_kwargs),
        "D": lambda: make(
            {"b4.out.weight": np.ones((1, 4), np.float32)},
            "Discriminator",
            src,
            {"c_dim": 0, "img_resolution": 32, "img_channels": 3},
        ),
        "G_ema": lambda: make(params, "Generator", src, init_kwargs),
        "augment_pipe": lambda: make(
            {"p": np.float32(0.2)}, "AugmentPipe", SOURCES["augment"], {"xflip": 1}
        ),
    }
    data = {k: nets[k]() for k in nets if k in entries}
    data["training_set_kwargs"] = dict(
        class_name="training.dataset.ImageFolderDataset",
        path="/data/ffhq.zip",
        use_labels=False,
        max_size=70000,
        xflip=True,
        resolution=32,
        random_seed=0,
    )
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return path


# Every class and init_kwargs layout a snapshot's generator can have (converters/nvlabs.py lists
# where each comes from), with the fixture whose weights it carries and the port config it must map
# to.
_SG2_SIZES = dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3)
_SG2_LEGACY_MAPPING = dict(
    num_layers=2,
    embed_features=None,
    layer_features=None,
    activation="lrelu",
    lr_multiplier=0.01,
    w_avg_beta=0.995,
)
_SG2_LEGACY_SYNTHESIS = dict(
    channel_base=1024,
    channel_max=64,
    num_fp16_res=0,
    conv_clamp=256,
    architecture="skip",
    resample_filter=[1, 3, 3, 1],
    use_noise=True,
    activation="lrelu",
)
_SG3_TRAIN_KWARGS = dict(
    z_dim=32,
    w_dim=32,
    mapping_kwargs={"num_layers": 2},
    channel_base=1024,
    channel_max=64,
    fused_modconv_default="inference_only",
    c_dim=0,
    img_resolution=32,
    img_channels=3,
)
LAYOUTS = {
    # stylegan2-ada-pytorch train.py: training.networks.Generator, synthesis options under
    # synthesis_kwargs.
    "sg2ada-train": (
        "stylegan2",
        "stylegan2-ada-pytorch",
        "training.networks.Generator",
        None,
        None,
    ),
    # stylegan2-ada-pytorch legacy.py (a TensorFlow pickle converted): every option spelt out.
    "sg2ada-legacy": (
        "stylegan2",
        "stylegan2-ada-pytorch",
        "training.networks.Generator",
        {
            **_SG2_SIZES,
            "mapping_kwargs": _SG2_LEGACY_MAPPING,
            "synthesis_kwargs": _SG2_LEGACY_SYNTHESIS,
        },
        None,
    ),
    # stylegan3 train.py --cfg=stylegan2: flat, fused_modconv_default added, conv_clamp and
    # num_fp16_res left to the class defaults (256 and 4; only --fp32 sets them).
    "sg3-stylegan2-train": (
        "stylegan2",
        "stylegan3/networks_stylegan2",
        "training.networks_stylegan2.Generator",
        _SG3_TRAIN_KWARGS,
        {
            **_SG2_SIZES,
            "mapping_kwargs": {"num_layers": 2, "w_avg_beta": 0.998},
            "synthesis_kwargs": {
                "channel_base": 1024,
                "channel_max": 64,
                "conv_clamp": 256,
                "num_fp16_res": 4,
            },
        },
    ),
    # stylegan3 legacy.py (a TensorFlow pickle converted; how the released stylegan2-*.pkl were
    # made): flat, all.
    "sg3-stylegan2-legacy": (
        "stylegan2",
        "stylegan3/networks_stylegan2",
        "training.networks_stylegan2.Generator",
        {**_SG2_SIZES, **_SG2_LEGACY_SYNTHESIS, "mapping_kwargs": _SG2_LEGACY_MAPPING},
        {
            **_SG2_SIZES,
            "mapping_kwargs": _SG2_LEGACY_MAPPING,
            "synthesis_kwargs": _SG2_LEGACY_SYNTHESIS,
        },
    ),
    # stylegan3 train.py --cfg=stylegan3-t / -r (the fixtures' init_kwargs are exactly what that
    # records).
    "sg3-t": (
        "stylegan3_t",
        "stylegan3/networks_stylegan3",
        "training.networks_stylegan3.Generator",
        None,
        None,
    ),
    "sg3-r": (
        "stylegan3_r",
        "stylegan3/networks_stylegan3",
        "training.networks_stylegan3.Generator",
        None,
        None,
    ),
}


@pytest.fixture(scope="module")
def references(fixtures_dir):
    """Per fixture: weights, config, io and one generator converted from params.npz (compiled once,
    reused)."""
    cache = {}

    def get(name):
        if name not in cache:
            params, meta, io = load_fixture(fixtures_dir, name)
            kind = "stylegan3" if name.startswith("stylegan3") else "stylegan2"
            cache[name] = dict(
                params=params,
                config=meta["init_kwargs"],
                io=io,
                gen=convert_state_dict(kind, params, meta["init_kwargs"]),
            )
        return cache[name]

    return get


def render(gen, ref) -> np.ndarray:
    """``gen``'s images for the fixture inputs, through ``ref``'s already compiled program.

    A port's program is a pure function of its spec (everything derived from the config); the
    weights are arguments. So for the same class and an equal spec, running ``ref``'s compiled
    functions on ``gen``'s params and buffers IS running ``gen`` (and saves a multi-second compile
    per case).
    """
    assert type(gen) is type(ref["gen"]) and gen.spec == ref["gen"].spec
    saved = ref["gen"].params, ref["gen"].buffers
    ref["gen"].params, ref["gen"].buffers = gen.params, gen.buffers
    try:
        return nchw(ref["gen"].generate(ref["io"]["z"], ref["io"]["c"]))
    finally:
        ref["gen"].params, ref["gen"].buffers = saved


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_nvlabs_snapshot_layouts(tmp_path, standin, references, layout, protocol):
    """Each official layout, in each pickle protocol: G_ema is taken, mapped to the port, and
    matches the official images."""
    fixture, src, class_name, init_kwargs, port_config = LAYOUTS[layout]
    ref = references(fixture)
    init_kwargs = ref["config"] if init_kwargs is None else init_kwargs
    path = write_snapshot(
        tmp_path / "network-snapshot-000123.pkl",
        standin,
        ref["params"],
        SOURCES[src],
        init_kwargs,
        protocol=protocol,
    )
    ckpt = formats.read_checkpoint(path)
    assert ckpt.kind == ("stylegan3" if fixture.startswith("stylegan3") else "stylegan2")
    assert f"[G_ema: {class_name}]" in ckpt.source
    assert ckpt.config == (init_kwargs if port_config is None else port_config)
    # state_dict() order: params, buffers, submodules
    assert list(ckpt.state_dict) == list(ref["params"])
    # G_ema's, not G's
    assert all(np.array_equal(ckpt.state_dict[k], v) for k, v in ref["params"].items())
    img = render(converters.load(path), ref)
    assert max_abs(img, ref["io"]["img"]) <= PARITY_TOL


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {**_SG3_TRAIN_KWARGS, "fused_modconv_default": "always"},
            "fused_modconv_default='always'",
        ),
        ({**_SG3_TRAIN_KWARGS, "channels_last": True}, r"\['channels_last'\] are not options"),
        ({**_SG3_TRAIN_KWARGS, "synthesis_kwargs": {"channel_base": 1024}}, "inconsistent"),
    ],
)
def test_flat_stylegan2_kwargs_are_validated(kwargs, message):
    with pytest.raises(ConversionError, match=message):
        nvlabs.port_config("training.networks_stylegan2.Generator", "stylegan2", kwargs, "x.pkl")


def test_flat_stylegan2_kwargs_keep_explicit_values(tmp_path, sg2):
    """train.py --fp32 records num_fp16_res=0 and conv_clamp=None: explicit values beat the class
    defaults."""
    config = nvlabs.port_config(
        "training.networks_stylegan2.Generator",
        "stylegan2",
        {**_SG3_TRAIN_KWARGS, "num_fp16_res": 0, "conv_clamp": None},
        "x.pkl",
    )
    assert config["synthesis_kwargs"] == {
        "channel_base": 1024,
        "channel_max": 64,
        "num_fp16_res": 0,
        "conv_clamp": None,
    }
    # A plain state_dict whose config JSON records that class and its flat kwargs maps the same way.
    np.savez(tmp_path / "G.npz", **sg2["params"])
    (tmp_path / "G.json").write_text(
        json.dumps(
            {
                "class_name": "training.networks_stylegan2.Generator",
                "init_kwargs": _SG3_TRAIN_KWARGS,
            }
        )
    )
    assert formats.read_checkpoint(tmp_path / "G.npz").config == LAYOUTS["sg3-stylegan2-train"][4]


def test_snapshot_without_g_ema(tmp_path, standin, sg2):
    """NVIDIA's loader refuses a file without G_ema; so do we, unless the caller names the
    network."""
    path = write_snapshot(
        tmp_path / "snap.pkl",
        standin,
        sg2["params"],
        SOURCES["stylegan2-ada-pytorch"],
        sg2["config"],
        entries=("G", "D", "augment_pipe"),
    )
    with pytest.raises(CheckpointFormatError) as err:
        converters.load(path)
    for text in (
        "no G_ema",
        "G (training.networks.Generator)",
        "D (training.networks.Discriminator)",
        "augment_pipe (training.augment.AugmentPipe)",
        "network='G'",
        f"{path}:G",
    ):
        assert text in str(err.value)
    want = training_weights(sg2["params"])
    ckpt = formats.read_checkpoint(path, network="G")
    assert "[G: training.networks.Generator]" in ckpt.source
    assert all(np.array_equal(ckpt.state_dict[k], v) for k, v in want.items())
    from experiments.pipeline import load_model  # the launchers' model spec: <file>:<network>

    with pytest.raises(CheckpointFormatError, match="no G_ema"):
        load_model(str(path))
    gen = load_model(f"{path}:G")
    assert np.array_equal(
        np.asarray(gen.params["synthesis"]["b4"]["const"]), want["synthesis.b4.const"]
    )
    with pytest.raises(
        CheckpointFormatError, match="D is a training.networks.Discriminator, not a generator"
    ):
        converters.load(path, network="D")
    with pytest.raises(CheckpointFormatError, match="no network 'G_emma'.*network='G'"):
        converters.load(path, network="G_emma")


@pytest.mark.parametrize("network", [None, "G_ema"])
def test_nvlabs_discriminator_only(tmp_path, standin, sg2, network):
    path = write_snapshot(
        tmp_path / "d.pkl",
        standin,
        sg2["params"],
        SOURCES["stylegan2-ada-pytorch"],
        sg2["config"],
        entries=("D", "augment_pipe"),
    )
    with pytest.raises(
        CheckpointFormatError,
        match=r"only a discriminator \(D "
        r"\(training.networks.Discriminator",
    ):
        formats.load(path, network=network)


def test_network_on_a_single_network_file(tmp_path, sg2):
    path = tmp_path / "G.npz"
    np.savez(path, **sg2["params"])
    (tmp_path / "G.json").write_text(json.dumps({"kind": "stylegan2", "config": sg2["config"]}))
    with pytest.raises(CheckpointFormatError, match="holds one generator; network='G'"):
        converters.load(path, network="G")
    from experiments.pipeline import load_model

    with pytest.raises(CheckpointFormatError, match="holds one generator"):
        load_model(f"{path}:G")


def test_truncated_nvlabs_pickle(tmp_path, standin, sg2):
    path = write_snapshot(
        tmp_path / "cut.pkl",
        standin,
        sg2["params"],
        SOURCES["stylegan2-ada-pytorch"],
        sg2["config"],
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        formats.load(path)


# ---- Hammer / ReSeFa files -----------------------------------------------------------------------


def official_to_hammer_sg2(params: dict) -> dict:
    """The inverse of the loader's key map, written independently from Hammer's var-name table."""
    out = {}
    rename = {"affine.weight": "style.weight", "affine.bias": "style.bias", "noise_const": "noise"}
    for key, value in params.items():
        parts = key.split(".")
        if key == "mapping.w_avg":
            out["w_avg"] = value
        elif parts[0] == "mapping":
            out[
                f"mapping.{parts[1].replace('fc', 'dense').replace('embed', 'embedding')}.{parts[2]}"
            ] = value
        elif key == "synthesis.b4.const":
            out["synthesis.early_layer.const"] = value[None]
        elif parts[-1] == "resample_filter":
            block = int(np.log2(int(parts[1][1:]))) - 2
            if parts[2] == "conv0":  # Hammer keeps the filter of upsampling layers only
                out[f"synthesis.layer{2 * block - 1}.filter"] = value
            elif len(parts) == 3 and block == 0:
                out["synthesis.filter"] = value  # the skip architecture's image upsampling filter
        else:
            block = int(np.log2(int(parts[1][1:]))) - 2
            layer = {
                "conv0": f"layer{2 * block - 1}",
                "conv1": f"layer{2 * block}",
                "torgb": f"output{block}",
            }
            rest = ".".join(parts[3:])
            value = value[None, None] if rest == "noise_const" else value
            out[f"synthesis.{layer[parts[2]]}.{rename.get(rest, rest)}"] = value
    return out


def test_hammer_stylegan2(tmp_path, sg2):
    hammer = official_to_hammer_sg2(sg2["params"])
    assert "synthesis.layer1.noise" in hammer and hammer["synthesis.layer1.noise"].ndim == 4
    path = tmp_path / "stylegan2-resefa.pth"
    torch.save(
        {
            "models": {
                "generator_smooth": {k: torch.from_numpy(v) for k, v in hammer.items()},
                "generator": {"junk": torch.zeros(1)},
            },
            "model_kwargs_init": {
                "generator_smooth": {
                    "model_type": "StyleGAN2Generator",
                    "resolution": 32,
                    "conv_clamp": 256,
                }
            },
        },
        path,
    )
    ckpt = formats.read_checkpoint(path)
    assert ckpt.kind == "stylegan2" and "generator_smooth" in ckpt.source
    # every size inferred from the tensor shapes, clamp from the kwargs
    assert ckpt.config == sg2["config"]
    assert sorted(ckpt.state_dict) == sorted(sg2["params"])
    for key, value in sg2["params"].items():
        assert np.array_equal(ckpt.state_dict[key], value), key
    assert_same_generator(formats.load(path), sg2)


def test_hammer_without_kwargs_uses_hammer_defaults(tmp_path, sg2):
    path = tmp_path / "g.pth"
    hammer = official_to_hammer_sg2(sg2["params"])
    torch.save({"models": {"generator": {k: torch.from_numpy(v) for k, v in hammer.items()}}}, path)
    config = formats.read_checkpoint(path).config
    # named explicitly: the same
    assert formats.read_checkpoint(path, network="generator").config == config
    with pytest.raises(
        CheckpointFormatError, match="no generator 'generator_smooth'; its models are"
    ):
        formats.read_checkpoint(path, network="generator_smooth")
    # ReSeFa builds its StyleGAN2Generator with Hammer's default conv_clamp=None; everything else is
    # unchanged.
    assert config["synthesis_kwargs"].pop("conv_clamp") is None
    want = json.loads(json.dumps(sg2["config"]))
    want["synthesis_kwargs"].pop("conv_clamp")
    assert config == want


def test_hammer_options_without_official_equivalent(tmp_path, sg2):
    path = tmp_path / "g.pth"
    hammer = official_to_hammer_sg2(sg2["params"])
    torch.save(
        {
            "models": {"generator": {k: torch.from_numpy(v) for k, v in hammer.items()}},
            "model_kwargs_init": {"generator": {"final_tanh": True}},
        },
        path,
    )
    with pytest.raises(ConversionError, match="final_tanh"):
        formats.read_checkpoint(path)


def official_to_hammer_sg3(params: dict, grid_size: int) -> dict:
    out = {"synthesis.early_layer.grid": np.zeros((1, grid_size, grid_size, 2), np.float32)}
    fixed = {
        "input.weight": "early_layer.weight",
        "input.affine.weight": "early_layer.affine.weight",
        "input.affine.bias": "early_layer.affine.bias",
        "input.transform": "early_layer.transform",
        "input.freqs": "early_layer.frequency",
        "input.phases": "early_layer.phase",
    }
    rename = {
        "weight": "conv.weight",
        "affine.weight": "conv.style.weight",
        "affine.bias": "conv.style.bias",
        "bias": "filter.bias",
        "up_filter": "filter.up_filter",
        "down_filter": "filter.down_filter",
        "magnitude_ema": "magnitude_ema",
    }
    for key, value in params.items():
        parts = key.split(".")
        if key == "mapping.w_avg":
            out["w_avg"] = value
        elif parts[0] == "mapping":
            out[f"mapping.{parts[1].replace('fc', 'dense')}.{parts[2]}"] = value
        elif ".".join(parts[1:]) in fixed:
            out["synthesis." + fixed[".".join(parts[1:])]] = value
        else:
            idx = int(parts[1].split("_")[0][1:])
            out[f"synthesis.layer{idx}.{rename['.'.join(parts[2:])]}"] = value
    return out


@pytest.mark.parametrize("name", ["stylegan3_t", "stylegan3_r"])
def test_hammer_stylegan3(tmp_path, fixtures_dir, name):
    params, meta, _ = load_fixture(fixtures_dir, name)
    hammer = official_to_hammer_sg3(params, grid_size=36)  # both fixtures start at 36 px (README)
    path = tmp_path / "g.pth"
    torch.save(
        {"models": {"generator_smooth": {k: torch.from_numpy(v) for k, v in hammer.items()}}}, path
    )
    ckpt = formats.read_checkpoint(path)
    assert ckpt.kind == "stylegan3"
    # training-only value
    want = {k: v for k, v in meta["init_kwargs"].items() if k != "magnitude_ema_beta"}
    assert ckpt.config == want
    assert sorted(ckpt.state_dict) == sorted(params)
    assert all(np.array_equal(ckpt.state_dict[k], v) for k, v in params.items())


def test_hammer_discriminator_only(tmp_path):
    path = tmp_path / "d.pth"
    torch.save({"models": {"discriminator": {"b4.out.weight": torch.ones(1, 4)}}}, path)
    with pytest.raises(CheckpointFormatError, match="only a discriminator"):
        formats.load(path)


def test_hammer_stylegan1(tmp_path):
    path = tmp_path / "sg1.pth"
    torch.save(
        {
            "models": {
                "generator": {"synthesis.lod": torch.zeros(()), "truncation.w_avg": torch.zeros(4)}
            }
        },
        path,
    )
    with pytest.raises(CheckpointFormatError, match="StyleGAN1"):
        formats.load(path)


# ---- plain state_dicts, BigGAN folders -----------------------------------------------------------


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_plain_state_dict_with_config_json(tmp_path, sg2, zip_format):
    path = tmp_path / "G.pt"
    torch.save(
        {k: torch.from_numpy(v) for k, v in sg2["params"].items()},
        path,
        _use_new_zipfile_serialization=zip_format,
    )
    with pytest.raises(CheckpointFormatError, match="G.json or config.json"):
        formats.load(path)
    (tmp_path / "G.json").write_text(
        json.dumps({"class_name": "training.networks.Generator", "init_kwargs": sg2["config"]})
    )
    assert_same_generator(formats.load(path), sg2)


def test_biggan_directory(fixtures_dir):
    pytest.importorskip("converters.biggan")
    folder = fixtures_dir / "biggan"
    ckpt = formats.read_checkpoint(folder)
    params = dict(np.load(folder / "params.npz"))
    assert ckpt.kind == "biggan" and sorted(ckpt.state_dict) == sorted(params)
    # pytorch_model.bin == params.npz
    assert all(np.array_equal(ckpt.state_dict[k], v) for k, v in params.items())
    gen = formats.load(folder)
    io = dict(np.load(folder / "io.npz"))
    img = np.asarray(gen.generate(io["z_trunc"][2], io["class_vector"], float(io["truncation"][2])))
    # The BigGAN port's own bar (tests/test_biggan.py): float32 rounding amplified by the standing
    # statistics.
    assert max_abs(img, io["img"][2].transpose(0, 2, 3, 1)) <= PARITY_TOL


# ---- content that is not a checkpoint ------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>",
            "HTML page",
        ),
        (b"\n  <html><body>Quota exceeded</body></html>", "HTML page"),
        (b"", "empty"),
        (b"\x00\x01garbage-bytes-not-a-checkpoint", "not a recognised checkpoint"),
        (b"PK\x03\x04\x14\x00\x00\x00", "damaged or truncated zip"),
    ],
)
def test_not_a_checkpoint(tmp_path, content, message):
    path = tmp_path / "stylegan2-ffhq.pkl"  # the name promises a pickle; the content decides
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError, match=message):
        formats.load(path)


def test_truncated_torch_zip(tmp_path, sg2):
    path = tmp_path / "G.pt"
    torch.save({k: torch.from_numpy(v) for k, v in sg2["params"].items()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        formats.load(path)


TF_NETWORK = """
class Network:
    def __init__(self, build_func_name):
        self.state = dict(version=4, name="G", static_kwargs={}, components={}, build_module_src="",
                          build_func_name=build_func_name, variables=[])
    def __getstate__(self):
        return self.state
"""


@pytest.mark.parametrize(
    "build_func, message",
    [
        ("training.networks_stylegan2.G_main", "TensorFlow StyleGAN2 pickle.*legacy.py"),
        ("training.networks_stylegan.G_style", "StyleGAN \\(version 1\\).*not supported"),
    ],
)
def test_tensorflow_pickles(tmp_path, monkeypatch, build_func, message):
    root = tmp_path / "tfstub"
    (root / "dnnlib" / "tflib").mkdir(parents=True)
    for pkg in ("dnnlib", "dnnlib/tflib"):
        (root / pkg / "__init__.py").write_text("")
    (root / "dnnlib" / "tflib" / "network.py").write_text(TF_NETWORK)
    monkeypatch.syspath_prepend(str(root))
    for name in ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    from dnnlib.tflib.network import Network

    path = tmp_path / "karras2019stylegan-ffhq-1024x1024.pkl"
    with open(path, "wb") as f:
        pickle.dump((Network(build_func), Network("D"), Network(build_func)), f, protocol=2)
    for name in ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"):
        sys.modules.pop(name, None)
    with pytest.raises(CheckpointFormatError, match=message):
        formats.load(path)


# ---- the orbax round trip and the CLI ------------------------------------------------------------


def test_orbax_round_trip(tmp_path, sg2):
    dest = checkpoint.save_generator(sg2["gen"], tmp_path / "g")
    with pytest.raises(FileExistsError, match="overwrite"):
        checkpoint.save_generator(sg2["gen"], dest)
    back = checkpoint.load_generator(dest)
    assert back.kind == "stylegan2" and back.config == sg2["config"]

    def flat(tree):
        return {k: np.asarray(v) for k, v in flatten(tree).items()}

    for name in ("params", "buffers"):
        a, b = flat(getattr(sg2["gen"], name)), flat(getattr(back, name))
        assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a), name
    assert_same_generator(back, sg2)
    # converters.load also reads converted directories
    assert formats.load(dest).kind == "stylegan2"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_cli_converts_and_refuses_to_overwrite(tmp_path, sg2, caplog):
    from converters.__main__ import main

    src = tmp_path / "G.npz"
    np.savez(src, **sg2["params"])
    (tmp_path / "G.json").write_text(json.dumps({"kind": "stylegan2", "config": sg2["config"]}))
    dst = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="converters"):
        assert main(["--src", str(src), "--dst", str(dst)]) == 0
    assert "kind=stylegan2 resolution=32" in caplog.text and "params=" in caplog.text
    assert_same_generator(checkpoint.load_generator(dst), sg2)
    stamp = (dst / checkpoint.META_FILE).stat().st_mtime_ns
    assert main(["--src", str(src), "--dst", str(dst)]) == 2  # refused, untouched
    assert (dst / checkpoint.META_FILE).stat().st_mtime_ns == stamp
    assert main(["--src", str(src), "--dst", str(dst), "--overwrite"]) == 0
    assert_same_generator(checkpoint.load_generator(dst), sg2)


def test_cli_network_option(tmp_path, standin, sg2, caplog):
    from converters.__main__ import main

    src = write_snapshot(
        tmp_path / "snap.pkl",
        standin,
        sg2["params"],
        SOURCES["stylegan2-ada-pytorch"],
        sg2["config"],
        entries=("G", "D"),
    )
    with caplog.at_level(logging.ERROR, logger="converters"):
        assert main(["--src", str(src), "--dst", str(tmp_path / "out")]) == 1
    assert "no G_ema" in caplog.text and not (tmp_path / "out").exists()
    assert main(["--src", str(src), "--dst", str(tmp_path / "out"), "--network", "G"]) == 0
    back = checkpoint.load_generator(tmp_path / "out")
    assert np.array_equal(
        np.asarray(back.params["synthesis"]["b4"]["const"]),
        training_weights(sg2["params"])["synthesis.b4.const"],
    )


def test_cli_write_is_atomic(tmp_path, sg2, monkeypatch):
    """A failure half-way through writing leaves neither the destination nor temporary files
    behind."""
    import orbax.checkpoint as ocp

    from converters.__main__ import main

    def broken_save(self, path, tree, *args, **kwargs):
        os.makedirs(path)
        (formats.pathlib.Path(path) / "partial").write_text("half written")
        raise OSError("disk full")

    monkeypatch.setattr(ocp.PyTreeCheckpointer, "save", broken_save)
    src = tmp_path / "G.npz"
    np.savez(src, **sg2["params"])
    (tmp_path / "G.json").write_text(json.dumps({"kind": "stylegan2", "config": sg2["config"]}))
    with pytest.raises(OSError, match="disk full"):
        main(["--src", str(src), "--dst", str(tmp_path / "out")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["G.json", "G.npz"]


def test_cli_reports_bad_input(tmp_path, caplog):
    from converters.__main__ import main

    src = tmp_path / "page.pkl"
    src.write_text("<html>not found</html>")
    with caplog.at_level(logging.ERROR, logger="converters"):
        assert main(["--src", str(src), "--dst", str(tmp_path / "out")]) == 1
    assert "HTML page" in caplog.text and not (tmp_path / "out").exists()
