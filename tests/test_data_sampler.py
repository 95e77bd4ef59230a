"""BPR triple sampler: i from u's training items, j never, deterministic, distributable."""

from __future__ import annotations

import numpy as np
import pytest

import tfmodels  # noqa: F401
import tensorflow as tf

from tfmodels.data.dataset import Split
from tfmodels.data.sampler import bpr_triples, distributed_triples


def make_split(seed=0, num_users=40, num_items=30):
    rng = np.random.default_rng(seed)
    pairs = set()
    for u in range(num_users):
        k = rng.integers(0, num_items) if u % 7 else 0  # some users have no training items
        pairs |= {(u, int(i)) for i in rng.choice(num_items, k, replace=False)}
    # One user owns all items but one: j must be that one.
    pairs |= {(num_users - 1, i) for i in range(num_items - 1)}
    pairs = sorted(pairs)
    tu = np.array([p[0] for p in pairs], np.int32)
    ti = np.array([p[1] for p in pairs], np.int32)
    none = np.full(num_users, -1, np.int32)
    return Split(num_users, num_items, tu, ti, none, none)


def take(ds, n):
    out = {"user": [], "pos": [], "neg": []}
    for b in ds.take(n):
        for k in out:
            out[k].append(b[k].numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def test_triples_respect_training_pairs():
    split = make_split()
    train = set(zip(split.train_user.tolist(), split.train_item.tolist()))
    ds = bpr_triples(split, batch_size=64, seed=0)
    spec = ds.element_spec
    assert spec["user"].dtype == tf.int32 and spec["neg"].shape.as_list() == [64]
    t = take(ds, 50)
    assert len(t["user"]) == 3200
    assert all((u, i) in train for u, i in zip(t["user"], t["pos"]))
    assert not any((u, j) in train for u, j in zip(t["user"], t["neg"]))
    counts = np.bincount(split.train_user, minlength=split.num_users)
    assert set(np.unique(t["user"])) <= set(np.flatnonzero(counts > 0))
    last = t["user"] == split.num_users - 1
    assert last.any() and (t["neg"][last] == split.num_items - 1).all()
    # j covers the catalogue (uniform over the complement, not a few fixed items).
    assert len(np.unique(t["neg"])) == split.num_items


def test_user_distribution_is_uniform_over_active_users():
    split = make_split(num_users=10, num_items=50)
    t = take(bpr_triples(split, 256, seed=1), 40)
    active = np.flatnonzero(np.bincount(split.train_user, minlength=10) > 0)
    freq = np.bincount(t["user"], minlength=10)[active] / len(t["user"])
    np.testing.assert_allclose(freq, 1 / len(active), atol=0.02)


def test_deterministic_for_a_seed():
    split = make_split()
    a, b = take(bpr_triples(split, 32, seed=5), 5), take(bpr_triples(split, 32, seed=5), 5)
    c = take(bpr_triples(split, 32, seed=6), 5)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["neg"], c["neg"])


def test_empty_split_is_an_error():
    none = np.full(2, -1, np.int32)
    with pytest.raises(ValueError, match="no user"):
        bpr_triples(Split(2, 3, np.zeros(0, np.int32), np.zeros(0, np.int32), none, none), 4)


def test_distributed_triples_per_replica_batch():
    split = make_split()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    dist = distributed_triples(strategy, split, global_batch_size=16, seed=0)
    batch = next(iter(dist))
    values = strategy.experimental_local_results(batch["neg"])
    assert len(values) == 1 and values[0].shape == (16,)
    train = set(zip(split.train_user.tolist(), split.train_item.tolist()))
    users = strategy.experimental_local_results(batch["user"])[0].numpy()
    assert not any((u, j) in train for u, j in zip(users, values[0].numpy()))


@pytest.mark.slow
def test_distributed_triples_two_logical_cpus_in_subprocess():
    # Logical devices must be set before TensorFlow initialises, so this runs in a fresh process.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import tfmodels, numpy as np
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tfmodels.data.dataset import Split
        from tfmodels.data.sampler import distributed_triples
        none = np.full(4, -1, np.int32)
        split = Split(4, 10, np.array([0, 0, 1, 2, 3], np.int32), np.array([1, 2, 3, 4, 5], np.int32), none, none)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        batch = next(iter(distributed_triples(strategy, split, global_batch_size=8)))
        shapes = [tuple(v.shape) for v in strategy.experimental_local_results(batch["user"])]
        print("SHAPES", shapes)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "SHAPES [(4,), (4,)]" in out.stdout, out.stderr[-2000:]
