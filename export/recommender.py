"""The ``recommender`` SavedModel: DVBPR scoring, cold-start scoring and top-k retrieval.

``RecommenderModule`` (a ``tf.Module``) holds everything a served DVBPR needs:

* the item tower Phi (the trained CNN-F, a Keras model) for images never seen in training,
* the user vectors theta [U, K] and the catalogue's item embeddings E = Phi(X) [N, K],
  computed once at export time, as non-trainable variables,
* id -> index lookup tables (``tf.lookup.StaticHashTable``) so callers use their
  own string ids (H&M ``customer_id`` / ``article_id``),
* a tensorflow-recommenders retrieval index (``tfrs.layers.factorized_top_k.BruteForce``
  over E, identifiers = item indices) for ``recommend``,
* each user's training items (a ragged table) for ``exclude_purchased``.

Signatures (keys are the constants of ``export.signatures``; B = batch rows):

=================  ==========================================  =============================================
signature          inputs                                      outputs
=================  ==========================================  =============================================
serving_default,   user_id string [B], item_id string [B]      score float32 [B] = theta_u . E_i,
score                                                          known bool [B]
score_images       user_id string [B], image_bytes string [B]  score float32 [B] = theta_u . Phi(decode(img)),
                                                               known bool [B]
item_embedding     image_bytes string [B]                      embedding float32 [B, K]
user_embedding     user_id string [B]                          embedding float32 [B, K], known bool [B]
recommend          user_id string [B], k int32 [],             item_id string [B, k], score float32 [B, k],
                   exclude_purchased bool []                   known bool [B]
=================  ==========================================  =============================================

Unknown ids are *flagged, not failed*: a row whose user (or, for ``score``, item)
id is not in the tables gets ``known = False`` and a score of exactly 0 (and a
zero embedding; in ``recommend`` item ids "" and scores 0), so one new id does not
fail a whole batch of candidates, and nothing scores silently as if it were known.
Callers must look at ``known``.

Everything else that is wrong is an ``INVALID_ARGUMENT`` error with a message
(``tf.debugging.assert_*`` inside the graph): an empty batch, inputs of different
lengths, image bytes that are not a JPEG or PNG or do not decode, an image whose
header claims more than ``export.signatures.MAX_IMAGE_PIXELS`` pixels (checked
before it is decoded), ``k < 1`` or ``k``
larger than the catalogue. With ``exclude_purchased`` a user with fewer than k
unpurchased items gets the remaining slots as item id "" and score -inf.

Images (``score_images``, ``item_embedding``) are prepared inside the graph the way
the training images were (``tfmodels.data.images.square_resize``): decoded (a
transparent PNG goes on white), resized with a Lanczos filter so the longer side
is R, padded to an R x R square with each margin in the colour of the image side
it extends (median of a 4-px strip when that strip is nearly uniform, else of the
whole border, else white), then mapped to [-1, 1] by ``x / 127.5 - 1``.
TensorFlow's Lanczos kernel differs slightly from Pillow's, so pixels differ by
a few levels at most.

Everything runs inside the SavedModel's graph (TensorFlow Serving, the
session-based loader, or ``tf.saved_model.load``); nothing of this package is
needed to serve it.
"""

from __future__ import annotations

import tfmodels  # noqa: F401  (tf-keras before TensorFlow)

import numpy as np
import tensorflow as tf

from export import signatures as S
from tfmodels.data.pixels import embed_in_batches, to_model_input

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Margins of a padded image take a strip's median colour when its per-channel
# median absolute deviation is at most this many levels (as in data/images.py).
_UNIFORM_MAD = 12.0
_STRIP = 4


# --------------------------------------------------------------------------- in-graph image preparation


