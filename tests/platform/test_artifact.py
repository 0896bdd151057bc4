import json

import pytest
import torch

from microforge.platform.artifact import ArtifactError, read_artifact, save_artifact


def _save(path):
    module = torch.nn.Conv2d(1, 2, 3)
    save_artifact(path, module.state_dict(), architecture={"name": "Conv", "config": {"k": 3}},
                  preprocessing={"scale": 255}, metrics={"dice": 0.9}, provenance={"run": "r1"})
    return module


def test_round_trip(tmp_path):
    module = _save(tmp_path / "a")
    card, state = read_artifact(tmp_path / "a")
    assert card.name == "Conv" and card.architecture["config"] == {"k": 3}
    assert card.metrics == {"dice": 0.9} and card.preprocessing == {"scale": 255}
    for key, value in module.state_dict().items():
        assert torch.equal(state[key], value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temp directory left behind


def test_missing_file_is_named(tmp_path):
    _save(tmp_path / "a")
    (tmp_path / "a" / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="model.safetensors is missing"):
        read_artifact(tmp_path / "a")


def test_corrupt_weights_detected(tmp_path):
    _save(tmp_path / "a")
    weights = tmp_path / "a" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt"):
        read_artifact(tmp_path / "a")


def test_invalid_card(tmp_path):
    _save(tmp_path / "a")
    card = tmp_path / "a" / "model.json"
    card.write_text(json.dumps({"architecture": {}}))
    with pytest.raises(ArtifactError, match="model.json is invalid"):
        read_artifact(tmp_path / "a")
    card.write_text("{oops")
    with pytest.raises(ArtifactError, match="model.json is invalid"):
        read_artifact(tmp_path / "a")


def test_missing_directory(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        read_artifact(tmp_path / "nope")
