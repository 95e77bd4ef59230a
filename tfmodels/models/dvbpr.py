"""DVBPR: user embedding table (user tower) x a CNN over item pixels (item tower).

Preference of user u for item i::

    x_ui = theta_u . Phi(X_i)

with theta_u a row of ``user_embedding`` (K floats) and Phi the item tower
``model.tower`` of ``tfmodels.models.towers`` (the paper's CNN-F, or an ImageNet
backbone) applied to the item's image X_i in [-1, 1]. Training
maximises the BPR criterion on triples (u, i, j), i bought by u, j not; the
per-triple loss is::

    loss_uij = -ln sigmoid(x_ui - x_uj) + lambda_theta * ||theta_u||^2

(``dvbpr_loss_per_example``). As in the paper, a batch of B triples has the
objective ``sum_b loss_uij + lambda_cnn * sum_W ||W||^2`` over the CNN's conv and
fc kernels (biases are not regularised; ``tfmodels.models.towers.kernel_l2``);
training minimises it divided by B (a mean over triples, so the learning rate
does not depend on the batch size), i.e. ``mean_b loss_uij + lambda_cnn / B *
sum_W ||W||^2`` (``dvbpr_batch_loss``). The same tower scores i and j
(the "Siamese" shape). The model knows nothing of training: the training task
lives in ``tfmodels.training.recommender``.
"""

from __future__ import annotations

import tensorflow as tf

from tfmodels.models.towers import build_item_tower, kernel_l2


def bpr_loss_per_example(x_ui: tf.Tensor, x_uj: tf.Tensor) -> tf.Tensor:
    """-ln sigmoid(x_ui - x_uj) per triple, computed as softplus(x_uj - x_ui) (no overflow)."""
    return tf.math.softplus(-(x_ui - x_uj))


def dvbpr_loss_per_example(theta_u: tf.Tensor, x_ui: tf.Tensor, x_uj: tf.Tensor,
                           lambda_theta: float) -> tf.Tensor:
    """BPR loss plus lambda_theta * ||theta_u||^2 per triple: float32 [B]."""
    return bpr_loss_per_example(x_ui, x_uj) + lambda_theta * tf.reduce_sum(tf.square(theta_u), axis=-1)


def dvbpr_batch_loss(theta_u, x_ui, x_uj, kernel_l2, lambda_theta: float, lambda_cnn: float) -> tf.Tensor:
    """The whole batch objective divided by B (single device; reference for the distributed step)."""
    per_example = dvbpr_loss_per_example(theta_u, x_ui, x_uj, lambda_theta)
    batch = tf.cast(tf.shape(per_example)[0], tf.float32)
    return tf.reduce_mean(per_example) + lambda_cnn * kernel_l2 / batch


class DVBPR(tf.keras.Model):
    """The DVBPR recommender: ``user_embedding`` [num_users, K] and ``item_tower``.

    Call with ``{"user": int [B], "images": float [B, R, R, 3] in [-1, 1]}`` to get
    scores x_ui [B]. Runs wherever it is called (replica context inside a
    distributed train step, or plain eager code for scoring).
    """

    def __init__(self, num_users: int, model_cfg, resolution: int, name: str = "dvbpr"):
        super().__init__(name=name)
        if num_users < 1:
            raise ValueError(f"DVBPR needs at least one user, got num_users={num_users}")
        self.num_users = num_users
        self.resolution = resolution
        self.embedding_dim = model_cfg.embedding_dim
        # Small random user vectors: with theta ~ 0 every item scores ~ 0 and the
        # BPR gradient first shapes the item tower and the users together.
        self.user_embedding = tf.keras.layers.Embedding(
            num_users, model_cfg.embedding_dim,
            embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.01),
            name="user_embedding", dtype="float32")
        self.item_tower = build_item_tower(model_cfg, resolution)
        # Create the variables now so checkpoints restore without a first call.
        self.user_embedding.build((None,))

    def user_vectors(self, users: tf.Tensor) -> tf.Tensor:
        """theta_u for int user indices [B] -> float32 [B, K]."""
        return self.user_embedding(users)

    def item_embeddings(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Phi(X) for float images [B, R, R, 3] in [-1, 1] -> float32 [B, K]."""
        return tf.cast(self.item_tower(images, training=training), tf.float32)

    def call(self, inputs, training=False):
        theta = self.user_vectors(inputs["user"])
        phi = self.item_embeddings(inputs["images"], training=training)
        return tf.reduce_sum(theta * phi, axis=-1)

    def cnn_l2(self) -> tf.Tensor:
        """sum of squared CNN kernels (no biases): the lambda_cnn term's argument."""
        return kernel_l2(self.item_tower)


def build_dvbpr(model_cfg, num_users: int, resolution: int) -> DVBPR:
    """Builds a DVBPR model (call inside ``strategy.scope()`` for distributed training)."""
    return DVBPR(num_users, model_cfg, resolution)
