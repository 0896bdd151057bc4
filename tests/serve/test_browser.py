"""The web GUI in a real headless Chromium (Debian's ``chromium`` driven by Playwright).

Run with ``pytest -m browser``; skipped when Playwright or a Chromium binary is missing
(``MICROFORGE_CHROMIUM`` names another binary).
"""

from __future__ import annotations

import base64
import os
import shutil
import zipfile

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")

CHROMIUM = os.environ.get("MICROFORGE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("no Chromium binary (apt-get install chromium, or set MICROFORGE_CHROMIUM)", allow_module_level=True)

TIMEOUT_MS = 60_000

# Pixels of the viewer canvas: how many are drawn, and how many are the box overlay's green
# (the images are gray, so a green pixel can only be a box outline).
CANVAS_PIXELS = """(selector) => {
  const canvas = document.querySelector(selector);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let drawn = 0, green = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 0) drawn++;
    if (data[i + 1] > 180 && data[i] < 140 && data[i + 2] < 170) green++;
  }
  return {drawn, green, total: data.length / 4};
}"""


def rods_png(path) -> None:
    """A gray image with three dark, well separated rods (the built-in detector finds 3)."""
    image = np.full((192, 256), 180, np.uint8)
    for cx, cy, length, width, angle in [(60, 50, 70, 10, 17.0), (180, 60, 60, 8, -57.0), (120, 140, 90, 12, 80.0)]:
        box = cv2.boxPoints(((cx, cy), (length, width), angle))
        cv2.fillPoly(image, [np.round(box).astype(np.int32)], 60)
    cv2.imwrite(str(path), image)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, serve_app):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(f"{serve_app.url}/")
    page.fill("#token", serve_app.token)
    page.click("#token-save")
    yield page
    context.close()
    assert not problems, "\n".join(problems)


def test_page_loads_with_local_assets_only(page, serve_app):
    assert page.title() == "microforge"
    page.wait_for_function("document.querySelector('#health-dot').className === 'ok'")
    hosts = page.evaluate("() => performance.getEntriesByType('resource').map(e => new URL(e.name).host)")
    assert set(hosts) <= {f"127.0.0.1:{serve_app.port}"}, hosts  # nothing from a CDN
    for tab in ("inference", "generate", "colorize", "preprocess", "timelapse", "live", "system"):
        page.click(f"#tabs button[data-tab={tab}]")
        assert page.is_visible(f"#tab-{tab}")
    page.wait_for_selector("#sys-deployments td")
    assert "SegmentationModel" in page.inner_text("#sys-deployments")
    page.wait_for_function("document.querySelector('#live-state').textContent === 'connected'")


def test_synthesis_preview_shows_image_with_boxes(page):
    page.wait_for_selector("#synth-form .field[data-name=width] input")
    # The test server caps previews at 512 x 512 pixels.
    page.fill(".field[data-name=width] input", "320")
    page.fill(".field[data-name=height] input", "240")
    page.click(".preview-row >> nth=0 >> button.render")
    page.wait_for_selector(".preview-row[data-rendered]")
    info = page.inner_text(".preview-row[data-rendered] .controls")
    assert "320×240 px" in info, info
    boxes = int(info.split("px ·")[1].split("boxes")[0])
    assert boxes > 0, info
    pixels = page.evaluate(CANVAS_PIXELS, ".preview-row[data-rendered] canvas")
    assert pixels["drawn"] > 0.3 * pixels["total"], pixels  # the image is on the canvas
    assert pixels["green"] > 50, pixels  # and the boxes over it
    assert page.input_value(".preview-row[data-rendered] input[type=number]") != ""  # the seed used


def test_inference_upload_shows_overlay_and_stats(page, tmp_path):
    image = tmp_path / "rods.png"
    rods_png(image)
    page.click("#tabs button[data-tab=inference]")
    page.wait_for_function("document.querySelector('#model-select').options.length > 0")
    page.set_input_files("#infer-file", str(image))
    page.wait_for_function("document.querySelector('#infer-msg').classList.contains('ok')")
    assert page.inner_text("#infer-msg").startswith("3 objects"), page.inner_text("#infer-msg")
    assert page.inner_text("#infer-stats .stat .v") == "3"
    pixels = page.evaluate(CANVAS_PIXELS, "#infer-viewer canvas")
    assert pixels["drawn"] > 0.3 * pixels["total"] and pixels["green"] > 50, pixels
    overlay = page.get_attribute("#infer-dl-overlay", "href")
    assert "/get_image?name=overlays" in overlay
    assert page.request.get(overlay).status == 200
    # The histograms are drawn (a bar is the first series colour).
    hist = page.evaluate("""() => {
      const c = document.querySelector('#hist-length');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let bars = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] === 47 && d[i + 1] === 111 && d[i + 2] === 222) bars++;
      return bars;
    }""")
    assert hist > 0


def test_mask_and_heatmap_layers_recolour_a_segmentation_output(page):
    """The layers the Inference tab lays over a U-Net's input: the probability map as a heat
    colormap (alpha grows with the value) and the mask as a translucent colour (clear background)."""
    pixels = page.evaluate("""async () => {
      const src = document.createElement('canvas');
      src.width = 2; src.height = 1;
      const sctx = src.getContext('2d');
      const gray = sctx.createImageData(2, 1);
      gray.data.set([0, 0, 0, 255, 255, 255, 255, 255]);  // black, white
      sctx.putImageData(gray, 0, 0);
      const image = new Image();
      await new Promise(resolve => { image.onload = resolve; image.src = src.toDataURL('image/png'); });
      const read = c => Array.from(c.getContext('2d').getImageData(0, 0, 2, 1).data);
      return {heat: read(heatmapCanvas(image)), mask: read(maskCanvas(image, [10, 20, 30]))};
    }""")
    heat, mask = pixels["heat"], pixels["mask"]
    assert heat[3] == 40 and heat[7] == 230  # alpha follows the value
    assert all(v >= 253 for v in heat[4:7]), heat  # 1.0 is white
    assert mask[3] == 0 and mask[7] == 110  # background clear, foreground translucent
    # (a canvas stores premultiplied alpha: translucent colours read back within a unit or two)
    assert all(abs(got - want) <= 2 for got, want in zip(mask[4:7], [10, 20, 30])), mask


