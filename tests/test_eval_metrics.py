"""evaluation.evaluate_split against brute-force references on small hand-made splits."""

import math

import tfmodels  # noqa: F401  (sets tf-keras before anything imports TensorFlow)
import numpy as np
import pytest

from tfmodels import evaluation
from tfmodels.data.dataset import Split


def make_split(num_users=40, num_items=60, seed=0, cold_share=0.3):
    """Random leave-one-out split; some held-out items are cold (never in training)."""
    rng = np.random.default_rng(seed)
    cold_pool = rng.choice(num_items, int(num_items * cold_share), replace=False)
    warm_pool = np.setdiff1d(np.arange(num_items), cold_pool)
    tu, ti, val, test = [], [], [], []
    for u in range(num_users):
        n_train = rng.integers(1, 8)
        items = rng.choice(warm_pool, n_train, replace=False)
        rest = np.setdiff1d(np.arange(num_items), items)
        held = rng.choice(rest, 2, replace=False)
        if u % 7 == 3:  # some users have no held-out items at all
            held = np.array([-1, -1])
        tu += [u] * n_train
        ti += sorted(items.tolist())
        val.append(held[0])
        test.append(held[1])
    split = Split(num_users, num_items, np.array(tu, np.int32), np.array(ti, np.int32),
                  np.array(val, np.int32), np.array(test, np.int32))
    # Held-out items that happen to be warm stay warm; the cold pool is cold unless nobody trained on it.
    return split


def brute_force(scores, split, which, neg_filter=None):
    """Per-user, per-item loops: the definition in the module docstring, written naively."""
    held = split.test_item if which == "test" else split.val_item
    other = split.val_item if which == "test" else split.test_item
    trained = set(split.train_item.tolist())
    out = {"all": [], "cold": [], "cvc": []}
    for u in range(split.num_users):
        i = held[u]
        if i < 0:
            continue
        own = set(split.train_item[split.train_user == u].tolist()) | {other[u], i}
        negs = [j for j in range(split.num_items) if j not in own]
        if neg_filter is not None:
            negs = [j for j in negs if neg_filter[u, j]]
        won = sum(1.0 if scores[u, i] > scores[u, j] else 0.5 if scores[u, i] == scores[u, j] else 0.0
                  for j in negs)
        auc = won / len(negs)
        out["all"].append(auc)
        if i not in trained:
            out["cold"].append(auc)
            cnegs = [j for j in negs if j not in trained]
            if cnegs:
                cw = sum(1.0 if scores[u, i] > scores[u, j] else 0.5 if scores[u, i] == scores[u, j] else 0.0
                         for j in cnegs)
                out["cvc"].append(cw / len(cnegs))
    return {k: (float(np.mean(v)) if v else math.nan) for k, v in out.items()}


def table_scorer(scores):
    return lambda users: scores[np.asarray(users)]


@pytest.mark.parametrize("which", ["val", "test"])
def test_full_auc_matches_brute_force(which):
    split = make_split()
    rng = np.random.default_rng(1)
    # Rounded scores make ties common, so the half-credit rule is exercised.
    scores = np.round(rng.normal(size=(split.num_users, split.num_items)), 1).astype(np.float32)
    got = evaluation.evaluate_split(table_scorer(scores), split, which, batch_users=7)
    ref = brute_force(scores, split, which)
    assert got["users"] == int((split.test_item >= 0).sum())
    assert got["cold_users"] > 0 and got["cold_vs_cold_users"] > 0
    assert got["auc_all"] == pytest.approx(ref["all"], abs=1e-9)
    assert got["auc_cold"] == pytest.approx(ref["cold"], abs=1e-9)
    assert got["auc_cold_vs_cold"] == pytest.approx(ref["cvc"], abs=1e-9)


