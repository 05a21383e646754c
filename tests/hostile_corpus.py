"""A deterministic corpus of odd and hostile files for the decoder, generated in memory.

``hostile_corpus(seed)`` returns a few hundred :class:`CorpusFile` (name, bytes and
what decoding them must give), built with Pillow and by hand, nothing downloaded:
valid images in every allowed format and mode, truncations and bit flips, empty
files, decompression bombs and huge dimensions in tiny files, decoding-time bombs
(JPEG scans, TIFF strip tables, RLE BMPs), EXIF orientations 1-8, animations,
1x1 and extreme aspect ratios, progressive/interlaced encodings, other formats and
documents named as images, and unicode or odd names. HEIF files (made with
pillow-heif, whose opener importing this module registers) and AVIF files are in
it when this install reads them.
"""

from __future__ import annotations

import functools
import gzip
import io
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, features

from bucketvision.models.decode_limits import heif_support

Expect = Literal["ok", "error", "either"]
EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "GIF": "gif",
    "WEBP": "webp",
    "BMP": "bmp",
    "TIFF": "tif",
}
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
# The formats of phone photos this install reads: HEIF with the `heif` extra, AVIF with a
# Pillow built with libavif. Registering the HEIF opener here lets the corpus write HEIF.
ISO_FORMATS = {
    "HEIF": ("heic", heif_support()),
    "AVIF": ("avif", "avif" in features.modules and features.check_module("avif")),
}


