"""``microforge eval diffusion``: do generated embryo images look like the phase they were asked for?

A small phase classifier (:mod:`.phase_classifier`, deterministic given a seed) is trained on the real (or
rendered) frames of an embryo image folder (``microforge data embryo image-folder``); a seeded
quarter of its videos is held out, and the classifier's accuracy on them (``real_phase_accuracy``)
says how far its verdicts can be trusted. Then, on the generated images (a directory of
``microforge generate diffusion``, or images generated here from a DDPM artifact):

* ``phase_accuracy``: per phase, the fraction of images generated for that phase that the
  classifier assigns to it ("does a t4 image look like t4?"), and ``mean_phase_accuracy``;
* ``fd_classifier``: the Fréchet distance between the classifier's penultimate features (an
  ``N x D`` matrix, D = :data:`.phase_classifier.FEATURE_DIM`) of the training frames and of the generated images;
  ``fd_classifier_floor`` is the same distance for the held-out real frames, what a generator as
  good as the data would score;
* ``image_set``: the ``eval images`` metrics (texture Fréchet distance, KID, per-statistic
  Wasserstein distances, see :mod:`.distances`, :mod:`.features`, :mod:`.statistics`).

Every image is compared at one side (default: the generated images', at most :data:`MAX_SIDE`),
real frames resized as the DDPM resizes its training images. Written atomically to ``--out``:
``report.json``, ``samples.png`` (real and generated images per phase, generated ones framed green
when the classifier agrees) and ``histograms.png``; ``generated/`` too when the images were
generated here.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..datasets.embryo.layout import PHASES, check_phase
from ..datasets.manifest import decode_image, read_info, read_manifest
from ..platform.errors import ConfigError
from ..platform.storage import atomic_replace_dir
from .distances import frechet_distance, gaussian_stats, kernel_distance
from .features import texture_descriptor
from .phase_classifier import CLASSIFIER_STEPS, PhaseClassifier, PhaseImages, holdout_mask, load_phase_images, \
    train_phase_classifier
from .report import intensity_histogram
from .statistics import SCALAR_STATISTICS, image_statistics, statistic_distances

__all__ = ["evaluate_diffusion", "image_set_metrics", "score_phases"]

log = logging.getLogger(__name__)

MAX_SIDE = 128  # larger generators are judged at 128 px: enough to count cells, quick on a CPU
HOLDOUT = 0.25  # fraction of the image folder's videos held out to check the classifier
PER_PHASE = 8  # images generated per phase when --n is not given
IMAGE_SET_LIMIT = 1000  # real frames measured for the texture metrics (a seeded sample beyond)
_SAMPLE_STREAM = 0x5A3B


@dataclass(frozen=True)
class _Rows:
    """A manifest's files and phases, read (and checked) before any image is decoded."""

    root: Path
    paths: tuple[Path, ...]
    phases: tuple[str, ...]
    videos: tuple[str, ...] | None


def _read_rows(folder: str | Path, role: str) -> _Rows:
    root = Path(folder).expanduser().absolute()
    if not root.is_dir():
        raise ConfigError(f"{role} {root} is not a directory")
    table = read_manifest(root)
    missing = [c for c in ("image", "phase") if c not in table.column_names]
    if missing:
        raise ConfigError(f"{role} {root}: its manifest has no {' or '.join(missing)} column; expected an embryo "
                          "image folder or a directory of 'microforge generate diffusion'")
    phases = tuple(str(p) for p in table.column("phase").to_pylist())
    for phase in sorted(set(phases)):
        try:
            check_phase(phase)
        except ConfigError as exc:
            raise ConfigError(f"{role} {root}: {exc}") from None
    videos = tuple(str(v) for v in table.column("video").to_pylist()) if "video" in table.column_names else None
    return _Rows(root, tuple(root / str(p) for p in table.column("image").to_pylist()), phases, videos)