def _median(x: tf.Tensor) -> tf.Tensor:
    """Per-column median of float [n, C] like np.median (mean of the two middle values)."""
    s = tf.sort(x, axis=0)
    n = tf.shape(s)[0]
    return 0.5 * (tf.gather(s, (n - 1) // 2) + tf.gather(s, n // 2))


def _uniform_colour(pixels: tf.Tensor):
    """(colour float [3] = floor(median), is_uniform bool) for pixels float [n, 3]."""
    med = _median(pixels)
    mad = _median(tf.abs(pixels - med))
    return tf.floor(med), tf.reduce_all(mad <= _UNIFORM_MAD)


def _resize(img: tf.Tensor, size) -> tf.Tensor:
    """Lanczos resize of float [h, w, 3] to ``size`` (antialiased when shrinking), rounded like uint8."""
    out = tf.image.resize(img[None], size, method="lanczos3", antialias=True)[0]
    return tf.clip_by_value(tf.round(out), 0.0, 255.0)


def square_resize_tf(img: tf.Tensor, resolution: int) -> tf.Tensor:
    """In-graph twin of ``tfmodels.data.images.square_resize``: uint8 [h, w, 3] -> uint8 [R, R, 3].

    A wide image is transposed, handled as a tall one and transposed back (the
    resize is separable and the margins are per side, so this is the same recipe).
    """
    R = int(resolution)
    img = tf.cast(img, tf.float32)
    shape = tf.shape(img)
    wide = shape[1] > shape[0]
    x = tf.cond(wide, lambda: tf.transpose(img, [1, 0, 2]), lambda: img)

    def square():
        same = tf.logical_and(tf.shape(x)[0] == R, tf.shape(x)[1] == R)
        return tf.cond(same, lambda: x, lambda: _resize(x, [R, R]))

    def pad():
        h, w = tf.shape(x)[0], tf.shape(x)[1]
        # Resized product photos carry a darker 1-2 px ringing line on their outer
        # columns: drop it on the sides being padded (only for images >= 64 px).
        trim = tf.where(w >= 64, 2, 0)
        t = x[:, trim:w - trim]
        w = tf.shape(t)[1]
        border = tf.concat([t[0], t[-1], t[:, 0], t[:, -1]], axis=0)
        border_colour, border_uniform = _uniform_colour(border)
        fallback = tf.where(border_uniform, border_colour, tf.constant([255.0, 255.0, 255.0]))
        colours = []
        for strip in (t[:, :_STRIP], t[:, -_STRIP:]):
            colour, uniform = _uniform_colour(tf.reshape(strip, [-1, 3]))
            colours.append(tf.where(uniform, colour, fallback))
        # Python's round() and tf.round both round half to even.
        nw = tf.cast(tf.round(tf.cast(w, tf.float64) * R / tf.cast(h, tf.float64)), tf.int32)
        nw = tf.clip_by_value(nw, 1, R)
        same = tf.logical_and(h == R, w == nw)
        small = tf.cond(same, lambda: t, lambda: _resize(t, tf.stack([R, nw])))
        left = (R - nw) // 2
        left_pad = tf.broadcast_to(colours[0], tf.stack([R, left, 3]))
        right_pad = tf.broadcast_to(colours[1], tf.stack([R, R - left - nw, 3]))
        return tf.concat([left_pad, small, right_pad], axis=1)

    out = tf.cond(tf.shape(x)[0] == tf.shape(x)[1], square, pad)
    out = tf.cond(wide, lambda: tf.transpose(out, [1, 0, 2]), lambda: out)
    return tf.cast(tf.ensure_shape(out, [R, R, 3]), tf.uint8)


def _png_size(data: tf.Tensor) -> tf.Tensor:
    """(height, width) int64 from a PNG's IHDR chunk (bytes 16-23, big-endian), without decoding.

    Shorter data reads as 0 x 0 and is then refused by the decoder.
    """
    head = tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, 24), b"\0" * 24]), 16, 8)
    b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)
    width = b[0] * 2**24 + b[1] * 2**16 + b[2] * 2**8 + b[3]
    height = b[4] * 2**24 + b[5] * 2**16 + b[6] * 2**8 + b[7]
    return tf.stack([height, width])


def _decode_one(data: tf.Tensor, max_pixels: int, name: str) -> tf.Tensor:
    """JPEG or PNG bytes -> uint8 [h, w, 3]; a transparent PNG is composited on white.

    The header's dimensions are checked against ``max_pixels`` before decoding:
    decoders allocate what the header claims, whatever the file's size.
    """
    is_png = tf.strings.substr(data, 0, len(_PNG_MAGIC)) == _PNG_MAGIC
    size = tf.cond(is_png, lambda: _png_size(data),
                   lambda: tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64))
    check = tf.debugging.Assert(
        size[0] * size[1] <= max_pixels,
        [f"{name}: image larger than the limit of {max_pixels} pixels (height x width):", size], summarize=2)
    with tf.control_dependencies([check]):
        data = tf.identity(data)

    def png():
        rgba = tf.cast(tf.io.decode_png(data, channels=4), tf.float32)
        alpha = rgba[..., 3:] / 255.0
        return tf.cast(tf.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)), tf.uint8)

    def jpeg():
        return tf.io.decode_jpeg(data, channels=3)

    return tf.cond(is_png, png, jpeg)