@dataclass(frozen=True)
class CorpusFile:
    """One file of the corpus and what decoding it must give.

    ``expect`` is "ok", "error" or "either" (bit flips may or may not break a file);
    ``kind`` is the DecodeError kind when it is deterministic. For "ok" files,
    ``size`` is the (width, height) of the original as displayed, ``corner`` the
    quadrant that is white (the rest is black) as displayed, ``format`` the
    decoded format and ``words`` something the error message must contain.
    """

    name: str
    data: bytes
    category: str
    expect: Expect
    kind: str | None = None
    size: tuple[int, int] | None = None
    corner: str | None = None
    format: str | None = None
    words: str | None = None


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(width: int, height: int, rng: np.random.Generator, mode: str = "RGB") -> Image.Image:
    """Random pixels: every byte of the file is image data, so a cut always hits pixels."""
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def gradient(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    array = np.stack(
        [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], axis=-1
    )
    return Image.fromarray(array.astype(np.uint8), "RGB")


def marker(width: int, height: int, corner: str = "top-left", mode: str = "RGB") -> Image.Image:
    """Black, with the quadrant ``corner`` white: shows where the image's top-left went."""
    array = np.zeros((height, width), dtype=np.uint8)
    rows = slice(0, height // 2) if corner.startswith("top") else slice(height - height // 2, None)
    cols = slice(0, width // 2) if corner.endswith("left") else slice(width - width // 2, None)
    array[rows, cols] = 255
    return Image.fromarray(array, "L").convert(mode)


# --- hand-made containers ------------------------------------------------------------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png(
    width: int,
    height: int,
    idat: bytes,
    *,
    depth: int = 8,
    colour: int = 0,
    interlace: int = 0,
    extra: bytes = b"",
) -> bytes:
    """A PNG with this IHDR, ``extra`` chunks, one IDAT and IEND."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + extra
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


@functools.cache
def zeros_zlib(size: int) -> bytes:
    """``zlib.compress(bytes(size), 9)`` without holding ``size`` bytes at once."""
    compressor, block = zlib.compressobj(9), bytes(1 << 22)
    parts = [compressor.compress(block) for _ in range(size >> 22)]
    parts.append(compressor.compress(bytes(size & ((1 << 22) - 1))))
    return b"".join(parts) + compressor.flush()


TiffValue = tuple[int, int, Callable[[int], list[int]] | list[int]]


def tiff(
    tags: dict[int, TiffValue],
    pixels: bytes,
    *,
    big_endian: bool = False,
    pixels_first: bool = False,
) -> bytes:
    """A classic TIFF: ``tags`` = {tag: (type, count, values)} and the pixel bytes.

    ``values`` may be a function of the pixel data's offset (for StripOffsets).
    Types: 3 SHORT, 4 LONG. The pixels follow the tag values, or the directory
    with ``pixels_first`` (so that SHORT offsets reach them).
    """
    order = ">" if big_endian else "<"
    codes = {3: "H", 4: "I"}
    entries = sorted(tags.items())
    outside = 8 + 2 + 12 * len(entries) + 4
    sizes = {tag: count * struct.calcsize(codes[kind]) for tag, (kind, count, _) in entries}
    blob_size = sum(size for size in sizes.values() if size > 4)
    pixel_offset = outside if pixels_first else outside + blob_size
    cursor = outside + len(pixels) if pixels_first else outside
    directory, blobs = [], []
    for tag, (kind, count, values) in entries:
        numbers = values(pixel_offset) if callable(values) else values
        packed = struct.pack(f"{order}{count}{codes[kind]}", *numbers)
        if len(packed) > 4:
            field = struct.pack(order + "I", cursor)
            blobs.append(packed)
            cursor += len(packed)
        else:
            field = packed.ljust(4, b"\x00")
        directory.append(struct.pack(order + "HHI", tag, kind, count) + field)
    magic = b"MM\x00*" if big_endian else b"II*\x00"
    head = magic + struct.pack(order + "I", 8) + struct.pack(order + "H", len(entries))
    values = b"".join(blobs)
    body = pixels + values if pixels_first else values + pixels
    return head + b"".join(directory) + b"\x00" * 4 + body


def grey_tiff_tags(width: int, height: int, *, compression: int = 1) -> dict[int, TiffValue]:
    return {
        256: (4, 1, [width]),
        257: (4, 1, [height]),
        258: (3, 1, [8]),
        259: (3, 1, [compression]),
        262: (3, 1, [1]),
        277: (3, 1, [1]),
    }


def gif(screen: tuple[int, int], frame: tuple[int, int], *, frames: int = 1) -> bytes:
    """A two-colour GIF: logical screen, ``frames`` image descriptors of ``frame`` size.

    The image data holds at most 64 black pixels (enough for small frames; a huge
    frame is a header that claims far more than the file holds).
    """
    head = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    pixels = lzw_zeros(min(64, frame[0] * frame[1]))
    one = b"," + struct.pack("<HHHHB", 0, 0, *frame, 0) + b"\x02" + pixels
    return head + one * frames + b";"


def lzw_zeros(count: int) -> bytes:
    """GIF LZW data (code size 2) for ``count`` pixels of colour 0, in sub-blocks.

    A clear code before every pixel keeps the codes 3 bits wide.
    """
    codes = [4, 0] * count + [5]
    bits = sum(code << (3 * index) for index, code in enumerate(codes))
    data = bits.to_bytes((3 * len(codes) + 7) // 8, "little")
    blocks = b"".join(bytes([len(part)]) + part for part in _parts(data, 255))
    return blocks + b"\x00"


def _parts(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int]]:
    """(offset, marker) of each JPEG marker segment up to the first scan."""
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        kind = data[offset + 1]
        yield offset, kind
        if kind == 0xDA:
            return
        offset += 2 + struct.unpack(">H", data[offset + 2 : offset + 4])[0]


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """The JPEG ``data`` with its frame header (SOF) claiming ``width`` x ``height``."""
    for offset, kind in jpeg_segments(data):
        if kind in (0xC0, 0xC1, 0xC2):
            patched = bytearray(data)
            patched[offset + 5 : offset + 9] = struct.pack(">HH", height, width)
            return bytes(patched)
    raise ValueError("no SOF marker")


def bmp_with_size(data: bytes, width: int, height: int) -> bytes:
    patched = bytearray(data)
    patched[18:26] = struct.pack("<ii", width, height)
    return bytes(patched)


def bmp_rle8(width: int, height: int, body: bytes) -> bytes:
    """An 8-bit RLE BMP (grey palette) with the RLE ``body``."""
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(body), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + info + palette + body


def webp_lossless_with_size(data: bytes, width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header claims ``width`` x ``height`` (max 16384)."""
    start = data.index(b"VP8L") + 8
    bits = struct.unpack("<I", data[start + 1 : start + 5])[0]
    bits = (bits & ~0xFFFFFFF) | (width - 1) | ((height - 1) << 14)
    return data[: start + 1] + struct.pack("<I", bits) + data[start + 5 :]


def webp_canvas(data: bytes, width: int, height: int) -> bytes:
    """An extended WebP (VP8X) whose canvas claims ``width`` x ``height`` (max 2**24)."""
    start = data.index(b"VP8X") + 8
    dims = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return data[: start + 4] + dims + data[start + 10 :]


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


# --- the corpus ----------------------------------------------------------------------------


def hostile_corpus(seed: int = 0) -> list[CorpusFile]:
    """Every file of the corpus, deterministic for a given ``seed``."""
    rng = np.random.default_rng(seed)
    files: list[CorpusFile] = []
    for build in (
        _valid,
        _modes,
        _orientation,
        _animated,
        _tiny,
        _encodings,
        _empty,
        _truncated,
        _corrupt,
        _bombs,
        _huge_headers,
        _costly,
        _not_images,
        _iso_media,
        _names,
    ):
        files.extend(build(rng))
    names = Counter(file.name for file in files)
    duplicated = [name for name, count in names.items() if count > 1]
    if duplicated:
        raise AssertionError(f"duplicate corpus names: {duplicated}")
    return files


def categories(files: list[CorpusFile]) -> Counter[str]:
    return Counter(file.category for file in files)


SAVE_OPTIONS: dict[str, dict[str, object]] = {
    "JPEG": {"quality": 90},
    "PNG": {},
    "GIF": {},
    "WEBP": {"quality": 80},
    "BMP": {},
    "TIFF": {},
}


_FORMATS = {"MPO": "JPEG"}  # Pillow writes it; it decodes as the JPEG it starts with


def _ok(name: str, data: bytes, category: str, fmt: str, **fields: object) -> CorpusFile:
    return CorpusFile(name, data, category, "ok", format=fmt, **fields)  # type: ignore[arg-type]


def _valid(rng: np.random.Generator) -> Iterator[CorpusFile]:
    def ok(name: str, data: bytes, fmt: str, **fields: object) -> CorpusFile:
        return _ok(f"valid/{name}", data, "valid", fmt, **fields)

    for fmt, options in SAVE_OPTIONS.items():
        ext = EXTENSIONS[fmt]
        yield ok(f"gradient.{ext}", encode(gradient(64, 48), fmt, **options), fmt)
        data = encode(marker(40, 30, "bottom-right"), fmt, **options)
        yield ok(f"marker.{ext}", data, fmt, size=(40, 30), corner="bottom-right")
    small = gradient(30, 20)
    yield ok("lossless.webp", encode(small, "WEBP", lossless=True), "WEBP")
    for compression in ("tiff_lzw", "jpeg", "packbits", "tiff_adobe_deflate"):
        yield ok(f"tiff-{compression}.tif", encode(small, "TIFF", compression=compression), "TIFF")
    yield ok("tiff-big-endian.tif", _big_endian_tiff(), "TIFF")
    half_transparent = Image.new("RGBA", (9, 7), (10, 200, 30, 128))
    yield ok("bmp-32bit-alpha.bmp", encode(half_transparent, "BMP"), "BMP")
    yield ok("png-bytes-named.gif", encode(small, "PNG"), "PNG")
    yield ok("jpeg-bytes-named.png", encode(small, "JPEG"), "JPEG")
    yield ok("gif-bytes-named.webp", encode(small, "GIF"), "GIF")
    yield ok("UPPER-CASE.JPG", encode(small, "JPEG"), "JPEG")
    html = b"<html><script>alert(1)</script></html>"
    yield ok("jpeg-with-html-appended.jpg", encode(small, "JPEG") + html, "JPEG")
    yield ok("png-with-zip-appended.png", encode(small, "PNG") + _zip(), "PNG")
    yield ok("mpo-two-pictures.jpg", _mpo(), "JPEG", size=(24, 16), corner="top-left")
    yield ok("jpeg-icc-profile.jpg", _with_icc(), "JPEG")


def _big_endian_tiff() -> bytes:
    tags = grey_tiff_tags(4, 2)
    tags[273] = (4, 1, lambda offset: [offset])
    tags[278] = (4, 1, [2])
    tags[279] = (4, 1, [8])
    return tiff(tags, bytes(range(0, 256, 32)), big_endian=True)


def _zip(name: str = "readme.txt", data: bytes = b"hello") -> bytes:
    """A ZIP archive of one file (with a fixed date: the corpus must not depend on the clock)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()


def _mpo() -> bytes:
    first, second = marker(24, 16, "top-left"), marker(24, 16, "bottom-right")
    return encode(first, "MPO", save_all=True, append_images=[second])


def _with_icc() -> bytes:
    from PIL import ImageCms

    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile[24:36] = bytes(12)  # the creation date: the corpus must not depend on the clock
    return encode(gradient(16, 16), "JPEG", icc_profile=profile)


def _modes(rng: np.random.Generator) -> Iterator[CorpusFile]:
    def ok(name: str, data: bytes, fmt: str, corner: str | None = "top-right") -> CorpusFile:
        return _ok(f"mode/{name}", data, "mode", fmt, size=(20, 12), corner=corner)

    rgb = marker(20, 12, "top-right")
    grey = rgb.convert("L")
    cmyk = rgb.convert("CMYK")
    yield ok("cmyk.jpg", encode(cmyk, "JPEG", quality=95), "JPEG")
    yield ok("cmyk.tif", encode(cmyk, "TIFF"), "TIFF")
    yield ok("cmyk-lzw.tif", encode(cmyk, "TIFF", compression="tiff_lzw"), "TIFF")
    sixteen = Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257)
    yield ok("grey-16bit.png", encode(sixteen, "PNG"), "PNG")
    yield ok("grey-16bit-I16.tif", encode(sixteen.convert("I;16"), "TIFF"), "TIFF")
    yield ok("grey-16bit-big-endian.tif", encode(sixteen.convert("I;16B"), "TIFF"), "TIFF")
    yield ok(
        "float32.tif", encode(Image.fromarray(np.asarray(grey, np.float32) / 7), "TIFF"), "TIFF"
    )
    yield ok(
        "int32.tif", encode(Image.fromarray(np.asarray(grey, np.int32) * 1000), "TIFF"), "TIFF"
    )
    rows = np.asarray(rgb, dtype=np.uint16).astype(">u2") * 257
    packed = b"".join(b"\x00" + row.tobytes() for row in rows)
    yield ok("rgb-16bit.png", png(20, 12, zlib.compress(packed), depth=16, colour=2), "PNG")
    alpha = np.full((12, 20), 65535, ">u2")
    grey_alpha = np.stack([np.asarray(grey, np.uint16).astype(">u2") * 257, alpha], -1)
    packed = b"".join(b"\x00" + row.tobytes() for row in grey_alpha)
    yield ok("grey-alpha-16bit.png", png(20, 12, zlib.compress(packed), depth=16, colour=4), "PNG")
    palette = grey.convert("P")
    yield ok("palette.png", encode(palette, "PNG"), "PNG")
    yield ok("palette.bmp", encode(palette, "BMP"), "BMP")
    yield ok("palette.tif", encode(palette, "TIFF"), "TIFF")
    yield ok("grey.bmp", encode(grey, "BMP"), "BMP")
    yield ok("grey.jpg", encode(grey, "JPEG", quality=95), "JPEG")
    yield ok("grey.tif", encode(grey, "TIFF"), "TIFF")
    yield ok("one-bit.png", encode(grey.convert("1"), "PNG"), "PNG")
    yield ok("one-bit.tif", encode(grey.convert("1"), "TIFF"), "TIFF")
    yield ok("one-bit-group4.tif", encode(grey.convert("1"), "TIFF", compression="group4"), "TIFF")
    yield ok("one-bit.bmp", encode(grey.convert("1"), "BMP"), "BMP")
    yield ok("one-bit.gif", encode(grey.convert("1"), "GIF"), "GIF")
    yield ok("ycbcr.tif", encode(rgb.convert("YCbCr"), "TIFF"), "TIFF", corner=None)
    yield ok("lab.tif", encode(_lab(rgb), "TIFF"), "TIFF", None)
    # alpha: the white quadrant is opaque, the black rest is transparent and hides red
    rgba = np.dstack([np.asarray(rgb), np.asarray(grey)])
    rgba[..., 0] = np.maximum(rgba[..., 0], 255 - rgba[..., 3])
    image = Image.fromarray(rgba, "RGBA")
    yield ok("rgba.png", encode(image, "PNG"), "PNG")
    yield ok("rgba.webp", encode(image, "WEBP", lossless=True), "WEBP")
    yield ok("rgba.tif", encode(image, "TIFF"), "TIFF")
    yield ok("rgba.bmp", encode(image, "BMP"), "BMP", None)  # BMP alpha is ignored: red shows
    yield ok("grey-alpha.png", encode(Image.merge("LA", (grey, grey)), "PNG"), "PNG")
    yield ok("grey-alpha.tif", encode(Image.merge("LA", (grey, grey)), "TIFF"), "TIFF")
    premultiplied = tiff(
        {
            **grey_tiff_tags(20, 12),
            258: (3, 2, [8, 8]),
            273: (4, 1, lambda offset: [offset]),
            277: (3, 1, [2]),
            278: (4, 1, [12]),
            279: (4, 1, [480]),
            338: (3, 1, [1]),
        },
        np.dstack([np.asarray(grey), np.asarray(grey)]).tobytes(),
    )
    yield ok("grey-premultiplied-alpha.tif", premultiplied, "TIFF")
    transparent = Image.new("P", (20, 12), 0)
    transparent.putpalette([255, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
    transparent.paste(1, (10, 0, 20, 6))  # top-right: white index 1; the rest: red, transparent
    yield ok("palette-trns.png", encode(transparent, "PNG", transparency=0), "PNG")
    yield ok("palette-transparency.gif", encode(transparent, "GIF", transparency=0), "GIF")
    yield ok("palette-trns-table.png", encode(transparent, "PNG", transparency=b"\x00\xff"), "PNG")
    transparent.info["transparency"] = 0
    yield ok("palette-trns.webp", encode(transparent.convert("RGBA"), "WEBP"), "WEBP")


def _lab(image: Image.Image) -> Image.Image:
    from PIL import ImageCms

    to_lab = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    lab = ImageCms.applyTransform(image, to_lab)
    lab.info.pop("icc_profile", None)  # dated: the corpus must not depend on the clock
    return lab


ORIENTATION_STORED = {  # how to store the displayed image for each EXIF orientation
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def stored_for(displayed: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores so that ``orientation`` displays ``displayed``."""
    method = ORIENTATION_STORED[orientation]
    return displayed if method is None else displayed.transpose(method)


def _orientation(rng: np.random.Generator) -> Iterator[CorpusFile]:
    """The displayed image is 48 x 32 with its top-left quadrant white, however it is stored."""

    def ok(
        name: str, data: bytes, fmt: str = "JPEG", size: tuple[int, int] = (48, 32)
    ) -> CorpusFile:
        return _ok(f"orientation/{name}", data, "orientation", fmt, size=size, corner="top-left")

    def jpeg(image: Image.Image, **options: object) -> bytes:
        return encode(image, "JPEG", quality=95, **options)

    displayed, large = marker(48, 32), marker(640, 480)
    for value in range(1, 9):
        stored = stored_for(displayed, value)
        yield ok(f"exif-{value}.jpg", jpeg(stored, exif=exif_bytes(value)))
    for value in (3, 6, 8):  # large enough for a draft (reduced) JPEG decode
        stored = stored_for(large, value)
        yield ok(f"large-exif-{value}.jpg", jpeg(stored, exif=exif_bytes(value)), size=(640, 480))
    for value, fmt in ((6, "PNG"), (3, "PNG"), (8, "WEBP"), (6, "TIFF")):
        stored = stored_for(displayed, value)
        if fmt == "TIFF":
            data = encode(stored, fmt, tiffinfo={0x0112: value})
        else:
            data = encode(stored, fmt, exif=exif_bytes(value), lossless=True)
        yield ok(f"{fmt.lower()}-exif-{value}.{EXTENSIONS[fmt]}", data, fmt)
    for value in (0, 9, 255):  # invalid values: shown as stored
        yield ok(f"invalid-{value}.jpg", jpeg(displayed, exif=exif_bytes(value)))
    header = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00"
    as_text = header + struct.pack("<HHI", 0x0112, 2, 2) + b"6\x00\x00\x00" + bytes(4)
    yield ok("as-text.jpg", jpeg(displayed, exif=as_text))
    garbage = b"Exif\x00\x00" + rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    yield ok("garbage-exif.jpg", jpeg(displayed, exif=garbage))
    loop = header + struct.pack("<HHII", 0x8769, 4, 1, 8) + struct.pack("<I", 8)
    yield ok("exif-ifd-loop.jpg", jpeg(displayed, exif=loop))
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>'
        b'<rdf:Description tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    )
    yield ok("xmp-6.jpg", jpeg(stored_for(displayed, 6), xmp=xmp))


def _animated(rng: np.random.Generator) -> Iterator[CorpusFile]:
    """Several frames or pages; only the first (top-left quadrant white) is decoded."""

    def ok(name: str, fmt: str, **options: object) -> CorpusFile:
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **options)
        return _ok(
            f"animated/{name}",
            data,
            "animated",
            _FORMATS.get(fmt, fmt),
            size=(24, 16),
            corner="top-left",
        )

    frames = [marker(24, 16, corner) for corner in ("top-left", "bottom-right", "top-right")]
    yield ok("three-frames.gif", "GIF", duration=50, loop=0)
    yield ok("three-frames.png", "PNG", duration=50)
    yield ok("three-frames.webp", "WEBP", lossless=True)
    yield ok("three-pages.tif", "TIFF")
    yield ok("mpo-three-pictures.jpg", "MPO")
    frames = [frame.convert("RGBA") for frame in frames]
    yield ok("rgba-frames.webp", "WEBP", quality=90)
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:2], duration=50)
    broken = data[: len(data) * 3 // 4] + b"\x00garbage" * 10
    yield _ok("animated/second-frame-garbage.gif", broken, "animated", "GIF", corner="top-left")
    small = [Image.new("L", (8, 8), value) for value in range(0, 250, 50)]
    data = encode(small[0], "GIF", save_all=True, append_images=small[1:] * 40)
    yield _ok("animated/200-frames.gif", data, "animated", "GIF", size=(8, 8))


def _tiny(rng: np.random.Generator) -> Iterator[CorpusFile]:
    def ok(name: str, image: Image.Image, fmt: str, **options: object) -> CorpusFile:
        data = encode(image, fmt, **options)
        return _ok(f"tiny/{name}", data, "tiny", fmt, size=image.size)

    for fmt, options in SAVE_OPTIONS.items():
        yield ok(f"1x1.{EXTENSIONS[fmt]}", Image.new("RGB", (1, 1), (200, 30, 90)), fmt, **options)
    pixels: tuple[tuple[str, object], ...] = (
        ("L", 7),
        ("RGBA", (1, 2, 3, 0)),
        ("P", 3),
        ("1", 1),
        ("LA", (9, 9)),
        ("I;16", 300),
    )
    for mode, value in pixels:
        image = Image.new(mode, (1, 1), value)  # type: ignore[arg-type]
        yield ok(f"1x1-{mode.replace(';', '')}.png", image, "PNG")
    yield ok("1x1-cmyk.jpg", Image.new("CMYK", (1, 1), (0, 255, 0, 0)), "JPEG")
    yield ok("1x1-lossless.webp", Image.new("RGBA", (1, 1)), "WEBP", lossless=True)
    shapes = ((1, 4000, "PNG"), (4000, 1, "PNG"), (1, 2000, "JPEG"), (3000, 1, "WEBP"))
    for width, height, fmt in (*shapes, (2, 2, "BMP"), (5000, 3, "GIF"), (3, 5000, "TIFF")):
        yield ok(f"{width}x{height}.{EXTENSIONS[fmt]}", gradient(width, height), fmt)


def _adam7_png(array: np.ndarray) -> bytes:
    """An interlaced (Adam7) 8-bit grey PNG (Pillow does not write interlaced PNGs)."""
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
    passes += ((0, 1, 1, 2),)
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = array[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    height, width = array.shape
    return png(width, height, zlib.compress(raw), interlace=1)


def _encodings(rng: np.random.Generator) -> Iterator[CorpusFile]:
    image = marker(40, 24, "bottom-left")

    def ok(name: str, data: bytes, fmt: str) -> CorpusFile:
        return _ok(f"encoding/{name}", data, "encoding", fmt, size=(40, 24), corner="bottom-left")

    yield ok("progressive.jpg", encode(image, "JPEG", progressive=True, quality=95), "JPEG")
    yield ok(
        "progressive-grey.jpg",
        encode(image.convert("L"), "JPEG", progressive=True, quality=95),
        "JPEG",
    )
    yield ok("optimized.jpg", encode(image, "JPEG", optimize=True, quality=95), "JPEG")
    yield ok("subsampling-444.jpg", encode(image, "JPEG", subsampling=0, quality=95), "JPEG")
    yield ok("subsampling-422.jpg", encode(image, "JPEG", subsampling=1, quality=95), "JPEG")
    yield ok(
        "restart-markers.jpg", encode(image, "JPEG", restart_marker_blocks=1, quality=95), "JPEG"
    )
    yield _ok(
        "encoding/quality-1.jpg",
        encode(gradient(40, 24), "JPEG", quality=1),
        "encoding",
        "JPEG",
        size=(40, 24),
    )
    yield ok("interlaced.png", _adam7_png(np.asarray(image.convert("L"))), "PNG")
    yield ok("interlaced.gif", encode(marker(40, 24, "bottom-left"), "GIF", interlace=True), "GIF")
    plain = encode(image, "PNG", compress_level=0)
    yield ok("uncompressed.png", plain, "PNG")
    yield ok("many-idat-chunks.png", _split_idat(encode(image, "PNG"), 7), "PNG")
    yield ok("lossy-method-0.webp", encode(image, "WEBP", quality=95, method=0), "WEBP")
    yield ok("lossy-method-6.webp", encode(image, "WEBP", quality=95, method=6), "WEBP")
    stored = encode(image.convert("L").transpose(Image.Transpose.FLIP_TOP_BOTTOM), "BMP")
    yield ok("top-down.bmp", bmp_with_size(stored, 40, -24), "BMP")
    rle_rows = b"".join(
        b"\x14\xff\x14\x00\x00\x00" if row < 12 else b"\x28\x00\x00\x00" for row in range(24)
    )
    yield ok("rle8.bmp", bmp_rle8(40, 24, rle_rows + b"\x00\x01"), "BMP")
    yield ok("tiled.tif", _tiled_tiff(np.asarray(image.convert("L"))), "TIFF")
    yield ok("planar-separate.tif", _planar_tiff(np.asarray(image)), "TIFF")
    predictor = {"compression": "tiff_adobe_deflate", "tiffinfo": {317: 2}}
    yield ok("deflate-predictor.tif", encode(image, "TIFF", **predictor), "TIFF")


def _split_idat(data: bytes, size: int) -> bytes:
    """The PNG ``data`` with its image data split into IDAT chunks of ``size`` bytes."""
    start = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    stream = data[start + 8 : start + 8 + length]
    chunks = b"".join(png_chunk(b"IDAT", stream[i : i + size]) for i in range(0, len(stream), size))
    return data[:start] + chunks + data[start + 12 + length :]


def _tiled_tiff(array: np.ndarray) -> bytes:
    """An uncompressed grey TIFF in 16 x 16 tiles (padded at the edges)."""
    height, width = array.shape
    tiles = []
    for top in range(0, height, 16):
        for left in range(0, width, 16):
            tile = np.zeros((16, 16), np.uint8)
            part = array[top : top + 16, left : left + 16]
            tile[: part.shape[0], : part.shape[1]] = part
            tiles.append(tile.tobytes())
    count = len(tiles)
    tags = grey_tiff_tags(width, height)
    tags[322] = (4, 1, [16])
    tags[323] = (4, 1, [16])
    tags[324] = (4, count, lambda offset: [offset + 256 * i for i in range(count)])
    tags[325] = (4, count, [256] * count)
    return tiff(tags, b"".join(tiles))


def _planar_tiff(array: np.ndarray) -> bytes:
    height, width, _ = array.shape
    planes = [array[..., band].tobytes() for band in range(3)]
    size = width * height
    tags = grey_tiff_tags(width, height)
    tags.update(
        {
            258: (3, 3, [8, 8, 8]),
            262: (3, 1, [2]),
            273: (4, 3, lambda offset: [offset, offset + size, offset + 2 * size]),
            277: (3, 1, [3]),
            278: (4, 1, [height]),
            279: (4, 3, [size] * 3),
            284: (3, 1, [2]),
        }
    )
    return tiff(tags, b"".join(planes))


def _empty(rng: np.random.Generator) -> Iterator[CorpusFile]:
    for ext in (*EXTENSIONS.values(), "jpeg", "tiff", "PNG"):
        yield CorpusFile(f"empty/zero-bytes.{ext}", b"", "empty", "error", "EmptyObject")
    yield CorpusFile("empty/zero-bytes-no-extension", b"", "empty", "error", "EmptyObject")


SIGNATURE_LENGTH = {"JPEG": 3, "PNG": 8, "GIF": 6, "WEBP": 12, "BMP": 2, "TIFF": 4}


def _hostile_bases(rng: np.random.Generator) -> dict[str, bytes]:
    picture = noise(64, 48, rng)
    return {
        "JPEG": encode(picture, "JPEG", quality=90),
        "PNG": encode(picture, "PNG"),
        "GIF": encode(picture, "GIF"),
        "WEBP": encode(picture, "WEBP", quality=80),
        "BMP": encode(picture, "BMP"),
        "TIFF": encode(picture, "TIFF"),
    }


def _truncated(rng: np.random.Generator) -> Iterator[CorpusFile]:
    for fmt, data in _hostile_bases(rng).items():
        length = len(data)
        cuts = {
            "1-byte": 1,
            "in-signature": SIGNATURE_LENGTH[fmt] - 1,
            "after-signature": SIGNATURE_LENGTH[fmt],
            "40-bytes": 40,
            "25pct": length // 4,
            "50pct": length // 2,
            "75pct": length * 3 // 4,
            "95pct": length * 95 // 100,
            "last-byte-missing": length - 1,
        }
        for label, cut in cuts.items():
            name = f"truncated/{fmt.lower()}-{label}.{EXTENSIONS[fmt]}"
            if label == "last-byte-missing":  # only a trailer may be lost: either outcome
                yield CorpusFile(name, data[:cut], "truncated", "either")
            elif cut < SIGNATURE_LENGTH[fmt]:  # not recognisable as the format any more
                yield CorpusFile(name, data[:cut], "truncated", "error")
            else:
                yield CorpusFile(name, data[:cut], "truncated", "error", "CorruptImage")


def _corrupt(rng: np.random.Generator) -> Iterator[CorpusFile]:
    """Bit flips and garbage: a decoder may or may not notice, but must not crash or hang."""
    for fmt, data in _hostile_bases(rng).items():

        def either(label: str, damaged: bytes | bytearray, fmt: str = fmt) -> CorpusFile:
            name = f"corrupt/{fmt.lower()}-{label}.{EXTENSIONS[fmt]}"
            return CorpusFile(name, bytes(damaged), "corrupt", "either")

        middle, start = len(data) // 2, SIGNATURE_LENGTH[fmt]
        flipped = bytearray(data)
        flipped[middle] ^= 1 << int(rng.integers(0, 8))
        yield either("bit-flip", flipped)
        many = bytearray(data)
        for position in rng.integers(start, len(data), 16):
            many[position] ^= 1 << int(rng.integers(0, 8))
        yield either("16-bit-flips", many)
        garbage = rng.integers(0, 256, 256, dtype=np.uint8).tobytes()
        yield either("garbage-middle", data[:middle] + garbage + data[middle + 256 :])
        header = bytearray(data)
        header[start:64] = rng.integers(0, 256, 64 - start, dtype=np.uint8).tobytes()
        yield either("random-header", header)
        noise_tail = rng.integers(0, 256, len(data), dtype=np.uint8).tobytes()
        yield either("random-tail", data[: len(data) // 3] + noise_tail)
    yield from _corrupt_structures(rng)


def _corrupt_structures(rng: np.random.Generator) -> Iterator[CorpusFile]:
    def error(name: str, data: bytes, kind: str | None = "CorruptImage") -> CorpusFile:
        return CorpusFile(f"corrupt/{name}", data, "corrupt", "error", kind)

    good_png = encode(gradient(16, 16), "PNG")
    bad_crc = bytearray(good_png)
    bad_crc[29] ^= 0xFF  # IHDR CRC
    yield error("png-ihdr-bad-crc.png", bytes(bad_crc))
    yield error("png-idat-not-zlib.png", png(16, 16, b"this is not a zlib stream at all"))
    yield error("png-bit-depth-3.png", png(16, 16, zlib.compress(bytes(17 * 16)), depth=3))
    yield error("png-colour-type-5.png", png(16, 16, zlib.compress(bytes(17 * 16)), colour=5))
    yield error("png-zero-width.png", png(0, 16, zlib.compress(b"")))
    yield error("png-no-idat.png", good_png[:33] + png_chunk(b"IEND", b""))
    jpeg = encode(gradient(16, 16), "JPEG")
    no_tables = bytearray()
    offset = 0
    for position, kind in jpeg_segments(jpeg):
        if kind == 0xC4:
            no_tables += jpeg[offset:position]
            offset = position + 2 + struct.unpack(">H", jpeg[position + 2 : position + 4])[0]
    # libjpeg-turbo falls back to the standard tables (Motion-JPEG frames omit them)
    no_huffman = bytes(no_tables) + jpeg[offset:]
    yield CorpusFile("corrupt/jpeg-no-huffman-tables.jpg", no_huffman, "corrupt", "either")
    yield error("jpeg-height-zero-dnl.jpg", jpeg_with_size(jpeg, 16, 0))
    twelve = bytearray(jpeg)
    sof = next(position for position, kind in jpeg_segments(jpeg) if kind == 0xC0)
    twelve[sof + 4] = 12
    yield error("jpeg-12-bit-precision.jpg", bytes(twelve))
    yield error("jpeg-only-soi-eoi.jpg", b"\xff\xd8\xff\xd9")
    yield error(
        "jpeg-soi-then-garbage.jpg",
        b"\xff\xd8\xff" + rng.integers(0, 256, 300, dtype=np.uint8).tobytes(),
    )
    yield error(
        "gif-lzw-code-size-13.gif",
        gif((8, 8), (8, 8))[:29] + b"\x0d" + gif((8, 8), (8, 8))[30:],
        None,
    )
    yield error("gif-zero-screen.gif", gif((0, 0), (0, 0)))
    yield error("gif-no-image.gif", gif((8, 8), (8, 8))[:19] + b";")
    yield error(
        "webp-unknown-chunk.webp", b"RIFF\x14\x00\x00\x00WEBPVP8Z\x08\x00\x00\x00" + bytes(8)
    )
    yield error(
        "webp-riff-size-lies.webp",
        b"RIFF\xff\xff\xff\x7fWEBPVP8L\x05\x00\x00\x00\x2f\x00\x00\x00\x00",
    )
    tags = grey_tiff_tags(8, 8)
    tags[273] = (4, 1, [10_000_000])
    tags[279] = (4, 1, [64])
    yield error("tiff-strip-beyond-end.tif", tiff(tags, bytes(64)))
    tags = grey_tiff_tags(8, 8, compression=12345)
    tags[273] = (4, 1, lambda offset: [offset])
    tags[279] = (4, 1, [64])
    yield error("tiff-unknown-compression.tif", tiff(tags, bytes(64)))
    tags = grey_tiff_tags(8, 8)
    tags[258] = (3, 1, [3])
    tags[273] = (4, 1, lambda offset: [offset])
    tags[279] = (4, 1, [64])
    yield error("tiff-3-bits-per-sample.tif", tiff(tags, bytes(64)))
    tags = grey_tiff_tags(0, 8)
    tags[273] = (4, 1, lambda offset: [offset])
    tags[279] = (4, 1, [64])
    yield error("tiff-zero-width.tif", tiff(tags, bytes(64)))
    yield error("tiff-ifd-beyond-end.tif", b"II*\x00\xff\xff\xff\x00" + bytes(32))
    bmp = bytearray(encode(gradient(8, 8), "BMP"))
    bmp[28] = 7  # bits per pixel
    yield error("bmp-7-bits-per-pixel.bmp", bytes(bmp))
    yield error("bmp-zero-width.bmp", bmp_with_size(encode(gradient(8, 8), "BMP"), 0, 8))
    yield error("bmp-header-size-0.bmp", b"BM" + bytes(12) + bytes(40))


def _bombs(rng: np.random.Generator) -> Iterator[CorpusFile]:
    """Small files that decode to far more pixels than allowed (or to huge metadata)."""

    def bomb(name: str, data: bytes, kind: str | None = "TooManyPixels") -> CorpusFile:
        words = "pixels" if kind == "TooManyPixels" else None
        return CorpusFile(f"bomb/{name}", data, "bomb", "error", kind, words=words)

    grey = zeros_zlib(10000 * 10001)  # the rows of a 10000 x 10000 grey PNG, ~100 kB
    one_bit = zeros_zlib(20000 * 2501)  # ... of a 20000 x 20000 one-bit PNG, ~50 kB
    yield bomb("png-1bit-20000x20000.png", png(20000, 20000, one_bit, depth=1))
    yield bomb("png-grey-10000x10000.png", png(10000, 10000, grey))
    yield bomb("png-grey-7000x6000.png", png(7000, 6000, grey))
    yield bomb("apng-1bit-20000x20000.png", _apng(20000, 20000, one_bit))
    yield bomb("gif-8000x8000.gif", encode(Image.new("P", (8000, 8000)), "GIF"))
    tile = zeros_zlib(8192 * 8192)
    tags = grey_tiff_tags(8000, 8000, compression=8)
    tags.update({273: (4, 1, lambda at: [at]), 278: (4, 1, [8000]), 279: (4, 1, [len(tile)])})
    yield bomb("tiff-deflate-8000x8000.tif", tiff(tags, tile))
    tags = grey_tiff_tags(64, 64, compression=8)
    tags.update({322: (4, 1, [8192]), 323: (4, 1, [8192]), 324: (4, 1, lambda at: [at])})
    tags[325] = (4, 1, [len(tile)])
    yield bomb("tiff-64x64-with-8192x8192-tile.tif", tiff(tags, tile))
    tags.update({322: (4, 1, [65536]), 323: (4, 1, [65536]), 325: (4, 1, [16])})
    yield bomb("tiff-64x64-with-65536x65536-tile.tif", tiff(tags, zlib.compress(bytes(64))))
    yield bomb("bmp-rle8-end-of-bitmap-20000x20000.bmp", bmp_rle8(20000, 20000, b"\x00\x01"))
    small_jpeg = encode(gradient(16, 16), "JPEG")
    yield bomb("jpeg-sof-30000x30000.jpg", jpeg_with_size(small_jpeg, 30000, 30000))
    yield bomb("gif-1x1-screen-60000x60000-frame.gif", gif((1, 1), (60000, 60000)))
    vp8x = encode(Image.new("RGBA", (4, 4)), "WEBP", lossless=True, exif=exif_bytes(1))
    yield bomb("webp-canvas-16777216-squared.webp", webp_canvas(vp8x, 1 << 24, 1 << 24), None)
    yield bomb("webp-canvas-10000x10000.webp", webp_canvas(vp8x, 10000, 10000), None)
    small_idat = zlib.compress(bytes(72))
    text = png_chunk(b"zTXt", b"comment\x00\x00" + grey)
    yield bomb("png-ztxt-100MB.png", png(8, 8, small_idat, extra=text), "CorruptImage")
    icc = png_chunk(b"iCCP", b"icc\x00\x00" + grey)
    yield bomb("png-iccp-100MB.png", png(8, 8, small_idat, extra=icc), "CorruptImage")
    long_stream = png(8, 8, one_bit)  # 8 x 8 pixels and 50 MB of zlib data: 72 bytes are read
    yield _ok("bomb/png-8x8-with-50MB-stream.png", long_stream, "bomb", "PNG", size=(8, 8))


def _apng(width: int, height: int, stream: bytes) -> bytes:
    """A one-bit APNG of one frame (the default image) with ``stream`` as its data."""
    control = png_chunk(b"acTL", struct.pack(">II", 1, 0))
    frame = png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", 0, width, height, 0, 0, 1, 10, 0, 0))
    return png(width, height, stream, depth=1, extra=control + frame)


def _huge_headers(rng: np.random.Generator) -> Iterator[CorpusFile]:
    def huge(name: str, data: bytes) -> CorpusFile:
        return CorpusFile(
            f"huge-dimensions/{name}",
            data,
            "huge-dimensions",
            "error",
            "TooManyPixels",
            words="pixels",
        )

    small_jpeg = encode(gradient(16, 16), "JPEG")
    yield huge("jpeg-65500x65500.jpg", jpeg_with_size(small_jpeg, 65500, 65500))
    progressive = encode(gradient(16, 16), "JPEG", progressive=True)
    yield huge("jpeg-progressive-60000x60000.jpg", jpeg_with_size(progressive, 60000, 60000))
    # A progressive JPEG counts whole (libjpeg holds all its coefficients, even for a draft)
    yield huge("jpeg-progressive-7000x6000.jpg", jpeg_with_size(progressive, 7000, 6000))
    # A baseline JPEG counts at its draft size, 1/8 here (875 x 750 and 8192 x 125): under
    # the cap. What is left is 16 x 16 pixels of data, which libjpeg pads out with grey ...
    yield _ok(
        "huge-dimensions/jpeg-7000x6000.jpg",
        jpeg_with_size(small_jpeg, 7000, 6000),
        "huge-dimensions",
        "JPEG",
        size=(7000, 6000),
    )
    # ... or, 8192 pixels wide, gives up on as a broken stream.
    yield CorpusFile(
        "huge-dimensions/jpeg-65535x1000.jpg",
        jpeg_with_size(small_jpeg, 65535, 1000),
        "huge-dimensions",
        "error",
        "CorruptImage",
    )
    for width, height in ((2**31 - 1, 2**31 - 1), (100000, 100000), (1, 50_000_000), (7000, 6000)):
        yield huge(f"png-{width}x{height}.png", png(width, height, zlib.compress(b"\x00" * 17)))
    yield huge(
        "png-rgba16-7000x7000.png", png(7000, 7000, zlib.compress(bytes(64)), depth=16, colour=6)
    )
    for width, height in ((65535, 65535), (10000, 5000)):
        yield huge(f"gif-{width}x{height}.gif", gif((width, height), (4, 4)))
    for width, height in ((2**32 - 1, 2**32 - 1), (100000, 100000), (6500, 6500)):
        tags = grey_tiff_tags(width, height)
        tags.update({273: (4, 1, lambda offset: [offset]), 279: (4, 1, [16])})
        yield huge(f"tiff-{width}x{height}.tif", tiff(tags, bytes(16)))
    lossless = encode(gradient(8, 8), "WEBP", lossless=True)
    for width, height in ((16384, 16384), (10000, 5000)):
        yield huge(
            f"webp-lossless-{width}x{height}.webp", webp_lossless_with_size(lossless, width, height)
        )
    bmp = encode(gradient(8, 8), "BMP")
    for width, height in ((2**31 - 1, 2**31 - 1), (100000, -100000), (7000, 6000)):
        yield huge(f"bmp-{width}x{height}.bmp", bmp_with_size(bmp, width, height))


def _costly(rng: np.random.Generator) -> Iterator[CorpusFile]:
    """Files whose decoding cost is not in their pixel count."""

    def ok(name: str, data: bytes, fmt: str, size: tuple[int, int]) -> CorpusFile:
        return _ok(f"decode-cost/{name}", data, "decode-cost", fmt, size=size)

    def refused(name: str, data: bytes, kind: str, words: str | None = None) -> CorpusFile:
        return CorpusFile(f"decode-cost/{name}", data, "decode-cost", "error", kind, words=words)

    progressive = encode(noise(256, 256, rng, "L"), "JPEG", progressive=True)
    bogus_scan = b"\xff\xda\x00\x08\x01\x01\x00\x00\x00\x00"
    scans = progressive[:-2] + bogus_scan * 600 + b"\xff\xd9"
    yield refused("jpeg-600-extra-scans.jpg", scans, "TooComplex", "scans")
    scans = progressive[:-2] + bogus_scan * 40 + b"\xff\xd9"
    yield CorpusFile("decode-cost/jpeg-40-extra-scans.jpg", scans, "decode-cost", "either")
    strip = progressive[:-2] + bogus_scan * 3000 + b"\xff\xd9"  # libtiff caps scans itself
    tags = grey_tiff_tags(256, 256, compression=7)
    tags.update({273: (4, 1, lambda at: [at]), 278: (4, 1, [256]), 279: (4, 1, [len(strip)])})
    yield CorpusFile(
        "decode-cost/tiff-jpeg-3000-scans.tif", tiff(tags, strip), "decode-cost", "error"
    )
    strips = 270_000  # one row a strip, all pointing at the same byte
    tags = grey_tiff_tags(1, strips)
    tags[273] = (3, strips, lambda offset: [offset] * strips)
    tags[278] = (4, 1, [1])
    tags[279] = (3, strips, [1] * strips)
    data = tiff(tags, b"\x80", pixels_first=True)
    yield refused("tiff-270000-strips.tif", data, "TooComplex", "TIFF tag")
    tags = grey_tiff_tags(1, 5000)
    tags[273] = (4, 5000, lambda offset: [offset + i for i in range(5000)])
    tags[278] = (4, 1, [1])
    tags[279] = (3, 5000, [1] * 5000)
    yield ok("tiff-5000-strips.tif", tiff(tags, bytes(5000)), "TIFF", (1, 5000))
    tags = grey_tiff_tags(4, 4)
    tags[273] = (4, 1, lambda offset: [offset])
    tags[279] = (4, 1, [16])
    tags[65000] = (3, 270_000, [0] * 270_000)
    yield refused("tiff-private-tag-270000-values.tif", tiff(tags, bytes(16)), "TooComplex")
    flood = bmp_rle8(6000, 6000, b"\x01\x11\x00\x00" * 6000 + b"\x00\x01")
    yield refused("bmp-rle8-6000x6000-line-padding.bmp", flood, "TooManyPixels", "RLE")
    flood = bmp_rle8(1000, 1000, b"\x01\x11\x00\x00" * 1000 + b"\x00\x01")
    yield ok("bmp-rle8-1000x1000-line-padding.bmp", flood, "BMP", (1000, 1000))
    small = zlib.compress(bytes(72))
    flood = png(8, 8, small, extra=png_chunk(b"abCd", b"") * 20_000)
    yield ok("png-20000-unknown-chunks.png", flood, "PNG", (8, 8))
    flood = png(8, 8, small, extra=png_chunk(b"tEXt", b"k\x00v") * 10_000)
    yield ok("png-10000-text-chunks.png", flood, "PNG", (8, 8))
    split = _split_idat(encode(noise(32, 24, rng), "PNG"), 1)
    yield ok("png-1-byte-idat-chunks.png", split, "PNG", (32, 24))
    yield ok("gif-5000-frames.gif", gif((4, 4), (4, 4), frames=5000), "GIF", (4, 4))
    head = gif((4, 4), (4, 4))
    comments = head[:19] + b"!\xfe\x03abc\x00" * 20_000 + head[19:]
    yield ok("gif-20000-comments.gif", comments, "GIF", (4, 4))
    one_byte_blocks = head[:19] + b"!\xfe" + b"\x01a" * 100_000 + b"\x00" + head[19:]
    yield ok("gif-comment-in-100000-one-byte-blocks.gif", one_byte_blocks, "GIF", (4, 4))
    jpeg = encode(gradient(16, 16), "JPEG")
    comments = jpeg[:2] + b"\xff\xfe\x00\x07hello" * 5000 + jpeg[2:]
    yield ok("jpeg-5000-comments.jpg", comments, "JPEG", (16, 16))
    yield ok("tiff-ifd-loop.tif", _tiff_ifd_loop(), "TIFF", (4, 4))
    pages = [Image.new("L", (4, 4), i % 256) for i in range(500)]
    many = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    yield ok("tiff-500-pages.tif", many, "TIFF", (4, 4))
    at_limit = png(6320, 6320, zeros_zlib(6320 * 791), depth=1)  # 39.9 megapixels: allowed
    yield ok("png-1bit-6320x6320-at-the-limit.png", at_limit, "PNG", (6320, 6320))


def _tiff_ifd_loop() -> bytes:
    tags = grey_tiff_tags(4, 4)
    tags.update({273: (4, 1, lambda offset: [offset]), 279: (4, 1, [16])})
    data = bytearray(tiff(tags, bytes(range(16))))
    entries = struct.unpack_from("<H", data, 8)[0]
    struct.pack_into("<I", data, 10 + 12 * entries, 8)  # the next directory is this one
    return bytes(data)


def _not_images(rng: np.random.Generator) -> Iterator[CorpusFile]:
    """Documents, archives and formats outside the allow-list, named as images."""

    def refused(name: str, data: bytes, words: str | None = None) -> CorpusFile:
        return CorpusFile(
            f"not-an-image/{name}", data, "not-an-image", "error", "UnsupportedFormat", words=words
        )

    html = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>gone</body></html>"
    yield refused("error-page.jpg", html, "HTML")
    yield refused("error-page.png", b"\n\n   <html><body>an error page</body></html>", "HTML")
    yield refused(
        "login-page.gif", b"<HTML><FORM action=/login><INPUT name=user></FORM></HTML>", "HTML"
    )
    yield refused("xml.webp", b'<?xml version="1.0"?><root><a>1</a></root>', "XML")
    yield refused(
        "drawing.png",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<rect width="10" height="10"/></svg>',
        "XML",
    )
    yield refused(
        "drawing-with-declaration.jpg",
        b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
        "XML",
    )
    yield refused("notes.jpg", b"just some notes that someone saved as photo.jpg\n" * 5, "text")
    yield refused("table.png", b"id,label,score\n1,cat,0.9\n2,dog,0.8\n", "text")
    yield refused("result.json.png", b'{"label": "cat", "score": 0.93}', "text")
    yield refused("script.jpg", b"#!/bin/sh\nrm -rf / --no-preserve-root\n", "text")
    yield refused("program.png", b"import os\nos.system('id')\n", "text")
    yield refused("unicode-text.jpg", "Привет, 世界! 🖼️ not a picture\n".encode(), "text")
    yield refused("long-unicode-text.png", "Привет, мир! ".encode() * 100, "text")
    yield refused("utf16-text.png", "a UTF-16 text file".encode("utf-16"))
    yield refused("whitespace-only.png", b"   \n\t\n   ", "text")
    yield refused("one-nul-byte.jpg", b"\x00")
    yield refused("nul-bytes.gif", bytes(1000))
    for index in range(3):
        yield refused(
            f"random-{index}.jpg",
            rng.integers(0, 256, 2000 + 1000 * index, dtype=np.uint8).tobytes(),
        )
    pdf = (
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
        b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )
    yield refused("document.jpg", pdf, "PDF")
    undated = {"creationDate": None, "modDate": None}  # the corpus must not depend on the clock
    yield refused("scan.png", encode(gradient(16, 16), "PDF", **undated), "PDF")
    eps = (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
        b"0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"
    )
    yield refused("vector.jpg", eps, "EPS")
    yield refused("vector-from-pillow.png", encode(gradient(16, 16), "EPS"), "EPS")
    dos_eps = b"\xc5\xd0\xd3\xc6" + struct.pack("<6I", 30, len(eps), 0, 0, 0, 0) + b"\xff\xff" + eps
    yield refused("dos-eps.tif", dos_eps, "EPS")
    yield refused(
        "postscript.gif",
        b"%!PS\n/Helvetica findfont 12 scalefont setfont\n(hi) show showpage\n",
        "EPS",
    )
    psd = (
        b"8BPS"
        + struct.pack(">H6xHIIHH", 1, 3, 16, 16, 8, 3)
        + struct.pack(">III", 0, 0, 0)
        + struct.pack(">H", 0)
        + bytes(16 * 16 * 3)
    )
    yield refused("layers.jpg", psd, "Photoshop")
    yield refused("layers.png", psd, "Photoshop")
    yield refused("archive.jpg", _zip(), "ZIP")
    yield refused(
        "compressed-png.png", gzip.compress(encode(gradient(16, 16), "PNG"), mtime=0), "gzip"
    )
    yield refused("icon.jpg", encode(gradient(16, 16), "ICO"), "ICO")
    yield refused("jpeg2000.jpg", encode(gradient(16, 16), "JPEG2000"), "JPEG 2000")
    yield refused(
        "jpeg2000-codestream.png", encode(gradient(16, 16), "JPEG2000", no_jp2=True), "JPEG 2000"
    )
    grey = gradient(16, 16).convert("L")
    for fmt, ext in (
        ("XBM", "png"),
        ("PCX", "jpg"),
        ("TGA", "png"),
        ("PPM", "jpg"),
        ("DDS", "png"),
        ("SGI", "gif"),
        ("QOI", "webp"),
        ("BLP", "png"),
        ("MSP", "tif"),
        ("SPIDER", "jpg"),
    ):
        image = grey.convert(_SAVE_MODE.get(fmt, "RGB"))
        yield refused(f"{fmt.lower()}-image.{ext}", encode(image, fmt))
    yield refused(
        "wave-audio.webp", b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + bytes(28), "RIFF"
    )
    yield refused(
        "movie.jpg", b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64), "ISO media"
    )
    # A HEIF header and nothing else: broken when HEIF is read here, else refused as HEIF
    reads_heif = ISO_FORMATS["HEIF"][1]
    yield CorpusFile(
        "not-an-image/photo.heic.jpg",
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
        "not-an-image",
        "error",
        "CorruptImage" if reads_heif else "UnsupportedFormat",
        words="HEIF",
    )
    yield refused("program.gif", b"\x7fELF\x02\x01\x01" + bytes(57))
    yield refused("setup.png", b"MZ\x90\x00\x03" + bytes(59))
    yield refused("png-after-bom.png", b"\xef\xbb\xbf" + encode(gradient(4, 4), "PNG"))
    yield refused("jpeg-after-html.jpg", b"<html>" + encode(gradient(4, 4), "JPEG"), "HTML")
    yield refused("png-inside-zip.png", _zip("image.png", encode(gradient(4, 4), "PNG")), "ZIP")


_SAVE_MODE = {"XBM": "1", "MSP": "1", "SPIDER": "F", "BLP": "P"}  # what each can write


def with_item_size(data: bytes, width: int, height: int) -> bytes:
    """The HEIF/AVIF ``data`` with every ``ispe`` box (the declared item size) patched."""
    patched = bytearray(data)
    at = patched.find(b"ispe")
    while at != -1:
        patched[at + 8 : at + 16] = struct.pack(">II", width, height)
        at = patched.find(b"ispe", at + 4)
    return bytes(patched)


def _iso_media(rng: np.random.Generator) -> Iterator[CorpusFile]:
    """HEIF (phones' HEIC) and AVIF: valid, rotated, truncated, flipped, oversized, refused."""
    for fmt, (ext, readable) in ISO_FORMATS.items():
        if not readable:  # refused by its brand, saying what to install
            brand = b"heic" if fmt == "HEIF" else b"avif"
            yield CorpusFile(
                f"not-an-image/unreadable.{ext}",
                b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00mif1" + brand + bytes(64),
                "not-an-image",
                "error",
                "UnsupportedFormat",
                words="install the heif extra",
            )
            continue
        yield _ok(f"valid/gradient.{ext}", encode(gradient(64, 48), fmt, quality=80), "valid", fmt)
        data = encode(marker(40, 30, "bottom-right"), fmt, quality=90)
        yield _ok(f"valid/marker.{ext}", data, "valid", fmt, size=(40, 30), corner="bottom-right")
        stored = stored_for(marker(48, 32), 6)
        rotated = encode(stored, fmt, quality=90, exif=exif_bytes(6))
        yield _ok(
            f"orientation/{fmt.lower()}-exif-6.{ext}",
            rotated,
            "orientation",
            fmt,
            size=(48, 32),
            corner="top-left",
        )
        base = encode(noise(64, 48, rng), fmt, quality=80)
        for label, cut in (
            ("40-bytes", 40),
            ("50pct", len(base) // 2),
            ("90pct", len(base) * 9 // 10),
        ):
            name = f"truncated/{fmt.lower()}-{label}.{ext}"
            yield CorpusFile(name, base[:cut], "truncated", "error", "CorruptImage")
        for index in range(3):
            flipped = bytearray(base)
            for position in rng.integers(32, len(base), 8):
                flipped[position] ^= 1 << int(rng.integers(0, 8))
            name = f"corrupt/{fmt.lower()}-bit-flips-{index}.{ext}"
            yield CorpusFile(name, bytes(flipped), "corrupt", "either")
        for width, height in ((100_000, 100_000), (8000, 6000)):
            yield CorpusFile(
                f"huge-dimensions/{fmt.lower()}-{width}x{height}.{ext}",
                with_item_size(base, width, height),
                "huge-dimensions",
                "error",
                "TooManyPixels",
                words="pixels",
            )


ODD_NAMES = (
    "ünïcødé-фото-照片-사진.png",
    "emoji-🐱‍👤-🏳️‍🌈.jpg",
    "caf\u00e9.png",  # NFC ...
    "cafe\u0301.png",  # ... and NFD: two keys that look the same
    "rtl-\u202egpj.png",
    "עברית-العربية.png",
    "with space and  double  spaces.png",
    " leading-space.png",
    "trailing-space.png ",
    "percent%2F%20encoded%.png",
    "plus+and&ampersand=equals.png",
    "question?hash#semicolon;.png",
    "quotes'\"`.png",
    "<angle>&lt;brackets&gt;.png",
    "back\\slash.png",
    "colon:pipe|star*.png",
    "dots/./segment.png",
    "dots/../parent.png",
    "dots/.../three.png",
    "double//slash.png",
    "~tilde.png",
    "-dash.png",
    ".hidden.png",
    "CON.png",
    "nul.jpg",
    "no-extension",
    "many.dots.in.name.png.jpg",
    "_jobs/not-a-job/manifest.jsonl.png",
    "zero-width\u200bspace.png",
    "line\u2028separator.png",
    "full\uff0fwidth\uff0eslash.png",
    "deep/" + "nested/" * 30 + "image.png",
    "long-" + "x" * 400 + ".png",
    "long-unicode-" + "é" * 200 + ".png",
)


def _names(rng: np.random.Generator) -> Iterator[CorpusFile]:
    for index, name in enumerate(ODD_NAMES):
        colour = tuple(int(value) for value in rng.integers(0, 256, 3))
        fmt = "JPEG" if index % 3 == 1 else "PNG"
        data = encode(Image.new("RGB", (6 + index, 5), colour), fmt)
        yield _ok(f"names/{name}", data, "odd-name", fmt, size=(6 + index, 5))
