"""CycleGAN networks against the reference configuration, the image pool, and the colorization
losses: their values against skimage and their gradients with respect to the generator."""

import numpy as np
import pytest
import torch
from skimage.color import rgb2hsv
from skimage.metrics import structural_similarity

from microforge.platform.errors import ConfigError
from microforge.trainers.cyclegan import (ImagePool, NLayerDiscriminator, ResnetGenerator, blocks_for,
                                          count_parameters, parse_loss_weights)
from microforge.trainers.cyclegan.lightning import CycleGANModule, linear_decay
from microforge.trainers.cyclegan.losses import (colorvar_loss, dice_score, gt_loss, histogram_correlation,
                                                 hsv_histogram, hsv_loss, rgb_to_hsv, ssim)


def _conv(cin, cout, k):
    return cin * cout * k * k + cout


def reference_generator_count(input_nc, output_nc, ngf, n_blocks):
    """Counted from the reference's layer list: conv7, two stride-2 conv3, blocks of two conv3,
    two transposed conv3, conv7 (InstanceNorm without affine parameters adds none)."""
    down = _conv(input_nc, ngf, 7) + _conv(ngf, 2 * ngf, 3) + _conv(2 * ngf, 4 * ngf, 3)
    blocks = n_blocks * 2 * _conv(4 * ngf, 4 * ngf, 3)
    up = _conv(4 * ngf, 2 * ngf, 3) + _conv(2 * ngf, ngf, 3) + _conv(ngf, output_nc, 7)
    return down + blocks + up


def test_reference_configuration_parameter_counts():
    assert blocks_for(256) == 9 and blocks_for(128) == 6
    g256, g128 = ResnetGenerator(3, 3, 64, 9), ResnetGenerator(3, 3, 64, 6)
    d = NLayerDiscriminator(3, 64, 3)
    # the published counts of pytorch-CycleGAN-and-pix2pix (resnet_9blocks / resnet_6blocks / basic)
    assert count_parameters(g256) == 11_378_179 == reference_generator_count(3, 3, 64, 9)
    assert count_parameters(g128) == 7_837_699 == reference_generator_count(3, 3, 64, 6)
    assert count_parameters(d) == 2_764_737 == (_conv(3, 64, 4) + _conv(64, 128, 4) + _conv(128, 256, 4)
                                                 + _conv(256, 512, 4) + _conv(512, 1, 4))
    # the colorization model: grayscale A (1 channel) <-> RGB B
    module = CycleGANModule(size=128)
    assert count_parameters(module.generator_ab) == reference_generator_count(1, 3, 64, 6)
    assert count_parameters(module.generator_ba) == reference_generator_count(3, 1, 64, 6)
    assert count_parameters(module.discriminator_a) == 2_764_737 - 2 * 64 * 16


def test_shapes_norms_padding_and_init():
    g = ResnetGenerator(1, 3, 8, 2)
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    y = g(x)
    assert y.shape == (2, 3, 64, 64) and y.abs().max() <= 1
    assert NLayerDiscriminator(3, 8)(y).shape == (2, 1, 6, 6)  # 256 px -> 30 x 30, 64 px -> 6 x 6
    assert NLayerDiscriminator(3, 4)(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    kinds = {type(m).__name__ for m in g.modules()}
    assert {"ReflectionPad2d", "InstanceNorm2d", "Tanh", "ConvTranspose2d"} <= kinds and "BatchNorm2d" not in kinds
    assert all(not m.affine for m in g.modules() if isinstance(m, torch.nn.InstanceNorm2d))
    weights = torch.cat([m.weight.detach().flatten() for m in ResnetGenerator(3, 3, 64, 6).modules()
                         if isinstance(m, torch.nn.Conv2d)])
    assert abs(float(weights.std()) - 0.02) < 0.001 and abs(float(weights.mean())) < 0.001
    with pytest.raises(ValueError, match="multiples of 4"):
        g(torch.zeros(1, 1, 30, 30))
    with pytest.raises(ConfigError, match="ngf must be a positive integer"):
        ResnetGenerator(1, 3, 0)


def test_image_pool_fills_then_swaps_half_the_time():
    pool = ImagePool(4, seed=0)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: returned as given
    out = pool.query(torch.full((200, 1, 1, 1), 9.0))
    from_history = int((out != 9.0).sum())
    assert 0 < from_history <= 4 and len(pool.images) == 4
    assert torch.equal(ImagePool(0).query(first), first)
    state = pool.state_dict()
    again = ImagePool(4)
    again.load_state_dict(state)
    probe = torch.full((20, 1, 1, 1), 5.0)
    assert torch.equal(again.query(probe), pool.query(probe))


def test_linear_decay_is_the_reference_rule():
    rule = linear_decay(100, 100)
    # lambda(e) = 1 - max(0, e + epoch_count - n_epochs) / (n_epochs_decay + 1), epoch_count 1
    assert rule(0) == rule(99) == 1.0
    assert rule(100) == pytest.approx(1 - 1 / 101) and rule(199) == pytest.approx(1 - 100 / 101)


def test_ssim_and_hsv_match_skimage():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 24, 24, generator=g, dtype=torch.float64)
    y = (x + 0.3 * torch.rand(2, 1, 24, 24, generator=g, dtype=torch.float64)).clamp(0, 1)
    expected = [structural_similarity(x[i, 0].numpy(), y[i, 0].numpy(), gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=1.0) for i in range(2)]
    np.testing.assert_allclose(ssim(x, y).numpy(), expected, atol=1e-9)
    rgb = torch.rand(1, 3, 6, 6, generator=g, dtype=torch.float64)
    hue, sat, val = rgb_to_hsv(rgb)
    ref = rgb2hsv(rgb[0].permute(1, 2, 0).numpy())
    np.testing.assert_allclose(hue[0].numpy() / (2 * np.pi), ref[..., 0], atol=1e-9)
    np.testing.assert_allclose(sat[0].numpy(), ref[..., 1], atol=1e-9)
    np.testing.assert_allclose(val[0].numpy(), ref[..., 2], atol=1e-9)