def input_signature(model: str, signature: str) -> list:
    """The contract's inputs of one signature (``S.SIGNATURES[model][signature]``) as ``tf.TensorSpec`` s named
    by their keys, in the contract's order: the argument order of every exported method."""
    return [tf.TensorSpec(t.shape, tf.as_dtype(t.dtype), name=key)
            for key, t in S.SIGNATURES[model][signature].inputs.items()]


def check_batch(name: str, tensor: tf.Tensor) -> list:
    """Assertions that ``tensor`` (rank 1) has at least one row; returns the assert ops."""
    return [tf.debugging.assert_positive(tf.size(tensor), message=f"{name}: empty batch (need at least one row)")]


def check_same_length(a_name: str, a: tf.Tensor, b_name: str, b: tf.Tensor) -> list:
    return [tf.debugging.assert_equal(tf.size(a), tf.size(b),
                                      message=f"{a_name} and {b_name} must have the same number of rows")]


def decode_images(image_bytes: tf.Tensor, resolution: int, name: str = S.IMAGE_BYTES,
                  max_pixels: int = S.MAX_IMAGE_PIXELS) -> tf.Tensor:
    """Encoded JPEG/PNG images string [B] -> uint8 [B, R, R, 3], prepared like the training images.

    Raises (at run time, INVALID_ARGUMENT): an empty batch, rows that are not
    a JPEG or PNG (their row numbers are in the message), an image whose header
    claims more than ``max_pixels`` pixels (checked before decoding); a JPEG/PNG
    that does not decode fails with TensorFlow's decoder message.
    """
    image_bytes = tf.reshape(image_bytes, [-1])
    head = tf.strings.substr(image_bytes, 0, 8)
    ok = tf.logical_or(tf.strings.substr(head, 0, len(_JPEG_MAGIC)) == _JPEG_MAGIC,
                       tf.strings.substr(head, 0, len(_PNG_MAGIC)) == _PNG_MAGIC)
    checks = check_batch(name, image_bytes) + [
        tf.debugging.Assert(
            tf.reduce_all(ok),
            [f"{name}: not a JPEG or PNG image (corrupt or wrong format) at rows",
             tf.reshape(tf.where(tf.logical_not(ok)), [-1])], summarize=20)]
    with tf.control_dependencies(checks):
        image_bytes = tf.identity(image_bytes)
    R = int(resolution)
    return tf.map_fn(lambda b: square_resize_tf(_decode_one(b, max_pixels, name), R), image_bytes,
                     fn_output_signature=tf.TensorSpec([R, R, 3], tf.uint8))


def string_table(keys, name: str) -> tf.lookup.StaticHashTable:
    """A string -> int32 row table (default -1) built from ``keys`` (row order)."""
    keys = np.asarray([str(k) for k in keys], dtype=object)
    if len(set(keys.tolist())) != len(keys):
        raise ValueError(f"{name}: ids are not unique")
    init = tf.lookup.KeyValueTensorInitializer(
        tf.constant(keys, tf.string), tf.range(len(keys), dtype=tf.int32), tf.string, tf.int32)
    return tf.lookup.StaticHashTable(init, default_value=-1, name=name)


# --------------------------------------------------------------------------- the module


