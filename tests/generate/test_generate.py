"""``microforge generate``: a generator artifact -> a dataset directory with each image's seed,
byte-identical with 1 and 2 workers, resumable, bad input refused before anything is written."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from microforge.datasets.manifest import read_manifest
from microforge.generate import choose_component, generate_dataset, seed_of
from microforge.platform.artifact import ComponentWeights, save_artifact
from microforge.platform.cli import main
from microforge.platform.errors import ConfigError, DatasetError
from microforge.trainers import load_artifact, register_workload
from microforge.trainers.predict import check_truncation, generate_images, latents
from tests.serve.tiny_generator import save_tiny_generator


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("artifact") / "gen"
    save_tiny_generator(path)
    return path


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors (e.g. --bits 12) exit instead of returning
        return exc.code


def _read(root, rel):
    return cv2.imread(str(root / rel), cv2.IMREAD_UNCHANGED)


def test_seed_of_is_pure_distinct_and_torch_sized():
    seeds = [seed_of(7, i) for i in range(1000)]
    assert seeds == [seed_of(7, i) for i in range(1000)]
    assert len(set(seeds)) == 1000 and all(0 <= s < 2**32 for s in seeds)
    assert not set(seeds) & {seed_of(8, i) for i in range(1000)}


def test_choose_component():
    assert choose_component(["generator", "generator_ema", "discriminator"], None) == "generator_ema"
    assert choose_component(["discriminator", "generator"], None) == "generator"
    assert choose_component(["decoder"], None) == "decoder"
    assert choose_component(["generator", "discriminator"], "discriminator") == "discriminator"
    with pytest.raises(ConfigError, match="--component"):
        choose_component(["a", "b"], None)


def test_truncation_bounds_the_latent_and_keeps_the_values_inside(artifact):
    generator = load_artifact(artifact)["generator"]
    seeds = [0, 1, 2**32 - 1]
    plain = latents(generator, seeds)
    for bound in (0.05, 0.5, 2.0):
        z = latents(generator, seeds, truncation=bound)
        assert z.shape == plain.shape and float(z.abs().max()) <= bound
        inside = plain.abs() <= bound
        assert torch.equal(z[inside], plain[inside])  # only the values outside are redrawn
        assert torch.equal(z, latents(generator, seeds, truncation=bound))  # a function of the seed
        assert torch.equal(z[1], latents(generator, [1], truncation=bound)[0])  # whatever the batch
    assert torch.equal(latents(generator, seeds, truncation=0), plain)  # 0: none
    assert float(latents(generator, range(200), truncation=0.5).std()) < 0.35  # N(0,1) on [-.5, .5]: 0.28
    for bad in (-1, 0.01, 4.5, float("nan"), "1", True):
        with pytest.raises(ConfigError, match="truncation"):
            check_truncation(bad)
    assert check_truncation(None) is None and check_truncation(0) is None and check_truncation(4) == 4.0


def test_one_and_two_workers_write_identical_bytes_from_the_recorded_seeds(ray_local, artifact, tmp_path):
    one = generate_dataset(artifact, 10, tmp_path / "one", seed=3, workers=1, batch_size=4, truncation=0.7)
    two = generate_dataset(artifact, 10, tmp_path / "two", seed=3, workers=2, batch_size=4, truncation=0.7)
    assert (one.rendered, two.rendered, one.reused) == (10, 10, 0)
    assert _files(tmp_path / "one") == _files(tmp_path / "two")

    rows = read_manifest(tmp_path / "one").to_pylist()
    assert [r["index"] for r in rows] == list(range(10))
    assert [r["seed"] for r in rows] == [seed_of(3, i) for i in range(10)]
    loaded = load_artifact(artifact)
    expected = generate_images(loaded["generator"], loaded.transform, [r["seed"] for r in rows], truncation=0.7)
    untruncated = generate_images(loaded["generator"], loaded.transform, [r["seed"] for r in rows])
    for row, image, plain in zip(rows, expected, untruncated):
        stored = _read(tmp_path / "one", row["image"])
        assert stored.dtype == np.uint8 and np.array_equal(stored, image) and not np.array_equal(stored, plain)

    info = json.loads((tmp_path / "one" / "dataset.json").read_text())
    assert info["status"] == "complete" and info["kind"] == "generated" and info["seed"] == 3
    assert info["artifact"]["workload"] == "tinygan" and info["artifact"]["component"] == "generator"
    assert info["artifact"]["provenance"] == {"test": True}
    assert info["config"]["bits"] == 8 and info["config"]["batch_size"] == 4
    assert info["config"]["truncation"] == 0.7 and "|z| > 0.7" in info["seed_rule"]

    # A resumed run with another truncation (or none) is refused before anything changes.
    before = _files(tmp_path / "one")
    for other in (None, 0.5):
        with pytest.raises(DatasetError, match="truncation"):
            generate_dataset(artifact, 10, tmp_path / "one", seed=3, workers=1, batch_size=4, truncation=other)
    assert _files(tmp_path / "one") == before


def test_sixteen_bit_images_and_resume_of_a_deleted_image(ray_local, artifact, tmp_path):
    out = tmp_path / "gen16"
    generate_dataset(artifact, 5, out, seed=1, workers=2, bits=16, batch_size=2)
    before = _files(out)
    rows = read_manifest(out).to_pylist()
    loaded = load_artifact(artifact)
    expected = generate_images(loaded["generator"], loaded.transform, [r["seed"] for r in rows], dtype=np.uint16)
    for row, image in zip(rows, expected):
        stored = _read(out, row["image"])
        assert stored.dtype == np.uint16 and np.array_equal(stored, image)

    (out / rows[2]["image"]).unlink()
    summary = generate_dataset(artifact, 5, out, seed=1, workers=1, bits=16, batch_size=2)
    assert (summary.rendered, summary.reused) == (1, 4)
    assert _files(out) == before


def test_cli_forms_and_workload_check(ray_local, artifact, tmp_path, capsys):
    assert main(["generate", "artifact", "--model", str(artifact), "--n", "2", "--out", str(tmp_path / "a"),
                 "--workers", "1", "--truncation", "1.5"]) == 0
    assert "2 generated" in capsys.readouterr().out
    assert json.loads((tmp_path / "a" / "dataset.json").read_text())["config"]["truncation"] == 1.5

    from tests.workloads.toygan import TOYGAN, ToyGenerator

    register_workload(TOYGAN)
    torch.manual_seed(0)
    toy = ToyGenerator(latent_dim=4, size=32, width=8)
    toy_dir = tmp_path / "toy"
    save_artifact(toy_dir, {"generator": ComponentWeights("tests.workloads.toygan:ToyGenerator", toy.config,
                                                          toy.state_dict())},
                  workload="toygan", task="generate", transform={"name": "signed_unit", "params": {}},
                  preprocessing={}, metrics={"g_loss": 1.0}, provenance={})
    assert main(["generate", "toygan", "--model", str(toy_dir), "--n", "3", "--out", str(tmp_path / "t"),
                 "--workers", "1", "--batch-size", "2"]) == 0
    assert _read(tmp_path / "t", "images/0000002.png").shape == (32, 32)

    out = tmp_path / "refused"
    assert main(["generate", "toygan", "--model", str(artifact), "--n", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("microforge: error:") and "not toygan" in err and err.count("\n") == 1
    assert not out.exists()


def test_bad_input_is_one_line_exit_2_and_writes_nothing(artifact, tmp_path, capsys):
    segmenter = tmp_path / "seg"
    save_tiny_generator(segmenter)
    card = json.loads((segmenter / "model.json").read_text())
    (segmenter / "model.json").write_text(json.dumps({**card, "task": "segment", "workload": "unet"}))
    out = tmp_path / "out"
    cases = [
        [str(artifact), "--n", "0"],
        [str(artifact), "--n", "-3"],
        [str(artifact), "--n", "2", "--bits", "12"],
        [str(artifact), "--n", "2", "--component", "discriminator"],
        [str(artifact), "--n", "2", "--batch-size", "0"],
        [str(artifact), "--n", "2", "--truncation", "9"],
        [str(artifact), "--n", "2", "--truncation", "-1"],
        [str(segmenter), "--n", "2"],
        [str(tmp_path / "missing"), "--n", "2"],
        ["fastgna", "--model", str(artifact), "--n", "2"],
    ]
    for case in cases:
        assert _exit_code(["generate", *case, "--out", str(out)]) == 2, case
        err = capsys.readouterr().err
        assert err.startswith("microforge: error:") and err.count("\n") == 1, (case, err)
        assert not out.exists(), case
    with pytest.raises(ConfigError, match="not a generator"):
        generate_dataset(segmenter, 2, out)
    with pytest.raises(ConfigError, match="--bits"):
        generate_dataset(artifact, 2, out, bits=12)
    assert not out.exists()
