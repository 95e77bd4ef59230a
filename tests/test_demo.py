"""`tfmodels demo` end to end in tiny mode: train, evaluate, export, serve, gRPC calls, REPORT.md."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tfmodels  # noqa: F401  (tf-keras before TensorFlow)

from tfmodels.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _demo(out, *extra, timeout=900):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "tfmodels", "demo", "--preset", "tiny", "--out", str(out), *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_demo_refuses_to_delete_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["demo", "--preset", "tiny", "--out", str(tmp_path), "--fresh"]) == 2
    assert "refusing" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").exists()


def test_labelled_rows_pads_rows_to_one_width():
    from tfmodels.report import labelled_rows

    rows = [("a", np.zeros((3, 8, 8, 3), np.uint8), ["1", "2", "3"]),
            ("b", np.full((1, 16, 16, 3), 200, np.uint8), ["x"]),
            ("c", np.zeros((0, 8, 8, 3), np.uint8), [])]
    pic = labelled_rows(rows, side=10)
    assert pic.dtype == np.uint8 and pic.ndim == 3 and pic.shape[2] == 3
    assert pic.shape[1] == 3 * (10 + 2) + 2  # three tiles of 10 px + padding
    assert (pic == 200).any()


@pytest.mark.slow
def test_tiny_demo_end_to_end_in_its_wall_clock_budget_then_reuses_everything(tmp_path):
    out = tmp_path / "demo"
    # Step caps far beyond the budget: the training stages stop on their share of --minutes.
    budget = ("--minutes", "3", "--set", "train.steps=100000", "--set", "baseline.steps=100000")
    first = _demo(out, *budget, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    timings = json.loads((out / "timings.json").read_text())
    # The training stages stop on their shares (below); the fixed stages (start-ups, evaluation, export,
    # serving) take longer on a busier or slower machine, so the whole run has half its budget as slack:
    # without the shares the step caps would keep it training for hours.
    assert timings["total"]["wall_s"] <= 1.5 * 180, timings["total"]
    for kind in ("dvbpr", "bpr-mf", "vbpr"):
        info = json.loads((out / "runs" / kind / "model.json").read_text())
        assert info["stopped"] == "minutes" and 0 < info["step"] < 100000, (kind, info)

    report = (out / "REPORT.md").read_text()
    for row in ("| pop |", "| bpr-mf |", "| vbpr |", "| dvbpr |", "| oracle (true scores) |"):
        assert row in report, row
    assert "auc_cold_vs_cold" in report and "tfmodels train dvbpr" in report and "tfmodels serve" in report
    assert "train.minutes=1.35" in report  # DVBPR's share: 45% of 3 minutes
    assert "train.minutes=1.80" in report  # the GAN's: 60%, the longest
    for kind in ("pop", "bpr-mf", "vbpr", "dvbpr", "oracle"):
        result = json.loads((out / "eval" / f"{kind}.json").read_text())
        assert 0.0 <= result["auc_all"] <= 1.0 and result["users"] > 0, (kind, result)

    calls = json.loads((out / "serving" / "calls.json").read_text())
    assert all(s and s[0]["state"] == "AVAILABLE" for s in calls["status"].values()), calls["status"]
    assert {"score", "recommend", "score_images"} <= set(calls["signatures"]["recommender"])
    assert {"design", "modify", "generate"} <= set(calls["signatures"]["designer"])
    assert calls["score"]["shape"] == [calls["score"]["pairs"]] and calls["score"]["dtype"] == "float32"
    assert calls["score_unknown"]["known"] is False
    assert len(calls["users"]) == 3
    for u in calls["users"]:
        assert len(u["recommended"]) == 8 and not set(u["recommended"]) & set(u["history"])
        assert np.all(np.diff(u["recommended_scores"]) <= 1e-6)  # best first
        n, h, w, c = u["design_shape"]
        assert n == len(u["design_scores"]) >= 2 and h == w == 32 and c == 3  # tiny GAN: 32 px
        assert u["modify_shape"] == [1, 32, 32, 3]
        assert np.isfinite([u["modify_score_before"], u["modify_score_after"]]).all()
    assert calls["server"]["stop"]["exit_code"] == 0 and calls["server"]["stop"]["said_stopped"]
    for pic in ("contact_sheet", "training_curves", "real_vs_generated", "user_1", "user_3"):
        assert (out / "pictures" / f"{pic}.png").stat().st_size > 1000, pic
    versions = os.listdir(out / "export" / "recommender")
    assert versions == ["1"]
    # The designer searches with the category term, its classifier the demo's own; D is spectrally normalised.
    card = json.loads((out / "export" / "designer" / "1" / "assets.extra" / "model_card.json").read_text())
    assert card["settings"]["category_weight"] == 10.0, card["settings"]
    assert card["sources"]["classifier"]["kind"] == "classifier", card["sources"].keys()
    assert "`design.category_weight` = 10" in report
    assert json.loads((out / "runs" / "gan" / "config.json").read_text())["gan"]["spectral_norm"] is True

    # A second run with the same settings trains, exports and serves nothing again.
    second = _demo(out, *budget, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "finished in" not in second.stdout.replace("[demo] done in", "")
    assert second.stdout.count("done already") >= 8
    assert os.listdir(out / "export" / "recommender") == ["1"]

    # Other settings in the same folder are refused, not mixed.
    third = subprocess.run([sys.executable, "-m", "tfmodels", "demo", "--preset", "cpu", "--out", str(out)],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert third.returncode == 2 and "--fresh" in third.stderr
