"""FastGAN training recipes (``--preset``), the optional loss terms they set, and ``--describe``."""

import pytest
import torch

from microforge.platform.cli import main
from microforge.platform.errors import ConfigError
from microforge.trainers import get_workload
from microforge.trainers.describe import parameter_counts
from microforge.trainers.fastgan import build_discriminator, build_generator, count_parameters
from microforge.trainers.fastgan.lightning import FastGANModule, feature_matching, gradient_penalty
from microforge.trainers.workload import RECIPE_JOB_FIELDS

FASTGAN = get_workload("fastgan")
# A different valid value for every key a recipe may set: changing it must change the job.
OTHER = {"size": "xlarge", "batch_size": 3, "fm_weight": 7.5, "lr_g": 3e-3, "lr_d": 5e-3, "penalty": "r1",
         "penalty_weight": 2.5, "ema_decay": 0.5}


def _job(**options):
    return FASTGAN.job(options, epochs=1, runs_dir=".")


def test_every_recipe_and_options_literal_agree():
    names = FASTGAN.recipe_names()
    assert names == ["baseline", "fast", "high_quality", "improved"]
    literal = FASTGAN.options_model().model_fields["preset"].annotation
    assert set(names) == {a for arg in literal.__args__ for a in getattr(arg, "__args__", ())}


@pytest.mark.parametrize("name", ["baseline", "improved", "fast", "high_quality"])
def test_every_key_of_every_recipe_reaches_the_job(name):
    recipe = FASTGAN.recipe(name)
    job = _job(preset=name)
    for key, value in recipe.items():
        if key in RECIPE_JOB_FIELDS:
            assert getattr(job, key) == value, key
        else:
            assert job.options[key] == value and job.module_config[key] == value, key
        # The key is not a no-op: another value (given explicitly, so it wins) changes the job.
        other = _job(preset=name, **({} if key in RECIPE_JOB_FIELDS else {key: OTHER[key]}))
        if key in RECIPE_JOB_FIELDS:
            other = FASTGAN.job({"preset": name}, epochs=1, runs_dir=".", **{key: OTHER[key]})
        assert other.record() != job.record(), key
    module = job.build_module()
    assert module.hparams.size == recipe["size"]


def test_explicit_options_win_over_the_recipe_and_unknown_recipes_fail(capsys):
    job = _job(preset="improved", lr_g=5e-5, size="micro")
    assert job.options["lr_g"] == 5e-5 and job.options["size"] == "micro"
    assert job.options["lr_d"] == 4e-4 and job.batch_size == 16
    assert FASTGAN.job({"preset": "fast"}, epochs=1, runs_dir=".", batch_size=4).batch_size == 4
    with pytest.raises(ConfigError, match="did you mean 'improved'"):
        FASTGAN.recipe("improve")
    with pytest.raises(SystemExit):
        main(["train", "fastgan", "--preset", "improve"])
    assert "invalid choice" in capsys.readouterr().err


def test_feature_matching_and_penalties_have_gradients():
    module = FastGANModule(width=8, fm_weight=1.0, penalty_weight=1.0)
    g, d = module.generator, module.discriminator
    real = torch.rand(2, 1, 256, 256) * 2 - 1
    fake = g(torch.randn(2, 256), return_small=True)
    _, _, features_real = d(real, "real", 0, features=True)
    _, features_fake = d(fake, "fake", features=True)
    assert len(features_real) == len(features_fake) == 6
    loss = feature_matching(features_fake, features_real)
    grads = torch.autograd.grad(loss, list(g.parameters()), allow_unused=True)
    assert loss > 0 and any(x is not None and x.abs().sum() > 0 for x in grads)
    assert feature_matching(features_real, features_real).item() == 0.0

    x = real.clone().requires_grad_(True)
    logits = d(x, "fake")
    for kind in ("r1", "wgan-gp"):
        penalty = gradient_penalty(d, kind, x, logits, fake[0])
        grads = torch.autograd.grad(penalty, list(d.parameters()), retain_graph=True, allow_unused=True)
        assert penalty > 0 and any(x is not None and x.abs().sum() > 0 for x in grads), kind
    with pytest.raises(ValueError, match="penalty"):
        FastGANModule(width=8, penalty="wgan")


def test_describe_counts_every_component(capsys):
    counts = parameter_counts(FASTGAN, {"size": "micro", "resolution": 512})
    assert counts["generator"] == counts["generator_ema"] == count_parameters(build_generator("micro", 512))
    assert counts["discriminator"] == count_parameters(build_discriminator("micro", 512))
    assert main(["train", "delineation", "--describe", "--preset", "small"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("delineation: parameters per component")
    assert [line.split()[0] for line in out[2:]] == ["tiny", "*", "standard"] and out[3].split()[1] == "small"
