"""``POST /generate`` for diffusion models over real HTTP: a tiny untrained DDPM artifact (the
``ddpm`` workload's) and a DreamBooth artifact of a tiny Stable Diffusion pipeline (the
``dreambooth`` workload's, exported untrained) beside a tiny GAN, in one Serve application
started for this module.

A diffusion image is the file ``microforge generate diffusion`` writes for the same (model,
phases, run seed, index, steps, guidance, scheduler), byte for byte; phases, caps and the GAN
path are checked too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import uuid

import cv2
import httpx
import numpy as np
import pytest

from microforge.datasets.embryo.layout import PHASES

from .conftest import app_config, free_port, wait_healthy
from .tiny_generator import save_tiny_generator

DDPM, GAN, DREAMBOOTH = "ddpm/tiny", "gan/tiny", "dreambooth/tiny"
MAX_IMAGES, MAX_STEPS = 16, 20


def save_tiny_ddpm(directory) -> None:
    """The untrained tiny DDPM of the generate-diffusion tests, exported as `microforge train ddpm` does."""
    import torch

    from microforge.trainers.diffusion.lightning import DDPMModule
    from microforge.trainers.diffusion.workload import DDPM as WORKLOAD
    from microforge.trainers.export import export_artifact
    from tests.generate.test_diffusion_generate import TINY

    torch.manual_seed(0)
    export_artifact(DDPMModule(**TINY), directory, workload=WORKLOAD)


def save_tiny_dreambooth(directory, pipeline) -> None:
    """A DreamBooth artifact of the tiny pipeline for phase t2, exported as `microforge train
    dreambooth` does (untrained: the UNet is the pipeline's)."""
    from microforge.datasets.embryo.layout import PROMPT_TEMPLATE, phase_prompt
    from microforge.trainers import get_workload
    from microforge.trainers.diffusion.dreambooth import DreamBoothModule
    from microforge.trainers.diffusion.pipeline import class_prompt_of
    from microforge.trainers.export import export_artifact
    from tests.trainers.tiny_sd import save_tiny_pipeline

    save_tiny_pipeline(pipeline)
    module = DreamBoothModule(pretrained=str(pipeline), phase="t2", instance_prompt=phase_prompt("t2"),
                              class_prompt=class_prompt_of(PROMPT_TEMPLATE), prompt_template=PROMPT_TEMPLATE,
                              resolution=32)
    export_artifact(module, directory, workload=get_workload("dreambooth"))


@pytest.fixture(scope="module")
def app(ray_local, tmp_path_factory):
    """The application with a GAN and a DDPM (the newest generator); 12 DDPM images per request
    at most by bytes, 16 by count, 20 sampling steps; batches of up to 2 diffusion chunks."""
    from ray import serve

    from microforge.serve.app import build_app, shutdown_serve
    from microforge.serve.state import kill_state

    tmp = tmp_path_factory.mktemp("serve-diffusion")
    save_tiny_generator(tmp / "models" / "gan" / "tiny")
    save_tiny_dreambooth(tmp / "models" / "dreambooth" / "tiny", tmp / "pipeline")
    save_tiny_ddpm(tmp / "models" / "ddpm" / "tiny")  # the newest
    card = json.loads((tmp / "models" / "ddpm" / "tiny" / "model.json").read_text())
    side = int(card["preprocessing"]["image_size"])
    port, state_actor = free_port(), f"state-{uuid.uuid4().hex[:8]}"
    base = app_config(tmp, port, state_actor)
    deployments = {name: base.deployments[name].model_copy(update={"num_replicas": 1}) for name in base.deployments}
    deployments["GeneratorModel"] = deployments["GeneratorModel"].model_copy(
        update={"max_batch_size": 16, "batch_wait_timeout_s": 0.25})
    limits = base.limits.model_copy(update={"max_generate_images": MAX_IMAGES, "max_generate_bytes": 12 * side * side,
                                            "max_generate_steps": MAX_STEPS})
    config = base.model_copy(update={"limits": limits, "deployments": deployments})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(config), name="microforge-diffusion-test", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        yield {"url": url, "port": port, "models": tmp / "models", "side": side, "token": config.api_token,
               "headers": {"Authorization": f"Bearer {config.api_token}"}}
    finally:
        shutdown_serve()
        kill_state(state_actor)


@pytest.fixture(scope="module")
def client(app):
    with httpx.Client(base_url=app["url"], headers=app["headers"], timeout=120) as c:
        yield c


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def fails(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False and body["detail"], body
    return body["detail"]


def png(data_url: str) -> bytes:
    header, data = data_url.split(",", 1)
    assert header == "data:image/png;base64"
    return base64.b64decode(data)


def pixels(data_url: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png(data_url), np.uint8), cv2.IMREAD_UNCHANGED)


def test_models_are_listed_with_their_options(client):
    listed = {m["id"]: m for m in ok(client.get("/available_models", params={"task": "generate"}))["models"]}
    assert set(listed) == {DDPM, GAN, DREAMBOOTH} and listed[DDPM]["type"] == "generator"
    assert listed[DDPM]["workload"] == "ddpm" and listed[DREAMBOOTH]["workload"] == "dreambooth"
    options = ok(client.get("/generate_options", params={"model": DDPM}))
    assert options["sampler"] == "diffusion" and options["phases"] == list(PHASES) and len(PHASES) == 16
    assert options["max_steps"] == MAX_STEPS and options["defaults"] == {"steps": 50, "guidance": 7.5,
                                                                       "scheduler": "dpm"}
    assert ok(client.get("/generate_options"))["model"] == DDPM  # the newest generator
    gan = ok(client.get("/generate_options", params={"model": GAN}))
    assert gan["sampler"] == "latent" and gan["bits"] == [8, 16] and "phases" not in gan
    fails(client.get("/generate_options", params={"model": "../x"}), 400)


def test_the_card_decides_the_sampler_and_a_taskless_ddpm_card_is_served(app):
    """Dispatch reads the diffusion sampler a card declares (a DDPM that declares none is still
    one); a DDPM exported before its workload offered a Serve task takes the workload's task."""
    import dataclasses

    from microforge.platform.artifact import read_card
    from microforge.serve.diffusion import diffusion_sampler
    from microforge.serve.discovery import ModelError, card_task
    from microforge.trainers.diffusion.sampling import ClassLabelSampler

    folder, gan_folder = app["models"] / "ddpm" / "tiny", app["models"] / "gan" / "tiny"
    ddpm, gan = read_card(folder), read_card(gan_folder)
    assert ddpm.task == "generate" and diffusion_sampler(DDPM, ddpm, folder) is ClassLabelSampler
    assert diffusion_sampler(GAN, gan, gan_folder) is None
    older = dataclasses.replace(ddpm, task=None, preprocessing={k: v for k, v in ddpm.preprocessing.items()
                                                                if k != "sampler"})
    assert card_task(older) == "generate" and diffusion_sampler(DDPM, older, folder) is ClassLabelSampler
    broken = dataclasses.replace(ddpm, preprocessing={k: v for k, v in ddpm.preprocessing.items() if k != "null_class"})
    with pytest.raises(ModelError, match="cannot run it"):
        diffusion_sampler(DDPM, broken, folder)


REQUEST = {"model": DDPM, "phase": "t2,t4", "seed": 5, "steps": 2, "guidance": 3.0, "scheduler": "dpm"}


def served_images(client, app) -> list[dict]:
    """Images 6..9 of the run REQUEST (the end of the first chunk of 8 and the start of the second)."""
    from microforge.generate import seed_of

    body = ok(client.post("/generate", json={**REQUEST, "n": 4, "first_index": 6}))
    assert [i["index"] for i in body["images"]] == [6, 7, 8, 9] and body["first_index"] == 6
    assert [i["phase"] for i in body["images"]] == ["t2", "t4", "t2", "t4"] and body["phases"] == ["t2", "t4"]
    assert body["seeds"] == [i["seed"] for i in body["images"]] == [seed_of(5, i) for i in range(6, 10)]
    assert (body["seed"], body["steps"], body["guidance"], body["scheduler"]) == (5, 2, 3.0, "dpm")
    assert body["model_info"]["sampler"] == "diffusion" and body["model_info"]["component"] == "unet_ema"
    side = app["side"]
    for image in body["images"]:
        assert (image["width"], image["height"]) == (side, side)
        decoded = pixels(image["image_b64"])
        assert decoded.shape == (side, side) and decoded.dtype == np.uint8
    return body["images"]


def test_images_are_the_bytes_of_the_offline_chunks(client, app, tmp_path):
    """What ``generate diffusion`` samples and encodes for chunks 0 and 1 (its actor, in-process)."""
    from microforge.datasets.images import encode_image
    from microforge.generate.diffusion import DiffusionChunkGenerator, DiffusionRequest

    images = served_images(client, app)
    options = {k: v for k, v in REQUEST.items() if k != "model"}
    request = DiffusionRequest(app["models"] / "ddpm" / "tiny", 16, **options)
    actor = DiffusionChunkGenerator(**request.job_args(tmp_path))
    offline = [encode_image(image, ".png") for image in [*actor.images(range(8)), *actor.images(range(8, 16))]]
    assert [png(i["image_b64"]) for i in images] == offline[6:10]


def test_a_dreambooth_pipeline_is_served_as_generate_diffusion_samples_it(client, app, tmp_path):
    """The fine-tuned pipeline answers for its own phase only, with the bytes of the offline chunk."""
    from microforge.datasets.images import encode_image
    from microforge.generate.diffusion import DiffusionChunkGenerator, DiffusionRequest

    options = ok(client.get("/generate_options", params={"model": DREAMBOOTH}))
    assert options["sampler"] == "diffusion" and options["phases"] == ["t2"]
    request = {"phase": "t2", "seed": 5, "steps": 2, "guidance": 3.0, "scheduler": "dpm"}
    body = ok(client.post("/generate", json={"model": DREAMBOOTH, **request, "n": 3}))
    assert [i["index"] for i in body["images"]] == [0, 1, 2] and body["model_info"]["component"] == "unet"
    actor = DiffusionChunkGenerator(**DiffusionRequest(app["models"] / "dreambooth" / "tiny", 8, **request)
                                    .job_args(tmp_path))
    offline = [encode_image(image, ".png") for image in actor.images(range(8))]
    assert [png(i["image_b64"]) for i in body["images"]] == offline[:3]
    assert len(set(offline[:3])) == 3  # a seed per image
    refused = fails(client.post("/generate", json={"model": DREAMBOOTH, **request, "phase": "t4", "n": 1}), 422)
    assert "does not generate phase t4; it generates t2" in refused


@pytest.mark.slow
def test_images_are_the_files_generate_diffusion_writes(client, app, tmp_path):
    from microforge.datasets.manifest import read_manifest
    from microforge.generate.diffusion import generate_diffusion

    images = served_images(client, app)
    out = tmp_path / "offline"
    generate_diffusion(app["models"] / "ddpm" / "tiny", 10, out, workers=1,
                       **{k: v for k, v in REQUEST.items() if k != "model"})
    rows = {r["index"]: r for r in read_manifest(out).to_pylist()}
    for image in images:
        row = rows[image["index"]]
        assert (row["phase"], row["seed"]) == (image["phase"], image["seed"])
        assert png(image["image_b64"]) == (out / row["image"]).read_bytes()


def test_same_seed_same_bytes_and_the_phase_decides_the_image(client, app):
    request = {"model": DDPM, "phase": "t2", "n": 2, "seed": 11, "steps": 3}
    first = ok(client.post("/generate", json=request))
    assert len(first["images"]) == 2 and first["scheduler"] == "dpm" and first["guidance"] == 7.5
    assert ok(client.post("/generate", json=request))["images"] == first["images"]
    other_phase = ok(client.post("/generate", json={**request, "phase": "tHB"}))
    other_seed = ok(client.post("/generate", json={**request, "seed": 12}))
    for a, b, c in zip(first["images"], other_phase["images"], other_seed["images"]):
        assert a["seed"] == b["seed"] != c["seed"]
        assert len({png(a["image_b64"]), png(b["image_b64"]), png(c["image_b64"])}) == 3
    # No seed: a random run seed, reported; asking for it again repeats the images.
    drawn = ok(client.post("/generate", json={"model": DDPM, "phase": "t2", "n": 1, "steps": 3}))
    again = ok(client.post("/generate", json={"model": DDPM, "phase": "t2", "n": 1, "steps": 3, "seed": drawn["seed"]}))
    assert again["images"] == drawn["images"]


def test_bad_diffusion_requests_are_refused(client):
    base = {"model": DDPM, "phase": "t2", "n": 1, "steps": 2}
    detail = fails(client.post("/generate", json={**base, "phase": "t22"}), 422)
    assert "unknown phase 't22'" in detail and "did you mean 't2'" in detail and "tHB" in detail
    assert "at most 16" in fails(client.post("/generate", json={**base, "n": MAX_IMAGES + 1}), 422)
    assert "max_generate_bytes" in fails(client.post("/generate", json={**base, "n": 13}), 413)
    assert "max_generate_steps" in fails(client.post("/generate", json={**base, "steps": MAX_STEPS + 1}), 422)
    assert "steps" in fails(client.post("/generate", json={**base, "steps": 1001}), 422)
    assert "steps" in fails(client.post("/generate", json={**base, "steps": 0}), 422)
    assert "scheduler" in fails(client.post("/generate", json={**base, "scheduler": "euler"}), 422)
    assert "guidance" in fails(client.post("/generate", json={**base, "guidance": -1}), 422)
    assert "GAN options" in fails(client.post("/generate", json={**base, "truncation": 0.5}), 422)
    assert "GAN options" in fails(client.post("/generate", json={**base, "bits": 16}), 422)
    fails(client.post("/generate", json={"model": DDPM, "phase": "t2", "seeds": [1]}), 422)
    assert "go with a phase" in fails(client.post("/generate", json={"model": DDPM, "n": 1, "steps": 2}), 422)
    assert "is a diffusion model" in fails(client.post("/generate", json={"model": DDPM, "n": 1}), 422)
    assert "not a diffusion model" in fails(client.post("/generate", json={**base, "model": GAN}), 422)


def test_gan_generate_is_unchanged(client, app):
    from microforge.trainers import load_artifact
    from microforge.trainers.predict import generate_images

    body = ok(client.post("/generate", json={"model_id": GAN, "seeds": [3, 7, 3]}))
    assert [i["seed"] for i in body["images"]] == [3, 7, 3] and "phase" not in body["images"][0]
    assert (body["truncation"], body["bits"], body["model_info"]["latent_shape"]) == (None, 8, [8])
    assert body["images"][0] == body["images"][2] != body["images"][1]
    loaded = load_artifact(app["models"] / "gan" / "tiny")
    for image, want in zip(body["images"], generate_images(loaded["generator"], loaded.transform, [3, 7, 3])):
        assert np.abs(pixels(image["image_b64"]).astype(int) - want).max() <= 1
    deep = ok(client.post("/generate", json={"model": GAN, "n": 2, "seed": 4, "bits": 16}))
    assert [i["seed"] for i in deep["images"]] == [4, 5] and pixels(deep["images"][0]["image_b64"]).dtype == np.uint16


def test_concurrent_requests_with_the_same_steps_share_a_batched_call(app):
    requests = [{"model": DDPM, "phase": "t3", "n": 8, "seed": 1, "steps": 2},
                {"model": DDPM, "phase": "t5", "n": 8, "seed": 2, "steps": 2},
                {"model": DDPM, "phase": "t5", "n": 2, "seed": 2, "steps": 3}]

    async def burst() -> list[dict]:
        async with httpx.AsyncClient(base_url=app["url"], headers=app["headers"], timeout=120) as c:
            return [ok(r) for r in await asyncio.gather(*(c.post("/generate", json=r) for r in requests))]

    together = asyncio.run(burst())
    # Concurrent requests' chunks shared a batched call (two chunks: 16 images) ...
    assert max(max(b["batch_sizes"]) for b in together) == 16, [b["batch_sizes"] for b in together]
    with httpx.Client(base_url=app["url"], headers=app["headers"], timeout=120) as client:
        alone = [ok(client.post("/generate", json=r)) for r in requests]
    # ... and yet every image is what the request alone gives, whatever shared its call.
    assert [b["images"] for b in together] == [b["images"] for b in alone]
    assert together[1]["images"][:2] != together[2]["images"]  # other steps, other images


def test_the_served_gui_offers_the_phase_for_diffusion_models(client):
    page = client.get("/").text
    assert 'id="gen-phase"' in page and 'id="gen-diffusion"' in page and 'id="gen-latent"' in page
    script = client.get("/static/generate.js").text
    assert "generate_options" in script and 'sampler === "diffusion"' in script and "#gen-phase" in script


# --- the GUI in a headless Chromium (pytest -m browser) ---------------------------------------------

CHROMIUM = os.environ.get("MICROFORGE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM, reason="no Chromium binary")
def test_generate_tab_shows_the_phase_select_for_diffusion_models_only(app):
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{app['url']}/")
            page.fill("#token", app["token"])
            page.click("#token-save")
            page.click("#tabs button[data-tab=generate]")
            page.wait_for_function("document.querySelector('#gen-phase').options.length === 17")
            assert page.input_value("#gen-model") == DDPM and page.is_visible("#gen-phase")
            assert not page.is_visible("#gen-truncation")
            page.select_option("#gen-phase", "t4")
            page.fill("#gen-n", "2")
            page.fill("#gen-seed", "3")
            page.fill("#gen-steps", "2")
            page.click("#gen-run")
            page.wait_for_function("document.querySelector('#gen-msg').classList.contains('ok')")
            assert "phase t4" in page.inner_text("#gen-msg")
            captions = page.eval_on_selector_all("#gen-grid figcaption span", "nodes => nodes.map(n => n.textContent)")
            assert captions == ["t4 · #0", "t4 · #1"]
            page.select_option("#gen-model", GAN)
            page.wait_for_function("document.querySelector('#gen-diffusion').classList.contains('hidden')")
            assert not page.is_visible("#gen-phase") and page.is_visible("#gen-truncation")
            assert not problems, problems
        finally:
            browser.close()
