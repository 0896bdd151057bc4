"""The shards layout beside the files layout: byte identity, resume, the manifest reader, bad input."""

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from microforge.datasets.crystals import CrystalConfig, generate_dataset, load_preset, render_crystal
from microforge.datasets.images import encode_image
from microforge.datasets.manifest import decode_image, manifest_dataset, read_manifest
from microforge.datasets.writer import GenerationOptions
from microforge.platform.cli import main
from microforge.platform.errors import MicroforgeError

SMALL = {"width": 96, "height": 64, "n_rods_rng_lo_hi": [2, 5], "rod_len_px_lo_hi": [10, 30]}


def small_config() -> CrystalConfig:
    return CrystalConfig.load({**load_preset("default").to_json_dict(), **SMALL})


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def both_layouts(ray_local, tmp_path_factory):
    """The same 7 samples in the files layout and in shards of 3 (two full, one of 1)."""
    root = tmp_path_factory.mktemp("layouts")
    generate_dataset(small_config(), 7, root / "files", seed=4, workers=2)
    summary = generate_dataset(small_config(), 7, root / "shards", seed=4, workers=2, layout="shards", shard_size=3)
    return root / "files", root / "shards", summary


def test_shards_are_webdataset_tars_of_consecutive_samples(both_layouts):
    _, shards, summary = both_layouts
    assert summary.counts["shards"] == 3 and summary.rendered == 7
    assert sorted(p.name for p in (shards / "shards").iterdir()) == ["000000.tar", "000001.tar", "000002.tar"]
    assert not (shards / "images").exists() and not (shards / "train.txt").exists()
    with tarfile.open(shards / "shards" / "000001.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:5]] == ["0000003.images.png", "0000003.labels_dota.txt",
                                           "0000003.labels_yolo_obb.txt", "0000003.labels.txt", "0000003.json"]
    assert {m.name.split(".")[0] for m in members} == {"0000003", "0000004", "0000005"}
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members)
    rows = read_manifest(shards).to_pylist()
    assert [r["shard"] for r in rows] == ["shards/000000.tar"] * 3 + ["shards/000001.tar"] * 3 + ["shards/000002.tar"]
    info = json.loads((shards / "dataset.json").read_text())
    assert info["options"]["layout"] == "shards" and info["options"]["shard_size"] == 3


def test_the_manifest_reader_gives_the_same_samples_from_both_layouts(both_layouts):
    files, shards, _ = both_layouts
    a = manifest_dataset(files, "train", rows_per_task=2).take_all()
    b = manifest_dataset(shards, "train", rows_per_task=2).take_all()  # tasks that span two shards
    assert len(a) >= 3 and [r["index"] for r in a] == [r["index"] for r in b]
    for x, y in zip(a, b):
        assert set(y) - set(x) == {"shard", "shard_offset", "shard_size"}
        assert all(np.array_equal(x[k], y[k]) if isinstance(x[k], np.ndarray) else x[k] == y[k] for k in x)
    only = manifest_dataset(shards, "train", columns=["image", "index"]).take_all()
    assert sorted(only[0]) == ["image", "index"]
    assert np.array_equal(only[0]["image"], render_crystal(small_config(), 4, only[0]["index"]).image)


def test_data_info_reads_both_layouts(both_layouts, capsys):
    files, shards, _ = both_layouts
    assert main(["data", "info", str(files)]) == 0
    assert "layout: files" in capsys.readouterr().out
    assert main(["data", "info", str(shards)]) == 0
    out = capsys.readouterr().out
    assert "layout: shards (3 of up to 3 samples)" in out and "samples: 7" in out


def test_shards_are_byte_identical_whatever_the_number_of_workers(ray_local, tmp_path, both_layouts):
    _, shards, _ = both_layouts
    generate_dataset(small_config(), 7, tmp_path / "w1", seed=4, workers=1, layout="shards", shard_size=3)
    a, b = tree_bytes(tmp_path / "w1"), tree_bytes(shards)
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []


def test_shard_resume_renders_only_missing_or_damaged_shards(ray_local, tmp_path, both_layouts):
    _, shards, _ = both_layouts
    out = tmp_path / "ds"
    out.mkdir()
    for rel, data in tree_bytes(shards).items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    before = tree_bytes(out)
    (out / "shards" / "000000.tar").unlink()  # lost
    damaged = out / "shards" / "000002.tar"
    damaged.write_bytes(damaged.read_bytes()[:700])  # cut short
    (out / "manifest.parquet").unlink()
    again = generate_dataset(small_config(), 7, out, seed=4, workers=2, layout="shards", shard_size=3)
    assert (again.rendered, again.reused) == (4, 3)
    assert tree_bytes(out) == before


def test_fast_png_is_lossless_and_a_level_changes_only_the_bytes(tmp_path):
    image = render_crystal(small_config(), 0, 0).image
    fast, level3 = encode_image(image, ".png", png_level="fast"), encode_image(image, ".png", png_level=3)
    assert fast != level3
    for name, data in (("fast.png", fast), ("l3.png", level3)):
        assert np.array_equal(decode_image(tmp_path / name, data), image)
    wide = np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 17
    assert np.array_equal(decode_image("x.png", encode_image(wide, ".png", png_level="fast")), wide)


def test_new_options_join_the_identity_only_when_set():
    """A png level or the shards layout makes another dataset; a dataset written before either
    option existed keeps its identity and still resumes."""
    assert GenerationOptions().identity() == {"image_format": "png", "split": [0.8, 0.1, 0.1]}
    assert GenerationOptions(png_level=3).identity() != GenerationOptions(png_level="fast").identity()
    shards = GenerationOptions(layout="shards", shard_size=5).identity()
    assert shards["layout"] == "shards" and shards["shard_size"] == 5


@pytest.mark.parametrize("args,message", [
    (["--layout", "tiles"], "invalid choice: 'tiles'"),
    (["--layout", "shards", "--shard-size", "0"], "--shard-size must be a positive number of samples, got 0"),
    (["--shard-size", "-3"], "--shard-size must be a positive number of samples, got -3"),
    (["--png-level", "12"], "--png-level must be 'fast' or a zlib level from 0 to 9, got '12'"),
])
def test_bad_output_options_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "ds"
    try:
        code = main(["synth", "crystals", "--n", "3", "--out", str(out), *args])
    except SystemExit as exc:  # argparse's own errors (a choice not offered)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_a_uri_scheme_without_a_filesystem_names_the_package(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["synth", "crystals", "--n", "3", "--out", "oss://bucket/ds"]) == 2
    err = capsys.readouterr().err
    assert "no filesystem for 'oss://' URIs is installed: pip install ossfs" in err and err.count("\n") == 1
    assert main(["synth", "cars", "--n", "3", "--out", "nosuchfs://bucket/ds"]) == 2
    assert "unknown URI scheme 'nosuchfs://'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MicroforgeError, match="pip install ossfs"):
        read_manifest("oss://bucket/ds")


def test_resuming_a_files_dataset_as_shards_is_refused(both_layouts, tmp_path, capsys):
    files, _, _ = both_layouts
    out = tmp_path / "ds"
    shutil.copytree(files, out)
    before = tree_bytes(out)
    config = tmp_path / "small.json"
    config.write_text(json.dumps(small_config().to_json_dict()))
    capsys.readouterr()  # Ray's log lines of the fixture's runs
    code = main(["synth", "crystals", "--preset", str(config), "--n", "7", "--seed", "4", "--out", str(out),
                 "--layout", "shards"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "holds a dataset in the 'files' layout, not 'shards'; resume it with --layout files" in err
    assert tree_bytes(out) == before
