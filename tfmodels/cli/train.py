"""``tfmodels train KIND``: train a recommender, the category classifier or the GAN.

All kinds share the flags below and write the same work-directory layout
(config.json, model.json, ckpt/, best/, tb/, metrics.jsonl). A rerun with the
same --workdir resumes from the latest checkpoint at its saved step.
"""

from __future__ import annotations

import argparse
import importlib
import time

KINDS = ("dvbpr", "bpr-mf", "vbpr", "pop", "classifier", "gan")
DATASETS = ("hm", "dvbpr-npy", "generic", "fashion-mnist", "garments")

# kind -> (module, function); imported only when that kind is trained.
_DISPATCH = {
    "dvbpr": ("tfmodels.training.recommender", "train_dvbpr"),
    "bpr-mf": ("tfmodels.training.baselines", "train_bpr_mf"),
    "vbpr": ("tfmodels.training.baselines", "train_vbpr"),
    "pop": ("tfmodels.training.baselines", "train_pop"),
    "classifier": ("tfmodels.training.baselines", "train_classifier"),
    "gan": ("tfmodels.training.gan", "train_gan"),
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model (dvbpr, bpr-mf, vbpr, pop, classifier, gan) into a work directory",
        description=(
            "Trains one model kind on a dataset into --workdir. dvbpr: the CNN-F item tower jointly "
            "with user vectors by BPR (validation AUC every train.eval_every steps, best checkpoint "
            "kept in W/best). bpr-mf, vbpr, pop: the baselines in the same harness (vbpr uses frozen features of "
            "a classifier workdir given by --set baseline.features_from=C, else pre-trains one in "
            "W/pretrained). classifier: the category classifier used as the project's own "
            "pre-trained CNN; start DVBPR from it with --set model.init_from=C. "
            "gan: the category-conditional GAN. "
            "Rerunning with the same --workdir resumes at the saved step. Watch with "
            "`tensorboard --logdir W/tb`."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("kind", choices=KINDS, help="what to train")
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
    module_name, fn_name = _DISPATCH[args.kind]
    try:
        module = importlib.import_module(module_name)
        train_fn = getattr(module, fn_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"training {args.kind!r} is not available in this build ({module_name}.{fn_name}: {e})") from None
    print(f"tfmodels train {args.kind}: dataset {cfg.data.dataset} ({cfg.data.data_dir or 'default location'}), "
          f"preset {args.preset}, workdir {args.workdir}", flush=True)
    start = time.time()
    train_fn(cfg, args.workdir)
    print(f"tfmodels train {args.kind}: done in {time.time() - start:.0f}s -> {args.workdir}", flush=True)
    return 0
