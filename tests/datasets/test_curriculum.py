import numpy as np
import pytest

from microforge.datasets.curriculum import DEFAULT_PHASES, Curriculum, Phase, curriculum_phase
from microforge.platform.errors import ConfigError


def names(total):
    return [curriculum_phase(e, total).name for e in range(total)]


def test_default_table():
    assert [(p.name, p.end, p.noise_scale, p.mixed_prob) for p in DEFAULT_PHASES] == [
        ("easy", 0.06, 0.10, 0.0),
        ("medium", 0.25, 0.35, 0.2),
        ("hard", 0.56, 0.70, 0.4),
        ("extreme", 1.0, 1.0, 0.6),
    ]


@pytest.mark.parametrize(
    "epoch, name",
    [(0, "easy"), (5, "easy"), (6, "medium"), (24, "medium"), (25, "hard"), (55, "hard"), (56, "extreme"),
     (99, "extreme")],
)
def test_boundaries_belong_to_the_later_phase(epoch, name):
    phase = curriculum_phase(epoch, 100)
    assert isinstance(phase, Phase) and phase.name == name


def test_boundaries_with_other_totals():
    # 3/50 = 0.06 and 14/25 = 0.56 exactly: the boundary epoch starts the next phase.
    assert curriculum_phase(2, 50).name == "easy" and curriculum_phase(3, 50).name == "medium"
    assert curriculum_phase(13, 25).name == "hard" and curriculum_phase(14, 25).name == "extreme"


def test_small_epoch_counts():
    assert names(1) == ["easy"]
    assert names(2) == ["easy", "hard"]
    assert names(4) == ["easy", "hard", "hard", "extreme"]
    assert names(10) == ["easy", "medium", "medium", "hard", "hard", "hard"] + ["extreme"] * 4


@pytest.mark.parametrize("total", range(1, 41))
def test_difficulty_never_decreases(total):
    phases = [curriculum_phase(e, total) for e in range(total)]
    assert phases[0].name == "easy"
    assert all(a.noise_scale <= b.noise_scale and a.mixed_prob <= b.mixed_prob for a, b in zip(phases, phases[1:]))


def test_numpy_integers_are_accepted():
    assert curriculum_phase(np.int64(3), np.int64(4)).name == "extreme"


@pytest.mark.parametrize("epoch, total", [(-1, 10), (10, 10), (0, 0), (1.5, 10), (True, 10)])
def test_bad_epochs(epoch, total):
    with pytest.raises(ConfigError, match="epoch"):
        curriculum_phase(epoch, total)


def test_custom_table():
    table = Curriculum.load({"phases": [
        {"name": "warm", "end": 0.5, "noise_scale": 0.2, "mixed_prob": 0.0},
        {"name": "full", "end": 1.0, "noise_scale": 1.0, "mixed_prob": 0.5},
    ]})
    assert [table.phase(e, 4).name for e in range(4)] == ["warm", "warm", "full", "full"]
    assert curriculum_phase(3, 4, table).mixed_prob == 0.5
    assert Curriculum.load(table.to_json_dict()) == table


def phase(name, end, scale=0.5, mixed=0.0):
    return {"name": name, "end": end, "noise_scale": scale, "mixed_prob": mixed}


@pytest.mark.parametrize(
    "phases, message",
    [
        ([], "at least one"),
        ([phase("a", 0.5), phase("b", 0.5), phase("c", 1.0)], "strictly increasing"),
        ([phase("a", 0.6), phase("b", 0.3), phase("c", 1.0)], "strictly increasing"),
        ([phase("a", 0.5), phase("b", 0.9)], "end at 1.0"),
        ([phase("a", 0.5), phase("a", 1.0)], "unique"),
        ([phase("a", 1.0, scale=1.5)], "noise_scale"),
        ([phase("a", 0.0), phase("b", 1.0)], "end"),
        ([{**phase("a", 1.0), "mixed": 0.1}], "did you mean 'mixed_prob'"),
    ],
)
def test_bad_tables(phases, message):
    with pytest.raises(ConfigError, match=message):
        Curriculum.load({"phases": phases})
