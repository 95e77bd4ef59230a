"""``tfmodels tune KIND``: choose a recommender's key settings on validation within a time budget.

A thin entry point over ``tfmodels.tune.tune``; the data flags, ``--preset`` and
``--set`` are those of ``tfmodels train``.
"""

from __future__ import annotations

import argparse
import shlex
import time

from tfmodels import kinds
from tfmodels.cli.data import add_data_arguments, config_from_args


def register(subparsers) -> None:
    from tfmodels import tune
    from tfmodels.evaluation import METRIC_KEYS

    searched = "; ".join(f"{kind}: " + ", ".join(f"{key} ({dist})" for key, dist in space.items())
                         for kind, space in tune.SPACES.items() if space)
    p = subparsers.add_parser(
        "tune",
        help="choose a recommender's learning rate, L2 terms and K on validation within a time budget",
        description=(
            "A bounded random search of one recommender's key settings, the same for every method so that "
            "compared methods are tuned alike. The budget --budget-minutes N is split over --trials T: each "
            "trial is a normal training run (like `tfmodels train`) with --set train.minutes=N/T and the "
            "kind's step cap, in its own work directory OUT/trial_XX (evaluate or export it like any run). "
            "Trial 0 trains the preset's values (with your --set flags), so the search can only match or beat "
            "them; trials 1.. draw each setting at random (seeded by --seed). A searched setting given with "
            "--set is held at that value. The objective is the validation --metric at each trial's best "
            "checkpoint (W/best/best.json). Writes OUT/trials.jsonl (one line per finished trial: settings, "
            "validation metrics, steps, seconds), OUT/best.json (the chosen settings as --set strings and "
            "their metric), OUT/tune.md (a table) and OUT/search.json; prints the --set flags to paste into "
            "`tfmodels train`. Rerunning the same command skips finished trials; a changed search (kind, "
            "trials, seed, budget, metric, config) is refused. vbpr without baseline.features_from pre-trains "
            "one classifier in OUT/pretrained for every trial. Searched: " + searched + "."
        ),
    )
    p.add_argument("kind", choices=list(kinds.KINDS), help="what to tune (recommenders with settings: "
                   + ", ".join(k for k, space in tune.SPACES.items() if space) + ")")
    p.add_argument("--out", required=True, help="folder OUT of the search (created; resumed if it holds one)")
    p.add_argument("--budget-minutes", type=float, required=True, metavar="N",
                   help="training minutes of the whole search, split equally over the trials")
    p.add_argument("--trials", type=int, default=8, metavar="T",
                   help="number of trials (trial 0 = the preset; default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the drawn settings (default 0)")
    p.add_argument("--metric", default="auc_all", choices=METRIC_KEYS,
                   help="validation metric to maximise (default auc_all; auc_cold_vs_cold is the main cold figure)")
    add_data_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tfmodels  # noqa: F401  (tf-keras before TensorFlow)
    from tfmodels import tune

    tune.search_space(args.kind)  # refuse a kind without settings before reading any data
    cfg = config_from_args(args)
    fixed = [item.partition("=")[0].strip() for item in args.overrides]
    print(f"tfmodels tune {args.kind}: dataset {cfg.data.dataset} ({cfg.data.data_dir or 'default location'}), "
          f"preset {args.preset}, out {args.out}", flush=True)
    start = time.time()
    best = tune.tune(cfg, args.kind, args.out, args.budget_minutes, trials=args.trials, seed=args.seed,
                     metric=args.metric, fixed=fixed)
    print(f"tfmodels tune {args.kind}: done in {time.time() - start:.0f}s -> {args.out}; train with the chosen "
          f"settings:\n  {train_command(args, best['set'])}", flush=True)
    return 0


def train_command(args: argparse.Namespace, chosen: list[str]) -> str:
    """The ``tfmodels train`` command of this tune's data flags, preset, --set flags and ``chosen`` settings."""
    flags = ["--preset", args.preset]
    for name in ("dataset", "data_dir", "category_column"):
        if getattr(args, name) is not None:
            flags += ["--" + name.replace("_", "-"), getattr(args, name)]
    flags += ["--" + name.replace("_", "-") for name in ("allow_pickle", "skip_bad_images", "simulate")
              if getattr(args, name)]
    keys = {item.partition("=")[0] for item in chosen}
    for item in [o for o in args.overrides if o.partition("=")[0].strip() not in keys] + chosen:
        flags += ["--set", item]
    return " ".join(["tfmodels", "train", args.kind] + [shlex.quote(f) for f in flags] + ["--workdir", "W"])
