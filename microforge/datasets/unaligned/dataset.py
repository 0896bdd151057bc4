"""``microforge synth unaligned``: rendered two-domain datasets in the CycleGAN layout.

Sample ``i`` of split ``s`` (drawn from (seed, i) as in every microforge dataset) writes
``sA/0000042.png`` (grayscale), ``sA_GT/0000042.png`` (its 0/255 mask) and ``sB/0000042.png``
(RGB, from another scene), so the directory is both a microforge dataset (manifest,
``dataset.json``, resume) and a folder that :func:`~microforge.datasets.unaligned.open_split`
and the reference CycleGAN code read.
"""

from __future__ import annotations

from pathlib import Path

import cv2

from ..images import encode_image
from ..writer import (SPLIT_NAMES, DatasetKind, EncodedSample, GenerationOptions, GenerationSummary, generate,
                      sample_stem, split_of)
from .render import RENDERER_VERSION, UnalignedConfig, render_unaligned

__all__ = ["UNALIGNED", "generate_dataset"]


def encode_unaligned(config: UnalignedConfig, seed: int, index: int, options: GenerationOptions) -> EncodedSample:
    sample = render_unaligned(config, seed, index)
    split, stem = split_of(seed, index, options.split), sample_stem(index)
    a, gt, b = (f"{split}{folder}/{stem}.png" for folder in ("A", "A_GT", "B"))
    files = {a: encode_image(sample.a, ".png"), gt: encode_image(sample.a_gt, ".png"),
             b: encode_image(cv2.cvtColor(sample.b, cv2.COLOR_RGB2BGR), ".png")}
    columns = {"image": a, "mask": gt, "image_b": b, "cell_fraction": float((sample.a_gt > 0).mean())}
    return EncodedSample(files, columns)


UNALIGNED = DatasetKind(
    name="unaligned",
    config_cls=UnalignedConfig,
    renderer_version=RENDERER_VERSION,
    encode=encode_unaligned,
    owned_dirs=tuple(f"{s}{d}" for s in SPLIT_NAMES for d in ("A", "A_GT", "B")),
)


def generate_dataset(config: UnalignedConfig | dict | str | Path | None, n: int, out: str | Path, *, seed: int = 0,
                     size: int | None = None, split: tuple[float, float, float] = (0.8, 0.0, 0.2),
                     workers: int | None = None, overwrite: bool = False,
                     address: str | None = None) -> GenerationSummary:
    """Render ``n`` two-domain samples into ``out`` on Ray (resumable; see ``microforge.datasets.writer``).

    Raises:
        ConfigError: an invalid config or size (before anything is written).
        MicroforgeError: see :func:`microforge.datasets.writer.generate`.
    """
    config = UnalignedConfig.load(config if config is not None else {})
    if size is not None:
        config = UnalignedConfig.load({**config.to_json_dict(), "size": size})
    return generate(UNALIGNED, config, n, out, seed=seed, options=GenerationOptions("png", split), workers=workers,
                    overwrite=overwrite, address=address)
