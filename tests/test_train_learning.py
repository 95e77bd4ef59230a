"""Learning happens: DVBPR trained through the shared loop ranks held-out items well above chance."""

import json
import os

import numpy as np
import pytest

from test_train_support import colour_world, numpy_auc, tiny_config

from tfmodels.training import classifier as classifier_training
from tfmodels.training import loop, recommender
from tfmodels.workdir import read_metrics


def test_dvbpr_learns_colour_preferences(tmp_path):
    dataset, split, images = colour_world()
    cfg = tiny_config(steps=300, steps_per_loop=50, eval_every=150, checkpoint_every=150,
                      histogram_every=150, learning_rate=1e-3, batch_size=32)
    workdir = str(tmp_path / "w")
    result = recommender.train_dvbpr_on(
        cfg, workdir, dataset, split, images,
        evaluate_fn=lambda scorer, s: {"auc_all": numpy_auc(scorer, s, "val")})
    task = result["task"]
    assert result["step"] == 300
    assert result["losses"]["bpr"] < 0.6  # ln 2 = 0.693 at chance
    test_auc = numpy_auc(task.scorer(), split, "test")
    # Best achievable here is about 0.875; chance is 0.5.
    assert test_auc > 0.68, test_auc

    # The work directory has everything the contract promises.
    info = json.load(open(os.path.join(workdir, "model.json")))
    assert info["kind"] == "dvbpr" and info["step"] == 300
    records = read_metrics(workdir)
    assert [r["step"] for r in records] == [150, 300]
    best = json.load(open(os.path.join(workdir, "best", "best.json")))
    assert best["value"] == max(r["auc_all"] for r in records)
    for name in ("projector_config.pbtxt", "sprite.png", "metadata.tsv"):
        assert os.path.exists(os.path.join(workdir, "tb", name)), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tb")))

    # The scorer is theta @ E^T over every item.
    scorer = task.scorer()
    s = scorer(np.array([0, 3]))
    np.testing.assert_allclose(s, scorer.user_vectors[[0, 3]] @ scorer.item_embeddings.T, rtol=1e-6)
    assert s.shape == (2, split.num_items)


@pytest.mark.slow
def test_mixed_precision_run_trains_and_restores_policy(tmp_path):
    import tensorflow as tf

    dataset, split, images = colour_world()
    cfg = tiny_config(steps=4, steps_per_loop=2, eval_every=0, checkpoint_every=4, mixed_precision=True)
    result = recommender.train_dvbpr_on(cfg, str(tmp_path / "w"), dataset, split, images,
                                        evaluate_fn=lambda scorer, s: {"auc_all": numpy_auc(scorer, s, "val")})
    task = result["task"]
    assert isinstance(task.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    assert task.model.item_tower.get_layer("conv2").compute_dtype == "float16"
    assert task.model.item_tower.get_layer("conv2").kernel.dtype == tf.float32
    assert all(np.isfinite(v) for v in result["losses"].values())
    assert tf.keras.mixed_precision.global_policy().name == "float32"


def test_item_tower_initialised_from_pretrained_classifier(tmp_path):
    import tensorflow as tf

    dataset, split, images = colour_world()
    cfg = tiny_config(steps_per_loop=5, eval_every=0, checkpoint_every=5)
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.classifier.steps = 5
    classifier_training.train_classifier(cfg, str(tmp_path / "clf"), dataset=dataset)
    classifier, _ = classifier_training.load_classifier(str(tmp_path / "clf"))

    cfg.model.init_from = str(tmp_path / "clf")
    task = recommender.DVBPRTask(cfg, dataset, split, images)
    task.build(tf.distribute.get_strategy())
    task.initialize()  # a fresh run: the loop calls it when W holds no checkpoint
    for name in ("conv1", "conv5", "fc6", "fc7"):
        for a, b in zip(task.model.item_tower.get_layer(name).get_weights(),
                        classifier.item_tower.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_resuming_with_a_different_model_is_refused(tmp_path):
    dataset, split, images = colour_world()
    cfg = tiny_config(steps=2, steps_per_loop=2, eval_every=0, checkpoint_every=2)
    fast_eval = lambda scorer, s: {"auc_all": 0.5}  # noqa: E731
    recommender.train_dvbpr_on(cfg, str(tmp_path / "w"), dataset, split, images, evaluate_fn=fast_eval)
    cfg.model.fc_units = 48
    with pytest.raises(ValueError, match="fc_units"):
        recommender.train_dvbpr_on(cfg, str(tmp_path / "w"), dataset, split, images, evaluate_fn=fast_eval)
