"""Hardening of the ingress, tested on its FastAPI application without Ray (issue 11): Host and
Origin guards, nosniff, fonts, long names, folder uploads, pixel caps, deadlines, strict
booleans, the published error schema and the batch-size default."""

from __future__ import annotations

import asyncio
import os

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from microforge.platform.errors import ConfigError

TOKEN = "hardening-token"
LONG = "a" * 300


def png(width: int = 32, height: int = 24) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((height, width), 128, np.uint8))
    assert ok
    return buf.tobytes()


def make_client(tmp_path, token: str | None = None, **limits) -> TestClient:
    from microforge.serve.api import create_api
    from microforge.serve.backend import Backend
    from microforge.serve.config import ServeConfig

    config = ServeConfig.load({"data_root": str(tmp_path / "data"), "models_dir": str(tmp_path / "models"),
                               "api_token": token, "allowed_hosts": ["microforge.lab"],
                               "limits": {"max_folder_files": 1500, "max_infer_pixels": 64 * 64, **limits}})
    backend = Backend(config.resolved(), handles={}, state=None)
    return TestClient(create_api(backend), base_url="http://127.0.0.1:8000", raise_server_exceptions=False)


@pytest.fixture()
def client(tmp_path):
    with make_client(tmp_path) as c:
        yield c