def _accuracy(true: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    """Per phase (in development order, phases present only): the fraction predicted as itself."""
    hits, totals = Counter(t for t, p in zip(true, pred) if t == p), Counter(true)
    return {phase: hits[phase] / totals[phase] for phase in PHASES if totals[phase]}


def _mean(values: dict[str, float]) -> float | None:
    return float(np.mean(list(values.values()))) if values else None


def image_set_metrics(real: np.ndarray, fake: np.ndarray, *, kid_subsets: int = 100,
                      seed: int = 0) -> tuple[dict[str, Any], list[dict[str, np.ndarray]], list[np.ndarray]]:
    """The ``eval images`` metrics of two sets of grey images in [0, 1] at one side: texture
    Fréchet distance and KID, and the statistics' Wasserstein distances. Also returns the
    statistics and intensity histograms of each set (for the histogram picture)."""
    features, values, intensity = [], [], []
    for images in (real, fake):
        xs = [np.asarray(x, np.float64) for x in images]
        caches: list[dict] = [{} for _ in xs]
        measured = [image_statistics(x, cache) for x, cache in zip(xs, caches)]  # shares LBP/GLCM with the features
        features.append(np.stack([texture_descriptor(x, cache) for x, cache in zip(xs, caches)]))
        v = {name: np.array([m[0][name] for m in measured]) for name in SCALAR_STATISTICS}
        v["object_area"] = np.concatenate([np.asarray(m[1], np.float64) for m in measured])
        values.append(v)
        intensity.append(np.sum([intensity_histogram(x) for x in xs], axis=0))
    kid_mean, kid_std = kernel_distance(*features, subsets=kid_subsets, seed=seed)
    stats = statistic_distances(*values)
    report = {"features": "texture", "feature_dim": int(features[0].shape[1]),
              "frechet_distance": frechet_distance(*gaussian_stats(features[0]), *gaussian_stats(features[1])),
              "kid_mean": kid_mean, "kid_std": kid_std,
              "statistic_distances": {name: entry["wasserstein"] for name, entry in stats.items()},
              "real_images": len(real), "generated_images": len(fake)}
    return report, values, intensity


def score_phases(classifier: PhaseClassifier, train: PhaseImages, held_out: PhaseImages,
                 generated: PhaseImages) -> dict[str, Any]:
    """The classifier metrics of the module doc (no image-set metrics, nothing written)."""
    held_out = held_out.subset(np.array([p in classifier.classes for p in held_out.phases], bool))
    real_pred, held_f = classifier.predict(held_out.images)  # phases the classifier never saw are left out
    gen_pred, gen_f = classifier.predict(generated.images)
    _, train_f = classifier.predict(train.images)
    real_acc, gen_acc = _accuracy(held_out.phases, real_pred), _accuracy(generated.phases, gen_pred)
    confusion = {phase: dict(Counter(p for t, p in zip(generated.phases, gen_pred) if t == phase).most_common())
                 for phase in gen_acc}
    train_stats = gaussian_stats(train_f)
    floor = frechet_distance(*train_stats, *gaussian_stats(held_f)) if len(held_f) >= 2 else None
    real_n, gen_n = Counter(held_out.phases), Counter(generated.phases)
    per_phase = []
    for phase in gen_acc:
        wrong = {p: c for p, c in confusion[phase].items() if p != phase}
        per_phase.append({"phase": phase, "real_images": real_n[phase], "real_accuracy": real_acc.get(phase),
                          "generated_images": gen_n[phase], "generated_accuracy": gen_acc[phase],
                          "taken_for": max(wrong, key=wrong.get) if wrong else None})
    return {
        "phase_accuracy": gen_acc,
        "mean_phase_accuracy": _mean(gen_acc),
        "real_phase_accuracy": real_acc,
        "mean_real_phase_accuracy": _mean(real_acc),
        "fd_classifier": frechet_distance(*train_stats, *gaussian_stats(gen_f)),
        "fd_classifier_floor": floor,
        "feature_dim": int(gen_f.shape[1]),
        "confusion": confusion,
        "per_phase": per_phase,
        "predicted": list(gen_pred),
    }


@dataclass(frozen=True)
class _Plan:
    """Everything checked before any work: the real rows and their held-out mask, the classifier's
    classes, the phases evaluated, the generated rows (or the generation request), side and out."""

    data: _Rows
    held: np.ndarray
    held_videos: int
    classes: tuple[str, ...]
    phases: tuple[str, ...]
    generated: _Rows | None
    request: Any
    side: int
    out: Path


def _check_out(out: Path) -> None:
    # Replacing a previous report is fine; replacing anything else is not.
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.json").is_file())):
        raise ConfigError(f"--out {out} exists and is not an 'eval diffusion' report directory; "
                          "name a new or empty directory")


def _plan(data: str | Path, model: str | Path | None, generated: str | Path | None, out: str | Path | None,
          phases: str | Sequence[str] | None, n: int | None, generation: dict[str, Any], seed: int,
          classifier_steps: int, side: int | None) -> _Plan:
    from ..generate.diffusion import DiffusionRequest, parse_phases
    from ..trainers.diffusion.data import folder_split

    if model is None and generated is None:
        raise ConfigError("give --model DDPM_ARTIFACT (images are generated from it) or --generated DIR "
                          "(images of 'microforge generate diffusion')")
    if generated is not None and (n is not None or any(v is not None for v in generation.values())):
        given = ["--n"] * (n is not None) + [f"--{k}" for k, v in generation.items() if v is not None]
        raise ConfigError(f"{', '.join(given)}: generation options, unused with --generated (its images exist)")
    if isinstance(classifier_steps, bool) or not isinstance(classifier_steps, int) or classifier_steps < 1:
        raise ConfigError(f"--classifier-steps must be a positive integer, got {classifier_steps}")
    if side is not None and not 16 <= side <= 512:
        raise ConfigError(f"--side must lie in [16, 512], got {side}")
    if seed < 0:
        raise ConfigError(f"--seed must be non-negative, got {seed}")
    wanted = None if phases is None else parse_phases(phases if isinstance(phases, str) else ",".join(phases))
    folder_split(str(Path(data).expanduser().absolute()))  # not an embryo image folder: a clear error here
    rows = _read_rows(data, "--data")
    groups = rows.videos if rows.videos is not None else tuple(str(i) for i in range(len(rows.phases)))
    held = holdout_mask(groups, HOLDOUT, seed)
    classes = tuple(p for p in PHASES if p in {ph for ph, h in zip(rows.phases, held) if not h})
    request, gen_rows = None, None
    if generated is not None:
        gen_rows = _read_rows(generated, "--generated")
        if model is not None:
            _check_same_model(model, gen_rows.root)
        present = [p for p in PHASES if p in set(gen_rows.phases)]
        absent = [p for p in wanted or [] if p not in present]
        if absent:
            raise ConfigError(f"--generated {gen_rows.root} has no image of phase(s) {', '.join(absent)} "
                              f"(it has {', '.join(present)})")
        evaluated = tuple(wanted or present)
        keep = [i for i, p in enumerate(gen_rows.phases) if p in evaluated]
        gen_rows = _Rows(gen_rows.root, tuple(gen_rows.paths[i] for i in keep),
                         tuple(gen_rows.phases[i] for i in keep), None)
        if len(keep) < 2:
            raise ConfigError(f"--generated {gen_rows.root} holds {len(keep)} image of the phases evaluated; "
                              "at least 2 are needed (Fréchet distance)")
    else:
        evaluated = tuple(wanted or classes)
        count = PER_PHASE * len(evaluated) if n is None else n
        request = DiffusionRequest(model, count, phase=",".join(evaluated), seed=seed,  # checks n, steps, the model
                                   **{k: v for k, v in generation.items() if v is not None})
        if count < 2:
            raise ConfigError(f"--n must be at least 2 (Fréchet distance), got {count}")
    unknown = [p for p in evaluated if p not in classes]
    if unknown:
        raise ConfigError(f"phase(s) {', '.join(unknown)} have no frames in the training videos of {rows.root}, "
                          f"so the classifier cannot judge them (it knows {', '.join(classes)}; --phase picks "
                          "the phases to score)")
    if side is None:
        if request is not None:
            side = int(request.card.preprocessing.get("image_size") or MAX_SIDE)
        else:
            side = int(max(np.shape(decode_image(gen_rows.paths[0]))[:2]))  # type: ignore[union-attr]
        side = max(16, min(side, MAX_SIDE))
    if out is None:
        source = Path(str(model if model is not None else generated)).expanduser().absolute()
        out = source.parent / "eval-diffusion"
    out = Path(out).expanduser().absolute()
    _check_out(out)
    held_videos = len({g for g, h in zip(groups, held) if h})
    return _Plan(rows, held, held_videos, classes, evaluated, gen_rows, request, side, out)


def _check_same_model(model: str | Path, generated: Path) -> None:
    import hashlib

    from ..platform.artifact import CARD_FILE, read_card

    read_card(model)  # a missing or broken artifact is an error even when its images exist
    made_by = (read_info(generated).get("artifact") or {}).get("model_json_sha256")
    if made_by is not None and made_by != hashlib.sha256((Path(model) / CARD_FILE).read_bytes()).hexdigest():
        raise ConfigError(f"--generated {generated} was generated by another model than --model {model}")


def evaluate_diffusion(data: str | Path, *, model: str | Path | None = None, generated: str | Path | None = None,
                       out: str | Path | None = None, phases: str | Sequence[str] | None = None,
                       n: int | None = None, steps: int | None = None, guidance: float | None = None,
                       scheduler: str | None = None,
                       seed: int = 0, classifier_steps: int = CLASSIFIER_STEPS, side: int | None = None,
                       workers: int | None = None, address: str | None = None) -> dict[str, Any]:
    """Score generated images against the image folder ``data`` (see the module doc); writes
    ``out`` (default ``<model or generated>/../eval-diffusion``, replaced) and returns the report.

    Raises:
        ConfigError: neither ``model`` nor ``generated``, an unknown phase or one without real
            frames, n < 2 (n <= 0: as ``generate diffusion`` says), generation options with
            ``generated``, a model that is not a DDPM, an ``out`` that is another directory.
        DatasetError: ``data`` is not an embryo image folder or shows fewer than 2 videos,
            ``generated`` is not a dataset; ArtifactError: a missing or corrupt artifact.
            Nothing is written in those cases.
    """
    started = time.perf_counter()
    generation = {"steps": steps, "guidance": guidance, "scheduler": scheduler}
    plan = _plan(data, model, generated, out, phases, n, generation, seed, classifier_steps, side)
    scratch = None
    if plan.generated is None:  # generated beside --out, moved into it with the report
        plan.out.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=plan.out.parent, prefix=f".{plan.out.name}.generating-"))
    try:
        gen_rows = plan.generated or _generate(plan, scratch / "generated", workers, address)  # type: ignore[operator]
        log.info("reading %d real and %d generated images at %d px", len(plan.data.paths), len(gen_rows.paths),
                 plan.side)
        real = load_phase_images(plan.data.paths, plan.data.phases, plan.side, plan.data.videos)
        fake = load_phase_images(gen_rows.paths, gen_rows.phases, plan.side)
        train, held_out = real.subset(~plan.held), real.subset(plan.held)
        classifier = train_phase_classifier(train, steps=classifier_steps, seed=seed)
        scores = score_phases(classifier, train, held_out, fake)
        predicted = scores.pop("predicted")
        rng = np.random.default_rng(np.random.SeedSequence([seed, _SAMPLE_STREAM]))
        sample = np.sort(rng.permutation(len(real.images))[:IMAGE_SET_LIMIT])
        image_set, values, intensity = image_set_metrics(real.images[sample], fake.images, seed=seed)
        report = {
            "data": str(plan.data.root), "model": None if model is None else str(Path(model).absolute()),
            "generated": str(plan.out / "generated") if plan.generated is None else str(gen_rows.root),
            "phases": list(plan.phases), "side": plan.side, **scores,
            "classifier": {"classes": list(classifier.classes), "side": classifier.side,
                           "held_out_videos": plan.held_videos,
                           "held_out_images": len(held_out.phases), **classifier.info},
            "image_set": image_set,
            "generation": None if plan.request is None else {
                "n": plan.request.n, "steps": plan.request.steps, "guidance": plan.request.guidance,
                "scheduler": plan.request.scheduler, "seed": seed},
            "seconds": round(time.perf_counter() - started, 3),
        }
        _write(plan.out, report, real, fake, predicted, values, intensity,
               None if scratch is None else scratch / "generated")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    report["out"] = str(plan.out)
    return report


