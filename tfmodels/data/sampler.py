"""BPR triple sampler as a ``tf.data`` pipeline.

Each element is a dict of int32 [batch_size] tensors ``{"user", "pos", "neg"}``:

- ``user`` u: uniform over users that have training items (and at least one
  item they never interacted with),
- ``pos`` i: uniform over u's training items (the split's distinct pairs),
- ``neg`` j: uniform over the items u never interacted with in training, by
  rejection: draw j uniformly from the catalogue, redraw where (u, j) is a
  training pair. Membership is a binary search of the key ``u * N + j`` in the
  sorted training keys (``tf.searchsorted``), so a batch costs O(B log P) and
  never one Python step per triple.

Pixels are not in the batch: models gather them from an image table by index
inside the step. Sampling uses stateless random ops seeded by (seed, batch
number), so the stream is identical across runs and independent of how many
parallel calls ``map`` makes. The sampling ops run on the host CPU as part of
the input pipeline.
"""

from __future__ import annotations

import numpy as np

from tfmodels.data.dataset import Split

# Batches drawn per map call: amortises tf.data's per-element overhead.
_BATCHES_PER_CALL = 16


def _tables(split: Split):
    ni = split.num_items
    offsets = split.train_offsets()
    counts = np.diff(offsets)
    users = np.flatnonzero((counts > 0) & (counts < ni)).astype(np.int32)
    if len(users) == 0:
        raise ValueError("sampler: no user has both a training item and an item they never interacted with")
    keys = split.train_user.astype(np.int64) * ni + split.train_item
    if len(keys) > 1 and np.any(np.diff(keys) <= 0):
        raise ValueError("sampler: split training pairs must be distinct and sorted by (user, item)")
    return users, offsets[:-1], counts, keys


def bpr_triples(split: Split, batch_size: int, seed: int = 0):
    """An infinite ``tf.data.Dataset`` of BPR triples for ``split``.

    Args:
      split: training pairs (distinct, sorted by user then item).
      batch_size: triples per element (the per-replica batch under tf.distribute).
      seed: the stream is a deterministic function of (split, batch_size, seed).

    Returns:
      tf.data.Dataset of {"user", "pos", "neg"}: int32 [batch_size], where
      (user, pos) is a training pair and (user, neg) never is.
    """
    import tensorflow as tf

    if batch_size <= 0:
        raise ValueError(f"sampler: batch_size must be positive, got {batch_size}")
    users_np, offsets_np, counts_np, keys_np = _tables(split)
    ni = split.num_items
    users = tf.constant(users_np, tf.int32)
    offsets = tf.constant(offsets_np, tf.int64)
    counts = tf.constant(counts_np, tf.int64)
    keys = tf.constant(keys_np, tf.int64)
    train_item = tf.constant(split.train_item, tf.int32)
    num_keys = len(keys_np)
    shape = [_BATCHES_PER_CALL, batch_size]

    def is_train_pair(u, j):
        k = tf.cast(u, tf.int64) * ni + tf.cast(j, tf.int64)
        idx = tf.minimum(tf.searchsorted(keys, tf.reshape(k, [-1])), num_keys - 1)
        return tf.reshape(tf.gather(keys, idx), tf.shape(k)) == k

    def sample(call):
        key = tf.stack([tf.constant(seed, tf.int64), call])
        su, si, sj = tf.unstack(tf.random.experimental.stateless_split(key, 3))
        u = tf.gather(users, tf.random.stateless_uniform(shape, su, 0, len(users_np), dtype=tf.int32))
        # i: offset of u's first pair + floor(U[0,1) * count), clipped for float rounding.
        count = tf.gather(counts, u)
        r = tf.cast(tf.floor(tf.random.stateless_uniform(shape, si, dtype=tf.float64) * tf.cast(count, tf.float64)), tf.int64)
        pos = tf.gather(train_item, tf.gather(offsets, u) + tf.minimum(r, count - 1))
        j0 = tf.random.stateless_uniform(shape, sj, 0, ni, dtype=tf.int32)

        def redraw(it, j):
            bad = is_train_pair(u, j)
            fresh = tf.random.stateless_uniform(shape, tf.random.experimental.stateless_fold_in(sj, it), 0, ni, dtype=tf.int32)
            return it + 1, tf.where(bad, fresh, j)

        _, neg = tf.while_loop(lambda it, j: tf.reduce_any(is_train_pair(u, j)), redraw,
                               (tf.constant(1, tf.int64), j0))
        return {"user": u, "pos": pos, "neg": neg}

    ds = tf.data.Dataset.counter(dtype=tf.int64)
    ds = ds.map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.unbatch()  # [calls, B] -> elements of [B]
    return ds.prefetch(tf.data.AUTOTUNE)


def distributed_triples(strategy, split: Split, global_batch_size: int, seed: int = 0):
    """``bpr_triples`` distributed over ``strategy``'s replicas.

    Each input pipeline (one per worker) builds its own stream with batch size
    ``InputContext.get_per_replica_batch_size(global_batch_size)`` and a seed
    offset by its pipeline id, so workers draw different triples; the strategy
    hands successive batches of a worker's stream to its local replicas.

    Returns:
      a ``tf.distribute.DistributedDataset``: iterate it and pass each element to
      ``strategy.run``.
    """
    import tensorflow as tf

    def dataset_fn(ctx: tf.distribute.InputContext):
        per_replica = ctx.get_per_replica_batch_size(global_batch_size)
        return bpr_triples(split, per_replica, seed=seed * 1009 + ctx.input_pipeline_id)

    return strategy.distribute_datasets_from_function(dataset_fn)


def labelled_image_batches(images, categories, items, batch_size, seed):
    """Endless shuffled {"images": uint8 [b, R, R, 3], "category": int32 [b]} over ``items``.

    Only indices go through tf.data; each batch gathers its pixels from the host
    table (which may be a memmap of the on-disk image cache).
    """
    import tensorflow as tf

    res = images.shape[1]

    def gather(idx):
        idx = np.sort(idx)
        return np.asarray(images[idx]), categories[idx]

    ds = tf.data.Dataset.from_tensor_slices(np.asarray(items, np.int64))
    ds = ds.shuffle(len(items), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(lambda idx: tf.numpy_function(gather, [idx], [tf.uint8, tf.int32]),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda x, c: {"images": tf.ensure_shape(x, [batch_size, res, res, 3]),
                              "category": tf.ensure_shape(c, [batch_size])})
    return ds.prefetch(2)
