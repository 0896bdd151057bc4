"""Generate a dataset of embryo images from a diffusion artifact: ``generate_diffusion``.

The job is :mod:`.job`'s (chunk numbers -> Ray Data actors holding the model, one writer, one
commit rule), with the sampler the artifact declares in the actor
(:mod:`microforge.trainers.diffusion.sampling`: a class-conditional DDPM of ``train ddpm``, or the
Stable Diffusion pipeline of ``train dreambooth``, prompted with the artifact's template): chunk
``c`` is the ``batch_size`` images of indices ``c * batch_size ...`` (the last padded), sampled
together with classifier-free guidance. Image ``i`` has the phase
``phases[i % len(phases)]`` and the seed :func:`.job.seed_of` ``(seed, i)``, whose generator draws
its initial noise and every stochastic step, so the directory is byte-identical with 1 or N
workers (on one kind of device) and a resumed run regenerates only unfinished chunks.

Beside ``images/``, ``manifest.parquet`` (index, seed, phase, phase_index, image, split) and
``dataset.json``, ``metadata.json`` records the datetime, phases (and prompts), scheduler, steps,
guidance, model and every image's seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import __version__
from ..datasets.writer import GenerationOptions, GenerationSummary, collect_rows, finish_dataset, load_complete_row, \
    prepare_directory, split_of
from ..platform.artifact import CARD_FILE, read_card
from ..platform.errors import ConfigError
from ..platform.storage import ensure_writable_dir
from .job import _KIND, SEED_RULE, ChunkActor, commit_chunk, config_hash, run_chunks, seed_of

__all__ = ["DIFFUSION_VERSION", "DiffusionRequest", "artifact_phases", "generate_diffusion", "parse_phases"]

DIFFUSION_VERSION = "1"  # bump when the sampling rule or the encoding of an image changes
KIND_NAME = "generated_diffusion"
COMPONENTS = ("unet_ema", "unet")  # a class-conditional DDPM's (ClassLabelSampler.components)
MAX_STEPS = 1000


def parse_phases(text: str) -> list[str]:
    """``all`` (the 16 phases in order) or a comma-separated list of phases.

    Raises:
        ConfigError: an unknown phase (with a did-you-mean) or an empty list.
    """
    from ..datasets.embryo.layout import PHASES, check_phase

    if text == "all":
        return list(PHASES)
    phases = [p.strip() for p in text.split(",") if p.strip()]
    if not phases:
        raise ConfigError("--phase needs a phase, a comma-separated list of phases, or 'all'")
    return [check_phase(p) for p in phases]


class DiffusionRequest:
    """The checked parameters of one diffusion generation job (all checked before anything is written)."""

    def __init__(self, artifact: str | Path, n: int, *, phase: str = "all", steps: int = 50, guidance: float = 7.5,
                 scheduler: str = "dpm", seed: int = 0, batch_size: int = 8, component: str | None = None,
                 split: Sequence[float] = (1.0, 0.0, 0.0)) -> None:
        from ..trainers.diffusion.model import SCHEDULERS

        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ConfigError(f"--n must be a positive number of images, got {n}")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            raise ConfigError(f"--steps must be an integer in [1, {MAX_STEPS}], got {steps}")
        if not math.isfinite(guidance) or guidance < 0:
            raise ConfigError(f"--guidance must be a finite number >= 0, got {guidance}")
        if scheduler not in SCHEDULERS:
            raise ConfigError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got '{scheduler}'")
        if seed < 0:
            raise ConfigError(f"--seed must be non-negative, got {seed}")
        if batch_size <= 0:
            raise ConfigError(f"--batch-size must be positive, got {batch_size}")
        self.artifact = Path(artifact).expanduser().absolute()
        card = read_card(self.artifact)
        self.sampler = _sampler(card, self.artifact)
        self.phase, self.phases = phase, _phases(phase, self.sampler.phases(card))
        components = [c for c in self.sampler.components if c in card.components]
        if component is not None and component not in components:
            raise ConfigError(f"the artifact has no component '{component}' to sample with (it has "
                              f"{', '.join(components)})")
        self.card = card
        self.component = component or components[0]
        self.n, self.steps, self.guidance, self.scheduler = n, steps, float(guidance), scheduler
        self.seed, self.batch_size = seed, batch_size
        self.options = GenerationOptions("png", tuple(split), {"component": self.component, "batch_size": batch_size,
                                                               "steps": steps, "guidance": self.guidance,
                                                               "scheduler": scheduler, "phases": self.phases})
        self.card_sha256 = hashlib.sha256((self.artifact / CARD_FILE).read_bytes()).hexdigest()

    @property
    def sampler_path(self) -> str:
        from ..trainers.diffusion.sampling import sampler_path

        return sampler_path(self.sampler)

    def prompts(self) -> dict[str, str] | None:
        return self.sampler.prompts(self.card, self.phases)

    @property
    def chunks(self) -> int:
        return -(-self.n // self.batch_size)

    def config(self) -> dict[str, Any]:
        """What decides the bytes of every image (the dataset's config and its hash)."""
        return {"artifact_sha256": self.card_sha256, "component": self.component, "batch_size": self.batch_size,
                "steps": self.steps, "guidance": self.guidance, "scheduler": self.scheduler, "phases": self.phases,
                "seed_rule": SEED_RULE, "format": "png"}

    def config_hash(self) -> str:
        return config_hash(self.config(), self.seed, self.options.identity())

    def record(self) -> dict[str, Any]:
        card = self.card
        return {"kind": KIND_NAME, "config": self.config(), "config_hash": self.config_hash(), "seed": self.seed,
                "n": self.n, "options": self.options.identity(), "renderer_version": DIFFUSION_VERSION,
                "microforge_version": __version__, "status": "incomplete",
                "classes": list(card.preprocessing.get("classes") or []),
                "prompt_template": card.preprocessing.get("prompt_template"),
                "prompts": self.prompts(), "sampler": self.sampler_path,
                "artifact": {"path": str(self.artifact), "workload": card.workload, "component": self.component,
                             "metrics": card.metrics, "model_json_sha256": self.card_sha256},
                "seed_rule": f"image seed = {SEED_RULE}; phase = phases[index mod len(phases)]; a torch.Generator "
                             "seeded with the image seed draws its initial noise and every stochastic step"}

    def job_args(self, out: Path) -> dict[str, Any]:
        return {"artifact": str(self.artifact), "sampler": self.sampler_path, "component": self.component, "n": self.n,
                "phases": self.phases, "steps": self.steps, "guidance": self.guidance, "scheduler": self.scheduler,
                "batch_size": self.batch_size, "seed": self.seed, "split": list(self.options.split), "out": str(out),
                "config_hash": self.config_hash()}

    def metadata(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from ..trainers.runs import utc_now

        return {"datetime": utc_now(), "model": str(self.artifact), "component": self.component,
                "phase": self.phase, "phases": self.phases, "focal": "F0", "scheduler": self.scheduler,
                "steps": self.steps, "guidance": self.guidance, "seed": self.seed, "n": self.n,
                "prompt_template": self.card.preprocessing.get("prompt_template"), "prompts": self.prompts(),
                "sampler": self.sampler_path, "per_phase": dict(Counter(r["phase"] for r in rows)),
                "seeds": [{"index": r["index"], "phase": r["phase"], "seed": r["seed"]} for r in rows]}


class DiffusionChunkGenerator(ChunkActor):
    """Ray Data actor: holds the artifact's sampler and generates, or verifies and reuses, whole chunks."""

    def __init__(self, *, artifact: str, sampler: str, component: str, n: int, phases: list[str], steps: int,
                 guidance: float, scheduler: str, batch_size: int, seed: int, split: list[float], out: str,
                 config_hash: str, use_gpu: bool = False) -> None:
        from ..platform.imports import import_object

        # The class the driver checked (sampler_for): its path, so the actor needs no card logic.
        self.sampler = import_object(sampler, "diffusion sampler")(artifact, component, scheduler, use_gpu)
        self.transform = self.sampler.transform
        self.phases = phases
        self.n, self.steps, self.guidance, self.batch_size, self.seed = n, steps, guidance, batch_size, seed
        self.split, self.out, self.config_hash = tuple(split), Path(out), config_hash

    def images(self, indices: Sequence[int]) -> list[np.ndarray]:
        """uint8 images of ``indices`` (one batch), through the artifact's inverse transform."""
        phases = [self.phases[i % len(self.phases)] for i in indices]
        seeds = [seed_of(self.seed, i) for i in indices]
        x = self.sampler.sample(phases, seeds, steps=self.steps, guidance=self.guidance)
        values = x[:, 0].float().cpu().numpy()
        return list(self.transform.invert(values, np.uint8))

    def chunk(self, chunk: int) -> tuple[list[dict[str, Any]], list[bool]]:
        from ..datasets.embryo.layout import PHASE_INDEX

        indices = range(chunk * self.batch_size, min(self.n, (chunk + 1) * self.batch_size))
        found = [load_complete_row(self.out, i, self.config_hash) for i in indices]
        if all(row is not None for row in found):
            return found, [False] * len(found)  # type: ignore[return-value]
        first = chunk * self.batch_size  # always a full batch: an image comes out of the same batch whatever n is
        images = self.images(range(first, first + self.batch_size))

        def row_of(k: int, rel: str) -> dict[str, Any]:
            index = indices[k]
            phase = self.phases[index % len(self.phases)]
            return {"index": index, "seed": seed_of(self.seed, index), "phase": phase, "phase_index": PHASE_INDEX[phase],
                    "image": rel, "split": split_of(self.seed, index, self.split)}

        return commit_chunk(self.out, self.config_hash, indices, images, found, row_of)


def _sampler(card: Any, artifact: Path) -> Any:
    """The sampler class the artifact declares.

    Raises:
        ConfigError: the artifact is not a diffusion model microforge can sample.
    """
    from ..trainers.diffusion.sampling import sampler_for

    cls, reason = sampler_for(card, artifact)
    if reason is not None:
        raise ConfigError(f"{artifact} is not a DDPM or DreamBooth artifact (workload {card.workload or 'unknown'}, "
                          f"components {', '.join(card.components)}: {reason}): generate diffusion takes an artifact "
                          "of 'microforge train ddpm' or 'microforge train dreambooth'")
    return cls


def _phases(text: str, available: Sequence[str]) -> list[str]:
    """``all`` (the artifact's phases) or the phases of ``text``, each one the artifact generates."""
    if text == "all":
        return list(available)
    phases = parse_phases(text)
    other = [p for p in phases if p not in available]
    if other:
        raise ConfigError(f"the model generates the phases {', '.join(available)}, not {', '.join(other)} "
                          "(a fine-tuned model generates the phases it was trained on; 'all' means those)")
    return phases


def artifact_phases(artifact: str | Path) -> list[str]:
    """The phases a diffusion artifact generates (what ``--phase all`` means for it).

    Raises:
        ArtifactError: no artifact; ConfigError: not a diffusion artifact.
    """
    artifact = Path(artifact).expanduser().absolute()
    card = read_card(artifact)
    return _sampler(card, artifact).phases(card)


def generate_diffusion(artifact: str | Path, n: int, out: str | Path, *, phase: str = "all", steps: int = 50,
                       guidance: float = 7.5, scheduler: str = "dpm", seed: int = 0, workers: int | None = None,
                       gpus_per_worker: float = 0, batch_size: int = 8, component: str | None = None,
                       split: Sequence[float] = (1.0, 0.0, 0.0), overwrite: bool = False,
                       address: str | None = None) -> GenerationSummary:
    """Generate images ``0..n-1`` of a diffusion artifact (``ddpm`` or ``dreambooth``) into the dataset
    directory ``out``.

    Raises:
        ConfigError: n <= 0, an unknown phase or scheduler, steps, guidance, seed, batch size or
            workers out of range, an artifact that is not a diffusion model, a phase it does not generate.
        ArtifactError: a missing or corrupt artifact.
        DatasetError: ``out`` holds another dataset (unless ``overwrite``), or the run stopped early.
        MicroforgeError: ``out`` is not writable. Nothing is written in all those cases.
    """
    if workers is not None and workers <= 0:
        raise ConfigError(f"--workers must be positive, got {workers}")
    if gpus_per_worker < 0:
        raise ConfigError(f"--gpus-per-worker must be non-negative, got {gpus_per_worker}")
    request = DiffusionRequest(artifact, n, phase=phase, steps=steps, guidance=guidance, scheduler=scheduler, seed=seed,
                               batch_size=batch_size, component=component, split=split)
    out = ensure_writable_dir(out)
    DiffusionChunkGenerator(**request.job_args(out))  # a model that cannot sample fails here, before any write
    record = request.record()

    def finalize(store: Any, rows: list[dict[str, Any]], options: GenerationOptions) -> dict[str, Any]:
        store.write_text("metadata.json", json.dumps(request.metadata(rows), indent=2) + "\n")
        return {"per_phase": dict(Counter(r["phase"] for r in rows))}

    kind = dataclasses.replace(_KIND, name=KIND_NAME, renderer_version=DIFFUSION_VERSION, finalize=finalize,
                               extra_owned_files=("metadata.json",))
    prepare_directory(out, kind, record, overwrite)
    start = time.perf_counter()
    results = run_chunks(DiffusionChunkGenerator, request.job_args(out), request.chunks, workers=workers,
                         gpus_per_worker=gpus_per_worker, address=address)
    seconds = time.perf_counter() - start
    rows, reused = collect_rows(results, n, "generate diffusion")
    counts = finish_dataset(kind, out, record, rows, request.options)
    return GenerationSummary(out, len(rows), len(rows) - reused, reused, seconds, counts)
