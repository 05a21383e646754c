"""The feed side by side with the code before issue 17: ``make bench-before``.

``make bench`` judges the feed (the worker's CPU per image outside the forward pass,
:mod:`tests.perf.bench_budget`) against ``bench_report.FEED_BEFORE_MS``: a before measured
on one host on one evening. The same before code has read 2.66 to 3.81 ms on this
development machine's hosts, and the code after it 0.74 to 1.25 ms, so a constant cannot
give that target a stable verdict.

This measures both on the same host in the same hour: the before commit, checked out in a
git worktree with its own virtual environment (installed by its own Makefile), and this
checkout run alternately, round after round, each as ``python -m tests.perf.bench --only
MODEL --skip peers,ray,enqueue,rss --repeats 1 --s3 URL`` against a fresh S3 server of its
own (moto behind cheroot, its threads placed as this bench's: the before's bench served
moto through werkzeug, which closes every connection). A server that has served earlier
rounds is slower and costs the client more: against one long-lived server, tonight's three
rounds of this checkout read 0.78, 0.90 and 1.09 ms, in that order. It prints every round's feed and
throughput, the means, their ratio, and the verdict against the issue's target (cnn at
most 1/3 of before, MobileNetV2 at most 1/2). A round of the digits model takes about 1.5 minutes,
of MobileNetV2 about 3; the before's install about a minute with pip's cache.

With ``--stand-in`` each side's feed is measured on the model's stand-in instead of by
difference: the worker's CPU per image of the same job on a model with the same input,
preprocess and labels whose forward pass costs next to nothing (global average pooling and
one dense layer; ``bench_models.build_stand_in``). On MobileNetV2 the difference is of two
figures near 20-30 ms and moved by more than the whole feed from run to run; the stand-in's
is one figure of one run. This checkout's bench runs that job itself ("pipeline, stand-in
model"); the before's bench has no stand-in, so its worktree's ``bench_models.build`` is
replaced by one that builds the stand-in for every model (:data:`STAND_IN_BUILD`, inserted
into its ``tests/perf/bench_models.py`` ahead of ``main()``, with this checkout's
``build_stand_in``), and its "pipeline" figure is then that job.

Run: ``make bench-before`` (``ARGS='--only mobilenet --rounds 2 --stand-in'``). It needs the
git history (a clone, not an archive) and the package registry for the before's install.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import statistics
import subprocess  # nosec B404: git, make and the bench, argv of our own
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bucketvision.infra.local_services import start_moto
from bucketvision.producer.cli_support import whole_number
from tests.helpers import ROOT
from tests.perf.bench import CORPORA
from tests.perf.bench_budget import feed_measured, feed_ms, worker_ms
from tests.perf.bench_isolation import place_server
from tests.perf.bench_models import build_stand_in
from tests.perf.bench_report import FEED_TARGETS
from tests.perf.bench_service import say

BEFORE = "1e8a461"  # main when issue 17 was filed: boto3 for every request, one item at a time
ROUND_ARGS = ["--skip", "peers,ray,enqueue,rss", "--repeats", "1"]
_MAIN_GUARD = 'if __name__ == "__main__":'
STAND_IN_BUILD = f"""

{inspect.getsource(build_stand_in)}

def build(key: str) -> object:  # make bench-before --stand-in: every model is its stand-in
    return build_stand_in(PLANS[key].input_shape, len(LABELS))
"""


class BeforeError(RuntimeError):
    """A side-by-side run that could not be made; the message says what to do."""


def _run(command: Sequence[str], cwd: Path, log: Path, what: str) -> str:
    """Run ``command`` in ``cwd``, its output to ``log``; its stdout, or BeforeError."""
    with log.open("w") as handle:
        done = subprocess.run(  # nosec B603: a fixed argv of our own, no shell
            list(command), cwd=cwd, stdout=subprocess.PIPE, stderr=handle, text=True, check=False
        )
        handle.write(done.stdout)
    if done.returncode != 0:
        raise BeforeError(f"{what} failed (exit {done.returncode}); its output: {log}")
    return done.stdout


def swap_in_stand_in(checkout: Path) -> None:
    """Make the bench of ``checkout`` build every model as its stand-in (see ``--stand-in``)."""
    models = checkout / "tests" / "perf" / "bench_models.py"
    text = models.read_text() if models.exists() else ""
    head, main_guard, tail = text.rpartition(_MAIN_GUARD)
    if not main_guard or not all(name in head for name in ("def build(key: str)", "PLANS")):
        raise BeforeError(
            f"--stand-in cannot replace the models of {models}: it has no build(key) over "
            "PLANS run by main(); measure that commit by difference (without --stand-in)"
        )
    models.write_text(head.rstrip("\n") + "\n" + STAND_IN_BUILD + "\n\n" + main_guard + tail)


def prepare_before(revision: str, work: Path) -> Path:
    """A worktree of ``revision`` under ``work`` with its virtual environment installed."""
    found = subprocess.run(  # nosec B603 B607: git from PATH, argv of our own
        ["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        raise BeforeError(
            f"commit {revision} is not in this checkout's history: run this from a git clone "
            "of bucketvision (git fetch --unshallow in a shallow one), or give --before REV"
        )
    checkout = work / "before"
    _run(
        ["git", "worktree", "add", "--detach", "--force", str(checkout), revision],
        ROOT,
        work / "worktree.log",
        f"git worktree add {revision}",
    )
    say(f"installing {revision}'s virtual environment in {checkout} (make install) ...")
    _run(["make", "install"], checkout, work / "before-install.log", "the before's make install")
    return checkout


def remove_before(checkout: Path) -> None:
    """Remove the worktree (its virtual environment with it)."""
    subprocess.run(  # nosec B603 B607: git from PATH, argv of our own
        ["git", "worktree", "remove", "--force", str(checkout)], cwd=ROOT, check=False
    )
    shutil.rmtree(checkout, ignore_errors=True)


def round_result(output: str, model: str, stand_in: str | None = None) -> dict[str, Any]:
    """The feed (ms) and img/s of ``model`` from one bench run's output: by difference, or
    with ``stand_in`` the worker's CPU per image of that figure (the job on the stand-in)."""
    lines = [line for line in output.splitlines() if line.startswith('{"bench"')]
    if not lines:
        raise BeforeError("the bench printed no result line")
    figures = json.loads(lines[-1]).get("models", {}).get(model)
    feed = None
    if figures:
        feed = worker_ms(figures["figures"], stand_in) if stand_in else feed_ms(figures)
    if feed is None:
        raise BeforeError(f"the bench's result has no feed for {model}")
    figure = figures["figures"].get(stand_in or "pipeline", {})
    return {"feed_ms": feed, "images_per_second": figure.get("images_per_second")}


