"""FastGAN model: shapes, parameter counts, SLE / decoders / noise through behaviour, DiffAugment, bad input."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from microforge.platform.errors import ConfigError
from microforge.trainers.fastgan import (
    FASTGAN_SIZES,
    RESOLUTIONS,
    Discriminator,
    Generator,
    build_discriminator,
    build_generator,
    count_parameters,
    crop_part,
    diff_augment,
    reconstruction_targets,
)
from microforge.trainers.fastgan.blocks import NoiseInjection, SEBlock
from microforge.trainers.predict import latents

torch.set_num_threads(1)


def blobs(n: int, size: int, channels: int = 1) -> torch.Tensor:
    """Gaussian blobs in [-1, 1], a different centre per image."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    centres = [(-0.4, 0.3), (0.5, -0.2), (0.1, 0.6), (-0.6, -0.5)]
    images = [torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.1) * 2 - 1 for cx, cy in centres[:n]]
    return torch.stack(images).unsqueeze(1).repeat(1, channels, 1, 1)


def set_noise_weights(module: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, NoiseInjection):
                m.weight.fill_(value)


# --- shapes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("im_size", [256, 512])
def test_generator_and_discriminator_shapes(im_size):
    torch.manual_seed(0)
    g, d = Generator(ngf=8, nz=64, nc=1, im_size=im_size), Discriminator(ndf=8, nc=1, im_size=im_size)
    z = torch.randn(2, 64)
    full, small = g(z, return_small=True)
    assert full.shape == (2, 1, im_size, im_size) and small.shape == (2, 1, 128, 128)
    for image in (full, small):
        assert image.min() >= -1 and image.max() <= 1
    assert g(z).shape == (2, 1, im_size, im_size)  # default: the full image only
    logits, recs = d([full, small], "real", part=2)
    assert logits.shape == (2, 50)
    assert [tuple(r.shape) for r in recs] == [(2, 1, 128, 128)] * 3
    assert all(r.min() >= -1 and r.max() <= 1 for r in recs)
    fake = d([full.detach(), small.detach()], "fake")
    assert isinstance(fake, torch.Tensor) and fake.shape == (2, 50)  # no reconstructions
    assert d(full.detach(), "fake").shape == (2, 50)  # one tensor: resized to both inputs


def test_tanh_bounds_every_output_even_with_large_weights():
    g = Generator(ngf=8, nz=32, nc=3, im_size=256)
    with torch.no_grad():
        g.to_big.parametrizations.weight.original.mul_(1e3)
    full, small = g(torch.randn(2, 32) * 10, return_small=True)
    assert full.shape == (2, 3, 256, 256) and full.abs().max() <= 1 and small.abs().max() <= 1


def test_generator_1024_shape():
    g = Generator(ngf=8, nz=16, nc=1, im_size=1024).eval()
    with torch.no_grad():
        full, small = g(torch.randn(1, 16), return_small=True)
    assert full.shape == (1, 1, 1024, 1024) and small.shape == (1, 1, 128, 128)


# --- parameter counts (REFERENCES.md: 1 channel, 256 px) ---------------------------------------

def test_parameter_counts_match_the_reference():
    assert abs(count_parameters(Generator(64, 256, 1, 256)) - 29.1e6) / 29.1e6 < 0.01
    assert abs(count_parameters(Discriminator(64, 1, 256)) - 11.5e6) / 11.5e6 < 0.01
    assert abs(count_parameters(Discriminator(8, 1, 256)) - 1.21e6) / 1.21e6 < 0.01
    # REFERENCES' "G 0.59 M" at ngf = 8 is the nz = 64 generator; with nz = 256 the 4x4 init
    # ConvTranspose alone has 256 * 256 * 16 = 1.05 M weights.
    assert abs(count_parameters(Generator(8, 64, 1, 256)) - 0.59e6) / 0.59e6 < 0.01
    assert count_parameters(Generator(8, 256, 1, 256)) == 1_373_906


def test_named_sizes_build_with_exact_counts():
    assert FASTGAN_SIZES == {"micro": 32, "small": 48, "standard": 64, "large": 96, "xlarge": 128}
    g = build_generator("micro", 256)
    assert g.config == {"ngf": 32, "nz": 256, "nc": 1, "im_size": 256}
    assert count_parameters(g) == 9_381_878
    assert count_parameters(build_discriminator("micro", 512)) == 4_062_016
    d = build_discriminator("micro", 512, channels=3)
    assert d.config == {"ndf": 32, "nc": 3, "im_size": 512} and count_parameters(d) == 4_064_512


