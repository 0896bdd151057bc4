"""Run an artifact's components on images, the same way in eval, generation and Serve.

Each function takes the artifact's :class:`~microforge.platform.transforms.Transform`, so a 16-bit
image becomes the same model input wherever it is predicted, and a generated image the same bytes
wherever it is generated.

* ``segment``: :func:`segment_probabilities`: any dtype the transform takes, padded to the
  network's size multiple, one forward pass per image shape, probabilities cropped back.
* ``generate``: :func:`generate_images`: the generator component exposes ``latent_shape``; the
  latent of image ``i`` is drawn from ``torch.Generator().manual_seed(seeds[i])`` on the CPU, so an
  image is a pure function of (artifact, seed) on any device and in any batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from microforge.platform.errors import ConfigError
from microforge.platform.transforms import Transform

if TYPE_CHECKING:
    import torch

__all__ = ["generate_images", "latents", "segment_probabilities"]


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


def latents(generator: "torch.nn.Module", seeds: Sequence[int]) -> "torch.Tensor":
    """The latent vectors of ``seeds`` (one CPU ``torch.Generator`` per seed).

    Raises:
        ConfigError: the generator has no ``latent_shape``, or a seed is not a non-negative int.
    """
    import torch

    shape = getattr(generator, "latent_shape", None)
    if shape is None:
        raise ConfigError(f"{type(generator).__name__} has no latent_shape: it is not a generator")
    rows = []
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"a seed is a non-negative integer, got {seed!r}")
        rows.append(torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(seed))))
    return torch.stack(rows)


def generate_images(generator: "torch.nn.Module", transform: Transform, seeds: Sequence[int], *,
                    dtype: Any = np.uint8) -> list[np.ndarray]:
    """One image per seed: the generator's output mapped back through the inverse transform.

    Returns ``(H, W)`` arrays for one channel, else ``(H, W, C)``.
    """
    import torch

    if not seeds:
        return []
    z = latents(generator, seeds).to(_device(generator))
    with torch.inference_mode():
        values = generator(z).float().cpu().numpy()
    images = transform.invert(values, dtype)
    return [image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1) for image in images]
