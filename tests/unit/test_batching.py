"""producer.submit key selection and batching; infra.outputs key mirroring and manifest lines."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from bucketvision.infra.messages import BatchMessage, MessageError
from bucketvision.infra.outputs import (
    UnmappableKey,
    item_output_key,
    job_file_key,
    manifest_line,
    mapping_error,
    relative_key,
)
from bucketvision.infra.s3 import S3Uri
from bucketvision.infra.vocabulary import IMAGE_PATTERNS
from bucketvision.producer.submit import (
    SubmitError,
    chunk,
    default_output,
    matches,
    new_job_id,
    select_keys,
)

INPUT = S3Uri("photos", "incoming/")
OUTPUT = S3Uri("photos", "results/")

# --- chunk -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "size", "expected_sizes"),
    [
        (10, 3, [3, 3, 3, 1]),
        (9, 3, [3, 3, 3]),
        (2, 32, [2]),
        (1, 1, [1]),
        (0, 5, []),
        (65, 32, [32, 32, 1]),
    ],
)
def test_chunk_sizes(count: int, size: int, expected_sizes: list[int]) -> None:
    keys = [f"k{i}" for i in range(count)]
    batches = chunk(keys, size)
    assert [len(batch) for batch in batches] == expected_sizes
    assert [key for batch in batches for key in batch] == keys  # order kept, nothing lost


def test_chunk_returns_lists_that_are_independent_of_the_input() -> None:
    keys = ("a", "b", "c")
    batches = chunk(keys, 2)
    assert batches == [["a", "b"], ["c"]]
    assert all(isinstance(batch, list) for batch in batches)


@pytest.mark.parametrize("size", [0, -1])
def test_chunk_refuses_a_size_below_one(size: int) -> None:
    with pytest.raises(SubmitError, match="--batch-size"):
        chunk(["a"], size)


# --- select_keys -------------------------------------------------------------------------------


def selected(keys: list[str], *, exclude: S3Uri | None = OUTPUT, patterns=IMAGE_PATTERNS):
    return list(select_keys(keys, INPUT, exclude, patterns))


def test_default_patterns_take_image_suffixes_case_insensitively() -> None:
    images = [
        "incoming/a.jpg",
        "incoming/b.JPEG",
        "incoming/c.Png",
        "incoming/d.gif",
        "incoming/e.webp",
        "incoming/f.BMP",
        "incoming/g.tif",
        "incoming/h.TIFF",
        "incoming/deep/er/i.JpG",
    ]
    others = [
        "incoming/notes.txt",
        "incoming/a.jpg.json",
        "incoming/jpg",
        "incoming/a.jpgx",
        "incoming/scan.pdf",
        "incoming/vector.eps",
        "incoming/README",
    ]
    assert selected(images + others) == images


def test_folder_markers_are_skipped() -> None:
    keys = ["incoming/", "incoming/a/", "incoming/a/cat.jpg", "incoming/weird.png/"]
    assert selected(keys) == ["incoming/a/cat.jpg"]
    assert selected(keys, patterns=("*",)) == ["incoming/a/cat.jpg"]


def test_outputs_inside_the_input_are_skipped() -> None:
    inside = S3Uri("photos", "incoming/results/")
    keys = [
        "incoming/cat.jpg",
        "incoming/results/cat.jpg.mask.png",
        "incoming/results/cat.jpg.annotated.png",
        "incoming/results-old/dog.png",
    ]
    assert selected(keys, exclude=inside) == ["incoming/cat.jpg", "incoming/results-old/dog.png"]
    # --include '*' still never picks up our own outputs
    assert "incoming/results/cat.jpg.mask.png" not in selected(
        keys, exclude=inside, patterns=("*",)
    )


def test_an_output_prefix_in_another_bucket_excludes_nothing() -> None:
    keys = ["incoming/results/cat.png"]
    assert selected(keys, exclude=S3Uri("elsewhere", "incoming/results/")) == keys
    assert selected(keys, exclude=None) == keys


def test_default_output_of_the_bucket_root_is_excluded_from_the_input() -> None:
    root = S3Uri("photos", "")
    output = default_output(root)
    keys = ["cat.jpg", "results/cat.jpg.mask.png", "a/dog.png"]
    assert list(select_keys(keys, root, output, IMAGE_PATTERNS)) == ["cat.jpg", "a/dog.png"]


def test_include_star_takes_every_object() -> None:
    keys = ["incoming/notes.txt", "incoming/a.jpg", "incoming/raw/IMG_0001", "incoming/x.heic"]
    assert selected(keys, patterns=("*",)) == keys


def test_custom_globs_match_relative_to_the_input_prefix() -> None:
    keys = ["incoming/2026/a.png", "incoming/2025/b.png", "incoming/2026/c.jpg", "incoming/d.RAW"]
    assert selected(keys, patterns=("2026/*.png",)) == ["incoming/2026/a.png"]
    assert selected(keys, patterns=("*.raw", "2025/*")) == ["incoming/2025/b.png", "incoming/d.RAW"]
    # the input prefix itself is not part of what the pattern sees
    assert selected(keys, patterns=("incoming/*",)) == []


def test_matches_is_case_insensitive_both_ways() -> None:
    assert matches("A/B.PNG", ("*.png",))
    assert matches("a/b.png", ("*.PNG",))
    assert not matches("a/b.png", ("*.jpg",))
    assert not matches("a/b.png", ())


def test_select_keys_is_lazy_and_keeps_listing_order() -> None:
    def listing():
        yield "incoming/z.png"
        yield "incoming/a.png"
        raise AssertionError("listed further than needed")

    iterator = select_keys(listing(), INPUT, OUTPUT, IMAGE_PATTERNS)
    assert next(iterator) == "incoming/z.png"
    assert next(iterator) == "incoming/a.png"


# --- default_output, job ids, batch messages ---------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("photos/2026/", "s3://b/results/photos/2026/"), ("", "s3://b/results/")],
)
def test_default_output(prefix: str, expected: str) -> None:
    output = default_output(S3Uri("b", prefix))
    assert output.bucket == "b"
    assert str(output) == expected


def test_new_job_id_is_sortable_and_unique() -> None:
    ids = {new_job_id() for _ in range(200)}
    assert len(ids) == 200
    for job_id in ids:
        assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", job_id)


def test_batch_message_json_has_the_documented_fields() -> None:
    message = BatchMessage("J1", 0, "classify", ("incoming/a.png",), INPUT, OUTPUT, "digits@v2")
    body = replace(message, item_outputs=False, enqueued_at=1.5).to_json()
    assert body == {
        "version": 1,
        "job_id": "J1",
        "batch": 0,
        "task": "classify",
        "keys": ["incoming/a.png"],
        "input": "s3://photos/incoming/",
        "output": "s3://photos/results/",
        "model": "digits@v2",
        "item_outputs": False,
        "enqueued_at": 1.5,
    }


def test_batch_messages_survive_json_and_parse_in_the_worker() -> None:
    """The producer/worker contract: JSON on the wire, parsed by BatchMessage.from_json."""
    message = BatchMessage("J2", 0, "detect", ("incoming/a.png",), INPUT, OUTPUT, "m@v1")
    parsed = BatchMessage.from_json(json.loads(json.dumps(message.to_json())))
    assert parsed == message
    assert parsed.keys == ("incoming/a.png",)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {
            "job_id": "J",
            "batch": "x",
            "task": "classify",
            "keys": [],
            "input": "s3://b/",
            "output": "s3://b/r/",
            "model": "m@v1",
        },
        {
            "job_id": "J",
            "batch": 0,
            "task": "classify",
            "keys": [],
            "input": "http://b/",
            "output": "s3://b/r/",
            "model": "m@v1",
        },
    ],
)
def test_malformed_batch_messages_are_message_errors(body: dict) -> None:
    with pytest.raises(MessageError, match="malformed batch message"):
        BatchMessage.from_json(body)


# --- output keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "suffix", "expected"),
    [
        ("incoming/a/cat.jpg", ".json", "results/a/cat.jpg.json"),
        ("incoming/cat.jpg", ".mask.png", "results/cat.jpg.mask.png"),
        ("incoming/a/b/c/d.png", ".annotated.png", "results/a/b/c/d.png.annotated.png"),
        ("incoming/été/çà va.jpg", ".json", "results/été/çà va.jpg.json"),
    ],
)
def test_item_output_key_mirrors_the_input_key(key: str, suffix: str, expected: str) -> None:
    assert item_output_key(INPUT, OUTPUT, key, suffix) == expected


def test_item_output_key_is_idempotent_and_distinct_per_item() -> None:
    first = item_output_key(INPUT, OUTPUT, "incoming/a/cat.jpg", ".json")
    assert first == item_output_key(INPUT, OUTPUT, "incoming/a/cat.jpg", ".json")
    assert first != item_output_key(INPUT, OUTPUT, "incoming/b/cat.jpg", ".json")
    assert first != item_output_key(INPUT, OUTPUT, "incoming/a/cat.jpg", ".mask.png")


def test_item_output_key_with_a_root_output_and_an_unslashed_output_prefix() -> None:
    assert item_output_key(INPUT, S3Uri("b", ""), "incoming/a.png", ".json") == "a.png.json"
    assert item_output_key(INPUT, S3Uri("b", "out"), "incoming/a.png", ".json") == "out/a.png.json"


HOSTILE_KEYS = [
    "incoming/../../etc/passwd",
    "incoming/a/../../../b.jpg",
    "incoming/./a/./b.jpg",
    "incoming//a//b.jpg",
    "/etc/passwd",
    "../outside.png",
    "incoming/..",
    "incoming/.",
    "incoming/",
    "..",
    "./../x.png",
    "incoming/../results/../../x.png",
    "incoming/\u2024\u2024/x.png",  # one dot leaders, not dots
    "incoming/\uff0e\uff0e/x.png",  # fullwidth full stops
    "incoming/\u202egnp.exe",  # right-to-left override
    "incoming/a\u0000b.png",
    "incoming/..\\..\\x.png",
    "other-prefix/x.png",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
@pytest.mark.parametrize("suffix", [".json", ".mask.png"])
def test_item_output_key_never_escapes_the_output_prefix(key: str, suffix: str) -> None:
    """A hostile key maps as it is, inside the output prefix, or is refused (UnmappableKey)."""
    try:
        output_key = item_output_key(INPUT, OUTPUT, key, suffix)
    except UnmappableKey:
        assert mapping_error(INPUT, key) is not None
        return
    assert output_key.startswith(OUTPUT.prefix)
    relative = output_key[len(OUTPUT.prefix) :]
    segments = relative.split("/")
    assert all(segment not in ("", ".", "..") for segment in segments), output_key
    assert relative == key[len(INPUT.prefix) :] + suffix


def test_which_hostile_keys_are_refused() -> None:
    mapped = [key for key in HOSTILE_KEYS if mapping_error(INPUT, key) is None]
    assert mapped == [
        "incoming/\u2024\u2024/x.png",
        "incoming/\uff0e\uff0e/x.png",
        "incoming/\u202egnp.exe",
        "incoming/a\u0000b.png",
        "incoming/..\\..\\x.png",
    ]


def test_relative_key_of_a_key_outside_the_input_is_refused() -> None:
    with pytest.raises(UnmappableKey, match="not under the input prefix"):
        relative_key(INPUT, "other/x.png")
    assert relative_key(INPUT, "incoming/a/b.png") == "a/b.png"


def test_job_file_key() -> None:
    assert job_file_key(OUTPUT, "J1", "manifest.jsonl") == "results/_jobs/J1/manifest.jsonl"
    assert job_file_key(OUTPUT, "J1", "summary.json") == "results/_jobs/J1/summary.json"


# --- manifest lines ----------------------------------------------------------------------------

MANIFEST_FIELDS = {"key", "status", "output", "result", "error", "model", "latency_ms", "attempts"}


def test_manifest_line_ok_has_exactly_the_design_fields() -> None:
    line = manifest_line(
        "incoming/a.png",
        status="ok",
        output="s3://photos/results/a.png.json",
        result={"label": "7", "score": 0.9},
        error=None,
        model="digits@v1",
        latency_ms=12.34567,
        attempts=1,
    )
    assert set(line) == MANIFEST_FIELDS
    assert line["error"] is None
    assert line["latency_ms"] == 12.346
    assert line["result"] == {"label": "7", "score": 0.9}
    assert json.loads(json.dumps(line)) == line


def test_manifest_line_error_has_type_and_message() -> None:
    line = manifest_line(
        "incoming/b.png",
        status="error",
        output=None,
        result=None,
        error=("UnsupportedFormat", "not a supported image"),
        model="digits@v1",
        latency_ms=1,
        attempts=2,
    )
    assert set(line) == MANIFEST_FIELDS
    assert line["status"] == "error"
    assert line["error"] == {"type": "UnsupportedFormat", "message": "not a supported image"}
    assert line["attempts"] == 2
    assert line["output"] is None and line["result"] is None
