"""The HTTP API over real HTTP against one Serve application (started once for this module)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import time

import cv2
import httpx
import numpy as np
import pytest


SMALL = {"width": 160, "height": 120}


def rods_image(width: int = 256, height: int = 192) -> tuple[np.ndarray, list[tuple[float, ...]]]:
    """A gray image with three dark, well separated rods; returns it and their (cx, cy, L, W, angle rad)."""
    image = np.full((height, width), 180, np.uint8)
    rods = [(60.0, 50.0, 70.0, 10.0, 0.3), (180.0, 60.0, 60.0, 8.0, -1.0), (120.0, 140.0, 90.0, 12.0, 1.4)]
    for cx, cy, length, w, angle in rods:
        box = cv2.boxPoints(((cx, cy), (length, w), float(np.degrees(angle))))
        cv2.fillPoly(image, [np.round(box).astype(np.int32)], 60)
    return image, rods


def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def client(serve_app):
    with httpx.Client(base_url=serve_app.url, headers=serve_app.headers, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def rods_upload(client):
    image, _ = rods_image()
    r = client.post("/upload", files={"file": ("rods.png", png_bytes(image), "image/png")})
    assert r.status_code == 200, r.text
    return r.json()["name"]


def ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is (status < 400), body
    return body


def fails(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False and isinstance(body["detail"], str) and body["detail"], body
    return body["detail"]


def decode_data_url(url: str) -> np.ndarray:
    header, data = url.split(",", 1)
    assert header.startswith("data:image/") and header.endswith(";base64")
    image = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


def wait_for(predicate, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


# --- basics ----------------------------------------------------------------------------------------

def test_health_docs_index_and_error_format(client):
    health = ok(client.get("/health"))
    assert health["status"] == "ok" and health["device"] == "cpu"
    assert health["batching"]["max_batch_size"] == 8
    # Replicas load the default model (the newest U-Net here) before taking traffic.
    assert health["models"]["segmentation_loaded"] == ["unet-tiny"]
    assert health["batching"]["max_batch_seen"] == 0
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in ("/predict", "/predict/json", "/colorize", "/colorize/json", "/synth_preview", "/synth_batch", "/inference", "/stream_frame",
                 "/outputs_run_batch_start", "/system_info"):
        assert path in spec["paths"], path
    assert client.get("/").status_code == 200
    fails(client.get("/no_such_endpoint"), 404)
    detail = fails(client.post("/synth_preview", json={"t": 0.5, "bogus": 1}), 422)
    assert "bogus" in detail


def test_system_info_lists_deployments_and_replicas(client):
    info = ok(client.get("/system_info"))
    assert info["cpu"]["count"] >= 1 and info["ray"]["cluster_resources"]["CPU"] == 2
    deployments = info["deployments"]
    assert set(deployments) >= {"Ingress", "SegmentationModel", "Detector", "GeneratorModel", "ColorizerModel",
                                "CrystalRenderer"}
    assert deployments["CrystalRenderer"]["replicas"].get("RUNNING") == 2


# --- delineation -----------------------------------------------------------------------------------

def test_predict_png_and_json(client, serve_app):
    from microforge.serve.segmentation import load_segmentation

    image = np.random.default_rng(0).integers(0, 255, (64, 96), dtype=np.uint8)
    r = client.post("/predict", files={"file": ("x.png", png_bytes(image), "image/png")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    mask = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (64, 96) and set(np.unique(mask)) <= {0, 255}
    # The same artifact run here: the served mask and probabilities match
    # (a pixel may flip where batched and single forward passes differ in the last bit).
    net = load_segmentation(serve_app.models_dir, "unet-tiny")
    prob = net.predict([image])[0]
    assert np.mean((mask > 0) == (prob > net.threshold)) > 0.999
    body = ok(client.post("/predict/json", files={"file": ("x.png", png_bytes(image), "image/png")}))
    assert np.mean((decode_data_url(body["mask_b64"]) > 0) == (prob > net.threshold)) > 0.999
    assert np.abs(decode_data_url(body["prob_b64"]).astype(float) - prob * 255).max() <= 1.0
    assert body["stats"]["height"] == 64 and body["stats"]["width"] == 96
    assert body["stats"]["foreground_fraction"] == pytest.approx(float(np.mean(prob > net.threshold)), abs=1e-3)
    assert body["stats"]["mean_prob"] == pytest.approx(float(prob.mean()), abs=1e-4)
    assert body["model_info"]["id"] == "unet-tiny" and body["model_info"]["transform"]["name"] == "unit_range"
    fails(client.post("/predict", files={"file": ("x.txt", b"not an image", "text/plain")}), 415)
    fails(client.post("/predict", params={"model_id": "gan/tiny"},
                      files={"file": ("x.png", png_bytes(image), "image/png")}), 422)


def test_predict_16bit_gives_the_eval_mask(client, serve_app):
    """A 16-bit upload reaches the model unscaled: the artifact's transform (/65535) applies, so
    /predict's mask is exactly predict_masks' (prob > sigmoid(threshold))."""
    from microforge.trainers.registry import load_artifact
    from microforge.trainers.unet.evaluate import predict_masks

    image = np.random.default_rng(5).integers(0, 20000, (48, 64), dtype=np.uint16)  # max far below 65535
    r = client.post("/predict", files={"file": ("x.png", png_bytes(image), "image/png")})
    assert r.status_code == 200, r.text
    served = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED) > 0
    expected = predict_masks(load_artifact(serve_app.models_dir / "unet-tiny"), image)[0, 0] > 0
    assert np.array_equal(served, expected)


def test_predict_scale_resizes_the_input_and_returns_the_mask_at_upload_size(client, serve_app):
    """?scale= resizes the upload before the network (the same segment_probabilities as eval);
    the mask and probabilities come back at the upload's size."""
    from microforge.serve.segmentation import load_segmentation

    image = np.random.default_rng(1).integers(0, 255, (80, 120), dtype=np.uint8)
    net = load_segmentation(serve_app.models_dir, "unet-tiny")
    assert net.info["scale"] is None  # an artifact without a recorded scale: factor 1 unless asked
    half = net.predict([image], [0.5])[0]
    assert half.shape == (80, 120) and not np.allclose(half, net.predict([image])[0], atol=1e-6)
    body = ok(client.post("/predict/json", params={"scale": 0.5, "values": True},
                          files={"file": ("x.png", png_bytes(image), "image/png")}))
    assert body["stats"]["height"] == 80 and body["stats"]["width"] == 120
    np.testing.assert_allclose(np.array(body["prob_values"]), half, atol=1e-5)
    r = client.post("/predict", params={"scale": 0.5}, files={"file": ("x.png", png_bytes(image), "image/png")})
    mask = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (80, 120) and np.mean((mask > 0) == (half > net.threshold)) > 0.999
    fails(client.post("/predict", params={"scale": 0}, files={"file": ("x.png", png_bytes(image), "image/png")}), 422)


