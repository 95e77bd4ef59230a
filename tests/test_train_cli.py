"""`tfmodels train` end to end on a tiny simulated garment world, and reopening the work directory."""

import json
import os

import numpy as np
import pytest

import test_train_support  # noqa: F401  (tfmodels before TensorFlow)

from tfmodels.cli import main


def test_train_help_lists_kinds_and_flags(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for word in ("dvbpr", "bpr-mf", "vbpr", "pop", "classifier", "gan", "--dataset", "--preset",
                 "--workdir", "--set", "--allow-pickle", "--skip-bad-images", "--category-column"):
        assert word in text, word


def test_train_rejects_bad_override(tmp_path, capsys):
    code = main(["train", "dvbpr", "--preset", "tiny", "--workdir", str(tmp_path / "w"),
                 "--set", "train.stepz=3"])
    assert code == 2
    assert "stepz" in capsys.readouterr().err


@pytest.mark.slow
def test_dvbpr_learns_on_tiny_simulated_world(tmp_path, monkeypatch, capsys):
    """DVBPR via the CLI: held-out test AUC clearly above chance after 400 steps at 32 px."""
    monkeypatch.setenv("TFMODELS_CACHE", str(tmp_path / "cache"))
    workdir = str(tmp_path / "w")
    sets = ["world.num_users=200", "world.num_items=300", "world.interactions_per_user=12",
            "world.taste_strength=8", "train.steps=400", "train.steps_per_loop=50", "train.eval_every=200",
            "train.checkpoint_every=200", "train.batch_size=64", "train.lambda_theta=0.1"]
    argv = ["train", "dvbpr", "--dataset", "garments", "--preset", "tiny", "--workdir", workdir]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "step 400/400" in out and "eval @ 400" in out

    from tfmodels.evaluation import evaluate_split
    from tfmodels.training.recommender import load_dvbpr, load_scorer

    info = json.load(open(os.path.join(workdir, "model.json")))
    assert info["kind"] == "dvbpr" and info["step"] == 400
    score_fn, dataset, split = load_scorer(workdir)
    test = evaluate_split(score_fn, split, which="test")
    assert test["auc_all"] > 0.57, test  # chance = 0.5

    model, _, split2, images = load_dvbpr(workdir, best=False)
    assert images.shape[1:] == (32, 32, 3) and split2.num_users == model.num_users
    assert model.user_embedding.embeddings.shape == (split.num_users, 16)
    scores = score_fn(np.array([0, 1]))
    assert scores.shape == (2, split.num_items) and np.all(np.isfinite(scores))
