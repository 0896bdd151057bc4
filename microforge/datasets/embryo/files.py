"""Output rules shared by the embryo commands: a destination that is missing or empty, built in a
temporary directory beside it and moved into place only when complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

from ...platform.errors import DatasetError
from ...platform.storage import dir_mode, ensure_writable_dir

T = TypeVar("T")


def check_destination(dest: str | Path, what: str) -> Path:
    """``dest`` as an absolute path, which must be missing or an empty directory and writable.

    Raises:
        DatasetError: a file, a non-empty directory, or no write access (nothing is created).
    """
    dest = Path(dest).expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DatasetError(f"{what} {dest} is not empty; choose a new or empty directory")
    try:
        ensure_writable_dir(dest)
    except Exception as exc:  # MicroforgeError: surfaced as a dataset error with the same message
        raise DatasetError(str(exc)) from None
    return dest


def build_then_move(dest: Path, fill: Callable[[Path], T]) -> T:
    """Run ``fill(tmp)`` in a temporary directory on ``dest``'s file system, then rename it to
    ``dest`` (missing or empty, see :func:`check_destination`); on any failure remove it, so
    ``dest`` never holds half an output."""
    anchor = dest.parent
    while not anchor.exists():  # parents are created only once the output is complete
        anchor = anchor.parent
    tmp = Path(tempfile.mkdtemp(dir=anchor, prefix=f".{dest.name}.partial-"))
    try:
        os.chmod(tmp, dir_mode())  # mkdtemp's 0700 would outlive the rename
        result = fill(tmp)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest.rmdir()  # empty (checked), so nothing is lost
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result
