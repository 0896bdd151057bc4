"""Label formats: round trips, normalised ranges, headers, errors, dataset files, registry."""

import math

import numpy as np
import pytest
import yaml

from microforge.datasets.labels import (
    LABEL_FORMATS, format_classes, format_dota, format_ultralytics_obb, format_ultralytics_yaml,
    format_yolo_obb, get_label_format, parse_dota, parse_ultralytics_obb, parse_yolo_obb,
)
from microforge.datasets.obb import OrientedBox, clip_boxes
from microforge.platform.errors import ConfigError, DatasetError

W, H = 320, 240
NAMES = ["Crystal"]
IDS = {"Crystal": 0}


def random_boxes(seed: int, n: int = 60) -> list[OrientedBox]:
    """Rods (length >= 1.5 x width, shorter than the image) scattered over and around the image,
    clipped: a mix of whole and truncated boxes."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(n):
        width = rng.uniform(3, 30)
        boxes.append(OrientedBox.from_geometry(rng.uniform(-20, W + 20), rng.uniform(-20, H + 20),
                                               rng.uniform(1.5 * width, 200), width,
                                               rng.uniform(-math.pi, math.pi)))
    clipped = clip_boxes(boxes, W, H)
    assert any(b.truncated for b in clipped) and not all(b.truncated for b in clipped)
    return clipped


def canonical(box: OrientedBox) -> tuple[float, float, float, float, float]:
    """(cx, cy, length, width, angle) with length the longer side."""
    if box.length >= box.width:
        return box.cx, box.cy, box.length, box.width, box.angle
    return box.cx, box.cy, box.width, box.length, box.angle + math.pi / 2


def assert_same_geometry(a: OrientedBox, b: OrientedBox, atol: float = 1e-3) -> None:
    ga, gb = canonical(a), canonical(b)
    np.testing.assert_allclose(ga[:4], gb[:4], atol=atol)
    assert abs((ga[4] - gb[4] + math.pi / 2) % math.pi - math.pi / 2) < 1e-4  # modulo pi


def assert_same_corners(a: OrientedBox, b: OrientedBox, atol: float = 1e-3) -> None:
    np.testing.assert_allclose(a.corners_array(), b.corners_array(), atol=atol)


def test_dota_round_trip():
    boxes = random_boxes(0)
    parsed = parse_dota(format_dota(boxes, "microforge-crystals"))
    assert len(parsed) == len(boxes)
    for box, back in zip(boxes, parsed):
        assert back.truncated == box.truncated and back.class_name == box.class_name
        assert_same_corners(box, back)  # the written quadrilateral, clamped if truncated
        if not box.truncated:  # corners of a whole box are an exact rectangle
            assert_same_geometry(box, back)


def test_yolo_obb_round_trip_is_exact_for_geometry():
    boxes = random_boxes(1)
    parsed = parse_yolo_obb(format_yolo_obb(boxes, W, H, IDS), W, H, NAMES)
    assert len(parsed) == len(boxes)
    for box, back in zip(boxes, parsed):
        assert back.class_name == "Crystal" and not back.truncated  # no flag in this format
        assert_same_geometry(box, back)  # truncated boxes too: the format stores the geometry
        assert back.angle == pytest.approx(box.angle, abs=1e-5)  # the rod direction is kept


def test_ultralytics_round_trip():
    boxes = random_boxes(2)
    parsed = parse_ultralytics_obb(format_ultralytics_obb(boxes, W, H, IDS), W, H, NAMES)
    assert len(parsed) == len(boxes)
    for box, back in zip(boxes, parsed):
        assert back.class_name == "Crystal"
        assert_same_corners(box, back)
        if not box.truncated:
            assert_same_geometry(box, back)


def test_normalised_values_in_unit_range_for_rods_cut_everywhere():
    rng = np.random.default_rng(3)
    anchors = [(x, y) for x in (0, W / 2, W) for y in (0, H / 2, H) if (x, y) != (W / 2, H / 2)]
    boxes = []
    for _ in range(40):
        for ax, ay in anchors:
            # up to 1.5 x the image width: long diagonal rods whose size exceeds 1 normalised
            boxes.append(OrientedBox.from_geometry(ax + rng.normal(0, 10), ay + rng.normal(0, 10),
                                                   rng.uniform(10, 1.5 * W), rng.uniform(2, 30),
                                                   rng.uniform(-math.pi, math.pi)))
    boxes = clip_boxes(boxes, W, H, min_visible_fraction=0.05)
    assert sum(b.truncated for b in boxes) > 100
    yolo = np.loadtxt(format_yolo_obb(boxes, W, H, IDS).splitlines(), ndmin=2)
    assert ((yolo[:, 1:5] >= 0) & (yolo[:, 1:5] <= 1)).all()
    assert ((yolo[:, 5] >= -math.pi / 2) & (yolo[:, 5] <= math.pi / 2)).all()
    ultra = np.loadtxt(format_ultralytics_obb(boxes, W, H, IDS).splitlines(), ndmin=2)
    assert ((ultra[:, 1:] >= 0) & (ultra[:, 1:] <= 1)).all()


def test_dota_header_and_difficulty():
    inside = OrientedBox.from_geometry(100, 100, 50, 10, 0.2)
    (cut,) = clip_boxes([OrientedBox.from_geometry(0, 100, 50, 10, 0.2)], W, H)
    lines = format_dota([inside, cut], "microforge-crystals").splitlines()
    assert lines[:2] == ["imagesource:microforge-crystals", "gsd:null"]
    assert [line.split()[-2:] for line in lines[2:]] == [["Crystal", "0"], ["Crystal", "1"]]
    assert format_dota([], "x", gsd=0.25).splitlines() == ["imagesource:x", "gsd:0.25"]


def test_unknown_class_name_on_write():
    box = OrientedBox.from_geometry(100, 100, 50, 10, 0.2, class_name="Needle")
    with pytest.raises(DatasetError, match="Needle"):
        format_yolo_obb([box], W, H, IDS)


@pytest.mark.parametrize("parse, text, message", [
    (lambda t: parse_dota(t), "imagesource:x\n1 2 3 4 5 6 7 8 Crystal 0\n1 2 3 Crystal 0",
     "line 3: DOTA expects 10"),
    (lambda t: parse_dota(t), "1 2 3 4 5 6 7 8 Crystal 0\n1 2 3 4 5 six 7 8 Crystal 0",
     "line 2: expected numbers"),
    (lambda t: parse_dota(t), "1 2 3 4 5 6 7 8 Crystal 2", "line 1: DOTA difficulty"),
    (lambda t: parse_yolo_obb(t, W, H, NAMES), "0 .5 .5 .1 .1 0\n0 .5 .5 .1 .1", "line 2: YOLO-OBB"),
    (lambda t: parse_yolo_obb(t, W, H, NAMES), "\n0 .5 nope .1 .1 0", "line 2: expected numbers"),
    (lambda t: parse_yolo_obb(t, W, H, NAMES), "0 .5 .5 .1 .1 0\n3 .5 .5 .1 .1 0",
     "line 2: unknown class id 3"),
    (lambda t: parse_yolo_obb(t, W, H, NAMES), "x .5 .5 .1 .1 0", "line 1: class id 'x'"),
    (lambda t: parse_ultralytics_obb(t, W, H, NAMES), "0 .1 .1 .2 .1 .2 .2", "line 1: Ultralytics"),
    (lambda t: parse_ultralytics_obb(t, W, H, NAMES), "0 .1 .1 .2 .1 .2 .2 .1 inf",
     "line 1: non-finite"),
    (lambda t: parse_ultralytics_obb(t, W, H, NAMES), "1 .1 .1 .2 .1 .2 .2 .1 .2",
     "line 1: unknown class id 1"),
])
def test_malformed_lines_name_the_line(parse, text, message):
    with pytest.raises(DatasetError, match=message):
        parse(text)


def test_classes_txt():
    assert format_classes(["Crystal", "Needle"]) == "Crystal\nNeedle\n"
    for bad in ([], ["Crystal", "Crystal"], ["two words"]):
        with pytest.raises(DatasetError):
            format_classes(bad)


def test_ultralytics_yaml():
    text = format_ultralytics_yaml("/data/crystals", {"train": "train.txt", "val": "val.txt",
                                                      "test": ""}, NAMES)
    assert yaml.safe_load(text) == {"path": "/data/crystals", "train": "train.txt",
                                    "val": "val.txt", "names": {0: "Crystal"}}
    with pytest.raises(DatasetError, match="valid"):
        format_ultralytics_yaml("/d", {"valid": "val.txt"}, NAMES)


def test_registry_round_trip_and_paths():
    assert {name: (f.directory, f.suffix) for name, f in LABEL_FORMATS.items()} == {
        "dota": ("labels_dota", ".txt"), "yolo_obb": ("labels_yolo_obb", ".txt"),
        "ultralytics": ("labels", ".txt")}
    boxes = random_boxes(4, n=10)
    for fmt in LABEL_FORMATS.values():
        text = fmt.format(boxes, width=W, height=H, class_names=NAMES, image_source="m")
        parsed = fmt.parse(text, width=W, height=H, class_names=NAMES)
        assert len(parsed) == len(boxes)
    assert LABEL_FORMATS["ultralytics"].label_path("images/train/0001.png") == "labels/train/0001.txt"
    assert LABEL_FORMATS["dota"].label_path("images/0001.png") == "labels_dota/0001.txt"
    with pytest.raises(DatasetError, match="images/"):
        LABEL_FORMATS["dota"].label_path("pics/0001.png")
    with pytest.raises(ConfigError, match="did you mean 'yolo_obb'"):
        get_label_format("yolo-obb")
