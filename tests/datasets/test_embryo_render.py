"""The embryo renderer: plans, scenes that match the phases CSV, focal planes, determinism."""

import cv2
import numpy as np
import pytest

from microforge.datasets.embryo import layout
from microforge.datasets.embryo.archives import phases_csv, time_csv
from microforge.datasets.embryo.config import EmbryoConfig, load_preset, preset_names
from microforge.datasets.embryo.render import render_embryo
from microforge.datasets.embryo.scene import plan_video
from microforge.platform.errors import ConfigError

FRAMES = 40


@pytest.fixture(scope="module")
def tiny():
    return load_preset("tiny").model_copy(update={"size": 96})


def _covering_videos(config, seed=0):
    """The first videos whose phases together cover all 16."""
    seen, videos = set(), []
    for video in range(64):
        phases = {p for p, _, _ in plan_video(config, seed, video, FRAMES).phases}
        if phases - seen:
            videos.append(video)
            seen |= phases
        if seen == set(layout.PHASES):
            return videos
    raise AssertionError(f"64 videos never reach {set(layout.PHASES) - seen}")


def test_the_ten_files_and_names():
    assert layout.archive_names() == [
        "embryo_dataset.tar.gz", "embryo_dataset_F-45.tar.gz", "embryo_dataset_F-30.tar.gz",
        "embryo_dataset_F-15.tar.gz", "embryo_dataset_F15.tar.gz", "embryo_dataset_F30.tar.gz",
        "embryo_dataset_F45.tar.gz", "embryo_dataset_annotations.tar.gz", "embryo_dataset_time_elapsed.tar.gz",
        "embryo_dataset_grades.csv"]
    assert " ".join(layout.PHASES) == "tPB2 tPNa tPNf t2 t3 t4 t5 t6 t7 t8 t9+ tM tSB tB tEB tHB"
    assert layout.frame_number(layout.frame_name("AA83-7", 112)) == 112
    assert layout.frame_number("AA83-7_RUN3.png") is None
    assert [layout.focal_label(f) for f in ("F0", "F-15", "F45")] == ["F+00", "F-15", "F+45"]
    assert layout.image_label("F0", "SYN0001", 7) == "F+00_SYN0001_7"
    assert layout.phase_prompt("t2") == "a grayscale microscopic image of a human embryo at phase t2"
    with pytest.raises(ConfigError, match="did you mean 't9\\+'"):
        layout.phase_prompt("t9")
    assert layout.parse_phases("t3, t2") == ["t2", "t3"]


def test_plans_are_ordered_contiguous_inclusive_ranges(tiny):
    for video in range(12):
        plan = plan_video(tiny, 3, video, FRAMES)
        indices = [layout.PHASE_INDEX[p] for p, _, _ in plan.phases]
        assert indices == sorted(set(indices)), "phases appear once each, in development order"
        assert plan.phases[0][1] == plan.lead + 1 and plan.phases[-1][2] == FRAMES
        for (_, _, last), (_, first, _) in zip(plan.phases, plan.phases[1:]):
            assert first == last + 1
        assert all(first <= last for _, first, last in plan.phases)
        assert list(plan.times) == sorted(plan.times) and len(set(plan.times)) == FRAMES
        rows = [line.split(",") for line in phases_csv(plan).splitlines()]
        assert [(p, int(a), int(b)) for p, a, b in rows] == list(plan.phases)  # no header row
        assert time_csv(plan).splitlines()[0] == "frame,time"
    # A video shorter than its phases stops early instead of inventing frames.
    short = plan_video(tiny, 0, 0, 5)
    assert len(short.phases) <= 5 and short.phases[-1][2] == 5