def test_legacy_artifact_serves_its_reference_probabilities(client):
    from .conftest import LEGACY_LOGITS

    yy, xx = np.mgrid[0:32, 0:32]
    image = ((np.hypot(yy - 16, xx - 16) < 9) * 50000 + 5000).astype(np.uint16)
    body = ok(client.post("/predict/json", params={"model_id": "legacy-unet-v1", "values": True},
                          files={"file": ("x.png", png_bytes(image), "image/png")}))
    assert body["model_info"]["id"] == "legacy-unet-v1" and body["model_info"]["task"] == "segment"
    expected = 1.0 / (1.0 + np.exp(-np.load(LEGACY_LOGITS).astype(np.float64).reshape(32, 32)))
    np.testing.assert_allclose(np.array(body["prob_values"]), expected, atol=1e-4)


def test_generate_is_a_function_of_the_seed(client):
    models = {m["id"]: m for m in ok(client.get("/available_models"))["models"]}
    assert (models["gan/tiny"]["type"], models["gan/tiny"]["task"]) == ("generator", "generate")
    assert models["unet-tiny"]["task"] == "segment" and models["legacy-unet-v1"]["task"] == "segment"
    assert [m["id"] for m in ok(client.get("/available_models", params={"task": "generate"}))["models"]] \
        == ["gan/tiny"]
    first = ok(client.post("/generate", json={"model_id": "gan/tiny", "seeds": [3, 7, 3]}))
    again = ok(client.post("/generate", json={"seeds": [7, 3]}))  # the newest (only) generator
    assert [i["seed"] for i in first["images"]] == [3, 7, 3] and first["model_info"]["task"] == "generate"
    assert first["images"][0]["width"] == 8 and max(first["batch_sizes"]) >= 1
    same = {i["seed"]: i["image_b64"] for i in again["images"]}
    assert first["images"][0]["image_b64"] == first["images"][2]["image_b64"] == same[3]
    assert first["images"][1]["image_b64"] == same[7] != same[3]
    pixels = decode_data_url(same[3])
    assert pixels.shape == (8, 8) and pixels.dtype == np.uint8
    counted = ok(client.post("/generate", json={"n": 2, "seed": 7}))
    assert [i["seed"] for i in counted["images"]] == [7, 8] and counted["images"][0]["image_b64"] == same[7]
    assert "at most 16" in fails(client.post("/generate", json={"n": 17}), 422)
    fails(client.post("/generate", json={"seeds": [1], "n": 2}), 422)
    fails(client.post("/generate", json={"seeds": [-1]}), 422)
    fails(client.post("/generate", json={"model_id": "unet-tiny", "seeds": [1]}), 422)
    fails(client.post("/generate", json={"model_id": "../x", "seeds": [1]}), 400)
    health = ok(client.get("/health"))
    assert health["models"]["generators_loaded"] == ["gan/tiny"]
    assert health["batching"]["tasks"]["generate"]["max_batch_seen"] >= 1


def test_generate_truncation_bits_and_batches_counting_images(client, serve_app):
    from microforge.trainers import load_artifact
    from microforge.trainers.predict import generate_images

    loaded = load_artifact(serve_app.models_dir / "gan" / "tiny")
    # 12 images > max_batch_size 8: the request's seeds span several forward passes.
    body = ok(client.post("/generate", json={"model": "gan/tiny", "n": 12, "seed": 5, "truncation": 0.5}))
    assert body["seeds"] == list(range(5, 17)) == [i["seed"] for i in body["images"]]
    assert (body["truncation"], body["bits"], len(body["images"])) == (0.5, 8, 12)
    assert all(1 <= size <= 8 for size in body["batch_sizes"]), body["batch_sizes"]
    served = [decode_data_url(i["image_b64"]) for i in body["images"]]
    expected = generate_images(loaded["generator"], loaded.transform, body["seeds"], truncation=0.5)
    plain = generate_images(loaded["generator"], loaded.transform, body["seeds"])
    for got, want, untruncated in zip(served, expected, plain):
        # the same function as offline generation (a float rounding apart at most: other batch sizes)
        assert got.dtype == np.uint8 and np.abs(got.astype(int) - want).max() <= 1
        assert np.abs(got.astype(int) - untruncated).max() > 1  # truncation changed the latent
    assert len({i["image_b64"] for i in body["images"]}) == 12
    again = ok(client.post("/generate", json={"model": "gan/tiny", "seeds": [9], "truncation": 0.5}))
    assert np.abs(decode_data_url(again["images"][0]["image_b64"]).astype(int) - served[4]).max() <= 1

    deep = ok(client.post("/generate", json={"model": "gan/tiny", "n": 3, "seed": 5, "bits": 16}))
    assert deep["bits"] == 16 and deep["truncation"] is None
    assert deep["images"] == ok(client.post("/generate", json={"n": 3, "seed": 5, "bits": 16}))["images"]
    wide = [decode_data_url(i["image_b64"]) for i in deep["images"]]
    shallow = [decode_data_url(i["image_b64"]) for i in
               ok(client.post("/generate", json={"n": 3, "seed": 5}))["images"]]
    for image16, image8, want in zip(wide, shallow, generate_images(loaded["generator"], loaded.transform,
                                                                     [5, 6, 7], dtype=np.uint16)):
        assert image16.dtype == np.uint16 and image16.shape == (8, 8) and image16.max() > 255  # PNG-16
        assert np.abs(image16.astype(int) - want).max() <= 2  # the artifact's inverse transform
        assert np.abs(image16 / 257.0 - image8).max() <= 1.5

    assert "truncation" in fails(client.post("/generate", json={"n": 2, "truncation": 5}), 422)
    assert "truncation" in fails(client.post("/generate", json={"n": 2, "truncation": -0.5}), 422)
    assert "bits" in fails(client.post("/generate", json={"n": 2, "bits": 12}), 422)
    fails(client.post("/generate", json={"seeds": [2**32]}), 422)  # torch would use seed 0's latent
    fails(client.post("/generate", json={"n": 2, "seed": 2**32 - 1}), 422)  # the second seed is past it
    assert "n" in fails(client.post("/generate", json={"n": 0}), 422)
    assert "at most 16" in fails(client.post("/generate", json={"n": 65}), 422)
    assert "generate" in fails(client.post("/generate", json={"model": "unet-tiny", "n": 1}), 422)
    assert "max_generate_bytes" in fails(client.post("/generate", json={"n": 9, "bits": 16}), 413)


