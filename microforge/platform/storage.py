"""Storage helpers: atomic writes and the platform's state directory."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .errors import MicroforgeError


def state_dir() -> Path:
    """Where microforge keeps state between runs (``$MICROFORGE_HOME`` or ``~/.microforge``)."""
    path = Path(os.environ.get("MICROFORGE_HOME", Path.home() / ".microforge"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def current_umask() -> int:
    """The process' umask, read without changing it where the system tells it (Linux), since
    setting it to read it back races with threads creating files."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open()`` would give a new file: 0o666 less the umask (0o644 under 022)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` would give a new directory: 0o777 less the umask (0o755 under 022)."""
    return 0o777 & ~current_umask()


def _temp_copy(path: Path, data: bytes) -> str:
    """``data`` written to a new temp file beside ``path`` (its directory created); the temp's path.
    The file gets the umask's mode (``mkstemp`` alone would leave it 0600, unreadable to a lab's
    colleagues once renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory and a rename,
    so a reader never sees a half-written file and an interrupted write leaves none behind."""
    tmp = _temp_copy(Path(path), data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_new_file(path: str | Path, data: bytes) -> Path:
    """Write ``data`` under ``path``'s name, or ``<stem>-1<suffix>``, ``-2``, ... if that name is
    taken, and return the path written. An existing file is never replaced, even by a concurrent
    writer: the complete file is claimed under its name with a hard link, which fails if the name
    exists. On a file system without hard links (some network and FUSE mounts) the name is claimed
    by an exclusive create instead, and a reader may then see the file before it is complete."""
    path = Path(path)
    tmp = _temp_copy(path, data)
    hard_links, n = True, 0
    try:
        while True:
            candidate = path if n == 0 else path.with_name(f"{path.stem}-{n}{path.suffix}")
            try:
                if hard_links:
                    os.link(tmp, candidate)
                else:
                    _create_exclusive(candidate, data)
                return candidate
            except FileExistsError:
                n += 1
            except OSError as exc:
                if not hard_links or exc.errno not in _NO_HARD_LINKS:
                    raise
                hard_links = False  # the same name again, by exclusive create
    finally:
        Path(tmp).unlink(missing_ok=True)


_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK)


def _create_exclusive(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:  # FileExistsError if the name is taken
        try:
            fh.write(data)
        except BaseException:
            path.unlink(missing_ok=True)
            raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def ensure_writable_dir(path: str | Path) -> Path:
    """Check that ``path`` is, or can be created as, a writable directory, creating nothing.

    Raises:
        MicroforgeError: the path is a file, or its nearest existing ancestor is not writable.
    """
    path = Path(path).expanduser().absolute()
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise MicroforgeError(f"output path {path} is not a directory ({probe} is a file)")
    try:  # os.access alone misses read-only mounts when running as root
        if not os.access(probe, os.W_OK | os.X_OK):
            raise PermissionError
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".microforge-probe-"))
    except OSError:
        raise MicroforgeError(f"output directory {path} is not writable ({probe} denies write access)") from None
    return path


def atomic_replace_dir(target: str | Path, fill: Callable[[Path], None]) -> Path:
    """Build a directory with ``fill(tmp)`` in a temp directory beside ``target``, then rename it
    into place, replacing an existing ``target`` only once the new one is complete."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        os.chmod(tmp, dir_mode())  # mkdtemp's 0700 would outlive the rename
        fill(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