def test_what_is_drawn_matches_the_phases_csv(tiny):
    """Per annotated frame, the rendered masks show the phase its CSV row names: one zygote with
    pronuclei only in tPNa/tPNf, exactly n blastomeres for t2..t8, nine or more for t9+, no
    cavity before tSB, a cavity from tSB on, a hatched part only in tHB."""
    checked = set()
    for video in _covering_videos(tiny):
        plan = plan_video(tiny, 0, video, FRAMES)
        for phase, first, last in plan.phases:
            for frame in sorted({first, last, (first + last) // 2}):
                drawn = render_embryo(tiny, 0, video, frame, frames=FRAMES, focal=("F0",))
                scene, n = drawn.scene, layout.PHASE_INDEX[phase]
                assert scene.phase == phase
                has_cavity = bool(drawn.cavity.any())
                assert has_cavity == (phase in ("tSB", "tB", "tEB", "tHB")), (video, frame, phase)
                assert (scene.hatched is not None) == (phase == "tHB")
                if phase in ("tPB2", "tPNa", "tPNf"):
                    assert drawn.visible_cells == 1
                    assert bool(scene.pronuclei) == (phase != "tPB2")
                elif phase in ("t2", "t3", "t4", "t5", "t6", "t7", "t8"):
                    assert drawn.visible_cells == scene.blastomeres == int(phase[1:]), (video, frame, phase)
                elif phase == "t9+":
                    assert scene.blastomeres >= 9 and drawn.visible_cells >= 9
                elif phase == "tM":
                    assert scene.compaction >= 0.5 and not has_cavity
                else:
                    assert drawn.visible_cells == 0 and scene.icm is not None
                checked.add(n)
    assert checked == set(range(16))


def _sharpness(image):
    return float(cv2.Laplacian(image.astype(np.float32), cv2.CV_32F).var())


def test_focal_planes_defocus_one_scene_and_rendering_is_pure(tiny):
    frame = render_embryo(tiny, 0, 1, 20, frames=FRAMES)
    assert list(frame.planes) == list(layout.FOCAL_PLANES)
    assert all(p.shape == (96, 96) and p.dtype == np.uint8 for p in frame.planes.values())
    sharp = {f: _sharpness(img) for f, img in frame.planes.items()}
    assert sharp["F0"] > sharp["F-15"] > sharp["F-45"] and sharp["F0"] > sharp["F15"] > sharp["F45"]
    # The same scene: the defocused planes agree with a blurred F0.
    blurred = cv2.GaussianBlur(frame.planes["F0"].astype(np.float32), (0, 0), 3)
    for focal in ("F-45", "F45"):
        assert np.corrcoef(blurred.ravel(), frame.planes[focal].astype(np.float32).ravel())[0, 1] > 0.8
    again = render_embryo(tiny, 0, 1, 20, frames=FRAMES)
    assert all(np.array_equal(again.planes[f], frame.planes[f]) for f in layout.FOCAL_PLANES)
    other = render_embryo(tiny, 1, 1, 20, frames=FRAMES, focal=("F0",))
    assert not np.array_equal(other.planes["F0"], frame.planes["F0"])
    with pytest.raises(ValueError, match="outside 1..40"):
        render_embryo(tiny, 0, 1, 41, frames=FRAMES)


def test_config_presets_and_errors():
    assert preset_names() == ["default", "tiny"]
    default, tiny = load_preset("default"), load_preset("tiny")
    assert default == EmbryoConfig() and default.size == 500
    assert tiny.size == 128 and tiny.jpeg_quality == 85 and tiny.lead_frames == (0, 1)
    assert render_embryo(tiny, 0, 0, 1, frames=2, focal=("F0",)).planes["F0"].shape == (128, 128)
    with pytest.raises(ConfigError, match="unknown key 'sise' \\(did you mean 'size'\\?\\)"):
        EmbryoConfig.load({"sise": 64})
    with pytest.raises(ConfigError, match="unknown phase 't10'"):
        EmbryoConfig.load({"final_phase": {"t10": 1.0}})
    with pytest.raises(ConfigError, match="unknown embryo preset 'tinny' \\(did you mean 'tiny'\\?\\)"):
        load_preset("tinny")
