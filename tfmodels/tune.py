"""A bounded search of one recommender's key settings on validation (``tfmodels tune KIND``).

Every recommender gets the same kind of search with the same budget, so a
comparison between methods is between tuned methods, not between hand-picked
presets. ``SPACES`` is the one table of what is searched per kind.

The search: ``trials`` trials share ``budget_minutes`` equally, each a normal
training run (``tfmodels.kinds``) with ``train.minutes = budget_minutes / trials``
(the loop's own wall-clock budget) and the kind's step cap from the config, in
its own work directory ``OUT/trial_XX/`` (it can be evaluated or exported like
any run). Trial 0 trains the config's own values (preset and ``--set``), so the
search can only match or beat them on validation; trials 1.. draw every searched
setting independently (log-uniform or a choice) from a generator seeded by
``seed``. A searched key given with ``--set`` is held at that value in every trial.

The objective is a validation metric (``auc_all`` by default) at the trial's best
checkpoint (``W/best/best.json``: the checkpoint chosen by validation
``auc_all``, the one evaluate and export use). Ties go to the earlier trial, so
the config's own values win unless beaten.

Files in ``OUT``::

    search.json    what was searched (kind, trials, seed, budget, metric, config,
                   every trial's settings): a rerun must ask for the same search
    trials.jsonl   one line per finished trial: settings, --set strings, the
                   validation metrics at its best checkpoint, steps, what stopped
                   it (steps, minutes, or diverged: a non-finite loss, whose
                   value is that of its best checkpoint before, if any), seconds
    best.json      the chosen trial: its settings as --set strings and its metric
    tune.md        the trials as a table
    trial_XX/      the trials' work directories
    pretrained/    vbpr without baseline.features_from: the one category
                   classifier whose frozen features every trial uses

Rerunning the same search skips the finished trials; an interrupted trial
resumes from its checkpoint (with a new budget of its share, as ``train.minutes``
does).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time

import numpy as np

from tfmodels import config as config_lib
from tfmodels import files, kinds
from tfmodels import workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class LogUniform:
    """A float drawn log-uniformly from [low, high], kept to 2 significant digits."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(f"{math.exp(rng.uniform(math.log(self.low), math.log(self.high))):.2g}")

    def __str__(self):
        return f"log-uniform {self.low:g}..{self.high:g}"


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``values``, each equally likely."""

    values: tuple

    def sample(self, rng: np.random.Generator):
        return self.values[int(rng.integers(len(self.values)))]

    def __str__(self):
        return "one of " + "/".join(str(v) for v in self.values)


_BPR = {"baseline.learning_rate": LogUniform(1e-3, 1e-1), "baseline.l2": LogUniform(1e-4, 1.0),
        "baseline.latent_dim": Choice((10, 20, 50))}
SPACES = {
    "pop": {},  # nothing to tune: it counts
    "bpr-mf": _BPR,
    "vbpr": {**_BPR, "baseline.l2_visual": LogUniform(1e-5, 1e-1), "baseline.visual_dim": Choice((10, 20, 50))},
    "dvbpr": {"train.learning_rate": LogUniform(1e-5, 1e-3), "train.lambda_theta": LogUniform(1e-3, 10.0),
              "train.lambda_cnn": LogUniform(1e-5, 1e-1), "model.embedding_dim": Choice((32, 64, 100))},
}
"""What ``tune`` searches per recommender kind: config key -> its distribution."""

SEARCH = "search.json"
TRIALS = "trials.jsonl"
BEST = "best.json"
TABLE = "tune.md"


def search_space(kind: str) -> dict:
    """The searched settings of ``kind`` (``SPACES``).

    Raises:
      ValueError: ``kind`` is not a recommender (the classifier, the GAN: no
        validation AUC to choose by) or has nothing to tune (pop).
    """
    k = kinds.get(kind)
    if not k.recommender:
        raise ValueError(f"{kind!r} is not a recommender, and the search chooses by validation AUC; "
                         f"tune one of {', '.join(name for name in kinds.RECOMMENDERS if SPACES.get(name))}")
    if not SPACES.get(kind):
        raise ValueError(f"{kind!r} has no settings to tune (PopRank counts training interactions); "
                         "train it with `tfmodels train pop`")
    return SPACES[kind]


def _value(cfg, key: str):
    section, _, name = key.partition(".")
    return getattr(getattr(cfg, section), name)


def sample_settings(kind: str, cfg, trials: int, seed: int = 0, fixed=()) -> list[dict]:
    """The settings of every trial: [{key: value}] in ``SPACES[kind]``'s key order.

    Trial 0 holds ``cfg``'s values; trial t >= 1 draws each key from its
    distribution (``seed`` fixes the draws; a key in ``fixed`` keeps ``cfg``'s value,
    the other keys' draws do not depend on which keys are fixed).
    """
    space = search_space(kind)
    if trials < 1:
        raise ValueError(f"--trials must be at least 1, got {trials}")
    rng = np.random.default_rng(seed)
    default = {key: _value(cfg, key) for key in space}
    out = [default]
    for _ in range(1, trials):
        drawn = {key: dist.sample(rng) for key, dist in space.items()}
        out.append({key: default[key] if key in fixed else value for key, value in drawn.items()})
    return out


def set_flags(settings: dict) -> list[str]:
    """``{key: value}`` -> ["key=value", ...], the strings of ``--set`` (and ``apply_overrides``)."""
    return [f"{key}={value}" for key, value in settings.items()]


def read_trials(out: str) -> list[dict]:
    """The finished trials recorded in ``OUT/trials.jsonl`` ([] if none)."""
    path = os.path.join(out, TRIALS)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_trials(out: str, records: list[dict]) -> None:
    files.write_text(os.path.join(out, TRIALS), "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def _check_same_search(out: str, search: dict) -> None:
    """Writes ``OUT/search.json``, or refuses when it records another search (naming what differs)."""
    path = os.path.join(out, SEARCH)
    old = workdir_lib.read_json(path)
    if old is None:
        os.makedirs(out, exist_ok=True)
        files.write_json(path, search)
        return
    pairs = [(key, old.get(key), value) for key, value in search.items() if key != "config"]
    pairs += [(key, old.get("config", {}).get(key), value) for key, value in search["config"].items()]
    for key, was, now in pairs:
        if was != now:
            raise ValueError(f"{out} holds a search with {key}={was!r}, this run asks for {now!r}; "
                             "rerun the same search or use another --out")


def _pretrain_features(cfg, out: str, log) -> str:
    """vbpr without baseline.features_from: one classifier in OUT/pretrained for every trial."""
    source = os.path.abspath(os.path.join(out, "pretrained"))
    info = workdir_lib.read_json(os.path.join(source, workdir_lib.MODEL)) or {}
    if "stopped" in info:  # its run ended (step cap or budget): training on would change the features
        log(f"[tune] VBPR features from the classifier in {source}")
    else:
        log(f"[tune] pre-training the category classifier for VBPR's features in {source} (once, for every trial)")
        kinds.get("classifier").train(cfg, source)
    return source


def _show(settings: dict) -> str:
    return "  ".join(f"{key}={value}" for key, value in settings.items())


def tune(cfg, kind: str, out: str, budget_minutes: float, trials: int = 8, seed: int = 0,
         metric: str = "auc_all", fixed=(), log=None) -> dict:
    """Searches ``kind``'s settings (``SPACES``) within ``budget_minutes`` of training; returns best.json's content.

    Args:
      cfg: the base Config (preset, --set, data flags); trial 0 trains it as is.
      kind: a recommender kind with a search space (bpr-mf, vbpr, dvbpr).
      out: the search's folder OUT (created; a rerun of the same search resumes).
      budget_minutes: training budget of the whole search; each trial gets
        ``budget_minutes / trials`` as ``train.minutes`` (reading data and the final
        evaluation add to the wall-clock time).
      trials: number of trials (trial 0 = cfg's values).
      seed: seed of the drawn settings.
      metric: the validation metric to maximise (``tfmodels.evaluation.METRIC_KEYS``)
        at each trial's best checkpoint.
      fixed: searched keys held at cfg's value in every trial (those given with --set).
      log: callable for progress lines (default: print).

    Returns:
      {"kind", "metric", "value", "trial", "workdir", "set" (the chosen settings as
      --set strings, with the features tune pre-trained for vbpr), "settings",
      "default_value" (trial 0's)}, also written to OUT/best.json.

    Raises:
      ValueError: a kind without search space, a bad budget or metric, every
        searched key fixed, OUT holding another search, or no trial with a value.
    """
    from tfmodels.evaluation import METRIC_KEYS

    log = log or (lambda msg: print(msg, flush=True))
    space = search_space(kind)
    if not budget_minutes > 0:
        raise ValueError(f"--budget-minutes must be positive, got {budget_minutes}")
    if metric not in METRIC_KEYS:
        raise ValueError(f"unknown --metric {metric!r}; choose one of {', '.join(METRIC_KEYS)}")
    fixed = [key for key in fixed if key in space]
    if len(fixed) == len(space):
        raise ValueError(f"every searched setting of {kind} is fixed by --set ({', '.join(fixed)}): "
                         "nothing left to search")
    settings = sample_settings(kind, cfg, trials, seed, fixed)
    minutes = budget_minutes / trials
    # Where the data live may change between reruns; what they are may not.
    base = {f"{section}.{name}": value for section, fields in config_lib.to_dict(cfg).items()
            for name, value in fields.items() if f"{section}.{name}" not in ("data.data_dir", "data.cache_dir")}
    _check_same_search(out, {"kind": kind, "trials": trials, "seed": seed, "budget_minutes": budget_minutes,
                             "metric": metric, "settings": settings, "config": base})
    log(f"[tune] {kind}: {trials} trials of {minutes:g} min each (budget {budget_minutes:g} min), "
        f"maximising validation {metric}; searching "
        + "; ".join(f"{key} {dist}" for key, dist in space.items() if key not in fixed)
        + (f"; held by --set: {', '.join(fixed)}" if fixed else ""))
    cfg, made = copy.deepcopy(cfg), []
    if kind == "vbpr" and not cfg.baseline.features_from:
        cfg.baseline.features_from = _pretrain_features(cfg, out, log)
        made = [f"baseline.features_from={cfg.baseline.features_from}"]  # training again needs the same features
    records = read_trials(out)
    done = {r["trial"] for r in records}
    for t, trial in enumerate(settings):
        name = f"trial_{t:02d}"
        if t in done:
            log(f"[tune] {name}: finished before, skipped")
            continue
        log(f"[tune] {name} ({t + 1}/{trials}{', the config as given' if t == 0 else ''}): {_show(trial)}")
        trial_cfg = config_lib.apply_overrides(copy.deepcopy(cfg), set_flags(trial) + [f"train.minutes={minutes}"])
        workdir = os.path.join(out, name)
        start = time.time()
        try:
            summary = kinds.get(kind).train(trial_cfg, workdir)
        except FloatingPointError as e:  # a diverging setting is an outcome of the search, not its end
            log(f"[tune] {name}: {e}")
            info = workdir_lib.read_json(os.path.join(workdir, workdir_lib.MODEL)) or {}
            summary = {"step": info.get("step", 0), "stopped": "diverged"}
        best = workdir_lib.read_json(os.path.join(workdir, "best", "best.json")) or {}
        metrics = best.get("metrics", {})
        record = {"trial": t, "workdir": workdir, "settings": trial, "set": set_flags(trial),
                  "value": metrics.get(metric), "best_step": best.get("step"),
                  "metrics": {k: metrics.get(k) for k in METRIC_KEYS}, "steps": summary["step"],
                  "stopped": summary["stopped"], "seconds": round(time.time() - start, 1)}
        records.append(record)
        _write_trials(out, records)
        value = "none" if record["value"] is None else f"{record['value']:.4f}"
        log(f"[tune] {name}: validation {metric} {value} (best step {record['best_step']}, "
            f"{record['steps']} steps, {record['seconds']:.0f}s)")

    records.sort(key=lambda r: r["trial"])
    scored = [r for r in records if r["value"] is not None]
    if not scored:
        raise ValueError(f"no trial has a validation {metric} (e.g. no cold validation users for "
                         "auc_cold_vs_cold); choose another --metric")
    chosen = max(scored, key=lambda r: (r["value"], -r["trial"]))
    result = {"kind": kind, "metric": metric, "value": chosen["value"], "trial": chosen["trial"],
              "workdir": chosen["workdir"], "set": chosen["set"] + made, "settings": chosen["settings"],
              "default_value": records[0]["value"]}
    files.write_json(os.path.join(out, BEST), result)
    _write_table(out, kind, metric, list(space), records, chosen["trial"], minutes)
    log(f"[tune] best: trial_{chosen['trial']:02d}, validation {metric} {chosen['value']:.4f} "
        f"(the config as given: {_fmt(result['default_value'])}) -> {os.path.join(out, BEST)}, "
        f"{os.path.join(out, TABLE)}")
    log("[tune] train with: " + " ".join(f"--set {s}" for s in result["set"]))
    return result


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _write_table(out: str, kind: str, metric: str, keys: list, records: list, chosen: int, minutes: float) -> None:
    lines = [f"# tfmodels tune {kind}", "",
             f"{len(records)} trials of {minutes:g} min each; validation {metric} at each trial's best "
             f"checkpoint; trial 0 = the config as given; chosen: trial_{chosen:02d} (**bold**).", "",
             "| trial | " + " | ".join(keys) + f" | {metric} | best step | steps | seconds |",
             "|---" * (len(keys) + 5) + "|"]
    for r in records:
        cells = [f"trial_{r['trial']:02d}"] + [str(r["settings"][k]) for k in keys] + [
            _fmt(r["value"]), str(r["best_step"]), str(r["steps"]), f"{r['seconds']:.0f}"]
        if r["trial"] == chosen:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    files.write_text(os.path.join(out, TABLE), "\n".join(lines) + "\n")
