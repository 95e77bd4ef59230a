"""Baseline recommenders in the same harness as DVBPR: PopRank, BPR-MF and VBPR.

Scores (u a user, i an item)::

    PopRank   x_ui = c_i                                   (training interactions of i)
    BPR-MF    x_ui = theta_u . gamma_i + beta_i
    VBPR      x_ui = theta_u . gamma_i + beta_i + theta'_u . (E f_i) + beta' . f_i

with f_i a *frozen* visual feature vector of item i (from the project's own
pre-trained category classifier, ``tfmodels.models.classifier``), E a learned
[F, K'] projection and beta' a learned [F] visual bias (He & McAuley, AAAI 2016).
BPR-MF and VBPR are trained with the BPR criterion on (u, i, j) triples; the
per-triple loss (``*_loss_per_example``) is::

    -ln sigmoid(x_ui - x_uj) + lam * (||theta_u||^2 + ||gamma_i||^2 + ||gamma_j||^2
                                      + beta_i^2 + beta_j^2) [+ lam_visual * ||theta'_u||^2]

and VBPR adds ``lam_visual * (||E||^2 + ||beta'||^2)`` once per step (``global_l2``).

**Never-trained items** (no training interaction): at scoring time
(``score_all``) the item-specific part of their score (c_i; theta_u . gamma_i +
beta_i) is replaced by its per-user median over trained items (``median_fill``),
the rule documented in ``tfmodels.evaluation`` and shared by every method; VBPR
keeps its visual terms for them. The training
forward pass (``call``) uses the raw parameters. Models know nothing of training;
the tasks live in ``tfmodels.training.baselines``. All code runs wherever it is
called (replica context in a distributed step, or eagerly for scoring).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmodels.models.dvbpr import bpr_loss_per_example


def _normal(seed: int, offset: int):
    """N(0, 0.01^2) initialiser, one seeded instance per weight (small factors: BPR starts near x = 0)."""
    return tf.keras.initializers.RandomNormal(stddev=0.01, seed=seed * 1000 + offset)


def median_fill(scores: tf.Tensor, trained: tf.Tensor) -> tf.Tensor:
    """The never-trained-item rule: columns of ``scores`` [B, N] where ``trained`` [N] is 0 get each row's
    median over the trained columns (mean of the two middle values for an even count)."""
    known = tf.boolean_mask(scores, trained > 0.5, axis=1)
    n = tf.shape(known)[1]
    ordered = tf.sort(known, axis=1)
    lo = tf.gather(ordered, tf.maximum((n - 1) // 2, 0), axis=1)
    hi = tf.gather(ordered, tf.maximum(n // 2, 0), axis=1)
    median = 0.5 * (lo + hi)
    filled = tf.where(trained[None, :] > 0.5, scores, median[:, None])
    # No trained item at all (or all trained): nothing to replace.
    return tf.cond(n > 0, lambda: filled, lambda: scores)


class _TrainedMask:
    """Mixin: a non-trainable float [N] variable, 1 where the item has training interactions."""

    def _build_trained(self, num_items: int):
        self.item_trained = tf.Variable(tf.ones([num_items], tf.float32), trainable=False, name="item_trained")

    def set_trained(self, trained: np.ndarray):
        """Sets which items have training interactions (bool [num_items]); call once before training."""
        trained = np.asarray(trained, dtype=bool)
        if trained.shape != tuple(self.item_trained.shape):
            raise ValueError(f"trained mask shape {trained.shape} != ({self.item_trained.shape[0]},)")
        self.item_trained.assign(trained.astype(np.float32))


class PopRank(tf.Module, _TrainedMask):
    """Popularity: every user gets the items ranked by training interaction count."""

    def __init__(self, num_items: int, name: str = "pop"):
        super().__init__(name=name)
        self.num_items = num_items
        self.counts = tf.Variable(tf.zeros([num_items], tf.float32), trainable=False, name="counts")
        self._build_trained(num_items)

    def fit(self, train_item: np.ndarray):
        """Counts training interactions per item (the whole 'training' of PopRank)."""
        counts = np.bincount(np.asarray(train_item), minlength=self.num_items).astype(np.float32)
        self.counts.assign(counts)
        self.set_trained(counts > 0)

    def score_all(self, users: tf.Tensor) -> tf.Tensor:
        """float32 [B, num_items]: c_i for every user (cold items: median count of trained items)."""
        c = median_fill(self.counts[None, :], self.item_trained)
        return tf.tile(c, [tf.shape(users)[0], 1])


class BPRMF(tf.keras.Model, _TrainedMask):
    """Matrix factorisation with item bias trained by BPR: x_ui = theta_u . gamma_i + beta_i."""

    def __init__(self, num_users: int, num_items: int, dim: int, name: str = "bpr_mf", seed: int = 0):
        super().__init__(name=name)
        if num_users < 1 or num_items < 1 or dim < 1:
            raise ValueError(f"BPR-MF: num_users, num_items, dim must be positive, got {num_users}, {num_items}, {dim}")
        self.num_users, self.num_items, self.dim = num_users, num_items, dim
        self.user_factors = tf.keras.layers.Embedding(num_users, dim, embeddings_initializer=_normal(seed, 0),
                                                      name="user_factors")
        self.item_factors = tf.keras.layers.Embedding(num_items, dim, embeddings_initializer=_normal(seed, 1),
                                                      name="item_factors")
        self.item_bias = tf.keras.layers.Embedding(num_items, 1, embeddings_initializer="zeros", name="item_bias")
        for layer in (self.user_factors, self.item_factors, self.item_bias):
            layer.build((None,))
        self._build_trained(num_items)

    def latent(self, users, items):
        """theta_u . gamma_i + beta_i for paired int [B] users and items -> float32 [B]."""
        theta = self.user_factors(users)
        gamma = self.item_factors(items)
        return tf.reduce_sum(theta * gamma, axis=-1) + tf.squeeze(self.item_bias(items), -1)

    def call(self, inputs, training=False):
        """Scores x_ui [B] for ``{"user": int [B], "item": int [B]}`` (raw parameters)."""
        return self.latent(inputs["user"], inputs["item"])

    def l2_per_example(self, users, pos, neg):
        """||theta_u||^2 + ||gamma_i||^2 + ||gamma_j||^2 + beta_i^2 + beta_j^2 per triple [B]."""
        sq = lambda t: tf.reduce_sum(tf.square(t), axis=-1)  # noqa: E731
        return (sq(self.user_factors(users)) + sq(self.item_factors(pos)) + sq(self.item_factors(neg))
                + sq(self.item_bias(pos)) + sq(self.item_bias(neg)))

    def loss_per_example(self, users, pos, neg, lam: float):
        """BPR loss + lam * l2 per triple: float32 [B]."""
        x_ui = self.latent(users, pos)
        x_uj = self.latent(users, neg)
        return bpr_loss_per_example(x_ui, x_uj) + lam * self.l2_per_example(users, pos, neg)

    def latent_all(self, users: tf.Tensor) -> tf.Tensor:
        """theta_u . gamma_i + beta_i for every item, float32 [B, N], never-trained items by the shared rule."""
        raw = tf.matmul(self.user_factors(users), self.item_factors.embeddings, transpose_b=True)
        return median_fill(raw + self.item_bias.embeddings[:, 0][None, :], self.item_trained)

    def score_all(self, users: tf.Tensor) -> tf.Tensor:
        """float32 [B, num_items] for int users [B], cold items scored by the shared rule."""
        return self.latent_all(users)


class VBPR(BPRMF):
    """BPR-MF plus a visual term from frozen features (He & McAuley 2016).

    x_ui = theta_u . gamma_i + beta_i + theta'_u . (E f_i) + beta' . f_i
    """

    def __init__(self, num_users: int, num_items: int, dim: int, visual_dim: int, features: np.ndarray,
                 name: str = "vbpr", seed: int = 0):
        super().__init__(num_users, num_items, dim, name=name, seed=seed)
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[0] != num_items:
            raise ValueError(f"VBPR: features must be [num_items={num_items}, F], got shape {features.shape}")
        if not np.all(np.isfinite(features)):
            raise ValueError("VBPR: features contain NaN or inf")
        self.feature_dim = features.shape[1]
        # Frozen: a non-trainable variable, so it is saved in the checkpoint with the model.
        self.features = tf.Variable(features, trainable=False, name="features")
        self.visual_user = tf.keras.layers.Embedding(num_users, visual_dim, embeddings_initializer=_normal(seed, 2),
                                                     name="visual_user")
        self.visual_user.build((None,))
        self.projection = self.add_weight(name="E", shape=(self.feature_dim, visual_dim),
                                          initializer=_normal(seed, 3))
        self.visual_bias = self.add_weight(name="visual_bias", shape=(self.feature_dim,), initializer="zeros")

    def visual(self, users, items):
        """theta'_u . (E f_i) + beta' . f_i for paired users and items [B] -> float32 [B]."""
        f = tf.gather(self.features, items)
        proj = tf.matmul(f, self.projection)
        return tf.reduce_sum(self.visual_user(users) * proj, axis=-1) + tf.linalg.matvec(f, self.visual_bias)

    def call(self, inputs, training=False):
        return self.latent(inputs["user"], inputs["item"]) + self.visual(inputs["user"], inputs["item"])

    def loss_per_example(self, users, pos, neg, lam: float, lam_visual: float | None = None):
        """BPR loss + lam * (latent l2) + lam_visual * ||theta'_u||^2 per triple (lam_visual defaults to lam)."""
        lam_visual = lam if lam_visual is None else lam_visual
        x_ui = self.latent(users, pos) + self.visual(users, pos)
        x_uj = self.latent(users, neg) + self.visual(users, neg)
        l2_visual = tf.reduce_sum(tf.square(self.visual_user(users)), axis=-1)
        return bpr_loss_per_example(x_ui, x_uj) + lam * self.l2_per_example(users, pos, neg) + lam_visual * l2_visual

    def global_l2(self) -> tf.Tensor:
        """||E||^2 + ||beta'||^2: added once per step, not per triple."""
        return tf.reduce_sum(tf.square(self.projection)) + tf.reduce_sum(tf.square(self.visual_bias))

    def score_all(self, users: tf.Tensor) -> tf.Tensor:
        """float32 [B, num_items]: the latent part by the shared rule for cold items, plus the visual part."""
        item_proj = tf.matmul(self.features, self.projection)  # [N, K'] E f_i for every item, once
        visual = tf.matmul(self.visual_user(users), item_proj, transpose_b=True)
        vbias = tf.linalg.matvec(self.features, self.visual_bias)
        return self.latent_all(users) + visual + vbias[None, :]
