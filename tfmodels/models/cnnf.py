"""CNN-F item tower Phi: product image -> K-dimensional item embedding.

The paper's network (Chatfield et al.'s CNN-F as used by DVBPR), at ``paper()``
settings (width 1.0, fc 4096, K = 100, 224 px)::

    conv 64 11x11 stride 4, ReLU, max-pool 2x2
    conv 256 5x5, ReLU, max-pool 2x2
    conv 256 3x3, ReLU  (x3)
    max-pool 2x2
    fc 4096, ReLU, dropout 0.5
    fc 4096, ReLU, dropout 0.5
    fc K (linear)

All convolutions and pools use 'same' padding, as in the authors' code, so the
last feature map is R/32 on a side (7x7 at 224 px, 4x4 at 128, 2x2 at 64).
Below 64 px the first convolution's stride drops to 2 so the last map stays at
least 2x2 (at 32 px a stride of 4 would leave a single pixel for the fc layers).
``model_cfg.width`` multiplies the conv channel counts and ``model_cfg.fc_units``
sets the two hidden fc layers, so ``cpu()`` / ``tiny()`` get smaller towers.

Input: float32 images in [-1, 1] (``tfmodels.data.pixels.to_model_input``),
shape [B, R, R, 3]. Output: float32 [B, K]. The tower knows nothing of users or
training; the classifier used for pre-training shares it as its trunk. It is
the ``cnnf`` entry of ``tfmodels.models.towers``, where the lambda_cnn term's
kernels are collected (``towers.kernel_l2``: conv1..conv5, fc6, fc7, embedding).
"""

from __future__ import annotations

import tensorflow as tf

def _channels(base: int, width: float) -> int:
    return max(4, int(round(base * width)))


def first_stride(resolution: int) -> int:
    """Stride of the first 11x11 convolution: 4 (the paper's) from 64 px up, else 2."""
    return 4 if resolution >= 64 else 2


def build_item_tower(model_cfg, resolution: int, name: str = "item_tower") -> tf.keras.Model:
    """Builds the CNN-F item tower.

    Args:
      model_cfg: ``tfmodels.config.ModelConfig`` (embedding_dim K, width, fc_units,
        dropout).
      resolution: square input side R in pixels (any R >= 16; 224 in the paper).
      name: Keras model name.

    Returns:
      A functional ``tf.keras.Model`` mapping float [B, R, R, 3] in [-1, 1] to
      float32 [B, K]. Dropout is active only when called with ``training=True``.
    """
    if resolution < 16:
        raise ValueError(f"model: resolution {resolution} too small for CNN-F (need >= 16 px)")
    if model_cfg.embedding_dim < 1 or model_cfg.fc_units < 1 or model_cfg.width <= 0:
        raise ValueError(
            f"model: embedding_dim, fc_units and width must be positive, got "
            f"{model_cfg.embedding_dim}, {model_cfg.fc_units}, {model_cfg.width}"
        )
    L = tf.keras.layers
    c64 = _channels(64, model_cfg.width)
    c256 = _channels(256, model_cfg.width)
    inputs = tf.keras.Input(shape=(resolution, resolution, 3), name="images")
    x = L.Conv2D(c64, 11, strides=first_stride(resolution), padding="same", activation="relu", name="conv1")(inputs)
    x = L.MaxPool2D(2, padding="same", name="pool1")(x)
    x = L.Conv2D(c256, 5, padding="same", activation="relu", name="conv2")(x)
    x = L.MaxPool2D(2, padding="same", name="pool2")(x)
    x = L.Conv2D(c256, 3, padding="same", activation="relu", name="conv3")(x)
    x = L.Conv2D(c256, 3, padding="same", activation="relu", name="conv4")(x)
    x = L.Conv2D(c256, 3, padding="same", activation="relu", name="conv5")(x)
    x = L.MaxPool2D(2, padding="same", name="pool5")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(model_cfg.fc_units, activation="relu", name="fc6")(x)
    x = L.Dropout(model_cfg.dropout, name="drop6")(x)
    x = L.Dense(model_cfg.fc_units, activation="relu", name="fc7")(x)
    x = L.Dropout(model_cfg.dropout, name="drop7")(x)
    # The embedding is computed in float32 even under a mixed_float16 policy, so
    # dot products with float32 user vectors and the BPR loss stay float32.
    outputs = L.Dense(model_cfg.embedding_dim, name="embedding", dtype="float32")(x)
    return tf.keras.Model(inputs, outputs, name=name)


def forward_flops(model_cfg, resolution: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one image through the tower's forward pass.

    Counts convolutions and dense layers only (pools, ReLU, dropout are
    negligible); used by the throughput benchmark to relate images/s to the
    machine's matmul peak.
    """
    c64 = _channels(64, model_cfg.width)
    c256 = _channels(256, model_cfg.width)

    def out(size, stride):
        return -(-size // stride)

    flops = 0
    s = out(resolution, first_stride(resolution))
    flops += 2 * s * s * 11 * 11 * 3 * c64
    s = out(s, 2)
    flops += 2 * s * s * 5 * 5 * c64 * c256
    s = out(s, 2)
    flops += 3 * 2 * s * s * 3 * 3 * c256 * c256
    s = out(s, 2)
    flat = s * s * c256
    flops += 2 * (flat * model_cfg.fc_units + model_cfg.fc_units * model_cfg.fc_units
                  + model_cfg.fc_units * model_cfg.embedding_dim)
    return int(flops)