def run_round(
    checkout: Path, model: str, s3_url: str, log: Path, stand_in: str | None = None
) -> dict[str, Any]:
    """One bench round of ``model`` in ``checkout`` (its own .venv) against ``s3_url``."""
    python = checkout / ".venv" / "bin" / "python"
    command = [str(python), "-m", "tests.perf.bench", "--only", model, *ROUND_ARGS]
    output = _run([*command, "--s3", s3_url], checkout, log, f"the bench in {checkout}")
    return round_result(output, model, stand_in)


def summary(
    model: str, rounds: list[dict[str, dict[str, Any]]], *, stand_in: bool = False
) -> tuple[list[str], bool]:
    """The table of rounds, the means and their ratio, and whether the target holds."""
    how = "on the stand-in model" if stand_in else "by difference"
    lines = [
        f"{model}: feed CPU per image ({how}), before vs now, same host, a fresh S3 server each"
    ]
    lines.append(
        f"  {'round':>5} {'before ms':>10} {'now ms':>8} {'before img/s':>13} {'now img/s':>10}"
    )
    for number, sides in enumerate(rounds, 1):
        before, now = sides["before"], sides["now"]
        lines.append(
            f"  {number:>5} {before['feed_ms']:>10.3f} {now['feed_ms']:>8.3f}"
            f" {before['images_per_second'] or 0:>13.1f} {now['images_per_second'] or 0:>10.1f}"
        )
    before_mean = statistics.mean(sides["before"]["feed_ms"] for sides in rounds)
    now_mean = statistics.mean(sides["now"]["feed_ms"] for sides in rounds)
    lines.append(f"  {'mean':>5} {before_mean:>10.3f} {now_mean:>8.3f}")
    void = [str(number) for number, sides in enumerate(rounds, 1) if _unmeasured(sides)]
    if void:  # the forward pass subtracted was measured slower than the worker ran
        lines.append(
            f"  NOT MEASURED  {model}: a feed at or below zero in round {', '.join(void)} (the"
            " compute ceiling's forward pass read above the worker's whole CPU per image: a host"
            " whose speed moved); run again"
        )
        return lines, False
    ratio, target = now_mean / before_mean, FEED_TARGETS[model]
    passed = ratio <= target
    lines.append(
        f"  {'PASS' if passed else 'FAIL'}  {model}: feed now / before (side by side)"
        f"  {ratio:.3f} <= {target:.3f}"
    )
    return lines, passed


def _unmeasured(sides: dict[str, dict[str, Any]]) -> bool:
    """Whether either side's feed of a round is at or below zero: no measurement."""
    return not all(feed_measured(sides[side]["feed_ms"]) for side in ("before", "now"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="the before commit (default %(default)s)")
    parser.add_argument("--only", choices=sorted(FEED_TARGETS), default="cnn", help="the model")
    parser.add_argument(
        "--rounds", type=whole_number(), default=3, help="before/now pairs (default 3)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir and worktree")
    parser.add_argument(
        "--stand-in",
        action="store_true",
        help="measure each side's feed on the model's stand-in, not by difference",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bv-bench-before-"))
    say(f"work dir {work} (logs; the before's worktree)")
    checkout: Path | None = None
    try:
        checkout = prepare_before(options.before, work)
        if options.stand_in:
            swap_in_stand_in(checkout)
        figure = {"before": "pipeline", "now": "pipeline_stand_in"} if options.stand_in else {}
        rounds: list[dict[str, dict[str, Any]]] = []
        for number in range(1, options.rounds + 1):
            sides: dict[str, dict[str, Any]] = {}
            for side, where in (("before", checkout), ("now", ROOT)):
                server = start_moto(server="tests.perf.s3_keepalive")
                try:
                    pid = server.process.pid if server.process else None
                    place_server(pid, one_core=CORPORA[options.only].storage_bound)  # as make bench
                    log = work / f"{side}-{number}.log"
                    sides[side] = run_round(where, options.only, server.url, log, figure.get(side))
                finally:
                    server.stop()
                say(f"round {number} {side}: feed {sides[side]['feed_ms']:.3f} ms")
            rounds.append(sides)
        lines, _ = summary(options.only, rounds, stand_in=options.stand_in)
        print("\n".join(lines))
    except BeforeError as error:
        print(f"bench-before: {error}", file=sys.stderr)
        return 2  # the work dir stays: the error names a log in it
    finally:
        if checkout is not None and not options.keep:
            remove_before(checkout)
    if not options.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
