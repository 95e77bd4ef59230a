"""`tfmodels tune`: a bounded, seeded search on validation over the tiny simulated garment world."""

import contextlib
import io
import json
import os
import re

import pytest

import tfmodels  # noqa: F401  (tf-keras before TensorFlow)
from tfmodels import config as config_lib
from tfmodels import tune
from tfmodels.cli import main

TUNE = ["--preset", "tiny", "--dataset", "garments", "--budget-minutes", "1.5", "--trials", "3", "--seed", "1"]


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One 3-trial BPR-MF search (20 steps each, the tiny preset's cap, reached well within each trial's
    30 seconds also on a busy machine) and its printed output."""
    out = str(tmp_path_factory.mktemp("tune") / "bprmf")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["tune", "bpr-mf", "--out", out] + TUNE) == 0
    return out, printed.getvalue()


def test_help_explains_the_search_the_budget_and_the_outputs(capsys):
    with pytest.raises(SystemExit) as e:
        main(["tune", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("--budget-minutes", "--trials", "train.minutes=N/T", "Trial 0", "trials.jsonl", "best.json",
                  "tune.md", "baseline.l2_visual", "train.lambda_cnn", "--data-dir", "--set"):
        assert words in text, words


@pytest.mark.parametrize("kind, says", [("gan", "not a recommender.*bpr-mf, vbpr, dvbpr"),
                                        ("classifier", "not a recommender.*bpr-mf, vbpr, dvbpr"),
                                        ("pop", "no settings to tune")])
def test_refuses_kinds_without_settings_to_search(kind, says, tmp_path, capsys):
    assert main(["tune", kind, "--out", str(tmp_path / "o")] + TUNE) == 2
    assert re.search(says, capsys.readouterr().err)
    assert not os.path.exists(tmp_path / "o")


def test_settings_are_seeded_trial_0_is_the_config_and_set_keys_are_held():
    cfg = config_lib.tiny()
    settings = tune.sample_settings("dvbpr", cfg, 6, seed=3)
    assert settings == tune.sample_settings("dvbpr", cfg, 6, seed=3)
    assert settings != tune.sample_settings("dvbpr", cfg, 6, seed=4)
    assert settings[0] == {"train.learning_rate": 1e-3, "train.lambda_theta": 1.0, "train.lambda_cnn": 1e-3,
                           "model.embedding_dim": 16}
    for trial in settings[1:]:
        assert 1e-5 <= trial["train.learning_rate"] <= 1e-3 and 1e-3 <= trial["train.lambda_theta"] <= 10
        assert trial["model.embedding_dim"] in (32, 64, 100)
    held = tune.sample_settings("dvbpr", cfg, 6, seed=3, fixed=["model.embedding_dim"])
    assert all(t["model.embedding_dim"] == 16 for t in held)
    assert [t["train.lambda_cnn"] for t in held] == [t["train.lambda_cnn"] for t in settings]
    with pytest.raises(ValueError, match="nothing left to search"):
        tune.tune(cfg, "bpr-mf", "unused", 1.0, fixed=list(tune.SPACES["bpr-mf"]))


def test_a_search_writes_its_trials_and_chooses_the_best(searched):
    out, printed = searched
    trials = _lines(os.path.join(out, "trials.jsonl"))
    assert [t["trial"] for t in trials] == [0, 1, 2]
    assert trials[0]["settings"] == {"baseline.learning_rate": 0.01, "baseline.l2": 0.1, "baseline.latent_dim": 8}
    assert len({json.dumps(t["settings"], sort_keys=True) for t in trials}) == 3
    for t in trials:
        assert t["steps"] == 20 and 0 < t["value"] < 1 and t["value"] == t["metrics"]["auc_all"]
        with open(os.path.join(t["workdir"], "config.json")) as f:
            assert json.load(f)["train"]["minutes"] == pytest.approx(0.5)  # 1.5 minutes over 3 trials
    best = json.load(open(os.path.join(out, "best.json")))
    assert best["value"] == max(t["value"] for t in trials) and best["default_value"] == trials[0]["value"]
    assert best["set"] == trials[best["trial"]]["set"]
    again = config_lib.apply_overrides(config_lib.tiny(), best["set"])  # pasteable --set strings
    assert again.baseline.l2 == best["settings"]["baseline.l2"]
    assert "**trial_%02d**" % best["trial"] in open(os.path.join(out, "tune.md")).read()
    assert "--set " + best["set"][0] in printed and "tfmodels train bpr-mf --preset tiny" in printed


def test_a_rerun_skips_finished_trials_and_a_changed_search_is_refused(searched, capsys):
    out, _ = searched
    metrics = open(os.path.join(out, "trial_01", "metrics.jsonl")).read()
    assert main(["tune", "bpr-mf", "--out", out] + TUNE) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished before, skipped") == 3 and "[bpr-mf]" not in printed
    assert open(os.path.join(out, "trial_01", "metrics.jsonl")).read() == metrics
    assert len(_lines(os.path.join(out, "trials.jsonl"))) == 3
    changed = [a if a != "3" else "4" for a in TUNE]
    assert main(["tune", "bpr-mf", "--out", out] + changed) == 2
    assert "trials=3" in capsys.readouterr().err
    assert main(["tune", "bpr-mf", "--out", out, "--set", "baseline.steps=30"] + TUNE) == 2
    assert "baseline.steps=20" in capsys.readouterr().err


@pytest.mark.slow
def test_vbpr_search_pretrains_one_classifier_for_every_trial(tmp_path, capsys):
    out = str(tmp_path / "vbpr")
    argv = ["tune", "vbpr", "--out", out, "--preset", "tiny", "--dataset", "garments", "--budget-minutes", "0.2",
            "--trials", "2", "--set", "baseline.visual_dim=8"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("pre-training the category classifier") == 1
    best = json.load(open(os.path.join(out, "best.json")))
    source = os.path.abspath(os.path.join(out, "pretrained"))
    assert best["set"][-1] == f"baseline.features_from={source}"
    for t in _lines(os.path.join(out, "trials.jsonl")):
        assert t["settings"]["baseline.visual_dim"] == 8
        with open(os.path.join(t["workdir"], "model.json")) as f:
            assert json.load(f)["features_from"] == source


def _fake_train(cfg, workdir):
    """A stand-in for training: validation auc_all 1 / (1 + l2); trial_01 diverges before any evaluation."""
    from tfmodels import workdir as workdir_lib

    os.makedirs(os.path.join(workdir, "best"), exist_ok=True)
    if workdir.endswith("trial_01"):
        raise FloatingPointError("[bpr-mf] non-finite loss ['loss'] at step 5")
    value = 1 / (1 + cfg.baseline.l2)
    workdir_lib.write_best(os.path.join(workdir, "best"), {"step": 20, "metric": "auc_all", "value": value,
                                                          "metrics": {"auc_all": value, "step": 20}})
    return {"step": 20, "stopped": "steps"}


def test_a_diverging_trial_is_recorded_and_the_search_goes_on(tmp_path, monkeypatch):
    import dataclasses

    from tfmodels import kinds

    monkeypatch.setitem(kinds.KINDS, "bpr-mf",
                        dataclasses.replace(kinds.KINDS["bpr-mf"], train_fn=f"{__name__}:_fake_train"))
    logged = []
    best = tune.tune(config_lib.tiny(), "bpr-mf", str(tmp_path / "o"), 1.0, trials=5, seed=2, log=logged.append)
    trials = _lines(tmp_path / "o" / "trials.jsonl")
    assert trials[1]["stopped"] == "diverged" and trials[1]["value"] is None
    assert best["value"] == max(t["value"] for t in trials if t["value"] is not None)
    assert best["settings"]["baseline.l2"] == min(t["settings"]["baseline.l2"] for t in trials if t["trial"] != 1)
    assert any("non-finite loss" in line for line in logged)
    assert "| trial_01 |" in open(tmp_path / "o" / "tune.md").read()
