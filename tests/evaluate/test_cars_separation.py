"""The metrics separate what a user needs separated, on the CARS renderer's 16-bit images: two
renders of one preset (other seeds) are closer than that preset and ``low_signal``, and closer
than a blurred or a noise-added copy."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from microforge.datasets.cars import load_preset, render_cars
from microforge.evaluate.distances import frechet_distance, gaussian_stats, kernel_distance
from microforge.evaluate.features import texture_descriptor
from microforge.evaluate.images import to_float

N, SIZE = 24, 96


def cars_images(preset: str, seed: int) -> list[np.ndarray]:
    config = load_preset(preset).model_copy(update={"size": SIZE})
    return [render_cars(config, seed, i).image for i in range(N)]


def features(images) -> np.ndarray:
    return np.stack([texture_descriptor(to_float(image)[0]) for image in images])


@pytest.fixture(scope="module")
def sets():
    a = cars_images("default", 1)
    rng = np.random.default_rng(7)
    noisy = [np.clip(im + rng.normal(0, 3000, im.shape), 0, 65535).astype(np.uint16) for im in a]
    return {
        "a": features(a),
        "b": features(cars_images("default", 2)),
        "low_signal": features(cars_images("low_signal", 2)),
        "blurred": features([gaussian_filter(im, 1.5) for im in a]),
        "noisy": features(noisy),
    }


@pytest.mark.parametrize("other", ["low_signal", "blurred", "noisy"])
def test_same_preset_is_closer_than_another_look(sets, other):
    a, b, c = sets["a"], sets["b"], sets[other]
    assert frechet_distance(*gaussian_stats(a), *gaussian_stats(b)) < frechet_distance(*gaussian_stats(a),
                                                                                         *gaussian_stats(c))
    assert kernel_distance(a, b, subsets=20, subset_size=N)[0] < kernel_distance(a, c, subsets=20, subset_size=N)[0]