def _generate(plan: _Plan, directory: Path, workers: int | None, address: str | None) -> _Rows:
    from ..generate.diffusion import generate_diffusion

    r = plan.request
    log.info("generating %d images of %s from %s", r.n, ",".join(plan.phases), r.artifact)
    generate_diffusion(r.artifact, r.n, directory, phase=",".join(plan.phases), steps=r.steps, guidance=r.guidance,
                       scheduler=r.scheduler, seed=r.seed, workers=workers, address=address)
    return _read_rows(directory, "generated")


def _write(out: Path, report: dict[str, Any], real: PhaseImages, fake: PhaseImages, predicted: Sequence[str],
           values: list[dict[str, np.ndarray]], intensity: list[np.ndarray], generated_dir: Path | None) -> None:
    import cv2

    from .diffusion_plots import phase_samples
    from .report import _histograms

    pictures = {"samples.png": phase_samples(report["phases"], real, fake, predicted),
                "histograms.png": _histograms(values, intensity)}  # drawn before anything is written

    def fill(tmp: Path) -> None:
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        for name, image in pictures.items():
            ok, data = cv2.imencode(".png", image)
            if not ok:
                raise OSError(f"OpenCV could not encode {name}")
            (tmp / name).write_bytes(data.tobytes())
        if generated_dir is not None:
            shutil.move(str(generated_dir), str(tmp / "generated"))

    atomic_replace_dir(out, fill)
