"""Ground truth boxes -> CenterNet training targets, in TensorFlow ops.

Why TF ops: the encoding runs inside a ``tf.data`` map after the augmentation
(a flipped image needs flipped targets), on the pipeline's threads, so the
training step only sees dense tensors.

For an image with boxes ``[N, 4]`` (x_min, y_min, x_max, y_max, input pixels) and
classes ``[N]`` the target is ``[H/stride, W/stride, C + 5]``:

- ``0..C-1``: a gaussian per object on its class's channel, peak 1.0 at the cell of
  its centre; the sigma along each axis is ``alpha * box side / 6`` (TTFNet), so a
  big box has a wide, forgiving peak and a small one a sharp peak;
- ``C, C+1``: width and height of the box in stride units, at the centre cell;
- ``C+2, C+3``: the centre's offset inside that cell (0..1);
- ``C+4``: 1.0 at the centre cells (where size and offset are supervised).

TensorFlow is imported inside the function; importing this module needs none.
"""

from __future__ import annotations

from typing import Any

GAUSSIAN_ALPHA = 0.54
MIN_SIGMA = 0.5  # in cells: a small box still gets a peak a few cells wide


def target_channels(num_classes: int) -> int:
    """Channels of the encoded target: heatmap, size (2), offset (2), regression mask."""
    return num_classes + 5


def encode_targets(
    boxes: Any,
    classes: Any,
    *,
    image_size: tuple[int, int],
    num_classes: int,
    stride: int = 4,
    alpha: float = GAUSSIAN_ALPHA,
) -> Any:
    """The dense target ``[H/stride, W/stride, C + 5]`` float32 (see the module doc).

    ``image_size`` is (height, width) of the input in pixels. Works eagerly and
    inside ``tf.data`` maps; an image without boxes gives an all-zero target.
    """
    import tensorflow as tf

    height, width = image_size[0] // stride, image_size[1] // stride
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4]) / float(stride)
    classes = tf.reshape(tf.cast(classes, tf.int32), [-1])
    box_w = tf.maximum(boxes[:, 2] - boxes[:, 0], 1e-3)
    box_h = tf.maximum(boxes[:, 3] - boxes[:, 1], 1e-3)
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2.0
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2.0
    cell_x = tf.clip_by_value(tf.floor(centre_x), 0.0, float(width - 1))
    cell_y = tf.clip_by_value(tf.floor(centre_y), 0.0, float(height - 1))

    sigma_x = tf.maximum(alpha * box_w / 6.0, MIN_SIGMA)
    sigma_y = tf.maximum(alpha * box_h / 6.0, MIN_SIGMA)
    grid_x = tf.range(width, dtype=tf.float32)
    grid_y = tf.range(height, dtype=tf.float32)
    gauss_x = tf.exp(-tf.square(grid_x[None, :] - cell_x[:, None]) / (2.0 * sigma_x[:, None] ** 2))
    gauss_y = tf.exp(-tf.square(grid_y[None, :] - cell_y[:, None]) / (2.0 * sigma_y[:, None] ** 2))
    gaussians = gauss_y[:, :, None] * gauss_x[:, None, :]  # [N, H, W]
    one_hot = tf.one_hot(classes, num_classes, dtype=tf.float32)  # [N, C]
    per_object = gaussians[:, :, :, None] * one_hot[:, None, None, :]  # [N, H, W, C]
    heatmap = tf.reduce_max(
        tf.concat([tf.zeros([1, height, width, num_classes]), per_object], axis=0), axis=0
    )

    indices = tf.cast(tf.stack([cell_y, cell_x], axis=1), tf.int32)  # [N, 2]
    values = tf.stack(
        [box_w, box_h, centre_x - cell_x, centre_y - cell_y, tf.ones_like(box_w)], axis=1
    )
    regression = tf.tensor_scatter_nd_update(tf.zeros([height, width, 5]), indices, values)
    return tf.concat([heatmap, regression], axis=-1)
