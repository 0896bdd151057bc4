"""``microforge eval diffusion``: a phase classifier trained on rendered embryo frames separates the
phases, and the metric separates good generated images (unseen real frames of the right phase)
from bad ones (the same frames with the wrong phases, noise); the CLI writes the report and
refuses bad input with one line, exit 2 and nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from microforge.datasets.embryo.archives import phases_csv
from microforge.datasets.embryo.config import load_preset
from microforge.datasets.embryo.image_folder import median_frame, write_image_folder
from microforge.datasets.embryo.layout import ANNOTATIONS, frame_name, image_folder, phases_file
from microforge.datasets.embryo.render import encode_frame, render_embryo
from microforge.datasets.embryo.scene import plan_video
from microforge.datasets.manifest import read_manifest
from microforge.evaluate.diffusion import image_set_metrics, score_phases
from microforge.evaluate.phase_classifier import PhaseImages, holdout_mask, load_phase_images, train_phase_classifier
from microforge.platform.cli import main

CONFIG = load_preset("tiny").model_copy(update={"size": 64})
FRAMES, SEED = 40, 0
PHASES = ("t2", "t4", "t8", "tB")  # 2 and 4 cells, compaction's 8, a blastocyst: what a user checks first
TRAIN_VIDEOS, OTHER_VIDEOS = 16, 8
SIDE, STEPS = 32, 200


def _render_extracted(root, videos):
    """An extracted dataset as ``data embryo extract`` lays it out, holding only what the image
    folder copies: the phases CSVs and the F0 median frame of each phase of :data:`PHASES` (the
    same bytes as the archived frames, see test_embryo_data)."""
    (root / ANNOTATIONS).mkdir(parents=True)
    for video in range(videos):
        plan = plan_video(CONFIG, SEED, video, FRAMES)
        (root / ANNOTATIONS / phases_file(plan.name)).write_text(phases_csv(plan))
        folder = root / image_folder("F0") / plan.name
        folder.mkdir(parents=True)
        for phase, first, last in plan.phases:
            if phase in PHASES:
                frame = median_frame(range(first, last + 1), first, last)
                image = render_embryo(CONFIG, SEED, video, frame, frames=FRAMES, focal=("F0",)).planes["F0"]
                (folder / frame_name(plan.name, frame)).write_bytes(encode_frame(CONFIG, image))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Image folders ``train`` (16 videos) and ``other`` (8 other videos: an ideal generator's output)."""
    root = tmp_path_factory.mktemp("embryo-eval")
    _render_extracted(root / "extracted", TRAIN_VIDEOS + OTHER_VIDEOS)
    names = [plan_video(CONFIG, SEED, v, FRAMES).name for v in range(TRAIN_VIDEOS + OTHER_VIDEOS)]
    (root / "split.json").write_text(json.dumps({"train": names[:TRAIN_VIDEOS], "val": names[TRAIN_VIDEOS:],
                                                 "test": []}))
    for name, folder in (("train", "train"), ("val", "other")):
        write_image_folder(root / "extracted", root / "split.json", name, list(PHASES), root / folder)
    return root


def _images(folder) -> PhaseImages:
    rows = read_manifest(folder).to_pylist()
    return load_phase_images([folder / r["image"] for r in rows], [r["phase"] for r in rows], SIDE,
                             [r["video"] for r in rows])


@pytest.fixture(scope="module")
def trained(folders):
    real = _images(folders / "train")
    held = holdout_mask(real.videos, 0.25, SEED)
    train, held_out = real.subset(~held), real.subset(held)
    return train_phase_classifier(train, steps=STEPS, seed=SEED), train, held_out, _images(folders / "other")


def _accuracy(classifier, images: PhaseImages) -> float:
    predicted, _ = classifier.predict(images.images)
    return float(np.mean([p == t for p, t in zip(predicted, images.phases)]))


