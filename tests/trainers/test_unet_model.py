"""Attention U-Net: shapes, presets, parameter counts, input checks, building blocks."""

import json

import pytest
import torch

from microforge.platform.errors import ConfigError
from microforge.trainers.unet import (
    UNET_PRESETS,
    AttentionGate,
    AttentionUNet,
    BlurPool2d,
    CBAM,
    unet_from_preset,
)

torch.set_num_threads(1)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_tiny_forward_shape_and_backward():
    torch.manual_seed(0)
    model = unet_from_preset("tiny")
    x = torch.randn(2, 1, 64, 64)
    y = model(x)
    assert y.shape == (2, 1, 64, 64)
    y.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "name, expected",
    [("tiny", 123_603), ("small", 1_976_059), ("standard", 31_562_131)],
)
def test_preset_parameter_counts(name, expected):
    assert n_params(unet_from_preset(name)) == expected


def test_standard_is_the_reference_size():
    model = unet_from_preset("standard")
    assert abs(n_params(model) - 31.5e6) / 31.5e6 < 0.05
    widths = [stage.conv[0].out_channels for stage in model.encoder]
    assert widths == [64, 128, 256, 512, 1024]


def test_standard_forward_once():
    model = unet_from_preset("standard").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_small_forward_shape():
    model = unet_from_preset("small").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 48)).shape == (1, 1, 32, 48)


def test_config_round_trip_rebuilds_the_same_architecture():
    model = unet_from_preset("tiny", out_channels=2, dropout=0.0, cbam=False)

    config = json.loads(json.dumps(model.config))
    rebuilt = AttentionUNet(**config)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config == model.config
    assert config == {
        "in_channels": 1,
        "out_channels": 2,
        "depth": 4,
        "base_channels": 8,
        "dropout": 0.0,
        "attention_gates": True,
        "cbam": False,
        "blur_pool": True,
    }


@pytest.mark.parametrize(
    "flags", [dict(attention_gates=False), dict(cbam=False), dict(blur_pool=False), dict(dropout=0.0)]
)
def test_switches_off_still_run(flags):
    model = AttentionUNet(depth=3, base_channels=4, **flags).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 16, 16)).shape == (1, 1, 16, 16)


def test_switches_remove_modules():
    full = AttentionUNet(depth=3, base_channels=4)
    bare = AttentionUNet(depth=3, base_channels=4, attention_gates=False, cbam=False, blur_pool=False, dropout=0.0)
    assert n_params(bare) < n_params(full)
    assert not any(isinstance(m, (CBAM, AttentionGate, BlurPool2d, torch.nn.Dropout2d)) for m in bare.modules())
    assert sum(isinstance(m, CBAM) for m in full.modules()) == 3  # every encoder stage
    assert sum(isinstance(m, AttentionGate) for m in full.modules()) == 2  # every skip
    assert sum(isinstance(m, torch.nn.Dropout2d) for m in full.modules()) == 3  # bottleneck + 2 decoder


@pytest.mark.parametrize("size", [(63, 64), (64, 36), (20, 20)])
def test_input_size_not_divisible_is_a_clear_error(size):
    model = unet_from_preset("tiny")  # depth 4: multiples of 8
    with pytest.raises(ConfigError, match="divisible by 8"):
        model(torch.randn(1, 1, *size))


def test_wrong_channels_or_rank_is_a_clear_error():
    model = unet_from_preset("tiny")
    with pytest.raises(ConfigError, match="1 input channel"):
        model(torch.randn(1, 3, 16, 16))
    with pytest.raises(ConfigError, match=r"\(B, C, H, W\)"):
        model(torch.randn(16, 16))


def test_unknown_preset_and_override_suggest_the_name():
    with pytest.raises(ConfigError, match="did you mean 'small'"):
        unet_from_preset("smal")
    with pytest.raises(ConfigError, match="did you mean 'base_channels'"):
        unet_from_preset("tiny", base_channel=4)
    assert set(UNET_PRESETS) == {"tiny", "small", "standard"}


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"depth": 1}, "depth"),
        ({"base_channels": 0}, "base_channels"),
        ({"dropout": 1.0}, "dropout"),
        ({"cbam": 1}, "cbam"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"AttentionUNet.{field}"):
        AttentionUNet(**kwargs)


def test_cbam_shapes_and_weights():
    torch.manual_seed(0)
    cbam = CBAM(32)
    x = torch.randn(2, 32, 10, 12)
    assert cbam(x).shape == x.shape
    cw, sw = cbam.channel_weights(x), cbam.spatial_weights(x)
    assert cw.shape == (2, 32, 1, 1) and sw.shape == (2, 1, 10, 12)
    assert 0 < cw.min() and cw.max() < 1 and 0 < sw.min() and sw.max() < 1
    assert cbam.mlp[0].out_channels == 2  # 32 // 16
    assert CBAM(4).mlp[0].out_channels == 1  # never zero-width


def test_attention_gate_shapes():
    gate = AttentionGate(gate_channels=16, skip_channels=8)
    g, x = torch.randn(2, 16, 12, 12), torch.randn(2, 8, 12, 12)
    alpha = gate.coefficients(g, x)
    assert alpha.shape == (2, 1, 12, 12)
    assert torch.allclose(gate(g, x), x * alpha)


def test_blur_pool_halves_and_blurs():
    pool = BlurPool2d(3)
    x = torch.randn(2, 3, 16, 10)
    assert pool(x).shape == (2, 3, 8, 5)
    assert not any(True for _ in pool.parameters())  # the filter is fixed
    # A constant image stays constant (the binomial filter sums to 1).
    assert torch.allclose(pool(torch.full((1, 3, 8, 8), 2.5)), torch.full((1, 3, 4, 4), 2.5))
    # Shifting an impulse by one pixel changes the output far less than plain max-pool does.
    a, b = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    a[..., 8, 9], b[..., 8, 10] = 1.0, 1.0  # crosses a 2x2 pooling-window border
    blur = BlurPool2d(1)
    plain = torch.nn.functional.max_pool2d
    assert (blur(a) - blur(b)).abs().sum() < (plain(a, 2) - plain(b, 2)).abs().sum()