def fails(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False and isinstance(body["detail"], str) and body["detail"], body
    return body["detail"]


# --- 8: DNS rebinding and cross-site requests; 6: nosniff ----------------------------------------

def test_foreign_host_is_refused_and_every_answer_says_nosniff(client):
    ok = client.get("/synth_config_schema")
    assert ok.status_code == 200 and ok.headers["x-content-type-options"] == "nosniff"
    assert client.get("/synth_config_schema", headers={"Host": "microforge.lab:8000"}).status_code == 200
    assert client.get("/synth_config_schema", headers={"Host": "localhost:8000"}).status_code == 200
    refused = client.get("/synth_config_schema", headers={"Host": "attacker.example:8000"})
    assert "host" in fails(refused, 403) and refused.headers["x-content-type-options"] == "nosniff"
    missing = client.get("/get_image", params={"name": "nothing.png"})
    fails(missing, 404)
    assert missing.headers["x-content-type-options"] == "nosniff"


def test_cross_origin_changes_refused_without_a_token(client):
    body = {"name": "p1", "pipeline": {}}
    fails(client.post("/preproc_save_preset", json=body, headers={"Origin": "http://evil.example"}), 403)
    fails(client.post("/preproc_save_preset", json=body, headers={"Sec-Fetch-Site": "cross-site"}), 403)
    assert client.post("/preproc_save_preset", json=body,
                       headers={"Origin": "http://127.0.0.1:8000"}).status_code == 200  # the GUI itself
    assert client.post("/preproc_save_preset", json=body).status_code == 200  # curl, scripts
    assert client.get("/preproc_presets", headers={"Origin": "http://evil.example"}).status_code == 200


def test_with_a_token_the_token_guards_changes(tmp_path):
    with make_client(tmp_path, token=TOKEN) as c:
        body = {"name": "p1", "pipeline": {}}
        fails(c.post("/preproc_save_preset", json=body, headers={"Origin": "http://evil.example"}), 401)
        r = c.post("/preproc_save_preset", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text


# --- 4: fonts; 5: long names and huge font sizes -----------------------------------------------

def test_scalebar_font_only_from_the_fonts_folder(tmp_path):
    from microforge.serve.routes.synthesis import crystal_config, render_config

    with make_client(tmp_path) as c:
        backend = c.app.state.backend
        existing = str(tmp_path / "secret.ttf")
        open(existing, "wb").close()
        answers = {fails(c.post("/synth_save_preset", json={"name": "f", "config": {"scalebar_ttf": path}}), 422)
                   .replace(path, "") for path in (existing, "/etc/passwd", "/no/such/font.ttf", "../x.ttf")}
        assert len(answers) == 1  # the same answer whether or not the file exists: no oracle
        assert not (backend.data_root / "presets" / "synth" / "f.json").exists()
        fonts = backend.data_root / "fonts"
        fonts.mkdir(parents=True)
        (fonts / "Lab.ttf").write_bytes(b"font")
        config = crystal_config(backend, {"scalebar_ttf": "Lab.ttf"})
        assert config.scalebar_ttf == "Lab.ttf"  # saved by name, never as a path
        assert render_config(backend, config)["scalebar_ttf"] == str(fonts / "Lab.ttf")
        r = c.post("/synth_save_preset", json={"name": "f", "config": {"scalebar_ttf": "Lab.ttf"}})
        assert r.status_code == 200, r.text


def test_huge_font_sizes_and_long_names_answer_4xx(client):
    detail = fails(client.post("/synth_preview", json={"config": {"scalebar_font_px": [16384, 16384]}}), 422)
    assert "scalebar_font_px" in detail
    fails(client.get("/get_image", params={"name": f"{LONG}.png"}), 400)
    fails(client.get("/outputs_inspect_dataset", params={"dataset_path": LONG}), 400)
    fails(client.post("/preprocess", json={"image_name": f"uploads/{LONG}.png", "operation": "gray"}), 400)
    fails(client.post("/synth_batch", json={"n_images": 1, "out_dir": LONG}), 400)
    fails(client.post("/outputs_upload_folder", files=[("files", (f"{LONG}/a.png", png(), "image/png"))]), 400)


def test_library_errors_of_bad_input_map_to_4xx():
    import errno

    from PIL import Image

    from microforge.serve.api import known_error

    assert known_error(Image.DecompressionBombError("big"))[0] == 413
    assert known_error(OSError(errno.ENAMETOOLONG, "File name too long"))[0] == 400
    assert known_error(ValueError("x")) is None


# --- 6: folder uploads -------------------------------------------------------------------------------

def test_folder_upload_has_one_limit_and_checks_content(client):
    image = png()
    files = [("files", (f"frames/f{i:04d}.png", image, "image/png")) for i in range(1001)]
    r = client.post("/outputs_upload_folder", files=files, data={"folder": "many"})
    assert r.status_code == 200, r.text  # Starlette alone stops at 1000 files
    assert r.json()["saved"] == 1001
    too_many = [("files", (f"f{i}.png", b"x", "image/png")) for i in range(1501)]
    assert "1500" in fails(client.post("/outputs_upload_folder", files=too_many), 413)
    mixed = [("files", ("a.png", image, "image/png")), ("files", ("b.png", b"<html>not an image", "image/png")),
             ("files", ("notes.txt", b"text", "text/plain"))]
    body = client.post("/outputs_upload_folder", files=mixed, data={"folder": "mixed"}).json()
    assert body["saved"] == 1 and body["skipped"] == ["notes.txt"]
    assert [(x["name"], x["status"]) for x in body["rejected"]] == [("b.png", 415)]
    root = client.app.state.backend.data_root
    assert os.listdir(root / "timelapse" / "mixed") == ["a.png"]
    fails(client.post("/outputs_upload_folder", files=[("files", ("b.png", b"junk", "image/png"))]), 415)


# --- 3: bounded work ------------------------------------------------------------------------------

def test_images_past_the_model_pixel_cap_are_refused(client):
    detail = fails(client.post("/predict", files={"file": ("big.png", png(100, 100), "image/png")}), 413)
    assert "max_infer_pixels" in detail
    fails(client.post("/stream_frame", files={"file": ("big.png", png(100, 100), "image/png")}), 413)


def test_backend_calls_have_a_deadline_and_are_cancelled(tmp_path):
    from microforge.serve.backend import Backend, DeadlinePassed
    from microforge.serve.config import ServeConfig

    cancelled = []

    class Never:
        def __await__(self):
            return asyncio.sleep(3600).__await__()

        def cancel(self):
            cancelled.append(True)

    class Method:
        def remote(self, *args):
            return Never()

    config = ServeConfig.load({"data_root": str(tmp_path / "d"), "models_dir": str(tmp_path / "m"),
                               "limits": {"request_timeout_s": 0.2}}).resolved()
    backend = Backend(config, handles={}, state=None)
    with pytest.raises(DeadlinePassed) as info:
        asyncio.run(backend.call(Method()))
    assert info.value.status == 504 and cancelled == [True]


# --- 10: batch size; 11: the API contract --------------------------------------------------------

def test_large_batches_need_a_token(tmp_path, monkeypatch):
    from microforge.serve.config import DEFAULT_MAX_BATCH_IMAGES, TOKEN_ENV, ServeConfig

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    dirs = {"data_root": str(tmp_path / "d"), "models_dir": str(tmp_path / "m")}
    assert ServeConfig.load(dirs).limits.max_batch_images == DEFAULT_MAX_BATCH_IMAGES == 10_000
    big = {**dirs, "limits": {"max_batch_images": 50_000}}
    with pytest.raises(ConfigError, match="token"):
        ServeConfig.load(big).resolved()
    assert ServeConfig.load({**big, "api_token": "t"}).resolved().limits.max_batch_images == 50_000


def test_openapi_publishes_one_error_schema_and_strict_booleans(client):
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    error_ref = "#/components/schemas/ErrorBody"
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status in ("400", "404", "409", "413", "415", "422", "500"):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": error_ref}, (method, path, status)
    detail = fails(client.post("/synth_preview", json={"return_obbs": 0}), 422)
    assert "return_obbs" in detail
    fails(client.post("/preproc_preview", json={"image_name": "x.png", "pipeline": {"invert": 1}}), 422)


# --- 2: WebSocket clients: token, cap, idle timeout, origin ------------------------------------------

WS = "ws://127.0.0.1:8000"  # the test client's own default host is refused by the Host check


class _Remote:
    def __init__(self, fn) -> None:
        self.fn = fn

    def remote(self, *args):
        return self.fn(*args)


class _LiveState:
    async def _snapshot(self, history):
        return {"version": 0, "last": None, "history": []}

    async def _wait(self, after, timeout_s):
        await asyncio.sleep(timeout_s)
        return after, None

    def __init__(self) -> None:
        self.live_snapshot, self.wait_live = _Remote(self._snapshot), _Remote(self._wait)


def test_live_websocket_needs_the_token_is_capped_and_closes_idle_clients(tmp_path):
    from starlette.websockets import WebSocketDisconnect

    with make_client(tmp_path, token=TOKEN, max_live_clients=1, live_idle_timeout_s=0.5) as c:
        c.app.state.backend.state = _LiveState()
        for url, headers in (("/ws/live", {}), ("/ws/live?token=wrong", {}),
                             (f"/ws/live?token={TOKEN}", {"Origin": "http://evil.example"})):
            with pytest.raises(WebSocketDisconnect) as refused:
                with c.websocket_connect(WS + url, headers=headers) as ws:
                    ws.receive_text()
            assert refused.value.code == 1008 and "host" not in refused.value.reason, (url, refused.value.reason)
        with c.websocket_connect(WS + "/ws/live", headers={"Authorization": f"Bearer {TOKEN}"}) as first:
            with pytest.raises(WebSocketDisconnect) as capped:
                with c.websocket_connect(f"{WS}/ws/live?token={TOKEN}") as second:
                    second.receive_text()
            assert capped.value.code == 1013  # beyond the cap: try again later
            first.send_text("ping")  # a keep-alive; then silence until the idle timeout
            with pytest.raises(WebSocketDisconnect) as idle:
                first.receive_text()
            assert idle.value.code == 1000