def test_config_round_trips_through_json():
    g, d = Generator(ngf=8, nz=32, nc=3, im_size=512), Discriminator(ndf=8, nc=3, im_size=512)
    g2 = Generator(**json.loads(json.dumps(g.config)))
    d2 = Discriminator(**json.loads(json.dumps(d.config)))
    g2.load_state_dict(g.state_dict())
    d2.load_state_dict(d.state_dict())
    assert g2.latent_shape == (32,)


# --- skip-layer excitation --------------------------------------------------------------------

def test_generator_sle_pairs_at_512_and_each_modulates():
    torch.manual_seed(0)
    g = Generator(ngf=8, nz=32, nc=1, im_size=512).eval()
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(
        name, (args[0].shape[-1], args[1].shape[-1])))
        for name, m in g.named_modules() if isinstance(m, SEBlock)]
    z = torch.randn(2, 32)
    with torch.no_grad():
        before = g(z)
    for h in hooks:
        h.remove()
    assert seen == {"se_64": (4, 64), "se_128": (8, 128), "se_256": (16, 256), "se_512": (32, 512)}
    for name in seen:
        changed = copy.deepcopy(g)
        with torch.no_grad():  # the excitation becomes a constant sigmoid(0) = 0.5
            getattr(changed, name).main[3].parametrizations.weight.original.zero_()
            assert not torch.allclose(changed(z), before, atol=1e-6), name


def test_discriminator_sles_modulate():
    torch.manual_seed(0)
    d = Discriminator(ndf=8, nc=1, im_size=256).eval()
    x = blobs(2, 256)
    with torch.no_grad():
        before = d(x, "fake")
        for name in ("se_2_16", "se_4_32", "se_8_64"):
            changed = copy.deepcopy(d)
            getattr(changed, name).main[3].parametrizations.weight.original.zero_()
            assert not torch.allclose(changed(x, "fake"), before, atol=1e-6), name


# --- noise injection ---------------------------------------------------------------------------

def test_noise_injection_is_learned_and_random_in_training():
    g = Generator(ngf=8, nz=32, nc=1, im_size=256)
    noises = [m for m in g.modules() if isinstance(m, NoiseInjection)]
    assert len(noises) == 6  # two in each comp block: 8, 32, 128 px
    assert all(isinstance(m.weight, torch.nn.Parameter) and m.weight.item() == 0 for m in noises)
    z = torch.randn(2, 32)
    with torch.no_grad():
        # Weight 0: a no-op at init (the reference); what differs is spectral norm's power step.
        assert torch.allclose(g(z), g(z), atol=1e-3)
        set_noise_weights(g, 0.5)
        assert (g(z) - g(z)).abs().max() > 1e-2


def test_eval_images_are_a_function_of_the_latent():
    g = Generator(ngf=8, nz=32, nc=1, im_size=256)
    set_noise_weights(g, 0.5)
    g.eval()
    z = latents(g, [3, 4, 5])
    with torch.no_grad():
        batch = g(z)
        assert torch.equal(batch, g(z))
        assert torch.allclose(g(z[1:2]), batch[1:2], atol=1e-5)  # independent of the batch
        g.eval_noise = "random"
        assert not torch.allclose(g(z), batch, atol=1e-4)
        g.eval_noise = "none"
        assert torch.equal(g(z), g(z))


def test_generator_deep_copies_after_training_forward():
    g = Generator(ngf=8, nz=32, nc=1, im_size=256)
    g(torch.randn(2, 32)).mean().backward()
    ema = copy.deepcopy(g)
    assert set(ema.state_dict()) == set(g.state_dict())


# --- decoders ----------------------------------------------------------------------------------

