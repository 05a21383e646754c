"""How the bench's S3 server's CPU per request grows with the connections its clients hold.

For each number of client threads (one pooled connection each), a fresh server
(``python -m tests.perf.s3_keepalive``) is started, filled with the bench's digit PNGs, and
read (GET) and then read-and-written (GET, then PUT of a result JSON) through the
service's obstore data plane, the way ``make bench``'s storage ceilings do. It prints
requests/s and the server's CPU per item from its process counters. S3's cost per
request does not depend on how many connections are open; a server standing in for it
must not either (the reason ``s3_keepalive`` serves through cheroot, not waitress).

Run: ``python -m tests.perf.s3_server_scaling [--threads 2,16,32,64] [--objects 2000]``.
To see another server, check out another ``tests/perf/s3_keepalive.py`` and run it again.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from bucketvision.infra.local_services import ManagedProcess, start_moto
from bucketvision.infra.s3 import S3Store
from bucketvision.infra.s3_data import open_data_plane
from bucketvision.infra.settings import Settings
from tests.perf import bench_ceilings
from tests.perf.bench_cpu import cpu_seconds
from tests.perf.bench_data import upload_digit_pngs
from tests.perf.bench_service import bench_credentials

BUCKET = "server-scaling"


def measure(threads: int, objects: int) -> list[str]:
    """One fresh server read and written by ``threads`` client threads: a line per kind."""
    server: ManagedProcess = start_moto(server="tests.perf.s3_keepalive")
    try:
        client = bench_ceilings.s3_client(server.url)
        client.create_bucket(Bucket=BUCKET)
        keys = upload_digit_pngs(client, BUCKET, "digits/", objects, seed=99)
        settings = Settings.from_env().with_overrides(
            s3_endpoint_url=server.url, s3_data_client="obstore"
        )
        store = S3Store(client, open_data_plane(settings))
        runs: dict[str, Callable[[], float]] = {
            "GET": lambda: bench_ceilings.get_rate(store, BUCKET, keys, threads),
            "GET+PUT": lambda: bench_ceilings.get_put_rate(store, BUCKET, keys, "out/", threads),
        }
        lines = []
        for kind, run in runs.items():
            cpu, start = cpu_seconds(server.process.pid), time.perf_counter()
            rate = run()
            used = cpu_seconds(server.process.pid) - cpu
            busy = used / (time.perf_counter() - start)
            lines.append(
                f"{threads:>7} {kind:<8} {rate:>9.1f} {1000 * used / objects:>13.2f} {busy:>6.2f}"
            )
        return lines
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="2,16,32,64", help="client threads to try, a list")
    parser.add_argument("--objects", type=int, default=2000, help="objects read per figure")
    options = parser.parse_args(argv)
    os.environ.update(bench_credentials())
    print(f"{'threads':>7} {'kind':<8} {'items/s':>9} {'server ms/item':>13} {'busy':>6}")
    for threads in (int(value) for value in options.threads.split(",")):
        for line in measure(threads, options.objects):
            print(line, flush=True)


if __name__ == "__main__":
    main()
