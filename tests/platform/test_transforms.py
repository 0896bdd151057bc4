import numpy as np
import pytest

from microforge.platform.errors import ConfigError
from microforge.platform.transforms import Transform, transform_from_spec


def test_unit_range_by_dtype_maximum_and_back():
    t = Transform("unit_range")
    assert t.apply(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    assert t.apply(np.array([[0, 65535]], np.uint16)).tolist() == [[0.0, 1.0]]
    image = np.array([[3, 30000]], np.uint16)
    assert np.array_equal(t.invert(t.apply(image), np.uint16), image)
    with pytest.raises(ConfigError, match=r"finite values in \[0, 1\]"):
        t.apply(np.array([[1.5]], np.float32))


def test_percentile_is_per_image_with_optional_log():
    image = np.stack([np.arange(100, dtype=np.uint16).reshape(10, 10),
                      np.arange(100, dtype=np.uint16).reshape(10, 10) * 600])
    t = transform_from_spec({"name": "percentile", "params": {"p_lo": 1, "p_hi": 99}})
    out = t.apply(image)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)  # a per-image stretch: the scale drops out
    logged = Transform("percentile", {"log1p": True}).apply(image[1])
    assert logged[0, 1] > out[1][0, 1]  # log1p lifts the dark end
    assert Transform("percentile").apply(np.full((4, 4), 7, np.uint16)).max() == 0.0  # flat: no NaN


def test_signed_unit_round_trip():
    t = Transform("signed_unit")
    assert t.apply(np.array([0, 255], np.uint8)).tolist() == [-1.0, 1.0]
    assert t.invert(np.array([-1.0, 0.0, 1.0])).tolist() == [0, 128, 255]
    assert t.invert(np.array([1.0]), np.uint16).tolist() == [65535]


def test_bad_names_and_parameters():
    with pytest.raises(ConfigError, match="unknown transform 'percentil'.*did you mean 'percentile'"):
        transform_from_spec("percentil")
    with pytest.raises(ConfigError, match="has no parameter 'p_low'.*did you mean 'p_lo'"):
        Transform("percentile", {"p_low": 1})
    with pytest.raises(ConfigError, match="p_lo < p_hi"):
        Transform("percentile", {"p_lo": 90, "p_hi": 10})
    with pytest.raises(ConfigError, match="uint8 or uint16"):
        Transform("unit_range").apply(np.array([1], np.int64))
    assert transform_from_spec(None).spec() == {"name": "unit_range", "params": {}}
