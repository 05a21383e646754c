"""models.forward: one trace, chunks of at most forward_batch, short chunks at their own size."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from bucketvision.models.forward import CompiledForward, declared_batch  # noqa: E402


class ChunkSizeProbe:
    """A model whose answer for each image is the size of the chunk it ran in; counts traces."""

    def __init__(self) -> None:
        self.traces = 0

    def __call__(self, pixels: Any, training: bool = False) -> Any:
        self.traces += 1  # Python runs only while tf.function traces
        count = tf.shape(pixels)[0]
        return tf.fill([count, 1], tf.cast(count, tf.float32))


def _pixels(count: int) -> np.ndarray:
    return np.zeros((count, 2, 2, 1), np.uint8)


def test_a_short_chunk_runs_at_its_own_size_through_one_trace() -> None:
    probe = ChunkSizeProbe()
    forward = CompiledForward(probe, (2, 2, 1), 4, "unit")
    forward.warm_up()
    sizes = [float(out[0]) for out in forward(_pixels(6))]
    assert sizes == [4, 4, 4, 4, 2, 2]  # no padding: the last two ran as a chunk of two
    assert [float(out[0]) for out in forward(_pixels(1))] == [1]
    assert probe.traces == 1  # every chunk size went through the warm-up's trace


def test_a_model_that_takes_one_batch_size_gets_padded_chunks() -> None:
    probe = ChunkSizeProbe()
    forward = CompiledForward(probe, (2, 2, 1), 4, "unit", fixed_batch=3)
    assert forward.forward_batch == 3  # the model's size wins over the setting
    forward.warm_up()
    assert [float(out[0]) for out in forward(_pixels(4))] == [3, 3, 3, 3]
    assert probe.traces == 1


def test_wrong_pixels_are_refused_with_the_expected_shape() -> None:
    forward = CompiledForward(ChunkSizeProbe(), (2, 2, 1), 4, "unit")
    with pytest.raises(ValueError, match=r"expected N x \(2, 2, 1\) pixels"):
        forward(np.zeros((2, 3, 3, 1), np.uint8))


def test_declared_batch_reads_signatures_and_keras_inputs() -> None:
    import keras

    assert declared_batch(SimpleNamespace(fixed_batch=1)) == 1  # a TF OD API signature
    assert declared_batch(SimpleNamespace(fixed_batch=None)) is None
    fixed = keras.Input((3,), batch_size=4)
    assert declared_batch(keras.Model(fixed, keras.layers.Dense(2)(fixed))) == 4
    open_input = keras.Input((3,))
    assert declared_batch(keras.Model(open_input, keras.layers.Dense(2)(open_input))) is None
    assert declared_batch(ChunkSizeProbe()) is None
