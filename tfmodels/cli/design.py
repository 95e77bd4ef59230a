"""``tfmodels design`` and ``tfmodels modify``: personalised designs from a trained DVBPR + GAN pair.

``design``: for one user and one category, R random latent starts, S Adam steps on z
maximising ``theta_u . Phi(up(G(z, c))) - eta * (D(G(z, c), c) - 1)^2``; writes a grid
(top row: the designs, best first; bottom row: the user's top-scored real items of the
category) and prints the scores, with the catalogue's mean / 90th percentile / max score
of that category for the same user, as one JSON object.

``modify``: GAN inversion of one catalogue item, then the same objective with an L1
proximity term; writes original | inversion (before) | modified (after) and prints scores.

Optional guards beyond the paper (``tfmodels.design``): ``--latent sphere``, ``--category-weight``,
``--trust-radius`` (a cap on how far each code moves from its start) and ``--realism-floor`` (a hinge at
a quantile of D's realism penalty on the category's real items).

Users and items are the recommender dataset's own ids; categories the GAN's names.
On a simulated world the simulated user's *true* preference is printed too.
"""

from __future__ import annotations

import json

import numpy as np

from tfmodels.config import LATENTS


def _common(p) -> None:
    p.add_argument("--rec-workdir", required=True, help="DVBPR work directory (tfmodels train dvbpr --workdir R)")
    p.add_argument("--gan-workdir", required=True, help="GAN work directory (tfmodels train gan --workdir G)")
    p.add_argument("--user", required=True, help="user id as in the dataset (e.g. an H&M customer_id)")
    p.add_argument("--eta", type=float, default=None, help="weight of the realism term (default: the GAN run's design.eta)")
    p.add_argument("--starts", type=int, default=None, help="random latent starts (default: design.starts)")
    p.add_argument("--steps", type=int, default=None, help="Adam steps on z (default: design.steps)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate on z (default: design.learning_rate)")
    p.add_argument("--latent", choices=LATENTS, default=None,
                   help="free: plain Adam on z (the paper's); sphere: each code keeps the norm of its random "
                        "start (default: design.latent)")
    p.add_argument("--category-weight", type=float, default=None,
                   help="weight kappa of the category term -kappa * CE(classifier(G(z, c)), c), which keeps "
                        "designs in their category; 0 = the paper's objective (default: design.category_weight)")
    p.add_argument("--trust-radius", type=float, default=None,
                   help="cap t on how far a code may move from its start, ||z - z0|| <= t * ||z0|| (projected "
                        "after every step); 0 = no cap (default: design.trust_radius)")
    p.add_argument("--realism-floor", type=float, default=None,
                   help="quantile q in (0, 1] of a realism floor: a hinge -floor_weight * relu(realism - tau_c), "
                        "tau_c = the q-quantile of D's realism penalty on the category's real items; 0 = no floor "
                        "(default: design.realism_floor)")
    p.add_argument("--floor-weight", type=float, default=None,
                   help="weight of the realism floor's hinge (default: design.floor_weight)")
    p.add_argument("--smooth", type=float, default=None,
                   help="sigma in pixels of a Gaussian blur applied to each design before the recommender scores "
                        "it in the search, so pixel-level patterns earn no score; 0 = off (default: design.smooth)")
    p.add_argument("--classifier-workdir", default=None,
                   help="category classifier for the category term (tfmodels train classifier --workdir C) "
                        "(default: design.classifier_from)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random starts (default 0)")
    p.add_argument("--last", action="store_true", help="use the recommender's last checkpoint, not W/best")
    p.add_argument("--out", required=True, help="PNG to write")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "design", help="design new items of a category for one user (preference maximisation)",
        description=__doc__.split("\n\n")[1])
    _common(p)
    p.add_argument("--category", required=True, help="category name (or index) as the GAN knows it")
    p.add_argument("--show-real", type=int, default=8, help="how many of the user's top real items to show (default 8)")
    p.set_defaults(func=run_design)

    p = subparsers.add_parser(
        "modify", help="modify an existing item towards one user's taste (prototype modification)",
        description=__doc__.split("\n\n")[2])
    _common(p)
    p.add_argument("--item", required=True, help="item id as in the dataset (e.g. an H&M article_id)")
    p.add_argument("--category", default=None, help="GAN category to use (default: the item's own)")
    p.add_argument("--invert-steps", type=int, default=None, help="L1 inversion steps (default: design.invert_steps)")
    p.add_argument("--proximity", type=float, default=None, help="L1 proximity weight (default: design.proximity)")
    p.set_defaults(func=run_modify)


def _check_positive(args) -> None:
    for name in ("starts", "steps", "invert_steps"):
        value = getattr(args, name, None)
        if value is not None and (value < 1 or value > 100000):
            raise ValueError(f"--{name.replace('_', '-')} must be between 1 and 100000, got {value}")


