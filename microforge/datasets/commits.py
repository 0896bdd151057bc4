"""How a sample or a shard is committed to a dataset, and how a re-run knows it is complete.

A sample of the ``files`` layout is its files, then ``meta/0000042.json`` (row, config hash,
SHA-256 of each file); a shard is ``shards/000003.tar``, then ``meta/shard-000003.json`` (rows,
index range, size, SHA-256). The meta file is written last, atomically: its presence marks the
sample or shard complete, and a re-run reuses it while the files still match it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from .shards import shard_path
from .store import Store

META_DIR = "meta"


def sample_stem(index: int) -> str:
    return f"{index:07d}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def as_store(out: Store | str | Path) -> Store:
    return out if isinstance(out, Store) else Store(out)


def meta_path(out: str | Path, index: int) -> Path:
    return Path(out) / META_DIR / f"{sample_stem(index)}.json"


def _meta_rel(index: int) -> str:
    return f"{META_DIR}/{sample_stem(index)}.json"


def shard_meta_rel(shard: int) -> str:
    return f"{META_DIR}/shard-{shard:06d}.json"


def load_complete_row(out: Store | str | Path, index: int, config_hash: str) -> dict[str, Any] | None:
    """The sample's manifest row if its meta file exists and every file matches it, else None."""
    store = as_store(out)
    try:
        meta = json.loads(store.read_bytes(_meta_rel(index)))
        if meta.get("config_hash") != config_hash:
            return None
        for rel, digest in meta["files"].items():
            if sha256(store.read_bytes(rel)) != digest:
                return None
        return meta["row"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def commit_sample(out: Store | str | Path, index: int, config_hash: str, row: dict[str, Any],
                  files: Mapping[str, bytes]) -> None:
    """Write a sample's files, then its meta file (row, config hash, SHA-256 of each file).

    The meta file is written last and atomically: its presence marks the sample complete, and
    :func:`load_complete_row` reuses the row while every file still matches it.
    """
    store = as_store(out)
    for rel, data in files.items():
        store.write_bytes(rel, data)
    meta = {"config_hash": config_hash, "row": row, "files": {rel: sha256(data) for rel, data in files.items()}}
    store.write_text(_meta_rel(index), json.dumps(meta, sort_keys=True, indent=1))


def load_complete_shard(store: Store, shard: int, config_hash: str, indices: range) -> list[dict[str, Any]] | None:
    """The rows of a shard if its meta file exists and the shard matches it, else None.

    A local shard is checked by its SHA-256; on an object store by its size only, since an
    upload appears whole or not at all and hashing would download every shard again.
    """
    try:
        meta = json.loads(store.read_bytes(shard_meta_rel(shard)))
        rel = shard_path(shard)
        if (meta.get("config_hash") != config_hash or meta["indices"] != [indices.start, indices.stop]
                or store.size(rel) != meta["size"]):
            return None
        if store.local is not None and sha256(store.read_bytes(rel)) != meta["sha256"]:
            return None
        return meta["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
