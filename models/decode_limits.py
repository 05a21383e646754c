"""What is checked before a single pixel is decoded: format, size and decoding cost.

Decoding time must be bounded by the bytes and the pixel count. A JPEG's scans,
a TIFF's tag tables and tile sizes and an RLE BMP cost time that the pixel
count does not show, so each has its own cap; the pixel count itself is read
from the header. :mod:`bucketvision.models.decoding` runs these checks.
"""

from __future__ import annotations

import struct

from PIL import Image

from bucketvision.infra.errors import UserError
from bucketvision.infra.vocabulary import ALLOWED_FORMATS

MAX_JPEG_SCANS = 500  # libjpeg-turbo's suggested scan limit; a normal progressive JPEG has ~10
MAX_TIFF_VALUES = 1 << 18  # numbers in one TIFF tag (strip/tile tables); Pillow unpacks each
MAX_RLE_PIXELS = 1 << 23  # RLE BMPs are decoded in pure Python by Pillow (~0.1 us a pixel)
_FORMAT_ALIASES = {"MPO": "JPEG"}  # a JPEG with extra pictures (phones); its first is decoded
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_TIFF_NUMERIC_TYPES = frozenset((3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 16, 17, 18))


class DecodeError(UserError):
    """The bytes are not an image this service will decode; ``kind`` names why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def format_of(image: Image.Image) -> str:
    return _FORMAT_ALIASES.get(image.format or "", image.format or "unknown")


def check_structure(data: bytes) -> None:
    """Refuse files whose decoding cost is not in the header (before Pillow parses them)."""
    if data.startswith(b"\xff\xd8"):
        # FF DA (start of scan) cannot occur inside entropy-coded data (FF is stuffed)
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS:
            raise DecodeError(
                "TooComplex",
                f"the JPEG has {scans} scans, above the limit of {MAX_JPEG_SCANS} "
                "(each scan re-reads every block: a decoding-time bomb)",
            )
    elif data[:4] in _TIFF_MAGIC:
        _check_tiff_directory(data)


def _check_tiff_directory(data: bytes) -> None:
    """Refuse a first TIFF directory with a numeric tag of more than MAX_TIFF_VALUES values."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")  # BigTIFF: 64-bit offsets and counts
    pointer, number, entry, layout = ("Q", "Q", 20, "HHQ") if big else ("I", "H", 12, "HHI")
    try:
        (offset,) = struct.unpack_from(order + pointer, data, 8 if big else 4)
        (count,) = struct.unpack_from(order + number, data, offset)
    except struct.error:
        return  # Pillow reports the broken header
    start, layout = offset + struct.calcsize(number), order + layout
    for index in range(min(count, max(0, len(data) - start) // entry)):
        tag, kind, values = struct.unpack_from(layout, data, start + index * entry)
        if kind in _TIFF_NUMERIC_TYPES and values > MAX_TIFF_VALUES:
            raise DecodeError(
                "TooComplex",
                f"the TIFF tag {tag} holds {values} values, above the limit of {MAX_TIFF_VALUES} "
                "(a strip or tile table this long is a decoding-time bomb)",
            )


def check_header(image: Image.Image, limit: int, limit_name: str) -> None:
    """Format, size and per-format cost checks that need only the parsed header."""
    width, height = image.size
    source_format = format_of(image)
    if source_format not in ALLOWED_FORMATS:
        raise DecodeError("UnsupportedFormat", f"the {source_format} format is not allowed")
    if width <= 0 or height <= 0:
        raise DecodeError("CorruptImage", f"the image has no pixels ({width}x{height})")
    if width * height > limit:
        raise DecodeError(
            "TooManyPixels",
            f"the image is {width}x{height} = {width * height} pixels, above {limit_name}="
            f"{limit} (a decompression bomb or an oversized image)",
        )
    tags = getattr(image, "tag_v2", None)
    if source_format == "TIFF" and tags is not None and 322 in tags and 323 in tags:
        tile_width, tile_height = int(tags[322]), int(tags[323])
        if tile_width * tile_height > limit:
            raise DecodeError(
                "TooManyPixels",
                f"the TIFF tiles are {tile_width}x{tile_height} = {tile_width * tile_height} "
                f"pixels each, above {limit_name}={limit} (a bomb inside a small image)",
            )
    if any(tile[0] == "bmp_rle" for tile in image.tile) and width * height > MAX_RLE_PIXELS:
        raise DecodeError(
            "TooManyPixels",
            f"the RLE-compressed BMP is {width}x{height} = {width * height} pixels, above "
            f"the limit of {MAX_RLE_PIXELS} for this slow decoder",
        )
