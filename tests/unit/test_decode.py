"""worker.decode.decode_image: allow-listed formats, limits, orientation, mode conversion."""

from __future__ import annotations

import io
import struct
import subprocess
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image, ImageFile

import bucketvision.models.decode_limits as limits_module
import bucketvision.models.decoding as decode_module
from bucketvision.infra.vocabulary import ALLOWED_FORMATS
from bucketvision.models.decode_limits import MAX_JPEG_SCANS, MAX_TIFF_VALUES
from bucketvision.models.decoding import DecodedImage, DecodeError, decode_image
from tests.hostile_corpus import bmp_rle8, grey_tiff_tags, tiff

DEFAULT_MAX_PIXELS = 40_000_000
Encoder = Callable[..., bytes]


def decode(data: bytes, **options: object) -> DecodedImage:
    options.setdefault("mode", "RGB")
    options.setdefault("size", (28, 28))
    options.setdefault("max_pixels", DEFAULT_MAX_PIXELS)
    return decode_image(data, **options)  # type: ignore[arg-type]


def decode_error(data: bytes, **options: object) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode(data, **options)
    assert str(caught.value).strip(), "a DecodeError must carry a message a user can act on"
    return caught.value


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming ``width`` x ``height`` grey pixels whose data stops after one row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    one_row = zlib.compress(b"\x00" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", one_row)


def solid(mode: str, size: tuple[int, int], colour: object) -> Image.Image:
    return Image.new(mode, size, colour)  # type: ignore[arg-type]


# --- valid images ------------------------------------------------------------------------------

FORMAT_OPTIONS: dict[str, dict[str, object]] = {
    "PNG": {},
    "JPEG": {"quality": 95},
    "GIF": {},
    "WEBP": {"lossless": True},
    "BMP": {},
    "TIFF": {},
}


@pytest.mark.parametrize("fmt", sorted(FORMAT_OPTIONS))
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_allowed_formats_decode_to_mode_and_size(encode: Encoder, fmt: str, mode: str) -> None:
    colour = (200, 100, 50)
    data = encode(solid("RGB", (50, 40), colour), fmt, **FORMAT_OPTIONS[fmt])

    decoded = decode(data, mode=mode, size=(32, 24))

    channels = 1 if mode == "L" else 3
    # size is (width, height); pixels are height x width x channels
    assert decoded.pixels.shape == (24, 32, channels)
    assert decoded.pixels.dtype == np.uint8
    assert (decoded.original_width, decoded.original_height) == (50, 40)
    assert decoded.source_format == fmt
    expected = (
        np.array([0.299 * 200 + 0.587 * 100 + 0.114 * 50])
        if mode == "L"
        else np.array(colour, dtype=np.float64)
    )
    # GIF quantises to a palette and JPEG is lossy: a loose but meaningful tolerance
    mean = decoded.pixels.reshape(-1, channels).mean(axis=0)
    np.testing.assert_allclose(mean, expected, atol=12)


def test_allowed_formats_are_the_documented_raster_formats() -> None:
    assert set(ALLOWED_FORMATS) == {"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF", "AVIF"}


def test_size_none_keeps_the_original_resolution(encode: Encoder) -> None:
    decoded = decode(encode(solid("RGB", (37, 21), (1, 2, 3)), "PNG"), size=None)
    assert decoded.pixels.shape == (21, 37, 3)
    assert (decoded.original_width, decoded.original_height) == (37, 21)


def test_large_jpeg_reports_the_header_size_not_the_draft_size(encode: Encoder) -> None:
    """JPEG is decoded in draft (reduced) mode; the original size must still be the file's."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    decoded = decode(encode(image, "JPEG"), mode="L", size=(28, 28))
    assert decoded.pixels.shape == (28, 28, 1)
    assert (decoded.original_width, decoded.original_height) == (640, 480)


def test_a_large_jpeg_with_a_preview_is_drafted_no_smaller_than_the_preview(
    encode: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A preview does not cost a full-size decode: the draft still covers it, in colour."""
    from PIL.JpegImagePlugin import JpegImageFile

    drafts: list[tuple[str, tuple[int, int]]] = []
    draft = JpegImageFile.draft

    def spy(self: JpegImageFile, mode: str, size: tuple[int, int]) -> object:
        drafts.append((mode, size))
        return draft(self, mode, size)

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    red = solid("RGB", (2000, 1000), (200, 30, 30))
    decoded = decode(encode(red, "JPEG"), mode="L", size=(28, 28), preview_size=300)
    assert drafts == [("RGB", (300, 150))]  # a quarter of the file's size, not all of it
    assert decoded.pixels.shape == (28, 28, 1)
    assert decoded.preview is not None and decoded.preview.shape == (150, 300, 3)
    assert abs(int(decoded.preview[75, 150, 0]) - 200) < 8  # the preview keeps its colour
    assert (decoded.original_width, decoded.original_height) == (2000, 1000)


def test_decoded_pixels_are_the_image_content(encode: Encoder) -> None:
    """Left half white, right half black survives a lossless decode and resize."""
    array = np.zeros((20, 40), dtype=np.uint8)
    array[:, :20] = 255
    decoded = decode(encode(Image.fromarray(array, "L"), "PNG"), mode="L", size=(20, 10))
    assert decoded.pixels[:, :8, 0].min() > 240
    assert decoded.pixels[:, 12:, 0].max() < 15


# --- refusals ----------------------------------------------------------------------------------


def test_empty_bytes_are_an_empty_object() -> None:
    assert decode_error(b"").kind == "EmptyObject"


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_png_is_corrupt(encode: Encoder, cut: float) -> None:
    rng = np.random.default_rng(1)
    data = encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG")
    error = decode_error(data[: int(len(data) * cut)])
    assert error.kind == "CorruptImage"


def test_png_cut_inside_its_header_is_corrupt(encode: Encoder) -> None:
    data = encode(solid("RGB", (40, 30), (10, 20, 30)), "PNG")
    assert decode_error(data[:20]).kind == "CorruptImage"


@pytest.mark.parametrize("size", [(28, 28), None])
def test_truncated_jpeg_is_corrupt(encode: Encoder, size: tuple[int, int] | None) -> None:
    rng = np.random.default_rng(2)
    data = encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    error = decode_error(data[: len(data) // 2], size=size)
    assert error.kind == "CorruptImage"


def test_plain_text_is_unsupported_and_says_text() -> None:
    error = decode_error(b"just some notes that someone saved as photo.jpg\n")
    assert error.kind == "UnsupportedFormat"
    assert "text" in str(error)


@pytest.mark.parametrize(
    "data",
    [
        b"<!DOCTYPE html><html><head><title>404</title></head><body>Not Found</body></html>",
        b"\n  <html><body>an error page</body></html>",
    ],
)
def test_html_is_unsupported_and_says_html(data: bytes) -> None:
    error = decode_error(data)
    assert error.kind == "UnsupportedFormat"
    assert "HTML" in str(error)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\nshowpage\n%%EOF\n"
DOS_EPS = b"\xc5\xd0\xd3\xc6" + b"\x00" * 60


@pytest.fixture
def ghostscript_forbidden(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record any attempt to parse EPS or to start a process (Ghostscript)."""
    calls: list[str] = []
    original_open = EpsImagePlugin.EpsImageFile._open

    def spy_open(self: EpsImagePlugin.EpsImageFile) -> None:
        calls.append("EpsImageFile._open")
        original_open(self)

    def no_process(*args: object, **kwargs: object) -> None:
        calls.append(f"subprocess {args!r}")
        raise AssertionError("a subprocess was started while decoding")

    def no_ghostscript(*args: object, **kwargs: object) -> None:
        calls.append("Ghostscript")
        raise AssertionError("Ghostscript was called while decoding")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", spy_open)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", no_ghostscript)
    for name in ("Popen", "run", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, no_process)
    return calls


def test_the_eps_fixture_would_reach_the_eps_plugin(ghostscript_forbidden: list[str]) -> None:
    """Sanity check: without the allow-list, Pillow does parse these bytes as EPS."""
    with Image.open(io.BytesIO(EPS)) as image:
        assert image.format == "EPS"
    assert ghostscript_forbidden == ["EpsImageFile._open"]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (EPS, "EPS"),
        (DOS_EPS, "EPS"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "PDF"),
    ],
    ids=["eps", "dos-eps", "pdf"],
)
def test_postscript_and_pdf_are_refused_without_ghostscript(
    ghostscript_forbidden: list[str], data: bytes, words: str
) -> None:
    error = decode_error(data)
    assert error.kind == "UnsupportedFormat"
    assert words in str(error)
    assert ghostscript_forbidden == []


def test_other_formats_pillow_knows_are_refused(encode: Encoder) -> None:
    """ICO is a format Pillow reads, but it is not on the allow-list."""
    data = encode(solid("RGB", (16, 16), (1, 2, 3)), "ICO")
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "ICO"
    assert decode_error(data).kind == "UnsupportedFormat"


# --- pixel limits ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A 20000 x 20000 one-bit PNG of zeros: ~50 kB on disk, 400 megapixels decoded."""
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("max_pixels", [1_000_000, DEFAULT_MAX_PIXELS])
def test_decompression_bomb_is_refused(bomb_png: bytes, max_pixels: int) -> None:
    assert len(bomb_png) < 200_000
    error = decode_error(bomb_png, max_pixels=max_pixels)
    assert error.kind == "TooManyPixels"


def test_image_above_the_service_limit_but_below_pillows_is_refused(encode: Encoder) -> None:
    """7000 x 6000 = 42 MP: over BV_MAX_IMAGE_PIXELS's default, under Pillow's own bomb check."""
    data = encode(Image.new("1", (7000, 6000)), "PNG")
    error = decode_error(data, max_pixels=DEFAULT_MAX_PIXELS)
    assert error.kind == "TooManyPixels"
    assert "42000000" in str(error)


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    """A header with no pixel data is refused for its size, not reported as corrupt."""
    error = decode_error(png_header_only(5000, 5000), max_pixels=1_000_000)
    assert error.kind == "TooManyPixels"


def test_pixel_limit_boundary(encode: Encoder) -> None:
    data = encode(solid("L", (10, 10), 7), "PNG")
    assert decode(data, max_pixels=100).pixels.shape == (28, 28, 3)
    assert decode_error(data, max_pixels=99).kind == "TooManyPixels"


# --- orientation and modes ---------------------------------------------------------------------


def _two_halves_jpeg(encode: Encoder, orientation: int | None) -> bytes:
    """20 wide x 10 high: left half red, right half blue."""
    array = np.zeros((10, 20, 3), dtype=np.uint8)
    array[:, :10] = (255, 0, 0)
    array[:, 10:] = (0, 0, 255)
    options: dict[str, object] = {"quality": 95}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    return encode(Image.fromarray(array), "JPEG", **options)


def test_exif_orientation_is_applied(encode: Encoder) -> None:
    decoded = decode(_two_halves_jpeg(encode, 6), size=None)
    # Orientation 6: the stored 20x10 image is shown rotated 90 degrees clockwise (10 x 20),
    # so the stored left (red) half becomes the top and the right (blue) half the bottom.
    assert decoded.pixels.shape == (20, 10, 3)
    top, bottom = decoded.pixels[:8].reshape(-1, 3), decoded.pixels[12:].reshape(-1, 3)
    assert top[:, 0].mean() > 200 and top[:, 2].mean() < 60
    assert bottom[:, 2].mean() > 200 and bottom[:, 0].mean() < 60


def test_without_exif_orientation_the_image_is_not_rotated(encode: Encoder) -> None:
    decoded = decode(_two_halves_jpeg(encode, None), size=None)
    assert decoded.pixels.shape == (10, 20, 3)
    assert decoded.pixels[:, :8, 0].mean() > 200


def test_exif_orientation_with_a_model_size(encode: Encoder) -> None:
    decoded = decode(_two_halves_jpeg(encode, 6), mode="L", size=(28, 28))
    assert decoded.pixels.shape == (28, 28, 1)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_rgba_is_composited_not_failed(encode: Encoder, mode: str) -> None:
    array = np.zeros((10, 20, 4), dtype=np.uint8)
    array[:, :10] = (255, 0, 0, 255)  # opaque red
    array[:, 10:] = (0, 255, 0, 0)  # fully transparent green
    decoded = decode(encode(Image.fromarray(array, "RGBA"), "PNG"), mode=mode, size=None)
    channels = 1 if mode == "L" else 3
    assert decoded.pixels.shape == (10, 20, channels)
    opaque, transparent = decoded.pixels[:, :10], decoded.pixels[:, 10:]
    if mode == "RGB":
        assert (opaque.reshape(-1, 3) == (255, 0, 0)).all()
        # the hidden colour of transparent pixels must not leak through
        assert (transparent[..., 1] < 128).all()
    else:
        assert abs(int(opaque.mean()) - 76) <= 2  # luma of pure red
        assert (transparent < 128).all()
    assert len(np.unique(transparent.reshape(-1, channels), axis=0)) == 1


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_palette_with_transparency(encode: Encoder, fmt: str, mode: str) -> None:
    image = Image.new("P", (12, 6), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    image.paste(1, (6, 0, 12, 6))  # right half: palette index 1 (green), left: index 0 (red)
    decoded = decode(encode(image, fmt, transparency=0), mode=mode, size=None)
    channels = 1 if mode == "L" else 3
    assert decoded.pixels.shape == (6, 12, channels)
    if mode == "RGB":
        assert (decoded.pixels[:, 6:].reshape(-1, 3) == (0, 255, 0)).all()
        assert (decoded.pixels[:, :6, 0] < 128).all()  # transparent red must not show


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_cmyk_converts(encode: Encoder, fmt: str, mode: str) -> None:
    data = encode(solid("CMYK", (12, 8), (0, 255, 0, 0)), fmt)  # magenta
    decoded = decode(data, mode=mode, size=None)
    assert decoded.pixels.shape == (8, 12, 1 if mode == "L" else 3)
    if mode == "RGB":
        np.testing.assert_allclose(
            decoded.pixels.reshape(-1, 3).mean(axis=0), (255, 0, 255), atol=20
        )


def _sixteen_bit_gradient() -> Image.Image:
    values = np.linspace(0, 60000, 20 * 30).astype("<u2").reshape(20, 30)
    image = Image.new("I;16", (30, 20))
    image.frombytes(values.tobytes())
    return image


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_sixteen_bit_is_rescaled_not_clipped(encode: Encoder, fmt: str, mode: str) -> None:
    decoded = decode(encode(_sixteen_bit_gradient(), fmt), mode=mode, size=None)
    assert decoded.pixels.shape == (20, 30, 1 if mode == "L" else 3)
    grey = decoded.pixels[..., 0].astype(int)
    # a plain 16 -> 8 bit clip would make almost every pixel 255
    assert grey.min() == 0
    assert grey.max() == 255
    assert 100 < grey.mean() < 155
    flat = grey.reshape(-1)
    assert (np.diff(flat) >= 0).all(), "the gradient must stay monotonic"


def test_one_bit_image_converts(encode: Encoder) -> None:
    image = Image.new("1", (8, 8), 0)
    image.paste(1, (0, 0, 4, 8))
    decoded = decode(encode(image, "PNG"), mode="L", size=None)
    assert decoded.pixels[:, :4].min() == 255
    assert decoded.pixels[:, 4:].max() == 0


# --- decoding-time bombs and limits that are not in the pixel count ----------------------------

BOGUS_SCAN = b"\xff\xda\x00\x08\x01\x01\x00\x00\x00\x00"  # a DC scan with no data


def test_a_jpeg_with_too_many_scans_is_refused(encode: Encoder) -> None:
    """Each scan re-reads every block: thousands of empty scans take minutes to decode."""
    data = encode(Image.new("L", (64, 64), 9), "JPEG", progressive=True)
    error = decode_error(data[:-2] + BOGUS_SCAN * MAX_JPEG_SCANS + b"\xff\xd9")
    assert error.kind == "TooComplex"
    assert f"limit of {MAX_JPEG_SCANS}" in str(error)
    assert decode(data[:-2] + BOGUS_SCAN * 10 + b"\xff\xd9").pixels.shape == (28, 28, 3)


def test_a_long_tiff_table_is_refused_before_pillow_parses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    strips = MAX_TIFF_VALUES + 1
    tags = grey_tiff_tags(1, strips)
    tags[273] = (3, strips, lambda offset: [offset] * strips)
    tags[278] = (4, 1, [1])
    tags[279] = (3, strips, [1] * strips)
    data = tiff(tags, b"\x80", pixels_first=True)

    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("Pillow must not parse the table")

    monkeypatch.setattr(Image, "open", no_open)
    error = decode_error(data)
    assert error.kind == "TooComplex"
    assert "tag 273" in str(error)


def test_a_small_tiff_with_a_huge_tile_is_refused() -> None:
    """A 64 x 64 TIFF whose one tile is 4096 x 4096: libtiff would inflate all of it."""
    tile = zlib.compress(bytes(4096 * 4096))
    tags = grey_tiff_tags(64, 64, compression=8)
    tags.update({322: (4, 1, [4096]), 323: (4, 1, [4096]), 324: (4, 1, lambda at: [at])})
    tags[325] = (4, 1, [len(tile)])
    error = decode_error(tiff(tags, tile), max_pixels=1_000_000)
    assert error.kind == "TooManyPixels"
    assert "4096x4096" in str(error)
    assert decode(tiff(tags, tile)).original_width == 64  # under the limit it decodes


def test_rle_bmps_have_a_pixel_limit_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow decodes RLE BMPs in Python: ~0.1 us a pixel, however small the file."""
    monkeypatch.setattr(limits_module, "MAX_RLE_PIXELS", 100)
    assert decode(bmp_rle8(10, 10, b"\x0a\x07\x00\x00" * 10 + b"\x00\x01")).pixels.size
    error = decode_error(bmp_rle8(11, 10, b"\x0b\x07\x00\x00" * 10 + b"\x00\x01"))
    assert error.kind == "TooManyPixels"
    assert "RLE" in str(error)


def test_pillows_own_pixel_limit_applies_too(
    monkeypatch: pytest.MonkeyPatch, encode: Encoder
) -> None:
    data = encode(solid("L", (10, 8), 3), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60)
    with pytest.warns(Image.DecompressionBombWarning):
        error = decode_error(data, max_pixels=1_000)
    assert error.kind == "TooManyPixels"
    assert "PIL.Image.MAX_IMAGE_PIXELS=60" in str(error)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert decode(data, max_pixels=80).original_width == 10
    assert "BV_MAX_IMAGE_PIXELS=79" in str(decode_error(data, max_pixels=79))


# --- every failure is a DecodeError ------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [KeyError("k"), IndexError(), struct.error("bad"), zlib.error("z"), RuntimeError("r")],
    ids=lambda failure: type(failure).__name__,
)
def test_unexpected_decoder_exceptions_become_corrupt_image(
    monkeypatch: pytest.MonkeyPatch, encode: Encoder, failure: Exception
) -> None:
    def broken_load(self: object) -> None:
        raise failure

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken_load)
    error = decode_error(encode(solid("RGB", (8, 8), (1, 2, 3)), "PNG"))
    assert error.kind == "CorruptImage"
    assert str(failure) in str(error) or type(failure).__name__ in str(error)


def test_running_out_of_memory_is_too_many_pixels(
    monkeypatch: pytest.MonkeyPatch, encode: Encoder
) -> None:
    def no_memory(self: object) -> None:
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_memory)
    assert decode_error(encode(solid("L", (8, 8), 1), "PNG")).kind == "TooManyPixels"


def test_an_allowed_signature_with_a_broken_header_is_corrupt_not_unsupported() -> None:
    for data in (b"\x89PNG\r\n\x1a\n" + bytes(30), b"GIF89a" + bytes(4), b"II*\x00" + bytes(8)):
        error = decode_error(data)
        assert error.kind == "CorruptImage"
        assert "header is broken" in str(error)
    assert "WEBP" in str(decode_error(b"RIFF\x10\x00\x00\x00WEBPVP8Z" + bytes(8)))


@pytest.mark.parametrize(
    ("data", "described"),
    [
        ("Привет, мир! ".encode() * 100, "text"),  # a character cut by the sniffing window
        (bytes(100), "unknown binary data"),
        (b"\x00\x00\x00\x18ftypmp42" + bytes(16), "ISO media"),
        (b"\x00\x00\x01\x00" + bytes(16), "ICO"),
    ],
    ids=["long-utf8", "nul-bytes", "mp4", "ico"],
)
def test_unsupported_bytes_are_described(data: bytes, described: str) -> None:
    error = decode_error(data)
    assert error.kind == "UnsupportedFormat"
    assert described in str(error)


# --- frames, orientation and odd modes ---------------------------------------------------------


def test_only_the_first_frame_is_decoded(encode: Encoder) -> None:
    red, blue = solid("RGB", (8, 6), (255, 0, 0)), solid("RGB", (8, 6), (0, 0, 255))
    for fmt, options in (("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {})):
        data = encode(red, fmt, save_all=True, append_images=[blue, blue], **options)
        pixels = decode(data, size=None).pixels.reshape(-1, 3)
        assert pixels[:, 0].min() > 200 and pixels[:, 2].max() < 50, fmt


def test_an_mpo_decodes_its_first_picture_as_jpeg(encode: Encoder) -> None:
    """Phones write JPEGs with extra pictures (MPO); Pillow opens them as MPO."""
    first, second = solid("RGB", (16, 8), (250, 250, 250)), solid("RGB", (16, 8), (0, 0, 0))
    data = encode(first, "MPO", save_all=True, append_images=[second])
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "MPO"
    decoded = decode(data, size=None)
    assert decoded.source_format == "JPEG"
    assert decoded.pixels.min() > 200


@pytest.mark.parametrize(
    "exif",
    [
        b"Exif\x00\x00" + bytes(range(200)),
        b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x02\x00\x02\x00\x00\x006\x00\x00\x00"
        + bytes(4),
        b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x63\x00\x00\x00"
        + bytes(4),
    ],
    ids=["garbage", "orientation-as-text", "orientation-99"],
)
def test_unreadable_or_invalid_exif_shows_the_image_as_stored(encode: Encoder, exif: bytes) -> None:
    options = {"quality": 95, "exif": exif}
    array = np.zeros((10, 20, 3), dtype=np.uint8)
    array[:, :10] = (255, 0, 0)
    decoded = decode(encode(Image.fromarray(array), "JPEG", **options), size=None)
    assert decoded.pixels.shape == (10, 20, 3)
    assert decoded.pixels[:, :8, 0].mean() > 200


def test_lab_and_premultiplied_alpha_convert() -> None:
    lab = Image.new("LAB", (4, 4), (50, 0, 0))
    for mode in ("L", "RGB"):
        converted = decode_module._to_mode(lab, mode)
        assert converted.mode == mode
    premultiplied = Image.merge("La", (solid("L", (4, 4), 100), solid("L", (4, 4), 128)))
    assert decode_module._to_mode(premultiplied, "L").getextrema() == (100, 100)
