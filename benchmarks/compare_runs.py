"""Two runs of recommender_quality.py on the same split, row against row, with paired intervals.

``recommender_quality.py`` gives paired bootstrap intervals between the rows of one run. To compare
two runs (the preset's settings against ``--tune-minutes``, one backbone learning rate against another)
this reads both runs' per-user test figures (``<out>/<dataset>/per_user_test.npz``), pairs the same
test users (the split depends only on the data and its seed: other users, or other held-out items where
both runs saved them, are an error), and
prints, per method and metric, both means and the difference B - A with its paired bootstrap 95%
interval over users (``tfmodels.evaluation.paired_bootstrap``, 2,000 resamples).

    python benchmarks/compare_runs.py bench_out/rq_garments bench_out/rq_garments_tuned --dataset garments
    python benchmarks/compare_runs.py bench_out/rq_hm2 bench_out/rq_hm_blr --dataset hm --methods dvbpr-imagenet
    python benchmarks/compare_runs.py A B --dataset hm --pair vbpr-imagenet:dvbpr-imagenet   # A's row vs B's row
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from tfmodels.evaluation import paired_bootstrap  # noqa: E402

METRICS = ("auc_all", "auc_cold_vs_cold", "recall_at_10")


def load_run(out: str, dataset: str) -> tuple[dict, str]:
    """{method: {metric: per-user array}} of one run, and the command that made it."""
    path = os.path.join(out, dataset, "per_user_test.npz")
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: is {out!r} a recommender_quality.py --out folder with "
                         f"data set {dataset!r}?")
    rows: dict = {}
    with np.load(path) as npz:
        for key in npz.files:
            method, _, metric = key.partition("/")
            rows.setdefault(method, {})[metric] = npz[key]
    command = "?"
    results = os.path.join(out, "results.json")
    if os.path.exists(results):
        with open(results) as f:
            command = json.load(f).get("command", "?")
    return rows, command


def compare(a_rows: dict, b_rows: dict, pairs: list[tuple[str, str]], metrics) -> list[dict]:
    out = []
    for ma, mb in pairs:
        for key in ("user", "item"):  # runs before the held-out items were saved have users only
            if key not in a_rows[ma] or key not in b_rows[mb]:
                continue
            ka, kb = a_rows[ma][key], b_rows[mb][key]
            if ka.shape != kb.shape or not np.array_equal(ka, kb):
                raise SystemExit(f"{ma} (A) and {mb} (B) were tested on different {key}s "
                                 f"({len(ka)} vs {len(kb)} users): not the same split")
        for metric in metrics:
            if metric not in a_rows[ma] or metric not in b_rows[mb]:
                raise SystemExit(f"metric {metric!r} missing for {ma} (A) or {mb} (B); "
                                 f"have {sorted(k for k in a_rows[ma] if k not in ('user', 'item'))}")
            a, b = a_rows[ma][metric], b_rows[mb][metric]
            ci = paired_bootstrap(b, a, resamples=2000, seed=0)
            out.append({"a": ma, "b": mb, "metric": metric, "mean_a": float(np.nanmean(a)),
                        "mean_b": float(np.nanmean(b)), **ci})
    return out


def markdown(rows: list[dict], a_cmd: str, b_cmd: str) -> str:
    lines = [f"A: `{a_cmd}`", f"B: `{b_cmd}`", "",
             "| A row | B row | metric | A | B | B - A [95% interval] | users |", "|---|---|---|---:|---:|---|---:|"]
    for r in rows:
        sep = "" if r["lo"] > 0 or r["hi"] < 0 else " (includes 0)"
        lines.append(f"| {r['a']} | {r['b']} | {r['metric']} | {r['mean_a']:.4f} | {r['mean_b']:.4f} | "
                     f"{r['diff']:+.4f} [{r['lo']:+.4f}, {r['hi']:+.4f}]{sep} | {r['users']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("a", help="run A: a recommender_quality.py --out folder")
    p.add_argument("b", help="run B: another one on the same data")
    p.add_argument("--dataset", required=True, help="data set folder inside both runs (garments, hm)")
    p.add_argument("--methods", default="", help="comma-separated rows present in both (default: every shared row)")
    p.add_argument("--pair", action="append", default=[], metavar="A_METHOD:B_METHOD",
                   help="compare A's row A_METHOD with B's row B_METHOD (repeatable; instead of --methods)")
    p.add_argument("--metrics", default=",".join(METRICS), help="comma-separated (default %(default)s)")
    args = p.parse_args(argv)
    a_rows, a_cmd = load_run(args.a, args.dataset)
    b_rows, b_cmd = load_run(args.b, args.dataset)
    if args.pair:
        pairs = []
        for text in args.pair:
            ma, sep, mb = text.partition(":")
            if not sep or ma not in a_rows or mb not in b_rows:
                p.error(f"--pair {text!r}: need A_METHOD:B_METHOD with A's rows {sorted(a_rows)} "
                        f"and B's rows {sorted(b_rows)}")
            pairs.append((ma, mb))
    else:
        shared = [m for m in a_rows if m in b_rows]
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()] or shared
        missing = [m for m in wanted if m not in shared]
        if missing:
            p.error(f"rows {missing} are not in both runs (shared: {shared})")
        pairs = [(m, m) for m in wanted]
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    print(markdown(compare(a_rows, b_rows, pairs, metrics), a_cmd, b_cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
