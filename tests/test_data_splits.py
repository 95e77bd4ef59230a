"""Leave-one-out: the right held-out items, no leakage, and the cold counts."""

from __future__ import annotations

import numpy as np
import pytest

import tfmodels  # noqa: F401
from tfmodels.data.dataset import Dataset, Split
from tfmodels.data.images import ArrayImageSource
from tfmodels.data.splits import leave_one_out, split_stats


def make(users, items, times=None, num_users=None, num_items=None):
    nu = num_users or (max(users) + 1)
    ni = num_items or (max(items) + 1)
    return Dataset(
        name="t", item_ids=np.arange(ni).astype(str), images=ArrayImageSource(np.zeros((ni, 4, 4), np.uint8), "x"),
        categories=np.full(ni, -1, np.int32), category_names=[], user_ids=np.arange(nu).astype(str),
        inter_user=np.asarray(users, np.int32), inter_item=np.asarray(items, np.int32),
        inter_time=None if times is None else np.asarray(times, np.int64))


def test_last_items_by_time_ties_by_file_order():
    # user 0: items 5 (t=1), 6 (t=3), 7 (t=3, later in file), 8 (t=2) -> test 7, val 6.
    # user 1: two distinct items only -> training only.
    d = make([0, 0, 0, 0, 1, 1], [5, 6, 7, 8, 5, 6], [1, 3, 3, 2, 1, 2], num_items=10)
    s = leave_one_out(d)
    assert s.test_item.tolist() == [7, -1] and s.val_item.tolist() == [6, -1]
    pairs = list(zip(s.train_user.tolist(), s.train_item.tolist()))
    assert pairs == [(0, 5), (0, 8), (1, 5), (1, 6)]


def test_repeat_purchase_of_heldout_item_is_not_in_training():
    # user 0 buys 1, 2, 3, then 1 again: distinct items by first purchase are 1, 2, 3 -> test 3, val 2.
    # Then: 4 first bought at t=5 but also at t=0 -> ordered by its first purchase.
    d = make([0, 0, 0, 0, 0], [1, 2, 3, 1, 4], [1, 2, 3, 4, 0], num_items=5)
    s = leave_one_out(d)
    assert s.test_item[0] == 3 and s.val_item[0] == 2
    assert s.train_item.tolist() == [1, 4]


def test_no_leakage_and_coverage_random():
    rng = np.random.default_rng(1)
    n = 3000
    users = rng.integers(0, 200, n)
    items = rng.integers(0, 300, n)
    times = rng.integers(0, 50, n)
    for t in (times, None):
        d = make(users, items, t, num_users=210, num_items=300)
        s = leave_one_out(d, seed=3)
        train = set(zip(s.train_user.tolist(), s.train_item.tolist()))
        assert len(train) == len(s.train_user)  # distinct pairs
        keys = s.train_user.astype(np.int64) * 300 + s.train_item
        assert np.all(np.diff(keys) > 0)  # sorted by (user, item)
        all_pairs = set(zip(users.tolist(), items.tolist()))
        held = set()
        for u in range(210):
            distinct = {i for uu, i in all_pairs if uu == u}
            if len(distinct) >= 3:
                assert s.val_item[u] != s.test_item[u]
                assert s.val_item[u] in distinct and s.test_item[u] in distinct
                assert (u, s.val_item[u]) not in train and (u, s.test_item[u]) not in train
                held |= {(u, int(s.val_item[u])), (u, int(s.test_item[u]))}
            else:
                assert s.val_item[u] == -1 and s.test_item[u] == -1
        assert train | held == all_pairs and not (train & held)


def test_without_timestamps_order_is_seeded():
    rng = np.random.default_rng(0)
    d = make(rng.integers(0, 30, 600), rng.integers(0, 100, 600))
    a, b, c = leave_one_out(d, seed=1), leave_one_out(d, seed=1), leave_one_out(d, seed=2)
    assert np.array_equal(a.test_item, b.test_item) and np.array_equal(a.train_item, b.train_item)
    assert not np.array_equal(a.test_item, c.test_item)


def test_split_stats_counts_cold_items():
    # Users 0 and 1 hold out items that nobody trains on (cold); user 2 trains on 7.
    d = make([0, 0, 0, 0, 1, 1, 1, 2, 2], [1, 2, 3, 4, 1, 5, 6, 7, 1], [1, 2, 3, 4, 1, 2, 3, 1, 2], num_items=9)
    s = leave_one_out(d)
    st = split_stats(d, s)
    assert st["users"] == 3 and st["items"] == 9 and st["interactions"] == 9 and st["distinct_pairs"] == 9
    assert st["val_users"] == 2 and st["test_users"] == 2
    # held out: user 0 -> val 3, test 4; user 1 -> val 5, test 6; none of 3, 4, 5, 6 is trained.
    assert st["cold_val_items"] == 2 and st["cold_test_items"] == 2
    assert st["cold_items"] == 6  # 0, 3, 4, 5, 6, 8 have no training pair
    assert st["train_pairs"] == 5


def test_predefined_split_is_used_and_checked():
    d = make([0, 0, 0], [0, 1, 2], num_items=3)
    pre = Split(1, 3, np.array([0], np.int32), np.array([2], np.int32), np.array([0], np.int32), np.array([1], np.int32))
    d.predefined_split = pre
    assert leave_one_out(d) is pre
    d.predefined_split = Split(2, 3, pre.train_user, pre.train_item, np.zeros(2, np.int32), np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="predefined split is for 2 users"):
        leave_one_out(d)