def test_the_classifier_separates_the_phases_of_rendered_frames(trained):
    classifier, train, held_out, other = trained
    assert classifier.classes == PHASES and len(set(held_out.videos) & set(train.videos)) == 0
    assert len(set(held_out.videos)) == 4  # a quarter of the 16 videos, all their frames
    # Chance is 0.25; frames of videos it never saw are recognised.
    assert _accuracy(classifier, held_out) >= 0.75
    assert _accuracy(classifier, other) >= 0.75
    _, features = classifier.predict(other.images)
    assert features.shape == (len(other.phases), 64)  # a 2-D N x D feature matrix, not 1-D


def test_the_classifier_is_a_function_of_its_seed(trained):
    _, train, _, other = trained
    a, b, c = (train_phase_classifier(train, steps=5, seed=s) for s in (3, 3, 4))
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert not all(torch.equal(state_a[k], c.model.state_dict()[k]) for k in state_a)
    assert np.array_equal(a.predict(other.images)[1], b.predict(other.images)[1])


def _relabelled(images: PhaseImages, mapping: dict[str, str]) -> PhaseImages:
    return PhaseImages(images.images, tuple(mapping[p] for p in images.phases), images.paths)


def test_the_metric_separates_good_from_bad_generated_images(trained):
    classifier, train, held_out, other = trained
    good = score_phases(classifier, train, held_out, other)
    # The same frames claimed to be of the next phase: every image looks real, none like its label.
    wrong = score_phases(classifier, train, held_out, _relabelled(other, dict(zip(PHASES, PHASES[1:] + PHASES[:1]))))
    rng = np.random.default_rng(0)
    noise = PhaseImages(rng.random(other.images.shape, dtype=np.float32), other.phases, other.paths)
    bad = score_phases(classifier, train, held_out, noise)

    assert set(good["phase_accuracy"]) == set(PHASES)
    assert good["mean_phase_accuracy"] >= 0.75 and min(good["phase_accuracy"].values()) >= 0.5
    assert wrong["mean_phase_accuracy"] <= 0.25 and bad["mean_phase_accuracy"] <= 0.5
    # Features do not see labels: the Fréchet distance cannot tell right from wrong phases (the reason
    # for phase accuracy), but it puts noise far from the real frames and unseen real frames near them.
    assert wrong["fd_classifier"] == pytest.approx(good["fd_classifier"])
    assert bad["fd_classifier"] > 5 * good["fd_classifier"]
    assert good["fd_classifier"] < 3 * good["fd_classifier_floor"] + 1e-6
    assert good["per_phase"][0]["phase"] == "t2" and good["confusion"]["t2"].get("t2", 0) >= 1
    real_set, _, _ = image_set_metrics(train.images, other.images, kid_subsets=20)
    noise_set, _, _ = image_set_metrics(train.images, noise.images, kid_subsets=20)
    assert noise_set["frechet_distance"] > 5 * real_set["frechet_distance"]
    assert noise_set["kid_mean"] > real_set["kid_mean"]


