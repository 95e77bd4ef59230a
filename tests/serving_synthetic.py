"""Synthetic SavedModels with the project's signatures, for tests and benchmarks.

They follow the contract in export/signatures.py (same model names, signature
names, input/output keys, dtypes) but hold random weights instead of trained
ones, so the server, the clients and the benchmark can be exercised without a
trained model. Written in TensorFlow Serving's layout ``<base>/<name>/<version>/``
via a temporary folder renamed into place.

* recommender: users ``u0..``, items ``i0..`` with random K-d vectors;
  score = u . v; images are embedded by average-pooling to 4x4x3 then a fixed
  linear map to K (a stand-in for the CNN); recommend = matmul over the whole
  catalogue + tf.math.top_k; ``exclude_purchased`` removes item ``i{u mod N}``.
* designer: a linear "generator" z -> 16x16x3 tanh image; design runs gradient
  ascent on z inside a tf.while_loop.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf


from export import signatures as S
from export.recommender import decode_images, input_signature, to_model_input

IMAGE_SIZE = 16  # designer output side
CATEGORY_NAMES = ("top", "trousers", "bag")  # the synthetic designer's categories
_POOL = 4  # images are pooled to 4x4x3 features


def _write(module, base: str, name: str, version: int, signatures: dict) -> str:
    """Saves atomically to <base>/<name>/<version>; returns that path."""
    model_dir = os.path.join(base, name)
    os.makedirs(model_dir, exist_ok=True)
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} exists")
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir)
    try:
        tf.saved_model.save(module, tmp, signatures=signatures)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _image_features(image_bytes):
    """string [B] -> float [B, 48]: the exported models' decoding (header checked against
    S.MAX_IMAGE_PIXELS first), squared to 4x4, scaled to [-1, 1]."""
    return tf.reshape(to_model_input(decode_images(image_bytes, _POOL)), [-1, _POOL * _POOL * 3])


class SyntheticRecommender(tf.Module):
    def __init__(self, num_users: int, num_items: int, dim: int, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.user_vectors = tf.Variable((rng.normal(size=(num_users, dim)) / np.sqrt(dim)).astype(np.float32),
                                        trainable=False)
        self.item_vectors = tf.Variable((rng.normal(size=(num_items, dim)) / np.sqrt(dim)).astype(np.float32),
                                        trainable=False)
        self.image_projection = tf.Variable((rng.normal(size=(_POOL * _POOL * 3, dim)) / 7.0).astype(np.float32),
                                            trainable=False)
        user_ids = tf.constant([f"u{i}" for i in range(num_users)])
        item_ids = tf.constant([f"i{i}" for i in range(num_items)])
        self.item_ids = tf.Variable(item_ids, trainable=False)
        self.user_index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(user_ids, tf.range(num_users, dtype=tf.int64)), -1)
        self.item_index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(item_ids, tf.range(num_items, dtype=tf.int64)), -1)
        self.num_items = num_items

    def _users(self, user_id):
        idx = self.user_index.lookup(user_id)
        known = idx >= 0
        vec = tf.gather(self.user_vectors, tf.maximum(idx, 0)) * tf.cast(known, tf.float32)[:, None]
        return vec, known, idx

    @tf.function(input_signature=input_signature(S.RECOMMENDER, S.SCORE))
    def score(self, user_id, item_id):
        u, ku, _ = self._users(user_id)
        idx = self.item_index.lookup(item_id)
        ki = idx >= 0
        v = tf.gather(self.item_vectors, tf.maximum(idx, 0))
        known = tf.logical_and(ku, ki)
        return {S.OUT_SCORE: tf.reduce_sum(u * v, -1) * tf.cast(known, tf.float32), S.OUT_KNOWN: known}

    def _embed_images(self, image_bytes):
        return tf.matmul(_image_features(image_bytes), self.image_projection)

    @tf.function(input_signature=input_signature(S.RECOMMENDER, S.SCORE_IMAGES))
    def score_images(self, user_id, image_bytes):
        u, known, _ = self._users(user_id)
        return {S.OUT_SCORE: tf.reduce_sum(u * self._embed_images(image_bytes), -1), S.OUT_KNOWN: known}

    @tf.function(input_signature=input_signature(S.RECOMMENDER, S.ITEM_EMBEDDING))
    def item_embedding(self, image_bytes):
        return {S.OUT_EMBEDDING: self._embed_images(image_bytes)}

    @tf.function(input_signature=input_signature(S.RECOMMENDER, S.USER_EMBEDDING))
    def user_embedding(self, user_id):
        u, known, _ = self._users(user_id)
        return {S.OUT_EMBEDDING: u, S.OUT_KNOWN: known}

    @tf.function(input_signature=input_signature(S.RECOMMENDER, S.RECOMMEND))
    def recommend(self, user_id, k, exclude_purchased):
        tf.debugging.assert_positive(k, message="k must be >= 1")
        tf.debugging.assert_less_equal(k, self.num_items, message="k exceeds the catalogue size")
        u, known, idx = self._users(user_id)
        scores = tf.matmul(u, self.item_vectors, transpose_b=True)
        if exclude_purchased:
            bought = tf.one_hot(tf.math.floormod(tf.maximum(idx, 0), self.num_items), self.num_items,
                                on_value=-1e30, off_value=0.0)
            scores = scores + bought
        top = tf.math.top_k(scores, k=k)
        return {S.OUT_ITEM_ID: tf.gather(self.item_ids, top.indices), S.OUT_SCORE: top.values,
                S.OUT_KNOWN: known}


def export_recommender(base: str, version: int = 1, num_users: int = 50, num_items: int = 200,
                       dim: int = 16, seed: int = 0, name: str = S.RECOMMENDER) -> str:
    """Writes a synthetic recommender to <base>/<name>/<version>; returns the path."""
    m = SyntheticRecommender(num_users, num_items, dim, seed)
    sigs = {S.SERVING_DEFAULT: m.score, S.SCORE: m.score, S.SCORE_IMAGES: m.score_images,
            S.ITEM_EMBEDDING: m.item_embedding, S.USER_EMBEDDING: m.user_embedding,
            S.RECOMMEND: m.recommend}
    return _write(m, base, name, version, sigs)


class SyntheticDesigner(tf.Module):
    def __init__(self, num_users: int, latent: int = 8, seed: int = 0, max_steps: int = 1000):
        super().__init__()
        self.max_steps = max_steps
        num_categories = len(CATEGORY_NAMES)
        self.category_index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(CATEGORY_NAMES),
                                                tf.range(num_categories, dtype=tf.int32)), -1)
        rng = np.random.default_rng(seed + 1)
        d = IMAGE_SIZE * IMAGE_SIZE * 3
        self.gen = tf.Variable((rng.normal(size=(latent + num_categories, d)) / 3).astype(np.float32), trainable=False)
        self.user_vectors = tf.Variable((rng.normal(size=(num_users, d)) / np.sqrt(d)).astype(np.float32),
                                        trainable=False)
        self.user_index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant([f"u{i}" for i in range(num_users)]),
                                                tf.range(num_users, dtype=tf.int64)), -1)
        self.latent, self.num_categories = latent, num_categories

    def _g(self, z, category):
        c = tf.one_hot(category, self.num_categories)
        c = tf.broadcast_to(c, [tf.shape(z)[0], self.num_categories]) if c.shape.rank == 1 else c
        x = tf.tanh(tf.matmul(tf.concat([z, c], -1), self.gen))
        return tf.reshape(x, [-1, IMAGE_SIZE, IMAGE_SIZE, 3])

    def _user(self, user_id):
        idx = self.user_index.lookup(user_id)
        tf.debugging.assert_non_negative(idx, message="unknown user_id")
        return tf.gather(self.user_vectors, idx)

    def _category(self, name):
        index = self.category_index.lookup(name)
        tf.debugging.assert_non_negative(index, message=f"unknown category name (known: {', '.join(CATEGORY_NAMES)})")
        return index

    @staticmethod
    def _to_outputs(x):
        img = tf.cast(tf.round((x + 1.0) * 127.5), tf.uint8)
        png = tf.map_fn(tf.io.encode_png, img, fn_output_signature=tf.string)
        return img, png

    @tf.function(input_signature=input_signature(S.DESIGNER, S.GENERATE))
    def generate(self, category, n, seed):
        category = self._category(category)
        n = self._checked(n, [tf.debugging.assert_positive(n, message="n must be >= 1"),
                              tf.debugging.assert_less_equal(n, S.MAX_IMAGES, message="n must be <= 64")])
        z = tf.random.stateless_normal([n, self.latent], seed=[seed, 0])
        img, png = self._to_outputs(self._g(z, category))
        return {S.OUT_IMAGE: img, S.OUT_PNG: png}

    @staticmethod
    def _checked(value, checks):
        """``value``, available only once ``checks`` passed: nothing is sized from an unchecked number."""
        with tf.control_dependencies(checks):
            return tf.identity(value)

    def _checked_steps(self, steps, checks=()):
        """``steps``, available only once it (and ``checks``) passed the range checks."""
        return self._checked(steps, list(checks) + [
            tf.debugging.assert_non_negative(steps, message="steps must be >= 0"),
            tf.debugging.assert_less_equal(steps, self.max_steps, message=f"steps must be <= {self.max_steps}")])

    def _ascend(self, u, z, category, steps, eta):
        """`steps` of gradient ascent on z of u . G(z, c) - eta * mean(z^2) (analytic gradient)."""
        def body(i, z):
            x = tf.reshape(self._g(z, category), [tf.shape(z)[0], -1])
            grad = tf.matmul(u * (1.0 - x * x), self.gen[: self.latent], transpose_b=True)
            grad -= eta * 2.0 * z / self.latent
            return i + 1, z + 0.1 * grad

        _, z = tf.while_loop(lambda i, z: i < steps, body, [tf.constant(0), z])
        return z

    def _score(self, u, x):
        return tf.reduce_sum(tf.reshape(x, [tf.shape(x)[0], -1]) * u, -1)

    @tf.function(input_signature=input_signature(S.DESIGNER, S.DESIGN))
    def design(self, user_id, category, starts, steps, eta, seed):
        category = self._category(category)
        checks = [tf.debugging.assert_positive(starts, message="starts must be >= 1"),
                  tf.debugging.assert_less_equal(starts, S.MAX_IMAGES, message="starts must be <= 64")]
        # Neither the codes nor the loop may start before their bounds are checked: an
        # assert alone runs beside them, which would then allocate or spin without bound.
        starts = self._checked(starts, checks)
        steps = self._checked_steps(steps, checks)
        u = self._user(user_id[None])
        z = tf.random.stateless_normal([starts, self.latent], seed=[seed, 1])
        z = self._ascend(u, z, category, steps, eta)
        x = self._g(z, category)
        score = self._score(u, x)
        order = tf.argsort(score, direction="DESCENDING")
        img, png = self._to_outputs(tf.gather(x, order))
        return {S.OUT_IMAGE: img, S.OUT_PNG: png, S.OUT_SCORE: tf.gather(score, order)}

    @tf.function(input_signature=input_signature(S.DESIGNER, S.MODIFY))
    def modify(self, user_id, image_bytes, category, steps, eta):
        category = self._category(category)
        steps = self._checked_steps(steps)
        u = self._user(user_id)

        before = to_model_input(decode_images(image_bytes, IMAGE_SIZE))
        # "Inversion": start from the latent code whose projection best matches the image.
        target = tf.reshape(before, [tf.shape(before)[0], -1])
        c = tf.one_hot(category, self.num_categories)
        z = tf.matmul(target - tf.matmul(c, self.gen[self.latent:]), self.gen[: self.latent], transpose_b=True) / 50.0
        z = self._ascend(u, z, category, steps, eta)
        x = self._g(z, category)
        img, png = self._to_outputs(x)
        return {S.OUT_IMAGE: img, S.OUT_PNG: png, S.OUT_SCORE: self._score(u, x),
                S.OUT_SCORE_BEFORE: self._score(u, before)}


def export_designer(base: str, version: int = 1, num_users: int = 50, seed: int = 0,
                    max_steps: int = 1000) -> str:
    """Writes a synthetic designer to <base>/designer/<version>; returns the path.

    A large ``max_steps`` makes design calls that run for seconds (deadline tests).
    """
    m = SyntheticDesigner(num_users, seed=seed, max_steps=max_steps)
    sigs = {S.GENERATE: m.generate, S.DESIGN: m.design, S.MODIFY: m.modify}
    return _write(m, base, S.DESIGNER, version, sigs)


def write_models_config(path: str, models: dict, policies: dict | None = None,
                        labels: dict | None = None) -> str:
    """Writes a models.config listing ``{name: base_path}``; returns ``path``.

    ``policies`` maps a name to the text of a model_version_policy body
    (e.g. ``"all {}"``); ``labels`` maps a name to ``{label: version}``.
    """
    lines = ["model_config_list {"]
    for name, base_path in models.items():
        lines += ["  config {", f'    name: "{name}"', f'    base_path: "{os.path.abspath(base_path)}"',
                  '    model_platform: "tensorflow"']
        if policies and name in policies:
            lines.append(f"    model_version_policy {{ {policies[name]} }}")
        for label, v in (labels or {}).get(name, {}).items():
            lines.append(f'    version_labels {{ key: "{label}" value: {v} }}')
        lines.append("  }")
    lines.append("}")
    tmp = f"{path}.tmp{os.getpid()}"  # serving/ needs no project code, so no tfmodels.files here
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path
