"""``tfmodels demo``: the end-to-end pipeline on built-in (or H&M) data.

Every stage is an ordinary ``tfmodels`` command run as a subprocess, so the
report can list the exact command that reproduces it. A stage whose outputs
exist is skipped on the next run (``--fresh`` starts over).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the end-to-end demo (simulated garment world, or H&M with --data hm)",
        description=(
            "Runs the whole pipeline stage by stage and writes OUT/REPORT.md. Stages already "
            "done in OUT are reused; --fresh starts over."
        ),
    )
    p.add_argument("--data", choices=["garments", "hm"], default="garments",
                   help="garments: the project's procedural garments with simulated users (default); "
                        "hm: the H&M Kaggle layout at --hm-dir")
    p.add_argument("--hm-dir", default="../shared/data/hm", help="folder with the H&M Kaggle layout (for --data hm)")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--preset", default="cpu", choices=["tiny", "cpu", "paper"],
                   help="size of every model (tiny: seconds, for tests; cpu: minutes on 2 cores)")
    p.add_argument("--fresh", action="store_true", help="delete OUT first and redo every stage")
    p.set_defaults(func=run)


def _dataset_args(args) -> list[str]:
    if args.data == "hm":
        return ["--dataset", "hm", "--data-dir", os.path.abspath(args.hm_dir)]
    return ["--dataset", "garments"]


def _stage(name: str, cmd: list[str], done: str, log: list, stdout_to: str | None = None) -> None:
    """Runs ``cmd`` unless ``done`` exists; records the command for the report."""
    shown = "tfmodels " + " ".join(shlex.quote(c) for c in cmd)
    if stdout_to:
        shown += f" > {shlex.quote(stdout_to)}"
    log.append((name, shown))
    if os.path.exists(done):
        print(f"[demo] {name}: done already ({done})", flush=True)
        return
    print(f"[demo] {name}: {shown}", flush=True)
    start = time.time()
    full = [sys.executable, "-m", "tfmodels"] + cmd
    if stdout_to:
        tmp = stdout_to + ".tmp"
        with open(tmp, "w") as f:
            subprocess.run(full, check=True, stdout=f)
        os.replace(tmp, stdout_to)
    else:
        subprocess.run(full, check=True)
    print(f"[demo] {name}: finished in {time.time() - start:.0f} s", flush=True)


def run(args) -> int:
    out = os.path.abspath(args.out)
    if args.fresh and os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    data = _dataset_args(args)
    preset = ["--preset", args.preset]
    log: list = []

    stats = os.path.join(out, "data_stats.json")
    _stage("data statistics", ["data", "stats"] + data + preset, stats, log, stdout_to=stats)
    sheet = os.path.join(out, "contact_sheet.png")
    _stage("contact sheet", ["data", "preview"] + data + preset + ["--out", sheet], sheet, log)

    _write_report(out, args, log)
    print(json.dumps(json.load(open(stats)), indent=2))
    print(f"[demo] report: {os.path.join(out, 'REPORT.md')}")
    return 0


def _write_report(out: str, args, log: list) -> None:
    stats = json.load(open(os.path.join(out, "data_stats.json")))
    lines = [
        "# tfmodels demo report",
        "",
        f"Data: {args.data}; preset: {args.preset}.",
        "",
        "## Data",
        "",
        "| statistic | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in stats.items() if not isinstance(v, (dict, list))]
    lines += ["", "![contact sheet](contact_sheet.png)", "", "## Commands to reproduce each step", ""]
    lines += [f"- {name}: `{cmd}`" for name, cmd in log]
    tmp = os.path.join(out, "REPORT.md.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, os.path.join(out, "REPORT.md"))
