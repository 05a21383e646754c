"""Peers for ``make bench``: the usual ways of doing the same work without bucketvision.

Each Celery peer is a tiny standalone app a subprocess worker runs
(``celery -A tests.perf.peers.<name> worker --concurrency 2 --pool prefork``),
on its own queue, configured from ``BENCH_PEER_*`` environment variables. The
Ray Data peer runs as ``python -m tests.perf.peers.ray_data``.
"""