def _data_url_bytes(url: str) -> bytes:
    header, data = url.split(",", 1)
    assert header == "data:image/png;base64"
    return base64.b64decode(data)


def test_generate_tab_shows_seeded_images_and_downloads_them(page, serve_app):
    import httpx

    page.click("#tabs button[data-tab=generate]")
    page.wait_for_function("document.querySelector('#gen-model').options.length > 0")
    assert page.input_value("#gen-model") == "gan/tiny"
    page.fill("#gen-n", "8")
    page.fill("#gen-seed", "40")
    page.select_option("#gen-bits", "16")
    page.fill("#gen-truncation", "9")  # out of range: refused with a message, before any request
    page.click("#gen-run")
    page.wait_for_function("document.querySelector('#gen-msg').classList.contains('error')")
    assert "truncation" in page.inner_text("#gen-msg")

    page.fill("#gen-truncation", "0.7")
    page.click("#gen-run")
    page.wait_for_function("document.querySelector('#gen-msg').classList.contains('ok')")
    assert "seeds 40–47" in page.inner_text("#gen-msg") and "truncation 0.7" in page.inner_text("#gen-msg")
    captions = page.eval_on_selector_all("#gen-grid figcaption span", "nodes => nodes.map(n => n.textContent)")
    assert captions == [f"seed {s}" for s in range(40, 48)]
    page.wait_for_function("Array.from(document.querySelectorAll('#gen-grid img'))"
                           ".every(i => i.complete && i.naturalWidth === 8)")  # the browser decodes PNG-16
    links = page.eval_on_selector_all("#gen-grid figcaption a", "nodes => nodes.map(n => [n.download, n.href])")
    assert [name for name, _ in links] == [f"gan-tiny-seed{s}-16bit.png" for s in range(40, 48)]
    api = httpx.post(f"{serve_app.url}/generate", headers=serve_app.headers, timeout=60,
                     json={"model": "gan/tiny", "n": 8, "seed": 40, "truncation": 0.7, "bits": 16}).json()
    pngs = [_data_url_bytes(href) for _, href in links]
    assert pngs == [_data_url_bytes(i["image_b64"]) for i in api["images"]]  # same request, same bytes
    first = cv2.imdecode(np.frombuffer(pngs[0], np.uint8), cv2.IMREAD_UNCHANGED)
    assert first.dtype == np.uint16 and first.max() > 255

    with page.expect_download() as download:
        page.click("#gen-zip")
    with zipfile.ZipFile(download.value.path()) as archive:
        assert archive.testzip() is None  # every CRC checks
        assert archive.namelist() == [name for name, _ in links]
        assert [archive.read(name) for name, _ in links] == pngs


def test_colorize_tab_shows_before_and_after_and_downloads_the_png(page, serve_app, tmp_path):
    import httpx

    # a colour upload of odd size: the tab shows its gray (before) and the colorization (after)
    bgr = np.random.default_rng(7).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    path = tmp_path / "cells.png"
    cv2.imwrite(str(path), bgr)
    page.click("#tabs button[data-tab=colorize]")
    page.wait_for_function("document.querySelector('#col-model').options.length > 0")
    assert page.input_value("#col-model") == "cyclegan/tiny"
    assert page.is_hidden("#col-compare")
    page.set_input_files("#col-file", str(path))
    page.wait_for_function("document.querySelector('#col-msg').classList.contains('ok')")
    assert page.inner_text("#col-msg").startswith("45×30 px"), page.inner_text("#col-msg")
    assert "input inverted" in page.inner_text("#col-model-info")
    page.wait_for_function("['#col-before', '#col-after'].every(s => { const i = document.querySelector(s);"
                           " return i.complete && i.naturalWidth === 45 && i.naturalHeight === 30; })")
    before = cv2.imdecode(np.frombuffer(_data_url_bytes(page.get_attribute("#col-before", "src")), np.uint8),
                          cv2.IMREAD_UNCHANGED)
    assert np.array_equal(before, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    after = _data_url_bytes(page.get_attribute("#col-after", "src"))
    assert page.get_attribute("#col-download", "download") == "cells-colorized.png"
    assert _data_url_bytes(page.get_attribute("#col-download", "href")) == after
    served = httpx.post(f"{serve_app.url}/colorize", headers=serve_app.headers, timeout=60,
                        files={"file": ("cells.png", path.read_bytes(), "image/png")})
    assert served.status_code == 200
    diff = np.abs(cv2.imdecode(np.frombuffer(after, np.uint8), cv2.IMREAD_UNCHANGED).astype(int)
                  - cv2.imdecode(np.frombuffer(served.content, np.uint8), cv2.IMREAD_UNCHANGED))
    assert diff.max() <= 1  # what POST /colorize answers (a batch may round one value the other way)
    # the wipe: the colorized image covers the left part, up to the slider
    page.evaluate("() => { const s = document.querySelector('#col-split'); s.value = '20';"
                  " s.dispatchEvent(new Event('input')); }")
    clip = page.evaluate("document.querySelector('#col-after').style.clipPath")
    assert clip.startswith("inset(") and "80%" in clip, clip
    assert page.evaluate("document.querySelector('#col-divider').style.left") == "20%"
