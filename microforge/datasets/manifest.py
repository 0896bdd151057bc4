"""The one manifest reader: any dataset directory as a Ray Dataset of decoded samples.

A dataset directory (or a prefix on an object store named by a URI, see :mod:`.store`) holds
``dataset.json`` and ``manifest.parquet`` (one row per sample, see
:mod:`microforge.datasets.writer`); every file a row names is a path relative to the directory,
or, in the ``shards`` layout (rows with ``shard``, ``shard_offset`` and ``shard_size``), the
sample's member of that tar shard (:mod:`.shards`), read with one ranged read per run of rows in
a shard, never extracted. :func:`manifest_dataset` turns the rows of one split into a Ray Dataset
whose file columns hold the files' contents, decoded in Ray Data tasks (never on the driver):

* an **image column** (every value ends in ``.png``, ``.jpg``, ``.jpeg``, ``.tif`` or ``.tiff``,
  e.g. ``image`` or ``mask``) holds the decoded array in its stored dtype (uint8 stays uint8,
  uint16 stays uint16): TIFF through tifffile, the others through OpenCV ``IMREAD_UNCHANGED``.
  Colour images come back in OpenCV's BGR channel order, the project's convention (a colour
  TIFF, stored as RGB, is reordered to BGR), so an array written by ``encode_image`` reads back
  unchanged;
* a **text column** (every value ends in ``.txt`` or ``.json``, e.g. ``path_labels_dota``)
  holds the file's text;
* every other column is passed through as it is in the manifest.

A column keeps its manifest name. Splits come from the manifest's ``split`` column (``train``,
``val``, ``test``, or any other value); a manifest without a ``split`` column has every row in
``train``. Each row carries ``index`` (the manifest's ``index`` column, or the row's position in
the manifest when it has none) and ``split``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..platform.config import suggest
from ..platform.errors import DatasetError, MicroforgeError
from .shards import SHARD_COLUMNS, member_name, read_samples
from .store import Store, is_uri

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

    from ..platform.transforms import Transform

__all__ = [
    "DEFAULT_SPLIT",
    "IMAGE_SUFFIXES",
    "TEXT_SUFFIXES",
    "column_kinds",
    "decode_image",
    "manifest_dataset",
    "manifest_splits",
    "read_manifest",
    "split_counts",
]

MANIFEST_FILE = "manifest.parquet"
INFO_FILE = "dataset.json"
DEFAULT_SPLIT = "train"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TEXT_SUFFIXES = (".txt", ".json")
_SPLIT_ORDER = ("train", "val", "test")


def _open(path: str | Path) -> Store:
    """The dataset's store; a local path or URI must name an existing dataset location."""
    try:
        store = Store(path)
    except MicroforgeError as exc:
        raise DatasetError(str(exc)) from None
    if store.local is not None and not store.local.is_dir():
        raise DatasetError(f"dataset directory {store} does not exist")
    return store


