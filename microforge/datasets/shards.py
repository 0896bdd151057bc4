"""WebDataset-style tar shards: the ``shards`` layout of a dataset.

Shard ``k`` (``shards/000003.tar``) holds samples ``k * shard_size`` up to ``(k + 1) * shard_size - 1``
in index order; sample ``0000042``'s files are the members ``0000042.<field>``, where a file the
kind names ``images/0000042.png`` becomes ``0000042.images.png`` (its folder is the field), and
``0000042.json`` holds its manifest row. WebDataset readers (``webdataset``,
``ray.data.read_webdataset``) group members by that key without the manifest.

The bytes are a function of the samples alone: USTAR headers with mtime 0, uid/gid 0, no user
names, members in a fixed order. (Ray Data's own ``write_webdataset`` stamps each member with the
time of writing and writes to the final name, so it can give neither byte-identical shards nor
an atomic commit.) Each manifest row records its sample's ``shard``, ``shard_offset`` and
``shard_size``: the byte range of its members, so one ranged read fetches one sample.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import PurePosixPath
from typing import Any, Sequence

from ..platform.errors import DatasetError

__all__ = ["SHARDS_DIR", "ShardBuilder", "member_name", "read_samples", "shard_count", "shard_indices",
           "shard_path"]

SHARDS_DIR = "shards"
SHARD_COLUMNS = ("shard", "shard_offset", "shard_size")


def shard_path(shard: int) -> str:
    return f"{SHARDS_DIR}/{shard:06d}.tar"


def shard_count(n: int, shard_size: int) -> int:
    return -(-n // shard_size)


def shard_indices(shard: int, n: int, shard_size: int) -> range:
    return range(shard * shard_size, min(n, (shard + 1) * shard_size))


def member_name(stem: str, rel: str) -> str:
    """The tar member of the file ``rel`` (a path the kind names) of sample ``stem``."""
    path = PurePosixPath(rel)
    if path.stem == stem:
        field = ".".join(path.parent.parts)
        return f"{stem}.{field}{path.suffix}" if field else f"{stem}{path.suffix}"
    return f"{stem}.{rel.replace('/', '.')}"


class ShardBuilder:
    """Builds one shard in memory (a shard of 128 default crystal images is ~55 MB): an object
    store commits an upload only when it is closed whole, so nothing half-written can appear."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buffer, mode="w", format=tarfile.USTAR_FORMAT)

    def add(self, stem: str, files: dict[str, bytes], row_json: bytes) -> tuple[int, int]:
        """Append a sample's files and its row; returns the byte range (offset, size) of its members."""
        start = self._tar.offset
        for name, data in [*((member_name(stem, rel), data) for rel, data in files.items()),
                           (f"{stem}.json", row_json)]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self._tar.addfile(info, io.BytesIO(data))
        return start, self._tar.offset - start

    def finish(self) -> bytes:
        self._tar.close()
        return self._buffer.getvalue()


def _members(data: bytes, where: str) -> dict[str, bytes]:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    except (tarfile.TarError, OSError) as exc:
        raise DatasetError(f"{where} is not a readable tar shard ({exc})") from None


def read_samples(store: Any, rows: Sequence[dict[str, Any]]) -> list[dict[str, bytes]]:
    """The tar members of each row (by member name), with one ranged read per run of rows that
    lie in the same shard.

    Raises:
        DatasetError: a missing shard, or bytes that are not the row's members.
    """
    out: list[dict[str, bytes]] = []
    start = 0
    while start < len(rows):
        end = start + 1
        while end < len(rows) and rows[end]["shard"] == rows[start]["shard"]:
            end += 1
        group = rows[start:end]
        shard = group[0]["shard"]
        first = min(r["shard_offset"] for r in group)
        last = max(r["shard_offset"] + r["shard_size"] for r in group)
        try:
            data = store.read_range(shard, first, last - first)
        except FileNotFoundError:
            raise DatasetError(f"{shard} is named in the manifest but does not exist") from None
        for row in group:
            offset = row["shard_offset"] - first
            piece = data[offset:offset + row["shard_size"]]
            if len(piece) != row["shard_size"]:
                raise DatasetError(f"{shard} is shorter than the manifest says (truncated?)")
            out.append(_members(piece, f"{shard} at byte {row['shard_offset']}"))
        start = end
    return out
