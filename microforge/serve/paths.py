"""Resolving request-supplied names inside the data root or the models directory.

Every name or path a request carries goes through :func:`resolve_inside`: absolute paths,
``..`` components, backslashes and control characters are refused before touching the disk,
and the resolved path (symlinks followed) must still lie inside the root.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from microforge.platform.errors import MicroforgeError

# A single file or preset name: letters, digits, '_', '-', '.', not starting with '.'.
# The longest file or folder name most file systems store (longer ones fail with ENAMETOOLONG).
MAX_COMPONENT_BYTES = 255
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\- ]{0,127}$")


class PathRejected(MicroforgeError):
    """A request named a path outside the allowed root; ``status`` is the HTTP code to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class NotFound(MicroforgeError):
    """A request named something that does not exist."""

    status = 404


def check_relative(name: str, what: str = "path") -> PurePosixPath:
    """Parse ``name`` as a relative POSIX path without ``..``, refusing anything else (400)."""
    if not isinstance(name, str) or not name.strip():
        raise PathRejected(f"{what} is empty")
    if len(name) > 1024 or any(ord(c) < 32 for c in name) or "\\" in name:
        raise PathRejected(f"{what} '{name[:80]}' contains characters that are not allowed")
    path = PurePosixPath(name)
    if any(len(part.encode("utf-8")) > MAX_COMPONENT_BYTES for part in path.parts):
        raise PathRejected(f"{what} '{name[:80]}...' has a component longer than {MAX_COMPONENT_BYTES} bytes")
    if path.is_absolute() or name.startswith("~"):
        raise PathRejected(f"{what} '{name}' must be relative (absolute paths are not accepted)")
    if any(part == ".." for part in path.parts):
        raise PathRejected(f"{what} '{name}' must not contain '..'")
    return path


def resolve_inside(root: str | Path, name: str, *, what: str = "path", must_exist: bool = False) -> Path:
    """``root / name``, resolved with symlinks followed, provided it stays inside ``root``.

    Raises:
        PathRejected: a bad name (400) or one that resolves outside the root (403).
        NotFound: ``must_exist`` and nothing is there.
    """
    rel = check_relative(name, what)
    root = Path(root).resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise PathRejected(f"{what} '{name}' points outside the allowed directory", status=403)
    if must_exist and not target.exists():
        raise NotFound(f"{what} '{name}' does not exist")
    return target


def check_name(name: str, what: str = "name") -> str:
    """A single safe file/preset name (no directories); raises PathRejected (400) otherwise."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name.endswith("."):
        raise PathRejected(f"{what} '{str(name)[:80]}' is not valid: use 1-128 letters, digits, "
                           "'_', '-', '.' or spaces, not starting with '.'")
    return name


def relative_to_root(root: str | Path, path: Path) -> str:
    """``path`` as a POSIX name relative to ``root`` (the form requests use)."""
    return path.resolve().relative_to(Path(root).resolve()).as_posix()
