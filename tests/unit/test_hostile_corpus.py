"""Every file of the hostile corpus through decode_image: a result or a DecodeError, as expected.

Each file is decoded the way the served models ask for it: "L" 28 x 28 stretched
(the digits classifier) and "RGB" 224 x 224 letterboxed with a preview (detection
and segmentation). ``pytest -s`` prints the tally and the slowest decodes.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image, PdfImagePlugin

from bucketvision.infra.vocabulary import ALLOWED_FORMATS
from bucketvision.models.decoding import DecodedImage, DecodeError, decode_image
from tests.hostile_corpus import CORNERS, CorpusFile, categories, hostile_corpus

MAX_PIXELS = 40_000_000  # BV_MAX_IMAGE_PIXELS's default
HANG_GUARD_SECONDS = 20.0  # a hang guard, not a benchmark: every decode measured is < 1 s
CONFIGS: dict[str, dict[str, Any]] = {
    "classify-L-28": {"mode": "L", "size": (28, 28)},
    "detect-RGB-224": {
        "mode": "RGB",
        "size": (224, 224),
        "resize": "letterbox",
        "preview_size": 512,
    },
}
REQUIRED_CATEGORIES = {  # category -> at least this many files
    "valid": 10,
    "truncated": 36,
    "corrupt": 24,
    "empty": 6,
    "bomb": 8,
    "huge-dimensions": 12,
    "decode-cost": 8,
    "mode": 20,
    "orientation": 8,
    "animated": 4,
    "tiny": 6,
    "encoding": 8,
    "not-an-image": 20,
    "odd-name": 20,
}


@dataclass
class Outcome:
    """What one decode gave: a DecodedImage, a DecodeError, or anything else (a crash)."""

    decoded: DecodedImage | None
    error: BaseException | None
    seconds: float

    @property
    def status(self) -> str:
        if self.decoded is not None:
            return "ok"
        return "error" if isinstance(self.error, DecodeError) else "crash"


def decode_all(files: list[CorpusFile], config: dict[str, Any]) -> dict[str, Outcome]:
    outcomes = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about some hostile files; not the subject
        for file in files:
            start = time.perf_counter()
            try:
                decoded = decode_image(file.data, max_pixels=MAX_PIXELS, **config)
                outcome = Outcome(decoded, None, 0.0)
            except Exception as error:
                outcome = Outcome(None, error, 0.0)
            outcome.seconds = time.perf_counter() - start
            outcomes[file.name] = outcome
    return outcomes


@pytest.fixture(scope="module")
def corpus() -> list[CorpusFile]:
    return hostile_corpus()


@pytest.fixture(scope="module")
def outcomes(corpus: list[CorpusFile]) -> dict[str, dict[str, Outcome]]:
    """config name -> file name -> outcome, decoded once for the module."""
    return {name: decode_all(corpus, config) for name, config in CONFIGS.items()}


# --- the corpus itself -------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_the_corpus_is_large_varied_small_and_deterministic(corpus: list[CorpusFile]) -> None:
    start = time.perf_counter()
    again = hostile_corpus()
    seconds = time.perf_counter() - start
    counts = categories(corpus)
    total_bytes = sum(len(file.data) for file in corpus)
    print(f"\ncorpus: {len(corpus)} files, {total_bytes / 1e6:.1f} MB, built in {seconds:.2f} s")
    print("categories: " + ", ".join(f"{name}={count}" for name, count in sorted(counts.items())))
    assert len(corpus) >= 200
    for category, minimum in REQUIRED_CATEGORIES.items():
        assert counts[category] >= minimum, (category, counts[category])
    assert total_bytes < 8_000_000
    assert [(f.name, f.data) for f in again] == [(f.name, f.data) for f in corpus]
    other_seed = {f.name: f.data for f in hostile_corpus(seed=1)}
    assert other_seed.keys() == {f.name for f in corpus}
    assert any(other_seed[f.name] != f.data for f in corpus), "the seed changes the noise"
    for file in corpus:
        assert file.expect in ("ok", "error", "either"), file.name
        assert file.kind is None or file.expect == "error", file.name
        assert file.corner in (None, *CORNERS), file.name
        assert file.name and not file.name.startswith("/") and len(file.name.encode()) < 900


@pytest.mark.timeout(60)
def test_every_allowed_format_is_truncated_bombed_and_tiny(corpus: list[CorpusFile]) -> None:
    by_category: dict[str, set[str]] = {}
    for file in corpus:
        extension = file.name.rsplit(".", 1)[-1].lower()
        by_category.setdefault(file.category, set()).add(extension)
    for category in ("truncated", "corrupt", "huge-dimensions", "tiny"):
        assert {"jpg", "png", "gif", "webp", "bmp", "tif"} <= by_category[category], category


# --- outcomes ----------------------------------------------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_every_file_gives_a_result_or_a_decode_error(
    corpus: list[CorpusFile], outcomes: dict[str, dict[str, Outcome]], config: str
) -> None:
    results = outcomes[config]
    crashes = {
        name: f"{type(o.error).__name__}: {o.error}"
        for name, o in results.items()
        if o.status == "crash"
    }
    assert not crashes, crashes
    wrong = []
    for file in corpus:
        outcome = results[file.name]
        if file.expect != "either" and outcome.status != file.expect:
            wrong.append((file.name, file.expect, outcome.status, str(outcome.error)))
        elif file.kind and getattr(outcome.error, "kind", None) != file.kind:
            wrong.append((file.name, file.kind, getattr(outcome.error, "kind", None)))
    assert not wrong, wrong
    tally = Counter(outcome.status for outcome in results.values())
    kinds = Counter(o.error.kind for o in results.values() if isinstance(o.error, DecodeError))
    print(
        f"\n{config}: tried={len(results)} ok={tally['ok']} errors={tally['error']} "
        f"crashes={tally['crash']} ({', '.join(f'{k}={n}' for k, n in sorted(kinds.items()))})"
    )


@pytest.mark.timeout(300)
def test_error_messages_are_clear(
    corpus: list[CorpusFile], outcomes: dict[str, dict[str, Outcome]]
) -> None:
    for results in outcomes.values():
        for file in corpus:
            error = results[file.name].error
            if error is None:
                continue
            message = str(error)
            assert isinstance(error, DecodeError) and error.kind, file.name
            assert len(message) > 15 and message[0].islower(), (file.name, message)
            if file.words:
                assert file.words in message, (file.name, message)


@pytest.mark.timeout(300)
def test_decoded_images_have_the_model_shape_and_the_original_size(
    corpus: list[CorpusFile], outcomes: dict[str, dict[str, Outcome]]
) -> None:
    for config_name, config in CONFIGS.items():
        width, height = config["size"]
        channels = 1 if config["mode"] == "L" else 3
        for file in corpus:
            decoded = outcomes[config_name][file.name].decoded
            if decoded is None:
                continue
            assert decoded.pixels.shape == (height, width, channels), file.name
            assert decoded.pixels.dtype == np.uint8, file.name
            assert decoded.source_format in ALLOWED_FORMATS, file.name
            if file.format:
                assert decoded.source_format == file.format, (file.name, decoded.source_format)
            if file.size:
                original = (decoded.original_width, decoded.original_height)
                assert original == file.size, (file.name, original)
            if config.get("preview_size"):
                assert decoded.preview is not None and decoded.preview.shape[2] == 3
                assert max(decoded.preview.shape[:2]) <= config["preview_size"]


def quadrant_means(pixels: np.ndarray) -> dict[str, float]:
    """Mean brightness of the middle of each quadrant (the edges blur when resized)."""
    grey = pixels.astype(np.float64).mean(axis=2) if pixels.ndim == 3 else pixels
    height, width = grey.shape[:2]
    h, w = height // 2, width // 2
    inner_h, inner_w = max(1, h // 4), max(1, w // 4)

    def middle(top: int, left: int) -> float:
        return float(
            grey[top + inner_h : top + h - inner_h, left + inner_w : left + w - inner_w].mean()
        )

    return {
        "top-left": middle(0, 0),
        "top-right": middle(0, width - w),
        "bottom-left": middle(height - h, 0),
        "bottom-right": middle(height - h, width - w),
    }


@pytest.mark.timeout(300)
def test_exif_orientation_and_first_frames_are_the_displayed_image(
    corpus: list[CorpusFile], outcomes: dict[str, dict[str, Outcome]]
) -> None:
    """The white quadrant lands where it is displayed, in the model input and the preview."""
    checked = 0
    for file in corpus:
        if file.corner is None:
            continue
        classify = outcomes["classify-L-28"][file.name].decoded
        detect = outcomes["detect-RGB-224"][file.name].decoded
        assert classify is not None and detect is not None, file.name
        for label, pixels in (("L 28x28", classify.pixels), ("preview", detect.preview)):
            assert pixels is not None
            means = quadrant_means(pixels)
            white = means.pop(file.corner)
            assert white > 190, (file.name, label, file.corner, white, means)
            assert max(means.values()) < 65, (file.name, label, file.corner, white, means)
        if file.size:  # the preview is the original as displayed, at most 512 pixels long
            assert detect.preview is not None
            preview_size = detect.preview.shape[1::-1]
            if max(file.size) <= 512:
                assert preview_size == file.size, (file.name, preview_size)
            assert (file.size[0] >= file.size[1]) == (preview_size[0] >= preview_size[1])
        checked += 1
    orientation_files = [f for f in corpus if f.category == "orientation"]
    assert checked >= len(orientation_files) + 20
    print(f"\norientation/first-frame checks: {checked} files")


@pytest.mark.timeout(300)
def test_decode_time_is_bounded(outcomes: dict[str, dict[str, Outcome]]) -> None:
    """A hang guard over the whole corpus; the bound is generous on purpose (shared CI)."""
    timings = sorted(
        (
            (outcome.seconds, config, name)
            for config, results in outcomes.items()
            for name, outcome in results.items()
        ),
        reverse=True,
    )
    print(
        "\nslowest decodes: " + "; ".join(f"{s * 1000:.0f} ms {n} ({c})" for s, c, n in timings[:5])
    )
    slowest, config, name = timings[0]
    assert slowest < HANG_GUARD_SECONDS, (name, config, slowest)


# --- no external interpreter, only allowed plugins ---------------------------------------------


@pytest.fixture
def nothing_external(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail on any subprocess, Ghostscript call, or a non-allowed Pillow plugin being tried."""
    calls: list[str] = []

    def forbidden(what: str) -> Any:
        def refuse(*args: object, **kwargs: object) -> None:
            calls.append(what)
            raise AssertionError(f"{what} was called while decoding")

        return refuse

    for name in ("Popen", "run", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, forbidden(f"subprocess.{name}"))
    for name in ("system", "popen", "posix_spawn", "posix_spawnp", "fork", "execv", "execvp"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, forbidden(f"os.{name}"))
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", forbidden("Ghostscript"))
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", forbidden("EpsImageFile._open"))
    Image.init()
    for fmt, (_factory, accept) in list(Image.OPEN.items()):
        if fmt not in ALLOWED_FORMATS:
            monkeypatch.setitem(Image.OPEN, fmt, (forbidden(f"the {fmt} plugin"), accept))
    return calls


