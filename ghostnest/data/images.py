"""Reading image files: any mode Pillow opens -> the 8-bit RGB a person sees, as a uint8 ``(3, H, W)`` tensor.

:func:`read_image` is the one reader of image files: ``ghostnest predict``, ``eval`` and training on an
``imagefolder:`` data set and int8 calibration on one (both through :func:`ghostnest.data.load_dataset`) all call it,
so an image reads the same in training and in prediction. What it does, and the choices it makes
(docs/training.md, "Image files"):

- **Orientation**: a camera's EXIF orientation tag is applied (the picture stands the way a viewer shows it).
- **Bit depth**: 16-bit (``I;16``, ``I;16B``, ...) grey images are scaled from 0-65535 to 0-255, not clipped.
  32-bit integer (``I``) and float (``F``) images carry no range of their own: they are scaled from the smallest
  of 0-1 (floats only), 0-255 and 0-65535 that holds all their values, and stretched from their own min-max when
  none does. Pillow's ``convert("RGB")`` clips all of these at 255, which turned a 16-bit "3" into a "5".
- **Transparency** (``RGBA``, ``LA``, ``PA``, ``P``/``L``/``RGB`` with a transparent colour, ``I;16`` with one):
  composited onto :data:`BACKGROUND`, black. Black is the background of the embedded digits data and what
  premultiplied alpha gives (a transparent pixel contributes nothing), and it is what a dark viewer shows; white
  ink on a transparent background then reads as the digits do. Pass ``background=(255, 255, 255)`` for dark
  drawings meant for a white page.
- **Colour spaces**: ``CMYK`` goes through its embedded ICC profile to sRGB where it has one (Pillow's plain
  conversion otherwise), ``YCbCr``, ``HSV`` and palette images through Pillow's conversion, ``LAB`` through an
  ICC transform. RGB images are taken as sRGB, as torchvision and timm take them.
- **Large images**: above :data:`REDUCE_ABOVE` pixels an image is decoded at reduced size where the format
  allows it (JPEG: libjpeg's 1/2 to 1/8 scaling, Pillow's ``draft``) and shrunk by an integer box filter
  (``Image.reduce``) to no less than twice the requested size before the caller's resize, so memory stays near
  the decoded image's. An image that would still decode to more than :data:`MAX_PIXELS` pixels is refused with
  one line naming the file and the limit (Pillow's own decompression-bomb check, which would raise a
  ``DecompressionBombError`` traceback or warn, is replaced by this one).
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import torch

BACKGROUND = (0, 0, 0)  # what transparent pixels are composited onto (see the module docstring)
MAX_PIXELS = 178_956_970  # decoded pixels at most: Pillow's own decompression-bomb bound (2 x MAX_IMAGE_PIXELS)
REDUCE_ABOVE = 4096 * 4096  # images with more pixels decode at reduced size where a target size is given

_OPEN_LOCK = threading.Lock()  # Pillow's bomb check is a module global: lifted only while one file is opened


def read_image(path: str | Path, size: int | None = None, background: tuple[int, int, int] = BACKGROUND
               ) -> torch.Tensor:
    """uint8 ``(3, H, W)`` RGB tensor of the image file ``path`` as a person sees it (module docstring).

    ``size``: the square size the caller resizes to; an image of more than :data:`REDUCE_ABOVE` pixels is then
    decoded and box-reduced to no less than ``2 * size`` on each side. ``ValueError`` naming the file if it cannot
    be decoded or is larger than :data:`MAX_PIXELS`.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with _open(path) as img:
            w, h = img.size
            if size and w * h > REDUCE_ABOVE:
                img.draft(None, (2 * size, 2 * size))  # JPEG decodes at 1/2..1/8 scale; other formats ignore it
            dw, dh = img.size
            if dw * dh > MAX_PIXELS:
                raise _TooLarge(f"image {path} is {w}x{h} pixels ({w * h / 1e6:.3g} megapixels) and its format "
                                f"cannot be decoded at reduced size; ghostnest reads at most {MAX_PIXELS / 1e6:.3g} "
                                "megapixels per image (ghostnest.data.images.MAX_PIXELS): downscale it first")
            img = ImageOps.exif_transpose(img)  # loads the pixels
            if size and img.mode in _REDUCIBLE:
                img = _reduce(img, size)  # before the conversion, which may widen each pixel
            rgb = _reduce(to_rgb(img, background), size) if size else to_rgb(img, background)
    except _TooLarge as exc:
        raise ValueError(str(exc)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path} ({type(exc).__name__}); remove it or convert it to PNG/JPEG"
                         ) from None
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)


