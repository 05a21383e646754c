"""Safe image decoding for untrusted bytes: a DecodedImage or a DecodeError, nothing else.

* Only an allow-list of raster formats is handed to Pillow (never EPS, PDF or
  anything that would reach Ghostscript or another external program). HEIF/HEIC
  needs the ``heif`` extra (pillow-heif, registered on the first HEIF file);
  AVIF is Pillow's own. Without them such a file is an error naming the extra.
* The pixel count is checked from the header before any pixel is decoded,
  against ``max_pixels`` and Pillow's own ``Image.MAX_IMAGE_PIXELS``, as it will
  be decoded: a baseline JPEG is drafted first (libjpeg decodes it at 1/2, 1/4 or
  1/8 of its size, the least that still covers the model input and the preview),
  so a 48 MP phone photo costs what its draft costs; every other image counts whole.
* Decoding time is bounded by the bytes and the pixels: only the first frame is
  decoded (Pillow opens at frame 0; nothing here seeks or counts frames), and
  what costs time without showing in the pixel count is capped: JPEG scans,
  TIFF tables and tile sizes, RLE BMPs (which Pillow decodes in pure Python).
* The EXIF orientation is applied, so the pixels are the image as displayed
  (pillow-heif applies a HEIF's own rotation and reports orientation 1).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, UnidentifiedImageError

from bucketvision.infra.vocabulary import ALLOWED_FORMATS
from bucketvision.models.decode_limits import (
    DecodeError,
    check_codec,
    check_header,
    check_structure,
    format_of,
)
from bucketvision.models.imaging import Placement, draft_size, fit_image

Size = tuple[int, int] | None  # (width, height) of the model input; None keeps the original
_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"%!PS", "a PostScript/EPS document"),
    (b"\xc5\xd0\xd3\xc6", "an EPS document"),
    (b"8BPS", "a Photoshop PSD file"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image"),
    (b"\xffO\xffQ", "a JPEG 2000 codestream"),
    (b"\x00\x00\x01\x00", "a Windows icon (ICO)"),
    (b"RIFF", "a RIFF file that is not WebP"),
)


@dataclass(frozen=True)
class DecodedImage:
    """Pixels fitted to the model plus how they were placed (for mapping results back)."""

    pixels: np.ndarray  # uint8, H x W x C
    original_width: int
    original_height: int
    source_format: str
    placement: Placement | None = None
    preview: np.ndarray | None = None  # uint8 RGB of the original, long side <= preview_size


def decode_image(
    data: bytes,
    *,
    mode: str,
    size: Size,
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
    limit, limit_name = max_pixels, "BV_MAX_IMAGE_PIXELS"
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        limit, limit_name = Image.MAX_IMAGE_PIXELS, "PIL.Image.MAX_IMAGE_PIXELS"
    check_structure(data, limit, limit_name)
    check_codec(data)
    with _open(data) as image:
        try:
            stored = image.size
            _draft(image, mode, size, preview_size)
            check_header(image, limit, limit_name, stored=stored)
            return _decode(image, stored, mode, size, resize, preview_size)
        except DecodeError:
            raise
        except (Image.DecompressionBombError, MemoryError) as error:
            raise _bomb(error) from None
        except Exception as error:  # any decoder failure on hostile bytes is this item's error
            raise DecodeError("CorruptImage", f"the image data is corrupt: {_why(error)}") from None


def _draft(image: Image.Image, mode: str, size: Size, preview_size: int | None) -> None:
    """Set a JPEG to decode at 1/2, 1/4 or 1/8 of its size (``image.size`` becomes that).

    The least size that still covers the model input and the preview is taken; any
    other image (and a JPEG for no model size) is left to decode whole.
    """
    if size is None or format_of(image) != "JPEG" or min(image.size) <= 0:
        return
    target = (size[1], size[0]) if _orientation(image) in (5, 6, 7, 8) else size
    image.draft("RGB" if preview_size else mode, draft_size(image.size, target, preview_size))


def _decode(
    image: Image.Image,
    stored: tuple[int, int],
    mode: str,
    size: Size,
    resize: str,
    preview_size: int | None,
) -> DecodedImage:
    """Load the first frame, apply the orientation, convert, fit (see decode_image).

    ``stored`` is the size the header gives (``image.size`` may be a JPEG's draft).
    """
    width, height = stored
    source_format = format_of(image)
    image.load()
    orientation = _orientation(image)
    if orientation in (5, 6, 7, 8):
        width, height = height, width  # the original, as displayed, is transposed
    oriented = image.transpose(_TRANSPOSE[orientation]) if orientation > 1 else image
    preview = _preview(oriented, preview_size) if preview_size else None
    converted = _to_mode(oriented, mode)
    placement = Placement.plan(width, height, converted.size, "stretch")
    if size is not None:
        converted, placement = fit_image(converted, size, resize)
        placement = _in_original_pixels(placement, width, height)
    pixels = np.asarray(converted, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    return DecodedImage(pixels, width, height, source_format, placement, preview)


def _open(data: bytes) -> Image.Image:
    """``Image.open`` restricted to ALLOWED_FORMATS, with its failures as DecodeErrors.

    Only the allowed formats that have a plugin here are tried (HEIF needs the extra).
    """
    Image.init()
    formats = tuple(name for name in ALLOWED_FORMATS if name in Image.OPEN)
    try:
        return Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        claimed = next((name for name in ALLOWED_FORMATS if _accepts(name, data)), None)
        if claimed:
            raise DecodeError(
                "CorruptImage",
                f"the bytes start like a file of the {claimed} format but its header is broken",
            ) from None
        raise DecodeError(
            "UnsupportedFormat",
            f"not a supported image: the bytes look like {_describe_unknown(data)}; "
            f"allowed formats are {', '.join(ALLOWED_FORMATS)}",
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _bomb(error) from None
    except Exception as error:  # a plugin failing on a broken header
        raise DecodeError("CorruptImage", f"cannot read the image header: {_why(error)}") from None


def _orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation 1-8; 1 when it is missing, invalid or unreadable."""
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # broken metadata must not cost the pixels: show the image as stored
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _accepts(name: str, data: bytes) -> bool:
    """Whether the bytes start with ``name``'s magic number (as Pillow's plugin checks it)."""
    if name == "WEBP":  # Pillow also wants a known first chunk
        return data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    accept = Image.OPEN[name][1] if name in Image.OPEN else None
    return accept is not None and accept(data[:16]) is True


def _describe_unknown(data: bytes) -> str:
    head = data[:512].lstrip()
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    if head[4:8] == b"ftyp":
        return "an ISO media file (MP4/QuickTime video, not a HEIF or AVIF image)"
    lowered = head[:64].lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return "HTML/XML text"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "text"
        except UnicodeDecodeError as error:
            if error.start >= len(head) - 3:  # only a character cut by the 512-byte window
                return "text"
    return "unknown binary data"


def _why(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _bomb(error: BaseException) -> DecodeError:
    return DecodeError("TooManyPixels", f"refused as a decompression bomb: {error}")


def _in_original_pixels(placement: Placement, width: int, height: int) -> Placement:
    """Re-express a placement computed on a draft-reduced JPEG in original pixels."""
    if (placement.original_width, placement.original_height) == (width, height):
        return placement
    content_width, content_height = placement.content_size
    scale_x, scale_y = content_width / width, content_height / height
    return replace(
        placement, original_width=width, original_height=height, scale_x=scale_x, scale_y=scale_y
    )


def _preview(image: Image.Image, longest: int) -> np.ndarray:
    """An RGB copy of ``image`` whose long side is at most ``longest`` pixels."""
    preview = _to_mode(image, "RGB")
    if max(preview.size) > longest:
        preview = preview.copy()
        preview.thumbnail((longest, longest), Image.Resampling.BILINEAR)
    return np.asarray(preview, dtype=np.uint8)


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow mode (palette, alpha, CMYK, 16-bit, float) to "L" or "RGB"."""
    if image.mode == mode:
        return image
    if image.mode.startswith(("I", "F")):  # 16/32-bit integer or float: rescale, do not clip
        array = np.nan_to_num(np.asarray(image, dtype=np.float32), posinf=0.0, neginf=0.0)
        top = float(array.max()) if array.size else 0.0
        scaled = array * (255.0 / top) if top > 0 else array
        image = Image.fromarray(scaled.clip(0, 255).astype(np.uint8), "L")
    if image.mode == "La":  # premultiplied: the grey band is already composited on black
        image = image.getchannel(0)
    if image.mode in ("P", "RGBa"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    try:
        return image.convert(mode)
    except ValueError:
        try:
            return image.convert("RGB").convert(mode)
        except ValueError:
            raise DecodeError(
                "UnsupportedFormat", f"pixels in mode {image.mode} cannot be converted to {mode}"
            ) from None