def test_concurrent_requests_share_a_batch(serve_app):
    image = png_bytes(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8))

    async def burst() -> list[dict]:
        async with httpx.AsyncClient(base_url=serve_app.url, headers=serve_app.headers, timeout=120) as c:
            responses = await asyncio.gather(*(c.post("/predict/json", files={"file": ("x.png", image, "image/png")})
                                               for _ in range(12)))
        return [ok(r) for r in responses]

    bodies = asyncio.run(burst())
    assert max(b["batch_size"] for b in bodies) > 1
    health = httpx.get(f"{serve_app.url}/health", timeout=30).json()
    assert health["batching"]["max_batch_seen"] >= 1


def test_demo(client):
    body = ok(client.get("/demo", params={"num_dots": 40, "jitter": 0.03, "seed": 3}))
    for key in ("input_b64", "mask_b64", "prob_b64", "true_mask_b64"):
        assert decode_data_url(body[key]).shape == (64, 64)  # the artifact's training size
    assert 0.0 <= body["dice"] <= 1.0 and math.isfinite(body["snr_db"])
    assert body["num_dots"] == 40
    body = ok(client.get("/demo", params={"noise_type": "gaussian", "noise_scale": 0.5, "seed": 3}))
    assert body["noise_type"] == "gaussian"
    fails(client.get("/demo", params={"noise_type": "bogus"}), 422)
    fails(client.get("/demo", params={"num_dots": 0}), 422)
    fails(client.get("/demo", params={"jitter": 2}), 422)


# --- colorization ----------------------------------------------------------------------------------

COLORIZER = "cyclegan/tiny"  # trained on inverted A (preprocessing.invert_input)


def offline_colorize(serve_app, images: list, **overrides) -> list:
    """What `microforge.trainers.predict.colorize_images` makes of ``images`` with the served artifact."""
    from microforge.trainers.predict import colorize_images
    from microforge.trainers.registry import load_artifact

    artifact = load_artifact(serve_app.models_dir / COLORIZER)
    options = {"size_multiple": artifact.preprocessing["size_multiple"],
               "invert_input": artifact.preprocessing["invert_input"], **overrides}
    return colorize_images(artifact["generator_ab"], artifact.transform, images, **options)


