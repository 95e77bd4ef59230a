"""Leave-one-out ranking evaluation: AUC (all, cold, cold-vs-cold, sampled), recall@K, NDCG@K.

Runs on the host in NumPy, one batch of users at a time: the scorer returns a
``[B, num_items]`` matrix per batch (a model embeds every item once and scores
with a matrix product), and every metric is computed from that matrix with
vectorised masks. Nothing is ever called once per (user, item) pair.

**Protocol** (the paper's leave-one-out AUC, Kang et al. 2017). Each evaluated user u
has one held-out item i (their validation or test item). u's *negatives* are
all items except u's training items, u's *other* held-out item (the test item
when evaluating validation, and vice versa: it is a true positive the model
must not be punished for ranking high) and i itself. Then

    AUC_u = ( #{j in neg(u): x_ui > x_uj} + 0.5 #{j in neg(u): x_ui == x_uj} ) / |neg(u)|

and each figure is the mean of AUC_u over a set of users:

- ``auc_all``: every user with a held-out item, negatives = the whole catalogue.
- ``auc_cold``: users whose held-out item is *cold* (no training interaction
  at all), negatives = the whole catalogue. **Caveat**: where every never-trained
  item is somebody's held-out item (true of the H&M sample), a scorer that
  merely ranks "never seen in training" first gets a cold AUC near 1 without
  looking at anything. Read it together with ``auc_cold_vs_cold``.
- ``auc_cold_vs_cold`` (the main cold figure): cold users, negatives restricted
  to cold items. A method that cannot tell two never-trained items apart
  (PopRank, BPR-MF, under the rule below) scores exactly 0.5 here by
  construction; only pixels can help.
- ``auc_sampled_all`` / ``auc_sampled_cold``: as ``auc_all`` / ``auc_cold`` but
  over ``sampled_negatives`` (100) negatives per user drawn uniformly without
  replacement from neg(u), like the authors' code. (Their code draws 100 items
  from the catalogue and then skips u's own; we draw 100 valid negatives, so
  every user has exactly 100 unless neg(u) is smaller, then all of them.) The
  draw is a deterministic hash of (seed, user, item), so it does not depend on
  ``batch_users`` and is reproducible; see :func:`sampled_negative_mask`.

Ranking extras over the full catalogue (same negatives as ``auc_all``): the
held-out item's 0-based rank r = #negatives scoring strictly higher, plus a
uniformly random position among the t negatives that tie with it. We report the
*expectation* over that random tie-break, so a constant scorer is neither
rewarded nor punished: ``recall_at_K`` = P(r < K), ``ndcg_at_K`` =
E[1/log2(r + 2) if r < K else 0] (one relevant item, so the ideal DCG is 1).
These are computed in NumPy: tensorflow-recommenders' ``FactorizedTopK``
takes query and candidate *embeddings* and has no per-user exclusion of
training items nor tie handling, while our scorers are black boxes returning
score matrices (PopRank and VBPR have item biases outside any dot product).

**Rule for never-trained items, the same for every method.** An item with no
training interaction has had no data to fit its item-specific parameters
(PopRank's count, BPR-MF's and VBPR's gamma_i and beta_i), so a scorer must not
use them. Instead the item-specific (non-visual) part of its score is, for each
user, the **median** of that part over the trained items: a never-trained item
is ranked like the middle item the model knows. Whatever a method computes from
pixels (VBPR's visual term, DVBPR's whole score) is kept. Consequences: every
non-visual method ties all cold items, so its cold-vs-cold AUC is exactly 0.5;
and no method gains (or loses) all-item AUC merely by placing unseen items at
the top (or the bottom) of every list. The median, not the mean, because
popularity is skewed: on the H&M sample the mean training count of trained
items (1.57) exceeds 69% of them, so a mean rule would slip never-trained
items above most of the catalogue. Measured there (validation, PopRank):
never-trained items at count 0 give auc_all 0.38, at the median 0.52, at the
mean 0.66, above everything 0.77; that spread is why the rule must be fixed.
Ties at the median (many H&M items were bought once) count half, so PopRank's
plain cold AUC is below 0.5 there. ``tfmodels.models.baselines`` implements the
rule in TensorFlow; :func:`apply_cold_item_rule` is the NumPy reference.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from tfmodels.data.dataset import Dataset, Split

ScoreFn = Callable[[np.ndarray], np.ndarray]

METRIC_KEYS = (
    "auc_all",
    "auc_cold",
    "auc_cold_vs_cold",
    "auc_sampled_all",
    "auc_sampled_cold",
)


def apply_cold_item_rule(scores: np.ndarray, trained: np.ndarray) -> np.ndarray:
    """Returns scores with never-trained columns set to each row's median over trained columns.

    Args:
      scores: float [B, num_items]: the item-specific (non-visual) part of the scores.
      trained: bool [num_items]: True where the item has a training interaction.
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    trained = np.asarray(trained, dtype=bool)
    if scores.ndim != 2 or trained.shape != (scores.shape[1],):
        raise ValueError(f"cold-item rule: scores {scores.shape} and trained mask {trained.shape} do not match")
    if trained.any() and not trained.all():
        scores[:, ~trained] = np.median(scores[:, trained], axis=1, keepdims=True)
    return scores


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A counter-based 64-bit hash (SplitMix64 finaliser), vectorised; wraps modulo 2**64."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def sampled_negative_mask(valid: np.ndarray, users: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Picks ``n`` negatives per row uniformly without replacement among ``valid`` ones.

    Each (seed, user, item) gets a hash key; the ``n`` valid items with the
    smallest keys are chosen. That is a uniform sample without replacement, it
    depends only on (seed, user, valid set), not on how users are batched.

    Args:
      valid: bool [B, num_items]: the candidate negatives of each user.
      users: int [B]: user indices (part of the hash).
      n: number of negatives per user (all valid ones where fewer).
      seed: sampling seed.

    Returns:
      bool [B, num_items], a subset of ``valid`` with min(n, valid.sum(1)) True per row.
    """
    b, num_items = valid.shape
    users = np.asarray(users, dtype=np.uint64)
    seed_key = _splitmix64(np.array([seed], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        counter = (users[:, None] * np.uint64(num_items) + np.arange(num_items, dtype=np.uint64)[None, :]) ^ seed_key
    keys = _splitmix64(counter)
    keys[~valid] = np.iinfo(np.uint64).max
    out = np.zeros_like(valid)
    if n <= 0:
        return out
    if n < num_items:
        chosen = np.argpartition(keys, n - 1, axis=1)[:, :n]
    else:
        chosen = np.broadcast_to(np.arange(num_items), (b, num_items))
    np.put_along_axis(out, chosen, True, axis=1)
    return out & valid


def _expected_topk(greater: np.ndarray, ties: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Expected recall@k and NDCG@k when the held-out item's rank is uniform on [greater, greater + ties].

    Args:
      greater: int [B]: negatives scored strictly above the held-out item.
      ties: int [B]: negatives scored equal to it.
    """
    # disc[r] = 1 / log2(r + 2) for r < k; cumdisc[m] = sum of disc[:m].
    disc = 1.0 / np.log2(np.arange(k, dtype=np.float64) + 2.0)
    cumdisc = np.concatenate([[0.0], np.cumsum(disc)])
    lo = np.minimum(greater, k)
    hi = np.minimum(greater + ties + 1, k)  # exclusive end of the ranks that fall inside the top k
    positions = (ties + 1).astype(np.float64)
    recall = (hi - lo) / positions
    ndcg = (cumdisc[hi] - cumdisc[lo]) / positions
    return recall, ndcg


