"""Finding source images and reading them as single-channel arrays (multi-page and RGB TIFFs)."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...platform.errors import DatasetError

log = logging.getLogger(__name__)

SOURCE_SUFFIXES = (".tif", ".tiff", ".png")
# ITU-R BT.709 luma weights, as skimage.color.rgb2gray.
_LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


def discover_images(root: str | Path) -> list[str]:
    """Relative POSIX paths of every ``.tif``/``.tiff``/``.png`` file under ``root``, sorted.

    Raises:
        DatasetError: ``root`` is not a directory, or holds no such file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"input directory {root} does not exist")
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.suffix.lower() in SOURCE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not found:
        raise DatasetError(f"{root} holds no images (.tif, .tiff or .png, searched recursively)")
    return found


@dataclass(frozen=True)
class SourceImage:
    """One decoded source: ``image`` is (H, W) in the source dtype, or float32 for a colour
    source converted to gray; ``dtype`` and ``channels`` describe the file as stored."""

    image: np.ndarray
    dtype: str
    channels: int
    pages: int


def _to_gray(image: np.ndarray, name: str) -> np.ndarray:
    log.warning("%s is a %d-channel image; converted to gray (BT.709 luma)", name, image.shape[-1])
    return image[..., :3].astype(np.float32) @ _LUMA


def read_source(data: bytes, name: str, page: int = 0) -> SourceImage:
    """Decode a TIFF (tifffile, page ``page``) or PNG (OpenCV) file's bytes to one gray plane.

    Raises:
        DatasetError: an undecodable file, a page the file does not have, or an unusable shape.
    """
    try:
        if name.lower().endswith((".tif", ".tiff")):
            import tifffile

            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                pages = len(tif.pages)
                if pages == 0:
                    raise DatasetError(f"{name} cannot be decoded (not a TIFF with a readable page)")
                if page >= pages:
                    raise DatasetError(f"{name} has {pages} page(s); page {page} was asked for")
                tiff_page = tif.pages[page]
                image = tiff_page.asarray()
                if "S" in tiff_page.axes and image.ndim == 3:
                    image = np.moveaxis(image, tiff_page.axes.index("S"), -1)  # planar RGB -> (H, W, S)
            colour_order = slice(None)  # TIFF stores RGB
        else:
            import cv2

            if page:
                raise DatasetError(f"{name} is a PNG (one page); page {page} was asked for")
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise DatasetError(f"{name} cannot be decoded as a PNG image")
            pages = 1
            colour_order = slice(None, None, -1) if image.ndim == 3 else slice(None)  # OpenCV BGR(A) -> RGB
    except DatasetError:
        raise
    except Exception as exc:  # tifffile and OpenCV raise several types for a corrupt file
        raise DatasetError(f"{name} cannot be decoded ({type(exc).__name__}: {exc})") from None
    image = np.asarray(image)
    dtype = str(image.dtype)
    if image.dtype.kind not in "uif" or image.dtype.kind == "i" and image.dtype.itemsize > 2:
        raise DatasetError(f"{name} holds {dtype} pixels; expected unsigned integers or floats")
    channels = 1
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        channels = image.shape[-1]
        rgb = image[..., :3][..., colour_order]
        image = _to_gray(rgb, name)
    if image.ndim != 2 or min(image.shape) < 2:
        raise DatasetError(f"{name} has shape {image.shape}; expected a 2-D gray or RGB image")
    return SourceImage(image, dtype, channels, pages)
