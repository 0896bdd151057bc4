"""Unaligned two-domain data: the renderer, ``synth unaligned`` and the validated folder reader."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from microforge.datasets.unaligned import (UnalignedConfig, crop_and_flip, load_a, load_b, open_split,
                                           render_unaligned, split_names)
from microforge.platform.cli import main
from microforge.platform.errors import DatasetError

SMALL = UnalignedConfig(size=48)


def test_render_is_a_pure_function_of_config_seed_and_index():
    first, again, other = (render_unaligned(SMALL, seed, index) for seed, index in ((3, 5), (3, 5), (3, 6)))
    for name in ("a", "a_gt", "b"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
        assert not np.array_equal(getattr(first, name), getattr(other, name)), name
    assert first.a.shape == (48, 48) and first.a.dtype == np.uint8
    assert first.b.shape == (48, 48, 3) and first.b.dtype == np.uint8
    assert set(np.unique(first.a_gt)) <= {0, 255} and 0 < (first.a_gt > 0).mean() < 0.8
    # bright cells on dark; H&E: nuclei absorb red most (hematoxylin), the field is pinkish-light
    assert first.a[first.a_gt > 0].mean() > first.a[first.a_gt == 0].mean() + 40
    assert first.b[..., 1].mean() < first.b[..., 0].mean()


def test_domains_come_from_independent_scenes():
    base = render_unaligned(SMALL, 0, 1)
    more_cells = render_unaligned(SMALL.model_copy(update={"a_cells": (20, 30)}), 0, 1)
    assert not np.array_equal(base.a_gt, more_cells.a_gt)
    assert np.array_equal(base.b, more_cells.b)  # B does not depend on A's scene


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _layout(root: Path, stems=("c1", "c2", "c3"), gt_suffix=".tif", size=24) -> Path:
    rng = np.random.default_rng(0)
    for stem in stems:
        _write(root / "trainA" / f"{stem}.png", rng.integers(0, 255, (size, size), dtype=np.uint8))
        _write(root / "trainA_GT" / f"{stem}{gt_suffix}", (rng.random((size, size)) > 0.5).astype(np.uint8) * 255)
    for k in range(2):
        _write(root / "trainB" / f"tile{k}.jpg", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return root


def test_reader_pairs_gt_by_stem_not_by_position(tmp_path):
    # "c10" sorts before "c9" as text: positions would pair them wrongly once one file is missing
    root = _layout(tmp_path / "d", stems=("c9", "c10", "a0"))
    split = open_split(root, "train")
    assert [Path(a).stem for a in split.a] == [Path(g).stem for g in split.a_gt] == ["a0", "c10", "c9"]
    assert len(split.b) == 2 and split_names(root) == ["train"]
    assert load_b(split.b[0]).shape == (24, 24, 3)
    a = load_a(split.a[0])
    assert np.array_equal(load_a(split.a[0], invert=True), 255 - a)


@pytest.mark.parametrize("breakage, message", [
    (lambda r: [p.unlink() for p in (r / "trainB").iterdir()] and (r / "trainB").rmdir(), "no trainB/ folder"),
    (lambda r: (r / "trainA" / "c2.png").unlink(), "trainA_GT/c2.tif: GT file without a matching A image"),
    (lambda r: (r / "trainA_GT" / "c2.tif").unlink(), "trainA/c2.png: A image without a GT mask"),
    (lambda r: _write(r / "trainB" / "grey.png", np.zeros((24, 24), np.uint8)),
     "trainB/grey.png: domain B must be RGB, this image has 1 channel"),
    (lambda r: _write(r / "trainA_GT" / "c1.tif", np.full((24, 24), 17, np.uint8)),
     "trainA_GT/c1.tif: not a binary mask"),
    (lambda r: _write(r / "trainA_GT" / "c3.tif", np.zeros((20, 24), np.uint8)),
     "trainA_GT/c3.tif: size 24x20 differs from its A image c3.png (24x24)"),
    (lambda r: _write(r / "trainA" / "c1.tif", np.zeros((24, 24), np.uint8)), "two images share the stem 'c1'"),
])
def test_reader_errors_name_the_file(tmp_path, breakage, message):
    root = _layout(tmp_path / "d")
    breakage(root)
    with pytest.raises(DatasetError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        open_split(root, "train")


def test_flat_layout_splits_by_stable_stem_hash(tmp_path):
    root = tmp_path / "flat"
    rng = np.random.default_rng(1)
    for k in range(30):
        _write(root / "A" / f"im{k}.png", rng.integers(0, 255, (8, 8), dtype=np.uint8))
        _write(root / "A_GT" / f"im{k}.png", np.zeros((8, 8), np.uint8))
        _write(root / "B" / f"he{k}.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    train, test = (open_split(root, s, fractions=(0.7, 0.0, 0.3)) for s in ("train", "test"))
    assert set(train.a).isdisjoint(test.a) and len(train.a) + len(test.a) == 30
    assert 10 <= len(train.a) <= 28
    _write(root / "A" / "im99.png", np.zeros((8, 8), np.uint8))
    _write(root / "A_GT" / "im99.png", np.zeros((8, 8), np.uint8))
    again = open_split(root, "train", fractions=(0.7, 0.0, 0.3))
    assert set(train.a) <= set(again.a)  # adding a file moves no other file


def test_crop_and_flip_apply_the_same_window_to_an_image_and_its_mask():
    image = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    mask = (image % 7 == 0).astype(np.uint8) * 255
    for seed in range(6):
        a, m = crop_and_flip([image, mask], 36, 32, np.random.default_rng(seed), nearest=[True, True])
        assert a.shape == m.shape == (32, 32)
        assert np.array_equal(m > 0, a % 7 == 0)
    assert crop_and_flip([mask], 36, 16, None)[0].shape == (16, 16)


def test_synth_unaligned_writes_the_layout_the_reader_opens(ray_local, tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["synth", "unaligned", "--n", "6", "--size", "32", "--out", str(out), "--split", "0.5,0,0.5"]
    assert main(args) == 0
    assert "images: 6 (6 rendered" in capsys.readouterr().out
    train, test = open_split(out, "train"), open_split(out, "test")
    assert len(train.a) + len(test.a) == 6 and train.has_gt
    index = int(Path(train.a[0]).stem)
    sample = render_unaligned(UnalignedConfig(size=32), 0, index)
    assert np.array_equal(load_a(train.a[0]), sample.a)
    assert np.array_equal(load_b(train.b[0]), render_unaligned(UnalignedConfig(size=32), 0,
                                                               int(Path(train.b[0]).stem)).b)
    assert main(args) == 0 and "6 already complete" in capsys.readouterr().out


def test_synth_unaligned_bad_input_writes_nothing(tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["synth", "unaligned", "--n", "4", "--out", str(out), "--split", "0.5,0.5"]) == 2
    assert "--split must be three numbers" in capsys.readouterr().err
    assert main(["synth", "unaligned", "--n", "4", "--out", str(out), "--size", "8"]) == 2
    assert "UnalignedConfig.size" in capsys.readouterr().err
    assert not out.exists()
