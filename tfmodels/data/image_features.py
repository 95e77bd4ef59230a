"""The pixel features the simulated users' tastes are defined on (``tfmodels.data.simulated``, step 1 of its
model): f(x) in R^8 from the pixels only, one implementation with a NumPy and a TensorFlow backend, so the
two agree to float rounding and the TensorFlow one is differentiable (the design search's true-taste
objective goes through it)."""

from __future__ import annotations

import numpy as np

from tfmodels.data.pixels import to_model_input

FEATURE_NAMES = ("coverage", "height", "width", "brightness", "chroma", "red_green", "yellow_blue", "pattern")
"""Names of the image features, in order."""

FEATURE_RESOLUTION = 32
"""F: images are area-resampled to F x F before features are computed."""

_FG_SCALE = 0.15
_BORDER = 2


class _NumpyOps:
    """The few array operations the features need, on NumPy."""

    float32 = np.float32

    @staticmethod
    def cast(x):
        return np.asarray(x, dtype=np.float32)

    sum = staticmethod(lambda x, axis=None: np.sum(x, axis=axis))
    mean = staticmethod(lambda x, axis=None: np.mean(x, axis=axis))
    exp = staticmethod(np.exp)
    sqrt = staticmethod(np.sqrt)

    @staticmethod
    def resample(y, a_rows, a_cols):
        """y'[b, i, j, c] = sum_hw a_rows[i, h] y[b, h, w, c] a_cols[j, w] (batched BLAS matmuls)."""
        t = np.matmul(a_rows, np.ascontiguousarray(y.transpose(0, 3, 1, 2)))
        return np.ascontiguousarray(np.matmul(t, a_cols.T).transpose(0, 2, 3, 1))
    stack = staticmethod(lambda xs, axis: np.stack(xs, axis=axis))
    concat = staticmethod(lambda xs, axis: np.concatenate(xs, axis=axis))
    pad2 = staticmethod(lambda w: np.pad(w, ((0, 0), (1, 1), (1, 1))))

    @staticmethod
    def linspace(n):
        return ((np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1).astype(np.float32)

    @staticmethod
    def area_matrix(n_in, n_out):
        return _area_matrix_np(n_in, n_out)


def _area_matrix_np(n_in: int, n_out: int) -> np.ndarray:
    """float32 [n_out, n_in]: output pixel i = mean of input over its footprint (rows sum to 1)."""
    scale = np.float32(n_in) / np.float32(n_out)
    lo = np.arange(n_out, dtype=np.float32)[:, None] * scale
    hi = lo + scale
    j = np.arange(n_in, dtype=np.float32)[None, :]
    overlap = np.maximum(np.float32(0), np.minimum(hi, j + 1) - np.maximum(lo, j))
    return (overlap / scale).astype(np.float32)


def _tf_ops():
    import tensorflow as tf

    class _TFOps:
        float32 = tf.float32
        cast = staticmethod(lambda x: tf.cast(x, tf.float32))
        sum = staticmethod(lambda x, axis=None: tf.reduce_sum(x, axis=axis))
        mean = staticmethod(lambda x, axis=None: tf.reduce_mean(x, axis=axis))
        exp = staticmethod(tf.exp)
        sqrt = staticmethod(tf.sqrt)

        @staticmethod
        def resample(y, a_rows, a_cols):
            t = tf.einsum("ih,bhwc->biwc", a_rows, y)
            return tf.einsum("jw,biwc->bijc", a_cols, t)
        stack = staticmethod(lambda xs, axis: tf.stack(xs, axis=axis))
        concat = staticmethod(lambda xs, axis: tf.concat(xs, axis=axis))
        pad2 = staticmethod(lambda w: tf.pad(w, [[0, 0], [1, 1], [1, 1]]))

        @staticmethod
        def linspace(n):
            return (tf.range(n, dtype=tf.float32) + 0.5) / float(n) * 2 - 1

        @staticmethod
        def area_matrix(n_in, n_out):
            # The same formula as _area_matrix_np, for a possibly dynamic n_in.
            n_in_f = tf.cast(n_in, tf.float32)
            scale = n_in_f / float(n_out)
            lo = tf.range(n_out, dtype=tf.float32)[:, None] * scale
            hi = lo + scale
            j = tf.range(n_in_f, dtype=tf.float32)[None, :]
            overlap = tf.maximum(0.0, tf.minimum(hi, j + 1) - tf.maximum(lo, j))
            return overlap / scale

    return _TFOps


def _features(ops, x, height, width):
    """Image features [B, 8] from images x in [-1, 1] [B, H, W, 3] (``tfmodels.data.simulated``, "The model", step 1)."""
    F = FEATURE_RESOLUTION
    y = (ops.cast(x) + 1.0) * 0.5
    y = ops.resample(y, ops.area_matrix(height, F), ops.area_matrix(width, F))
    k = _BORDER

    def strip_sum(v):
        return ops.sum(ops.sum(v, 1), 1)

    ring = (strip_sum(y[:, :k]) + strip_sum(y[:, -k:])
            + strip_sum(y[:, k:-k, :k]) + strip_sum(y[:, k:-k, -k:]))
    bg = ring / float(2 * k * F + 2 * k * (F - 2 * k))
    diff2 = ops.sum((y - bg[:, None, None, :]) ** 2, axis=-1)
    w = 1.0 - ops.exp(-diff2 / (_FG_SCALE ** 2))
    total = ops.sum(ops.sum(w, 2), 1) + 1e-3

    def wmean(v):
        return ops.sum(ops.sum(w * v, 2), 1) / total

    coords = ops.linspace(F)
    rows, cols = coords[None, :, None], coords[None, None, :]
    rbar, cbar = wmean(rows + 0 * w), wmean(cols + 0 * w)
    height_f = ops.sqrt(wmean((rows - rbar[:, None, None]) ** 2) + 1e-4)
    width_f = ops.sqrt(wmean((cols - cbar[:, None, None]) ** 2) + 1e-4)
    R, G, B = y[..., 0], y[..., 1], y[..., 2]
    lum = 0.299 * R + 0.587 * G + 0.114 * B
    a = R - G
    bb = (R + G) * 0.5 - B
    chroma = wmean(ops.sqrt(a * a + bb * bb + 1e-4))
    # Erode w over 3x3 so pairs touching the silhouette edge (or the border) do not count.
    wp = ops.pad2(w)
    e = w
    for di in (0, 1, 2):
        for dj in (0, 1, 2):
            if (di, dj) != (1, 1):
                e = e * wp[:, di:di + F, dj:dj + F]
    eh = e[:, :, 1:] * e[:, :, :-1]
    ev = e[:, 1:, :] * e[:, :-1, :]
    dh = (lum[:, :, 1:] - lum[:, :, :-1]) ** 2
    dv = (lum[:, 1:, :] - lum[:, :-1, :]) ** 2
    num = ops.sum(ops.sum(eh * dh, 2), 1) + ops.sum(ops.sum(ev * dv, 2), 1)
    den = ops.sum(ops.sum(eh, 2), 1) + ops.sum(ops.sum(ev, 2), 1) + 1e-3
    pattern = ops.sqrt(num / den + 1e-6)
    coverage = ops.mean(ops.mean(w, 2), 1)
    return ops.stack([coverage, height_f, width_f, wmean(lum), chroma, wmean(a), wmean(bb), pattern], axis=1)


def check_images(images, where: str) -> None:
    shape = tuple(images.shape) if hasattr(images, "shape") else np.shape(images)
    if len(shape) != 4 or shape[-1] not in (3, None):
        raise ValueError(f"{where}: expected images [B, H, W, 3], got shape {tuple(shape)}")
    if shape[1] is not None and shape[1] < 4 * _BORDER:
        raise ValueError(f"{where}: images of {shape[1]} px are too small (need >= {4 * _BORDER})")


def image_features(images, batch: int = 256) -> np.ndarray:
    """Raw image features (``tfmodels.data.simulated``, "The model", step 1), NumPy on the host.

    Args:
      images: uint8 [B, H, W, 3] or float [-1, 1] [B, H, W, 3], any H, W >= 8.
      batch: images per vectorised chunk.

    Returns:
      float32 [B, 8] in the order of ``FEATURE_NAMES``.
    """
    check_images(images, "image_features")
    n = len(images)
    out = np.empty((n, len(FEATURE_NAMES)), np.float32)
    for s in range(0, n, batch):
        x = np.asarray(images[s:s + batch])
        x = to_model_input(x) if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
        out[s:s + len(x)] = _features(_NumpyOps, x, x.shape[1], x.shape[2])
    return out


def image_features_tf(images_float):
    """The same features in TensorFlow (differentiable; graph- and eager-safe).

    Args:
      images_float: tf float [B, H, W, 3] in [-1, 1], any (also dynamic) H, W >= 8.

    Returns:
      tf.float32 [B, 8].
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(images_float)
    check_images(x, "image_features_tf")
    shape = tf.shape(x)
    return _features(_tf_ops(), tf.cast(x, tf.float32), shape[1], shape[2])
