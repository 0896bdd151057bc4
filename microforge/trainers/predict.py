"""Run an artifact's components on images, the same way in eval, generation and Serve.

Each function takes the artifact's :class:`~microforge.platform.transforms.Transform`, so a 16-bit
image becomes the same model input wherever it is predicted, and a generated image the same bytes
wherever it is generated.

* ``segment``: :func:`segment_probabilities`: any dtype the transform takes, padded to the
  network's size multiple, one forward pass per image shape, probabilities cropped back.
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

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from microforge.platform.errors import ConfigError
from microforge.platform.transforms import Transform

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_TRUNCATION", "MIN_TRUNCATION", "check_truncation", "colorize_images", "generate_images",
           "gray_uint8", "latents", "segment_probabilities"]

MIN_TRUNCATION = 0.05
MAX_TRUNCATION = 4.0


def _device(module: "torch.nn.Module") -> "torch.device":
    return next(module.parameters()).device


def segment_probabilities(model: "torch.nn.Module", transform: Transform, images: Sequence[np.ndarray], *,
                          size_multiple: int = 1) -> list[np.ndarray]:
    """Foreground probabilities (float32 ``(H, W)``) of gray ``(H, W)`` images.

    Images of one shape run as one batch; each is edge-padded to ``size_multiple`` and cropped back.

    Raises:
        ConfigError: an image that is not 2-D, or a dtype/range the transform rejects.
    """
    import torch

    out: list[np.ndarray | None] = [None] * len(images)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        if np.ndim(image) != 2 or 0 in np.shape(image):
            raise ConfigError(f"segmentation takes gray (H, W) images, got shape {np.shape(image)}")
        by_shape.setdefault(np.shape(image), []).append(i)
    device = _device(model)
    for (h, w), indices in by_shape.items():
        ph, pw = -h % size_multiple, -w % size_multiple
        batch = np.stack([np.pad(transform.apply(images[i]), ((0, ph), (0, pw)), mode="edge") for i in indices])
        x = torch.from_numpy(batch).unsqueeze(1).to(device)
        with torch.inference_mode():
            probs = torch.sigmoid(model(x).float())[:, 0, :h, :w].cpu().numpy()
        for i, prob in zip(indices, probs):
            out[i] = prob.astype(np.float32)
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