class RecommenderModule(tf.Module):
    """DVBPR as a served model (see the module docstring for the signatures).

    Build it with :func:`build_recommender_module` from a trained model, or directly
    from arrays (tests).
    """

    def __init__(self, item_tower: tf.keras.Model, user_vectors: np.ndarray, item_embeddings: np.ndarray,
                 user_ids, item_ids, train_user: np.ndarray, train_item: np.ndarray, resolution: int,
                 name: str = S.RECOMMENDER):
        """
        Args:
          item_tower: Phi, float [B, R, R, 3] in [-1, 1] -> [B, K].
          user_vectors: theta, float32 [U, K].
          item_embeddings: E = Phi(X) of the catalogue, float32 [N, K] (inference mode).
          user_ids, item_ids: the caller-facing string ids, [U] and [N], in row order.
          train_user, train_item: int [P] pairs (user row, item row) that
            ``exclude_purchased`` removes from recommendations.
          resolution: R, the tower's input side.
        """
        super().__init__(name=name)
        import tensorflow_recommenders as tfrs

        user_vectors = np.asarray(user_vectors, np.float32)
        item_embeddings = np.asarray(item_embeddings, np.float32)
        if user_vectors.ndim != 2 or item_embeddings.ndim != 2 or user_vectors.shape[1] != item_embeddings.shape[1]:
            raise ValueError(f"user vectors {user_vectors.shape} and item embeddings {item_embeddings.shape} "
                             "must be [U, K] and [N, K] with the same K")
        if len(user_ids) != len(user_vectors) or len(item_ids) != len(item_embeddings):
            raise ValueError(f"{len(user_ids)} user ids for {len(user_vectors)} user vectors, "
                             f"{len(item_ids)} item ids for {len(item_embeddings)} item embeddings")
        if len(item_embeddings) == 0 or len(user_vectors) == 0:
            raise ValueError("the recommender needs at least one user and one item")
        self.item_tower = item_tower
        self.resolution = int(resolution)
        self.num_users, self.embedding_dim = user_vectors.shape
        self.num_items = len(item_embeddings)
        self.user_vectors = tf.Variable(user_vectors, trainable=False, name="user_vectors")
        self.item_embeddings = tf.Variable(item_embeddings, trainable=False, name="item_embeddings")
        self.item_ids = tf.Variable(np.asarray([str(i) for i in item_ids], dtype=object), trainable=False,
                                    dtype=tf.string, name="item_ids")
        self.user_table = string_table(user_ids, "user_ids")
        self.item_table = string_table(item_ids, "item_ids")
        # The retrieval index: identifiers are item rows (int32), mapped to ids afterwards.
        self.index = tfrs.layers.factorized_top_k.BruteForce(k=10, name="retrieval_index")
        self.index.index(tf.constant(item_embeddings), tf.range(self.num_items, dtype=tf.int32))
        # Each user's training items as a ragged table (row splits over users).
        order = np.lexsort((np.asarray(train_item), np.asarray(train_user)))
        tu = np.asarray(train_user, np.int64)[order]
        ti = np.asarray(train_item, np.int32)[order]
        splits = np.zeros(self.num_users + 1, np.int64)
        np.add.at(splits, tu + 1, 1)
        self.purchase_splits = tf.Variable(np.cumsum(splits), trainable=False, name="purchase_splits")
        self.purchase_items = tf.Variable(ti, trainable=False, name="purchase_items")

    # -- helpers (graph code, called from the signatures)

    def _users(self, user_id):
        """(row int32 [B] with unknown -> 0, known bool [B], theta [B, K] with unknown -> 0)."""
        row = self.user_table.lookup(user_id)
        known = row >= 0
        safe = tf.maximum(row, 0)
        theta = tf.gather(self.user_vectors, safe) * tf.cast(known, tf.float32)[:, None]
        return safe, known, theta

    def _embed(self, image_bytes):
        pixels = to_model_input(decode_images(image_bytes, self.resolution))
        return tf.cast(self.item_tower(pixels, training=False), tf.float32)

    # -- signatures

    @tf.function(input_signature=input_signature(S.RECOMMENDER, S.SCORE))
    def score(self, user_id, item_id):
        checks = check_batch(S.USER_ID, user_id) + check_same_length(S.USER_ID, user_id, S.ITEM_ID, item_id)
        with tf.control_dependencies(checks):
            _, user_known, theta = self._users(user_id)
        item_row = self.item_table.lookup(item_id)
        known = tf.logical_and(user_known, item_row >= 0)
        emb = tf.gather(self.item_embeddings, tf.maximum(item_row, 0))
        score = tf.where(known, tf.reduce_sum(theta * emb, axis=-1), 0.0)
        return {S.OUT_SCORE: score, S.OUT_KNOWN: known}

    @tf.function(input_signature=input_signature(S.RECOMMENDER, S.SCORE_IMAGES))
    def score_images(self, user_id, image_bytes):
        checks = check_batch(S.USER_ID, user_id) + check_same_length(S.USER_ID, user_id, S.IMAGE_BYTES, image_bytes)
        with tf.control_dependencies(checks):
            _, known, theta = self._users(user_id)
        emb = self._embed(image_bytes)
        score = tf.where(known, tf.reduce_sum(theta * emb, axis=-1), 0.0)
        return {S.OUT_SCORE: score, S.OUT_KNOWN: known}

    @tf.function(input_signature=input_signature(S.RECOMMENDER, S.ITEM_EMBEDDING))
    def item_embedding(self, image_bytes):
        return {S.OUT_EMBEDDING: self._embed(image_bytes)}

    @tf.function(input_signature=input_signature(S.RECOMMENDER, S.USER_EMBEDDING))
    def user_embedding(self, user_id):
        with tf.control_dependencies(check_batch(S.USER_ID, user_id)):
            _, known, theta = self._users(user_id)
        return {S.OUT_EMBEDDING: theta, S.OUT_KNOWN: known}

    @tf.function(input_signature=input_signature(S.RECOMMENDER, S.RECOMMEND))
    def recommend(self, user_id, k, exclude_purchased):
        n = self.num_items
        checks = check_batch(S.USER_ID, user_id) + [
            tf.debugging.assert_positive(k, message="k must be at least 1"),
            tf.debugging.assert_less_equal(k, n, message=f"k is larger than the catalogue ({n} items)"),
        ]
        with tf.control_dependencies(checks):
            row, known, theta = self._users(user_id)
        # Purchases of each row's user, padded with -1: [B, P] (P = 0 unless excluding).
        bought = tf.RaggedTensor.from_row_splits(self.purchase_items, self.purchase_splits, validate=False)
        bought = tf.gather(bought, row).to_tensor(default_value=-1)
        bought = bought[:, :tf.where(exclude_purchased, tf.shape(bought)[1], 0)]
        # Ask the index for k + P candidates so that k remain after removing purchases.
        wanted = tf.minimum(k + tf.shape(bought)[1], n)
        scores, items = self.index(theta, k=wanted)
        removed = tf.reduce_any(tf.equal(items[:, :, None], bought[:, None, :]), axis=-1)
        scores = tf.where(removed, tf.constant(-np.inf, tf.float32), scores)
        scores, pos = tf.math.top_k(scores, k=k)
        items = tf.gather(items, pos, batch_dims=1)
        valid = tf.logical_and(known[:, None], scores > -np.inf)
        ids = tf.where(valid, tf.gather(self.item_ids, items), "")
        scores = tf.where(known[:, None], scores, 0.0)
        return {S.OUT_ITEM_ID: ids, S.OUT_SCORE: scores, S.OUT_KNOWN: known}

    def signatures(self) -> dict:
        """Signature name -> concrete function, as passed to ``tf.saved_model.save``."""
        score = self.score.get_concrete_function()
        return {
            S.SERVING_DEFAULT: score,
            S.SCORE: score,
            S.SCORE_IMAGES: self.score_images.get_concrete_function(),
            S.ITEM_EMBEDDING: self.item_embedding.get_concrete_function(),
            S.USER_EMBEDDING: self.user_embedding.get_concrete_function(),
            S.RECOMMEND: self.recommend.get_concrete_function(),
        }


