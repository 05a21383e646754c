"""infra.outputs key mapping: one output per input key, never outside the output prefix.

Issue 14: ``a//b.jpg``, ``a/./b.jpg`` and ``a/b.jpg`` all wrote ``a/b.jpg.json``, and an
input named ``_jobs/<id>/summary`` overwrote a job's summary. A key is mapped as it is when
it is canonical; any other key is refused (``UnmappableKey``), never rewritten.
"""

from __future__ import annotations

import itertools

import pytest

from bucketvision.infra.errors import UserError
from bucketvision.infra.outputs import (
    ITEM_SUFFIXES,
    JOB_FILES_FOLDER,
    UnmappableKey,
    generated_image_key,
    item_output_key,
    job_file_key,
    mapping_error,
    relative_key,
)
from bucketvision.infra.s3 import S3Uri

INPUT = S3Uri("photos", "incoming/")
OUTPUT = S3Uri("photos", "results/")

COLLIDING = ["incoming/a//b.jpg", "incoming/a/./b.jpg", "incoming/a/b.jpg", "incoming/a/../a/b.jpg"]
NOT_CANONICAL = [
    "incoming//b.jpg",
    "incoming/a//b.jpg",
    "incoming/a/./b.jpg",
    "incoming/./b.jpg",
    "incoming/a/../b.jpg",
    "incoming/../../etc/passwd",
    "incoming/a/",
    "incoming/",
    "incoming/.",
    "incoming/..",
    "incoming/a/.",
]
RESERVED = [
    "incoming/_jobs",
    "incoming/_jobs/J1/summary",
    "incoming/_jobs/J1/summary.json",
    "incoming/_jobs/J1/manifest.jsonl",
    "incoming/_jobs/",
]
OUTSIDE = ["other/x.png", "/etc/passwd", "..", "incomingx/a.png"]


def test_keys_that_used_to_collide_no_longer_share_an_output() -> None:
    outputs = {}
    for key in COLLIDING:
        try:
            outputs[key] = item_output_key(INPUT, OUTPUT, key, ".json")
        except UnmappableKey:
            continue
    assert outputs == {"incoming/a/b.jpg": "results/a/b.jpg.json"}


@pytest.mark.parametrize("key", NOT_CANONICAL + RESERVED + OUTSIDE)
def test_a_key_that_cannot_be_mapped_as_it_is_is_refused(key: str) -> None:
    with pytest.raises(UnmappableKey) as raised:
        relative_key(INPUT, key)
    assert isinstance(raised.value, UserError)
    assert "rename" in str(raised.value)
    error = mapping_error(INPUT, key)
    assert error is not None and error[0] == "UnmappableKey" and repr(key) in error[1]


def test_the_reserved_job_folder_is_refused_and_says_so() -> None:
    error = mapping_error(INPUT, "incoming/_jobs/J1/summary")
    assert error is not None and "_jobs/" in error[1] and "reserved" in error[1]
    # An input can never produce a job file's key.
    with pytest.raises(UnmappableKey):
        item_output_key(INPUT, OUTPUT, "incoming/_jobs/J1/summary", ".json")


def test_the_reserved_review_folder_is_refused_and_says_so() -> None:
    """A job's review folder (<output>/_review/<job_id>/) is never an item's output."""
    error = mapping_error(INPUT, "incoming/_review/J1/train/3/a.png")
    assert error is not None and "_review/" in error[1] and "review" in error[1]
    with pytest.raises(UnmappableKey):
        item_output_key(INPUT, OUTPUT, "incoming/_review/J1/tasks", ".json")
    assert mapping_error(INPUT, "incoming/a/_review/x.png") is None  # only at the top


@pytest.mark.parametrize(
    "key",
    [
        "incoming/a/b.jpg",
        "incoming/_jobsx/a.png",  # only the folder itself is reserved
        "incoming/a/_jobs/J1/summary",  # ... and only at the top
        "incoming/generated/J1/000001-seed5.png",
        "incoming/.hidden.png",
        "incoming/a..b.png",
        "incoming/...",
        "incoming/\u2024\u2024/x.png",
        "incoming/..\\..\\x.png",
        "incoming/été/çà va.jpg",
    ],
)
def test_a_canonical_key_maps_as_it_is(key: str) -> None:
    assert mapping_error(INPUT, key) is None
    assert relative_key(INPUT, key) == key[len(INPUT.prefix) :]
    expected = OUTPUT.prefix + key[len(INPUT.prefix) :] + ".json"
    assert item_output_key(INPUT, OUTPUT, key, ".json") == expected


def test_a_root_input_prefix_maps_every_canonical_key() -> None:
    root = S3Uri("photos", "")
    assert relative_key(root, "a/b.jpg") == "a/b.jpg"
    with pytest.raises(UnmappableKey):
        relative_key(root, "/a/b.jpg")


ALL_KEYS = [
    "".join(parts)
    for length in range(1, 5)
    for parts in itertools.product(["a", "/", ".", "_jobs", "x.json", ".mask.png"], repeat=length)
]


def test_the_mapping_is_one_to_one_over_keys_and_suffixes() -> None:
    """Exhaustively over short keys: no two (key, suffix) pairs share an output key."""
    seen: dict[str, tuple[str, str]] = {}
    for relative, suffix in itertools.product(ALL_KEYS, ITEM_SUFFIXES):
        try:
            output = item_output_key(INPUT, OUTPUT, INPUT.prefix + relative, suffix)
        except UnmappableKey:
            continue
        assert output not in seen, (relative, suffix, seen.get(output))
        seen[output] = (relative, suffix)
        assert output.startswith(OUTPUT.prefix)
        segments = output[len(OUTPUT.prefix) :].split("/")
        assert all(segment not in ("", ".", "..") for segment in segments)
        assert segments[0] != JOB_FILES_FOLDER
    assert seen  # some were mapped


def test_an_unknown_suffix_is_refused() -> None:
    with pytest.raises(ValueError, match="ITEM_SUFFIXES"):
        item_output_key(INPUT, OUTPUT, "incoming/a.jpg", ".png")


def test_no_item_suffix_ends_another() -> None:
    """What makes different suffixes unable to collide: none is a tail of another."""
    for first, second in itertools.permutations(ITEM_SUFFIXES, 2):
        assert not first.endswith(second)


def test_no_item_output_is_a_job_file_or_a_generated_image() -> None:
    job_files = {job_file_key(OUTPUT, "J1", name) for name in ("manifest.jsonl", "summary.json")}
    generated = generated_image_key(OUTPUT, "J1", 1, 5)
    for relative in ("_jobs/J1/manifest", "_jobs/J1/summary", "generated/J1/000001-seed5"):
        for suffix in ITEM_SUFFIXES:
            try:
                output = item_output_key(INPUT, OUTPUT, INPUT.prefix + relative, suffix)
            except UnmappableKey:
                continue
            assert output not in job_files and output != generated
