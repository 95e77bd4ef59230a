"""Recommender quality: PopRank, BPR-MF, VBPR, DVBPR (scratch and pre-trained init) in one harness.

For each data set (procedural garments with simulated users, and the real H&M
sample when --hm-dir is given) this trains, in ``--out/<dataset>/<method>``:

1. ``classifier``: the project's own pre-trained CNN (CNN-F trunk on category
   labels): VBPR's frozen features and DVBPR's optional initialisation;
2. ``pop``, ``bpr-mf``, ``vbpr`` (features of 1), ``dvbpr`` (from scratch) and
   ``dvbpr-init`` (item tower initialised from 1, via ``model.init_from``),
3. ``vbpr-imagenet`` (VBPR on the frozen pooled ImageNet features of
   EfficientNet-Lite0, or ``--backbone``, at ``--backbone-resolution``, 128 px by default under
   ``--preset cpu``, ``baseline.features_from=imagenet:efficientnet_lite0@R``),
   ``dvbpr-imagenet-head`` (DVBPR on that backbone kept frozen: only the embedding
   head and the user vectors train, on the backbone's output computed once per
   item; the same model as the fine-tuned row, so the cleanest frozen-vs-fine-tuned
   pair) and ``dvbpr-imagenet`` (DVBPR whose tower is that backbone at the same R,
   from its ImageNet weights, fine-tuned end to end above its ``--frozen-stages``
   lowest stages, whose output is computed once per item: ``model.cache_frozen``;
   with ``--fine-tune-from-head`` it starts from the head row's best checkpoint,
   ``model.init_from``: linear probing, then fine-tuning),

all with the shared training loop, validation AUC every ``train.eval_every``
steps and the best checkpoint kept by validation ``auc_all``. Each method then
gets its *best-on-validation* checkpoint evaluated on the *test* split by
``tfmodels.evaluation.evaluate_split`` (AUC all / cold / cold-vs-cold, full and
sampled-100, recall@10, NDCG@10), and the key differences between rows
(``COMPARISONS``) get a paired bootstrap 95% interval over the test users
(``tfmodels.evaluation.paired_bootstrap``; per-user figures in
``<dataset>/per_user_test.npz``). On the simulated world the oracle AUC (true
hidden scores of the simulated users) stands beside them, with the share of the
oracle's margin above chance each method closes: (AUC - 0.5) / (oracle - 0.5).
Beside the oracle stands a *learnable ceiling*: VBPR, trained like the VBPR row,
on the simulated users' own image features (the exact 8 pixel features their
tastes are defined on, plus the one-hot category) instead of a CNN's.
It has perfect features and only has to learn each user's weights from their
few training items, so no recommender that learns from these purchases can be
expected to beat it; the oracle, which knows the weights, can.

Training length is a *time budget* per method (minutes, per preset), the
training loop's own ``train.minutes`` (evaluations and tracing included): each
method trains until its budget is used or the preset's step cap is reached,
whichever comes first. The steps each method got are in the table. ``--preset cpu`` keeps each data set
under 60 minutes on a 2-core CPU; ``--quick`` is a few-minute smoke run of the
whole script on a small world at 32 px (its numbers mean little).

With ``--tune-minutes M`` every method with settings to tune (all but PopRank and the learnable
ceiling) first gets the same bounded search on validation (``tfmodels.tune``, the search
``tfmodels tune KIND --budget-minutes M --trials T`` runs, in ``<dataset>/<method>-tune``), and its row then
trains, within its own budget, with the chosen settings (named in the table's notes); without it the
rows train with the preset's settings.

Writes to --out: ``results.md`` and ``results.json`` (the tables, the machine,
the commands), ``<dataset>_auc_vs_step.png`` (validation AUC all and
cold-vs-cold against training step for every method). Prints the machine first.

    python benchmarks/recommender_quality.py --preset cpu --hm-dir ../shared/data/hm --out bench_out/rq
    python benchmarks/recommender_quality.py --quick --out /tmp/rq_quick
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tfmodels  # noqa: E402,F401  (tf-keras before TensorFlow)
import numpy as np  # noqa: E402
from tfmodels import files  # noqa: E402
from _machine import info as machine_info  # noqa: E402

METHODS = ("pop", "bpr-mf", "vbpr", "dvbpr", "dvbpr-init", "vbpr-imagenet", "dvbpr-imagenet-head",
           "dvbpr-imagenet")
"""The rows, in table order; the last three on the ImageNet backbone (``--backbone``): frozen (VBPR, DVBPR's
head alone) against fine-tuned (DVBPR)."""
COMPARISONS = (("dvbpr-imagenet", "vbpr-imagenet"), ("dvbpr-imagenet", "dvbpr-imagenet-head"),
               ("dvbpr-imagenet-head", "vbpr-imagenet"), ("dvbpr-init", "vbpr"), ("vbpr-imagenet", "vbpr"),
               ("dvbpr-imagenet", "dvbpr-init"), ("vbpr", "pop"), ("vbpr-imagenet", "pop"))
"""Pairs (a, b) whose per-user differences a - b get a paired bootstrap 95% interval."""
CI_KEYS = ("auc_all", "auc_cold_vs_cold", "recall_at_10")
COLUMNS = ("auc_all", "auc_cold", "auc_cold_vs_cold", "auc_sampled_all", "auc_sampled_cold",
           "recall_at_10", "ndcg_at_10")

# Minutes of wall-clock training per method and data set (evaluations included).
# With every row, cpu stays under 60 minutes per data set on one core of the development machine
# (DVBPR's 3,000-step cap usually ends it first; the backbone rows add the feature/activation passes).
BUDGETS = {
    "cpu": {"classifier": 4.0, "pop": 1.0, "bpr-mf": 3.0, "vbpr": 3.0, "true-features": 3.0, "dvbpr": 12.0,
            "dvbpr-init": 12.0, "vbpr-imagenet": 3.0, "dvbpr-imagenet-head": 4.0, "dvbpr-imagenet": 12.0},
    "quick": {"classifier": 0.5, "pop": 0.2, "bpr-mf": 0.3, "vbpr": 0.3, "true-features": 0.3, "dvbpr": 0.7,
              "dvbpr-init": 0.7, "vbpr-imagenet": 0.3, "dvbpr-imagenet-head": 0.3, "dvbpr-imagenet": 0.7},
}

# The backbone rows' image side per preset when --backbone-resolution is not given: cpu 128 (the README's
# tables; twice the preset's 64 px), any other preset its data.resolution.
BACKBONE_RESOLUTION = {"cpu": 128}


def build_config(name: str, preset: str, hm_dir: str, overrides: list[str]):
    from tfmodels import config as config_lib

    if preset == "quick":
        cfg = config_lib.tiny()
        cfg.data.resolution = 32
        cfg.world.num_items = 400
        cfg.world.num_users = 200
        cfg.world.interactions_per_user = 8
        cfg.model.fc_units = 64
        cfg.train.steps = 400
        cfg.train.batch_size = cfg.baseline.batch_size = 64
        cfg.train.eval_every = 50
        cfg.train.checkpoint_every = 50
        cfg.train.steps_per_loop = 25
        cfg.classifier.steps = 150
    else:
        cfg = config_lib.preset(preset)
    cfg.train.histogram_every = 0  # not needed here; saves time
    if name == "garments":
        cfg.data.dataset = "garments"
    elif name == "hm":
        cfg.data.dataset = "hm"
        cfg.data.data_dir = hm_dir
        if preset == "quick":
            cfg.data.resolution = 64  # the size other runs have most likely cached already
    else:
        raise ValueError(f"unknown data set {name!r}")
    config_lib.apply_overrides(cfg, overrides)
    return cfg


def true_features(dataset, images, users) -> np.ndarray:
    """[z(X_i), onehot(c_i)] per item: the simulated users' standardised pixel features plus category."""
    from tfmodels.data.image_features import image_features

    cats = np.asarray(dataset.categories)
    onehot = np.zeros((len(cats), max(len(dataset.category_names), 1)), np.float32)
    onehot[cats >= 0, cats[cats >= 0]] = 1.0
    return np.concatenate([users.standardise(image_features(images)), onehot], axis=1)


