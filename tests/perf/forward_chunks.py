"""A short chunk through the compiled forward pass: open batch dimension vs padded to full.

``python -m tests.perf.forward_chunks`` builds an untrained MobileNetV2 (224x224, no
weights to download), compiles it both ways the worker can (:mod:`models.forward`):
open in its batch dimension, and fixed at ``--forward-batch`` with short chunks
zero-padded (what every model ran before, and what a signature that takes one batch
size still gets). It then runs chunks of 16, 8 and 1 images through each, alternating,
and prints the CPU per image each way and their ratio. One intra-op thread, a worker
child's share of this 2-core machine with two children.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np


def cpu_ms_per_image(
    forward: Callable[[np.ndarray], object], pixels: np.ndarray, calls: int
) -> float:
    """Process CPU per image over ``calls`` calls of ``forward(pixels)``."""
    start = time.process_time()
    for _ in range(calls):
        forward(pixels)
    return (time.process_time() - start) * 1000 / (calls * len(pixels))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--forward-batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=6, help="calls per chunk size and round")
    options = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from bucketvision.models.forward import CompiledForward

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    shape = (224, 224, 3)
    ways = {
        "open": CompiledForward(model, shape, options.forward_batch, "symmetric"),
        "padded": CompiledForward(
            model, shape, options.forward_batch, "symmetric", fixed_batch=options.forward_batch
        ),
    }
    for forward in ways.values():
        forward.warm_up()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (options.forward_batch, *shape), dtype=np.uint8)
    print(f"MobileNetV2 224x224, forward batch {options.forward_batch}, CPU ms per image")
    print(f"{'chunk':>6} {'open':>8} {'padded':>8} {'open / padded':>14}")
    sizes = sorted({options.forward_batch, max(1, options.forward_batch // 2), 1}, reverse=True)
    for size in sizes:
        chunk = images[:size]
        found: dict[str, list[float]] = {name: [] for name in ways}
        for round_index in range(options.rounds):
            order = list(ways) if round_index % 2 == 0 else list(reversed(ways))
            for name in order:
                found[name].append(cpu_ms_per_image(ways[name], chunk, options.calls))
        open_ms, padded_ms = (statistics.median(found[name]) for name in ("open", "padded"))
        print(f"{size:>6} {open_ms:>8.2f} {padded_ms:>8.2f} {open_ms / padded_ms:>14.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
