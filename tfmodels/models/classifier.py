"""Category classifier on the CNN-F trunk: the project's own "pre-trained CNN".

No weights are downloaded at run time, so the "pre-trained" features
of VBPR, the optional initialisation of DVBPR's item tower and the GAN quality
judge all come from this network, trained on the catalogue's category labels::

    logits = W_head . Phi(X) + b_head,    loss = softmax cross-entropy(category)

``item_tower`` is built by ``tfmodels.models.towers.build_item_tower`` itself, so
its layer names and shapes are exactly DVBPR's and its weights load into a DVBPR
tower one to one (``tfmodels.training.classifier.load_pretrained_tower``).
Frozen *features* for VBPR are the activations of the second hidden fully
connected layer ``fc7`` (ReLU, before dropout), the analogue of the 4096-d
fc7 features VBPR used; with a backbone tower, its pooled features
(``towers.feature_model``). Runs wherever it is called.
"""

from __future__ import annotations

import tensorflow as tf

from tfmodels.models.towers import build_item_tower, feature_model, kernel_l2


class CategoryClassifier(tf.keras.Model):
    """Item tower trunk (``item_tower``, CNN-F or a backbone) + a linear softmax head over ``num_categories``."""

    def __init__(self, model_cfg, resolution: int, num_categories: int, name: str = "classifier"):
        super().__init__(name=name)
        if num_categories < 2:
            raise ValueError(f"classifier: need at least 2 categories with labelled items, got {num_categories}")
        self.num_categories = num_categories
        self.resolution = resolution
        self.item_tower = build_item_tower(model_cfg, resolution)
        self.head = tf.keras.layers.Dense(num_categories, name="head", dtype="float32")
        self.head.build((None, model_cfg.embedding_dim))
        # fc7 activations (ReLU, before dropout) or pooled backbone features: the frozen VBPR features.
        self._feature_model = feature_model(self.item_tower, model_cfg)

    def call(self, images, training=False):
        """Logits float32 [B, C] for float images [B, R, R, 3] in [-1, 1]."""
        return self.head(tf.cast(self.item_tower(images, training=training), tf.float32))

    def features(self, images) -> tf.Tensor:
        """Frozen features float32 [B, F] (fc7 or the pooled backbone, inference mode)."""
        return tf.cast(self._feature_model(images, training=False), tf.float32)

    def kernel_l2(self) -> tf.Tensor:
        """sum of squared trunk and head kernels (no biases)."""
        return kernel_l2(self.item_tower) + tf.reduce_sum(tf.square(self.head.kernel))


def cross_entropy_per_example(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy per image: float32 [B] for int labels [B] and logits [B, C]."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
