"""Leave-one-out splits as in the DVBPR paper, and their statistics.

For every user, the distinct items they interacted with are ordered by the time
of their *first* interaction with each item (ties broken by file order; with no
timestamps, a seeded random order). The last item is the test item, the one
before it the validation item, and all other distinct items are training pairs.
Users with fewer than 3 distinct items keep everything in training (no held-out
item). A repeated purchase of a held-out item is removed from that user's
training pairs, so a user's validation and test items are never among their
training items (no leakage).

All of it is vectorised NumPy (sorts and segment offsets), fine for 31M
interactions. Runs on the host.
"""

from __future__ import annotations

import numpy as np

from tfmodels.data.dataset import Dataset, Split

MIN_ITEMS_FOR_HOLDOUT = 3


def _check_split(split: Split, dataset: Dataset) -> Split:
    if split.num_users != dataset.num_users or split.num_items != dataset.num_items:
        raise ValueError(f"dataset {dataset.name!r}: its predefined split is for {split.num_users} users x "
                         f"{split.num_items} items, the dataset has {dataset.num_users} x {dataset.num_items}")
    return split


def leave_one_out(dataset: Dataset, seed: int = 0) -> Split:
    """The leave-one-out split of ``dataset`` (its ``predefined_split`` if it has one).

    Args:
      dataset: interactions (user, item, optional time) in file order.
      seed: orders each user's items when there are no timestamps.

    Returns:
      Split with distinct training pairs sorted by (user, item), and one
      validation and one test item per user with >= 3 distinct items (-1 elsewhere).
    """
    if dataset.predefined_split is not None:
        return _check_split(dataset.predefined_split, dataset)
    nu, ni = dataset.num_users, dataset.num_items
    user = np.asarray(dataset.inter_user, np.int64)
    item = np.asarray(dataset.inter_item, np.int64)
    n = len(user)
    if n and (user.min() < 0 or user.max() >= nu or item.min() < 0 or item.max() >= ni):
        raise ValueError(f"dataset {dataset.name!r}: interaction indices out of range")
    pos = np.arange(n, dtype=np.int64)

    # First interaction of each (user, item): sort by (user, time, file position),
    # then np.unique's first occurrence in that order.
    if dataset.inter_time is not None:
        order = np.lexsort((pos, np.asarray(dataset.inter_time, np.int64), user))
    else:
        order = np.lexsort((pos, user))
    keys = user[order] * ni + item[order]
    uniq_keys, first = np.unique(keys, return_index=True)
    pair_user = uniq_keys // max(ni, 1)
    pair_item = uniq_keys % max(ni, 1)
    if dataset.inter_time is not None:
        rank = first  # position in the (user, time, file order) sort
    else:
        rank = np.random.default_rng(seed).permutation(len(uniq_keys))
    # Distinct items of each user in chronological order.
    chrono = np.lexsort((rank, pair_user))
    pair_user, pair_item = pair_user[chrono], pair_item[chrono]

    counts = np.bincount(pair_user, minlength=nu)
    ends = np.cumsum(counts)
    held = counts >= MIN_ITEMS_FOR_HOLDOUT
    val_item = np.full(nu, -1, np.int32)
    test_item = np.full(nu, -1, np.int32)
    test_item[held] = pair_item[ends[held] - 1]
    val_item[held] = pair_item[ends[held] - 2]
    in_train = np.ones(len(pair_user), bool)
    in_train[ends[held] - 1] = False
    in_train[ends[held] - 2] = False

    train_keys = np.sort(pair_user[in_train] * ni + pair_item[in_train])
    return Split(
        num_users=nu,
        num_items=ni,
        train_user=(train_keys // max(ni, 1)).astype(np.int32),
        train_item=(train_keys % max(ni, 1)).astype(np.int32),
        val_item=val_item,
        test_item=test_item,
    )


def split_stats(dataset: Dataset, split: Split) -> dict:
    """Counts describing a dataset and its split, as one flat JSON-able dict.

    Keys: users, items, interactions, distinct_pairs, categories, users_with_items,
    train_pairs, train_users, val_users, test_users, cold_items (no training
    pair), cold_val_items / cold_test_items (held-out val/test entries, one per
    user, whose item has no training pair: the cold-start subset),
    cold_val_items_distinct / cold_test_items_distinct, heldout_items_never_trained_share
    (share of never-trained items that are somebody's held-out item; 1.0 is the
    H&M trap where "unseen in training" alone predicts the held-out item).
    """
    ni = dataset.num_items
    keys = np.unique(np.asarray(dataset.inter_user, np.int64) * ni + dataset.inter_item)
    cold = split.cold_items()
    val_users = split.val_item >= 0
    test_users = split.test_item >= 0
    val_cold = cold[split.val_item[val_users]]
    test_cold = cold[split.test_item[test_users]]
    never_trained = np.flatnonzero(cold)
    heldout = np.union1d(split.val_item[val_users], split.test_item[test_users])
    catalogue_cold = len(never_trained)
    stats = {
        "dataset": dataset.name,
        "users": int(dataset.num_users),
        "items": int(ni),
        "interactions": int(dataset.num_interactions),
        "distinct_pairs": int(len(keys)),
        "categories": len(dataset.category_names),
        "items_with_category": int((np.asarray(dataset.categories) >= 0).sum()),
        "users_with_items": int(len(np.unique(dataset.inter_user))),
        "has_timestamps": dataset.inter_time is not None,
        "predefined_split": dataset.predefined_split is not None,
        "train_pairs": int(len(split.train_item)),
        "train_users": int(len(np.unique(split.train_user))),
        "val_users": int(val_users.sum()),
        "test_users": int(test_users.sum()),
        "cold_items": int(catalogue_cold),
        "cold_val_items": int(val_cold.sum()),
        "cold_test_items": int(test_cold.sum()),
        "cold_val_items_distinct": int(len(np.unique(split.val_item[val_users][val_cold]))),
        "cold_test_items_distinct": int(len(np.unique(split.test_item[test_users][test_cold]))),
        "heldout_items_never_trained_share": (
            float(np.isin(never_trained, heldout).mean()) if catalogue_cold else None),
    }
    return stats