def read_curve(workdir: str) -> list[dict]:
    from tfmodels.workdir import read_metrics

    return [{"step": r["step"], "auc_all": r.get("auc_all"), "auc_cold_vs_cold": r.get("auc_cold_vs_cold")}
            for r in read_metrics(workdir)]


def run_dataset(name: str, args, log) -> dict:
    from tfmodels import config as config_lib
    from tfmodels.data.images import load_images
    from tfmodels.data.splits import split_stats
    from tfmodels.evaluation import evaluate_split
    from tfmodels import kinds
    from tfmodels.data.loading import load_for_training
    from tfmodels.training import baselines, classifier, recommender
    from tfmodels.training.strategy import build_strategy
    from tfmodels import tune as tune_lib
    from tfmodels.models.efficientnet_lite import NUM_STAGES

    preset = "quick" if args.quick else args.preset
    budgets = dict(BUDGETS["quick" if args.quick else "cpu"])
    if args.budget_scale != 1.0:
        budgets = {k: v * args.budget_scale for k, v in budgets.items()}
    budgets.update(args.budget)
    cfg = build_config(name, preset, args.hm_dir, args.overrides)
    root = os.path.join(args.out, name)
    os.makedirs(root, exist_ok=True)
    t_data = time.time()
    dataset, split = load_for_training(cfg)
    images = load_images(dataset, cfg.data.resolution, cfg.data.cache_dir, skip_bad=cfg.data.skip_bad_images)
    stats = split_stats(dataset, split)
    log(f"[{name}] {split.num_users} users, {split.num_items} items, {len(split.train_item)} training pairs, "
        f"images {list(images.shape)} ({time.time() - t_data:.0f}s to load)")
    report = {"dataset": name, "preset": preset, "config": config_lib.to_dict(cfg), "stats": stats,
              "budgets_minutes": budgets, "methods": {}, "curves": {}}

    oracle = None
    users = dataset.extra.get("users")
    if users is not None:
        from tfmodels.evaluation import oracle_auc

        oracle = oracle_auc(dataset, split, images)
        report["oracle"] = {k: v for k, v in oracle.items() if isinstance(v, (int, float))}
        log(f"[{name}] oracle: " + json.dumps(report["oracle"]))

    def train_or_reuse(method, w, train, mcfg=None, kind=None):
        """``train()`` trains within the budget and the run is recorded in ``w/benchmark_run.json``;
        with --reuse a work directory that already holds a finished run is evaluated as it is, after
        the resume guard of ``kind`` has checked it was trained with ``mcfg``'s settings (so a reused
        row cannot silently be another resolution, backbone or feature source than this run's)."""
        from tfmodels import workdir as workdir_lib

        record = os.path.join(w, "benchmark_run.json")
        if args.reuse and os.path.exists(os.path.join(w, "model.json")):
            if kind is not None:
                try:
                    workdir_lib.check_resumable(mcfg, w, kinds.get(kind).resume_keys)
                except ValueError as e:
                    raise SystemExit(f"--reuse {method}: {e}") from None
            info = workdir_lib.read_model_json(w)
            saved = json.load(open(record)) if os.path.exists(record) else {}
            best_path = os.path.join(w, "best", "best.json")
            best = json.load(open(best_path)) if os.path.exists(best_path) else None
            log(f"[{name}] {method}: reusing {w} at step {info['step']} (--reuse)")
            return {"step": info["step"], "best": best, "train_seconds": saved.get("train_seconds"),
                    "metrics": saved.get("metrics") or (best or {}).get("metrics", {})}
        t0 = time.time()
        result = train()
        result["train_seconds"] = time.time() - t0
        log(f"[{name}] {method}: {result['step']} steps in {result['train_seconds'] / 60:.1f} min "
            f"(budget {budgets[method]:g} min, stopped by {result['stopped']})")
        files.write_json(record, {"step": int(result["step"]), "train_seconds": result["train_seconds"],
                                  "metrics": result.get("metrics", {})})
        return result

    per_user = {}

    def evaluate_test(method, score_fn, result):
        t0 = time.time()
        metrics = evaluate_split(score_fn, split, "test", seed=0, per_user=True)
        per_user[method] = metrics.pop("per_user")
        row = {k: metrics.get(k) for k in COLUMNS}
        row.update(users=metrics["users"], cold_users=metrics["cold_users"],
                   cold_vs_cold_users=metrics["cold_vs_cold_users"], steps=int(result["step"]),
                   best_step=(result.get("best") or {}).get("step"),
                   train_minutes=(None if result.get("train_seconds") is None
                                  else round(result["train_seconds"] / 60, 2)),
                   eval_seconds=round(time.time() - t0, 1))
        if oracle is not None and oracle.get("auc_all") is not None and oracle["auc_all"] > 0.5:
            row["oracle_margin_closed"] = (row["auc_all"] - 0.5) / (oracle["auc_all"] - 0.5)
        report["methods"][method] = row
        log(f"[{name}] TEST {method}: " + "  ".join(
            f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float) and k in COLUMNS))

    def budgeted(method):
        mcfg = copy.deepcopy(cfg)
        mcfg.train.minutes = budgets[method]
        mcfg.baseline.steps = args.baseline_max_steps or 5 * cfg.train.steps
        if method == "dvbpr-imagenet-head":  # a step costs about what a VBPR step does
            mcfg.train.steps = mcfg.baseline.steps
        if method in args.steps:  # the kind's own step cap (DVBPR rows: train.steps; the others: baseline.steps)
            if method.startswith("dvbpr"):
                mcfg.train.steps = args.steps[method]
            else:
                mcfg.baseline.steps = args.steps[method]
        return mcfg

    def tuned(method, kind, mcfg):
        """``mcfg`` with the settings ``tfmodels.tune`` chose on validation for ``method`` searched as ``kind``
        (--tune-minutes; kind None = not tuned)."""
        if not args.tune_minutes or not kind or not tune_lib.SPACES.get(kind):
            return mcfg
        t0 = time.time()
        best = tune_lib.tune(mcfg, kind, os.path.join(root, f"{method}-tune"), args.tune_minutes,
                             trials=args.tune_trials, log=log)
        report.setdefault("tuned", {})[method] = {
            "set": best["set"], "value": best["value"], "default_value": best["default_value"],
            "trial": best["trial"], "minutes": round((time.time() - t0) / 60, 2)}
        return config_lib.apply_overrides(copy.deepcopy(mcfg), best["set"])

    def run_baseline(method, train_fn, tune_as=None):
        w = os.path.join(root, method)
        mcfg = tuned(method, tune_as, budgeted(method))
        result = train_or_reuse(method, w, lambda: train_fn(mcfg, w, dataset, split), mcfg, tune_as)
        evaluate_test(method, kinds.load_scorer(w, best=True)[0], result)
        report["curves"][method] = read_curve(w)

    def run_dvbpr(method, init_from="", resolution=0, **model_fields):
        w = os.path.join(root, method)
        mcfg = budgeted(method)
        mcfg.model.init_from = init_from
        for key, value in model_fields.items():
            setattr(mcfg.model, key, value)
        mcfg = tuned(method, "dvbpr", mcfg)
        pixels = images
        if resolution and resolution != cfg.data.resolution:
            mcfg.data.resolution = resolution
            pixels = load_images(dataset, resolution, cfg.data.cache_dir, skip_bad=cfg.data.skip_bad_images)
        # One strategy object per process for every run (see strategy.build_strategy).
        result = train_or_reuse(method, w, lambda: recommender.train_dvbpr_on(
            mcfg, w, dataset, split, pixels, strategy=build_strategy(mcfg.train.strategy)), mcfg, "dvbpr")
        evaluate_test(method, kinds.load_scorer(w, best=True)[0], result)
        report["curves"][method] = read_curve(w)

    if users is not None:
        # The learnable ceiling: VBPR (same harness and budget) on the true features instead of a CNN's.
        feats = true_features(dataset, images, users)
        run_baseline("true-features", lambda c, w, d, s: baselines.train_vbpr(
            c, w, d, s, features=feats, features_from="true simulated features"))  # the ceiling is not tuned
        report["true_features"] = report["methods"].pop("true-features")

    methods = [m for m in METHODS if m in args.methods]
    if {"vbpr", "dvbpr-init"} & set(methods):
        w = os.path.join(root, "classifier")
        ccfg = budgeted("classifier")
        clf = train_or_reuse("classifier", w, lambda: classifier.train_classifier(ccfg, w, dataset=dataset),
                             ccfg, "classifier")
        report["classifier"] = {"steps": int(clf["step"]), "accuracy": clf["metrics"].get("accuracy"),
                                "chance": clf["metrics"].get("chance"),
                                "train_minutes": (None if clf["train_seconds"] is None
                                                  else round(clf["train_seconds"] / 60, 2))}
        log(f"[{name}] classifier: {json.dumps(report['classifier'])}")
    clf_dir = os.path.abspath(os.path.join(root, "classifier"))
    backbone_resolution = args.backbone_resolution or BACKBONE_RESOLUTION.get(preset) or cfg.data.resolution
    report["backbone"] = {"tower": args.backbone, "resolution": backbone_resolution, "frozen_stages": args.frozen_stages,
                          "from_head": args.fine_tune_from_head,
                          "backbone_learning_rate": cfg.train.backbone_learning_rate or cfg.train.learning_rate}
    for method in methods:
        t0 = time.time()
        if method == "vbpr":
            cfg.baseline.features_from = clf_dir
            run_baseline(method, kinds.get(method).train, tune_as="vbpr")
            cfg.baseline.features_from = ""
        elif method in ("dvbpr", "dvbpr-init"):
            run_dvbpr(method, init_from=clf_dir if method == "dvbpr-init" else "")
        elif method == "vbpr-imagenet":
            cfg.baseline.features_from = f"imagenet:{args.backbone}@{backbone_resolution}"
            run_baseline(method, kinds.get("vbpr").train, tune_as="vbpr")
            cfg.baseline.features_from = ""
        elif method == "dvbpr-imagenet-head":
            run_dvbpr(method, resolution=backbone_resolution, tower=args.backbone, tower_weights="imagenet",
                      frozen_stages=NUM_STAGES)
        elif method == "dvbpr-imagenet":
            run_dvbpr(method, resolution=backbone_resolution, tower=args.backbone, tower_weights="imagenet",
                      frozen_stages=args.frozen_stages,
                      init_from=os.path.abspath(os.path.join(root, "dvbpr-imagenet-head")) if args.fine_tune_from_head
                      else "")
        else:
            run_baseline(method, kinds.get(method).train, tune_as=method)
        log(f"[{name}] {method} done in {(time.time() - t0) / 60:.1f} min")
    report["intervals"] = intervals(per_user)
    for line in interval_lines(report["intervals"]):
        log(f"[{name}] {line}")
    np.savez(os.path.join(root, "per_user_test.npz"),
             **{f"{m}/{k}": v for m, rows in per_user.items() for k, v in rows.items()})
    report["total_minutes"] = round((time.time() - t_data) / 60, 2)
    plot_curves(name, report, os.path.join(args.out, f"{name}_auc_vs_step.png"))
    return report


