"""moto's S3 behind a WSGI server that keeps connections alive, as S3 does: the bench's S3.

``python -m moto.server`` serves through werkzeug's development server, which sends
``Connection: close`` on every answer: each GET and PUT of a client then pays a TCP
connect and the client's connection set-up, which no S3 endpoint charges (S3 and its
compatible stores keep HTTP/1.1 connections alive, and every client pools them).
The bench measures what a worker costs against S3, so its server serves the same moto
application through cheroot (CherryPy's HTTP/1.1 server), which keeps connections alive;
the S3 behaviour, state and responses are moto's own.

Why cheroot and not waitress: a server's cost per request must not grow with the number
of connections its clients hold open, since S3's does not. waitress's loop asks every
open channel whether it is readable and writable on each turn, in Python, so moto's CPU
per request grows with the connections: measured here by ``python -m
tests.perf.s3_server_scaling`` (2,000 GETs of the bench's digit PNGs through obstore, one
connection per client thread), 1.54 ms per GET with 2 client threads, 2.97 ms with 32 and
5.79 ms with 64. A worker whose pool children each keep a pool of connections then paid for the
others' idle connections. cheroot parks idle keep-alive connections in a selector and
hands only ready ones to its threads: 1.57, 1.78 and 1.75 ms per GET.
(``tests/perf/NOTES.md``, "The bench's S3 server and open connections".)

cheroot also keeps at most ``keep_alive_conn_limit`` idle keep-alive connections (10 by
default) and closes any more after its answer; S3 sets no such limit. A worker holds a
pool of connections per bucket in each child, so every request past the tenth idle
connection paid a TCP connect on both sides: measured here, a second client's 1,000 GETs
opened 1,000 connections and cost 0.31 ms of client CPU each, against 0.24 ms for the
first client's, which kept its connections. This server keeps every idle connection
(NOTES, "cheroot closed all but ten idle connections").

moto serialises every timestamp of a response (each listed key's ``LastModified``, the
``Last-Modified`` of a GET) by re-reading its own ISO 8601 string with botocore's general
parser, which is dateutil's: measured here (``tests/perf/NOTES.md``, "moto's timestamps"),
0.28 ms of the server's CPU per listed key, 0.17 ms with ISO 8601 strings read by
``datetime.fromisoformat``, to the same instant. A real S3 spends nothing of this machine's
CPU on either, so this server reads them the quick way (:func:`quicker_timestamps`) for
every request of every contender alike.

It also keeps a ledger of its work by kind of request (:mod:`tests.perf.s3_requests`), which
the bench reads over each run to say what a job asks of S3 besides its items.

Run: ``python -m tests.perf.s3_keepalive -H HOST -p PORT`` (moto.server's arguments), or
``local_services.start_moto(server="tests.perf.s3_keepalive")``.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from typing import Any

import moto.core.serialize
from botocore.utils import parse_to_aware_datetime
from cheroot import wsgi
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from bucketvision.infra.s3 import parse_response_timestamp
from tests.perf.s3_requests import RequestLedger

IDLE_SECONDS = 300  # keep-alive connections a client leaves idle stay open this long
LISTEN_BACKLOG = 512  # connections waiting to be accepted, e.g. every pool opening at once


def aware_datetime(value: Any) -> datetime:
    """What moto's serialiser asks of botocore's ``parse_to_aware_datetime``: the same
    instant, an ISO 8601 string ending in ``Z`` read by ``datetime.fromisoformat``."""
    if isinstance(value, str) and value.endswith("Z"):
        return parse_response_timestamp(value)
    return parse_to_aware_datetime(value)


def quicker_timestamps() -> None:
    """Have moto's response serialiser read timestamps with :func:`aware_datetime`."""
    moto.core.serialize.parse_to_aware_datetime = aware_datetime  # type: ignore[attr-defined]


def make_server(host: str, port: int, threads: int) -> wsgi.Server:
    """A cheroot server of moto's S3 application on ``host:port``, not yet started."""
    quicker_timestamps()
    os.environ.setdefault("MOTO_PORT", str(port))  # moto builds its own URLs from it
    application = RequestLedger(DomainDispatcherApplication(create_backend_app))
    server = wsgi.Server(
        (host, port),
        application,
        numthreads=threads,
        request_queue_size=LISTEN_BACKLOG,
        timeout=IDLE_SECONDS,
    )
    server.keep_alive_conn_limit = None  # keep every idle connection, as S3 does
    return server


def main(argv: list[str] | None = None) -> None:
    """Serve moto's application on HOST:PORT until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16, help="requests served at once")
    options = parser.parse_args(argv)
    server = make_server(options.host, options.port, options.threads)
    try:
        server.start()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