def _overrides(args) -> dict:
    """The design settings given on the command line (None = the Designer's, i.e. the GAN run's)."""
    return {"eta": args.eta, "starts": args.starts, "steps": args.steps, "learning_rate": args.lr,
            "latent": args.latent, "category_weight": args.category_weight, "trust_radius": args.trust_radius,
            "realism_floor": args.realism_floor, "floor_weight": args.floor_weight, "smooth": args.smooth,
            "invert_steps": getattr(args, "invert_steps", None), "proximity": getattr(args, "proximity", None)}


def _load(args):
    _check_positive(args)
    from tfmodels.design import build_designer

    return build_designer(args.rec_workdir, args.gan_workdir, best=not args.last,
                          classifier_workdir=args.classifier_workdir)


def run_design(args) -> int:
    from tfmodels.data.pixels import resize_to, to_model_input, to_uint8
    from tfmodels.data.preview import image_grid, save_png, upscale

    designer = _load(args)
    user = designer.user_index(args.user)
    category = designer.category_index(args.category)
    result = designer.design(user, category, seed=args.seed, **_overrides(args))
    cfg = result.settings

    items = designer.items_of_category(category)
    report = {"user": args.user, "category": designer.category_names[category], "eta": cfg.eta,
              "starts": cfg.starts, "steps": cfg.steps, "latent": cfg.latent, "category_weight": cfg.category_weight,
              "trust_radius": cfg.trust_radius, "realism_floor": cfg.realism_floor, "smooth": cfg.smooth,
              "over_floor": result.over_floor.tolist(),
              "scores": result.scores.tolist(), "realism": result.realism.tolist(),
              "objective": result.objective.tolist(), "off_category": result.off_category.tolist(),
              "objective_start": result.history[0].tolist()}
    tiles, labels = list(result.images), [f"{s:.2f}" for s in result.scores]
    if len(items):
        real_scores = designer.item_scores(user, items)
        report["catalogue"] = {"items": int(len(items)), "mean": float(real_scores.mean()),
                               "p90": float(np.percentile(real_scores, 90)), "max": float(real_scores.max())}
        report["designs_above_catalogue_max"] = int(np.sum(result.scores > real_scores.max()))
        best_first = np.argsort(-real_scores)[:args.show_real]
        real = to_uint8(resize_to(to_model_input(np.asarray(designer.images[items[best_first]])),
                                  designer.gan_resolution)).numpy()
        cols = max(len(tiles), len(real))
        blank = np.full_like(result.images[0], 255)
        tiles += [blank] * (cols - len(tiles))
        labels += [""] * (cols - len(labels))
        tiles += list(real) + [blank] * (cols - len(real))
        labels += [f"real {s:.2f}" for s in real_scores[best_first]] + [""] * (cols - len(real))
    else:
        report["catalogue"] = None
        cols = len(tiles)
    if result.true_scores is not None:
        report["true_scores"] = result.true_scores.tolist()
        if len(items):
            users = designer.simulated_users()
            true_real = users.true_score(np.full(len(items), user), np.asarray(designer.images[items]))
            report["true_catalogue"] = {"mean": float(np.mean(true_real)), "p90": float(np.percentile(true_real, 90)),
                                        "max": float(np.max(true_real))}
    save_png(image_grid(upscale(np.stack(tiles), 72), cols=cols, labels=labels), args.out)
    report["out"] = args.out
    print(json.dumps(report, indent=2))
    return 0


def run_modify(args) -> int:
    from tfmodels.data.preview import image_grid, save_png, upscale

    designer = _load(args)
    user = designer.user_index(args.user)
    item = designer.item_index(args.item)
    category = designer.category_index(args.category) if args.category is not None else designer.item_category(item)
    out = designer.modify(user, item=item, category=category, seed=args.seed, **_overrides(args))
    cfg = out["settings"]
    report = {"user": args.user, "item": args.item, "category": designer.category_names[category],
              "eta": cfg.eta, "proximity": cfg.proximity, "latent": cfg.latent, "trust_radius": cfg.trust_radius,
              "realism_floor": cfg.realism_floor, "smooth": cfg.smooth,
              "score_item": float(designer.item_scores(user, [item])[0]),
              "score_original_at_gan_size": out["score_original"],
              "score_before": out["score_before"], "score_after": out["score_after"],
              "l1_before": out["l1_before"], "l1_after": out["l1_after"]}
    for key in ("true_original", "true_before", "true_after"):
        if key in out:
            report[key] = out[key]
    labels = [f"item {out['score_original']:.2f}", f"before {out['score_before']:.2f}",
              f"after {out['score_after']:.2f}"]
    tiles = upscale(np.stack([out["original"], out["before"], out["after"]]), 72)
    save_png(image_grid(tiles, cols=3, labels=labels), args.out)
    report["out"] = args.out
    print(json.dumps(report, indent=2))
    return 0
