"""``microforge synth embryo``: synthetic videos written as the public dataset's ten files.

Frames are rendered as Ray tasks (chunks of consecutive frames of one video, all seven focal
planes each) and appended, in video and frame order, to seven image archives; the annotations,
time-elapsed and grades files come from the videos' plans (:mod:`.scene`). Tar members get a
fixed mtime, owner and mode, and gzip a fixed mtime and no file name, so the same (config, seed,
videos, frames) gives byte-identical files whatever the number of workers.
"""

from __future__ import annotations

import gzip
import io
import logging
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from ...platform.errors import MicroforgeError
from ...platform.runtime import ray_runtime
from .config import EmbryoConfig
from .files import build_then_move, check_destination
from .layout import (ANNOTATIONS, FOCAL_PLANES, GRADES_FILE, GRADES_HEADER, PHASES, TIME_ELAPSED, TIME_HEADER,
                     frame_name, image_folder, phases_file, time_file)
from .scene import VideoPlan, plan_video

__all__ = ["MAX_FRAMES", "SynthSummary", "write_archives"]

log = logging.getLogger(__name__)

FIXED_MTIME = 946684800  # 2000-01-01: archives must not depend on when they were written
GZIP_LEVEL = 1  # JPEG bytes barely compress; a higher level only costs time
MAX_FRAMES = 5000
_CHUNK_FRAMES = 16  # frames per Ray task: ~1-2 s of work at 500 px


@dataclass(frozen=True)
class SynthSummary:
    out: Path
    videos: int
    frames: int
    files: dict[str, int]  # file name -> bytes
    videos_per_phase: dict[str, int]
    seconds: float

    def report(self) -> str:
        phases = " ".join(f"{p}:{n}" for p, n in self.videos_per_phase.items())
        return "\n".join([
            f"embryo dataset: {self.out}",
            f"videos: {self.videos} x {self.frames} frames x {len(FOCAL_PLANES)} focal planes; "
            f"{len(self.files)} files, {sum(self.files.values()) / 1e6:.1f} MB",
            f"videos per phase: {phases}",
            f"time: {self.seconds:.1f} s",
        ])


def _render_chunk(config_json: dict, seed: int, video: int, frames: int, first: int, last: int) -> list[list[bytes]]:
    """JPEG bytes of frames first..last of a video, per frame a list over FOCAL_PLANES (a Ray task)."""
    import cv2

    from .render import encode_frame, render_embryo

    cv2.setNumThreads(1)  # one CPU per task: OpenCV's own threads would fight the other tasks
    config = EmbryoConfig.load(config_json)
    out = []
    for frame in range(first, last + 1):
        planes = render_embryo(config, seed, video, frame, frames=frames).planes
        out.append([encode_frame(config, planes[f]) for f in FOCAL_PLANES])
    return out


def _info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = FIXED_MTIME, 0, 0, "", ""
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode, info.size = (0o755, 0) if directory else (0o644, size)
    return info


class _Archive:
    """A deterministic ``.tar.gz`` written member by member."""

    def __init__(self, path: Path) -> None:
        self.raw: BinaryIO = open(path, "wb")
        # filename="" keeps the temporary path out of the gzip header.
        self.gz = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw, mtime=FIXED_MTIME, compresslevel=GZIP_LEVEL)
        self.tar = tarfile.open(fileobj=self.gz, mode="w", format=tarfile.GNU_FORMAT)

    def add_dir(self, name: str) -> None:
        self.tar.addfile(_info(name, directory=True))

    def add(self, name: str, data: bytes) -> None:
        self.tar.addfile(_info(name, len(data)), io.BytesIO(data))

    def close(self) -> None:
        self.tar.close()
        self.gz.close()
        self.raw.close()


def phases_csv(plan: VideoPlan) -> str:
    """``phase,first_frame,last_frame`` rows, no header (the dataset's annotation format)."""
    return "".join(f"{p},{a},{b}\n" for p, a, b in plan.phases)


def time_csv(plan: VideoPlan) -> str:
    return ",".join(TIME_HEADER) + "\n" + "".join(f"{i},{t:.2f}\n" for i, t in enumerate(plan.times, start=1))


