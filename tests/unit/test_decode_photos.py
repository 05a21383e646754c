"""Real phone photos through decode_image: 48 MP JPEGs at their draft size, HEIC and AVIF.

The pixel cap (BV_MAX_IMAGE_PIXELS, 40 MP by default) applies to what is decoded.
A baseline JPEG is decoded at 1/2, 1/4 or 1/8 of its size, so an 8000 x 6000
photo (48 MP) is accepted for a model that needs 224 x 224 and costs 1000 x 750;
what cannot be decoded smaller (no model size, a progressive JPEG, HEIF, AVIF,
PNG...) counts whole, and a header far beyond the cap is refused. The photos are
scikit-learn's sample photos (china.jpg, flower.jpg), enlarged and re-encoded.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import warnings
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile

import bucketvision.models.decode_limits as limits_module
from bucketvision.models.decoding import DecodedImage, DecodeError, decode_image
from tests.hostile_corpus import exif_bytes, jpeg_with_size, png, with_item_size

DEFAULT_MAX_PIXELS = 40_000_000  # BV_MAX_IMAGE_PIXELS's default
PHONE = (8000, 6000)  # a 48 MP phone photo
CLASSIFIER = {"mode": "RGB", "size": (224, 224)}
DETECTOR = {"mode": "RGB", "size": (256, 256), "resize": "letterbox", "preview_size": 640}


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def decode(data: bytes, **options: object) -> DecodedImage:
    options.setdefault("max_pixels", DEFAULT_MAX_PIXELS)
    return decode_image(data, **options)  # type: ignore[arg-type]


def decode_error(data: bytes, **options: object) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode(data, **options)
    return caught.value


def difference(pixels: np.ndarray, reference: Image.Image) -> float:
    """Mean absolute difference (0-255) between ``pixels`` and ``reference`` at their size."""
    height, width = pixels.shape[:2]
    expected = np.asarray(
        reference.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    )
    return float(np.abs(pixels.astype(np.int16) - expected.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def china() -> Image.Image:
    from sklearn.datasets import load_sample_images

    return Image.fromarray(load_sample_images().images[0])  # 640 x 427, a real photo


@pytest.fixture(scope="module")
def phone_photo(china: Image.Image) -> Image.Image:
    return china.resize(PHONE, Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def phone_jpeg(phone_photo: Image.Image) -> bytes:
    """The 8000 x 6000 photo as a phone writes it: a baseline JPEG, quality 85."""
    return encode(phone_photo, "JPEG", quality=85)


@pytest.fixture
def drafts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size each JPEG is set to decode at (after ``draft``)."""
    sizes: list[tuple[int, int]] = []
    draft = JpegImageFile.draft

    def spy(self: JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> object:
        result = draft(self, mode, size)
        sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    return sizes


@pytest.fixture
def heif() -> None:
    """pillow-heif (the ``heif`` extra) is installed and its opener registered."""
    pytest.importorskip("pillow_heif")
    assert limits_module.heif_support()


# --- large JPEGs: the cap applies to the draft --------------------------------------------------


def test_a_48_mp_photo_decodes_for_a_classifier_at_the_default_cap(
    phone_jpeg: bytes, china: Image.Image, drafts: list[tuple[int, int]]
) -> None:
    start = time.perf_counter()
    decoded = decode(phone_jpeg, **CLASSIFIER)
    seconds = time.perf_counter() - start
    print(f"\n48 MP JPEG ({len(phone_jpeg) / 1e6:.1f} MB) decoded for 224 x 224 in {seconds:.3f} s")
    assert drafts == [(1000, 750)]  # 1/8 of each side: 0.75 MP decoded, not 48
    assert decoded.pixels.shape == (224, 224, 3)
    assert (decoded.original_width, decoded.original_height) == PHONE
    assert decoded.source_format == "JPEG"
    assert difference(decoded.pixels, china.resize((224, 224))) < 8  # the photo, not grey
    assert seconds < 5  # a hang guard: about 0.1 s on a shared CI core


def test_a_48_mp_photo_decodes_for_a_detector_with_its_preview(
    phone_jpeg: bytes, china: Image.Image, drafts: list[tuple[int, int]]
) -> None:
    decoded = decode(phone_jpeg, **DETECTOR)
    assert drafts == [(1000, 750)]  # covers the 640 x 480 preview as well as the 256 input
    assert decoded.pixels.shape == (256, 256, 3)
    assert decoded.preview is not None and decoded.preview.shape == (480, 640, 3)
    assert difference(decoded.preview, china) < 8
    assert (decoded.original_width, decoded.original_height) == PHONE
    placement = decoded.placement
    assert placement is not None
    assert (placement.original_width, placement.original_height) == PHONE
    # the letterboxed content, 256 x 192 under a 32-pixel band, is the whole original
    content = np.array([[0, 32, 256, 224]], dtype=np.float32)
    np.testing.assert_allclose(placement.boxes_to_original(content), [[0, 0, 8000, 6000]], atol=1)


def test_a_rotated_48_mp_photo_reports_its_displayed_size(
    phone_photo: Image.Image, china: Image.Image, drafts: list[tuple[int, int]]
) -> None:
    """EXIF orientation 6: stored 8000 x 6000, shown 6000 x 8000 (turned clockwise)."""
    data = encode(phone_photo, "JPEG", quality=85, exif=exif_bytes(6))
    decoded = decode(data, **DETECTOR)
    assert drafts == [(1000, 750)]
    assert (decoded.original_width, decoded.original_height) == (6000, 8000)
    assert decoded.preview is not None and decoded.preview.shape == (640, 480, 3)
    assert difference(decoded.preview, china.transpose(Image.Transpose.ROTATE_270)) < 8
    classified = decode(data, **CLASSIFIER)
    assert (classified.original_width, classified.original_height) == (6000, 8000)


def test_a_48_mp_cmyk_photo_decodes(phone_photo: Image.Image, china: Image.Image) -> None:
    data = encode(phone_photo.convert("CMYK"), "JPEG", quality=85)
    decoded = decode(data, **CLASSIFIER)
    assert decoded.pixels.shape == (224, 224, 3)
    assert (decoded.original_width, decoded.original_height) == PHONE
    assert difference(decoded.pixels, china.resize((224, 224))) < 12


def test_without_a_model_size_a_large_jpeg_counts_whole(phone_jpeg: bytes) -> None:
    """No resize target (size None keeps the original): nothing to draft to, the header cap."""
    error = decode_error(phone_jpeg, mode="RGB", size=None)
    assert error.kind == "TooManyPixels"
    assert "8000x6000 = 48000000 pixels" in str(error) and "BV_MAX_IMAGE_PIXELS" in str(error)
    assert decode(phone_jpeg, mode="RGB", size=None, max_pixels=48_000_000).pixels.shape == (
        6000,
        8000,
        3,
    )


def test_a_progressive_jpeg_counts_whole() -> None:
    """libjpeg holds every coefficient of a progressive JPEG, whatever size it outputs."""
    progressive = encode(Image.new("RGB", (16, 16), (90, 120, 30)), "JPEG", progressive=True)
    error = decode_error(jpeg_with_size(progressive, *PHONE), **CLASSIFIER)
    assert error.kind == "TooManyPixels"
    assert "progressive" in str(error)


def test_the_largest_jpeg_header_is_refused_with_or_without_pillows_own_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """65535 x 65535 (a JPEG frame header holds 16 bits a side) is 8192 x 8192 at 1/8: 67 MP."""
    data = jpeg_with_size(encode(Image.new("RGB", (16, 16)), "JPEG"), 65535, 65535)
    assert decode_error(data, **CLASSIFIER).kind == "TooManyPixels"  # Pillow's bomb check
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    error = decode_error(data, **CLASSIFIER)
    assert error.kind == "TooManyPixels"
    assert "still 8192x8192 = 67108864 pixels, above BV_MAX_IMAGE_PIXELS=40000000" in str(error)


def test_the_draft_reduction_is_counted_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """At most 1/8 a side: 51200 x 50000 drafts to 6400 x 6250 = 40 MP, one column more is over."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # only the service's cap
    small = encode(Image.new("L", (16, 16), 90), "JPEG")
    over = decode_error(jpeg_with_size(small, 51208, 50000), mode="L", size=(28, 28))
    assert over.kind == "TooManyPixels" and "still 6401x6250 = 40006250 pixels" in str(over)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # 16 x 16 pixels of data: libjpeg pads the rest with grey, or calls it broken
            decoded = decode(jpeg_with_size(small, 51200, 50000), mode="L", size=(28, 28))
            assert (decoded.original_width, decoded.original_height) == (51200, 50000)
        except DecodeError as error:
            assert error.kind == "CorruptImage", error


def test_a_header_of_100000_by_100000_pixels_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PNG can claim it (a JPEG cannot: see above); PNG has no draft, so it counts whole."""
    data = png(100_000, 100_000, zlib.compress(bytes(17)))
    for options in (CLASSIFIER, DETECTOR):
        assert decode_error(data, **options).kind == "TooManyPixels"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    error = decode_error(data, **CLASSIFIER)
    assert error.kind == "TooManyPixels" and "100000x100000" in str(error)


# --- HEIF (phones' HEIC) and AVIF -------------------------------------------------------------


@pytest.fixture(scope="module")
def heic(china: Image.Image) -> bytes:
    pytest.importorskip("pillow_heif")
    assert limits_module.heif_support()
    return encode(china, "HEIF", quality=85)


def test_a_heic_photo_decodes(heif: None, heic: bytes, china: Image.Image) -> None:
    decoded = decode(heic, **DETECTOR)
    assert decoded.source_format == "HEIF"
    assert (decoded.original_width, decoded.original_height) == (640, 427)
    assert decoded.preview is not None and difference(decoded.preview, china) < 8
    grey = decode(heic, mode="L", size=(28, 28))
    assert grey.pixels.shape == (28, 28, 1)


def test_a_rotated_heic_is_shown_as_displayed(heif: None, china: Image.Image) -> None:
    """pillow-heif applies the HEIF rotation (written from EXIF 6) and reports orientation 1."""
    data = encode(china, "HEIF", quality=85, exif=exif_bytes(6))
    decoded = decode(data, mode="RGB", size=None)
    assert (decoded.original_width, decoded.original_height) == (427, 640)
    assert difference(decoded.pixels, china.transpose(Image.Transpose.ROTATE_270)) < 8


def test_a_heic_counts_whole_against_the_cap(heif: None, heic: bytes) -> None:
    """HEIF cannot decode at a reduced size: its header size is the cost."""
    error = decode_error(heic, **CLASSIFIER, max_pixels=640 * 427 - 1)
    assert error.kind == "TooManyPixels"
    declared = decode_error(with_item_size(heic, 100_000, 100_000), **CLASSIFIER)
    assert declared.kind == "TooManyPixels" and "100000x100000" in str(declared)


@pytest.mark.parametrize("cut", [40, 0.5, 0.9])
def test_a_truncated_heic_is_corrupt(heif: None, heic: bytes, cut: float) -> None:
    data = heic[: int(cut if cut > 1 else len(heic) * cut)]
    assert decode_error(data, **CLASSIFIER).kind == "CorruptImage"


@pytest.fixture
def no_heif_extra(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As if pillow-heif were not installed: unimportable, and its opener not registered."""
    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    monkeypatch.setattr(limits_module, "_heif_ready", None)
    monkeypatch.delitem(Image.OPEN, "HEIF", raising=False)
    yield


def test_without_the_extra_a_heic_is_an_error_naming_it(heic: bytes, no_heif_extra: None) -> None:
    error = decode_error(heic, **CLASSIFIER)
    assert error.kind == "UnsupportedFormat"
    assert "HEIC" in str(error) and "pip install 'bucketvision[heif]'" in str(error)
    assert limits_module._heif_ready is False


def test_an_avif_photo_decodes(china: Image.Image) -> None:
    from PIL import features

    if not features.check_module("avif"):
        pytest.skip("this Pillow has no AVIF (the heif extra asks for one that has)")
    data = encode(china, "AVIF", quality=85, exif=exif_bytes(6))
    decoded = decode(data, **DETECTOR)
    assert decoded.source_format == "AVIF"
    assert (decoded.original_width, decoded.original_height) == (427, 640)
    assert decoded.preview is not None
    assert difference(decoded.preview, china.transpose(Image.Transpose.ROTATE_270)) < 8
    assert decode_error(data[: len(data) // 2], **CLASSIFIER).kind == "CorruptImage"


def test_without_avif_in_pillow_an_avif_is_an_error_naming_the_extra(
    china: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    header = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(64)
    monkeypatch.setattr(limits_module.features, "check_module", lambda name: False)
    error = decode_error(header, **CLASSIFIER)
    assert error.kind == "UnsupportedFormat"
    assert "AVIF" in str(error) and "bucketvision[heif]" in str(error)


def test_pillow_heif_is_imported_only_for_a_heif_file(heic: bytes) -> None:
    """The producer imports the decoder (report thumbnails): that must not load libheif."""
    script = (
        "import sys\n"
        "import bucketvision.producer.cli, bucketvision.models.decoding as d\n"
        "assert 'pillow_heif' not in sys.modules, 'imported too early'\n"
        "d.decode_image(sys.stdin.buffer.read(), mode='RGB', size=(8, 8), max_pixels=10**6)\n"
        "assert 'pillow_heif' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], input=heic, capture_output=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr.decode()


def test_the_item_size_patch_reaches_every_ispe_box(heif: None, heic: bytes) -> None:
    """Sanity check of the test helper: each declared size is the patched one."""
    patched = with_item_size(heic, 100_000, 100_000)
    at = patched.find(b"ispe")
    assert at != -1
    while at != -1:
        assert struct.unpack_from(">II", patched, at + 8) == (100_000, 100_000)
        at = patched.find(b"ispe", at + 4)