def rgb_png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, image.shape
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def same_image(served: np.ndarray, offline: np.ndarray) -> None:
    # (another batch or thread count may round a value the other way: one grey level at most)
    assert served.shape == offline.shape
    diff = np.abs(served.astype(int) - offline.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99, (diff.max(), (diff == 0).mean())


def test_colorize_serves_the_offline_colorization_of_gray_colour_and_16bit_uploads(client, serve_app):
    listed = ok(client.get("/available_models", params={"task": "colorize"}))["models"]
    assert [(m["id"], m["type"], m["task"], m["workload"]) for m in listed] \
        == [(COLORIZER, "colorizer", "colorize", "cyclegan")]
    rng = np.random.default_rng(3)
    # gray, odd sides (37 x 50): padded to 40 x 52 for the network and cropped back
    gray = rng.integers(0, 256, (37, 50), dtype=np.uint8)
    r = client.post("/colorize", files={"file": ("g.png", png_bytes(gray), "image/png")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    served = rgb_png(r.content)
    want = offline_colorize(serve_app, [gray])[0]
    same_image(served, want)
    assert served.shape == (37, 50, 3) and served.std() > 5  # a real picture, not a flat fill
    # the card's invert_input applies: without it the picture differs
    assert np.abs(offline_colorize(serve_app, [gray], invert_input=False)[0].astype(int) - want).max() > 5

    # colour (BGR on disk): gray by BT.601 (OpenCV's BGR2GRAY) first; the JSON variant shows both
    bgr = rng.integers(0, 256, (29, 41, 3), dtype=np.uint8)
    body = ok(client.post("/colorize/json", files={"file": ("c.png", png_bytes(bgr), "image/png")}))
    assert (body["width"], body["height"], body["inverted"]) == (41, 29, True)
    assert np.array_equal(decode_data_url(body["input_b64"]), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    after = cv2.cvtColor(decode_data_url(body["image_b64"]), cv2.COLOR_BGR2RGB)
    same_image(after, offline_colorize(serve_app, [bgr])[0])
    info = body["model_info"]
    assert (info["id"], info["task"], info["type"], info["architecture"]) \
        == (COLORIZER, "colorize", "colorizer", "ResnetGenerator")
    assert (info["invert_input"], info["size_multiple"], info["transform"]["name"]) == (True, 4, "signed_unit")
    assert body["batch_size"] >= 1 and body["timings"]["total_s"] > 0

    # 16 bits: to 8 by /257 (rounded), as the unaligned reader reads domain A
    deep = rng.integers(0, 65536, (21, 18), dtype=np.uint16)
    served16 = rgb_png(client.post("/colorize", files={"file": ("d.png", png_bytes(deep), "image/png")}).content)
    same_image(served16, offline_colorize(serve_app, [deep])[0])
    same_image(served16, offline_colorize(serve_app, [np.round(deep / 257.0).astype(np.uint8)])[0])
    # smaller than the network's minimum (2 x size_multiple): padded up to it, cropped back
    tiny = rgb_png(client.post("/colorize", files={"file": ("t.png", png_bytes(gray[:3, :5]), "image/png")}).content)
    same_image(tiny, offline_colorize(serve_app, [gray[:3, :5]])[0])

    # other tasks' artifacts are refused, with a JSON error naming the task
    for other in ("gan/tiny", "unet-tiny"):
        detail = fails(client.post("/colorize", params={"model_id": other},
                                   files={"file": ("g.png", png_bytes(gray), "image/png")}), 422)
        assert "colorize" in detail, detail
    fails(client.post("/colorize", params={"model_id": "../x"}, files={"file": ("g.png", png_bytes(gray))}), 400)
    # the upload checks of every upload: content, byte cap (2 MiB here), side cap (1024 px here)
    fails(client.post("/colorize", files={"file": ("x.png", b"not an image", "image/png")}), 415)
    fails(client.post("/colorize/json", files={"file": ("big.png", b"\x89PNG" + os.urandom(3 << 20), "image/png")}),
          413)
    fails(client.post("/colorize", files={"file": ("wide.png", png_bytes(np.zeros((8, 2048), np.uint8)))}), 413)
    assert ok(client.get("/health"))["models"]["colorizers_loaded"] == [COLORIZER]


def test_concurrent_colorize_uploads_share_a_batch(serve_app):
    """Each upload is one image of a batch; images of two sizes share it (one forward pass per size)."""
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (24, 32) if i % 2 else (30, 17), dtype=np.uint8) for i in range(8)]

    async def burst() -> list[dict]:
        async with httpx.AsyncClient(base_url=serve_app.url, headers=serve_app.headers, timeout=120) as c:
            return [ok(r) for r in await asyncio.gather(*(
                c.post("/colorize/json", files={"file": ("x.png", png_bytes(image), "image/png")})
                for image in images))]

    bodies = asyncio.run(burst())
    assert max(b["batch_size"] for b in bodies) > 1
    assert all(b["batch_size"] <= 4 for b in bodies)  # max_batch_size counts images
    for body, want in zip(bodies, offline_colorize(serve_app, images)):
        same_image(cv2.cvtColor(decode_data_url(body["image_b64"]), cv2.COLOR_BGR2RGB), want)
    batching = httpx.get(f"{serve_app.url}/health", timeout=30).json()["batching"]["tasks"]["colorize"]
    assert batching["max_batch_size"] == 4 and batching["max_batch_seen"] > 1


# --- uploads and images ----------------------------------------------------------------------------

def test_upload_validation(client, serve_app):
    image, _ = rods_image()
    body = ok(client.post("/upload", files={"file": ("../../evil name.png", png_bytes(image), "image/png")}))
    assert body["name"] == "uploads/evil_name.png" and (serve_app.data_root / body["name"]).is_file()
    r = client.get("/get_image", params={"name": body["name"]})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content == png_bytes(image)
    # The same name again: stored beside the first, which stays as it was.
    other = np.zeros((20, 30), np.uint8)
    again = ok(client.post("/upload", files={"file": ("evil name.png", png_bytes(other), "image/png")}))
    assert again["name"] == "uploads/evil_name-1.png" and again["width"] == 30
    assert client.get("/get_image", params={"name": again["name"]}).content == png_bytes(other)
    assert client.get("/get_image", params={"name": body["name"]}).content == png_bytes(image)
    # content is checked, whatever the name says
    fails(client.post("/upload", files={"file": ("fake.png", b"#!/bin/sh\necho hi\n", "image/png")}), 415)
    fails(client.post("/upload", files={"file": ("trunc.png", png_bytes(image)[:-30], "image/png")}), 422)
    fails(client.post("/upload", files={"file": ("empty.png", b"", "image/png")}), 422)
    # size cap (2 MiB in this app) and dimension cap (1024 px per side)
    fails(client.post("/upload", files={"file": ("big.png", b"\x89PNG" + os.urandom(3 << 20), "image/png")}), 413)
    wide = np.zeros((8, 2048), np.uint8)
    fails(client.post("/upload", files={"file": ("wide.png", png_bytes(wide), "image/png")}), 413)
    # a request body over the request cap is refused from its Content-Length
    fails(client.post("/upload", content=b"x" * (9 << 20), headers={"content-type": "application/octet-stream"}), 413)
    # ... and counted while streaming when there is none (chunked transfer)
    chunks = (b"[" + b" " * (1 << 20) for _ in range(9))
    fails(client.post("/synth_preview", content=chunks, headers={"content-type": "application/json"}), 413)


def test_paths_cannot_escape_the_data_root(client, serve_app, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(png_bytes(np.zeros((4, 4), np.uint8)))
    (serve_app.data_root / "uploads").mkdir(parents=True, exist_ok=True)
    link = serve_app.data_root / "uploads" / "link.png"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    for name in ("../secret.png", "uploads/../../secret.png", str(outside), "~/x.png", "uploads\\..\\x.png",
                 "uploads/\x00.png"):
        fails(client.get("/get_image", params={"name": name}), 400)
    fails(client.get("/get_image", params={"name": "uploads/link.png"}), 403)
    fails(client.get("/get_image", params={"name": "uploads/missing.png"}), 404)
    fails(client.post("/inference", json={"image_name": "../../etc/passwd"}), 400)
    fails(client.post("/inference", json={"image_name": "uploads/link.png"}), 403)
    fails(client.post("/preproc_preview", json={"image_name": "/etc/passwd"}), 400)
    fails(client.post("/synth_batch", json={"config": SMALL, "n_images": 2, "out_dir": "../../escape"}), 400)
    fails(client.post("/synth_batch", json={"config": SMALL, "n_images": 2, "out_dir": "/tmp/escape"}), 400)
    fails(client.get("/outputs_inspect_dataset", params={"dataset_path": "/"}), 400)
    fails(client.get("/outputs_inspect_dataset", params={"dataset_path": ".."}), 400)
    fails(client.post("/synth_save_preset", json={"name": "../evil", "config": SMALL}), 400)
    fails(client.get("/synth_get_preset", params={"name": "../../etc/passwd"}), 400)
    fails(client.post("/preproc_save_preset", json={"name": ".hidden", "pipeline": {}}), 400)
    # names with shell metacharacters are just refused names (nothing reaches a shell)
    fails(client.post("/synth_save_preset", json={"name": "x; rm -rf /", "config": SMALL}), 400)
    assert not list(tmp_path.parent.glob("escape*")) and not (tmp_path / "escape").exists()


def test_models_load_only_from_the_models_dir(client, serve_app):
    for folder in ("../data", "../../", "/etc"):
        r = client.post("/select_model_folder", json={"folder": folder})
        assert r.status_code in (400, 403), r.text
    fails(client.post("/load_model", json={"model_id": "../data/uploads"}), 400)
    # an uploaded folder holding a model.py: the .py is not even stored, and the folder is not loadable
    files = [("files", ("evil/model.py", b"import os\ndef infer(m, i):\n    return []\n", "text/x-python")),
             ("files", ("evil/frame_1.png", png_bytes(rods_image()[0]), "image/png"))]
    body = ok(client.post("/outputs_upload_folder", files=files, data={"folder": "uploaded"}))
    assert body["skipped"] == ["evil/model.py"] and body["saved"] == 1
    uploaded = serve_app.data_root / body["dataset_path"] / "evil"
    assert not (uploaded / "model.py").exists()
    (uploaded / "model.py").write_text("def infer(m, i):\n    return []\n")  # even if one got there
    fails(client.post("/select_model_folder", json={"folder": str(uploaded)}), 403)
    fails(client.post("/load_model", json={"model_id": f"../data/{body['dataset_path']}/evil"}), 400)
    assert all(not m["folder"].startswith("..") for m in ok(client.get("/available_models"))["models"])


# --- preprocessing ---------------------------------------------------------------------------------

def test_preprocess_operations_and_presets(client, rods_upload):
    for operation in ("gray", "equalize", "clahe", "blur", "denoise", "gradient"):
        body = ok(client.post("/preprocess", json={"image_name": rods_upload, "operation": operation}))
        assert client.get("/get_image", params={"name": body["name"]}).status_code == 200
    fails(client.post("/preprocess", json={"image_name": rods_upload, "operation": "sharpen"}), 422)
    pipeline = {"desaturate": 1.0, "clahe_enable": True, "clahe_clip_limit": 2.0, "clahe_tile_grid": 8,
                "equalize": True, "gradient_strength": 0.3, "invert": True}
    body = ok(client.post("/preproc_preview", json={"image_name": rods_upload, "pipeline": pipeline}))
    assert decode_data_url(body["overlay_b64"]).shape[:2] == (192, 256)
    saved = ok(client.post("/save_preprocessed", json={"image_name": rods_upload, "pipeline": pipeline,
                                                      "name": "rods_pre"}))
    assert saved["name"] == "preprocessed/rods_pre.png"
    fails(client.post("/preproc_preview", json={"image_name": rods_upload, "pipeline": {"desaturate": 2}}), 422)
    fails(client.post("/preproc_preview", json={"image_name": rods_upload, "pipeline": {"clahe_tile_grid": 65}}),
          422)
    ok(client.post("/preproc_save_preset", json={"name": "strong", "pipeline": pipeline}))
    assert "strong" in ok(client.get("/preproc_presets"))["presets"]
    assert ok(client.get("/preproc_get_preset", params={"name": "strong"}))["pipeline"] == pipeline
    fails(client.get("/preproc_get_preset", params={"name": "nope"}), 404)


# --- models and inference --------------------------------------------------------------------------

def test_inference_with_builtin_plugin_and_unet(client, rods_upload):
    models = {m["id"]: m for m in ok(client.get("/available_models"))["models"]}
    assert models["builtin:contours"]["type"] == "builtin"
    assert models["plugins/fixed-rod"]["type"] == "plugin"
    assert models["unet-tiny"]["type"] == "segmentation"

    body = ok(client.post("/inference", json={"image_name": rods_upload, "model_id": "builtin:contours"}))
    _, rods = rods_image()
    assert body["stats"]["count"] == 3
    angles = sorted(d["angle"] for d in body["detections"])
    assert np.allclose(angles, sorted(r[4] for r in rods), atol=0.05)  # radians
    lengths = sorted(body["stats"]["lengths"])
    assert np.allclose(lengths, sorted(r[2] for r in rods), atol=4)
    for key in ("count", "mean_length", "mean_width", "mean_aspect_ratio", "lengths", "widths", "aspect_ratios",
                "mean_area", "areas"):
        assert key in body["stats"]
    assert client.get(body["overlay_url"]).status_code == 200
    assert body["model_info"]["type"] == "builtin" and body["timings"]["total_s"] > 0

    selected = ok(client.post("/load_model", json={"model_id": "plugins/fixed-rod"}))
    assert selected["selected"]["detector"] == "plugins/fixed-rod"
    body = ok(client.post("/inference", json={"image_name": rods_upload}))
    assert body["detections"] == [{"x": 10.0, "y": 12.0, "w": 20.0, "h": 4.0, "angle": 0.5, "confidence": 0.9,
                                   "class": "rod"}]
    detail = fails(client.post("/inference", json={"image_name": rods_upload, "model_id": "plugins/broken"}), 500)
    assert "boom" in detail
    fails(client.post("/load_model", json={"model_id": "plugins/missing"}), 404)

    ok(client.post("/select_model_folder", json={"folder": "unet-tiny"}))
    body = ok(client.post("/inference", json={"image_name": rods_upload}))
    assert body["model_info"]["type"] == "segmentation"

    compare = ok(client.post("/inference_compare", json={"image_name": rods_upload, "model_id": "builtin:contours",
                                                         "pipeline": {"invert": True}}))
    assert compare["original"]["stats"]["count"] == 3 and "stats" in compare["processed"]
    assert client.get(compare["processed"]["overlay_url"]).status_code == 200
    ok(client.post("/load_model", json={"model_id": "builtin:contours"}))


def crystal_frames(counts: list[int], seed: int = 3) -> list[np.ndarray]:
    """A rendered growth series: frame i has exactly ``counts[i]`` rods (small canvas, no scale bar)."""
    from microforge.datasets.crystals import render_crystal

    config = {"width": 128, "height": 96, "rod_len_px_lo_hi": [20, 48], "scalebar_enable": False,
              "fused_enable": False}
    return [render_crystal({**config, "n_rods_rng_lo_hi": [n, n], "stage_lambda_range": [0.1 * 3 ** i] * 2},
                           seed, 0).image for i, n in enumerate(counts)]


def offline_detections(serve_app, model_id: str, image: np.ndarray) -> list[dict]:
    """What ``microforge eval crystals`` finds: the artifact's model through ``detect_image``."""
    import torch

    from microforge.trainers import load_artifact
    from microforge.trainers.detector.predict import detect_image, detections_as_dicts

    torch.set_num_threads(1)
    artifact = load_artifact(serve_app.models_dir / model_id)
    return detections_as_dicts(detect_image(artifact["model"], image, transform=artifact.transform))


def same_detections(got: list[dict], want: list[dict]) -> bool:
    order = lambda d: (round(d["x"], 2), round(d["y"], 2))  # noqa: E731
    return len(got) == len(want) and all(
        g["class"] == w["class"] and all(math.isclose(g[k], w[k], rel_tol=1e-4, abs_tol=1e-3)
                                         for k in ("x", "y", "w", "h", "angle", "confidence"))
        for g, w in zip(sorted(got, key=order), sorted(want, key=order)))


def test_crystal_detector_artifact_serves_what_detect_image_finds_offline(client, serve_app):
    from .conftest import CRYSTAL_DETECTOR

    listed = {m["id"]: m for m in ok(client.get("/available_models", params={"task": "detect"}))["models"]}
    assert (listed[CRYSTAL_DETECTOR]["type"], listed[CRYSTAL_DETECTOR]["workload"]) == ("detector", "crystals")
    image = crystal_frames([6])[0]
    name = ok(client.post("/upload", files={"file": ("crystal.png", png_bytes(image), "image/png")}))["name"]
    body = ok(client.post("/inference", json={"image_name": name, "model_id": CRYSTAL_DETECTOR}))
    want = offline_detections(serve_app, CRYSTAL_DETECTOR, image)
    assert want and same_detections(body["detections"], want)
    assert body["stats"]["count"] == len(want)
    info = body["model_info"]
    assert (info["id"], info["type"], info["task"], info["workload"]) == (CRYSTAL_DETECTOR, "detector", "detect",
                                                                          "crystals")
    assert info["transform"]["name"] == "unit_range" and client.get(body["overlay_url"]).status_code == 200
    # the server's default stays what its config names (here the contour detector)
    assert ok(client.get("/available_models"))["selected"]["detector"] == "builtin:contours"


def test_timelapse_with_the_crystal_detector_reports_its_counts_and_medians(client, serve_app):
    """Each frame of a rendered growth series analysed by the chosen detector, exactly as offline."""
    from .conftest import CRYSTAL_DETECTOR

    frames = crystal_frames([3, 5, 8])
    files = [("files", (f"frame_{i}.png", png_bytes(f), "image/png")) for i, f in enumerate(frames)]
    path = ok(client.post("/outputs_upload_folder", files=files, data={"folder": "crystal-growth"}))["dataset_path"]
    start = ok(client.post("/outputs_run_batch_start", json={"dataset_path": path, "model_folder": CRYSTAL_DETECTOR}))
    assert start["model_id"] == CRYSTAL_DETECTOR

    def finished():
        status = ok(client.get("/outputs_run_batch_status", params={"job_id": start["job_id"]}))
        return status if status["status"] != "running" else None

    assert wait_for(finished, timeout=180, interval=1.0)["status"] == "done"
    per_time = ok(client.get("/outputs_run_batch_result", params={"job_id": start["job_id"]}))["per_time"]
    assert [p["time"] for p in per_time] == [0.0, 1.0, 2.0]
    for entry, frame in zip(per_time, frames):
        want = offline_detections(serve_app, CRYSTAL_DETECTOR, frame)
        lengths = [max(d["w"], d["h"]) for d in want]
        widths = [min(d["w"], d["h"]) for d in want]
        assert entry["count"] == len(want) > 0
        assert entry["median_length"] == pytest.approx(float(np.median(lengths)), rel=1e-4)
        assert entry["median_width"] == pytest.approx(float(np.median(widths)), rel=1e-4)


# --- synthesis -------------------------------------------------------------------------------------

def test_synth_configs_and_presets(client):
    body = ok(client.get("/synth_default_config"))
    assert body["source"] in ("defaults", "standard") and body["config"]["width"] > 0
    assert "properties" in ok(client.get("/synth_config_schema"))["schema"]
    ok(client.post("/synth_save_standard", json={"config": {**SMALL, "n_rods_rng_lo_hi": [5, 10]}}))
    body = ok(client.get("/synth_default_config"))
    assert body["source"] == "standard" and body["config"]["width"] == 160
    ok(client.post("/synth_save_preset", json={"name": "tiny", "config": SMALL}))
    presets = ok(client.get("/synth_presets"))
    assert "tiny" in presets["presets"] and "default" in presets["presets"]
    assert ok(client.get("/synth_get_preset", params={"name": "tiny"}))["config"]["height"] == 120
    assert ok(client.get("/synth_get_preset", params={"name": "standard"}))["source"] == "builtin"
    fails(client.get("/synth_get_preset", params={"name": "nope"}), 404)
    fails(client.post("/synth_save_preset", json={"name": "bad", "config": {"width": -1}}), 422)


def test_synth_preview(client):
    body = ok(client.post("/synth_preview", json={"t": 0.5, "config": SMALL, "seed": 7, "return_obbs": True}))
    assert body["image_b64"].startswith("data:image/jpeg;base64,")
    assert decode_data_url(body["image_b64"]).shape[:2] == (120, 160)
    assert (body["width"], body["height"], body["seed_used"]) == (160, 120, 7)
    assert set(body["timings"]) == {"generate_s", "encode_s", "total_s"}
    assert abs(body["t"] - 0.5) < 1e-6
    for box in body["obbs"]:
        assert set(box) >= {"cx", "cy", "L", "W", "angle_deg", "corners"} and len(box["corners"]) == 4
        assert -90 <= box["angle_deg"] < 90
    again = ok(client.post("/synth_preview", json={"t": 0.5, "config": SMALL, "seed": 7}))
    assert again["image_b64"] == body["image_b64"] and "obbs" not in again
    assert ok(client.post("/synth_preview", json={"config": SMALL}))["seed_used"] >= 0


def test_synth_preview_t_drives_the_stage_schedule(client):
    config = {**SMALL, "n_rods_rng_lo_hi": [20, 20], "rod_len_px_lo_hi": [10, 15, 60], "fused_enable": False}
    early = ok(client.post("/synth_preview", json={"t": 0.0, "config": config, "seed": 1, "return_obbs": True}))
    late = ok(client.post("/synth_preview", json={"t": 1.0, "config": config, "seed": 1, "return_obbs": True}))
    assert max(b["L"] for b in early["obbs"]) <= 15 + 1e-6
    assert max(b["L"] for b in late["obbs"]) > 15


def test_synth_preview_limits(client):
    detail = fails(client.post("/synth_preview", json={"config": {"width": 100000, "height": 100000}}), 422)
    assert "width" in detail
    detail = fails(client.post("/synth_preview", json={"config": {"width": 1024, "height": 1024}}), 422)
    assert "max_preview_pixels" in detail
    fails(client.post("/synth_preview", json={"t": 2, "config": SMALL}), 422)
    fails(client.post("/synth_preview", json={"t": 0.5, "config": {**SMALL, "widht": 3}}), 422)
    fails(client.post("/synth_preview", json={"quality": 0, "config": SMALL}), 422)


def test_synth_preview_bulk_spreads_over_replicas(client):
    rows = [{"id": f"r{i}", "t": i / 7, "seed": i} for i in range(8)]
    used = set()
    for _ in range(3):  # routing is randomised (power of two choices): a few bulks certainly reach both
        body = ok(client.post("/synth_preview_bulk", json={"rows": rows, "config": SMALL, "quality": 70,
                                                          "return_obbs": True}))
        assert set(body["images"]) == {r["id"] for r in rows} == set(body["obbs"]) == set(body["seeds"])
        assert body["seeds"]["r3"] == 3 and body["total_s"] > 0
        used |= set(body["replicas"])
        if len(body["replicas"]) == 2:
            break
    assert len(used) == 2 and len(body["replicas"]) == 2  # one bulk's rows ran on both renderer replicas
    fails(client.post("/synth_preview_bulk", json={"rows": rows + [{"id": "x", "t": 0}], "config": SMALL}), 422)
    fails(client.post("/synth_preview_bulk", json={"rows": [{"id": 1, "t": 0}, {"id": "1", "t": 1}]}), 422)
    fails(client.post("/synth_preview_bulk", json={"rows": []}), 422)


def test_synth_batch_runs_to_completion(client, serve_app):
    body = ok(client.post("/synth_batch", json={"config": SMALL, "n_images": 4, "out_dir": "done-run",
                                                "seed_base": 5, "lambda_range": [0.5, 2.0]}))
    job_id = body["job_id"]

    def finished():
        status = ok(client.get("/synth_batch_status", params={"job_id": job_id}))
        return status if status["state"] != "running" else None

    status = wait_for(finished, timeout=180, interval=1.0)
    assert status["state"] == "done", status
    assert status["done"] == status["total"] == 4 and status["images_per_s"] > 0 and status["errors"] == []
    info = json.loads((serve_app.data_root / "datasets" / "done-run" / "dataset.json").read_text())
    assert info["status"] == "complete" and info["seed"] == 5
    assert info["config"]["stage_lambda_range"] == [0.5, 2.0]
    fails(client.get("/synth_batch_status", params={"job_id": "0" * 32}), 404)
    fails(client.get("/synth_batch_status", params={"job_id": "../x"}), 422)
    fails(client.post("/synth_batch", json={"config": SMALL, "n_images": 10_000, "out_dir": "big"}), 422)
    fails(client.post("/synth_batch", json={"config": SMALL, "n_images": 2, "out_dir": "x",
                                            "lambda_range": [2.0, 1.0]}), 422)


def test_synth_batch_cancel(client, serve_app):
    config = {"width": 512, "height": 384}
    job_id = ok(client.post("/synth_batch", json={"config": config, "n_images": 200, "out_dir": "cancelled-run"}))[
        "job_id"]
    wait_for(lambda: ok(client.get("/synth_batch_status", params={"job_id": job_id}))["done"] >= 1, timeout=120)
    # A second job into the folder the first is writing is refused (by the state actor, whichever
    # ingress replica takes it); another folder is fine.
    for out_dir in ("cancelled-run", "cancelled-run", "cancelled-run/inner"):
        detail = fails(client.post("/synth_batch", json={"config": config, "n_images": 2, "out_dir": out_dir}), 409)
        assert detail.startswith(f"job {job_id} (running) is still writing 'datasets/cancelled-run'"), detail
        assert "ray::" not in detail and "pid=" not in detail  # the actor's error, not Ray's wrapper text
    body = ok(client.post("/synth_batch_cancel", json={"job_id": job_id}))
    assert body["state"] == "cancelled"

    def done() -> int:
        return ok(client.get("/synth_batch_status", params={"job_id": job_id}))["done"]

    def settled():  # batches already rendering may finish; then nothing more is written
        before = done()
        time.sleep(3)
        return (before,) if done() == before else None

    (final,) = wait_for(settled, timeout=40, interval=0)
    status = ok(client.get("/synth_batch_status", params={"job_id": job_id}))
    assert status["state"] == "cancelled" and status["done"] == final < 200


# --- time-lapse ------------------------------------------------------------------------------------

def test_timelapse_upload_inspect_run_and_result(client, serve_app):
    image, _ = rods_image()
    files = [("files", (f"seq/frame_{i}.png", png_bytes(image), "image/png")) for i in (1, 2, 10)]
    files += [("files", ("seq/frame_11.png", b"", "image/png")),
              ("files", ("seq/frame_12.png", b"\x89PNG garbage", "image/png")),
              ("files", ("seq/notes.txt", b"hello", "text/plain"))]
    upload = ok(client.post("/outputs_upload_folder", files=files, data={"folder": "movie"}))
    # Content is checked like /upload: the empty and the corrupt frame are reported, not stored.
    assert upload["dataset_path"] == "timelapse/movie" and upload["saved"] == 3
    assert upload["skipped"] == ["seq/notes.txt"]
    assert [r["name"] for r in upload["rejected"]] == ["seq/frame_11.png", "seq/frame_12.png"]
    path = upload["dataset_path"]
    # Frames that reach the folder another way (a microscope writing to the share) may still be bad.
    (serve_app.data_root / path / "seq" / "frame_11.png").write_bytes(b"")
    (serve_app.data_root / path / "seq" / "frame_12.png").write_bytes(b"\x89PNG garbage")
    inspect = ok(client.get("/outputs_inspect_dataset", params={"dataset_path": path}))
    assert (inspect["total"], inspect["readable"], inspect["zero_size"], inspect["unreadable"]) == (5, 3, 1, 1)
    fails(client.post("/outputs_upload_folder", files=[("files", ("../x.png", b"x", "image/png"))]), 400)

    job_id = ok(client.post("/outputs_run_batch_start", json={"dataset_path": path, "pipeline": {},
                                                              "model_folder": "builtin:contours"}))["job_id"]

    def finished():
        status = ok(client.get("/outputs_run_batch_status", params={"job_id": job_id}))
        return status if status["status"] != "running" else None

    status = wait_for(finished, timeout=180, interval=1.0)
    assert status["status"] == "done" and status["processed"] == status["total"] == 5 and status["percent"] == 100
    assert ok(client.get("/outputs_run_batch_status"))["job_id"] == job_id  # default: the latest run
    result = ok(client.get("/outputs_run_batch_result", params={"job_id": job_id}))
    assert [t["time"] for t in result["per_time"]] == [1.0, 2.0, 10.0]
    first = result["per_time"][0]
    assert first["count"] == 3 and first["mean_length"] > first["mean_width"] > 0
    for key in ("length", "width", "aspect_ratio"):
        assert len(first[f"hist_{key}"]["counts"]) == 20 and len(first[f"hist_{key}"]["edges"]) == 21
        assert f"std_{key}" in first
    assert result["processed"] == 5 and result["failed"] == 2
    images = result["images"]
    assert [i["name"] for i in images] == ["seq/frame_1.png", "seq/frame_2.png", "seq/frame_10.png",
                                           "seq/frame_11.png", "seq/frame_12.png"]
    assert "error" in images[3] and "error" in images[4]
    assert client.get(images[0]["overlay_url"]).status_code == 200
    fails(client.post("/outputs_run_batch_start", json={"dataset_path": path, "model_folder": "plugins/nope"}), 404)
    fails(client.post("/outputs_run_batch_start", json={"dataset_path": "../"}), 400)


# --- live ------------------------------------------------------------------------------------------

def test_live_frames_reach_every_websocket_client(client, serve_app):
    import websockets

    image, _ = rods_image()
    stamp = 1234.5

    async def scenario() -> list[dict]:
        sockets = [await websockets.connect(serve_app.ws_url, open_timeout=30) for _ in range(4)]
        try:
            await asyncio.sleep(1.0)  # let every replica's broadcaster start polling
            async with httpx.AsyncClient(base_url=serve_app.url, headers=serve_app.headers, timeout=60) as c:
                r = await c.post("/stream_frame", files={"file": ("f.png", png_bytes(image), "image/png")},
                                 data={"timestamp": str(stamp)})
                assert r.status_code == 200, r.text

            async def receive(ws) -> dict:
                while True:
                    message = json.loads(await ws.recv())
                    if message["last"]["time"] == stamp:
                        return message

            return await asyncio.wait_for(asyncio.gather(*(receive(ws) for ws in sockets)), timeout=30)
        finally:
            for ws in sockets:
                await ws.close()

    messages = asyncio.run(scenario())
    assert len(messages) == 4
    for message in messages:
        assert message["ok"] is True and message["last"]["stats"]["count"] == 3
        assert message["last"]["overlay_url"].startswith("/get_image?name=live/")
    stats = ok(client.get("/live_stats"))
    assert stats["last"]["time"] == stamp and stats["history"][-1]["count"] == 3
    fails(client.post("/stream_frame", files={"file": ("f.txt", b"nope", "text/plain")}), 415)


def test_idle_websockets_do_not_starve_http(client, serve_app):
    """64 idle /ws/live sockets (each would hold an ingress request slot): beyond the cap of live
    clients they are closed with 1013, a socket without the token is refused, and /health and
    /predict keep answering."""
    import websockets

    image, _ = rods_image()

    async def scenario() -> tuple[list[int], int, int, int]:
        anonymous = f"ws://127.0.0.1:{serve_app.port}/ws/live"
        with pytest.raises(websockets.exceptions.InvalidStatus):
            await websockets.connect(anonymous, open_timeout=30)
        sockets = await asyncio.gather(*(websockets.connect(serve_app.ws_url, open_timeout=60) for _ in range(64)))
        try:
            async def closed_code(ws) -> int:
                try:
                    await asyncio.wait_for(ws.wait_closed(), 10)
                    return ws.close_code
                except asyncio.TimeoutError:
                    return 0  # still open: one of the allowed clients
            codes = await asyncio.gather(*(closed_code(ws) for ws in sockets))
            async with httpx.AsyncClient(base_url=serve_app.url, headers=serve_app.headers, timeout=30) as c:
                health = await c.get("/health")
                predict = await c.post("/predict", files={"file": ("f.png", png_bytes(image), "image/png")})
                frame = await c.post("/stream_frame", files={"file": ("f.png", png_bytes(image), "image/png")})
            return codes, health.status_code, predict.status_code, frame.status_code
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets))

    codes, health, predict, frame = asyncio.run(scenario())
    assert (health, predict, frame) == (200, 200, 200)
    open_sockets = codes.count(0)
    assert 1 <= open_sockets <= 8, codes  # at most 4 per ingress replica (2 replicas)
    assert codes.count(1013) == 64 - open_sockets, codes


# --- security: token, CORS, no shell ---------------------------------------------------------------

def test_bearer_token_guards_mutating_endpoints(serve_app):
    image, _ = rods_image()
    with httpx.Client(base_url=serve_app.url, timeout=60) as anonymous:
        for path, kwargs in (("/upload", {"files": {"file": ("a.png", png_bytes(image), "image/png")}}),
                             ("/synth_preview", {"json": {"config": SMALL}}),
                             ("/synth_batch", {"json": {"n_images": 1, "out_dir": "x"}}),
                             ("/load_model", {"json": {"model_id": "builtin:contours"}})):
            r = anonymous.post(path, **kwargs)
            fails(r, 401)
            assert r.headers["www-authenticate"] == "Bearer"
        fails(anonymous.post("/synth_preview", json={"config": SMALL}, headers={"Authorization": "Bearer wrong"}), 401)
        fails(anonymous.post("/synth_preview", json={"config": SMALL}, headers={"Authorization": serve_app.token}), 401)
        assert anonymous.get("/health").status_code == 200  # reads stay open
        ok(anonymous.post("/synth_preview", json={"config": SMALL},
                          headers={"Authorization": f"Bearer {serve_app.token}"}))


def test_cors_only_for_configured_origins(serve_app):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    r = httpx.options(f"{serve_app.url}/synth_preview", headers={"Origin": serve_app.allowed_origin, **preflight})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == serve_app.allowed_origin
    assert r.headers["access-control-allow-credentials"] == "true"
    r = httpx.options(f"{serve_app.url}/synth_preview", headers={"Origin": "http://evil.example", **preflight})
    assert "access-control-allow-origin" not in r.headers
    r = httpx.get(f"{serve_app.url}/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_no_request_reaches_a_shell():
    """No module of the server starts processes or shells."""
    import microforge.serve as package

    root = os.path.dirname(package.__file__)
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".py"):
                source = open(os.path.join(folder, name), encoding="utf-8").read()
                for needle in ("subprocess", "os.system", "os.popen", "shell=True", "pty.spawn", "os.exec"):
                    assert needle not in source, f"{name} uses {needle}"


# --- reliability (last: it kills replicas) ----------------------------------------------------------

def _replica_names(deployment: str, app_name: str) -> list[str]:
    import ray

    prefix = f"SERVE_REPLICA::{app_name}#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))


def test_killed_replica_is_replaced_and_requests_keep_succeeding(serve_app):
    import ray

    image = png_bytes(np.random.default_rng(2).integers(0, 255, (64, 64), dtype=np.uint8))
    before = _replica_names("SegmentationModel", serve_app.app_name)
    assert len(before) == 2

    async def load() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=serve_app.url, headers=serve_app.headers, timeout=120) as c:
            async def one(i: int) -> httpx.Response:
                await asyncio.sleep(0.05 * i)
                return await c.post("/predict/json", files={"file": ("x.png", image, "image/png")})

            async def kill() -> None:
                await asyncio.sleep(0.4)  # while requests are queued and in flight on both replicas
                ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)

            results = await asyncio.gather(kill(), *(one(i) for i in range(40)))
            return results[1:]

    responses = asyncio.run(load())
    assert [r.status_code for r in responses] == [200] * 40, [r.text for r in responses if r.status_code != 200]

    def replaced():
        names = _replica_names("SegmentationModel", serve_app.app_name)
        return names if len(names) == 2 and before[0] not in names else None

    after = wait_for(replaced, timeout=120, interval=1.0)
    assert before[1] in after
    r = httpx.post(f"{serve_app.url}/predict/json", files={"file": ("x.png", image, "image/png")},
                   headers=serve_app.headers, timeout=120)
    assert r.status_code == 200


