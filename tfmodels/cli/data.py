"""``tfmodels data stats`` and ``tfmodels data preview``: look at a dataset before training on it.

``add_data_arguments`` / ``config_from_args`` are shared with the other commands
that read a dataset (train, demo), so every command spells the data flags the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

DATASET_HELP = (
    "which reader: hm (H&M Kaggle layout: transactions_train*.csv, articles*.csv, customers*.csv, "
    "images/<3 digits>/<article_id>.jpg), dvbpr-npy (the DVBPR paper's pickled .npy, needs --allow-pickle), "
    "generic (interactions.csv + items.csv), fashion-mnist (idx files, no users), "
    "garments (procedural garments with simulated users; no files needed)"
)


def add_data_arguments(p: argparse.ArgumentParser, default_preset: str = "cpu") -> None:
    """Adds --dataset, --data-dir, --category-column, --allow-pickle, --skip-bad-images, --preset, --set."""
    from tfmodels.data.loading import DATASETS

    p.add_argument("--dataset", choices=DATASETS, default=None, help=DATASET_HELP + " (default garments)")
    p.add_argument("--data-dir", default=None, metavar="D",
                   help="folder to read (for dvbpr-npy: the .npy file); fashion-mnist defaults to "
                        "/usr/share/datasets/fashion-mnist")
    p.add_argument("--category-column", default=None, metavar="C",
                   help="H&M articles column used as the item category (default product_group_name; "
                        "product_type_name gives ~100 finer categories)")
    p.add_argument("--allow-pickle", action="store_true", default=None,
                   help="allow reading DVBPR .npy files, which are Python pickles: unpickling runs code from "
                        "the file, so only use this for files you trust")
    p.add_argument("--skip-bad-images", action="store_true", default=None,
                   help="drop items whose image is missing or cannot be decoded, and their interactions, "
                        "printing how many (finding corrupt images decodes every image once, into the cache "
                        "training reuses); without it such images are an error listing them")
    p.add_argument("--simulate", action="store_true", default=None,
                   help="replace the dataset's interactions by simulated users with known tastes over its images")
    from tfmodels.config import PRESETS

    p.add_argument("--preset", default=default_preset, choices=list(PRESETS),
                   help=f"configuration preset (tiny: tests; cpu: this machine; demo: cpu sized for `tfmodels demo`; "
                        f"paper: the published setting; default {default_preset})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set data.resolution=64 (repeatable; unknown keys are an error)")


def config_from_args(args):
    """The Config a command runs with: preset, then --set overrides, then the explicit data flags."""
    from tfmodels import config as config_lib

    cfg = config_lib.preset(args.preset)
    config_lib.apply_overrides(cfg, args.overrides)
    if args.dataset is not None:
        cfg.data.dataset = args.dataset
    if args.data_dir is not None:
        cfg.data.data_dir = args.data_dir
    if args.category_column is not None:
        cfg.data.category_column = args.category_column
    if args.allow_pickle:
        cfg.data.allow_pickle = True
    if args.skip_bad_images:
        cfg.data.skip_bad_images = True
    if getattr(args, "simulate", None):
        cfg.world.simulate = True
    return cfg


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="inspect a dataset: statistics and contact sheets",
                              description="Read a dataset and report on it, without training anything.")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    sub.required = True

    s = sub.add_parser("stats", help="print one JSON object of dataset and split statistics",
                       description="Reads the dataset, makes the leave-one-out split and prints one JSON object: "
                                   "users, items, interactions, distinct_pairs, categories, val_users, test_users, "
                                   "cold_val_items, cold_test_items (held-out items with no training pair) and more.")
    add_data_arguments(s)
    s.add_argument("--check-images", action="store_true",
                   help="also check that every item image file exists (no decoding) and report the count")
    s.set_defaults(func=run_stats)

    v = sub.add_parser("preview", help="write a contact sheet of items (and a user's items) as PNG",
                       description="Writes a contact sheet of N random items. With --user, also writes "
                                   "OUT_user<U>.png: the user's training items, and for simulated users their "
                                   "favourite items by true (hidden) preference.")
    add_data_arguments(v)
    v.add_argument("--out", required=True, help="PNG file to write (e.g. sheet.png)")
    v.add_argument("-n", "--num", type=int, default=64, help="items on the sheet (default 64)")
    v.add_argument("--resolution", type=int, default=96, help="thumbnail side in pixels (default 96)")
    v.add_argument("--user", default=None,
                   help="user index or id whose items (and, for simulated users, favourite items) to show")
    v.add_argument("--seed", type=int, default=0, help="which random items to show")
    v.set_defaults(func=run_preview)


def run_stats(args) -> int:
    from tfmodels.data.loading import load_dataset
    from tfmodels.data.splits import leave_one_out, split_stats

    cfg = config_from_args(args)
    dataset = load_dataset(cfg)
    split = leave_one_out(dataset, seed=cfg.data.seed)
    stats = split_stats(dataset, split)
    stats["category_names"] = list(dataset.category_names)
    if args.check_images:
        source = dataset.images
        missing = source.missing() if hasattr(source, "missing") else np.zeros(0, np.int64)
        stats["missing_image_files"] = int(len(missing))
    print(json.dumps(stats))
    return 0


def _user_index(dataset, text: str) -> int:
    ids = np.asarray(dataset.user_ids).astype(str)
    hit = np.flatnonzero(ids == text)
    if len(hit):
        return int(hit[0])
    try:
        u = int(text)
    except ValueError:
        raise ValueError(f"--user {text!r}: no such user id in dataset {dataset.name!r}") from None
    if not 0 <= u < dataset.num_users:
        raise ValueError(f"--user {u}: user index out of range 0..{dataset.num_users - 1}")
    return u


def _label(dataset, i: int) -> str:
    c = int(dataset.categories[i])
    return dataset.category_names[c] if 0 <= c < len(dataset.category_names) else str(dataset.item_ids[i])


def _spread_over_categories(categories: np.ndarray, n: int, rng) -> np.ndarray:
    """n item indices taken round-robin over the categories (rare ones show too), sorted."""
    pools = [list(rng.permutation(np.flatnonzero(categories == c))) for c in np.unique(categories)]
    chosen: list[int] = []
    while len(chosen) < n and any(pools):
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(int(pool.pop()))
    return np.sort(np.asarray(chosen, np.int64))


def run_preview(args) -> int:
    from tfmodels.data import images as images_lib
    from tfmodels.data import preview
    from tfmodels.data.loading import load_dataset

    cfg = config_from_args(args)
    dataset = load_dataset(cfg)
    res = args.resolution
    users = dataset.extra.get("users")
    rng = np.random.default_rng(args.seed)
    if dataset.num_items == 0:
        raise ValueError(f"dataset {dataset.name!r} has no items")

    def decode(indices):
        # Only the shown items: a preview of 100k photos must not decode all of them.
        out = np.empty((len(indices), res, res, 3), np.uint8)
        bad = images_lib.decode_images(dataset.images, res, out, indices, what="decoding preview images")
        if bad:
            print(f"preview: {len(bad)} shown images are missing or corrupt (drawn white), e.g. {bad[0][1]}",
                  file=sys.stderr)
        return out

    if users is not None:
        all_images = images_lib.load_images(dataset, res, cfg.data.cache_dir, skip_bad=True)
        preview.contact_sheet(dataset, all_images, args.out, n=args.num, seed=args.seed)
    else:
        shown = _spread_over_categories(np.asarray(dataset.categories), min(args.num, dataset.num_items), rng)
        n = len(shown)
        sub = images_lib.subset_items(dataset, np.isin(np.arange(dataset.num_items), shown))
        preview.contact_sheet(sub, decode(shown), args.out, n=n, seed=args.seed)
    print(f"wrote {args.out}", file=sys.stderr)

    if args.user is not None:
        u = _user_index(dataset, args.user)
        stem, ext = os.path.splitext(args.out)
        user_path = f"{stem}_user{u}{ext or '.png'}"
        if users is not None:
            preview.favourites_sheet(dataset, all_images, users, u, user_path, n=16)
            print(f"wrote {user_path} (items of simulated user {u} and their 16 favourites by true preference)",
                  file=sys.stderr)
        else:
            owned = np.array(list(dict.fromkeys(dataset.inter_item[dataset.inter_user == u].tolist())),
                             np.int64)[: args.num]
            if len(owned) == 0:
                raise ValueError(f"--user {args.user}: user {dataset.user_ids[u]} has no interactions")
            labels = [_label(dataset, i) for i in owned]
            preview.save_png(preview.image_grid(decode(owned), cols=8, labels=labels), user_path)
            print(f"wrote {user_path} ({len(owned)} items of user {dataset.user_ids[u]}, first interaction order)",
                  file=sys.stderr)
    return 0
