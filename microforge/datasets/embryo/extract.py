"""``microforge data embryo extract``: the ten dataset files, extracted safely and checked.

All ten files must be present (else nothing happens, and the message lists what is missing) and
the destination missing or empty. The nine archives are extracted in parallel as Ray tasks into
a temporary directory beside the destination, with ``tarfile``'s ``data`` filter (no absolute
paths, no ``..``, no links leaving the directory, no devices) plus one rule of ours: every
member lies in its archive's own folder, so one archive cannot overwrite another's files. The
first refused member is named and nothing is extracted. The result is validated (see
:func:`.extracted.validate_extracted`) and only then moved into place.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...platform.errors import DatasetError, MicroforgeError
from ...platform.runtime import ray_runtime
from .extracted import validate_extracted
from .files import build_then_move, check_destination
from .layout import GRADES_FILE, archive_names

__all__ = ["ExtractSummary", "extract_archives", "extract_one"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractSummary:
    dest: Path
    archives: int
    members: int
    videos: int
    problems: list[str]
    seconds: float

    def report(self) -> str:
        lines = [f"extracted: {self.dest}",
                 f"archives: {self.archives} ({self.members} members) and {GRADES_FILE}; videos: {self.videos}; "
                 f"time {self.seconds:.1f} s"]
        if self.problems:
            lines.append(f"validation: {len(self.problems)} problem(s):")
            lines += [f"  {p}" for p in self.problems]
        else:
            lines.append("validation: every video annotated, every phase known, every frame range present")
        return "\n".join(lines)


def _member_filter(folder: str):
    """tarfile's ``data`` filter, then ours: the member lies in ``folder`` (its archive's own)
    and is no link (the dataset has none, and a link inside could redirect a later member)."""

    def check(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        if member.name.startswith(("/", "\\")) or os.path.isabs(member.name):
            # The data filter would strip the slash and extract it; an absolute member is refused.
            raise _Refused(member, f"{member.name!r} is an absolute path")
        member = tarfile.data_filter(member, dest)
        name = member.name.rstrip("/")
        if name != folder and not name.startswith(folder + "/"):
            raise _Refused(member, f"{member.name!r} is outside the archive's folder {folder}/")
        if member.issym() or member.islnk():
            raise _Refused(member, f"{member.name!r} is a link")
        return member

    return check


class _Refused(tarfile.FilterError):
    def __init__(self, tarinfo: tarfile.TarInfo, message: str) -> None:
        self.tarinfo = tarinfo
        super().__init__(message)


def extract_one(archive: str | Path, dest: str | Path) -> dict[str, Any]:
    """Extract one ``.tar.gz`` of the dataset into ``dest`` (its members must lie in the folder
    named like the archive); a Ray task. Returns ``{"archive", "members"}`` or, for a refused
    member or a broken archive, ``{"archive", "error"}`` (never raises: the driver reports it)."""
    archive = Path(archive)
    folder = archive.name[: -len(".tar.gz")]
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            members = 0
            for member in tar:
                # Member by member, so the one refused is named and nothing after it is read.
                tar.extract(member, dest, filter=_member_filter(folder))
                members += 1
        return {"archive": archive.name, "members": members}
    except tarfile.FilterError as exc:
        name = exc.tarinfo.name if exc.tarinfo is not None else "?"
        return {"archive": archive.name, "error": f"refused member '{name}' of {archive.name} ({exc})"}
    except (tarfile.TarError, EOFError, OSError) as exc:  # truncated or corrupt gzip/tar, a full disk
        return {"archive": archive.name, "error": f"cannot extract {archive.name} ({exc})"}


def _stop(running: list) -> None:
    """Cancel the tasks still extracting and wait until they have stopped: a task still writing
    when the driver removes the temporary directory would recreate part of it."""
    import ray

    if not running:
        return
    for ref in running:
        ray.cancel(ref)  # KeyboardInterrupt inside the task: it stops at the next member
    _, pending = ray.wait(running, num_returns=len(running), timeout=60)
    for ref in pending:  # stuck in one huge write: kill the worker process
        ray.cancel(ref, force=True)
    ray.wait(pending, num_returns=len(pending), timeout=60)


def _extract_all(tmp: Path, source: Path, tasks: int) -> int:
    import ray

    extract = ray.remote(num_cpus=1)(extract_one)
    names = [n for n in archive_names() if n.endswith(".tar.gz")]
    # Largest first: the image archives dominate, so the workers finish together.
    names.sort(key=lambda n: -(source / n).stat().st_size)
    queue, running, members = list(names), [], 0
    try:
        while queue or running:
            while queue and len(running) < tasks:
                running.append(extract.remote(str(source / queue.pop(0)), str(tmp)))
            ready, running = ray.wait(running, num_returns=1)
            result = ray.get(ready[0])
            if "error" in result:
                raise DatasetError(f"{result['error']}; nothing extracted")
            members += result["members"]
            log.info("extracted %s (%d members)", result["archive"], result["members"])
    finally:
        _stop(running)
    shutil.copyfile(source / GRADES_FILE, tmp / GRADES_FILE)
    return members


def extract_archives(source: str | Path, dest: str | Path, *, workers: int | None = None, address: str | None = None,
                     lenient: bool = False) -> ExtractSummary:
    """Extract the ten files in ``source`` into ``dest`` (see the module doc).

    ``lenient``: move the result into place even when validation finds problems (they are in
    the summary); by default such a dataset is refused.

    Raises:
        DatasetError: a missing file, a non-empty destination, a refused member, a broken
            archive, or (unless ``lenient``) a validation problem. Nothing is extracted then.
        MicroforgeError: workers <= 0.
    """
    if workers is not None and workers <= 0:
        raise MicroforgeError(f"--workers must be positive, got {workers}")
    source = Path(source).expanduser().absolute()
    if not source.is_dir():
        raise DatasetError(f"archive directory {source} does not exist")
    missing = [n for n in archive_names() if not (source / n).is_file()]
    if missing:
        raise DatasetError(f"{source} lacks {len(missing)} of the 10 dataset files: {', '.join(missing)}; "
                           "nothing extracted")
    dest = check_destination(dest, "destination")

    import ray

    start = time.perf_counter()
    with ray_runtime(address=address, num_cpus=workers):
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        tasks = min(workers or cpus, cpus)

        def fill(tmp: Path) -> tuple[int, int, list[str]]:
            members = _extract_all(tmp, source, tasks)
            videos, problems = validate_extracted(tmp)
            if problems and not lenient:
                raise DatasetError(f"the extracted dataset has {len(problems)} problem(s), first: {problems[0]}; "
                                   "nothing extracted (--lenient keeps it anyway)")
            return members, videos, problems

        members, videos, problems = build_then_move(dest, fill)
    return ExtractSummary(dest, len(archive_names()) - 1, members, videos, problems, time.perf_counter() - start)
