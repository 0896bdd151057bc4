"""``microforge generate diffusion``: a DDPM artifact -> a dataset of phase-labelled images with
their seeds, byte-identical with 1 and 2 workers, resumable; bad input refused before any write."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
import pytest
import torch

from microforge.datasets.manifest import read_manifest
from microforge.generate import seed_of
from microforge.generate.diffusion import generate_diffusion, parse_phases
from microforge.platform.cli import main
from microforge.platform.errors import ConfigError
from microforge.trainers import load_artifact
from microforge.trainers.diffusion.lightning import DDPMModule
from microforge.trainers.diffusion.model import make_scheduler, guided_sample
from microforge.trainers.diffusion.workload import DDPM
from microforge.trainers.export import export_artifact
from tests.serve.tiny_generator import save_tiny_generator

TINY = {"resolution": 32, "width": 16, "levels": 2, "layers_per_block": 1, "classes": ["t2"],
        "prompt_template": "phase {phase}"}


@pytest.fixture(scope="module")
def ddpm(tmp_path_factory):
    """An untrained tiny DDPM artifact (sampling does not need a trained one)."""
    torch.manual_seed(0)
    return export_artifact(DDPMModule(**TINY), tmp_path_factory.mktemp("ddpm") / "model", workload=DDPM)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_guided_sample_is_a_function_of_the_seeds(ddpm):
    loaded = load_artifact(ddpm)
    unet, schedule = loaded["unet_ema"], loaded.preprocessing["scheduler"]
    a = guided_sample(unet, make_scheduler("ddpm", schedule), [3, 4], [7, 8], steps=3, guidance=2.0)
    b = guided_sample(unet, make_scheduler("ddpm", schedule), [3, 4], [7, 8], steps=3, guidance=2.0)
    c = guided_sample(unet, make_scheduler("ddpm", schedule), [3, 4], [7, 9], steps=3, guidance=2.0)
    assert a.shape == (2, 1, 32, 32) and torch.equal(a, b)
    assert torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])  # image i depends on seeds[i] only
    assert parse_phases("all")[3] == "t2" and parse_phases("t2, t4") == ["t2", "t4"]
    with pytest.raises(ConfigError, match="did you mean 't2'"):
        parse_phases("t22")


def test_one_and_two_workers_write_identical_bytes_and_resume(ray_local, ddpm, tmp_path):
    args = dict(phase="t2,t4", steps=2, guidance=3.0, scheduler="ddpm", seed=5, batch_size=2)
    one = generate_diffusion(ddpm, 5, tmp_path / "one", workers=1, **args)
    two = generate_diffusion(ddpm, 5, tmp_path / "two", workers=2, **args)
    assert one.n == two.n == 5 and two.rendered == 5
    a, b = _files(tmp_path / "one"), _files(tmp_path / "two")
    meta_a, meta_b = (json.loads(files.pop("metadata.json")) for files in (a, b))
    assert a == b  # images, manifest, dataset.json, commit records
    assert meta_a.pop("datetime") and meta_b.pop("datetime") and meta_a == meta_b
    rows = read_manifest(tmp_path / "one").to_pylist()
    assert [r["phase"] for r in rows] == ["t2", "t4", "t2", "t4", "t2"]
    assert [r["phase_index"] for r in rows[:2]] == [3, 5]
    assert [r["seed"] for r in rows] == [seed_of(5, i) for i in range(5)] == [s["seed"] for s in meta_a["seeds"]]
    assert meta_a["scheduler"] == "ddpm" and meta_a["steps"] == 2 and meta_a["per_phase"] == {"t2": 3, "t4": 2}
    image = np.asarray(Image.open(tmp_path / "one" / rows[0]["image"]))
    assert image.shape == (32, 32) and image.dtype == np.uint8

    # Resume: one image lost -> its chunk is sampled again whole, and only it is rewritten, same bytes.
    (tmp_path / "one" / rows[3]["image"]).unlink()
    again = generate_diffusion(ddpm, 5, tmp_path / "one", workers=1, **args)
    assert (again.rendered, again.reused) == (1, 4)
    assert (tmp_path / "one" / rows[3]["image"]).read_bytes() == b[rows[3]["image"]]


@pytest.mark.parametrize("argv, message", [
    (["--phase", "t22"], "unknown phase 't22'"),
    (["--n", "0"], "--n must be a positive number"),
    (["--scheduler", "euler"], "--scheduler must be one of"),
    (["--steps", "0"], "--steps must be an integer"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(ddpm, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    base = {"--n": "2", "--phase": "t2"}
    base.update(dict(zip(argv[::2], argv[1::2])))
    code = main(["generate", "diffusion", "--model", str(ddpm), "--out", str(out),
                 *[x for kv in base.items() for x in kv]])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_a_model_that_is_not_a_ddpm_is_refused(ddpm, tmp_path, capsys):
    gan = tmp_path / "gan"
    save_tiny_generator(gan)
    out = tmp_path / "out"
    assert main(["generate", "diffusion", "--model", str(gan), "--n", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a DDPM" in err and len(err.splitlines()) == 1 and not out.exists()
    # ... and the GAN path refuses diffusion options rather than ignoring them.
    assert main(["generate", str(gan), "--n", "2", "--phase", "t2", "--out", str(out)]) == 2
    assert "--phase: diffusion options" in capsys.readouterr().err and not out.exists()