def test_hsv_histograms_are_circular_and_correlations_rank_colours():
    def solid(r, g, b):
        return torch.tensor([r, g, b], dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 8, 8)

    red_low, red_high, green = solid(1, 0, 0.02), solid(1, 0.02, 0), solid(0, 1, 0)
    h = hsv_histogram(torch.cat([red_low, red_high, green]))
    assert torch.allclose(h.sum(1), torch.ones(3, dtype=torch.float64))
    corr = histogram_correlation(h[:1], h)
    assert corr[1] > 0.9 > corr[2]  # hue 359 deg is next to hue 1 deg, far from green
    grey = solid(0.5, 0.5, 0.5).clone().requires_grad_(True)
    hsv_histogram(grey).sum().backward()
    assert torch.isfinite(grey.grad).all()


def _terms_and_grads(weights):
    torch.manual_seed(0)
    module = CycleGANModule(size=32, width=4, n_blocks=1, loss_weights=weights)
    batch = module.example_batch(2)
    batch["a_gt"] = (batch["a"] > 0).float()
    loss, terms, _ = module.generator_losses(batch)
    return module, loss, terms


@pytest.mark.parametrize("name", ["gt", "colorvar", "hsv"])
def test_each_extra_loss_has_a_gradient_wrt_the_generators(name):
    only = {n: (1.0 if n == name else 0.0) for n in ("gt", "colorvar", "hsv")}
    module, _, terms = _terms_and_grads(only)
    assert terms[name].requires_grad and float(terms[name].detach()) > 0
    module.zero_grad()
    terms[name].backward()
    for generator in (module.generator_ab, module.generator_ba):
        norms = [p.grad.abs().sum() for p in generator.parameters() if p.grad is not None]
        assert norms and float(sum(norms)) > 0, (name, type(generator).__name__)
    others = [n for n in only if n != name]
    assert not any(terms[n].requires_grad for n in others)  # weight 0: measured, not trained


def test_extra_losses_fall_for_better_outputs():
    torch.manual_seed(0)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:20, 8:20] = 1
    right = torch.where(mask.bool(), -0.8, 0.8).expand(1, 3, 32, 32)  # dark nuclei where the mask is
    wrong = -right
    assert gt_loss(right, mask) < 0.1 < 0.9 < gt_loss(wrong, mask)
    assert float(dice_score(right, mask)) == 1.0 and float(dice_score(wrong, mask)) == 0.0
    reference = right[:, :1]
    assert colorvar_loss(right, reference) < 0.01 < 0.6 < colorvar_loss(wrong, reference)  # inverted: SSIM < 0
    pink = torch.tensor([0.9, 0.4, 0.8]).view(1, 3, 1, 1).expand(2, 3, 32, 32) * 2 - 1
    assert hsv_loss(pink + 0.01 * torch.randn(2, 3, 32, 32), pink) < hsv_loss(-pink, pink)


def test_loss_weight_names_are_checked():
    assert parse_loss_weights("gt=1, hsv=0") == {"gt": 1.0, "hsv": 0.0}
    with pytest.raises(ConfigError, match=r"unknown loss weight 'hvs' \(did you mean 'hsv'\?\)"):
        parse_loss_weights("hvs=3")
    with pytest.raises(ConfigError, match="must be NAME=WEIGHT"):
        parse_loss_weights("gt")
    with pytest.raises(ConfigError, match=">= 0"):
        parse_loss_weights("gt=-1")
