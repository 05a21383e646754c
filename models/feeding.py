"""Feeding ``fit`` without ever running dry mid-epoch.

Why: a detection split loaded from S3 (:func:`models.datasets.stream_split`) is a
``from_generator`` dataset, whose size tf.data cannot know (the other tasks' splits are
arrays of known size). Given such a dataset and no
``steps_per_epoch``, Keras reads until the iterator ends, and every epoch it ends
"unexpectedly": ``Your input ran out of data; interrupting training``. Given a fixed
``steps_per_epoch`` or ``validation_steps`` over a finite dataset, an epoch that asks for
more batches than there are (an item skipped as undecodable is enough) stops short with
the same warning.

So every family (a) counts each split once (:func:`sized`; the pass also fills the
loader's in-memory cache, so the first epoch does not read S3 again) and tells tf.data
its size, (b) repeats the training pipeline and gives ``fit`` an explicit
``steps_per_epoch`` (an epoch may then be longer than one pass, see
:mod:`models.stopping`), and (c) gives validation no ``validation_steps``: its batches
are known, so Keras reads exactly one pass each time.
"""

from __future__ import annotations

from typing import Any


def _count_one(count: Any, *_element: Any) -> Any:
    return count + 1


def sized(dataset: Any) -> tuple[Any, int]:
    """``dataset`` with its cardinality known to tf.data, and that cardinality.

    A dataset of known size is returned as it is; any other is counted by one pass
    (``reduce``), then asserted to have that size.
    """
    import numpy as np
    import tensorflow as tf

    if dataset is None:
        return None, 0
    known = int(dataset.cardinality())
    if known >= 0:
        return dataset, known
    if known == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError("an infinite dataset cannot be a training split")
    count = int(dataset.reduce(np.int64(0), _count_one))
    return dataset.apply(tf.data.experimental.assert_cardinality(count)), count


def batches_per_pass(count: int, batch_size: int, *, drop_remainder: bool) -> int:
    """How many batches one pass over ``count`` items gives."""
    if drop_remainder:
        return count // batch_size
    return -(-count // batch_size)