def test_decoder_reconstruction_loss_falls_and_part_matters():
    torch.manual_seed(0)
    d = Discriminator(ndf=8, nc=1, im_size=256)
    real = blobs(1, 256)
    opt = torch.optim.Adam(d.parameters(), lr=5e-4, betas=(0.5, 0.999))
    losses = []
    for step in range(12):
        part = step % 4
        _, recs = d(real, "real", part=part)
        loss = sum(F.l1_loss(r, t) for r, t in zip(recs, reconstruction_targets(real, part)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 3, losses
    d.eval()
    with torch.no_grad():
        parts = [d(real, "real", part=p)[1][2] for p in range(4)]
    assert not torch.allclose(parts[0], parts[3])
    with pytest.raises(ValueError):
        d(real, "real")


def test_crop_part_and_targets_follow_the_reference():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    quarters = [crop_part(image, p) for p in range(4)]
    top = torch.cat(quarters[:2], dim=3)
    bottom = torch.cat(quarters[2:], dim=3)
    assert torch.equal(torch.cat([top, bottom], dim=2), image)
    real = blobs(2, 256)
    big, small, part = reconstruction_targets(real, 3)
    assert torch.equal(big, F.interpolate(real, size=128)) and torch.equal(small, big)
    assert torch.equal(part, F.interpolate(real[:, :, 128:, 128:], size=128))
    with pytest.raises(ValueError):
        crop_part(image, 4)


# --- DiffAugment -------------------------------------------------------------------------------

def reference_translation(x, ratio=0.125):
    """mit-han-lab's rand_translation (zero padding), for comparison."""
    shift_x, shift_y = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    tx = torch.randint(-shift_x, shift_x + 1, size=[x.size(0), 1, 1])
    ty = torch.randint(-shift_y, shift_y + 1, size=[x.size(0), 1, 1])
    gb, gx, gy = torch.meshgrid(torch.arange(x.size(0)), torch.arange(x.size(2)), torch.arange(x.size(3)),
                                indexing="ij")
    gx = torch.clamp(gx + tx + 1, 0, x.size(2) + 1)
    gy = torch.clamp(gy + ty + 1, 0, x.size(3) + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def test_translation_zeros_matches_the_reference_and_reflect_has_no_zero_border():
    x = torch.rand(8, 3, 32, 32) + 0.5  # strictly positive
    torch.manual_seed(1)
    ours = diff_augment(x, "translation", pad_mode="zeros")
    torch.manual_seed(1)
    assert torch.equal(ours, reference_translation(x))
    assert (ours == 0).any()  # some sample shifted: zero rows or columns
    torch.manual_seed(1)
    reflected = diff_augment(x, "translation")
    assert (reflected > 0).all() and not torch.equal(reflected, x)
    # Reflection mirrors the image: every output value is an input value of the same sample.
    for i in range(8):
        assert set(reflected[i, 0].flatten().tolist()) <= set(x[i, 0].flatten().tolist())


def test_cutout_zeroes_a_half_size_square():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 32, 32) * 2 - 1 + 3  # no zeros
    out = diff_augment(x, "cutout")
    sizes = []
    for i in range(16):
        zero = out[i, 0] == 0
        rows, cols = zero.any(dim=1).nonzero(), zero.any(dim=0).nonzero()
        assert zero.sum() == len(rows) * len(cols)  # one rectangle
        assert len(rows) <= 16 and len(cols) <= 16
        sizes.append(int(zero.sum()))
    assert 16 * 16 in sizes  # a cutout fully inside is exactly half the side
    keep = out != 0
    assert torch.equal(out[keep], x[keep])


def test_color_saturation_is_a_no_op_on_one_channel_and_augmentation_is_seeded():
    from microforge.trainers.fastgan.diffaugment import rand_saturation

    x = torch.rand(4, 1, 16, 16)
    assert torch.equal(rand_saturation(x), x)
    x3 = torch.rand(4, 3, 16, 16)
    assert not torch.allclose(rand_saturation(x3), x3)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(diff_augment(x3, "color,translation,cutout"))
    assert torch.equal(runs[0], runs[1])
    torch.manual_seed(8)
    assert not torch.equal(diff_augment(x3, "color,translation,cutout"), runs[0])
    assert torch.equal(diff_augment(x3, ""), x3)


def test_diff_augment_is_differentiable():
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    diff_augment(x, "color,translation,cutout").sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# --- bad input ---------------------------------------------------------------------------------

def test_bad_size_resolution_channels_policy_are_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'small'"):
        build_generator("smal", 256)
    with pytest.raises(ConfigError, match="did you mean 'xlarge'"):
        build_discriminator("xlarg", 256)
    for resolution in (128, 384, 2048):
        with pytest.raises(ConfigError, match="256, 512, 1024"):
            build_generator("micro", resolution)
    with pytest.raises(ConfigError, match="did you mean '512'"):
        build_discriminator("micro", 502)
    with pytest.raises(ConfigError, match="1 or 3 channels"):
        build_generator("micro", 256, channels=2)
    with pytest.raises(ConfigError):
        Generator(ngf=8, im_size=300)
    with pytest.raises(ConfigError, match="did you mean 'translation'"):
        diff_augment(torch.zeros(1, 1, 8, 8), "translaton")
    with pytest.raises(ConfigError, match="did you mean 'reflect'"):
        diff_augment(torch.zeros(1, 1, 8, 8), "translation", pad_mode="reflec")
    assert RESOLUTIONS == (256, 512, 1024)
    for message in ("smal", "xlarg"):
        with pytest.raises(ConfigError) as info:
            build_generator(message, 256)
        assert "\n" not in str(info.value)