def test_sampled_auc_matches_brute_force_and_is_reproducible():
    split = make_split(num_users=30, num_items=300, seed=2)
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(split.num_users, split.num_items)).astype(np.float32)
    got = evaluation.evaluate_split(table_scorer(scores), split, "test", sampled_negatives=20, seed=5, batch_users=4)
    again = evaluation.evaluate_split(table_scorer(scores), split, "test", sampled_negatives=20, seed=5,
                                      batch_users=64)
    assert got == pytest.approx(again, abs=1e-12)  # independent of batching (up to summation order)
    other_seed = evaluation.evaluate_split(table_scorer(scores), split, "test", sampled_negatives=20, seed=6)
    assert other_seed["auc_sampled_all"] != got["auc_sampled_all"]

    # Rebuild the sample for every user and check it: 20 valid negatives, then brute-force AUC over them.
    users = np.arange(split.num_users)
    valid = np.ones((split.num_users, split.num_items), bool)
    valid[split.train_user, split.train_item] = False
    has = split.val_item >= 0
    valid[users[has], split.val_item[has]] = False
    has = split.test_item >= 0
    valid[users[has], split.test_item[has]] = False
    mask = evaluation.sampled_negative_mask(valid, users, 20, seed=5)
    assert not np.any(mask & ~valid)
    assert np.all(mask.sum(axis=1) == 20)
    ref = brute_force(scores, split, "test", neg_filter=mask)
    assert got["auc_sampled_all"] == pytest.approx(ref["all"], abs=1e-9)
    assert got["auc_sampled_cold"] == pytest.approx(ref["cold"], abs=1e-9)


def test_sampled_negatives_are_uniform():
    valid = np.ones((2000, 50), bool)
    valid[:, :10] = False
    mask = evaluation.sampled_negative_mask(valid, np.arange(2000), 8, seed=0)
    freq = mask[:, 10:].mean(axis=0)  # each of the 40 valid items: expected 8/40 = 0.2
    assert np.all(np.abs(freq - 0.2) < 0.05)


def test_perfect_reversed_and_constant_scorers():
    split = make_split(seed=4)
    held = split.test_item
    perfect = np.zeros((split.num_users, split.num_items), np.float32)
    users = np.flatnonzero(held >= 0)
    perfect[users, held[users]] = 1.0
    res = evaluation.evaluate_split(table_scorer(perfect), split, "test")
    for key in evaluation.METRIC_KEYS:
        assert res[key] == 1.0, key
    assert res["recall_at_10"] == 1.0 and res["ndcg_at_10"] == 1.0

    rev = evaluation.evaluate_split(table_scorer(-perfect), split, "test")
    for key in evaluation.METRIC_KEYS:
        assert rev[key] == 0.0, key
    assert rev["recall_at_10"] == 0.0

    const = evaluation.evaluate_split(table_scorer(np.zeros_like(perfect)), split, "test")
    for key in evaluation.METRIC_KEYS:
        assert const[key] == 0.5, key
    # Expected recall@10 under random tie-breaking is 10 / (negatives + 1), averaged over users.
    assert 0.0 < const["recall_at_10"] < 1.0


def test_recall_and_ndcg_known_ranks():
    # One user, 20 items, no training items besides item 0; held-out test item 1.
    split = Split(1, 20, np.array([0], np.int32), np.array([0], np.int32),
                  np.array([-1], np.int32), np.array([1], np.int32))
    scores = np.arange(20, dtype=np.float32)[::-1].copy()  # item 1 ranks second among 19 candidates...
    scores[0] = 100.0  # ...but item 0 is a training item, excluded: item 1 is first among the rest
    res = evaluation.evaluate_split(table_scorer(scores[None, :]), split, "test", ks=(1, 5))
    assert res["recall_at_1"] == 1.0 and res["ndcg_at_1"] == 1.0
    scores[5] = 50.0  # one negative above: rank 1
    res = evaluation.evaluate_split(table_scorer(scores[None, :]), split, "test", ks=(1, 5))
    assert res["recall_at_1"] == 0.0 and res["recall_at_5"] == 1.0
    assert res["ndcg_at_5"] == pytest.approx(1 / np.log2(3))
    scores[6] = scores[1]  # plus one tie: rank 1 or 2 with equal chance
    res = evaluation.evaluate_split(table_scorer(scores[None, :]), split, "test", ks=(2,))
    assert res["recall_at_2"] == pytest.approx(0.5)
    assert res["ndcg_at_2"] == pytest.approx(0.5 / np.log2(3))


