"""A validated reader of unaligned two-domain folders (the CycleGAN layout) with A's ground truth.

Layouts of ``root``:

* ``trainA/ trainB/ testA/ testB/`` (any ``<split>A``, ``<split>B``), optionally
  ``<split>A_GT/`` with binary masks (0/255) of the A images;
* ``A/ B/`` (optionally ``A_GT/``): one pool per domain, split into train/val/test by a stable hash
  of each file's stem and the given fractions, so adding files never moves the others.

A GT mask is paired with its A image by file stem (``cell_07.tif`` with ``cell_07.png``), never by
sorted position. Everything is checked when a split is opened and every problem names the file:
a missing domain folder, an empty folder, two files with one stem, a GT file without its A image
or an A image without its GT, a GT whose size differs from its image, a mask that is not binary,
and a B domain that is not RGB.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from microforge.platform.errors import DatasetError

__all__ = ["IMAGE_SUFFIXES", "UnalignedSplit", "crop_and_flip", "load_a", "load_b", "load_gt", "open_split",
           "split_names"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class UnalignedSplit:
    """One split: A images, their GT masks in the same order (or None), and B images."""

    root: str
    split: str
    a: tuple[str, ...]
    b: tuple[str, ...]
    a_gt: tuple[str, ...] | None

    @property
    def has_gt(self) -> bool:
        return self.a_gt is not None


def _images(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by stem (sorted)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in found:
            raise DatasetError(f"{path}: two images share the stem '{path.stem}' ({found[path.stem].name}); "
                               "images are paired with their GT by stem")
        found[path.stem] = path
    if not found:
        raise DatasetError(f"{folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def _decode(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise DatasetError(f"{path}: not a readable image")
    return image


def _to_uint8(image: np.ndarray, path: Path) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    raise DatasetError(f"{path}: pixel type {image.dtype} is not 8- or 16-bit")


def load_a(path: str | Path, invert: bool = False) -> np.ndarray:
    """Domain A as uint8 (H, W) grayscale; ``invert`` makes bright cells dark (GOWT1-style)."""
    path = Path(path)
    image = _to_uint8(_decode(path, cv2.IMREAD_UNCHANGED), path)
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)
    return 255 - image if invert else image


def load_b(path: str | Path) -> np.ndarray:
    """Domain B as uint8 (H, W, 3) RGB.

    Raises:
        DatasetError: a 1-channel (or 2-channel) image, naming the file.
    """
    path = Path(path)
    image = _to_uint8(_decode(path, cv2.IMREAD_UNCHANGED), path)
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in (3, 4):
        raise DatasetError(f"{path}: domain B must be RGB, this image has {channels} channel"
                           f"{'s' if channels > 1 else ''}")
    return cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB)


def load_gt(path: str | Path) -> np.ndarray:
    """A GT mask as bool (H, W) (stored 0/255, grayscale or RGB with equal channels).

    Raises:
        DatasetError: values other than 0 and 255, or unequal colour channels.
    """
    path = Path(path)
    image = _decode(path, cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:
        if not all(np.array_equal(image[..., 0], image[..., c]) for c in range(1, min(3, image.shape[2]))):
            raise DatasetError(f"{path}: not a binary mask (its colour channels differ)")
        image = image[..., 0]
    top = np.iinfo(image.dtype).max if image.dtype.kind in "ui" else 1
    values = np.unique(image)
    odd = values[(values != 0) & (values != top)]
    if odd.size:
        raise DatasetError(f"{path}: not a binary mask (0/{top}); it has value {odd[0]}")
    return image == top


def _size(path: Path) -> tuple[int, int]:
    image = _decode(path, cv2.IMREAD_UNCHANGED)
    return image.shape[0], image.shape[1]


def _stable_unit(stem: str) -> float:
    """A number in [0, 1) from the stem alone (stable across runs, machines and file additions)."""
    return int.from_bytes(hashlib.sha256(stem.encode()).digest()[:8], "little") / 2**64


def _pick(files: dict[str, Path], split: str, fractions: Sequence[float]) -> dict[str, Path]:
    edges = np.cumsum(fractions)
    keep = {}
    for stem, path in files.items():
        which = SPLITS[min(int(np.searchsorted(edges, _stable_unit(stem), side="right")), 2)]
        if which == split:
            keep[stem] = path
    return keep


def split_names(root: str | Path) -> list[str]:
    """The splits of a ``<split>A`` layout (e.g. ``["test", "train"]``), or all three for ``A/ B/``."""
    root = Path(root)
    if (root / "A").is_dir():
        return list(SPLITS)
    return sorted(p.name[:-1] for p in root.iterdir() if p.is_dir() and p.name.endswith("A") and len(p.name) > 1)


def _folders(root: Path, split: str) -> tuple[Path, Path, Path, bool]:
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset directory")
    if (root / f"{split}A").is_dir() or (root / f"{split}B").is_dir():
        a, b, gt, flat = root / f"{split}A", root / f"{split}B", root / f"{split}A_GT", False
    elif (root / "A").is_dir() or (root / "B").is_dir():
        a, b, gt, flat = root / "A", root / "B", root / "A_GT", True
    else:
        raise DatasetError(f"{root}: no {split}A/ and {split}B/ folders (nor A/ and B/ with a split)")
    for folder, what in ((a, "domain A images"), (b, "domain B images")):
        if not folder.is_dir():
            raise DatasetError(f"{root}: no {folder.name}/ folder ({what})")
    return a, b, gt, flat


def open_split(root: str | Path, split: str = "train", *, fractions: Sequence[float] = (0.8, 0.0, 0.2),
               check_pixels: bool = True) -> UnalignedSplit:
    """The files of ``split``, paired and validated (see the module doc).

    Args:
        root: the dataset directory.
        split: ``train``, ``val``, ``test`` (or any ``<split>A`` folder's prefix).
        fractions: train, val, test fractions of the ``A/ B/`` layout.
        check_pixels: decode every GT and B image to check sizes, binarity and channels.

    Raises:
        DatasetError: naming the file or folder at fault.
    """
    root = Path(root).absolute()
    a_dir, b_dir, gt_dir, flat = _folders(root, split)
    a_files, b_files = _images(a_dir), _images(b_dir)
    gt_files = _images(gt_dir) if gt_dir.is_dir() else None
    if gt_files is not None:
        extra = sorted(set(gt_files) - set(a_files))
        if extra:
            raise DatasetError(f"{gt_files[extra[0]]}: GT file without a matching A image (no {a_dir.name}/"
                               f"{extra[0]}.*){f' and {len(extra) - 1} more' if len(extra) > 1 else ''}")
        missing = sorted(set(a_files) - set(gt_files))
        if missing:
            raise DatasetError(f"{a_files[missing[0]]}: A image without a GT mask in {gt_dir.name}/"
                               f"{f' ({len(missing) - 1} more)' if len(missing) > 1 else ''}")
    if flat:
        a_files, b_files = _pick(a_files, split, fractions), _pick(b_files, split, fractions)
        if not a_files or not b_files:
            raise DatasetError(f"{root}: the '{split}' split of A/ and B/ is empty with fractions "
                               f"{list(fractions)}; add images or change the split")
    stems = list(a_files)
    gt = None if gt_files is None else tuple(str(gt_files[s]) for s in stems)
    if check_pixels:
        if gt is not None:
            for stem, mask in zip(stems, gt):
                load_gt(mask)
                a_size, gt_size = _size(a_files[stem]), _size(Path(mask))
                if a_size != gt_size:
                    raise DatasetError(f"{mask}: size {gt_size[1]}x{gt_size[0]} differs from its A image "
                                       f"{a_files[stem].name} ({a_size[1]}x{a_size[0]})")
        for path in b_files.values():
            load_b(path)
    return UnalignedSplit(str(root), split, tuple(str(a_files[s]) for s in stems),
                          tuple(str(p) for p in b_files.values()), gt)


def crop_and_flip(images: Sequence[np.ndarray], load_size: int, crop: int, rng: np.random.Generator | None,
                  nearest: Sequence[bool] = ()) -> list[np.ndarray]:
    """Resize every image to ``load_size``, then one random ``crop`` and horizontal flip applied to
    all of them alike (an A image and its GT); ``rng`` None: resize straight to ``crop``.
    ``nearest[i]`` resizes image ``i`` with nearest-neighbour (masks)."""
    def resize(image: np.ndarray, side: int, near: bool) -> np.ndarray:
        if image.shape[:2] == (side, side):
            return image
        mode = cv2.INTER_NEAREST if near else cv2.INTER_AREA if side < image.shape[0] else cv2.INTER_CUBIC
        return cv2.resize(image, (side, side), interpolation=mode)

    near = list(nearest) + [False] * (len(images) - len(nearest))
    if rng is None:
        return [resize(im, crop, n) for im, n in zip(images, near)]
    y, x = (int(v) for v in rng.integers(0, load_size - crop + 1, size=2))
    flip = bool(rng.random() < 0.5)
    out = []
    for image, n in zip(images, near):
        patch = resize(image, load_size, n)[y:y + crop, x:x + crop]
        out.append(np.ascontiguousarray(patch[:, ::-1] if flip else patch))
    return out
