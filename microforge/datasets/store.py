"""Where a dataset lives: a local directory, or a prefix on an object store named by a URI.

:func:`open_store` takes a path, a ``file://`` URI, or any URI that ``pyarrow.fs`` understands
(``s3://bucket/prefix``, ``gs://``, ``abfs://``, ``hdfs://``); for other schemes it falls back to
an installed fsspec implementation (wrapped for pyarrow). Options go in the URI as pyarrow reads
them, e.g. ``s3://bucket/ds?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1``.

Every write is atomic, which is what makes resume safe: locally a file is written beside its
name and renamed into place; on an object store one upload (a PUT, or a multipart upload
completed at close) makes the object appear whole or not at all, so objects are written in place.
A :class:`Store` pickles as its URI, so Ray workers rebuild their own filesystem client.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..platform.errors import MicroforgeError
from ..platform.storage import atomic_write_bytes, ensure_writable_dir

__all__ = ["Store", "open_store", "is_uri"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Stores whose directories are only key prefixes: nothing to create before a write.
_PREFIX_STORES = ("S3FileSystem", "GcsFileSystem", "AzureFileSystem")


def is_uri(out: str | Path) -> bool:
    return isinstance(out, str) and _SCHEME.match(out) is not None


def _without_secrets(uri: str) -> str:
    """The URI to print: no user info (S3 keys may sit there) and no query options."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", uri).split("?", 1)[0]


def _filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for ``uri``.

    Raises:
        MicroforgeError: no installed filesystem handles the scheme (naming the package to
            install where fsspec knows it), or the filesystem refuses the URI.
    """
    import pyarrow.fs as pafs

    scheme = _SCHEME.match(uri).group(1).lower()  # type: ignore[union-attr]
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises ArrowInvalid, ArrowNotImplementedError, OSError
        if "Unrecognized filesystem type" not in str(exc):
            raise MicroforgeError(f"cannot open {_without_secrets(uri)}: {str(exc).splitlines()[0]}") from None
    try:
        import fsspec
        from fsspec.registry import known_implementations
    except ImportError:
        raise MicroforgeError(f"no filesystem for '{scheme}://' URIs is installed "
                              "(pyarrow has none): pip install fsspec and its package for that scheme") from None
    if scheme not in known_implementations and scheme not in fsspec.available_protocols():
        raise MicroforgeError(f"unknown URI scheme '{scheme}://' in {_without_secrets(uri)}; use a local path, "
                              "file://, s3://, gs://, abfs://, hdfs:// or a scheme of an installed fsspec package")
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except ImportError:
        package = known_implementations[scheme]["class"].split(".")[0]
        raise MicroforgeError(f"no filesystem for '{scheme}://' URIs is installed: pip install {package}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


class Store:
    """A dataset root; paths given to its methods are ``/``-separated and relative to it."""

    def __init__(self, uri: str | Path) -> None:
        self.uri = str(uri)
        self._fs: Any = None
        if is_uri(self.uri) and not self.uri.lower().startswith("file://"):
            self.local: Path | None = None
            self._fs, self._root = _filesystem(self.uri)
            self._root = self._root.rstrip("/")
            self._made_dirs: set[str] = set()
        else:
            self.local = Path(self.uri[len("file://"):] if is_uri(self.uri) else self.uri).expanduser().absolute()

    def __reduce__(self):
        return (Store, (self.uri,))

    def __str__(self) -> str:
        return str(self.local) if self.local is not None else _without_secrets(self.uri)

    def _path(self, rel: str) -> str:
        return f"{self._root}/{rel}" if rel else self._root

    def read_bytes(self, rel: str) -> bytes:
        """Raises FileNotFoundError for a missing file."""
        if self.local is not None:
            return (self.local / rel).read_bytes()
        with self._fs.open_input_stream(self._path(rel)) as fh:
            return fh.read()

    def read_range(self, rel: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (one ranged GET on an object store)."""
        if self.local is not None:
            with open(self.local / rel, "rb") as fh:
                fh.seek(offset)
                return fh.read(length)
        with self._fs.open_input_file(self._path(rel)) as fh:
            return fh.read_at(length, offset)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``rel`` atomically (see the module doc)."""
        if self.local is not None:
            atomic_write_bytes(self.local / rel, data)
            return
        parent = self._path(rel).rsplit("/", 1)[0]
        if type(self._fs).__name__ not in _PREFIX_STORES and parent not in self._made_dirs:
            self._fs.create_dir(parent, recursive=True)
            self._made_dirs.add(parent)
        with self._fs.open_output_stream(self._path(rel)) as fh:
            fh.write(data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def size(self, rel: str) -> int | None:
        """The file's size, or None when it does not exist."""
        if self.local is not None:
            try:
                return os.stat(self.local / rel).st_size
            except FileNotFoundError:
                return None
        import pyarrow.fs as pafs

        info = self._fs.get_file_info(self._path(rel))
        return info.size if info.type == pafs.FileType.File else None

    def exists(self, rel: str) -> bool:
        return self.size(rel) is not None

    def names(self) -> list[str]:
        """The entries directly under the root (none when it does not exist)."""
        if self.local is not None:
            return sorted(p.name for p in self.local.iterdir()) if self.local.is_dir() else []
        import pyarrow.fs as pafs

        infos = self._fs.get_file_info(pafs.FileSelector(self._root, allow_not_found=True))
        return sorted(info.base_name for info in infos)

    def remove(self, rel: str) -> None:
        """Remove the file or the directory tree ``rel`` if it exists."""
        if self.local is not None:
            import shutil

            path = self.local / rel
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            return
        import pyarrow.fs as pafs

        info = self._fs.get_file_info(self._path(rel))
        if info.type == pafs.FileType.Directory:
            self._fs.delete_dir(self._path(rel))
        elif info.type == pafs.FileType.File:
            self._fs.delete_file(self._path(rel))


def open_store(out: str | Path, *, for_writing: bool = False) -> Store:
    """The :class:`Store` of ``out`` (a path or a URI; see the module doc).

    Raises:
        MicroforgeError: a URI no installed filesystem handles (naming the package to install),
            or, ``for_writing``, a local path that is not a writable directory. Nothing is
            written in either case.
    """
    store = Store(out)
    if store.local is not None and for_writing:
        store.local = ensure_writable_dir(store.local)
    return store