def test_cold_item_rule_makes_cold_vs_cold_exactly_half():
    split = make_split(seed=6)
    rng = np.random.default_rng(0)
    gamma = rng.normal(size=(split.num_items, 4))
    beta = rng.normal(size=split.num_items)
    theta = rng.normal(size=(split.num_users, 4))
    trained = ~split.cold_items()
    raw = (theta @ gamma.T + beta).astype(np.float32)
    ruled = evaluation.apply_cold_item_rule(raw, trained)
    np.testing.assert_allclose(ruled[:, ~trained], np.median(raw[:, trained], axis=1, keepdims=True)
                               * np.ones((1, (~trained).sum())), rtol=1e-6)
    np.testing.assert_array_equal(ruled[:, trained], raw[:, trained])
    res = evaluation.evaluate_split(lambda u: ruled[u], split, "test")
    assert res["auc_cold_vs_cold"] == 0.5
    assert evaluation.evaluate_split(lambda u: raw[u], split, "test")["auc_cold_vs_cold"] != 0.5


def test_tensorflow_rule_matches_numpy_reference():
    from tfmodels.models.baselines import median_fill

    rng = np.random.default_rng(1)
    for n_trained in (1, 6, 7):  # odd and even counts
        scores = rng.normal(size=(5, 12)).astype(np.float32)
        trained = np.zeros(12, bool)
        trained[rng.choice(12, n_trained, replace=False)] = True
        got = median_fill(scores, trained.astype(np.float32)).numpy()
        np.testing.assert_allclose(got, evaluation.apply_cold_item_rule(scores, trained), rtol=1e-6)


def test_bad_scorer_and_bad_split_raise():
    split = make_split(seed=7)
    with pytest.raises(ValueError, match="shape"):
        evaluation.evaluate_split(lambda u: np.zeros((len(u), 3), np.float32), split, "test")
    with pytest.raises(ValueError, match="non-finite"):
        evaluation.evaluate_split(lambda u: np.full((len(u), split.num_items), np.nan, np.float32), split)
    with pytest.raises(ValueError, match="which"):
        evaluation.evaluate_split(lambda u: None, split, "train")


def test_per_user_figures_average_to_the_totals_and_pair_in_the_bootstrap():
    split = make_split()
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(split.num_users, split.num_items)).astype(np.float32)
    out = evaluation.evaluate_split(table_scorer(scores), split, "test", per_user=True, batch_users=7)
    per = out["per_user"]
    assert len(per["user"]) == out["users"]
    np.testing.assert_array_equal(per["item"], split.test_item[per["user"]])
    for key in ("auc_all", "auc_cold_vs_cold", "recall_at_10", "ndcg_at_10"):
        assert math.isclose(np.nanmean(per[key]), out[key], rel_tol=1e-9), key
    assert np.isfinite(per["auc_cold_vs_cold"]).sum() == out["cold_vs_cold_users"]

    better = scores.copy()
    better[np.arange(split.num_users), split.test_item] += 1.0  # the held-out item moves up for everyone
    b = evaluation.evaluate_split(table_scorer(better), split, "test", per_user=True)["per_user"]
    ci = evaluation.paired_bootstrap(b["auc_all"], per["auc_all"], resamples=1000)
    assert ci["users"] == out["users"] and 0 < ci["lo"] <= ci["diff"] <= ci["hi"]
    same = evaluation.paired_bootstrap(per["auc_all"], per["auc_all"])
    assert same["diff"] == same["lo"] == same["hi"] == 0.0
    # Users without a figure (NaN) drop out of the pairs; mismatched users are refused.
    assert evaluation.paired_bootstrap(per["auc_cold_vs_cold"], b["auc_cold_vs_cold"])["users"] == \
        out["cold_vs_cold_users"]
    with pytest.raises(ValueError, match="same users in the same order"):
        evaluation.paired_bootstrap(per["auc_all"], per["auc_all"][1:])