@pytest.mark.timeout(60)
def test_eps_and_pdf_are_not_among_the_formats_tried() -> None:
    """The plugins Image.open may try are those of ALLOWED_FORMATS: no EPS, PDF or PostScript."""
    Image.init()
    assert not {"EPS", "PDF", "PS"} & set(ALLOWED_FORMATS)
    # HEIF has a plugin only with the heif extra installed; the decoder skips it otherwise.
    modules = {Image.OPEN[fmt][0].__module__ for fmt in ALLOWED_FORMATS if fmt in Image.OPEN}
    assert modules.isdisjoint({EpsImagePlugin.__name__, PdfImagePlugin.__name__})


@pytest.mark.timeout(60)
def test_the_spies_would_catch_an_eps_decode(
    corpus: list[CorpusFile], nothing_external: list[str]
) -> None:
    """Sanity check: without the allow-list, Pillow would try the EPS plugin."""
    eps = next(f for f in corpus if f.name == "not-an-image/vector.jpg")
    with pytest.raises(AssertionError):
        Image.open(io.BytesIO(eps.data))
    assert "the EPS plugin" in nothing_external


@pytest.mark.timeout(300)
def test_no_external_program_or_other_plugin_runs_over_the_corpus(
    corpus: list[CorpusFile], nothing_external: list[str]
) -> None:
    """EPS, PostScript and PDF named .jpg/.png (and the rest) never reach Ghostscript."""
    postscript = [f for f in corpus if f.words in ("EPS", "PDF")]
    assert len(postscript) >= 6
    assert {f.name.rsplit(".", 1)[-1] for f in postscript} >= {"jpg", "png"}
    for file in postscript:
        with pytest.raises(DecodeError) as caught:
            decode_image(file.data, mode="RGB", size=(28, 28), max_pixels=MAX_PIXELS)
        assert caught.value.kind == "UnsupportedFormat", file.name
    for config in CONFIGS.values():
        results = decode_all(corpus, config)
        assert all(outcome.status != "crash" for outcome in results.values())
    assert nothing_external == []
