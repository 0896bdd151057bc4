"""CycleGAN training batches: rendered two-domain samples, or files of an unaligned dataset folder.

Both are batch renderers for :class:`~microforge.trainers.data.SyntheticData` (``fn(config, seed,
indices, **kwargs) -> dict``), so every batch is a pure function of (config, seed, index) and a
resumed or re-sharded run reads exactly the same samples. A batch is::

    a      (B, 1, S, S) float32 in [-1, 1]   domain A (grayscale)
    a_gt   (B, 1, S, S) float32 in {0, 1}    A's nucleus mask (zeros when the sample has none)
    has_gt (B,) float32                      1 where a_gt is a real mask
    b      (B, 3, S, S) float32 in [-1, 1]   domain B (RGB), an unrelated image
    index  (B,) int64

Folder training follows the reference's unaligned loader: each epoch visits every A image once
(in an order drawn from (seed, epoch)), each with a random B image; images are resized to
``load_size`` and randomly cropped to ``size`` and flipped, A and its mask alike. The test split is
resized to ``size`` without augmentation.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable

import numpy as np

__all__ = ["TRANSFORM", "read_unaligned_batch", "render_unaligned_batch"]

# The input transform of the cyclegan workload: uint8 / 255 mapped to [-1, 1].
TRANSFORM = {"name": "signed_unit", "params": {}}
_EPOCH_STREAM, _SAMPLE_STREAM = 0xE90C, 0x5A3F


def _signed(images: list[np.ndarray]) -> np.ndarray:
    return np.stack(images).astype(np.float32) / 127.5 - 1.0


def _batch(a: list, gt: list, has_gt: list, b: list, indices: list[int]) -> dict[str, np.ndarray]:
    return {"a": _signed(a)[:, None], "a_gt": np.stack(gt).astype(np.float32)[:, None],
            "has_gt": np.asarray(has_gt, np.float32), "b": _signed(b).transpose(0, 3, 1, 2).copy(),
            "index": np.asarray(indices, np.int64)}


def render_unaligned_batch(config: dict[str, Any], seed: int, indices: Iterable[int], *,
                           invert_a: bool = False) -> dict[str, np.ndarray]:
    """Rendered samples (:func:`~microforge.datasets.unaligned.render_unaligned`) as a batch."""
    from microforge.datasets.unaligned import UnalignedConfig, render_unaligned

    cfg = UnalignedConfig.load(config)
    indices = [int(i) for i in indices]
    samples = [render_unaligned(cfg, seed, i) for i in indices]
    a = [255 - s.a if invert_a else s.a for s in samples]
    return _batch(a, [s.a_gt > 0 for s in samples], [1.0] * len(samples), [s.b for s in samples], indices)


@lru_cache(maxsize=8)
def _split(root: str, split: str, fractions: tuple[float, ...]):
    from microforge.datasets.unaligned import open_split

    return open_split(root, split, fractions=fractions, check_pixels=False)  # checked on the driver


def read_unaligned_batch(config: dict[str, Any], seed: int, indices: Iterable[int], *,
                         split: str = "train") -> dict[str, np.ndarray]:
    """Samples of a dataset folder. ``config``: ``dataset_dir``, ``fractions``, ``size``,
    ``load_size``, ``invert_a`` and ``offset`` (the index of the first training sample)."""
    from microforge.datasets.unaligned import crop_and_flip, load_a, load_b, load_gt

    files = _split(config["dataset_dir"], split, tuple(config["fractions"]))
    n_a, n_b = len(files.a), len(files.b)
    size, train = int(config["size"]), split == "train"
    a_out, gt_out, has_gt, b_out, indices = [], [], [], [], [int(i) for i in indices]
    for index in indices:
        rng = np.random.default_rng(np.random.SeedSequence([seed, index, _SAMPLE_STREAM]))
        if train:
            epoch, k = divmod(index - int(config["offset"]), n_a)
            order = np.random.default_rng(np.random.SeedSequence([seed, epoch, _EPOCH_STREAM])).permutation(n_a)
            i_a, i_b = int(order[k]), int(rng.integers(n_b))
        else:
            i_a, i_b = index % n_a, index % n_b
        a = load_a(files.a[i_a], invert=bool(config["invert_a"]))
        gt = load_gt(files.a_gt[i_a]).astype(np.uint8) if files.has_gt else np.zeros_like(a)
        aug = rng if train else None
        a, gt = crop_and_flip([a, gt], int(config["load_size"]), size, aug, nearest=[False, True])
        (b,) = crop_and_flip([load_b(files.b[i_b])], int(config["load_size"]), size, aug)
        a_out.append(a), gt_out.append(gt > 0), b_out.append(b), has_gt.append(float(files.has_gt))
    return _batch(a_out, gt_out, has_gt, b_out, indices)
