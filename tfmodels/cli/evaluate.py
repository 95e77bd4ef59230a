"""``tfmodels evaluate``: AUC / recall / NDCG of a trained recommender's work directory.

Prints one JSON object (see ``tfmodels.evaluation`` for every key's definition,
including the cold-item caveat and the rule for never-trained items).
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    from tfmodels import kinds

    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained recommender (AUC all/cold/cold-vs-cold, sampled, recall, NDCG)",
        description=(
            f"Evaluates the recommender in a work directory (any kind: {', '.join(kinds.RECOMMENDERS)}) "
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


def run(args: argparse.Namespace) -> int:
    import tfmodels  # noqa: F401  (tf-keras before TensorFlow)
    from tfmodels.evaluation import evaluate_workdir

    result = evaluate_workdir(args.workdir, args.split, best=args.best, sampled_negatives=args.sampled_negatives,
                              seed=args.seed, batch_users=args.batch_users,
                              log=lambda message: print(message, file=sys.stderr))
    print(json.dumps(result, sort_keys=True))
    return 0
