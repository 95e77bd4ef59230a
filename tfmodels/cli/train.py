"""``tfmodels train KIND``: train a recommender, the category classifier or the GAN.

All kinds share the flags below and write the same work-directory layout
(config.json, model.json, ckpt/, best/, tb/, metrics.jsonl). A rerun with the
same --workdir resumes from the latest checkpoint at its saved step.
"""

from __future__ import annotations

import argparse
import time

from tfmodels import kinds
from tfmodels.data.loading import DATASETS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help=f"train a model ({', '.join(kinds.KINDS)}) into a work directory",
        description=(
            "Trains one model kind on a dataset into --workdir. dvbpr: the CNN-F item tower jointly "
            "with user vectors by BPR (validation AUC every train.eval_every steps, best checkpoint "
            "kept in W/best). bpr-mf, vbpr, pop: the baselines in the same harness (vbpr uses frozen features of "
            "a classifier workdir given by --set baseline.features_from=C, else pre-trains one in "
            "W/pretrained). classifier: the category classifier used as the project's own "
            "pre-trained CNN; start DVBPR from it with --set model.init_from=C. "
            "gan: the category-conditional GAN. "
            "Rerunning with the same --workdir resumes at the saved step. --set train.minutes=N stops "
            "after N minutes of wall-clock time (with a checkpoint and an evaluation) if the step cap is "
            "not reached first. Watch with `tensorboard --logdir W/tb`. Kinds: "
            + "; ".join(f"{k.name}: {k.help}" for k in kinds.KINDS.values()) + "."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("kind", choices=list(kinds.KINDS), help="what to train")
    p.add_argument("--dataset", choices=DATASETS, default="garments",
                   help="catalogue reader (garments = procedural garments with simulated users)")
    p.add_argument("--data-dir", default="",
                   help="folder (or .npy file for dvbpr-npy) to read; empty = the reader's default")
    p.add_argument("--preset", choices=("tiny", "cpu", "paper"), default="cpu",
                   help="tiny: seconds (tests); cpu: tens of minutes on 2 cores; paper: the published setting")
    p.add_argument("--workdir", required=True, help="work directory W (created; resumed if it holds a run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field, repeatable, e.g. --set train.steps=500 "
                        "--set train.strategy=mirrored --set data.resolution=128")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow unpickling the paper's DVBPR .npy files (unpickling can run code: "
                        "only for files you trust)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="drop items whose image is missing or corrupt (printing the count) instead of failing")
    p.add_argument("--category-column", default=None,
                   help="H&M articles column used as the item category (default product_group_name)")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The Config for parsed args: preset, then dataset flags, then --set overrides."""
    from tfmodels import config as config_lib

    cfg = config_lib.preset(args.preset)
    cfg.data.dataset = args.dataset
    cfg.data.data_dir = args.data_dir
    if args.allow_pickle:
        cfg.data.allow_pickle = True
    if args.skip_bad_images:
        cfg.data.skip_bad_images = True
    if args.category_column:
        cfg.data.category_column = args.category_column
    config_lib.apply_overrides(cfg, args.overrides)
    return cfg


def run(args: argparse.Namespace) -> int:
    import tfmodels  # noqa: F401  (tf-keras before TensorFlow)

    cfg = build_config(args)
    print(f"tfmodels train {args.kind}: dataset {cfg.data.dataset} ({cfg.data.data_dir or 'default location'}), "
          f"preset {args.preset}, workdir {args.workdir}", flush=True)
    start = time.time()
    kinds.get(args.kind).train(cfg, args.workdir)
    print(f"tfmodels train {args.kind}: done in {time.time() - start:.0f}s -> {args.workdir}", flush=True)
    return 0
