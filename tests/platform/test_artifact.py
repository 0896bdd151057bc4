import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from microforge.platform.artifact import ArtifactError, ComponentWeights, read_artifact, read_card, save_artifact
from microforge.trainers import load_artifact, load_model

LEGACY = Path(__file__).parents[1] / "data" / "legacy-unet-v1"


def _save(path):
    conv, lin = torch.nn.Conv2d(1, 2, 3), torch.nn.Linear(4, 2)
    save_artifact(path, {"encoder": ComponentWeights("torch.nn:Conv2d", {"in_channels": 1, "out_channels": 2,
                                                                          "kernel_size": 3}, conv.state_dict()),
                         "head": ComponentWeights("torch.nn:Linear", {"in_features": 4, "out_features": 2},
                                                  lin.state_dict())},
                  workload="w", task="generate", transform={"name": "signed_unit", "params": {}},
                  preprocessing={"scale": 255}, metrics={"dice": 0.9}, provenance={"run": "r1"})
    return conv, lin


def test_round_trip_of_two_components(tmp_path):
    conv, lin = _save(tmp_path / "a")
    card, states = read_artifact(tmp_path / "a")
    assert list(card.components) == ["encoder", "head"] and card.task == "generate" and card.workload == "w"
    assert card.metrics == {"dice": 0.9} and card.preprocessing == {"scale": 255}
    for key, value in conv.state_dict().items():
        assert torch.equal(states["encoder"][key], value)
    loaded = load_artifact(tmp_path / "a")
    x = torch.rand(1, 4)
    assert torch.equal(loaded["head"](x), lin(x)) and loaded.transform.name == "signed_unit"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temp directory left behind
    with pytest.raises(ArtifactError, match="no component 'decoder'"):
        loaded["decoder"]
    with pytest.raises(ArtifactError, match="components encoder, head"):
        load_model(tmp_path / "a")


def test_missing_component_file_is_named(tmp_path):
    _save(tmp_path / "a")
    (tmp_path / "a" / "head.safetensors").unlink()
    with pytest.raises(ArtifactError, match=r"head.safetensors \(component 'head'\) is missing"):
        read_artifact(tmp_path / "a")


def test_corrupt_weights_detected(tmp_path):
    _save(tmp_path / "a")
    weights = tmp_path / "a" / "encoder.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="component 'encoder'.*corrupt"):
        read_artifact(tmp_path / "a")


def test_invalid_card(tmp_path):
    _save(tmp_path / "a")
    card = tmp_path / "a" / "model.json"
    for bad in ({"format_version": 2, "components": {}}, {"format_version": 1, "architecture": {}},
                {"format_version": 2, "components": {"x": {"class": "a:B", "config": {}, "weights": "../x",
                                                           "sha256": ""}}}):
        card.write_text(json.dumps(bad))
        with pytest.raises(ArtifactError, match="model.json is invalid"):
            read_artifact(tmp_path / "a")
    card.write_text("{oops")
    with pytest.raises(ArtifactError, match="model.json is invalid"):
        read_card(tmp_path / "a")
    card.write_text(json.dumps({"format_version": 7}))
    with pytest.raises(ArtifactError, match="unsupported format_version 7"):
        read_card(tmp_path / "a")


def test_only_torch_modules_are_built(tmp_path):
    save_artifact(tmp_path / "a", {"model": ComponentWeights("subprocess:Popen", {"args": ["true"]}, {})},
                  workload=None, task=None, transform=None, preprocessing={}, metrics={}, provenance={})
    with pytest.raises(ArtifactError, match="not a torch.nn.Module"):
        load_artifact(tmp_path / "a")


def test_unknown_transform_is_an_artifact_error(tmp_path):
    _save(tmp_path / "a")
    card = tmp_path / "a" / "model.json"
    card.write_text(card.read_text().replace('"signed_unit"', '"signed_units"'))
    with pytest.raises(ArtifactError, match="unknown transform 'signed_units'.*did you mean 'signed_unit'"):
        load_artifact(tmp_path / "a")


def test_missing_directory(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        read_artifact(tmp_path / "nope")


def test_format_1_artifact_still_loads_with_its_workload(tmp_path):
    """An artifact written before multi-component artifacts (format_version 1, one
    model.safetensors) loads unchanged and gives the outputs it gave then."""
    shutil.copytree(LEGACY, tmp_path / "old")
    loaded = load_artifact(tmp_path / "old")
    assert loaded.card.format_version == 1 and list(loaded.components) == ["model"]
    assert (loaded.workload, loaded.task, loaded.transform.name) == ("delineation", "segment", "unit_range")
    yy, xx = np.mgrid[0:32, 0:32]
    image = ((np.hypot(yy - 16, xx - 16) < 9) * 50000 + 5000).astype(np.uint16)
    x = torch.from_numpy(loaded.transform.apply(image))[None, None]
    with torch.inference_mode():
        logits = load_model(tmp_path / "old")(x)[0, 0].numpy()
    np.testing.assert_allclose(logits, np.load(LEGACY.parent / "legacy-unet-v1-logits.npy"), atol=1e-5)
