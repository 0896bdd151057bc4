"""Generate a dataset from a trained generator with Ray Data: ``generate_dataset``.

The job is the chunk numbers ``0..chunks-1`` -> ``map_batches`` with a class-based actor (one per worker,
CPU or GPU) that loads the artifact once and, for each chunk of ``batch_size`` consecutive
indices, generates the chunk's images in one forward pass with
:func:`microforge.trainers.predict.generate_images`, encodes them as PNG (8 or 16 bit) and
commits each image with the dataset writer (:func:`microforge.datasets.writer.commit_sample`: the
image, then its meta file, written last). The driver then writes ``manifest.parquet`` (index,
seed, image, split) and the completed ``dataset.json`` (the artifact's summary and the generation
parameters) with :func:`microforge.datasets.writer.finish_dataset`.

Seeds: image ``index`` of a run with seed ``seed`` is generated from the image seed
:func:`seed_of` ``(seed, index)``, recorded in the manifest's ``seed`` column; the latent of an
image is drawn from ``torch.Generator().manual_seed(image_seed)``, so ``generate_images(generator,
transform, [image_seed])`` (or ``POST /generate`` with ``seeds``) re-creates it.

Truncation: ``truncation=T`` draws every latent from N(0, 1) truncated to [-T, T] (the values
outside redrawn from the image's own seeded generator, see :mod:`microforge.trainers.predict`);
it is recorded in ``dataset.json`` (``config.truncation``, null for none) and is part of the
dataset's identity: a re-run with another T is refused (or, with ``overwrite``, starts over).

Determinism: chunk ``c`` is always the forward pass of the ``batch_size`` seeds of indices
``c * batch_size ...`` (the last chunk is padded past ``n`` and the extra images dropped), never a
batch shaped by how Ray Data schedules the work, and a resumed chunk is regenerated whole. So an
image is a function of (artifact, seed, index, batch_size, truncation) and the directory is byte-identical
with 1 or N workers (on one kind of device); the batch size is part of the dataset's identity.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import __version__
from ..datasets.images import encode_image
from ..datasets.writer import (DatasetError, DatasetKind, GenerationOptions, GenerationSummary, batch_result, collect_rows,
                               commit_sample, finish_dataset, load_complete_row, prepare_directory, sample_stem,
                               split_of)
from ..platform.artifact import CARD_FILE, read_card
from ..platform.errors import ConfigError
from ..platform.runtime import ray_runtime, single_stage
from ..platform.storage import ensure_writable_dir
from ..trainers.predict import check_truncation

log = logging.getLogger(__name__)

__all__ = ["ChunkActor", "GENERATOR_VERSION", "GenerationRequest", "choose_component", "commit_chunk",
           "generate_dataset", "run_chunks", "seed_of"]

GENERATOR_VERSION = "1"  # bump when the seed rule or the encoding of an image changes
KIND_NAME = "generated"
IMAGES_DIR = "images"
BITS = {8: np.uint8, 16: np.uint16}
SEED_SPACE = 2**32  # torch.Generator.manual_seed keeps only the low 32 bits (mt19937)
SEED_RULE = "(SeedSequence(seed).generate_state(1)[0] + index) mod 2**32"
DEFAULT_COMPONENTS = ("generator_ema", "generator")

_KIND = DatasetKind(name=KIND_NAME, config_cls=None, renderer_version=GENERATOR_VERSION,  # type: ignore[arg-type]
                    encode=None, owned_dirs=(IMAGES_DIR,))  # type: ignore[arg-type]


def seed_of(seed: int, index: int) -> int:
    """The seed of image ``index`` of a run with seed ``seed``: ``(first + index) mod 2**32`` where
    ``first = numpy.random.SeedSequence(seed).generate_state(1)[0]``.

    Consecutive from a point of the seed space chosen by ``seed``: every image of one run has its
    own seed (up to 2**32 images), and different ``--seed`` values start far apart. Seeds stay
    below 2**32 because ``torch.Generator`` seeds only with the low 32 bits: two recorded seeds
    never silently give the same latent.
    """
    first = int(np.random.SeedSequence(seed).generate_state(1)[0])
    return (first + index) % SEED_SPACE


def choose_component(components: Sequence[str], requested: str | None) -> str:
    """``requested``, else ``generator_ema``, else ``generator``, else the only component.

    Raises:
        ConfigError: ``requested`` is not a component, or no default applies.
    """
    if requested is not None:
        if requested not in components:
            raise ConfigError(f"the artifact has no component '{requested}' (it has {', '.join(components)})")
        return requested
    for name in DEFAULT_COMPONENTS:
        if name in components:
            return name
    if len(components) == 1:
        return components[0]
    raise ConfigError(f"the artifact has components {', '.join(components)}: choose one with --component")


def config_hash(config: dict[str, Any], seed: int, options: dict[str, Any]) -> str:
    """The hash that names what decides a generated dataset's bytes (resume compares it)."""
    canonical = json.dumps({"config": config, "seed": seed, "options": options}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class GenerationRequest:
    """The checked parameters of one generation job (everything is validated in the constructor,
    before anything is written)."""

    def __init__(self, artifact: str | Path, n: int, *, seed: int = 0, bits: int = 8, batch_size: int = 16,
                 component: str | None = None, split: Sequence[float] = (1.0, 0.0, 0.0),
                 workload: str | None = None, truncation: float | None = None) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ConfigError(f"--n must be a positive number of images, got {n}")
        if bits not in BITS:
            raise ConfigError(f"--bits must be 8 or 16, got {bits}")
        if batch_size <= 0:
            raise ConfigError(f"--batch-size must be positive, got {batch_size}")
        if seed < 0:
            raise ConfigError(f"--seed must be non-negative, got {seed}")
        try:
            self.truncation = check_truncation(truncation)
        except ConfigError as exc:
            raise ConfigError(f"--truncation: {exc}") from None
        self.artifact = Path(artifact).expanduser().absolute()
        card = read_card(self.artifact)
        if card.task != "generate":
            kind = f"a '{card.task}' artifact" if card.task else "an artifact without a task"
            raise ConfigError(f"{self.artifact} is {kind} (workload {card.workload or 'unknown'}), "
                              "not a generator: generate takes an artifact whose task is 'generate'")
        if card.preprocessing.get("sampler"):  # a diffusion artifact names its sampler
            raise ConfigError(f"{self.artifact} is a diffusion model (workload {card.workload or 'unknown'}): "
                              "use 'microforge generate diffusion --model ...'")
        if workload is not None and card.workload != workload:
            raise ConfigError(f"{self.artifact} is a '{card.workload or 'unknown'}' artifact, not {workload}: "
                              f"use 'generate {card.workload or 'artifact'} --model ...' or 'generate artifact --model ...'")
        self.card = card
        self.n, self.seed, self.bits, self.batch_size = n, seed, bits, batch_size
        self.component = choose_component(list(card.components), component)
        self.options = GenerationOptions("png", tuple(split), {"bits": bits, "component": self.component,
                                                               "batch_size": batch_size})
        self.card_sha256 = hashlib.sha256((self.artifact / CARD_FILE).read_bytes()).hexdigest()

    @property
    def chunks(self) -> int:
        return -(-self.n // self.batch_size)

    def config(self) -> dict[str, Any]:
        """What decides the bytes of every image (the dataset's config and its hash)."""
        return {"artifact_sha256": self.card_sha256, "component": self.component, "bits": self.bits,
                "batch_size": self.batch_size, "seed_rule": SEED_RULE, "format": "png",
                "truncation": self.truncation}

    def config_hash(self) -> str:
        return config_hash(self.config(), self.seed, self.options.identity())

    def record(self) -> dict[str, Any]:
        """``dataset.json``: the writer's keys, the artifact's summary and the generation parameters."""
        card = self.card
        return {"kind": KIND_NAME, "config": self.config(), "config_hash": self.config_hash(), "seed": self.seed,
                "n": self.n, "options": self.options.identity(), "renderer_version": GENERATOR_VERSION,
                "microforge_version": __version__, "status": "incomplete",
                "artifact": {"path": str(self.artifact), "workload": card.workload, "task": card.task,
                             "component": self.component, "transform": card.transform, "metrics": card.metrics,
                             "provenance": card.provenance, "model_json_sha256": self.card_sha256},
                "seed_rule": f"image seed = {SEED_RULE}; latent = torch.randn(latent_shape, "
                             "generator=torch.Generator().manual_seed(image seed))"
                             + ("" if self.truncation is None else
                                f", then every value with |z| > {self.truncation:g} redrawn from that generator "
                                "until none is left")}

    def job_args(self, out: Path) -> dict[str, Any]:
        return {"artifact": str(self.artifact), "component": self.component, "bits": self.bits, "n": self.n,
                "batch_size": self.batch_size, "seed": self.seed, "split": list(self.options.split),
                "out": str(out), "config_hash": self.config_hash(), "truncation": self.truncation}


class ChunkActor:
    """Base of the Ray Data actors of a generation job: ``chunk(c)`` returns the rows of chunk
    ``c`` and which of them were generated now; ``__call__`` runs the chunks of a batch."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: list[dict[str, Any]] = []
        reused: list[bool] = []
        for chunk in batch["id"].tolist():
            done, fresh = self.chunk(int(chunk))
            rows += done
            reused += [not f for f in fresh]
        return batch_result(rows, reused)

    def chunk(self, chunk: int) -> tuple[list[dict[str, Any]], list[bool]]:
        raise NotImplementedError


def commit_chunk(out: Path, config_hash: str, indices: Sequence[int], images: Sequence[np.ndarray],
                 found: Sequence[dict[str, Any] | None],
                 row_of: Callable[[int, str], dict[str, Any]]) -> tuple[list[dict[str, Any]], list[bool]]:
    """Commit each image of ``indices`` whose row was not ``found`` as ``images/<index>.png`` with
    the manifest row ``row_of(position in the chunk, relative path)``; the chunk's rows and which
    of them were written now."""
    rows = []
    for k, (index, image, row) in enumerate(zip(indices, images, found)):
        if row is None:
            rel = f"{IMAGES_DIR}/{sample_stem(index)}.png"
            row = row_of(k, rel)
            commit_sample(out, index, config_hash, row, {rel: encode_image(image, ".png")})
        rows.append(row)
    return rows, [row is None for row in found]


def run_chunks(actor: type, job_args: dict[str, Any], chunks: int, *, workers: int | None, gpus_per_worker: float,
               address: str | None) -> list[dict[str, Any]]:
    """Run ``actor(**job_args, use_gpu=...)`` over chunk numbers ``0..chunks-1`` with Ray Data
    (``workers`` actors; None: every CPU, or every GPU / ``gpus_per_worker``, at most one per
    chunk); the :func:`batch_result` rows of every chunk."""
    import ray

    with ray_runtime(address=address, num_cpus=workers):
        if workers is None:
            resources = ray.cluster_resources()
            workers = (int(resources.get("GPU", 0) // gpus_per_worker) if gpus_per_worker
                       else int(resources.get("CPU", 1)))
            workers = max(1, min(workers, chunks))
        # Chunk numbers made on the driver (no read tasks): every CPU can hold a generator actor.
        ds = ray.data.from_items([{"id": c} for c in range(chunks)], override_num_blocks=chunks)
        ds = ds.map_batches(actor, batch_size=1, concurrency=workers, num_cpus=1, num_gpus=gpus_per_worker or None,
                            fn_constructor_kwargs={**job_args, "use_gpu": gpus_per_worker > 0})
        return list(single_stage(ds, actors=True).iter_rows())


class ChunkGenerator(ChunkActor):
    """Ray Data actor: holds the generator (on the GPU when it was given one) and generates, or
    verifies and reuses, whole chunks of images."""

    def __init__(self, *, artifact: str, component: str, bits: int, n: int, batch_size: int, seed: int,
                 split: list[float], out: str, config_hash: str, truncation: float | None = None,
                 use_gpu: bool = False) -> None:
        import torch

        from ..trainers.registry import load_artifact

        loaded = load_artifact(artifact)
        self.generator, self.transform = loaded[component], loaded.transform
        if use_gpu and torch.cuda.is_available():
            self.generator.to("cuda")
        self.dtype, self.n, self.batch_size, self.seed = BITS[bits], n, batch_size, seed
        self.split, self.out, self.config_hash = tuple(split), Path(out), config_hash
        self.truncation = truncation

    def chunk(self, chunk: int) -> tuple[list[dict[str, Any]], list[bool]]:
        """The rows of one chunk and which of them were generated now."""
        from ..trainers.predict import generate_images

        indices = range(chunk * self.batch_size, min(self.n, (chunk + 1) * self.batch_size))
        found = [load_complete_row(self.out, i, self.config_hash) for i in indices]
        if all(row is not None for row in found):
            return found, [False] * len(found)  # type: ignore[return-value]
        # The whole chunk, even when one image is missing, and always batch_size seeds (the last
        # chunk padded past n): an image always comes out of the same batch, whatever n is.
        first = chunk * self.batch_size
        seeds = [seed_of(self.seed, i) for i in range(first, first + self.batch_size)]
        images = generate_images(self.generator, self.transform, seeds, dtype=self.dtype,
                                 truncation=self.truncation)
        return commit_chunk(self.out, self.config_hash, indices, images, found,
                            lambda k, rel: {"index": indices[k], "seed": seeds[k], "image": rel,
                                            "split": split_of(self.seed, indices[k], self.split)})


def _check_generator(request: GenerationRequest) -> None:
    """Load the artifact on the driver and generate one image: a component that is not a generator,
    or images PNG cannot hold, fail here, before anything is written."""
    job = ChunkGenerator(**{**request.job_args(Path(".")), "n": 1, "batch_size": 1})
    from ..trainers.predict import generate_images

    image = generate_images(job.generator, job.transform, [seed_of(request.seed, 0)], dtype=job.dtype,
                            truncation=request.truncation)[0]
    if image.ndim == 3 and image.shape[-1] not in (3, 4):
        raise ConfigError(f"component '{request.component}' makes {image.shape[-1]}-channel images; "
                          "PNG holds 1, 3 or 4 channels")
    encode_image(image, ".png")


def _refuse_other_truncation(out: Path, request: GenerationRequest, overwrite: bool) -> None:
    """A resumed dataset made with another truncation: say so (the writer would only name the
    config hash)."""
    try:
        existing = json.loads((out / "dataset.json").read_text())
    except (OSError, ValueError):
        return
    if overwrite or existing.get("kind") != KIND_NAME or not isinstance(existing.get("config"), dict):
        return
    theirs = existing["config"].get("truncation")
    if theirs != request.truncation:
        def name(t: float | None) -> str:
            return "no truncation" if t is None else f"--truncation {t:g}"

        raise DatasetError(f"{out} holds a dataset generated with {name(theirs)}, not {name(request.truncation)}; "
                           "choose another --out or pass --overwrite to replace it")


def generate_dataset(artifact: str | Path, n: int, out: str | Path, *, seed: int = 0, workers: int | None = None,
                     gpus_per_worker: float = 0, bits: int = 8, batch_size: int = 16, component: str | None = None,
                     split: Sequence[float] = (1.0, 0.0, 0.0), workload: str | None = None,
                     truncation: float | None = None, overwrite: bool = False,
                     address: str | None = None) -> GenerationSummary:
    """Generate images ``0..n-1`` of a generator artifact into the dataset directory ``out``.

    A re-run with the same parameters generates only the chunks with a missing or changed image.

    Args:
        workload: when given, the artifact must have been trained by this workload.
        gpus_per_worker: GPUs per actor (0: generate on CPUs).
        truncation: truncate every latent to [-truncation, truncation] (None or 0: no truncation;
            else within [0.05, 4]); recorded in ``dataset.json``.

    Raises:
        ConfigError: n <= 0, bits not 8 or 16, batch_size, workers or seed out of range, an
            artifact whose task is not ``generate`` (or of another workload), an unknown
            component or one without ``latent_shape``, a truncation out of range.
        ArtifactError: a missing or corrupt artifact.
        DatasetError: ``out`` holds another dataset, e.g. one with another truncation (unless
            ``overwrite``), or the run stopped early.
        MicroforgeError: ``out`` is not writable. Nothing is written in all those cases.
    """
    if workers is not None and workers <= 0:
        raise ConfigError(f"--workers must be positive, got {workers}")
    if gpus_per_worker < 0:
        raise ConfigError(f"--gpus-per-worker must be non-negative, got {gpus_per_worker}")
    request = GenerationRequest(artifact, n, seed=seed, bits=bits, batch_size=batch_size, component=component,
                                split=split, workload=workload, truncation=truncation)
    out = ensure_writable_dir(out)
    _refuse_other_truncation(out, request, overwrite)
    _check_generator(request)
    record = request.record()
    prepare_directory(out, _KIND, record, overwrite)

    start = time.perf_counter()
    results = run_chunks(ChunkGenerator, request.job_args(out), request.chunks, workers=workers,
                         gpus_per_worker=gpus_per_worker, address=address)
    seconds = time.perf_counter() - start
    rows, reused = collect_rows(results, n, "generate")
    counts = finish_dataset(_KIND, out, record, rows, request.options)
    log.info("generated %d images in %s (%d reused)", len(rows) - reused, out, reused)
    return GenerationSummary(out, len(rows), len(rows) - reused, reused, seconds, counts)
