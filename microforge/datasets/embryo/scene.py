"""What a synthetic embryo video shows: its phase schedule and, per frame, the scene to draw.

``plan_video(config, seed, video, frames)`` fixes a video's annotations (the phases it goes
through and their inclusive frame ranges), its times, geometry and grades; ``describe_frame``
turns one frame into a :class:`FrameScene` (blastomeres, pronuclei, polar bodies, cavity,
zona) that :mod:`.render` draws and nothing else. The phases CSV is written from the same plan,
so what a CSV says is what the frames show. Both are pure in (config, seed, video, frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .config import EmbryoConfig
from .layout import PHASE_INDEX, PHASES

__all__ = ["Ellipse", "FrameScene", "VideoPlan", "describe_frame", "plan_video", "video_name"]

# Salts that keep the random streams of one (seed, video) apart.
_PLAN, _CELLS = 0xE1B, 0xCE11
TRANSIENT = ("t3", "t5", "t6", "t7")
ZYGOTE = ("tPB2", "tPNa", "tPNf")
BLASTOCYST = ("tSB", "tB", "tEB", "tHB")
GRADES = ("A", "B", "C")


def video_name(video: int) -> str:
    """The folder name of synthetic video ``video`` (0-based)."""
    return f"SYN{video:04d}"


@dataclass(frozen=True)
class Ellipse:
    """Centre, semi-axes and rotation (radians), in pixels."""

    x: float
    y: float
    a: float
    b: float
    angle: float = 0.0


@dataclass(frozen=True)
class VideoPlan:
    """A video's annotations and fixed properties; frames are numbered 1..frames."""

    name: str
    frames: int
    lead: int  # unannotated frames before the first phase
    phases: tuple[tuple[str, int, int], ...]  # (phase, first_frame, last_frame), inclusive
    times: tuple[float, ...]  # hours after insemination, per frame
    centre: tuple[float, float]
    zona_radius: float  # px, outer
    zona_thickness: float  # px
    embryo_radius: float  # px, the zygote
    grades: tuple[str, str]  # TE, ICM ("NA" when not graded)
    spin: float  # orientation of the cleavage layouts
    hatch_angle: float

    def phase_at(self, frame: int) -> tuple[str | None, float]:
        """The phase of ``frame`` (None before the first annotated frame) and the progress in it, [0, 1)."""
        for phase, first, last in self.phases:
            if first <= frame <= last:
                return phase, (frame - first) / (last - first + 1)
        return None, 0.0


@dataclass(frozen=True)
class FrameScene:
    """Everything one frame draws (see the module doc)."""

    phase: str | None
    progress: float
    zona: Ellipse  # outer outline; thickness below
    zona_thickness: float
    zona_gap: tuple[float, float] | None  # (angle, half width) where the embryo hatches
    cells: tuple[Ellipse, ...]  # blastomeres, painted in order (later ones on top)
    compaction: float  # 0: sharp cell rims, 1: one compacted mass
    pronuclei: tuple[tuple[Ellipse, float], ...]  # with visibility in (0, 1]
    polar_bodies: tuple[Ellipse, ...]
    mass: Ellipse | None  # outline of a compacted morula or blastocyst
    cavity: Ellipse | None  # the blastocoel
    icm: Ellipse | None  # inner cell mass
    hatched: Ellipse | None  # the part outside the zona

    @property
    def blastomeres(self) -> int:
        return len(self.cells)


def _allocate(n: int, weights: np.ndarray) -> list[int]:
    """``n`` frames over phases in proportion to ``weights``, each at least one (largest remainder)."""
    m = len(weights)
    share = (n - m) * weights / weights.sum()
    counts = np.floor(share).astype(int)
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: (n - m) - counts.sum()]] += 1
    return (counts + 1).tolist()


