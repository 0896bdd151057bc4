"""Scale-aware segmentation: the training scale in the artifact, resizing to it and back, an
explicit scale, tiling, and the out-of-recipe validation metric."""

import numpy as np
import pytest
import torch

from microforge.datasets.blobs import render_blob
from microforge.platform.errors import ConfigError
from microforge.platform.transforms import transform_from_spec
from microforge.trainers import get_workload, load_artifact
from microforge.trainers.export import export_artifact
from microforge.trainers.predict import input_scale, segment_probabilities
from microforge.trainers.unet.evaluate import predict_masks
from microforge.trainers.unet.lightning import UNetModule

from .test_unet_training import blob_batches

UNIT = transform_from_spec({"name": "unit_range", "params": {}})


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    """An untrained tiny U-Net trained (as far as the card knows) on 32-px blobs."""
    torch.manual_seed(0)
    module = UNetModule(preset="tiny", image_size=32, blob={"size": 32})
    path = export_artifact(module, tmp_path_factory.mktemp("scaled") / "model", workload=get_workload("delineation"))
    return load_artifact(path), module.model.eval()


def _at(model, image, shape):
    """The network run on ``image`` resized to ``shape`` (no padding needed: multiples of 8)."""
    import cv2

    small = cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(small)[None, None]))[0, 0].numpy()


def test_artifact_records_the_training_scale(scaled):
    artifact, _ = scaled
    scale = artifact.preprocessing["scale"]
    assert scale["image_size"] == 32 and 2.0 <= scale["dot_radius_px"] <= 6.0
    assert 5.0 < scale["silhouette_radius_px"] < 16.0


def test_inputs_are_resized_to_the_training_scale_and_masks_come_back_at_input_size(scaled):
    import cv2

    artifact, model = scaled
    image = render_blob({"size": 64}, 0, 0).image[:, :48].copy()  # 64 x 48: longer side 2x the training size
    assert input_scale(image.shape, artifact.preprocessing) == 0.5
    masks = predict_masks(artifact, image)
    assert masks.shape == (1, 1, 64, 48)
    prob = segment_probabilities(model, UNIT, [image], size_multiple=8, preprocessing=artifact.preprocessing)[0]
    expected = cv2.resize(_at(model, image, (32, 24)), (48, 64), interpolation=cv2.INTER_LINEAR)
    assert prob.shape == (64, 48) and np.allclose(prob, expected, atol=1e-5)
    # an explicit scale wins: 1 runs the network at the input's own resolution
    native = segment_probabilities(model, UNIT, [image], size_multiple=8, preprocessing=artifact.preprocessing,
                                   scale=1.0)[0]
    assert np.allclose(native, _at(model, image, (64, 48)), atol=1e-5)
    assert not np.allclose(native, prob, atol=1e-5)
    # an artifact without a recorded scale keeps running at the input's resolution
    old = segment_probabilities(model, UNIT, [image], size_multiple=8, preprocessing={"image_size": 32})[0]
    assert np.array_equal(old, native)
    with pytest.raises(ConfigError, match="scale must be"):
        segment_probabilities(model, UNIT, [image], scale=0.0)


def test_inputs_are_percentile_stretched_at_the_model_scale_when_training_images_were(tmp_path):
    import cv2

    torch.manual_seed(0)
    module = UNetModule(preset="tiny", image_size=32, blob={"size": 32, "bit_depths": [8]})
    artifact = load_artifact(export_artifact(module, tmp_path / "model", workload=get_workload("delineation")))
    assert artifact.preprocessing["scale"]["percentile_clip"] == [0.5, 99.5]
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(),
                                torch.nn.Conv2d(4, 1, 3, padding=1)).eval()  # an output that follows the input
    image = render_blob({"size": 128}, 0, 0).image
    small = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)
    lo, hi = np.percentile(small, [0.5, 99.5])
    expected = cv2.resize(_at(model, np.clip((small - lo) / (hi - lo), 0, 1).astype(np.float32), (32, 32)), (128, 128),
                          interpolation=cv2.INTER_LINEAR)
    prob = segment_probabilities(model, UNIT, [image], size_multiple=8, preprocessing=artifact.preprocessing)[0]
    assert np.allclose(prob, expected, atol=1e-4)
    # so an upload's contrast and offset do not matter; without the record they do
    dim = (0.3 + 0.2 * image).astype(np.float32)
    again = segment_probabilities(model, UNIT, [dim], size_multiple=8, preprocessing=artifact.preprocessing)[0]
    assert np.allclose(again, prob, atol=1e-3)
    plain = {"scale": {k: v for k, v in artifact.preprocessing["scale"].items() if k != "percentile_clip"}}
    unstretched = [segment_probabilities(model, UNIT, [x], size_multiple=8, preprocessing=plain)[0]
                   for x in (image, dim)]
    assert np.abs(unstretched[0] - unstretched[1]).max() > 1e-2


def test_a_large_image_tiles_to_the_untiled_result():
    # A local model (5x5 receptive field) whose output varies with the image: away from tile
    # borders tiles see exactly what the whole image shows, and the blend hides the borders.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(),
                                torch.nn.Conv2d(4, 1, 3, padding=1)).eval()
    image = render_blob({"size": 160}, 1, 0).image
    whole = segment_probabilities(model, UNIT, [image], tile=0)[0]
    tiled = segment_probabilities(model, UNIT, [image], tile=48)[0]
    assert tiled.shape == whole.shape == (160, 160) and whole.std() > 0.01
    assert np.abs(tiled - whole).mean() < 1e-3 and np.abs(tiled - whole).max() < 0.05
    # the default tile side is 4x the recorded training size: 160 px at scale 1 tiles at 4 x 16 = 64
    recorded = segment_probabilities(model, UNIT, [image], preprocessing={"scale": {"image_size": 16}}, scale=1.0)[0]
    assert np.allclose(recorded, segment_probabilities(model, UNIT, [image], tile=64)[0])


def test_module_reports_out_of_recipe_dice_and_rescales_training_batches(tmp_path):
    import pytorch_lightning as pl

    module = UNetModule(preset="tiny", image_size=32, boundary_samples=0, blob={"size": 32}, random_rescale=0.5, seed=3)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=blob_batches(1), val_dataloaders=blob_batches(1, seed=1))
    assert 0.0 <= float(trainer.callback_metrics["val_ood_dice"]) <= 1.0
    # the augmentation draws from the module's seeded generator: the same seed, the same batch
    batch = next(iter(blob_batches(1)))
    image, mask = UNetModule._inputs(batch)
    outs = []
    for _ in range(2):
        m = UNetModule(preset="tiny", image_size=32, random_rescale=0.5, seed=3)
        outs.append([m._rescale(image, mask) for _ in range(3)])
    for (a_img, a_mask), (b_img, b_mask) in zip(*outs):
        assert a_img.shape == image.shape and torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)
        assert set(torch.unique(a_mask).tolist()) <= {0.0, 1.0}
    assert any(not torch.equal(a_img, image) for a_img, _ in outs[0])
