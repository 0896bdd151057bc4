import json

import pytest
from pydantic import Field

from microforge.platform.config import ConfigModel, FloatRange, IntRange
from microforge.platform.errors import ConfigError


class Example(ConfigModel):
    width: int = Field(64, gt=0, description="canvas width")
    gain: float = Field(0.5, ge=0, le=1)
    span: FloatRange = (0.0, 1.0)
    count: IntRange = (1, 5)


def test_unknown_key_names_key_and_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'widht' \(did you mean 'width'\?\)"):
        Example.load({"widht": 3})


def test_out_of_range_value_names_field():
    with pytest.raises(ConfigError, match=r"Example\.width"):
        Example.load({"width": 0})


@pytest.mark.parametrize("key,value", [("span", [2.0, 1.0]), ("count", [5, 1])])
def test_range_with_lo_above_hi_is_rejected(key, value):
    with pytest.raises(ConfigError, match="lo > hi"):
        Example.load({key: value})


def test_json_and_yaml_files_load(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"width": 7, "span": [0.1, 0.2]}))
    (tmp_path / "c.yaml").write_text("width: 7\nspan: [0.1, 0.2]\n")
    a = Example.load(tmp_path / "c.json")
    b = Example.load(tmp_path / "c.yaml")
    assert a == b and a.span == (0.1, 0.2)
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != Example().config_hash()


def test_unparsable_or_missing_file_is_a_config_error(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot parse"):
        Example.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="not found"):
        Example.load(tmp_path / "missing.json")


def test_assignment_is_validated():
    cfg = Example()
    with pytest.raises(Exception):
        cfg.width = -1
