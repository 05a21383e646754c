"""moto's S3 behind a WSGI server that keeps connections alive, as S3 does: the bench's S3.

``python -m moto.server`` serves through werkzeug's development server, which sends
``Connection: close`` on every answer: each GET and PUT of a client then pays a TCP
connect and the client's connection set-up, which no S3 endpoint charges (S3 and its
compatible stores keep HTTP/1.1 connections alive, and every client pools them).
The bench measures what a worker costs against S3, so its server serves the same moto
application through waitress, which keeps connections alive; the S3 behaviour, state
and responses are moto's own.

Run: ``python -m tests.perf.s3_keepalive -H HOST -p PORT`` (moto.server's arguments), or
``local_services.start_moto(server="tests.perf.s3_keepalive")``.
"""

from __future__ import annotations

import argparse
import os

import waitress
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app


def main(argv: list[str] | None = None) -> None:
    """Serve moto's application on HOST:PORT until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16, help="requests served at once")
    options = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(options.port))  # moto builds its own URLs from it
    application = DomainDispatcherApplication(create_backend_app)
    waitress.serve(
        application,
        host=options.host,
        port=options.port,
        threads=options.threads,
        connection_limit=512,
        channel_timeout=300,
        ident=None,
        _quiet=True,
    )


if __name__ == "__main__":
    main()
