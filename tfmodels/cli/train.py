"""``tfmodels train KIND``: train a recommender, the category classifier or the GAN.

All kinds share the flags below and write the same work-directory layout
(config.json, model.json, ckpt/, best/, tb/, metrics.jsonl). A rerun with the
same --workdir resumes from the latest checkpoint at its saved step.
"""

from __future__ import annotations

import argparse
import time

from tfmodels import kinds
from tfmodels.cli.data import add_data_arguments, config_from_args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help=f"train a model ({', '.join(kinds.KINDS)}) into a work directory",
        description=(
            "Trains one model kind on a dataset into --workdir (validation every train.eval_every steps, "
            "best checkpoint kept in W/best; vbpr without --set baseline.features_from=C pre-trains a "
            "classifier in W/pretrained, =imagenet:efficientnet_lite0[@R] uses ImageNet features; --set "
            "model.init_from=C starts DVBPR's tower from classifier C, or the whole model from a DVBPR run C on the "
            "same split (e.g. one that trained only the head, model.frozen_stages=9); --set model.tower=efficientnet_lite0 "
            "--set model.tower_weights=imagenet fine-tunes an ImageNet backbone as the item tower). "
            "Rerunning with the same --workdir resumes at the saved step. --set train.minutes=N stops "
            "after N minutes of wall-clock time (with a checkpoint and an evaluation) if the step cap is "
            "not reached first. Watch with `tensorboard --logdir W/tb`. Kinds: "
            + "; ".join(f"{k.name}: {k.help}" for k in kinds.KINDS.values()) + "."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("kind", choices=list(kinds.KINDS), help="what to train")
    p.add_argument("--workdir", required=True, help="work directory W (created; resumed if it holds a run)")
    add_data_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tfmodels  # noqa: F401  (tf-keras before TensorFlow)

    cfg = config_from_args(args)
    print(f"tfmodels train {args.kind}: dataset {cfg.data.dataset} ({cfg.data.data_dir or 'default location'}), "
          f"preset {args.preset}, workdir {args.workdir}", flush=True)
    start = time.time()
    kinds.get(args.kind).train(cfg, args.workdir)
    print(f"tfmodels train {args.kind}: done in {time.time() - start:.0f}s -> {args.workdir}", flush=True)
    return 0