def _chunks(videos: int, frames: int) -> Iterator[tuple[int, int, int]]:
    for video in range(videos):
        for first in range(1, frames + 1, _CHUNK_FRAMES):
            yield video, first, min(first + _CHUNK_FRAMES - 1, frames)


def _write(tmp: Path, config: EmbryoConfig, videos: int, frames: int, seed: int, tasks: int) -> None:
    import ray

    plans = [plan_video(config, seed, v, frames) for v in range(videos)]
    images = {f: _Archive(tmp / f"{image_folder(f)}.tar.gz") for f in FOCAL_PLANES}
    try:
        for focal, archive in images.items():
            archive.add_dir(image_folder(focal))
        render = ray.remote(num_cpus=1)(_render_chunk)
        config_ref = config.to_json_dict()
        pending: list[tuple[tuple[int, int, int], Any]] = []
        chunks = _chunks(videos, frames)
        done = 0
        total = videos * -(-frames // _CHUNK_FRAMES)
        # At most `tasks` chunks in flight, consumed in order: memory stays flat, member order fixed.
        while True:
            while len(pending) < tasks:
                nxt = next(chunks, None)
                if nxt is None:
                    break
                pending.append((nxt, render.remote(config_ref, seed, nxt[0], frames, nxt[1], nxt[2])))
            if not pending:
                break
            (video, first, _), ref = pending.pop(0)
            name = plans[video].name
            for offset, planes in enumerate(ray.get(ref)):
                for focal, data in zip(FOCAL_PLANES, planes):
                    folder = f"{image_folder(focal)}/{name}"
                    if first + offset == 1:
                        images[focal].add_dir(folder)
                    images[focal].add(f"{folder}/{frame_name(name, first + offset)}", data)
            done += 1
            log.info("rendered %d/%d chunks", done, total)
    finally:
        for archive in images.values():
            archive.close()
    for folder, content in ((ANNOTATIONS, phases_csv), (TIME_ELAPSED, time_csv)):
        archive = _Archive(tmp / f"{folder}.tar.gz")
        archive.add_dir(folder)
        for plan in plans:
            name = phases_file(plan.name) if folder == ANNOTATIONS else time_file(plan.name)
            archive.add(f"{folder}/{name}", content(plan).encode())
        archive.close()
    grades = ",".join(GRADES_HEADER) + "\n" + "".join(f"{p.name},{p.grades[0]},{p.grades[1]}\n" for p in plans)
    (tmp / GRADES_FILE).write_text(grades)


def write_archives(config: EmbryoConfig | dict | str | Path, videos: int, frames: int, out: str | Path, *,
                   seed: int = 0, workers: int | None = None, address: str | None = None) -> SynthSummary:
    """Render ``videos`` videos of ``frames`` frames into ``out`` (missing or empty) as the
    public dataset's ten files.

    Raises:
        ConfigError: an invalid config. MicroforgeError: videos, frames, seed or workers out of
            range, or ``out`` not empty. Nothing is written in those cases.
    """
    config = EmbryoConfig.load(config)
    if videos < 1 or videos > 100000:
        raise MicroforgeError(f"--videos must be between 1 and 100000, got {videos}")
    if frames < 1 or frames > MAX_FRAMES:
        raise MicroforgeError(f"--frames must be between 1 and {MAX_FRAMES}, got {frames}")
    if seed < 0:
        raise MicroforgeError(f"--seed must be non-negative, got {seed}")
    if workers is not None and workers <= 0:
        raise MicroforgeError(f"--workers must be positive, got {workers}")
    dest = check_destination(out, "output directory")

    import ray

    start = time.perf_counter()
    with ray_runtime(address=address, num_cpus=workers):
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        tasks = min(workers or cpus, cpus)
        build_then_move(dest, lambda tmp: _write(tmp, config, videos, frames, seed, tasks))
    plans = [plan_video(config, seed, v, frames) for v in range(videos)]
    per_phase = {p: sum(any(q == p for q, _, _ in plan.phases) for plan in plans) for p in PHASES}
    files = {p.name: p.stat().st_size for p in sorted(dest.iterdir())}
    return SynthSummary(dest, videos, frames, files, per_phase, time.perf_counter() - start)
