"""The pixel convention: uint8 [0, 255] on disk and on the wire, float32 [-1, 1] in the models.

The one place that converts between them (``to_model_input``, ``to_uint8``), resizes
model-space images (``resize_to``) and turns a uint8 catalogue into embeddings in
batches (``embed_in_batches``). Everything else calls these.
"""

from __future__ import annotations

import numpy as np

from tfmodels.data.images import Progress


def to_model_input(images_uint8):
    """uint8 images -> float32 in [-1, 1]: ``x / 127.5 - 1``.

    The one conversion every model uses (CNN item tower, GAN discriminator,
    classifier, judge, simulated users' true_score_tf). A NumPy array gives a
    NumPy array (host); anything else (a tensor, also a symbolic one inside a
    ``tf.function``) gives a tensor, part of the caller's graph, so the uint8
    table is what moves between host and device.
    """
    if isinstance(images_uint8, np.ndarray):
        return images_uint8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    import tensorflow as tf

    return tf.cast(images_uint8, tf.float32) / 127.5 - 1.0


def to_uint8(images_float):
    """float images in [-1, 1] -> uint8: ``round((clip(x, -1, 1) + 1) * 127.5)``.

    The inverse of :func:`to_model_input` (exact on its outputs; values outside
    [-1, 1], e.g. a generator's, are clipped; ties round half to even as in
    ``tf.round``). A NumPy array gives a NumPy array; a tensor gives a tensor.
    """
    if isinstance(images_float, np.ndarray):
        x = (np.clip(images_float.astype(np.float32), -1.0, 1.0) + np.float32(1.0)) * np.float32(127.5)
        return np.round(x).astype(np.uint8)
    import tensorflow as tf

    x = (tf.clip_by_value(tf.cast(images_float, tf.float32), -1.0, 1.0) + 1.0) * 127.5
    return tf.cast(tf.round(x), tf.uint8)


def resize_to(images_float, side: int):
    """Bilinear resize of float images [B, H, W, 3] to [B, side, side, 3], in TensorFlow.

    Identity when they already have that size; antialiased when shrinking (a
    catalogue image brought down to the GAN's size), plain bilinear when
    upsampling (a GAN's output brought up to the recommender's input, as the
    paper's design objective does). Differentiable; runs wherever it is called
    (eagerly, or as part of the caller's ``tf.function``). For uint8 images use
    ``to_uint8(resize_to(to_model_input(x), side))``: the map to [-1, 1] is affine,
    so it commutes with the interpolation.
    """
    import tensorflow as tf

    side = int(side)
    if images_float.shape[1] == side and images_float.shape[2] == side:
        return images_float
    shrink = images_float.shape[1] is not None and images_float.shape[1] > side
    return tf.image.resize(images_float, [side, side], method="bilinear", antialias=shrink)


def gaussian_blur(images_float, sigma: float):
    """Gaussian blur of float images [B, H, W, C] with standard deviation ``sigma`` pixels, in TensorFlow.

    Two separable 1-D passes of a kernel truncated at 2 sigma (2 * ceil(2 sigma) + 1 taps, normalised to
    sum 1), with reflected borders so a light background stays light; identity for sigma = 0.
    Differentiable, any number of channels (depthwise); the caller's graph or eager.
    """
    import tensorflow as tf

    sigma = float(sigma)
    if sigma < 0:
        raise ValueError(f"gaussian_blur: sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return images_float
    radius = int(np.ceil(2.0 * sigma))
    if radius >= min(int(images_float.shape[1]), int(images_float.shape[2])):
        raise ValueError(f"gaussian_blur: sigma {sigma} needs a {2 * radius + 1}-tap kernel, wider than the "
                         f"images {images_float.shape[1]}x{images_float.shape[2]}")
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    channels = int(images_float.shape[-1])
    x = tf.pad(images_float, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    rows = tf.constant(np.tile(taps.reshape(-1, 1, 1, 1), (1, 1, channels, 1)))
    cols = tf.constant(np.tile(taps.reshape(1, -1, 1, 1), (1, 1, channels, 1)))
    x = tf.nn.depthwise_conv2d(x, rows, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(x, cols, [1, 1, 1, 1], "VALID")


def embed_in_batches(fn, images_uint8, batch_size: int = 256, items=None, what: str = ""):
    """``fn(to_model_input(images))`` over uint8 images in batches, on the host (inference).

    The one loop that turns a catalogue into embeddings, logits or features
    without holding it in float: each batch of ``batch_size`` uint8 rows is read
    (from an array or the image cache's memmap), converted to [-1, 1] inside one
    ``tf.function`` (traced once for every batch size, the last batch included)
    and passed to ``fn``.

    Args:
      fn: float32 [b, H, W, 3] in [-1, 1] -> [b, ...] (a tensor, or a dict of
        tensors); a Keras model is called with ``training=False``.
      images_uint8: uint8 [N, H, W, 3].
      batch_size: rows per call.
      items: optional int [M] rows of ``images_uint8`` to use, in that order (default: all).
      what: when given, a progress line on stderr under that name (rows done, rate, ETA) for a
        pass that takes more than a few seconds.

    Returns:
      float NumPy [M, ...] equal to ``fn`` on all the rows at once (up to float
      round-off), or a dict of them when ``fn`` returns a dict.
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"embed_in_batches: batch_size must be >= 1, got {batch_size}")
    shape = tuple(np.shape(images_uint8))
    if len(shape) != 4:
        raise ValueError(f"embed_in_batches: expected images [N, H, W, C], got shape {shape}")
    items = np.arange(shape[0]) if items is None else np.asarray(items, np.int64)
    call_fn = (lambda x: fn(x, training=False)) if isinstance(fn, tf.keras.Model) else fn
    call = tf.function(lambda x: call_fn(to_model_input(x)),
                       input_signature=[tf.TensorSpec([None, *shape[1:]], tf.uint8)])
    progress = Progress(what, len(items)) if what else None
    outs = []
    # An empty selection still makes one call, so the result has fn's trailing shape.
    for s in range(0, max(len(items), 1), batch_size):
        outs.append(call(np.asarray(images_uint8[items[s:s + batch_size]], np.uint8)))
        if progress is not None:
            progress.update(min(s + batch_size, len(items)))
    if progress is not None:
        progress.close()
    return tf.nest.map_structure(lambda *parts: np.concatenate([np.asarray(p) for p in parts]), *outs)