def intervals(per_user: dict) -> list[dict]:
    """Paired bootstrap 95% intervals over test users of a - b for the COMPARISONS both rows exist for."""
    from tfmodels.evaluation import paired_bootstrap

    out = []
    for a, b in COMPARISONS:
        if a in per_user and b in per_user:
            for key in CI_KEYS:
                out.append({"a": a, "b": b, "metric": key,
                            **paired_bootstrap(per_user[a][key], per_user[b][key], resamples=2000, seed=0)})
    return out


def interval_lines(rows: list[dict]) -> list[str]:
    return [f"{r['a']} - {r['b']}, {r['metric']}: {r['diff']:+.4f} [{r['lo']:+.4f}, {r['hi']:+.4f}] "
            f"over {r['users']} users" + ("" if r["lo"] > 0 or r["hi"] < 0 else " (interval includes 0)")
            for r in rows]


def plot_curves(name: str, report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "auc_all", "validation AUC (all items)"),
                           (axes[1], "auc_cold_vs_cold", "validation AUC (cold vs cold)")):
        for method, curve in report["curves"].items():
            pts = [(c["step"], c[key]) for c in curve if c.get(key) is not None and math.isfinite(c[key])]
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(xs) < 3 else None, label=method)
        if report.get("oracle", {}).get(key) is not None:
            ax.axhline(report["oracle"][key], color="k", linestyle="--", label="oracle (test)")
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{name}: {title}")
        ax.set_xlabel("training step")
        ax.set_ylabel("AUC")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with files.replacing(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def fmt(v, digits=4):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"# Recommender quality ({'quick smoke run' if results['quick'] else 'preset ' + results['preset']})", "",
             f"Machine: {m['cpu']} ({m.get('simd', '?')}), {m['cores_usable']} usable cores, {m['memory']} RAM, {m.get('gpus', '?')} "
             f"GPU(s); TensorFlow {m.get('tensorflow', '?')}, Python {m['python']}; load average at start "
             f"{m['load_avg_1_5_15']}.",
             "", f"Command: `{results['command']}`", ""]
    if results.get("reuse"):
        lines += ["With --reuse: methods found trained in the output folder were evaluated as they were; "
                  "their training (and its machine line and times) is in the log of the run that trained them; "
                  "'train min' is '-' where that run kept no record.", ""]
    lines += ["Test split, each method's checkpoint chosen by validation AUC (all items). AUC per user = share of "
             "the user's negatives ranked below the held-out item (ties half); *cold* = users whose test item "
             "has no training interaction; *cold-vs-cold* = those users with negatives restricted to never-trained "
             "items (the main cold figure: non-visual methods score exactly 0.5 there); *sampled* = 100 random "
             "negatives per user. In every method the item-specific (non-visual) part of a never-trained item's "
             "score is the user's median of that part over trained items (see tfmodels/evaluation.py). Plain cold AUC rewards ranking unseen items "
             "first where every unseen item is somebody's held-out item (H&M): read it with that caveat.", ""]
    for name, rep in results["datasets"].items():
        st = rep["stats"]
        lines += [f"## {name}", "",
                  f"{st.get('users', '?')} users, {st.get('items', '?')} items; preset {rep['preset']}, "
                  f"{rep['config']['data']['resolution']} px; total {rep['total_minutes']} min.", ""]
        head = ["method", "AUC all", "AUC cold", "AUC cold-vs-cold", "sampled AUC all", "sampled AUC cold",
                "recall@10", "NDCG@10", "steps (best)", "train min"]
        has_oracle = "oracle" in rep
        if has_oracle:
            head.append("oracle margin closed")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method in [m for m in METHODS if m in rep["methods"]]:
            row = rep["methods"][method]
            cells = [method] + [fmt(row.get(k)) for k in COLUMNS] + [
                f"{row['steps']} ({row.get('best_step')})", fmt(row.get("train_minutes"), 1)]
            if has_oracle:
                cells.append(fmt(row.get("oracle_margin_closed"), 2))
            lines.append("| " + " | ".join(cells) + " |")
        if has_oracle:
            o = rep["oracle"]
            if "true_features" in rep:
                t = rep["true_features"]
                cells = ["*learnable ceiling* (VBPR on the true features)"] + [fmt(t.get(k)) for k in COLUMNS] + [
                    f"{t['steps']} ({t.get('best_step')})", fmt(t.get("train_minutes"), 1),
                    fmt(t.get("oracle_margin_closed"), 2)]
                lines.append("| " + " | ".join(cells) + " |")
            cells = ["**oracle** (true scores)"] + [fmt(o.get(k)) for k in COLUMNS] + ["-", "-", "1.00"]
            lines.append("| " + " | ".join(cells) + " |")
        if "true_features" in rep:
            lines += ["", "Learnable ceiling: VBPR (as above, same budget) on the 8 pixel features the simulated "
                          "tastes are defined on plus the one-hot category instead of a CNN's: perfect features, "
                          "only each user's weights to learn from their few purchases. The oracle also knows "
                          "the weights; no recommender trained on these purchases should be expected to pass "
                          "the ceiling."]
        if "classifier" in rep:
            c = rep["classifier"]
            lines += ["", f"Pre-trained category classifier: accuracy {fmt(c['accuracy'])} on held-out items "
                          f"(majority class {fmt(c['chance'])}), {c['steps']} steps, {fmt(c['train_minutes'], 1)} min."]
        if rep.get("intervals"):
            lines += ["", "Paired differences a - b over the same test users, mean and bootstrap 95% interval "
                          "(2,000 resamples of users):", "", "| a - b | metric | difference | 95% interval | users |",
                      "|---|---|---:|---:|---:|"]
            lines += [f"| {r['a']} - {r['b']} | {r['metric']} | {r['diff']:+.4f} | [{r['lo']:+.4f}, {r['hi']:+.4f}] "
                      f"| {r['users']} |" for r in rep["intervals"]]
        if rep.get("tuned"):
            lines += ["", "Tuned on validation before training (`tfmodels.tune`, the same budget per method; "
                          "validation auc_all of the chosen trial vs the preset's settings, trial 0):", ""]
            lines += [f"- {m}: {fmt(t['value'])} vs {fmt(t['default_value'])} in {t['minutes']:g} min; "
                      f"trained with {' '.join(t['set']) or 'the preset settings'}" for m, t in rep["tuned"].items()]
        if "backbone" in rep and any(m.endswith("-imagenet") for m in rep["methods"]):
            bb = rep["backbone"]
            lines += ["", f"Backbone rows: {bb['tower']} from its ImageNet weights at {bb['resolution']} px; "
                          f"vbpr-imagenet on its frozen pooled features; dvbpr-imagenet-head trains only DVBPR's "
                          f"embedding head and user vectors on the frozen backbone; dvbpr-imagenet fine-tunes stages "
                          f"{bb['frozen_stages']}..8 (of stem 0, MBConv 1-7, head conv 8) and the embedding "
                          f"end to end with the BPR objective (backbone Adam rate {bb['backbone_learning_rate']:g}), "
                          f"on the frozen stages' cached output"
                          + (", starting from dvbpr-imagenet-head's best checkpoint (linear probing, then "
                             "fine-tuning)." if bb.get("from_head") else ".")]
        u = next(iter(rep["methods"].values()), {})
        lines += ["", f"Test users: {u.get('users', '?')}, cold: {u.get('cold_users', '?')}, "
                      f"cold-vs-cold: {u.get('cold_vs_cold_users', '?')}.",
                  "", f"![AUC vs step]({name}_auc_vs_step.png)", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--preset", choices=("cpu", "paper"), default="cpu",
                   help="model/training preset (cpu: <= 60 min per data set on 2 cores)")
    p.add_argument("--quick", action="store_true", help="a few-minute smoke run (small world, 32 px)")
    p.add_argument("--datasets", default="garments,hm",
                   help="comma-separated: garments, hm (hm needs --hm-dir; skipped without it)")
    p.add_argument("--hm-dir", default="", help="folder of the H&M sample (e.g. ../shared/data/hm)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    p.add_argument("--backbone-resolution", type=int, default=0,
                   help="image side of the backbone rows (vbpr-imagenet's frozen features, dvbpr-imagenet's "
                        "input; default: 128 for --preset cpu, else the preset's data.resolution)")
    p.add_argument("--backbone", default="efficientnet_lite0",
                   choices=("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"),
                   help="ImageNet backbone of the backbone rows (default %(default)s; trained at 224/240/260 px)")
    p.add_argument("--frozen-stages", type=int, default=7,
                   help="dvbpr-imagenet: lowest backbone stages kept at their ImageNet weights (0-9, model.frozen_stages)")
    p.add_argument("--fine-tune-from-head", action="store_true",
                   help="dvbpr-imagenet starts from dvbpr-imagenet-head's best checkpoint (its user vectors and "
                        "trained head; model.init_from) instead of a random head: needs dvbpr-imagenet-head in "
                        "--methods")
    p.add_argument("--baseline-max-steps", type=int, default=0,
                   help="step cap of BPR-MF and VBPR (default: 5x the preset's train.steps; they are fast, "
                        "and their budget usually ends training first)")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiply every time budget by this")
    p.add_argument("--budget", action="append", default=[], metavar="METHOD=MINUTES",
                   help="one method's time budget instead of the preset's (repeatable; e.g. dvbpr-imagenet=20)")
    p.add_argument("--steps", action="append", default=[], metavar="METHOD=N",
                   help="one method's step cap instead of the preset's (repeatable; e.g. dvbpr-imagenet=6000)")
    p.add_argument("--tune-minutes", type=float, default=0.0,
                   help="before each method's run, search its settings on validation (tfmodels.tune) with this "
                        "budget, the same for every method; the row then trains with the chosen settings "
                        "(0 = the preset's settings; default %(default)s)")
    p.add_argument("--tune-trials", type=int, default=4, help="trials of each search (default %(default)s)")
    p.add_argument("--reuse", action="store_true",
                   help="evaluate methods already trained in --out as they are (no further training); "
                        "train only the missing ones")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every run, e.g. train.learning_rate=3e-4 (repeatable)")
    p.add_argument("--out", required=True, help="output folder (work directories, tables, plots)")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    def per_method(flag, values, typ):
        out = {}
        for text in values:
            method, sep, value = text.partition("=")
            if not sep or method not in METHODS + ("classifier", "true-features"):
                p.error(f"--{flag} {text!r}: expected METHOD=VALUE with METHOD one of {', '.join(METHODS)}")
            try:
                out[method] = typ(value)
            except ValueError:
                p.error(f"--{flag} {text!r}: {value!r} is not a {typ.__name__}")
        return out

    args.budget = per_method("budget", args.budget, float)
    args.steps = per_method("steps", args.steps, int)
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    if args.fine_tune_from_head and not {"dvbpr-imagenet-head", "dvbpr-imagenet"} <= set(args.methods):
        p.error("--fine-tune-from-head: needs both dvbpr-imagenet-head and dvbpr-imagenet in --methods")
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if "hm" in names and not (args.hm_dir and os.path.isdir(args.hm_dir)):
        print(f"skipping hm: --hm-dir {args.hm_dir!r} is not a folder", flush=True)
        names.remove("hm")
    os.makedirs(args.out, exist_ok=True)

    def log(msg):
        print(msg, flush=True)

    import tensorflow  # noqa: F401  (so that the machine line names its version and GPUs)

    results = {"machine": machine_info(), "preset": args.preset, "quick": args.quick,
               "command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])),
               "started": time.strftime("%Y-%m-%d %H:%M:%S"), "reuse": args.reuse, "datasets": {}}
    log("machine: " + json.dumps(results["machine"]))
    start = time.time()
    for name in names:
        results["datasets"][name] = run_dataset(name, args, log)
        # Tables after every data set, so a later failure keeps the earlier results.
        write_outputs(args.out, results)
    results["total_minutes"] = round((time.time() - start) / 60, 2)
    write_outputs(args.out, results)
    log(markdown(results))
    log(f"wrote {os.path.join(args.out, 'results.md')} and results.json in {results['total_minutes']} min")
    return 0


def write_outputs(out: str, results: dict) -> None:
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, np.generic):
            return clean(x.item())
        return x

    for fname, text in (("results.json", json.dumps(clean(results), indent=2, sort_keys=True)),
                        ("results.md", markdown(results))):
        files.write_text(os.path.join(out, fname), text)


if __name__ == "__main__":
    sys.exit(main())
