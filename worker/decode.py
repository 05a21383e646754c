"""Safe image decoding for untrusted bytes.

Only an allow-list of raster formats is ever handed to Pillow (never EPS, PDF or
anything that would reach Ghostscript), the pixel count is checked from the
header before any pixel is decoded, JPEG is decoded in draft mode when the
model wants a smaller image, and EXIF orientation is applied.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.imaging import Placement, fit_image

_ORIENTATION = 0x0112
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"%!PS", "a PostScript/EPS document"),
    (b"\xc5\xd0\xd3\xc6", "an EPS document"),
    (b"8BPS", "a Photoshop PSD file"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
)


class DecodeError(ValueError):
    """The bytes are not an image this service will decode; ``kind`` names why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DecodedImage:
    """Pixels fitted to the model plus how they were placed (for mapping results back)."""

    pixels: np.ndarray  # uint8, H x W x C
    original_width: int
    original_height: int
    source_format: str
    placement: Placement | None = None
    preview: np.ndarray | None = None  # uint8 RGB of the original, long side <= preview_size


def _describe_unknown(data: bytes) -> str:
    head = data[:512].lstrip()
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    lowered = head[:64].lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return "HTML/XML text"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unknown binary data"


def decode_image(
    data: bytes,
    *,
    mode: str,
    size: tuple[int, int] | None,
    max_pixels: int,
    resize: str = "stretch",
    preview_size: int | None = None,
) -> DecodedImage:
    """Decode ``data`` to ``mode`` ("L" or "RGB") fitted to ``size`` = (width, height).

    ``resize`` is "stretch" or "letterbox" (see models.imaging); ``preview_size``
    also keeps an RGB copy of the original, for drawing results on, with its long
    side at most that many pixels. Raises DecodeError with a message a user can act on.
    """
    if not data:
        raise DecodeError("EmptyObject", "the object is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise DecodeError(
            "UnsupportedFormat",
            f"not a supported image: the bytes look like {_describe_unknown(data)}; "
            f"allowed formats are {', '.join(ALLOWED_FORMATS)}",
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DecodeError("TooManyPixels", f"refused as a decompression bomb: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DecodeError("CorruptImage", f"cannot read the image header: {error}") from None
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise DecodeError("CorruptImage", f"the image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise DecodeError(
                "TooManyPixels",
                f"the image is {width}x{height} = {width * height} pixels, above "
                f"BV_MAX_IMAGE_PIXELS={max_pixels} (a decompression bomb or an oversized image)",
            )
        source_format = image.format or "unknown"
        try:
            if size is not None and source_format == "JPEG" and preview_size is None:
                image.draft(mode, size)
            image.load()
            if image.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width  # the original, as displayed, is transposed
            oriented = ImageOps.exif_transpose(image)
            preview = _preview(oriented, preview_size) if preview_size else None
            converted = _to_mode(oriented, mode)
            placement = Placement.plan(width, height, converted.size, "stretch")
            if size is not None:
                converted, placement = fit_image(converted, size, resize)
                placement = _in_original_pixels(placement, width, height)
            pixels = np.asarray(converted, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise DecodeError("CorruptImage", f"the image data is corrupt: {error}") from None
        except Image.DecompressionBombError as error:
            raise DecodeError(
                "TooManyPixels", f"refused as a decompression bomb: {error}"
            ) from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    return DecodedImage(pixels, width, height, source_format, placement, preview)


def _in_original_pixels(placement: Placement, width: int, height: int) -> Placement:
    """Re-express a placement computed on a draft-reduced JPEG in original pixels."""
    if (placement.original_width, placement.original_height) == (width, height):
        return placement
    content_width, content_height = placement.content_size
    return Placement(
        width,
        height,
        placement.target_width,
        placement.target_height,
        content_width / width,
        content_height / height,
        placement.pad_x,
        placement.pad_y,
    )


def _preview(image: Image.Image, longest: int) -> np.ndarray:
    """An RGB copy of ``image`` whose long side is at most ``longest`` pixels."""
    preview = _to_mode(image, "RGB")
    if max(preview.size) > longest:
        preview = preview.copy()
        preview.thumbnail((longest, longest), Image.Resampling.BILINEAR)
    return np.asarray(preview, dtype=np.uint8)


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow mode (palette, alpha, CMYK, 16-bit) to "L" or "RGB"."""
    if image.mode == mode:
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        image = Image.fromarray((array * (255.0 / top)).clip(0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert(mode)