def build_recommender_module(model, dataset, split, images: np.ndarray) -> RecommenderModule:
    """A ``RecommenderModule`` from a trained DVBPR (``tfmodels.training.recommender.load_dvbpr``).

    Embeds the whole catalogue once (``embed_in_batches``, host); exclusions are the
    split's training pairs.
    """
    item_emb = embed_in_batches(model.item_embeddings, images)
    theta = model.user_embedding.embeddings.numpy()
    return RecommenderModule(model.item_tower, theta, item_emb, dataset.user_ids, dataset.item_ids,
                             split.train_user, split.train_item, resolution=int(images.shape[1]))


def warmup_inputs(module: RecommenderModule, user_ids, item_ids, image_png: bytes) -> list:
    """[(signature, inputs)] for the warm-up file: one small valid request per signature."""
    u = np.array([str(user_ids[0]).encode()], dtype=object)
    i = np.array([str(item_ids[0]).encode()], dtype=object)
    img = np.array([image_png], dtype=object)
    return [
        (S.SERVING_DEFAULT, {S.USER_ID: u, S.ITEM_ID: i}),
        (S.SCORE, {S.USER_ID: u, S.ITEM_ID: i}),
        (S.SCORE_IMAGES, {S.USER_ID: u, S.IMAGE_BYTES: img}),
        (S.ITEM_EMBEDDING, {S.IMAGE_BYTES: img}),
        (S.USER_EMBEDDING, {S.USER_ID: u}),
        (S.RECOMMEND, {S.USER_ID: u, S.K: np.int32(min(10, module.num_items)), S.EXCLUDE_PURCHASED: np.bool_(True)}),
    ]