_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "I", "F", "CMYK", "YCbCr")  # the modes Image.reduce takes


def _reduce(img, size: int):
    """``img`` box-reduced by whole factors to no less than ``2 * size`` on each side, if above REDUCE_ABOVE."""
    if img.width * img.height <= REDUCE_ABOVE:
        return img
    factor = (max(1, img.width // (2 * size)), max(1, img.height // (2 * size)))
    return img.reduce(factor) if factor != (1, 1) else img


class _TooLarge(Exception):
    pass


def _open(path: Path):
    """``Image.open`` without Pillow's decompression-bomb check (:func:`read_image` applies :data:`MAX_PIXELS`
    after choosing the decoded size)."""
    from PIL import Image

    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def to_rgb(img, background: tuple[int, int, int] = BACKGROUND):
    """A loaded PIL image of any mode -> an 8-bit ``RGB`` PIL image as a person sees it (module docstring)."""

    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode.startswith("I") or mode == "F":
        return _scaled_grey(img, background)
    if mode == "CMYK":
        return _via_icc(img, "CMYK") or img.convert("RGB")
    if mode == "LAB":
        return _via_icc(img, "LAB")
    if mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")  # palette and colour-key transparency become alpha; La/RGBa are un-premultiplied
        return _composite(rgba, background)
    return img.convert("RGB")  # 1, L, P, YCbCr, HSV


def _composite(rgba, background: tuple[int, int, int]):
    from PIL import Image

    base = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(base, rgba).convert("RGB")


def _scaled_grey(img, background: tuple[int, int, int]):
    """16-bit, 32-bit integer and float grey -> 8-bit RGB, scaled to its range (not clipped); a transparent
    grey value (16-bit PNG ``tRNS``) composited onto ``background``."""
    from PIL import Image

    a = np.asarray(img)
    values = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if img.mode.startswith("I;16"):
        lo, hi = 0.0, 65535.0
    else:
        lo, hi = _value_range(values, float_image=img.mode == "F")
    grey = np.clip(np.rint((values - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
    rgb = Image.fromarray(grey).convert("RGB")
    key = img.info.get("transparency")
    if isinstance(key, int) and not isinstance(key, bool):
        alpha = Image.fromarray(np.where(a == key, 0, 255).astype(np.uint8))
        rgb.putalpha(alpha)
        return _composite(rgb, background)
    return rgb


def _value_range(values: np.ndarray, float_image: bool) -> tuple[float, float]:
    """The smallest of 0-1 (floats), 0-255 and 0-65535 that holds every value, else the values' own min-max."""
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    for top in ((1.0, 255.0, 65535.0) if float_image else (255.0, 65535.0)):
        if lo >= 0 and hi <= top:
            return 0.0, top
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _via_icc(img, mode: str):
    """``img`` (``CMYK`` with an embedded ICC profile, or ``LAB``) transformed to sRGB by littlecms; ``None`` for
    CMYK without a usable profile."""
    import io

    from PIL import ImageCms

    try:
        if mode == "LAB":
            src = ImageCms.createProfile("LAB")
        elif img.info.get("icc_profile"):
            src = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
        else:
            return None
        return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        if mode == "LAB":
            raise ValueError("LAB image: this Pillow cannot convert LAB to RGB (no littlecms)") from None
        return None
