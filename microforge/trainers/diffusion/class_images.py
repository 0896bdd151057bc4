"""DreamBooth's class images: drawn once from the frozen pretrained pipeline, cached, reused.

Prior preservation trains on images of the class prompt that the pretrained model itself
generates. They are a function of (pipeline, prompt, count, size, sampler settings, seed), so
they live in a directory keyed by a hash of those (``<runs dir>/class-images/<key>/`` unless
``--class-dir`` says otherwise) and a second run with the same key reads them instead of drawing
them again. Image ``i`` comes from the seed ``SeedSequence([seed, i])`` in a fixed batch of
indices (chunk ``i // batch_size``), so the set is the same whatever the number of workers that
drew it; an interrupted generation resumes with the chunks that are missing an image.

    class-images/<key>/images/00000.png ...   8-bit gray PNG
    class-images/<key>/class-images.json      what the key stands for; written last (complete)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from microforge.platform.errors import DatasetError
from microforge.platform.storage import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from .pipeline import PipelineParts

__all__ = ["CLASS_DIR", "ClassImageSpec", "RECORD_FILE", "generate_chunks", "load_class_images", "missing_chunks",
           "read_record", "write_record"]

CLASS_DIR = "class-images"
RECORD_FILE = "class-images.json"
IMAGES = "images"
VERSION = 1  # bump when the sampling rule or the encoding of a class image changes


@dataclass(frozen=True)
class ClassImageSpec:
    """Everything that decides the bytes of the class images."""

    fingerprint: str  # of the pipeline directory (pipeline_fingerprint)
    prompt: str
    count: int
    side: int
    steps: int
    guidance: float
    scheduler: str
    seed: int
    batch_size: int

    def key(self) -> str:
        text = json.dumps({**asdict(self), "version": VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def seed_of(self, index: int) -> int:
        return int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0])

    def chunks(self) -> list[range]:
        return [range(c, min(self.count, c + self.batch_size)) for c in range(0, self.count, self.batch_size)]


def _image_path(directory: Path, index: int) -> Path:
    return directory / IMAGES / f"{index:05d}.png"


def read_record(directory: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(directory) / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None


def missing_chunks(directory: str | Path, spec: ClassImageSpec) -> list[int]:
    """The chunks with an image still to draw (none when the set is complete)."""
    directory = Path(directory)
    record = read_record(directory)
    if record is not None and record.get("key") == spec.key():
        return []
    return [c for c, chunk in enumerate(spec.chunks()) if not all(_image_path(directory, i).is_file() for i in chunk)]


def generate_chunks(parts: "PipelineParts", spec: ClassImageSpec, directory: str | Path, chunks: Sequence[int]) -> int:
    """Draw the chunks ``chunks`` with :func:`~.sampling.prompt_sample` and write their missing
    images atomically; the number of images written."""
    from microforge.datasets.images import encode_image
    from microforge.platform.transforms import transform_from_spec

    from .data import TRANSFORM
    from .model import make_scheduler
    from .sampling import prompt_sample

    directory = Path(directory)
    (directory / IMAGES).mkdir(parents=True, exist_ok=True)
    to_uint8 = transform_from_spec(TRANSFORM)
    written = 0
    for c in chunks:
        indices = spec.chunks()[c]
        scheduler = make_scheduler(spec.scheduler, parts.scheduler_config)
        x = prompt_sample(parts, scheduler, [spec.prompt] * len(indices), [spec.seed_of(i) for i in indices],
                          side=spec.side, steps=spec.steps, guidance=spec.guidance)
        for i, image in zip(indices, to_uint8.invert(x[:, 0].float().cpu().numpy(), np.uint8)):
            path = _image_path(directory, i)
            if not path.is_file():
                atomic_write_bytes(path, encode_image(image, ".png"))
                written += 1
    return written


def write_record(directory: str | Path, spec: ClassImageSpec, pretrained: str) -> None:
    from ..runs import utc_now

    record = {"key": spec.key(), "version": VERSION, **asdict(spec), "pretrained": pretrained,
              "seeds": [spec.seed_of(i) for i in range(spec.count)], "created": utc_now()}
    atomic_write_text(Path(directory) / RECORD_FILE, json.dumps(record, indent=2) + "\n")


def load_class_images(directory: str | Path, spec: ClassImageSpec) -> np.ndarray:
    """``(count, side, side)`` uint8 class images.

    Raises:
        DatasetError: an image is missing or has another size.
    """
    from PIL import Image

    directory = Path(directory)
    images = []
    for i in range(spec.count):
        try:
            image = np.asarray(Image.open(_image_path(directory, i)).convert("L"))
        except OSError as exc:
            raise DatasetError(f"class image {i} of {directory} is unreadable ({exc}); delete the folder to draw "
                               "the class images again") from None
        if image.shape != (spec.side, spec.side):
            raise DatasetError(f"class image {i} of {directory} is {image.shape}, not {spec.side} px")
        images.append(image)
    return np.stack(images)