def test_killed_ingress_replica_is_replaced_and_clients_that_retry_succeed(serve_app):
    """A request in flight on an ingress replica that dies gets a 5xx (or a dropped connection):
    Serve does not replay HTTP requests. Retrying it succeeds on the surviving replica while the
    controller starts a replacement."""
    import ray

    before = _replica_names("Ingress", serve_app.app_name)
    assert len(before) == 2

    async def load() -> list[int]:
        async with httpx.AsyncClient(base_url=serve_app.url, headers=serve_app.headers, timeout=60) as c:
            async def one(i: int) -> int:
                await asyncio.sleep(0.05 * i)
                for attempt in range(4):
                    try:
                        r = await c.post("/synth_preview", json={"config": SMALL, "seed": i})
                        if r.status_code < 500:
                            return r.status_code
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.5 * (attempt + 1))
                return -1

            async def kill() -> None:
                await asyncio.sleep(0.3)
                ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)

            results = await asyncio.gather(kill(), *(one(i) for i in range(30)))
            return results[1:]

    assert asyncio.run(load()) == [200] * 30

    def replaced():
        names = _replica_names("Ingress", serve_app.app_name)
        return names if len(names) == 2 and before[0] not in names else None

    wait_for(replaced, timeout=120, interval=1.0)
    assert httpx.get(f"{serve_app.url}/health", timeout=60).json()["ok"] is True
