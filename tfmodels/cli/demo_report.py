"""The demo's write-up: its pictures and OUT/REPORT.md (``tfmodels demo``, ``tfmodels.cli.demo``)."""

from __future__ import annotations

import os
import shutil
import time

from tfmodels import files
from tfmodels.kinds import RECOMMENDERS
from tfmodels.workdir import read_json


def pictures(out: str, runs: dict, results: dict, args) -> None:
    from tfmodels import report as rep

    oracle = (results.get("oracle") or {}).get("auc_all")
    rep.plot_training_curves({k: runs[k] for k in reversed(RECOMMENDERS)},
                             os.path.join(out, "pictures", "training_curves.png"), oracle=oracle,
                             gan_workdir=runs["gan"], classifier_workdir=runs["classifier"])
    samples = os.path.join(runs["gan"], "samples")
    if os.path.isdir(samples) and os.listdir(samples):
        last = sorted(f for f in os.listdir(samples) if f.endswith(".png"))[-1]
        shutil.copyfile(os.path.join(samples, last), os.path.join(out, "pictures", "gan_training_samples.png"))


def write_report(out: str, args, runner, results: dict, timings: dict, runs: dict) -> None:
    from tfmodels import report as rep

    stats = read_json(os.path.join(out, "data_stats.json")) or {}
    oracle = results.get("oracle")
    cols = ("auc_all", "auc_cold", "auc_cold_vs_cold", "auc_sampled_all", "auc_sampled_cold", "recall_at_10",
            "ndcg_at_10")
    lines = ["# tfmodels demo report", ""]
    lines += [f"Data: **{args.data}**" + (f" ({os.path.abspath(args.hm_dir)})" if args.data == "hm" else
                                        " (procedural garments with simulated users whose tastes are known)") +
              f"; preset **{args.preset}** with the demo step counts below; written "
              f"{time.strftime('%Y-%m-%d %H:%M:%S')}.", ""]
    lines += ["## Data", ""]
    keys = ("users", "items", "interactions", "categories", "train_pairs", "test_users", "cold_items",
            "cold_test_items", "heldout_items_never_trained_share")
    lines += rep.markdown_table(["statistic", "value"], [[k, stats.get(k)] for k in keys if k in stats])
    if stats.get("category_names"):
        lines += ["", "Categories: " + ", ".join(stats["category_names"]) + "."]
    lines += ["", "![contact sheet](pictures/contact_sheet.png)", ""]

    lines += ["## Recommendation quality (test split, leave-one-out, best checkpoint by validation AUC)", ""]
    rows = []
    for kind in RECOMMENDERS:
        r = results["eval"].get(kind) or {}
        step = (read_json(os.path.join(runs[kind], "model.json")) or {}).get("step")
        rows.append([kind, step] + [r.get(c) for c in cols] + [r.get("users")])
    if oracle:
        rows.append(["oracle (true scores)", "-"] + [oracle.get(c) for c in cols] + [oracle.get("users")])
    lines += rep.markdown_table(["model", "steps"] + list(cols) + ["users"], rows)
    lines += ["", "AUC all: share of each test user's non-interacted items ranked below the held-out item "
              "(full catalogue). *Cold-vs-cold* (the main cold figure): cold test users, negatives restricted "
              "to never-trained items; every non-visual method scores exactly 0.5 there. Sampled: 100 random "
              "negatives per user, as in the authors' code. See `tfmodels/evaluation.py` for the rule on "
              "never-trained items."]
    if oracle and oracle.get("auc_all") is not None:
        o = oracle["auc_all"]
        lines += ["", f"Oracle: the simulated users' true preference scores rank the held-out items with AUC "
                  f"{o:.3f}; no recommender can do better on average. Share of the oracle's margin above chance "
                  f"that each model closes, (AUC - 0.5) / (oracle - 0.5):"]
        parts = []
        for kind in RECOMMENDERS:
            a = (results["eval"].get(kind) or {}).get("auc_all")
            if a is not None and o > 0.5:
                parts.append(f"{kind} {(a - 0.5) / (o - 0.5):.0%}")
        lines += ["", "; ".join(parts) + "."]
    elif args.data == "hm":
        lines += ["", "Real H&M customers: their true tastes are unknown, so there is no oracle row."]
    lines += ["", "![training curves](pictures/training_curves.png)", "",
              "Training curves: validation AUC per evaluation (from each run's `metrics.jsonl`), the BPR "
              "training losses and the GAN losses (from each run's TensorBoard `tb/` folder), and the "
              "category classifier's held-out accuracy. Watch them live with `tensorboard --logdir "
              f"{os.path.join(out, 'runs')}`.", ""]

    serving = results.get("serving") or {}
    lines += ["## Serving: the exported models called over gRPC like a shop", ""]
    if serving:
        srv = serving.get("server", {})
        stop = srv.get("stop", {})
        lines += [f"Server: `{srv.get('command')}` (free ports: gRPC {srv.get('grpc')}, REST {srv.get('rest')}); "
                  f"up after {srv.get('startup_s')} s; stopped with {stop.get('signal')} in {stop.get('seconds')} s, "
                  f"exit code {stop.get('exit_code')}.", ""]
        lines += ["Signatures served: " + "; ".join(f"`{m}`: {', '.join(s)}"
                                                   for m, s in serving.get("signatures", {}).items()), ""]
        sc = serving.get("score", {})
        lines += [f"- `score` of {sc.get('pairs')} (user, item) pairs in one call: output shape {sc.get('shape')} "
                  f"{sc.get('dtype')}; each test user's held-out item scored above a random catalogue item for "
                  f"{rep.fmt(sc.get('held_out_above_random_share'))} of users (0.5 = chance).",
                  f"- unknown user id: score {serving.get('score_unknown', {}).get('score')}, "
                  f"known = {serving.get('score_unknown', {}).get('known')}.",
                  ]
        lat = serving.get("latency_ms", {})
        lines += ["", "Latency per call over gRPC (this demo's calls, on a shared machine):", ""]
        lines += rep.markdown_table(["call", "calls", "median ms", "max ms"],
                                    [[k, v["calls"], _f1(v["median"]), _f1(v["max"])] for k, v in lat.items()])
        lines += ["", "### Per user: purchase history, recommendations, designs, a modified item", ""]
        design = (read_json(os.path.join(runs["gan"], "config.json")) or {}).get("design", {})
        if design.get("category_weight"):
            lines += [f"The designer searches with a category term (`design.category_weight` = "
                      f"{design['category_weight']:g}, classifier `{design.get('classifier_from')}`), which is "
                      "not in the paper: it keeps designs in their category.", ""]
        for i, u in enumerate(serving.get("users", []), 1):
            ds = u.get("design_scores") or []
            above = sum(s > (u.get("category_real_max") or float("inf")) for s in ds)
            lines += [f"**User {u['user']}** ({len(u['history'])} training purchases; held-out test item "
                      f"{u['held_out_item']} {'is' if u['held_out_in_top8'] else 'is not'} in the top 8). "
                      f"Designs ({u['design_category']}, shape {u['design_shape']}): model scores "
                      f"{', '.join(f'{s:.3g}' for s in ds)} vs the category's {u['category_real_items']} real "
                      f"items: mean {_g(u['category_real_mean'])}, 90th percentile "
                      f"{_g(u['category_real_p90'])}, max {_g(u['category_real_max'])} "
                      f"({above}/{len(ds)} designs above the best real item)."]
            if "true_design" in u:
                td = u["true_design"]
                lines[-1] += (f" True (hidden) preference of the designs: {', '.join(f'{s:.3g}' for s in td)} vs "
                              f"real items' 90th percentile {u['true_real_p90']:.3g}, max {u['true_real_max']:.3g}.")
            lines[-1] += (f" Modified {u['modify_item']} ({u['modify_category']}): score "
                          f"{u['modify_score_before']:.3g} -> {u['modify_score_after']:.3g}.")
            lines += ["", f"![user {i}](pictures/user_{i}.png)", ""]
        lines += ["### Real vs generated, per category (`generate` signature)", "",
                  "![real vs generated](pictures/real_vs_generated.png)", ""]
        if os.path.exists(os.path.join(out, "pictures", "gan_training_samples.png")):
            lines += ["The GAN's last training grid (rows = categories, columns = fixed noise):", "",
                      "![GAN samples](pictures/gan_training_samples.png)", ""]
        lines += ["The same calls from Python:", "", "```python",
                  "from serving.client import GrpcClient",
                  "c = GrpcClient('127.0.0.1:8500')",
                  "c.score(['<user id>'], ['<item id>'])          # preference x_ui, with a 'known' flag",
                  "c.recommend(['<user id>'], k=8)                # top-k item ids and scores",
                  "c.design('<user id>', '<category>', starts=4, steps=10, eta=1.0)",
                  "c.modify(['<user id>'], [png_bytes], ['<category>'], steps=10)",
                  "```", ""]

    lines += ["## Timings", ""]
    load = timings.get("total", {}).get("load_avg_1_5_15")
    lines += [f"Measured on this run ({os.cpu_count()} CPU cores; load average at the end {load}: on a shared "
              f"machine wall times are longer than on an idle one, CPU seconds less so). Training stages ran up "
              f"to {args.jobs} at a time, so their wall times overlap. 'reused' = done by an earlier run."]
    total_cpu = timings.get("total", {}).get("cpu_s")
    if total_cpu and not any(v.get("reused") for v in timings.values()):
        lines[-1] += (f" This run used {total_cpu:.0f} CPU-seconds in all (this process and every child), so on "
                      f"an idle 2-core machine it needs at least {total_cpu / 2 / 60:.1f} minutes of wall time.")
    lines += [""]
    lines += rep.markdown_table(["stage", "wall s", "CPU s", "reused"],
                                [[k, _f1(v.get("wall_s")), _f1(v.get("cpu_s")), "yes" if v.get("reused") else ""]
                                 for k, v in timings.items()])

    lines += ["", "## Commands to reproduce each step", "",
              "Run from the repository root with the venv active (`make demo` runs the whole thing: "
              f"`python -m tfmodels demo --data {args.data} --out {out}"
              + (f" --hm-dir {args.hm_dir}" if args.data == "hm" else "") + f" --preset {args.preset}`).", ""]
    for st in runner.stages.values():
        lines += [f"- {st.name}: `{st.shown()}`"]
    for kind in RECOMMENDERS:
        lines += [f"- evaluate {kind}: `tfmodels evaluate --workdir {runs[kind]} --split test > "
                  f"{os.path.join(out, 'eval', kind + '.json')}`"]
    if oracle:
        w = runs["dvbpr"]
        lines += ["- oracle AUC (the dvbpr run's world, split and images): `python -c \"import json, tfmodels; "
                  "from tfmodels import workdir as W; from tfmodels.evaluation import oracle_auc; "
                  f"d, s = W.load_data('{w}'); print(json.dumps(oracle_auc(d, s, W.image_array('{w}'))))\"`"]
    srv_cmd = (serving.get("server") or {}).get("command") if serving else None
    lines += [f"- serve: `{srv_cmd or 'tfmodels serve --model-config ' + os.path.join(out, 'export', 'models.config')}`"
              " (the demo picks free ports; by default gRPC 8500, REST 8501), then the client calls above; "
              "stop with Ctrl-C or SIGTERM."]
    lines += ["", "Logs of every stage: `" + os.path.join(out, "logs") + "/`.", ""]
    files.write_text(os.path.join(out, "REPORT.md"), "\n".join(lines) + "\n")


def _g(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _f1(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"
