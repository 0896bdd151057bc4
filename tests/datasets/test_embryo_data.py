"""Embryo data tools on rendered archives: synth byte-identity, safe extraction (and refusal of
crafted archives), the fair split, image folders read through the manifest reader."""

import csv
import io
import json
import shutil
import tarfile

import pytest

from microforge.datasets.embryo import layout
from microforge.datasets.embryo.archives import write_archives
from microforge.datasets.embryo.config import load_preset
from microforge.datasets.embryo.extract import extract_archives
from microforge.datasets.embryo.image_folder import median_frame, write_image_folder
from microforge.datasets.embryo.render import encode_frame, render_embryo
from microforge.datasets.embryo.scene import plan_video
from microforge.datasets.embryo.split import fair_split, read_split_file, split_videos
from microforge.platform.cli import main
from microforge.platform.errors import ConfigError, DatasetError

VIDEOS, FRAMES = 3, 16
CONFIG = load_preset("tiny").model_copy(update={"size": 64})


@pytest.fixture(scope="module")
def archives(tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("embryo") / "archives"
    summary = write_archives(CONFIG, VIDEOS, FRAMES, out, seed=0, workers=2)
    assert sorted(summary.files) == sorted(layout.archive_names())
    return out


@pytest.fixture(scope="module")
def extracted(archives, tmp_path_factory):
    dest = tmp_path_factory.mktemp("embryo") / "extracted"
    summary = extract_archives(archives, dest, workers=2)
    assert summary.problems == [] and summary.videos == VIDEOS
    return dest


def test_synth_writes_the_ten_files_byte_identical_with_one_worker(archives, tmp_path):
    again = write_archives(CONFIG, VIDEOS, FRAMES, tmp_path / "again", seed=0, workers=1).out
    for name in layout.archive_names():
        assert (again / name).read_bytes() == (archives / name).read_bytes(), name
    with tarfile.open(archives / "embryo_dataset_F-45.tar.gz") as tar:
        names = tar.getnames()
        assert all(m.mtime == tar.getmembers()[0].mtime and m.uid == 0 for m in tar.getmembers())
    assert f"embryo_dataset_F-45/SYN0002/{layout.frame_name('SYN0002', FRAMES)}" in names
    grades = list(csv.reader(io.StringIO((archives / layout.GRADES_FILE).read_text())))
    assert grades[0] == ["video_name", "TE", "ICM"] and len(grades) == VIDEOS + 1
    with pytest.raises(DatasetError, match="is not empty"):
        write_archives(CONFIG, 1, 2, archives)


def test_extraction_gives_the_layout_and_frames_of_the_renderer(extracted):
    for focal in layout.FOCAL_PLANES:
        assert len(list((extracted / layout.image_folder(focal) / "SYN0001").iterdir())) == FRAMES
    plan = plan_video(CONFIG, 0, 1, FRAMES)
    rows = (extracted / layout.ANNOTATIONS / "SYN0001_phases.csv").read_text().splitlines()
    assert rows == [f"{p},{a},{b}" for p, a, b in plan.phases]
    times = (extracted / layout.TIME_ELAPSED / "SYN0001_timeElapsed.csv").read_text().splitlines()
    assert times[0] == "frame,time" and len(times) == FRAMES + 1
    # The archived frame is exactly the renderer's frame, pure in (config, seed, video, frame).
    stored = (extracted / "embryo_dataset_F15" / "SYN0001" / "SYN0001_RUN9.jpeg").read_bytes()
    drawn = render_embryo(CONFIG, 0, 1, 9, frames=FRAMES, focal=("F15",)).planes["F15"]
    assert stored == encode_frame(CONFIG, drawn)


def _tar(path, members):
    """A .tar.gz with (TarInfo, bytes or None) members."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _member(name, kind=tarfile.REGTYPE, target=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("bad, refused", [
    (_member("embryo_dataset_F15/../../escaped.txt"), "embryo_dataset_F15/../../escaped.txt"),
    (_member("/tmp/microforge-embryo-absolute.txt"), "/tmp/microforge-embryo-absolute.txt"),
    (_member("embryo_dataset_F15/SYN0000/evil", tarfile.SYMTYPE, "../../../../etc/passwd"),
     "embryo_dataset_F15/SYN0000/evil"),
    (_member("embryo_dataset_F15/SYN0000/abs", tarfile.SYMTYPE, "/etc/passwd"), "embryo_dataset_F15/SYN0000/abs"),
    (_member("embryo_dataset/SYN0000/SYN0000_RUN1.jpeg"), "embryo_dataset/SYN0000/SYN0000_RUN1.jpeg"),
])
def test_crafted_archives_are_refused_and_nothing_is_extracted(archives, tmp_path, bad, refused):
    crafted = tmp_path / "crafted"
    shutil.copytree(archives, crafted)
    good = _member("embryo_dataset_F15/SYN0000/SYN0000_RUN1.jpeg")
    _tar(crafted / "embryo_dataset_F15.tar.gz",
         [(good, b"x"), (bad, None if bad.issym() else b"evil")])
    dest = tmp_path / "out" / "extracted"
    with pytest.raises(DatasetError, match=f"refused member '{refused}' of embryo_dataset_F15.tar.gz"):
        extract_archives(crafted, dest, workers=2)
    assert not dest.exists() and not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == [crafted]  # no temporary directory left
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_extract_refuses_missing_archives_and_a_non_empty_destination(archives, tmp_path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(archives, partial)
    (partial / "embryo_dataset_F30.tar.gz").unlink()
    (partial / layout.GRADES_FILE).unlink()
    assert main(["data", "embryo", "extract", str(partial), str(tmp_path / "dest")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "lacks 2 of the 10 dataset files: embryo_dataset_F30.tar.gz, embryo_dataset_grades.csv" in err
    assert not (tmp_path / "dest").exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="is not empty"):
        extract_archives(archives, full)
    assert [p.name for p in full.iterdir()] == ["keep.txt"]


def test_fair_split_spreads_the_rarest_phase_and_keeps_videos_whole():
    common = set(layout.PHASES[:12])
    videos = {f"V{i:03d}": common | ({"tHB"} if i % 6 == 0 else set()) | ({"tEB"} if i % 2 else set())
              for i in range(60)}
    split = fair_split(videos, (0.6, 0.2, 0.2), seed=3)
    assert set(split) == {"train", "val", "test"}
    names = [v for vs in split.values() for v in vs]
    assert sorted(names) == sorted(videos) and len(set(names)) == len(names)
    rare = {s: sum("tHB" in videos[v] for v in vs) for s, vs in split.items()}
    assert rare == {"train": 6, "val": 2, "test": 2}  # 10 hatching videos, 0.6/0.2/0.2
    assert [len(vs) for vs in split.values()] == [36, 12, 12]
    assert fair_split(videos, (0.6, 0.2, 0.2), seed=3) == split
    assert fair_split(videos, (0.6, 0.2, 0.2), seed=4) != split


def test_split_file_round_trip_and_bad_files(extracted, tmp_path):
    split, counts = split_videos(extracted, tmp_path / "split.json", seed=0)
    assert read_split_file(tmp_path / "split.json") == split
    assert sum(len(v) for v in split.values()) == VIDEOS
    assert sum(counts[s]["t2"] for s in split) == VIDEOS
    (tmp_path / "eval.json").write_text(json.dumps({"train": [], "eval": []}))
    with pytest.raises(DatasetError, match="unknown key 'eval' \\(did you mean 'val'\\?\\)"):
        read_split_file(tmp_path / "eval.json")
    (tmp_path / "twice.json").write_text(json.dumps({"train": ["SYN0000"], "val": [], "test": ["SYN0000"]}))
    with pytest.raises(DatasetError, match="SYN0000 is in both 'train' and 'test'"):
        read_split_file(tmp_path / "twice.json")


def test_image_folder_median_frames_and_the_manifest_reader(extracted, tmp_path, ray_local):
    from microforge.datasets.manifest import manifest_dataset

    assert median_frame([3, 4, 5, 6, 9], 4, 6) == 5 and median_frame([1, 2], 4, 6) is None
    assert median_frame([4, 5, 6, 7], 4, 7) == 5
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["SYN0000", "SYN0002"], "val": ["SYN0001"], "test": []}))
    folder = write_image_folder(extracted, split, "train", list(layout.PHASES), tmp_path / "folder", seed=5).out
    expected = {(v, p): (a + b) // 2 for v in ("SYN0000", "SYN0002") for p, a, b in plan_video(
        CONFIG, 0, int(v[3:]), FRAMES).phases}
    meta = list(csv.DictReader(io.StringIO((folder / "metadata.csv").read_text())))
    assert len(meta) == len(expected) and list(meta[0]) == ["filename", "label", "phase"]
    for n, row in enumerate(meta):
        _, video, frame = row["label"].split("_")
        assert row["filename"] == f"{n}.jpeg" and row["label"].startswith("F+00_")
        assert expected[(video, row["phase"])] == int(frame)
        source = extracted / "embryo_dataset" / video / layout.frame_name(video, int(frame))
        assert (folder / "images" / f"{n}.jpeg").read_bytes() == source.read_bytes()
        assert (folder / "descriptions" / f"{n}.txt").read_text() == layout.phase_prompt(row["phase"])
    rows = manifest_dataset(folder, "train", columns=["image", "description", "phase", "phase_index", "video"]).take_all()
    assert [r["phase"] for r in rows] == [m["phase"] for m in meta]
    assert all(r["phase_index"] == layout.PHASE_INDEX[r["phase"]] for r in rows)
    assert rows[0]["image"].shape == (64, 64) and rows[0]["description"] == layout.phase_prompt(rows[0]["phase"])
    info = json.loads((folder / "dataset.json").read_text())
    assert info["classes"] == list(layout.PHASES) and info["prompt_template"] == layout.PROMPT_TEMPLATE

    ordered = write_image_folder(extracted, split, "val", ["t2", "t4"], tmp_path / "ordered", shuffle=False,
                                 focal="F-15").out
    labels = [r["label"] for r in csv.DictReader(io.StringIO((ordered / "metadata.csv").read_text()))]
    assert [label.split("_")[0] for label in labels] == ["F-15", "F-15"]
    assert [r["phase"] for r in csv.DictReader(io.StringIO((ordered / "metadata.csv").read_text()))] == ["t2", "t4"]
    with pytest.raises(DatasetError, match="is not empty"):
        write_image_folder(extracted, split, "val", ["t2"], ordered)
    with pytest.raises(ConfigError, match="unknown phase 't10'"):
        write_image_folder(extracted, split, "val", ["t10"], tmp_path / "never")
    with pytest.raises(DatasetError, match="no video in 'test'"):
        write_image_folder(extracted, split, "test", ["t2"], tmp_path / "never")
    assert not (tmp_path / "never").exists()
