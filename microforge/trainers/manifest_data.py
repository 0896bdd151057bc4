"""Training data read from a dataset directory through the manifest reader.

:class:`ManifestData` implements :class:`~microforge.trainers.data.TrainingData` with static
splits only: ``train`` (and ``val`` when the manifest has it) are built on the driver by
:func:`microforge.datasets.manifest.manifest_dataset` and split across the workers by Ray Train;
nothing is regenerated per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from microforge.datasets.manifest import column_kinds, manifest_dataset, read_manifest, split_counts
from microforge.platform.errors import ConfigError, DatasetError
from microforge.platform.transforms import transform_from_spec

if TYPE_CHECKING:
    import ray.data

    from .data import EpochContext

__all__ = ["ManifestData"]


@dataclass(frozen=True)
class ManifestData:
    """The ``train`` and (optional) ``val`` splits of a dataset directory.

    Args:
        dataset_dir: the dataset directory (stored absolute, so a resumed run finds it).
        columns: the columns of each batch; they must be numeric, since batches become tensors:
            image columns (decoded), numeric manifest columns and ``index``. None for ``image``,
            ``mask`` when the manifest has one, and ``index``.
        transform: a transform spec applied to ``image`` in the read task (float32 in the model's
            range); None keeps the stored dtype.
        train_split, val_split: the manifest's split values read as ``train`` and ``val``. A
            missing ``val_split`` means no validation when it is the default ``"val"`` and is an
            error otherwise; None for no validation.
        rows_per_task: rows decoded per Ray Data task; cpus_per_task: CPUs each task reserves.

    Raises:
        DatasetError: an unreadable dataset, a missing split, or an unknown column.
        ConfigError: a non-numeric column, an invalid transform or task setting.
    """

    dataset_dir: str
    columns: tuple[str, ...] | None = None
    transform: dict[str, Any] | None = None
    train_split: str = "train"
    val_split: str | None = "val"
    rows_per_task: int = 16
    cpus_per_task: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset_dir", str(Path(self.dataset_dir).absolute()))
        if self.columns is not None:
            object.__setattr__(self, "columns", tuple(self.columns))
        if self.transform is not None:
            object.__setattr__(self, "transform", transform_from_spec(self.transform).spec())
        if self.rows_per_task < 1 or self.cpus_per_task <= 0:
            raise ConfigError("rows_per_task must be >= 1 and cpus_per_task > 0")
        counts = self._counts
        if self.train_split not in counts:
            raise DatasetError(f"{self.dataset_dir} has no split '{self.train_split}' to train on; "
                               f"its splits: {', '.join(counts)}")
        if self.val_split is not None and self.val_split != "val" and self.val_split not in counts:
            raise DatasetError(f"{self.dataset_dir} has no split '{self.val_split}' to validate on; "
                               f"its splits: {', '.join(counts)}")
        kinds = self._kinds
        for name in self.read_columns():
            if name not in kinds:
                raise DatasetError(f"the manifest of {self.dataset_dir} has no column '{name}'; "
                                   f"its columns: {', '.join(kinds)}")
            if kinds[name] == "text":
                raise ConfigError(f"column '{name}' cannot become a training tensor; choose image or numeric "
                                  f"columns of: {', '.join(n for n, k in kinds.items() if k != 'text')}")

    @cached_property
    def _manifest_info(self) -> tuple[dict[str, int], dict[str, str]]:
        """Rows per split, and each column's kind: image, value (numeric) or text (anything else)."""
        import pyarrow as pa

        table = read_manifest(self.dataset_dir)
        kinds = {"index": "value"}
        for name, kind in column_kinds(table).items():
            dtype = table.column(name).type
            numeric = pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_boolean(dtype)
            kinds[name] = "text" if kind == "value" and not numeric else kind
        return split_counts(table), kinds

    @property
    def _counts(self) -> dict[str, int]:
        return self._manifest_info[0]

    @property
    def _kinds(self) -> dict[str, str]:
        return self._manifest_info[1]

    def read_columns(self) -> tuple[str, ...]:
        """The columns of each batch."""
        if self.columns is not None:
            return self.columns
        return ("image", *(("mask",) if self._kinds.get("mask") == "image" else ()), "index")

    def splits(self) -> dict[str, str]:
        """Training split name -> manifest split value, for the splits this data has."""
        out = {"train": self.train_split}
        if self.val_split is not None and self.val_split in self._counts:
            out["val"] = self.val_split
        return out

    def describe(self) -> dict[str, Any]:
        """Exactly the constructor's keyword arguments (JSON), so ``ManifestData(**describe())`` rebuilds it."""
        return {
            "dataset_dir": self.dataset_dir,
            "columns": None if self.columns is None else list(self.columns),
            "transform": self.transform,
            "train_split": self.train_split,
            "val_split": self.val_split,
            "rows_per_task": self.rows_per_task,
            "cpus_per_task": self.cpus_per_task,
        }

    def driver_datasets(self) -> dict[str, "ray.data.Dataset"]:
        return {
            name: manifest_dataset(self.dataset_dir, split, columns=self.read_columns(), transform=self.transform,
                                   rows_per_task=self.rows_per_task, cpus_per_task=self.cpus_per_task)
            for name, split in self.splits().items()
        }

    def epoch_splits(self) -> tuple[str, ...]:
        return ()

    def epoch_dataset(self, split: str, ctx: "EpochContext") -> "ray.data.Dataset":
        raise ConfigError(f"ManifestData has only static splits; '{split}' is not regenerated per epoch")

    def rows_per_worker(self, split: str, world_size: int) -> int | None:
        """Rows of ``split`` each worker reads per epoch (Ray Train splits static splits equally)."""
        manifest_split = self.splits().get(split)
        if manifest_split is None:
            return None
        return self._counts[manifest_split] // world_size

