"""Feature extractors for the Fréchet distance and KID, chosen by a spec string.

================================  ==================================================================
``texture`` (default)             a 62-d hand-made descriptor, offline and deterministic, on the
                                  grey float image at full bit depth (:func:`texture_descriptor`)
``inception:WEIGHTS``             Inception-v3 2048-d pool features from a local weights file
                                  (:mod:`microforge.evaluate.inception`); FID on these is the usual FID
``artifact:DIR:COMPONENT[.SUB]``  a microforge model component's pooled features: the artifact's
                                  transform is applied to the stored image, the component run, and
                                  the output of its widest ``Conv2d`` / ``ConvTranspose2d`` layer (the
                                  last one run among equals: a U-Net's bottleneck, a discriminator's
                                  deepest feature map) averaged over H and W; ``.SUB`` names a
                                  submodule (``model.encoder.3``) whose output is pooled instead
================================  ==================================================================

An extractor is called with a list of decoded images (as stored: ``(H, W)`` or ``(H, W, C)``,
any dtype) and returns float64 features ``(B, D)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..platform.config import suggest
from ..platform.errors import ConfigError
from .images import grey, to_float
from .texture import cached, downsample, glcm_properties, lbp_histogram, radial_band_powers

__all__ = ["FEATURE_KINDS", "FeatureSpec", "build_extractor", "parse_feature_spec", "texture_descriptor"]

FEATURE_KINDS = ("texture", "inception", "artifact")
LBP_SCALES = (1, 2, 4)  # LBP (8 points, radius 1) on the image and its 2x and 4x block means
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
Extractor = Callable[[list[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class FeatureSpec:
    """A parsed ``--features`` value."""

    kind: str
    path: str | None = None
    component: str | None = None

    def __str__(self) -> str:
        return ":".join(p for p in (self.kind, self.path, self.component) if p is not None)


def parse_feature_spec(spec: str) -> FeatureSpec:
    """``texture``, ``inception:PATH`` or ``artifact:DIR:COMPONENT`` as a :class:`FeatureSpec`.

    Raises:
        ConfigError: an unknown kind (with a did-you-mean) or a missing part.
    """
    kind, _, rest = str(spec).partition(":")
    if kind not in FEATURE_KINDS:
        raise ConfigError(f"unknown feature extractor '{kind}'{suggest(kind, list(FEATURE_KINDS))}; valid: "
                          "texture, inception:WEIGHTS.pth, artifact:DIR:COMPONENT")
    if kind == "texture":
        if rest:
            raise ConfigError(f"feature extractor 'texture' takes no argument, got '{spec}'")
        return FeatureSpec("texture")
    if kind == "inception":
        if not rest:
            raise ConfigError("feature extractor 'inception' needs a local weights file: inception:WEIGHTS.pth")
        return FeatureSpec("inception", rest)
    directory, sep, component = rest.rpartition(":")
    if not sep or not directory or not component:
        raise ConfigError(f"feature extractor 'artifact' needs a directory and a component: "
                          f"artifact:DIR:COMPONENT, got '{spec}'")
    return FeatureSpec("artifact", directory, component)


def texture_descriptor(x: np.ndarray, cache: dict | None = None) -> np.ndarray:
    """The ``texture`` descriptor (62 values) of a grey float image ``(H, W)``:

    * uniform LBP histograms (8 points, radius 1) of the image and of its 2 x 2 and 4 x 4 block
      means (a 3-level pyramid): 30 values;
    * GLCM ``log1p(contrast)``, ``log1p(dissimilarity)``, homogeneity, energy, correlation at
      distances 1, 2, 4, each the mean of 4 angles (64 levels between the image's 0.5th and 99.5th
      percentiles): 15 values;
    * the power spectrum's fractions in 8 log-spaced radial bands, as ``log10(f + 1e-6) / 3``: 8;
    * intensity quantiles 1, 5, 25, 50, 75, 95, 99 %, mean and standard deviation: 9.

    ``cache`` shares LBP and GLCM with :func:`~microforge.evaluate.statistics.image_statistics`.
    """
    x = np.asarray(x, dtype=np.float64)
    lbp = [cached(cache, ("lbp", f), lambda f=f: lbp_histogram(downsample(x, f), 8, 1)) for f in LBP_SCALES]
    glcm = np.array(cached(cache, "glcm", lambda: glcm_properties(x)))
    glcm[:2] = np.log1p(glcm[:2])
    spectrum = np.log10(radial_band_powers(x) + 1e-6) / 3.0
    intensity = np.concatenate([np.quantile(x, QUANTILES), [x.mean(), x.std()]])
    return np.concatenate([*lbp, glcm.ravel(), spectrum, intensity])


class _Texture:
    """The ``texture`` extractor; ``from_grey`` lets the caller share a per-image cache."""

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        return np.stack([texture_descriptor(grey(to_float(image))) for image in images])

    @staticmethod
    def from_grey(x: np.ndarray, cache: dict | None = None) -> np.ndarray:
        return texture_descriptor(x, cache)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


class _TorchFeatures:
    """Runs a module on float batches grouped by image shape (one forward per shape)."""

    def __init__(self, prepare: Callable[[np.ndarray], np.ndarray], run: Callable[[Any], Any], what: str):
        self.prepare, self.run, self.what = prepare, run, what

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        arrays = [self.prepare(image) for image in images]
        out: list[np.ndarray | None] = [None] * len(arrays)
        shapes: dict[tuple, list[int]] = {}
        for i, a in enumerate(arrays):
            shapes.setdefault(a.shape, []).append(i)
        for indices in shapes.values():
            batch = torch.from_numpy(np.stack([arrays[i] for i in indices]).astype(np.float32))
            try:
                with torch.inference_mode():
                    features = self.run(batch).double().numpy()
            except ConfigError:
                raise
            except RuntimeError as exc:
                raise ConfigError(f"{self.what} cannot take images of shape {tuple(batch.shape[1:])}: "
                                  f"{_first_line(exc)}") from None
            for j, i in enumerate(indices):
                out[i] = features[j]
        return np.stack(out)


def _inception(path: str) -> Extractor:
    from .inception import load_inception

    model = load_inception(path)
    return _TorchFeatures(to_float, model, f"Inception-v3 ({path})")


def _pooled(output: Any) -> Any:
    tensor = output[0] if isinstance(output, (tuple, list)) else output
    if getattr(tensor, "ndim", 0) == 4:
        return tensor.mean(dim=(2, 3))
    if getattr(tensor, "ndim", 0) == 2:
        return tensor
    raise ConfigError(f"a hooked layer returned shape {tuple(getattr(tensor, 'shape', ()))}; "
                      "name a submodule with a (B, C, H, W) or (B, D) output")


def _artifact(directory: str, component: str) -> Extractor:
    from torch import nn
    import torch.nn.functional as F

    from ..trainers import load_artifact

    artifact = load_artifact(directory)
    name, _, sub = component.partition(".")
    module = artifact[name]
    if sub:
        try:
            targets = [module.get_submodule(sub)]
        except AttributeError:
            raise ConfigError(f"component '{name}' of {directory} has no submodule '{sub}'") from None
    else:
        targets = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        if not targets:
            raise ConfigError(f"component '{name}' of {directory} has no Conv2d layer; "
                              f"name a submodule: artifact:DIR:{name}.SUBMODULE")
    multiple = int(getattr(module, "size_multiple", 1) or 1)
    transform = artifact.transform

    def prepare(image: np.ndarray) -> np.ndarray:
        chw = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
        return np.asarray(transform.apply(np.ascontiguousarray(chw)), dtype=np.float32)

    def run(batch: Any) -> Any:
        h, w = batch.shape[-2:]
        fit = (-(-h // multiple) * multiple, -(-w // multiple) * multiple)
        if fit != (h, w):
            batch = F.interpolate(batch, size=fit, mode="bilinear", align_corners=False)
        best: dict[str, Any] = {}

        def hook(layer: Any, _inputs: Any, output: Any) -> None:
            width = output.shape[1] if sub == "" else 0
            if not best or width >= best["width"]:
                best.update(width=width, features=_pooled(output))

        handles = [t.register_forward_hook(hook) for t in targets]
        try:
            module(batch)
        finally:
            for handle in handles:
                handle.remove()
        if not best:
            raise ConfigError(f"the hooked layer of component '{component}' did not run")
        return best["features"]

    return _TorchFeatures(prepare, run, f"component '{component}' of {directory}")


def build_extractor(spec: FeatureSpec | str) -> Extractor:
    """The extractor of a spec; loads weights now, so bad ones fail before any work.

    Raises:
        ConfigError: an unknown spec, or an unreadable or mismatched weights file.
        ArtifactError: an artifact directory that does not load, or an unknown component.
    """
    spec = spec if isinstance(spec, FeatureSpec) else parse_feature_spec(spec)
    if spec.kind == "texture":
        return _Texture()
    if spec.kind == "inception":
        return _inception(str(Path(spec.path)))
    return _artifact(str(spec.path), str(spec.component))
