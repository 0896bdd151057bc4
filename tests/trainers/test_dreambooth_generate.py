"""``microforge generate diffusion`` from a DreamBooth artifact: the sampler the artifact declares
(the pipeline's text encoder, UNet and VAE, prompted with the shared template), classifier-free
guidance, a seed per image, byte-identical with 1 and 2 workers; phases it was not tuned on
refused; DDPM artifacts written before samplers were declared still sample."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from PIL import Image
import pytest
import torch

from microforge.datasets.embryo.layout import PROMPT_TEMPLATE, phase_prompt
from microforge.datasets.manifest import read_manifest
from microforge.generate import seed_of
from microforge.generate.diffusion import artifact_phases, generate_diffusion
from microforge.platform.artifact import read_card
from microforge.platform.cli import main
from microforge.trainers.diffusion.dreambooth import DreamBoothModule
from microforge.trainers.diffusion.dreambooth_workload import DREAMBOOTH
from microforge.trainers.diffusion.model import make_scheduler
from microforge.trainers.diffusion.pipeline import class_prompt_of, load_pipeline_parts
from microforge.trainers.diffusion.sampling import ClassLabelSampler, PipelineSampler, prompt_sample, sampler_for
from microforge.trainers.export import export_artifact
from tests.trainers.tiny_sd import save_tiny_pipeline


@pytest.fixture(scope="module")
def dreambooth(tmp_path_factory):
    """An untrained DreamBooth artifact of a tiny pipeline (sampling does not need a trained one)."""
    root = tmp_path_factory.mktemp("dreambooth-generate")
    pipeline = save_tiny_pipeline(root / "pipeline")
    module = DreamBoothModule(pretrained=str(pipeline), phase="t2", instance_prompt=phase_prompt("t2"),
                              class_prompt=class_prompt_of(PROMPT_TEMPLATE), prompt_template=PROMPT_TEMPLATE,
                              resolution=32)
    return export_artifact(module, root / "model", workload=DREAMBOOTH)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_prompt_sample_is_a_function_of_the_seeds_and_prompts(dreambooth):
    parts = load_pipeline_parts(dreambooth / "diffusers")
    prompts = [phase_prompt("t2"), phase_prompt("t2")]

    def draw(seeds, prompts=prompts):
        return prompt_sample(parts, make_scheduler("dpm", parts.scheduler_config), prompts, seeds, side=32, steps=3,
                             guidance=4.0)

    a, b, c = draw([7, 8]), draw([7, 8]), draw([7, 9])
    assert a.shape == (2, 1, 32, 32) and torch.equal(a, b) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])  # image i depends on seeds[i] only
    assert not torch.equal(draw([7, 8], [phase_prompt("t2"), phase_prompt("t4")])[1], a[1])  # and on its prompt
    card = read_card(dreambooth)
    assert sampler_for(card, dreambooth) == (PipelineSampler, None)
    assert artifact_phases(dreambooth) == ["t2"]
    # A DDPM card from before samplers were declared is a class-label one; a DreamBooth card is not.
    legacy = dataclasses.replace(card, preprocessing={"null_class": 16},
                                 components={"unet_ema": card.components["unet"]})
    assert sampler_for(legacy, dreambooth) == (ClassLabelSampler, None)
    assert sampler_for(dataclasses.replace(card, preprocessing={}), dreambooth)[1] is not None


# Before any Ray job of this file: nothing of theirs can reach the captured stderr.
def test_a_phase_it_was_not_tuned_on_is_refused(dreambooth, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "diffusion", "--model", str(dreambooth), "--phase", "t2,t4", "--n", "2",
                 "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "generates the phases t2, not t4" in err and len(err.splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.slow  # the same generation job as the DDPM's identity test (tests/generate), another sampler
def test_one_and_two_workers_write_identical_bytes(ray_local, dreambooth, tmp_path):
    args = dict(phase="all", steps=2, guidance=3.0, scheduler="dpm", seed=5, batch_size=2)
    one = generate_diffusion(dreambooth, 3, tmp_path / "one", workers=1, **args)
    two = generate_diffusion(dreambooth, 3, tmp_path / "two", workers=2, **args)
    assert one.n == two.n == 3 and two.rendered == 3
    a, b = _files(tmp_path / "one"), _files(tmp_path / "two")
    meta_a, meta_b = (json.loads(files.pop("metadata.json")) for files in (a, b))
    assert a == b  # images, manifest, dataset.json, commit records
    assert meta_a.pop("datetime") and meta_b.pop("datetime") and meta_a == meta_b
    # The prompt is the training caption's template; every image has its own seed.
    assert meta_a["phases"] == ["t2"] and meta_a["prompts"] == {"t2": phase_prompt("t2")}
    rows = read_manifest(tmp_path / "one").to_pylist()
    assert [r["phase"] for r in rows] == ["t2"] * 3
    assert [r["seed"] for r in rows] == [seed_of(5, i) for i in range(3)] == [s["seed"] for s in meta_a["seeds"]]
    images = [np.asarray(Image.open(tmp_path / "one" / r["image"])) for r in rows]
    assert images[0].shape == (32, 32) and images[0].dtype == np.uint8
    assert not np.array_equal(images[0], images[1])
