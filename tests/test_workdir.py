"""Work directories describe themselves: reopen without the raw data, one resume guard, the time budget."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import tfmodels  # noqa: F401  (tf-keras before TensorFlow)
from test_export_support import tiny_cfg, write_world
from tfmodels import kinds
from tfmodels import workdir as workdir_lib


def _cfg(root, steps=4):
    cfg = tiny_cfg(os.path.join(root, "data"), os.path.join(root, "cache"))
    cfg.train.steps, cfg.train.steps_per_loop, cfg.train.eval_every, cfg.train.checkpoint_every = steps, 2, 2, 2
    cfg.classifier.steps = cfg.baseline.steps = steps
    cfg.gan.steps = steps
    return cfg


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("wd"))
    write_world(os.path.join(root, "data"))
    return root


@pytest.mark.slow
def test_trained_runs_load_score_and_export_after_the_raw_data_moved(root, tmp_path):
    from export.bundle import export_all
    from tfmodels.training.gan import load_gan

    cfg = _cfg(root)
    runs = {k: str(tmp_path / k) for k in ("dvbpr", "classifier", "vbpr", "gan", "pop")}
    cfg.baseline.features_from = runs["classifier"]
    for kind in ("classifier", "dvbpr", "vbpr", "gan", "pop"):
        kinds.get(kind).train(cfg, runs[kind])
    before = {k: kinds.load_scorer(runs[k])[0](np.array([0, 3])) for k in ("dvbpr", "vbpr", "pop")}

    moved = os.path.join(root, "data_moved")
    shutil.move(os.path.join(root, "data"), moved)
    try:
        for kind in ("dvbpr", "vbpr", "pop"):
            score_fn, dataset, split = kinds.load_scorer(runs[kind])
            assert list(dataset.user_ids[:2]) == ["user0", "user1"] and split.num_items == 96
            np.testing.assert_allclose(score_fn(np.array([0, 3])), before[kind], rtol=1e-5, atol=1e-6)
        assert load_gan(runs["gan"])[3]["category_names"] == ["bag", "shoe", "top"]
        written = export_all(runs["dvbpr"], runs["gan"], str(tmp_path / "export"), log=lambda m: None)
        assert {"recommender", "item_encoder", "designer"} <= set(written)
        # Without the image cache either, the catalogue cannot be embedded: a clear error, not a wrong world.
        shutil.rmtree(os.path.join(root, "cache"))
        with pytest.raises((FileNotFoundError, ValueError), match="data|image"):
            kinds.load_scorer(runs["dvbpr"])
        assert kinds.load_scorer(runs["pop"])[2].num_items == 96  # no pixels needed
    finally:
        shutil.move(moved, os.path.join(root, "data"))


@pytest.mark.slow
def test_resume_needs_no_pretrained_classifier_folder(root, tmp_path):
    cfg = _cfg(root, steps=2)
    clf = str(tmp_path / "clf")
    kinds.get("classifier").train(cfg, clf)
    cfg.model.init_from = clf
    w = str(tmp_path / "dvbpr")
    assert kinds.get("dvbpr").train(cfg, w)["step"] == 2
    shutil.rmtree(clf)
    cfg.train.steps = 4
    out = kinds.get("dvbpr").train(cfg, w)
    assert out["start_step"] == 2 and out["step"] == 4


# One changed setting per kind that its checkpoint (or its data) cannot survive.
CHANGES = {"dvbpr": ("model.fc_units", 48), "bpr-mf": ("baseline.latent_dim", 5), "vbpr": ("baseline.visual_dim", 5),
           "pop": ("data.seed", 7), "classifier": ("model.width", 0.25), "gan": ("gan.noise_dim", 12)}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(kinds.KINDS))
def test_every_kind_resumes_and_refuses_a_changed_setting(root, tmp_path, kind):
    from tfmodels import config as config_lib

    cfg = _cfg(root, steps=2)
    if kind == "vbpr":
        cfg.baseline.features_from = str(tmp_path / "clf")
        kinds.get("classifier").train(cfg, cfg.baseline.features_from)
    w = str(tmp_path / kind)
    kinds.get(kind).train(cfg, w)
    cap = kinds.get(kind).steps(cfg)
    saved = json.load(open(os.path.join(w, "config.json")))
    key, value = CHANGES[kind]
    assert key in kinds.get(kind).resume_keys
    changed = config_lib.apply_overrides(config_lib.from_dict(config_lib.to_dict(cfg)), [f"{key}={value}"])
    with pytest.raises(ValueError, match=f"{key}=.*this run asks for {value!r}"):
        kinds.get(kind).train(changed, w)
    assert json.load(open(os.path.join(w, "config.json"))) == saved  # refused before anything was overwritten
    if kind != "pop":
        section, field = kinds.get(kind).steps_key.split(".")
        setattr(getattr(cfg, section), field, cap + 2)
        out = kinds.get(kind).train(cfg, w)
        assert out["start_step"] == cap and out["step"] == cap + 2


def test_kinds_are_listed_once():
    from tfmodels.cli import train

    assert set(kinds.RECOMMENDERS) == {"pop", "bpr-mf", "vbpr", "dvbpr"}
    with pytest.raises(ValueError, match="unknown model kind 'svd'.*dvbpr"):
        kinds.get("svd")
    parser = __import__("argparse").ArgumentParser()
    train.register(parser.add_subparsers())
    assert parser.parse_args(["train", "gan", "--workdir", "w"]).kind == "gan"


def test_time_budget_stops_with_a_checkpoint_and_resumes(tmp_path):
    from test_train_support import colour_world, tiny_config

    from tfmodels.training import recommender

    dataset, split, images = colour_world()
    cfg = tiny_config(steps=10_000, steps_per_loop=2, eval_every=1000, checkpoint_every=1000)
    cfg.train.minutes = 1e-4  # spent by the first chunk
    fast_eval = lambda scorer, s: {"auc_all": 0.5}  # noqa: E731
    w = str(tmp_path / "w")
    out = recommender.train_dvbpr_on(cfg, w, dataset, split, images, evaluate_fn=fast_eval)
    assert out["stopped"] == "minutes" and out["step"] == 2
    info = workdir_lib.read_model_json(w)
    assert info["step"] == 2 and info["stopped"] == "minutes"
    assert workdir_lib.latest_checkpoint(w).endswith("ckpt-2")
    assert [r["step"] for r in workdir_lib.read_metrics(w)] == [2]  # evaluated where it stopped
    again = recommender.train_dvbpr_on(cfg, w, dataset, split, images, evaluate_fn=fast_eval)
    assert again["start_step"] == 2 and again["step"] == 4 and again["stopped"] == "minutes"
    cfg.train.minutes, cfg.train.steps = 0.0, 6  # no budget: the step cap ends it
    last = recommender.train_dvbpr_on(cfg, w, dataset, split, images, evaluate_fn=fast_eval)
    assert last["step"] == 6 and last["stopped"] == "steps"


def test_a_run_of_an_earlier_version_without_data_npz_still_loads(root, tmp_path, capsys):
    cfg = _cfg(root, steps=2)
    w = str(tmp_path / "pop")
    kinds.get("pop").train(cfg, w)
    _, _, split = kinds.load_scorer(w)
    os.remove(os.path.join(w, "data.npz"))
    _, dataset, again = kinds.load_scorer(w)
    assert "reading its data again" in capsys.readouterr().err
    np.testing.assert_array_equal(again.test_item, split.test_item)
    assert dataset.num_items == 96


def test_resuming_on_other_data_is_refused_before_anything_is_overwritten(root, tmp_path):
    cfg = _cfg(root, steps=2)
    w = str(tmp_path / "bpr")
    kinds.get("bpr-mf").train(cfg, w)
    saved = open(os.path.join(w, "config.json")).read()
    other = str(tmp_path / "other")
    write_world(other, n_items=90)
    cfg.data.data_dir = other  # data.data_dir may change (the data moved), the items may not
    with pytest.raises(ValueError, match="trained on other data.*96 items"):
        kinds.get("bpr-mf").train(cfg, w)
    assert open(os.path.join(w, "config.json")).read() == saved
