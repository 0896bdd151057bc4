"""Training data of the crystal detector: crystals rendered per epoch, or a dataset directory.

Both give batches of equal-shaped arrays (see :func:`~.targets.encode_targets`): ``image``
``(1, S, S)`` float32 in [0, 1] (``unit_range``), the dense targets, ``boxes`` padded to
``max_boxes`` and ``n_boxes``, and ``index``. Targets are computed in the Ray Data task that
renders or reads the image, so the training process only stacks tensors.

* :func:`render_crystal_tiles` is the batch renderer of
  :class:`~microforge.trainers.data.SyntheticData`: sample ``index`` is an ``S`` x ``S`` window,
  at a position drawn from ``(seed, index)``, of crystal image ``index // windows_per_image``
  resized by ``input_scale``, its boxes clipped to the window as dataset labels are, then
  (training) :func:`~.targets.augment`. A pure function of ``(config, seed, index)``. A
  1024 x 768 render costs 2-4 times a training step's share of a window, so each rendered
  image yields several windows (a task renders each of its images once; with W training ranks,
  which take every W-th sample, an image is rendered by up to min(W, windows_per_image) ranks).
* :class:`CrystalManifestData` reads a dataset directory written by ``microforge synth crystals``
  (or any manifest with an image column and DOTA or Ultralytics OBB label files) through the
  manifest reader. Its splits are static (Ray re-executes them unchanged each epoch), so training
  windows and augmentation draw from OS entropy to differ between epochs; validation windows are
  fixed by the row's index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from microforge.datasets.labels import parse_dota, parse_ultralytics_obb
from microforge.datasets.rotated import boxes_array
from microforge.platform.errors import ConfigError, DatasetError

from .targets import Augmentation, augment, check_scale, crop, encode_targets, rescale

if TYPE_CHECKING:
    import ray.data

__all__ = ["CrystalManifestData", "LABEL_COLUMNS", "TileSettings", "render_crystal_tiles", "sample_from_image",
           "train_settings", "window_sample"]

# Label columns a crystal dataset may have, in order of preference: (column, format).
LABEL_COLUMNS = (("path_labels_dota", "dota"), ("path_labels", "ultralytics"))
_CROP_STREAM = 7919  # a third SeedSequence key: the window and augmentation never share the renderer's draws


@dataclass(frozen=True)
class TileSettings:
    """Window side ``image_size`` (px, after the resize), output ``stride``, ``max_boxes`` kept per
    window for AP, ``min_visible_fraction`` of a rod cut by the window to keep it (as the dataset
    writer), ``input_scale``: the factor images are resized by before windows are cut (the network
    then sees rods this many times their size; the artifact records it for inference), and
    ``windows_per_image``: training windows cut from each rendered image."""

    image_size: int = 256
    stride: int = 4
    max_boxes: int = 512
    min_visible_fraction: float = 0.25
    input_scale: float = 1.0
    windows_per_image: int = 1

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.image_size % self.stride:
            raise ConfigError(f"image size {self.image_size} must be >= 8 and a multiple of {self.stride}")
        check_scale(self.input_scale)
        if not 1 <= self.windows_per_image <= 64:
            raise ConfigError(f"windows_per_image must be in [1, 64], got {self.windows_per_image}")


def train_settings(epoch: int, total_epochs: int) -> dict[str, Any]:
    """The renderer keyword arguments of a training epoch (the ``schedule`` of SyntheticData)."""
    return {"augmentation": True}


def _gray_unit(image: np.ndarray) -> np.ndarray:
    """Gray float32 in [0, 1] from uint8 / uint16 gray or BGR, or floats already in [0, 1]."""
    import cv2

    array = np.asarray(image)
    if array.ndim == 3:
        if array.shape[0] == 1:
            array = array[0]
        else:
            array = cv2.cvtColor(array, cv2.COLOR_BGR2GRAY) if array.shape[-1] == 3 else array[..., 0]
    if array.dtype.kind in "ui":
        return (array.astype(np.float32) / float(np.iinfo(array.dtype).max)).astype(np.float32)
    return array.astype(np.float32)


def sample_from_image(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, tile: TileSettings,
                      augmentation: bool) -> dict[str, np.ndarray]:
    """One training row: a random ``tile.image_size`` window of ``image`` with its boxes, augmented
    or not, as the image plus dense targets."""
    return window_sample(*rescale(_gray_unit(image), boxes, tile.input_scale), rng, tile, augmentation)


def window_sample(gray: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, tile: TileSettings,
                  augmentation: bool) -> dict[str, np.ndarray]:
    """:func:`sample_from_image` of an image already in [0, 1] and resized by ``tile.input_scale``."""
    size = tile.image_size
    h, w = gray.shape
    x0 = int(rng.integers(0, max(w - size, 0) + 1))
    y0 = int(rng.integers(0, max(h - size, 0) + 1))
    window, kept = crop(gray, boxes, x0, y0, size, tile.min_visible_fraction)
    if augmentation:
        window, kept = augment(window, kept, rng, Augmentation())
    out = encode_targets(kept, size, size, tile.stride, tile.max_boxes)
    out["image"] = np.clip(window, 0.0, 1.0)[None].astype(np.float32)
    return out


def _stack(rows: list[dict[str, np.ndarray]], indices: Sequence[int]) -> dict[str, np.ndarray]:
    out = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    out["index"] = np.asarray(indices, dtype=np.int64)
    return out


def render_crystal_tiles(config: dict[str, Any], seed: int, indices: Sequence[int], *,
                         augmentation: bool = False) -> dict[str, np.ndarray]:
    """Batch renderer (``render(config, seed, indices, **kwargs)``) of the detector's synthetic data.

    Args:
        config: ``{"crystal": CrystalConfig JSON, "tile": TileSettings fields}``.
        augmentation: flips, rotations, brightness / contrast / blur (training epochs).
    """
    from microforge.datasets.crystals import render_crystal

    tile = TileSettings(**config.get("tile", {}))
    rows, renders = [], {}
    for index in indices:
        image_index = int(index) // tile.windows_per_image
        if image_index not in renders:  # indices arrive in order: one image at a time is cached
            sample = render_crystal(config["crystal"], seed, image_index)
            renders = {image_index: rescale(_gray_unit(sample.image), boxes_array(sample.boxes), tile.input_scale)}
        rng = np.random.default_rng(np.random.SeedSequence([seed, int(index), _CROP_STREAM]))
        rows.append(window_sample(*renders[image_index], rng, tile, augmentation))
    return _stack(rows, indices)


def _parse_labels(text: str, fmt: str, width: int, height: int) -> np.ndarray:
    if fmt == "dota":
        return boxes_array(parse_dota(text))
    return boxes_array(parse_ultralytics_obb(text, width, height, ["Crystal"]))


def _encode_rows(batch: dict[str, np.ndarray], *, label_column: str, label_format: str, tile: dict[str, Any],
                 augmentation: bool, seed: int) -> dict[str, np.ndarray]:
    # Runs in a Ray Data task after the manifest reader decoded the image and read the label text.
    settings = TileSettings(**tile)
    rows, indices = [], batch["index"].tolist()
    for image, text, index in zip(batch["image"], batch[label_column], indices):
        height, width = np.shape(image)[:2]
        boxes = _parse_labels(str(text), label_format, width, height)
        rng = (np.random.default_rng() if augmentation
               else np.random.default_rng(np.random.SeedSequence([seed, int(index), _CROP_STREAM])))
        rows.append(sample_from_image(image, boxes, rng, settings, augmentation))
    return _stack(rows, indices)


@dataclass(frozen=True)
class CrystalManifestData:
    """The ``train`` and (when present) ``val`` splits of a crystal dataset directory, as windows
    with detector targets (see the module doc).

    Raises:
        DatasetError: no such dataset, no ``train`` split, or no OBB label column.
    """

    dataset_dir: str
    tile: dict[str, Any]
    seed: int = 0
    rows_per_task: int = 8
    cpus_per_task: float = 1.0

    def __post_init__(self) -> None:
        from microforge.trainers.manifest_data import ManifestData

        TileSettings(**self.tile)
        base = ManifestData(self.dataset_dir, columns=("image", "index"), rows_per_task=self.rows_per_task,
                            cpus_per_task=self.cpus_per_task)
        object.__setattr__(self, "dataset_dir", base.dataset_dir)
        object.__setattr__(self, "_base", base)
        kinds = base._kinds
        found = [(c, f) for c, f in LABEL_COLUMNS if kinds.get(c) == "text"]
        if not found:
            raise DatasetError(f"{self.dataset_dir} has no oriented-box labels (a manifest column "
                               f"{' or '.join(c for c, _ in LABEL_COLUMNS)}); crystals trains on DOTA or "
                               "Ultralytics OBB labels, e.g. from 'microforge synth crystals'")
        object.__setattr__(self, "_labels", found[0])

    def __reduce__(self):  # rebuilt from its arguments in the workers (the cached manifest stays behind)
        return (type(self), (self.dataset_dir, self.tile, self.seed, self.rows_per_task, self.cpus_per_task))

    def describe(self) -> dict[str, Any]:
        return {"dataset_dir": self.dataset_dir, "tile": dict(self.tile), "seed": self.seed,
                "rows_per_task": self.rows_per_task, "cpus_per_task": self.cpus_per_task}

    def splits(self) -> dict[str, str]:
        return self._base.splits()

    def driver_datasets(self) -> dict[str, "ray.data.Dataset"]:
        from microforge.datasets.manifest import manifest_dataset

        column, fmt = self._labels
        out = {}
        for name, split in self.splits().items():
            dataset = manifest_dataset(self.dataset_dir, split, columns=("image", column, "index"),
                                       rows_per_task=self.rows_per_task, cpus_per_task=self.cpus_per_task)
            out[name] = dataset.map_batches(
                _encode_rows, batch_size=self.rows_per_task, num_cpus=self.cpus_per_task,
                fn_kwargs={"label_column": column, "label_format": fmt, "tile": dict(self.tile),
                           "augmentation": name == "train", "seed": self.seed})
        return out

    def epoch_splits(self) -> tuple[str, ...]:
        return ()

    def epoch_dataset(self, split: str, ctx: Any) -> "ray.data.Dataset":
        raise ConfigError(f"CrystalManifestData has only static splits; '{split}' is not regenerated per epoch")

    def rows_per_worker(self, split: str, world_size: int) -> int | None:
        return self._base.rows_per_worker(split, world_size)