@lru_cache(maxsize=256)
def _plan(config_json: str, seed: int, video: int, frames: int) -> VideoPlan:
    config = EmbryoConfig.model_validate_json(config_json)
    rng = np.random.default_rng(np.random.SeedSequence([seed, video, _PLAN]))
    # Every draw happens whatever the branches, so one knob never shifts the others' streams.
    finals = list(config.final_phase)
    weights = np.array([config.final_phase[p] for p in finals])
    final = finals[int(rng.choice(len(finals), p=weights / weights.sum()))]
    no_tpb2 = rng.random() < config.missing_tpb2
    skipped = {p for p in TRANSIENT if rng.random() < config.skip_transient}
    jitter = np.exp(rng.normal(0.0, config.duration_jitter, len(PHASES)))
    lead = int(rng.integers(config.lead_frames[0], config.lead_frames[1] + 1))
    start = float(rng.uniform(*config.start_hours))
    size = config.size
    centre = tuple(float(size / 2 + rng.uniform(-1, 1) * config.centre_jitter * size) for _ in range(2))
    zona_r = float(rng.uniform(*config.zona_radius) * size)
    graded = rng.random() >= config.grade_na
    grades = tuple(GRADES[int(g)] for g in rng.choice(3, size=2, p=[0.3, 0.5, 0.2]))
    spin = float(rng.uniform(0, 2 * math.pi))
    # Hatching towards a corner of the frame, where the image has room for the hatched part.
    hatch_angle = math.pi / 4 + math.pi / 2 * int(rng.integers(4)) + float(rng.uniform(-0.3, 0.3))

    phases = [p for p in PHASES[: PHASE_INDEX[final] + 1] if p not in skipped and not (no_tpb2 and p == "tPB2")]
    lead = min(lead, frames - 1)
    annotated = frames - lead
    phases = phases[:annotated]  # a very short video stops early
    hours = np.array([config.phase_hours[p] * jitter[PHASE_INDEX[p]] for p in phases])
    counts = _allocate(annotated, hours)
    ranges, first = [], lead + 1
    for phase, count in zip(phases, counts):
        ranges.append((phase, first, first + count - 1))
        first += count
    interval = float(hours.sum()) / annotated
    times = tuple(round(start + i * interval, 2) for i in range(frames))
    zona_t = config.zona_thickness * size
    return VideoPlan(video_name(video), frames, lead, tuple(ranges), times, centre, zona_r, zona_t,
                     0.9 * (zona_r - zona_t), grades if graded else ("NA", "NA"), spin, hatch_angle)


def plan_video(config: EmbryoConfig, seed: int, video: int, frames: int) -> VideoPlan:
    """The plan of video ``video`` of ``frames`` frames (cached: every frame of a video needs it)."""
    if frames < 1:
        raise ValueError(f"a video needs at least one frame, got {frames}")
    return _plan(config.model_dump_json(), seed, video, frames)


def _layout(plan: VideoPlan, n: int, rng: np.random.Generator, aspect: tuple[float, float],
            radius: float) -> list[Ellipse]:
    """``n`` blastomeres inside ``radius``: an outer ring, then inner cells painted on top.

    A cell keeps its share of the zygote's volume (radius ~ n^-1/3), so cells overlap as the
    projections of packed spheres do; radial axes are shortened so no cell leaves the zygote.
    """
    cx, cy = plan.centre
    r = radius * 0.95 * n ** (-1 / 3)
    inner = 0 if n <= 5 else (1 if n <= 7 else (2 if n == 8 else n - math.ceil(0.62 * n)))
    rings = [(n - inner, max(radius - r, 0.5 * r)), (inner, 0.15 * radius if inner <= 2 else 0.42 * radius)]
    cells = []
    for count, rho in rings:
        offset = plan.spin + rng.uniform(0, 2 * math.pi) * (rho < radius * 0.5)
        for k in range(count):
            theta = offset + 2 * math.pi * k / count + rng.normal(0, 0.08)
            d = rho * (1 + rng.normal(0, 0.04))
            radial = min(r, radius - d) if count == n - inner else r
            tangential = r * rng.uniform(*aspect) ** -0.5 * 0.97
            cells.append(Ellipse(cx + d * math.cos(theta), cy + d * math.sin(theta), max(radial, 0.35 * r),
                                 min(tangential, 1.15 * r), theta))
    return cells


def _cells(config: EmbryoConfig, seed: int, video: int, plan: VideoPlan, n: int, radius: float) -> list[Ellipse]:
    # One layout per cell count: cells stay put from frame to frame within a phase.
    rng = np.random.default_rng(np.random.SeedSequence([seed, video, _CELLS, n]))
    return _layout(plan, n, rng, config.cell_aspect, radius)


def _circle(x: float, y: float, r: float) -> Ellipse:
    return Ellipse(x, y, r, r, 0.0)


