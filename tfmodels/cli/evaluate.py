"""``tfmodels evaluate``: AUC / recall / NDCG of a trained recommender's work directory.

Prints one JSON object (see ``tfmodels.evaluation`` for every key's definition,
including the cold-item caveat and the rule for never-trained items).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import time


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained recommender (AUC all/cold/cold-vs-cold, sampled, recall, NDCG)",
        description=(
            "Evaluates the recommender in a work directory (any kind: dvbpr, bpr-mf, vbpr, pop) "
            "on its leave-one-out split and prints one JSON object with auc_all, auc_cold, "
            "auc_cold_vs_cold, auc_sampled_all, auc_sampled_cold, recall_at_10/50, ndcg_at_10/50, "
            "users and cold_users. auc_cold_vs_cold is the main cold figure: plain auc_cold rewards "
            "merely ranking never-trained items first where those are all held-out items."
        ),
    )
    p.add_argument("--workdir", required=True, help="work directory written by `tfmodels train`")
    p.add_argument("--split", choices=("test", "val"), default="test", help="held-out items to rank (default test)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--best", dest="best", action="store_true", default=True,
                       help="use the checkpoint with the best validation AUC (default)")
    which.add_argument("--last", dest="best", action="store_false", help="use the latest checkpoint")
    p.add_argument("--sampled-negatives", type=int, default=100,
                   help="negatives per user for the sampled AUCs (default 100, as in the authors' code)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled negatives")
    p.add_argument("--batch-users", type=int, default=256, help="users scored per batch")
    p.set_defaults(func=run)


def load_scorer(workdir: str, best: bool = True):
    """``tfmodels.training.recommender.load_scorer`` (baselines: their loader directly, with ``best``)."""
    from tfmodels.training import baselines, recommender

    path = os.path.join(workdir, "model.json")
    if os.path.exists(path):
        with open(path) as f:
            kind = json.load(f).get("kind")
        if kind in baselines.BASELINE_KINDS:
            return baselines.load_scorer(workdir, best=best)
        if kind not in (None, "dvbpr"):
            raise ValueError(f"{workdir} holds a {kind!r} model, not a recommender")
    params = inspect.signature(recommender.load_scorer).parameters
    if "best" in params:
        return recommender.load_scorer(workdir, best=best)
    if not best:
        raise ValueError("this build's load_scorer has no --last option")
    return recommender.load_scorer(workdir)


def run(args: argparse.Namespace) -> int:
    import tfmodels  # noqa: F401  (tf-keras before TensorFlow)
    from tfmodels import evaluation

    if args.sampled_negatives < 1:
        raise ValueError(f"--sampled-negatives must be >= 1, got {args.sampled_negatives}")
    start = time.time()
    score_fn, dataset, split = load_scorer(args.workdir, best=args.best)
    print(f"evaluating {args.workdir} on {args.split}: {int((split.test_item >= 0).sum())} users, "
          f"{split.num_items} items", file=sys.stderr)
    result = evaluation.evaluate_split(score_fn, split, args.split, sampled_negatives=args.sampled_negatives,
                                       seed=args.seed, batch_users=args.batch_users)
    result["split"] = args.split
    result["checkpoint"] = "best" if args.best else "last"
    result["workdir"] = args.workdir
    result["seconds"] = round(time.time() - start, 2)
    # JSON has no NaN: undefined metrics (e.g. no cold users) print as null.
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}
    print(json.dumps(clean, sort_keys=True))
    return 0
