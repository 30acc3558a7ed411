"""Config arguments are parsed (``file.py:key=value,flag``), and unset settings are None, not
sentinels."""

from __future__ import annotations

import pytest

from experiments.configs import base, ffhq_stylegan2, ffhqu_stylegan3


def test_parse_arg_types_and_flags():
    a = base.parse_arg(
        "preset=eyest0,tiny,n=3,scale=0.5", preset="eyesr2", tiny=False, n=1, scale=1.0
    )
    assert (a.preset, a.tiny, a.n, a.scale) == ("eyest0", True, 3, 0.5)
    assert base.parse_arg(None, tiny=False).tiny is False
    assert base.parse_arg("tiny=false", tiny=True).tiny is False


@pytest.mark.parametrize(
    "arg, message",
    [
        ("tnyi", "Unknown config argument 'tnyi'"),
        ("n", "needs a value"),
        ("n=x", "not a int"),
        ("tiny=maybe", "not a boolean"),
    ],
)
def test_parse_arg_refuses_bad_arguments(arg, message):
    with pytest.raises(ValueError, match=message):
        base.parse_arg(arg, tiny=False, n=1)


def test_a_preset_can_be_smoke_run():
    c = ffhqu_stylegan3.get_config("preset=eyest0,tiny")
    assert c.regions == "eyest0" and c.model == "fixture:stylegan3_t" and c.num_samples == 2
    assert ffhqu_stylegan3.get_config(None).regions == "eyesr2"


def test_unset_settings_are_none_and_still_overridable():
    c = ffhq_stylegan2.get_config()
    assert (
        c.layers is None
        and c.truncation_cutoff is None
        and c.solver.tau is None
        and c.latents_file is None
    )
    # typed placeholders accept their type
    c.solver.tau, c.truncation_cutoff, c.layers = 0.5, 8, "4-7"
    with pytest.raises(TypeError):
        c.solver.tau = "x"
