"""Run an artifact's components on images, the same way in eval, generation and Serve.

Each function takes the artifact's :class:`~microforge.platform.transforms.Transform`, so a 16-bit
image becomes the same model input wherever it is predicted, and a generated image the same bytes
wherever it is generated.

* ``segment``: :func:`segment_probabilities`: any dtype the transform takes, resized to the
  scale the model was trained at (:func:`input_scale`: recorded in the artifact, or given),
  percentile-stretched there when the training images were (recorded as
  ``scale["percentile_clip"]``: a 4x downsized image has a quarter of the noise, so its
  stretch at the upload's size leaves the objects a fraction of the range the model knows),
  padded to the network's size multiple, one forward pass per image shape (overlapping blended
  tiles for large images), probabilities cropped and resized back to the input's size.
* ``generate``: :func:`generate_images`: the generator component exposes ``latent_shape``; the
  latent of image ``i`` is drawn from ``torch.Generator().manual_seed(seeds[i])`` on the CPU, so an
  image is a pure function of (artifact, seed, truncation) on any device and in any batch.
* ``colorize``: :func:`colorize_images`: gray or BGR uploads of 8 or 16 bits become the uint8 gray
  a CycleGAN's domain A is read as (:func:`gray_uint8`, as the unaligned reader does), inverted when
  the artifact was trained on inverted A, reflect-padded to the size multiple, translated by
  ``generator_ab`` one batch per padded shape, and cropped back: uint8 RGB ``(H, W, 3)``.

Truncation (the "truncation trick"): with ``truncation=T`` every latent value with ``|z| > T`` is
redrawn, from the same seeded generator, until none is left: the latent is N(0, 1) truncated to
[-T, T], values already inside are those of the untruncated latent, and it is still a pure
function of the seed. ``None`` or ``0`` means no truncation; otherwise ``T`` lies in
[:data:`MIN_TRUNCATION`, :data:`MAX_TRUNCATION`] (below 0.05 the redraws grow without bound;
past 4 fewer than 1 value in 15,000 is redrawn, so a larger T is almost surely a mistake).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from microforge.platform.errors import ConfigError
from microforge.platform.transforms import Transform, percentile_stretch

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_TRUNCATION", "MIN_TRUNCATION", "check_truncation", "colorize_images", "generate_images",
           "gray_uint8", "input_scale", "latents", "resize_image", "segment_probabilities"]

MIN_TRUNCATION = 0.05
MAX_TRUNCATION = 4.0
MIN_SCALE, MAX_SCALE = 0.01, 16.0  # input resize factors segmentation accepts
TILE_BATCH = 8  # tiles per forward pass


def _device(module: "torch.nn.Module") -> "torch.device":
    return next(module.parameters()).device


def input_scale(shape: tuple[int, ...], preprocessing: Mapping[str, Any] | None, scale: float | None = None) -> float:
    """The factor an image of ``shape`` is resized by before the network.

    An explicit ``scale`` wins. Otherwise an artifact that records its training scale
    (``preprocessing["scale"]["image_size"]``) sees inputs at its training field of view: the
    longer side resized to the training image size. Artifacts without one run at the input's
    resolution (factor 1), as before scales were recorded.

    Raises:
        ConfigError: a scale that is not a positive finite number.
    """
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) \
                or not math.isfinite(scale) or not MIN_SCALE <= scale <= MAX_SCALE:
            raise ConfigError(f"scale must be a number in [{MIN_SCALE:g}, {MAX_SCALE:g}], got {scale!r}")
        return float(scale)
    recorded = (preprocessing or {}).get("scale") or {}
    if recorded.get("image_size"):
        return float(recorded["image_size"]) / max(shape)
    return 1.0


def resize_image(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``array`` resized to ``(H, W)`` ``shape``: area-averaged when it shrinks (so noise averages
    as a coarser sensor's would), bilinear when it grows."""
    import cv2

    if array.shape == shape:
        return array
    shrink = shape[0] * shape[1] < array.shape[0] * array.shape[1]
    return cv2.resize(array, (shape[1], shape[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _tile_starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _ramp(tile: int, overlap: int) -> np.ndarray:
    """Blend weights along one tile side: rising over ``overlap`` px from each edge, never 0."""
    edge = np.minimum(np.arange(tile) + 1, np.arange(tile)[::-1] + 1).astype(np.float32)
    return np.minimum(edge / max(overlap, 1), 1.0)


def _forward(model: "torch.nn.Module", batch: np.ndarray, size_multiple: int) -> np.ndarray:
    """Probabilities of ``(B, H, W)`` float inputs, each edge-padded to ``size_multiple``."""
    import torch

    h, w = batch.shape[1:]
    padded = np.pad(batch, ((0, 0), (0, -h % size_multiple), (0, -w % size_multiple)), mode="edge")
    x = torch.from_numpy(np.ascontiguousarray(padded, np.float32)).unsqueeze(1).to(_device(model))
    with torch.inference_mode():
        return torch.sigmoid(model(x).float())[:, 0, :h, :w].cpu().numpy()


def _tiled(model: "torch.nn.Module", image: np.ndarray, tile: int, size_multiple: int) -> np.ndarray:
    """Probabilities of one large image from overlapping ``tile`` x ``tile`` windows (a quarter
    overlap), each weighted by a ramp that fades at its edges, where a network sees the least."""
    h, w = image.shape
    th, tw = min(tile, h), min(tile, w)
    overlap = tile // 4
    ys, xs = _tile_starts(h, th, th - overlap), _tile_starts(w, tw, tw - overlap)
    weight = _ramp(th, overlap)[:, None] * _ramp(tw, overlap)[None, :]
    total = np.zeros((h, w), np.float32)
    norm = np.zeros((h, w), np.float32)
    corners = [(y, x) for y in ys for x in xs]
    for k in range(0, len(corners), TILE_BATCH):
        chunk = corners[k:k + TILE_BATCH]
        probs = _forward(model, np.stack([image[y:y + th, x:x + tw] for y, x in chunk]), size_multiple)
        for (y, x), prob in zip(chunk, probs):
            total[y:y + th, x:x + tw] += prob * weight
            norm[y:y + th, x:x + tw] += weight
    return total / norm


def segment_probabilities(model: "torch.nn.Module", transform: Transform, images: Sequence[np.ndarray], *,
                          size_multiple: int = 1, preprocessing: Mapping[str, Any] | None = None,
                          scale: float | None | Sequence[float | None] = None,
                          tile: int | None = None) -> list[np.ndarray]:
    """Foreground probabilities (float32 ``(H, W)``, the input's own size) of gray ``(H, W)`` images.

    Each image goes through ``transform``, is resized by :func:`input_scale` (an explicit
    ``scale``, one for all or one per image, else the training scale the artifact's
    ``preprocessing`` records, else 1), percentile-stretched when the record says the training
    images were, run through the network and resized back. Resized
    images of one shape run as one batch, edge-padded to ``size_multiple`` and cropped back; a
    resized image with a side above ``tile`` (default: 4x the recorded training size; artifacts
    without one never tile, as before) runs as overlapping tiles of that side, blended (see
    :func:`_tiled`); ``tile=0`` never tiles.

    Raises:
        ConfigError: an image that is not 2-D, a bad scale, or a dtype/range the transform rejects.
    """
    scales = list(scale) if isinstance(scale, (list, tuple)) else [scale] * len(images)
    if len(scales) != len(images):
        raise ConfigError(f"{len(scales)} scales for {len(images)} images")
    recorded = (preprocessing or {}).get("scale") or {}
    if tile is None:
        tile = 4 * int(recorded.get("image_size") or 0)
    tile = max(tile + -tile % size_multiple, size_multiple) if tile else 0
    out: list[np.ndarray | None] = [None] * len(images)
    inputs: dict[int, np.ndarray] = {}
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        if np.ndim(image) != 2 or 0 in np.shape(image):
            raise ConfigError(f"segmentation takes gray (H, W) images, got shape {np.shape(image)}")
        factor = input_scale(np.shape(image), preprocessing, scales[i])
        h, w = np.shape(image)
        shape = (max(1, round(h * factor)), max(1, round(w * factor)))
        inputs[i] = resize_image(transform.apply(image), shape)
        if recorded.get("percentile_clip"):
            inputs[i] = percentile_stretch(inputs[i], *recorded["percentile_clip"], False)[0]
        if tile and max(shape) > tile:
            out[i] = _tiled(model, inputs.pop(i), tile, size_multiple)
        else:
            by_shape.setdefault(shape, []).append(i)
    for indices in by_shape.values():
        probs = _forward(model, np.stack([inputs[i] for i in indices]), size_multiple)
        for i, prob in zip(indices, probs):
            out[i] = prob
    for i, image in enumerate(images):
        out[i] = np.clip(resize_image(out[i], np.shape(image)), 0.0, 1.0).astype(np.float32)  # type: ignore[arg-type]
    return out  # type: ignore[return-value]


def check_truncation(truncation: Any) -> float | None:
    """The truncation to apply: None for none (``None`` or ``0``), else ``float(truncation)``.

    Raises:
        ConfigError: not a number, or a non-zero value outside [MIN_TRUNCATION, MAX_TRUNCATION].
    """
    if truncation is None:
        return None
    if isinstance(truncation, bool) or not isinstance(truncation, (int, float, np.integer, np.floating)):
        raise ConfigError(f"truncation is a number, got {truncation!r}")
    value = float(truncation)
    if value == 0:
        return None
    if not MIN_TRUNCATION <= value <= MAX_TRUNCATION:
        raise ConfigError(f"truncation must lie in [{MIN_TRUNCATION:g}, {MAX_TRUNCATION:g}] "
                          f"(0 or none: no truncation), got {truncation!r}")
    return value


def latents(generator: "torch.nn.Module", seeds: Sequence[int], *, truncation: float | None = None) -> "torch.Tensor":
    """The latent vectors of ``seeds`` (one CPU ``torch.Generator`` per seed), truncated to
    ``[-truncation, truncation]`` when it is given (see the module's docstring).

    Raises:
        ConfigError: the generator has no ``latent_shape``, a seed is not a non-negative int, or
            the truncation is out of range.
    """
    import torch

    shape = getattr(generator, "latent_shape", None)
    if shape is None:
        raise ConfigError(f"{type(generator).__name__} has no latent_shape: it is not a generator")
    bound = check_truncation(truncation)
    rows = []
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"a seed is a non-negative integer, got {seed!r}")
        rng = torch.Generator().manual_seed(int(seed))
        z = torch.randn(tuple(shape), generator=rng)
        if bound is not None:
            # Redraw only the values outside the bound, in order, from the same generator.
            while (outside := z.abs() > bound).any():
                z[outside] = torch.randn(int(outside.sum()), generator=rng)
        rows.append(z)
    return torch.stack(rows)


def generate_images(generator: "torch.nn.Module", transform: Transform, seeds: Sequence[int], *,
                    dtype: Any = np.uint8, truncation: float | None = None) -> list[np.ndarray]:
    """One image per seed: the generator's output mapped back through the inverse transform to
    ``dtype`` (``np.uint8`` or ``np.uint16``: the transform's recorded inverse gives the 16-bit
    values), from the latents of ``seeds`` truncated at ``truncation`` (None or 0: none).

    Returns ``(H, W)`` arrays for one channel, else ``(H, W, C)``.

    Raises:
        ConfigError: see :func:`latents`.
    """
    import torch

    truncation = check_truncation(truncation)
    if not seeds:
        return []
    z = latents(generator, seeds, truncation=truncation)
    with torch.inference_mode():
        values = generator(z.to(_device(generator))).float().cpu().numpy()
    images = transform.invert(values, dtype)
    return [image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1) for image in images]


def gray_uint8(image: np.ndarray) -> np.ndarray:
    """The uint8 gray ``(H, W)`` of an 8- or 16-bit gray ``(H, W)``/``(H, W, 1)`` or BGR(A) image, as
    :func:`microforge.datasets.unaligned.reader.load_a` reads domain A: 16 bits to 8 by ``/ 257``
    (rounded), then BT.601 luma (OpenCV ``COLOR_BGR2GRAY``). Colour images are in OpenCV's BGR order.

    Raises:
        ConfigError: another dtype or shape.
    """
    import cv2

    array = np.asarray(image)
    if array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ConfigError(f"colorization takes 8- or 16-bit images, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        array = cv2.cvtColor(np.ascontiguousarray(array[:, :, :3]), cv2.COLOR_BGR2GRAY)
    if array.ndim != 2 or 0 in array.shape:
        raise ConfigError(f"colorization takes gray (H, W) or BGR (H, W, 3) images, got shape {np.shape(image)}")
    return array


def colorize_images(generator: "torch.nn.Module", transform: Transform, images: Sequence[np.ndarray], *,
                    size_multiple: int = 4, invert_input: bool = False) -> list[np.ndarray]:
    """Colorize gray or BGR images (uint8 or uint16) with a CycleGAN ``generator_ab`` (1 -> 3
    channels): uint8 RGB ``(H, W, 3)``, one per image, the size of its input.

    Each image becomes :func:`gray_uint8`, ``255 - x`` when ``invert_input`` (the card's
    ``preprocessing.invert_input``), is reflect-padded on the bottom and right to a multiple of
    ``size_multiple`` (and to at least twice it: the ResNet generator's residual blocks need 2 px
    after its two stride-2 downsamplings), goes through ``transform``; images of one padded shape
    run as one ``(B, 1, H, W)`` batch; the ``(B, 3, H, W)`` output in [-1, 1] returns through the
    transform's inverse to uint8 and is cropped back.

    Raises:
        ConfigError: a dtype or shape :func:`gray_uint8` refuses, or a generator that does not
            make 3 channels.
    """
    import torch

    multiple = max(1, int(size_multiple))
    grays = [gray_uint8(image) for image in images]
    if invert_input:
        grays = [255 - gray for gray in grays]
    out: list[np.ndarray | None] = [None] * len(grays)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, gray in enumerate(grays):
        h, w = gray.shape
        padded = tuple(max(2 * multiple, side + -side % multiple) for side in (h, w))
        by_shape.setdefault(padded, []).append(i)  # type: ignore[arg-type]
    device = _device(generator) if grays else None
    for (ph, pw), indices in by_shape.items():
        batch = np.stack([transform.apply(np.pad(grays[i], ((0, ph - grays[i].shape[0]), (0, pw - grays[i].shape[1])),
                                                 mode="reflect")) for i in indices])
        with torch.inference_mode():
            values = generator(torch.from_numpy(np.ascontiguousarray(batch, np.float32)).unsqueeze(1).to(device))
        values = values.float().cpu().numpy()
        if values.ndim != 4 or values.shape[1] != 3:
            raise ConfigError(f"{type(generator).__name__} makes {tuple(values.shape[1:])} outputs; colorization "
                              "needs 3 channels (RGB)")
        rgb = transform.invert(values, np.uint8)
        for i, image in zip(indices, rgb):
            h, w = grays[i].shape
            out[i] = np.ascontiguousarray(np.moveaxis(image[:, :h, :w], 0, -1))
    return out  # type: ignore[return-value]