def test_cli_with_generated_images_writes_the_report_and_prints_the_table(folders, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["eval", "diffusion", "--data", str(folders / "train"), "--generated", str(folders / "other"),
                 "--out", str(out), "--classifier-steps", str(STEPS), "--side", str(SIDE)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads((out / "report.json").read_text())
    for key in ("phase_accuracy", "mean_phase_accuracy", "real_phase_accuracy", "fd_classifier", "image_set"):
        assert key in report, key
    assert list(report["phase_accuracy"]) == list(PHASES) and report["mean_phase_accuracy"] >= 0.75
    assert report["mean_real_phase_accuracy"] >= 0.75 and report["classifier"]["held_out_videos"] == 4
    assert {"frechet_distance", "kid_mean", "statistic_distances"} <= set(report["image_set"])
    assert (out / "samples.png").stat().st_size > 0 and (out / "histograms.png").stat().st_size > 0
    lines = printed.splitlines()
    for phase in PHASES:
        assert any(line.split()[0] == phase for line in lines if line.strip()), printed
    assert any(line.startswith("mean") for line in lines) and "Fréchet distance" in printed


@pytest.fixture(scope="module")
def ddpm(tmp_path_factory):
    """An untrained tiny DDPM artifact: its images are noise-like, not embryos."""
    from microforge.trainers.diffusion.lightning import DDPMModule
    from microforge.trainers.diffusion.workload import DDPM
    from microforge.trainers.export import export_artifact

    torch.manual_seed(0)
    return export_artifact(DDPMModule(resolution=32, width=16, levels=2, layers_per_block=1),
                           tmp_path_factory.mktemp("ddpm") / "model", workload=DDPM)


def test_bad_input_is_one_line_exit_2_and_nothing_written(folders, tmp_path, capsys):
    from tests.serve.tiny_generator import save_tiny_generator

    gan = tmp_path / "gan"
    save_tiny_generator(gan)
    train, other = str(folders / "train"), str(folders / "other")
    cases = [
        (["--data", str(folders / "extracted"), "--generated", other], "not a microforge dataset"),
        (["--data", train, "--generated", str(folders / "extracted")], "not a microforge dataset"),
        (["--data", train, "--generated", other, "--phase", "t22"], "unknown phase 't22'"),
        (["--data", train, "--generated", other, "--phase", "t5"], "has no image of phase(s) t5"),
        (["--data", train, "--model", str(gan), "--n", "0"], "--n must be a positive number"),
        (["--data", train, "--model", str(gan)], "is not a DDPM"),
        (["--data", train, "--generated", other, "--n", "4"], "--n: generation options"),
        (["--data", train], "give --model"),
    ]
    for argv, message in cases:
        out = tmp_path / "out"
        code = main(["eval", "diffusion", *argv, "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, (argv, err)
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["gan"], argv


@pytest.mark.slow
def test_end_to_end_from_a_ddpm_artifact(ray_local, folders, ddpm, tmp_path, capsys):
    from microforge.trainers.diffusion.lightning import to_model_images

    # Real frames are resized exactly as the DDPM resizes its training images.
    real = _images(folders / "train")
    frame = load_phase_images(real.paths[:1], real.phases[:1], 64).images
    assert torch.allclose(torch.from_numpy(real.images[:1]), to_model_images(torch.from_numpy(frame), SIDE)[:, 0])
    assert main(["eval", "diffusion", "--data", str(folders / "train"), "--model", str(ddpm), "--phase", "t5",
                 "--out", str(tmp_path / "never")]) == 2
    assert "have no frames in the training videos" in capsys.readouterr().err and not (tmp_path / "never").exists()

    out = tmp_path / "report"
    code = main(["eval", "diffusion", "--data", str(folders / "train"), "--model", str(ddpm), "--phase", "t2,t4",
                 "--n", "8", "--steps", "2", "--scheduler", "ddpm", "--classifier-steps", "100", "--workers", "1",
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads((out / "report.json").read_text())
    assert report["side"] == 32 and report["generation"]["n"] == 8 and list(report["phase_accuracy"]) == ["t2", "t4"]
    rows = read_manifest(out / "generated").to_pylist()
    assert [r["phase"] for r in rows] == ["t2", "t4"] * 4
    # An untrained DDPM draws noise: far from the real frames in the classifier's features.
    assert report["fd_classifier"] > 3 * report["fd_classifier_floor"]

    # Its images scored again from the directory; another model's card is refused.
    again = main(["eval", "diffusion", "--data", str(folders / "train"), "--model", str(ddpm), "--generated",
                  str(out / "generated"), "--classifier-steps", "100", "--out", str(tmp_path / "again")])
    assert again == 0
    assert json.loads((tmp_path / "again" / "report.json").read_text())["fd_classifier"] == report["fd_classifier"]
    from microforge.trainers.diffusion.lightning import DDPMModule
    from microforge.trainers.diffusion.workload import DDPM
    from microforge.trainers.export import export_artifact

    other = export_artifact(DDPMModule(resolution=32, width=8, levels=2, layers_per_block=1), tmp_path / "other",
                            workload=DDPM)
    capsys.readouterr()
    assert main(["eval", "diffusion", "--data", str(folders / "train"), "--model", str(other), "--generated",
                 str(out / "generated"), "--out", str(tmp_path / "never")]) == 2
    assert "generated by another model" in capsys.readouterr().err and not (tmp_path / "never").exists()
