"""make bench-before: the feed of the before commit and of this checkout, side by side."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest

from tests.perf import bench_before


def _output(worker_cpu_seconds: float, forward_ms: float, rate: float = 100.0) -> str:
    """A bench run's stdout: its report, then the result line (1 s of pipeline at ``rate``)."""
    job = {
        "images_per_second": rate,
        "cpu": {"wall_seconds": 1.0, "cpu_seconds": {"bucketvision_worker": worker_cpu_seconds}},
    }
    model = {"figures": {"pipeline": {"images_per_second": rate, "jobs": [job]}}}
    model["bounds"] = {"forward_ms": forward_ms}
    result = {"bench": "bucketvision make bench", "models": {"cnn": model}}
    return "targets\n  PASS ...\n" + json.dumps(result) + "\n"


def test_a_round_reads_the_feed_from_the_bench_result_line() -> None:
    # 0.3 s of worker CPU for 100 images is 3 ms each; less the 0.5 ms forward pass.
    got = bench_before.round_result(_output(0.3, 0.5), "cnn")
    assert got == {"feed_ms": pytest.approx(2.5), "images_per_second": 100.0}


def test_a_round_without_a_result_or_a_feed_is_an_error_that_says_so() -> None:
    with pytest.raises(bench_before.BeforeError, match="no result line"):
        bench_before.round_result("Traceback ...\n", "cnn")
    with pytest.raises(bench_before.BeforeError, match="no feed for mobilenet"):
        bench_before.round_result(_output(0.3, 0.5), "mobilenet")


def _sides(before: float, now: float) -> dict[str, dict[str, Any]]:
    return {
        "before": {"feed_ms": before, "images_per_second": 250.0},
        "now": {"feed_ms": now, "images_per_second": 300.0},
    }


def test_the_verdict_is_the_ratio_of_the_means_against_the_issue_target() -> None:
    lines, passed = bench_before.summary("cnn", [_sides(3.0, 0.9), _sides(2.8, 0.9)])
    assert passed and lines[-1].split()[0] == "PASS" and "0.310 <= 0.333" in lines[-1]
    assert "2.900" in lines[-2] and "0.900" in lines[-2]  # the means
    lines, passed = bench_before.summary("cnn", [_sides(3.0, 1.0), _sides(3.0, 1.1)])
    assert not passed
    assert lines[-1].split()[0] == "FAIL" and "0.350 <= 0.333" in lines[-1]
    lines, passed = bench_before.summary("mobilenet", [_sides(5.0, 2.4)])
    assert passed and "0.480 <= 0.500" in lines[-1]


def test_a_feed_at_or_below_zero_is_not_measured_not_a_pass() -> None:
    # MobileNetV2 on a host whose speed moved: the forward subtracted above the worker's CPU.
    lines, passed = bench_before.summary("mobilenet", [_sides(2.554, -1.056), _sides(2.6, 0.8)])
    assert not passed
    assert lines[-1].split()[:2] == ["NOT", "MEASURED"] and "round 1 " in lines[-1]
    assert not any(line.split()[0] == "PASS" for line in lines[2:])


def test_a_revision_not_in_the_history_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(bench_before.BeforeError, match="not in this checkout's history"):
        bench_before.prepare_before("0" * 40, tmp_path)
    assert not (tmp_path / "before").exists()


@pytest.mark.parametrize("rounds", ["0", "-1", "two"])
def test_rounds_below_one_are_refused_with_a_usage_error(
    rounds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        bench_before.parse_args(["--rounds", rounds])
    assert stopped.value.code == 2
    assert "--rounds" in capsys.readouterr().err


def test_with_the_stand_in_a_round_reads_the_worker_cpu_of_that_job() -> None:
    output = _output(0.3, 0.5)  # the pipeline: 3 ms of worker CPU per image
    result = json.loads(output.splitlines()[-1])
    job = {"images_per_second": 200.0, "cpu": {"wall_seconds": 1.0, "cpu_seconds": {}}}
    job["cpu"]["cpu_seconds"]["bucketvision_worker"] = 0.18  # 0.9 ms per image
    stand_in = {"images_per_second": 200.0, "jobs": [job]}
    result["models"]["cnn"]["figures"]["pipeline_stand_in"] = stand_in
    output = json.dumps(result) + "\n"
    # This checkout: the stand-in's own figure; no forward pass subtracted.
    got = bench_before.round_result(output, "cnn", "pipeline_stand_in")
    assert got == {"feed_ms": pytest.approx(0.9), "images_per_second": 200.0}
    # The before, whose models were swapped for their stand-ins: its pipeline figure, whole.
    got = bench_before.round_result(output, "cnn", "pipeline")
    assert got == {"feed_ms": pytest.approx(3.0), "images_per_second": 100.0}
    with pytest.raises(bench_before.BeforeError, match="no feed for cnn"):
        bench_before.round_result(_output(0.3, 0.5), "cnn", "pipeline_stand_in")
    lines, passed = bench_before.summary("mobilenet", [_sides(3.4, 1.6)], stand_in=True)
    assert "(on the stand-in model)" in lines[0] and passed
    assert bench_before.parse_args(["--stand-in"]).stand_in
    assert not bench_before.parse_args([]).stand_in


BEFORE_MODELS = '''"""The bench's models."""

PLANS = {"cnn": None}


def build(key: str) -> object:
    return "the real model"


def main() -> None:
    print(build("cnn"))


if __name__ == "__main__":
    main()
'''


def test_the_stand_in_build_replaces_the_before_s_before_main_runs(tmp_path: Path) -> None:
    models = tmp_path / "tests" / "perf" / "bench_models.py"
    models.parent.mkdir(parents=True)
    models.write_text(BEFORE_MODELS)
    bench_before.swap_in_stand_in(tmp_path)
    text = models.read_text()
    assert text.startswith(BEFORE_MODELS.split("\n\n\nif __name__")[0])
    assert text.index(bench_before.STAND_IN_BUILD.strip()) < text.index('if __name__ == "__main__"')
    assert text.rstrip().endswith("main()")
    namespace: dict[str, object] = {"__name__": "bench_models"}
    exec(compile(text, str(models), "exec"), namespace)  # main() does not run: not __main__
    build = namespace["build"]
    assert callable(build) and "its stand-in" in inspect.getsource(build)  # the last one wins


@pytest.mark.parametrize(
    "text",
    ["", "PLANS = {}\n", BEFORE_MODELS.replace('if __name__ == "__main__":\n    main()', "")],
)
def test_a_before_whose_models_cannot_be_swapped_is_refused(tmp_path: Path, text: str) -> None:
    models = tmp_path / "tests" / "perf" / "bench_models.py"
    models.parent.mkdir(parents=True)
    models.write_text(text)
    with pytest.raises(bench_before.BeforeError, match="--stand-in cannot replace the models"):
        bench_before.swap_in_stand_in(tmp_path)
    assert models.read_text() == text
