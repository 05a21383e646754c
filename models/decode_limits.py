"""What is checked before a single pixel is decoded: format, size and decoding cost.

Decoding time must be bounded by the bytes and the pixel count. A JPEG's scans,
a TIFF's tag tables and tile sizes and an RLE BMP cost time that the pixel
count does not show, so each has its own cap. The pixel count is read from the
header and capped as it will be decoded: a baseline JPEG drafted to 1/2, 1/4 or
1/8 of its size is judged at that size (so a 48 MP phone photo fits), anything
else at its full size. HEIF and AVIF cannot decode at a reduced size, and libheif
allocates an item at the size its ``ispe`` box declares, so the largest declared
item counts too. :mod:`bucketvision.models.decoding` runs these checks.
"""

from __future__ import annotations

import struct
import threading

from PIL import Image, features

from bucketvision.infra.errors import UserError
from bucketvision.infra.vocabulary import ALLOWED_FORMATS

MAX_JPEG_SCANS = 500  # libjpeg-turbo's suggested scan limit; a normal progressive JPEG has ~10
MAX_TIFF_VALUES = 1 << 18  # numbers in one TIFF tag (strip/tile tables); Pillow unpacks each
MAX_RLE_PIXELS = 1 << 23  # RLE BMPs are decoded in pure Python by Pillow (~0.1 us a pixel)
_FORMAT_ALIASES = {"MPO": "JPEG"}  # a JPEG with extra pictures (phones); its first is decoded
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_TIFF_NUMERIC_TYPES = frozenset((3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 16, 17, 18))
# ISO-BMFF brands (the ftyp box) of a HEIF/HEIC still image or sequence, and of AVIF.
_HEIF_BRANDS = frozenset(
    (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")
)
_AVIF_BRANDS = frozenset((b"avif", b"avis"))
HEIF_EXTRA = "install the heif extra: pip install 'bucketvision[heif]'"
_heif_lock = threading.Lock()
_heif_ready: bool | None = None  # None until the first HEIF file asks for pillow-heif


class DecodeError(UserError):
    """The bytes are not an image this service will decode; ``kind`` names why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def format_of(image: Image.Image) -> str:
    return _FORMAT_ALIASES.get(image.format or "", image.format or "unknown")


def heif_support() -> bool:
    """Whether HEIF/HEIC can be read: pillow-heif's opener, registered once on first need.

    pillow-heif (libheif, a native library) is imported only when a HEIF file comes,
    so importing the decoder costs nothing more (the producer's report imports it too).
    """
    global _heif_ready
    with _heif_lock:
        if _heif_ready is None:
            try:
                import pillow_heif
            except ImportError:
                _heif_ready = False
            else:  # the primary image only: no thumbnails, depth maps or auxiliary images
                pillow_heif.register_heif_opener(
                    thumbnails=False, depth_images=False, aux_images=False
                )
                _heif_ready = True
        return _heif_ready


def iso_image_format(data: bytes) -> str | None:
    """The format, "HEIF" or "AVIF", when the ftyp box names one of its brands; else None."""
    if data[4:8] != b"ftyp":
        return None
    end = min(len(data), max(16, struct.unpack_from(">I", data)[0]), 1024)
    brands = {data[8:12], *(data[at : at + 4] for at in range(16, end - 3, 4))}
    if brands & _AVIF_BRANDS:
        return "AVIF"
    return "HEIF" if brands & _HEIF_BRANDS else None


def check_codec(data: bytes) -> None:
    """Refuse a HEIF or AVIF file this install cannot read, saying what to install."""
    found = iso_image_format(data)
    if found == "HEIF" and not heif_support():
        raise DecodeError("UnsupportedFormat", f"a HEIF/HEIC image: {HEIF_EXTRA}")
    if found == "AVIF" and not ("avif" in features.modules and features.check_module("avif")):
        raise DecodeError(
            "UnsupportedFormat",
            f"an AVIF image, and this Pillow was built without AVIF: {HEIF_EXTRA} "
            "(it brings Pillow 11.3 or newer, whose wheels read AVIF)",
        )


def check_structure(data: bytes, limit: int, limit_name: str) -> None:
    """Refuse files whose decoding cost is not in the header (before Pillow parses them)."""
    if data[4:8] == b"ftyp":
        _check_iso_items(data, limit, limit_name)
    elif data.startswith(b"\xff\xd8"):
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


def check_header(
    image: Image.Image, limit: int, limit_name: str, *, stored: tuple[int, int] | None = None
) -> None:
    """Format, size and per-format cost checks that need only the parsed header.

    ``image.size`` is what will be decoded; ``stored``, when the image was drafted
    (a JPEG decoded at a reduced size), is the size its header gives. The cap applies
    to the decoded size, except for a progressive JPEG, which libjpeg holds whole.
    """
    width, height = stored or image.size
    source_format = format_of(image)
    if source_format not in ALLOWED_FORMATS:
        raise DecodeError("UnsupportedFormat", f"the {source_format} format is not allowed")
    if width <= 0 or height <= 0:
        raise DecodeError("CorruptImage", f"the image has no pixels ({width}x{height})")
    decoded_width, decoded_height = image.size
    why = "a decompression bomb or an oversized image"
    if source_format == "JPEG" and image.info.get("progressive"):
        # libjpeg keeps every coefficient of a progressive JPEG, whatever the draft size
        decoded_width, decoded_height = width, height
        why += "; a progressive JPEG is held whole in memory while it decodes"
    if decoded_width * decoded_height > limit:
        drafted = (
            f"; decoded at the least size the model needs it is still {decoded_width}x"
            f"{decoded_height} = {decoded_width * decoded_height} pixels"
            if (decoded_width, decoded_height) != (width, height)
            else ""
        )
        raise DecodeError(
            "TooManyPixels",
            f"the image is {width}x{height} = {width * height} pixels{drafted}, above "
            f"{limit_name}={limit} ({why})",
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


def _check_iso_items(data: bytes, limit: int, limit_name: str) -> None:
    """Refuse a HEIF/AVIF file whose ``meta/iprp/ipco`` declares an item above ``limit``.

    libheif allocates a (grid) image at its ``ispe`` size before the crop (``clap``)
    that gives the size Pillow reports, so the largest declared item is the cost.
    """
    largest = (0, 0)
    for meta in _boxes(data, 0, len(data), b"meta"):
        for iprp in _boxes(data, meta[0] + 4, meta[1], b"iprp"):  # meta is a full box
            for ipco in _boxes(data, *iprp, b"ipco"):
                for start, end in _boxes(data, *ipco, b"ispe"):
                    if end - start >= 12:
                        size = struct.unpack_from(">II", data, start + 4)
                        largest = max(largest, size, key=lambda pair: pair[0] * pair[1])
    width, height = largest
    if width * height > limit:
        raise DecodeError(
            "TooManyPixels",
            f"the image declares an item of {width}x{height} = {width * height} pixels, above "
            f"{limit_name}={limit} (HEIF and AVIF are decoded at full size)",
        )


def _boxes(data: bytes, start: int, end: int, kind: bytes) -> list[tuple[int, int]]:
    """(payload start, end) of each ISO-BMFF box of type ``kind`` in ``data[start:end]``.

    The walk stops at the first malformed box: the decoder reports a broken file.
    """
    found = []
    while start + 8 <= end:
        size, header = struct.unpack_from(">I", data, start)[0], 8
        if size == 1 and start + 16 <= end:
            size, header = struct.unpack_from(">Q", data, start + 8)[0], 16
        elif size == 0:  # the box runs to the end of its parent
            size = end - start
        if size < header or start + size > end:
            break
        if data[start + 4 : start + 8] == kind:
            found.append((start + header, start + size))
        start += size
    return found
