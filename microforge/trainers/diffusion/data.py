"""Training data of the DDPM: an embryo image folder, and another one (or the same) for validation.

An image folder holds one set (its manifest's single split: ``train``, ``val`` or ``test``), so
held-out images come from a second folder; :class:`FolderPairData` reads each through
:class:`~microforge.trainers.manifest_data.ManifestData` and offers them as the ``train`` and
``val`` splits of one :class:`~microforge.trainers.data.TrainingData`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from microforge.platform.errors import DatasetError
from microforge.trainers.manifest_data import ManifestData

if TYPE_CHECKING:
    import ray.data

    from microforge.trainers.data import EpochContext

__all__ = ["COLUMNS", "FolderPairData", "TRANSFORM", "folder_split"]

# uint8 gray divided by 255, mapped to [-1, 1]: the range DDPM noise is scaled for.
TRANSFORM = {"name": "signed_unit", "params": {}}
COLUMNS = ("image", "phase_index", "index")


def folder_split(folder: str) -> str:
    """The one split of an image folder.

    Raises:
        DatasetError: not a dataset, or a dataset with several splits or no ``phase_index``.
    """
    from microforge.datasets.manifest import manifest_splits, read_manifest

    splits = [name for name, rows in manifest_splits(folder).items() if rows]
    if len(splits) != 1:
        raise DatasetError(f"{folder} holds the splits {', '.join(splits) or 'none'}; an embryo image folder "
                           "holds one set (microforge data embryo image-folder)")
    if "phase_index" not in read_manifest(folder).column_names:
        raise DatasetError(f"{folder} has no phase_index column: not an embryo image folder "
                           "(microforge data embryo image-folder)")
    return splits[0]


@dataclass(frozen=True)
class FolderPairData:
    """``train`` from ``train_dir``, ``val`` from ``val_dir`` (None: no validation)."""

    train_dir: str
    val_dir: str | None = None
    rows_per_task: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "train_dir", str(Path(self.train_dir).absolute()))
        if self.val_dir is not None:
            object.__setattr__(self, "val_dir", str(Path(self.val_dir).absolute()))
        _ = self._parts  # unreadable folders fail here, on the driver

    @cached_property
    def _parts(self) -> dict[str, ManifestData]:
        parts = {"train": self.train_dir, "val": self.val_dir}
        return {name: ManifestData(folder, columns=COLUMNS, transform=TRANSFORM, train_split=folder_split(folder),
                                   val_split=None, rows_per_task=self.rows_per_task)
                for name, folder in parts.items() if folder is not None}

    def __getstate__(self) -> dict[str, Any]:
        # The workers rebuild the ManifestData views (cheap) rather than receive them.
        return {"train_dir": self.train_dir, "val_dir": self.val_dir, "rows_per_task": self.rows_per_task}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def describe(self) -> dict[str, Any]:
        return {"train_dir": self.train_dir, "val_dir": self.val_dir, "rows_per_task": self.rows_per_task}

    def splits(self) -> dict[str, str]:
        return {name: part.train_split for name, part in self._parts.items()}

    def driver_datasets(self) -> dict[str, "ray.data.Dataset"]:
        return {name: part.driver_datasets()["train"] for name, part in self._parts.items()}

    def epoch_splits(self) -> tuple[str, ...]:
        return ()

    def epoch_dataset(self, split: str, ctx: "EpochContext") -> "ray.data.Dataset":
        raise DatasetError(f"FolderPairData has only static splits; '{split}' is not regenerated per epoch")

    def rows_per_worker(self, split: str, world_size: int) -> int | None:
        part = self._parts.get(split)
        return None if part is None else part.rows_per_worker("train", world_size)