def read_info(path: str | Path) -> dict[str, Any]:
    """The dataset's ``dataset.json``.

    Raises:
        DatasetError: no such dataset, or no readable ``dataset.json``.
    """
    store = _open(path)
    try:
        info = json.loads(store.read_bytes(INFO_FILE).decode("utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{store} has no {INFO_FILE} (not a microforge dataset)") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{store}/{INFO_FILE} is not readable JSON ({exc})") from None
    if not isinstance(info, dict):
        raise DatasetError(f"{store}/{INFO_FILE} is not a JSON object")
    return info


def read_manifest(path: str | Path, *, require_complete: bool = True) -> "pa.Table":
    """The manifest of the dataset ``path`` (a directory or URI) as a pyarrow Table (in manifest order).

    Raises:
        DatasetError: no such dataset, no (or an unreadable) ``dataset.json`` or
            ``manifest.parquet``, a dataset whose ``dataset.json`` says its generation is
            incomplete (unless not ``require_complete``), or an empty manifest.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    info = read_info(path)
    store = _open(path)
    if require_complete and info.get("status", "complete") != "complete":
        raise DatasetError(f"{store} is an incomplete dataset (status '{info.get('status')}'); "
                           "re-run the command that generated it to complete it")
    try:
        data = store.read_bytes(MANIFEST_FILE)
    except FileNotFoundError:
        raise DatasetError(f"{store} has no {MANIFEST_FILE} (not a complete microforge dataset)") from None
    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DatasetError(f"{store}/{MANIFEST_FILE} is not a readable Parquet file ({exc})") from None
    if table.num_rows == 0:
        raise DatasetError(f"{store}/{MANIFEST_FILE} has no rows")
    return table


def _split_values(table: "pa.Table") -> list[str]:
    if "split" not in table.column_names:
        return [DEFAULT_SPLIT] * table.num_rows
    values = table.column("split").to_pylist()
    if any(not isinstance(v, str) or not v for v in values):
        raise DatasetError("the manifest's 'split' column must hold a non-empty split name in every row")
    return values


def split_counts(table: "pa.Table") -> dict[str, int]:
    """Rows per split of a manifest table (see :func:`manifest_splits`)."""
    counts: dict[str, int] = {}
    for value in _split_values(table):
        counts[value] = counts.get(value, 0) + 1
    known = [s for s in _SPLIT_ORDER if s in counts]
    return {s: counts[s] for s in known + sorted(set(counts) - set(known))}


def manifest_splits(path: str | Path) -> dict[str, int]:
    """Rows per split of the dataset ``path``: ``train``, ``val``, ``test`` first, then the rest.

    Splits come from the manifest's ``split`` column; without one, every row is in ``train``.

    Raises:
        DatasetError: as :func:`read_manifest`.
    """
    return split_counts(read_manifest(path))


# Columns that never name files inside the dataset: ``source`` is the path (outside the dataset)
# a row was made from, kept as provenance; ``shard`` is read through the file columns.
PLAIN_COLUMNS = ("split", "source", "shard")


def column_kinds(table: "pa.Table") -> dict[str, str]:
    """``"image"``, ``"text"`` or ``"value"`` for each manifest column (see the module doc)."""
    import pyarrow as pa

    kinds = {}
    for name in table.column_names:
        kind = "value"
        column = table.column(name)
        if name not in PLAIN_COLUMNS and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            suffixes = {Path(v).suffix.lower() for v in column.to_pylist() if v is not None}
            if suffixes and suffixes <= set(IMAGE_SUFFIXES):
                kind = "image"
            elif suffixes and suffixes <= set(TEXT_SUFFIXES):
                kind = "text"
        kinds[name] = kind
    return kinds


def _check_inside(root: Store, rel: Any, column: str) -> None:
    if not isinstance(rel, str) or not rel:
        raise DatasetError(f"manifest column '{column}' has an empty path")
    normal = os.path.normpath(rel)
    if os.path.isabs(rel) or normal == ".." or normal.startswith(".." + os.sep):
        raise DatasetError(f"manifest column '{column}' names '{rel}', which is outside the dataset "
                           f"directory {root}; paths must be relative to it")


def decode_image(path: str | Path, data: bytes | None = None) -> np.ndarray:
    """Decode one image file (or ``data``, the bytes of a file named ``path``) in its stored dtype
    (see the module doc for the channel order).

    Raises:
        DatasetError: a missing or undecodable file.
    """
    path = Path(path)
    try:
        if data is None:
            data = path.read_bytes()
        if path.suffix.lower() in (".tif", ".tiff"):
            import io

            import tifffile

            image = np.asarray(tifffile.imread(io.BytesIO(data)))
            if image.ndim == 3 and image.shape[-1] in (3, 4):
                image = np.ascontiguousarray(image[..., [2, 1, 0, 3][: image.shape[-1]]])  # RGB(A) -> BGR(A)
            return image
        import cv2

        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except FileNotFoundError:
        raise DatasetError(f"{path} is named in the manifest but does not exist") from None
    except Exception as exc:  # tifffile and OpenCV raise several types for a corrupt file
        raise DatasetError(f"{path} cannot be decoded ({exc})") from None
    if image is None:
        raise DatasetError(f"{path} cannot be decoded as an image")
    return image


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """One array when the shapes agree, else an object array of arrays (a ragged column)."""
    if arrays and all(a.shape == arrays[0].shape and a.dtype == arrays[0].dtype for a in arrays):
        return np.stack(arrays)
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


def _file_reader(store: Store, batch: dict[str, np.ndarray]):
    """``read(column, row) -> bytes`` for the file columns of a batch: from the row's shard, or
    (files layout) from the file itself."""
    if "shard" in batch:
        keys = ("index", *SHARD_COLUMNS)
        rows = [dict(zip(keys, values)) for values in zip(*(batch[k].tolist() for k in keys))]
        members = read_samples(store, rows)

        def read(column: str, i: int) -> bytes:
            rel = batch[column][i]
            try:
                return members[i][member_name(f"{rows[i]['index']:07d}", rel)]
            except KeyError:
                raise DatasetError(f"{rows[i]['shard']} has no member for '{rel}'") from None
        return read

    def read_file(column: str, i: int) -> bytes:
        rel = batch[column][i]
        try:
            return store.read_bytes(rel)
        except FileNotFoundError:
            raise DatasetError(f"{store}/{rel} is named in the manifest but does not exist") from None
    return read_file


def _decode_batch(batch: dict[str, np.ndarray], *, root: str, images: list[str], texts: list[str],
                  transform: dict[str, Any] | None, columns: list[str]) -> dict[str, np.ndarray]:
    # Runs in a Ray Data task: file columns are replaced by the files' contents.
    store = Store(root)
    read = _file_reader(store, batch)
    rows = range(len(next(iter(batch.values()))))
    out = {name: batch[name] for name in columns if name not in images + texts}
    for name in images:
        if "shard" in batch or store.local is None:
            decoded = [decode_image(batch[name][i], read(name, i)) for i in rows]
        else:  # a local file: named in errors by its full path
            decoded = [decode_image(store.local / rel) for rel in batch[name].tolist()]
        if name == "image" and transform is not None:
            from ..platform.transforms import transform_from_spec

            apply = transform_from_spec(transform).apply
            decoded = [apply(image) for image in decoded]
        out[name] = _stack(decoded)
    for name in texts:
        out[name] = np.array([read(name, i).decode("utf-8") for i in rows], dtype=object)
    return {name: out[name] for name in columns}


def manifest_dataset(
    path: str | Path,
    split: str = DEFAULT_SPLIT,
    *,
    columns: Sequence[str] | None = None,
    transform: "Mapping[str, Any] | str | Transform | None" = None,
    rows_per_task: int = 16,
    cpus_per_task: float = 1.0,
) -> "ray.data.Dataset":
    """The rows of ``split`` of the dataset ``path`` as a lazy Ray Dataset, in manifest order.

    Args:
        path: the dataset directory.
        split: a value of the manifest's ``split`` column; without one, every row is in ``train``.
        columns: the columns of each row (manifest columns, plus ``index`` and ``split`` which
            always exist); None for all of them.
        transform: a transform spec (:func:`microforge.platform.transforms.transform_from_spec`)
            applied to the ``image`` column in the read task, giving float32 in the model's range;
            None keeps the stored dtype.
        rows_per_task: rows decoded per Ray Data task (its block size); cpus_per_task: CPUs each
            task reserves.

    Raises:
        DatasetError: as :func:`read_manifest`, a split the manifest does not have, an unknown
            column, or a file path that is absolute or leaves the dataset directory.
        ConfigError: an invalid transform spec.
    """
    import pyarrow as pa
    import ray.data

    from ..platform.errors import ConfigError
    from ..platform.transforms import transform_from_spec

    if rows_per_task < 1 or cpus_per_task <= 0:
        raise ConfigError("rows_per_task must be >= 1 and cpus_per_task > 0")
    spec = None if transform is None else transform_from_spec(transform).spec()
    root = _open(path if is_uri(path) else Path(path).absolute())
    table = read_manifest(root.uri)
    splits = _split_values(table)
    if split not in splits:
        raise DatasetError(f"{root} has no split '{split}'{suggest(split, list(split_counts(table)))}; "
                           f"its splits: {', '.join(split_counts(table))}")
    kinds = column_kinds(table)
    if "index" not in table.column_names:
        table = table.append_column("index", pa.array(range(table.num_rows), pa.int64()))
    if "split" not in table.column_names:
        table = table.append_column("split", pa.array(splits, pa.string()))
    available = table.column_names
    wanted = list(available if columns is None else columns)
    unknown = [c for c in wanted if c not in available]
    if unknown:
        raise DatasetError(f"the manifest of {root} has no column '{unknown[0]}'{suggest(unknown[0], available)}; "
                           f"its columns: {', '.join(available)}")
    if not wanted or len(set(wanted)) != len(wanted):
        raise DatasetError(f"columns must name each column once, got {wanted}")
    # Shard rows carry what locates their members, dropped again after decoding.
    located = wanted + [c for c in ("index", *SHARD_COLUMNS) if "shard" in available and c not in wanted]
    rows = table.filter(pa.array([s == split for s in splits])).select(located)
    images = [c for c in wanted if kinds.get(c) == "image"]
    texts = [c for c in wanted if kinds.get(c) == "text"]
    for name in images + texts:
        for rel in rows.column(name).to_pylist():
            _check_inside(root, rel, name)
    if "shard" in available:
        for rel in rows.column("shard").to_pylist():
            _check_inside(root, rel, "shard")

    blocks = [rows.slice(start, rows_per_task) for start in range(0, rows.num_rows, rows_per_task)]
    dataset = ray.data.from_arrow(blocks).map_batches(
        _decode_batch,
        batch_size=rows_per_task,
        num_cpus=cpus_per_task,
        fn_kwargs={"root": root.uri, "images": images, "texts": texts, "transform": spec,
                   "columns": wanted},
    )
    # Rows in manifest order whatever the task timing; no progress bars (read once per epoch).
    dataset.context.execution_options.preserve_order = True
    dataset.context.enable_progress_bars = False
    return dataset