def describe_frame(config: EmbryoConfig, seed: int, video: int, frame: int, *, frames: int) -> FrameScene:
    """The scene of frame ``frame`` (1-based) of video ``video`` of ``frames`` frames.

    Raises:
        ValueError: a frame outside 1..frames.
    """
    if not 1 <= frame <= frames:
        raise ValueError(f"frame {frame} is outside 1..{frames}")
    plan = plan_video(config, seed, video, frames)
    phase, u = plan.phase_at(frame)
    cx, cy = plan.centre
    R, zt = plan.embryo_radius, plan.zona_thickness
    zona_r = plan.zona_radius
    cells: list[Ellipse] = []
    pronuclei: list[tuple[Ellipse, float]] = []
    polar: list[Ellipse] = []
    mass = cavity = icm = hatched = None
    gap = None
    compaction = 0.0
    stage = phase or plan.phases[0][0]  # frames before the first annotation look like its start
    pb_angle = plan.spin + 2.2
    if stage in ZYGOTE or stage in ("t2", "t3", "t4"):
        pb = 0.1 * R
        polar.append(_circle(cx + (R + 0.6 * pb) * math.cos(pb_angle), cy + (R + 0.6 * pb) * math.sin(pb_angle), pb))
        if stage != "tPB2" or u > 0.3:  # the second polar body is extruded during tPB2
            a2 = pb_angle + 0.35
            polar.append(_circle(cx + (R + 0.5 * pb) * math.cos(a2), cy + (R + 0.5 * pb) * math.sin(a2), 0.8 * pb))
    if stage in ZYGOTE:
        cells.append(Ellipse(cx, cy, R * 0.98, R * 0.96, plan.spin))
        if stage in ("tPNa", "tPNf") and phase is not None:
            grow = 0.12 + 0.08 * min(1.0, u * 2) if stage == "tPNa" else 0.2
            visibility = 1.0 if stage == "tPNa" else max(0.2, 1.0 - u)  # tPNf: the pronuclei fade
            for side in (-1, 1):
                px = cx + side * 0.17 * R * math.cos(plan.spin)
                py = cy + side * 0.17 * R * math.sin(plan.spin)
                pronuclei.append((_circle(px, py, grow * R), visibility))
    elif stage in ("t2", "t3", "t4", "t5", "t6", "t7", "t8"):
        cells = _cells(config, seed, video, plan, int(stage[1:]), R)
    elif stage == "t9+":
        cells = _cells(config, seed, video, plan, 9 + int(u * 7), R)
    elif stage == "tM":
        compaction = 0.5 + 0.5 * u
        radius = R * (1 - 0.12 * compaction)
        mass = _circle(cx, cy, radius)
        cells = _cells(config, seed, video, plan, 16, radius)
    else:  # blastocyst stages: a trophectoderm shell around the cavity, the ICM on one side
        compaction = 1.0
        grow = {"tSB": 0.9, "tB": 1.0, "tEB": 1.0 + 0.12 * u, "tHB": 1.12}[stage]
        radius = R * grow
        cav = {"tSB": 0.2 + 0.35 * u, "tB": 0.6 + 0.15 * u, "tEB": 0.78, "tHB": 0.8}[stage]
        mass = _circle(cx, cy, radius)
        shift = (1 - cav) * radius * 0.5
        cavity = _circle(cx + shift * math.cos(plan.spin), cy + shift * math.sin(plan.spin), cav * radius)
        ix, iy = cx - 0.55 * radius * math.cos(plan.spin), cy - 0.55 * radius * math.sin(plan.spin)
        icm = Ellipse(ix, iy, 0.38 * radius, 0.24 * radius, plan.spin + math.pi / 2)
        if stage == "tEB":
            zt *= 1 - 0.45 * u
            zona_r = max(zona_r, radius / 0.9 + zt)
        if stage == "tHB":
            zt *= 0.55
            zona_r = max(zona_r, radius / 0.9 + zt)
            out = 0.2 + 0.6 * u  # fraction of the blastocyst through the zona
            gap = (plan.hatch_angle, 0.25 + 0.2 * out)
            hr = radius * (0.25 + 0.25 * out)
            dist = zona_r + hr * (out - 0.5)
            hatched = _circle(cx + dist * math.cos(plan.hatch_angle), cy + dist * math.sin(plan.hatch_angle), hr)
    return FrameScene(phase, u, _circle(cx, cy, zona_r), zt, gap, tuple(cells), compaction, tuple(pronuclei),
                      tuple(polar), mass, cavity, icm, hatched)