def _check_split(split: Split, which: str) -> np.ndarray:
    if which not in ("val", "test"):
        raise ValueError(f"evaluate_split: which must be 'val' or 'test', got {which!r}")
    held = split.test_item if which == "test" else split.val_item
    held = np.asarray(held)
    if held.shape != (split.num_users,):
        raise ValueError(f"split.{which}_item has shape {held.shape}, expected ({split.num_users},)")
    if np.any(held >= split.num_items):
        raise ValueError(f"split.{which}_item has item index {held.max()} >= num_items {split.num_items}")
    return held


def evaluate_split(
    score_fn: ScoreFn,
    split: Split,
    which: str = "val",
    sampled_negatives: int = 100,
    seed: int = 0,
    ks: tuple[int, ...] = (10, 50),
    batch_users: int = 256,
    per_user: bool = False,
) -> dict:
    """Evaluates a scorer on the validation or test items of a leave-one-out split.

    Runs on the host: ``score_fn`` is called once per batch of at most
    ``batch_users`` users; all metrics come from vectorised masks over the
    returned score matrix (see the module docstring for the exact definitions,
    the exclusion of each user's training items and other held-out item, and
    the caveat on plain cold AUC).

    Args:
      score_fn: ``user_idx int [B] -> float32 [B, num_items]`` scores (higher =
        preferred). Must be finite.
      split: the leave-one-out split (training pairs, val_item, test_item).
      which: "val" or "test".
      sampled_negatives: negatives per user for the sampled AUCs (authors: 100).
      seed: seed of the sampled negatives.
      ks: cut-offs for recall@K and NDCG@K.
      batch_users: users per score_fn call (memory ~ batch_users * num_items * 10 bytes).
      per_user: also return ``per_user``: {"user": int [U], "item": int [U] (each user's held-out
        item), "auc_all", "auc_cold_vs_cold", "recall_at_K", "ndcg_at_K": float [U]} over the evaluated
        users (NaN where a figure does not apply to a user), for paired comparisons (``paired_bootstrap``).

    Returns:
      dict with auc_all, auc_cold, auc_cold_vs_cold, auc_sampled_all,
      auc_sampled_cold, recall_at_K and ndcg_at_K per K (floats, NaN where no
      user qualifies), users, cold_users, cold_vs_cold_users (ints) and
      cold_items (number of items with no training interaction).

    Raises:
      ValueError: bad ``which``, a split with out-of-range items, or a scorer
        returning the wrong shape or non-finite scores.
    """
    held = _check_split(split, which)
    other = np.asarray(split.val_item if which == "test" else split.test_item)
    num_items = split.num_items
    cold_items = split.cold_items()
    offsets = split.train_offsets()
    train_item = np.asarray(split.train_item)
    if len(train_item) > 1 and np.any(np.diff(np.asarray(split.train_user)) < 0):
        raise ValueError("split.train_user must be sorted by user (CSR layout)")
    users = np.flatnonzero(held >= 0)

    sums = {k: 0.0 for k in METRIC_KEYS}
    counts = {k: 0 for k in METRIC_KEYS}
    topk_sums = {k: [0.0, 0.0] for k in ks}
    rows_out = {key: np.full(len(users), np.nan) for key in
                ("auc_all", "auc_cold_vs_cold") + tuple(f"{m}_at_{k}" for k in ks for m in ("recall", "ndcg"))}
    for start in range(0, len(users), max(1, int(batch_users))):
        u = users[start:start + batch_users]
        b = len(u)
        scores = np.asarray(score_fn(u))
        if scores.shape != (b, num_items):
            raise ValueError(f"score_fn returned shape {scores.shape} for {b} users, expected ({b}, {num_items})")
        if not np.all(np.isfinite(scores)):
            bad = u[~np.all(np.isfinite(scores), axis=1)]
            raise ValueError(f"score_fn returned non-finite scores for users {bad[:5].tolist()} ({len(bad)} users)")
        rows = np.arange(b)
        pos_item = held[u]
        pos = scores[rows, pos_item][:, None]

        # valid[b, j]: j is a negative of user u[b].
        valid = np.ones((b, num_items), dtype=bool)
        lens = offsets[u + 1] - offsets[u]
        # Gather the batch's CSR slices of training items in one go.
        starts = np.repeat(offsets[u] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        train_cols = train_item[starts + np.arange(lens.sum())]
        valid[np.repeat(rows, lens), train_cols] = False
        has_other = other[u] >= 0
        valid[rows[has_other], other[u][has_other]] = False
        valid[rows, pos_item] = False

        below = scores < pos
        tie = scores == pos
        is_cold = cold_items[pos_item]

        def auc_rows(mask):
            n = mask.sum(axis=1)
            won = (below & mask).sum(axis=1) + 0.5 * (tie & mask).sum(axis=1)
            ok = n > 0
            return won[ok] / n[ok], ok

        def add(key, values):
            sums[key] += float(values.sum())
            counts[key] += int(values.size)

        auc, ok = auc_rows(valid)
        add("auc_all", auc)
        add("auc_cold", auc[is_cold[ok]])
        # Rows of warm users become empty and are dropped by auc_rows.
        cvc, cvc_ok = auc_rows(valid & cold_items[None, :] & is_cold[:, None])
        add("auc_cold_vs_cold", cvc)
        rows_out["auc_all"][start + rows[ok]] = auc
        rows_out["auc_cold_vs_cold"][start + rows[cvc_ok]] = cvc
        sampled = sampled_negative_mask(valid, u, sampled_negatives, seed)
        s_auc, s_ok = auc_rows(sampled)
        add("auc_sampled_all", s_auc)
        add("auc_sampled_cold", s_auc[is_cold[s_ok]])

        greater = ((scores > pos) & valid).sum(axis=1)
        ties = (tie & valid).sum(axis=1)
        for k in ks:
            recall, ndcg = _expected_topk(greater, ties, int(k))
            topk_sums[k][0] += float(recall.sum())
            topk_sums[k][1] += float(ndcg.sum())
            rows_out[f"recall_at_{k}"][start:start + b] = recall
            rows_out[f"ndcg_at_{k}"][start:start + b] = ndcg

    out = {key: (sums[key] / counts[key] if counts[key] else math.nan) for key in METRIC_KEYS}
    for k in ks:
        out[f"recall_at_{k}"] = topk_sums[k][0] / len(users) if len(users) else math.nan
        out[f"ndcg_at_{k}"] = topk_sums[k][1] / len(users) if len(users) else math.nan
    out["users"] = int(len(users))
    out["cold_users"] = int(cold_items[held[users]].sum()) if len(users) else 0
    out["cold_vs_cold_users"] = int(counts["auc_cold_vs_cold"])
    out["cold_items"] = int(cold_items.sum())
    if per_user:
        out["per_user"] = {"user": users, "item": held[users], **rows_out}
    return out


def paired_bootstrap(a, b, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of a - b over users with a percentile bootstrap interval (users resampled with replacement).

    ``a`` and ``b`` are one figure per user for two methods on the same users in the
    same order (``evaluate_split(..., per_user=True)["per_user"][key]``); users where
    either is NaN are left out. Pairing removes what the users share (some are easy
    for every method), so the interval is that of the *difference*.

    Returns:
      {"diff": mean(a - b), "lo", "hi": the (1 - level) / 2 and (1 + level) / 2
      quantiles of the resampled means, "users": how many pairs}.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_bootstrap: per-user figures of shapes {a.shape} and {b.shape}, "
                         "expected the same users in the same order")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    if d.size == 0:
        return {"diff": math.nan, "lo": math.nan, "hi": math.nan, "users": 0}
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for r0 in range(0, resamples, 500):  # [500, n] draws at a time
        n = min(500, resamples - r0)
        means[r0:r0 + n] = d[rng.integers(0, d.size, size=(n, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": float(d.mean()), "lo": float(lo), "hi": float(hi), "users": int(d.size)}


def evaluate_workdir(workdir: str, which: str = "test", best: bool = True, sampled_negatives: int = 100,
                     seed: int = 0, batch_users: int = 256, log=None) -> dict:
    """``evaluate_split`` of any trained recommender work directory, as one JSON-ready dict.

    The scorer comes from ``tfmodels.kinds.load_scorer`` (the work directory alone);
    the dict adds ``split``, ``checkpoint`` ("best" or "last"), ``workdir`` and
    ``seconds``, and undefined metrics (e.g. no cold users) are None instead of NaN.
    """
    import time

    from tfmodels import kinds

    if sampled_negatives < 1:
        raise ValueError(f"sampled negatives must be >= 1, got {sampled_negatives}")
    start = time.time()
    score_fn, _, split = kinds.load_scorer(workdir, best=best)
    if log is not None:
        log(f"evaluating {workdir} on {which}: {int((split.test_item >= 0).sum())} users, {split.num_items} items")
    result = evaluate_split(score_fn, split, which, sampled_negatives=sampled_negatives, seed=seed,
                            batch_users=batch_users)
    result.update(split=which, checkpoint="best" if best else "last", workdir=workdir,
                  seconds=round(time.time() - start, 2))
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}


def oracle_auc(dataset: Dataset, split, images, which: str = "test") -> dict:
    """AUC of the true scores on the held-out items (the ceiling for any recommender).

    Args:
      dataset: a Dataset from ``tfmodels.data.simulated.build_world`` (needs ``extra["users"]``).
      split: its leave-one-out Split.
      images: uint8 [num_items, R, R, 3] catalogue images (any R >= 8).
      which: "test" or "val".

    Returns:
      The metrics dict of ``evaluate_split`` (auc_all,
      auc_cold, auc_cold_vs_cold, sampled AUCs, recall/NDCG, users, ...) for a
      scorer that returns the true scores; plus ``resolution``.
    """
    users = dataset.extra.get("users")
    from tfmodels.data.simulated import SimulatedUsers

    if not isinstance(users, SimulatedUsers):
        raise ValueError(f"oracle_auc: dataset {dataset.name!r} has no simulated users (extra['users'])")
    if len(images) != dataset.num_items:
        raise ValueError(f"oracle_auc: {len(images)} images for {dataset.num_items} items")
    scores = users.score_matrix(images)
    out = evaluate_split(lambda u: scores[np.asarray(u)], split, which=which)
    out["resolution"] = int(np.shape(images)[1])
    return out
