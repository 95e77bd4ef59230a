"""Preference maximisation and prototype modification on tiny random networks."""

import tfmodels  # noqa: F401  (sets tf-keras before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf

from tfmodels import design
from tfmodels.config import tiny
from tfmodels.models import gan as gan_lib

REC_RES = 24  # deliberately not the GAN's 16 px, so `up` is exercised


@pytest.fixture(scope="module")
def nets():
    tf.keras.utils.set_random_seed(0)
    cfg = tiny()
    cfg.gan.resolution = 16
    g, d = gan_lib.build_gan(cfg.gan, num_categories=3)
    tower = tf.keras.Sequential([
        tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(6)])
    tower.build((None, REC_RES, REC_RES, 3))
    user = tf.random.stateless_normal([6], seed=[3, 4]).numpy()
    return cfg, g, d, tower, user


def test_preference_maximisation_raises_the_objective(nets):
    cfg, g, d, tower, user = nets
    cfg.design.starts, cfg.design.steps, cfg.design.learning_rate = 4, 8, 0.1
    result = design.maximise_preference(g, d, tower, user, 2, cfg.design, REC_RES, seed=5)
    images, scores, history = result
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8
    assert history.shape == (9, 4) and scores.shape == (4,)
    # Every start improves on its random initial code, and the final objective is
    # score - eta * realism as reported.
    assert np.all(history[-1] > history[0])
    np.testing.assert_allclose(result.objective, result.scores - cfg.design.eta * result.realism, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(history[-1], result.objective, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(result.objective) <= 0)  # sorted best first


def test_design_is_reproducible_and_eta_changes_the_trade_off(nets):
    cfg, g, d, tower, user = nets
    cfg.design.starts, cfg.design.steps = 3, 5
    a = design.maximise_preference(g, d, tower, user, 1, cfg.design, REC_RES, seed=7)
    b = design.maximise_preference(g, d, tower, user, 1, cfg.design, REC_RES, seed=7)
    np.testing.assert_array_equal(a.images, b.images)
    # eta = 0 optimises the score alone: its best score is at least that of a run penalising realism hard.
    free = design.maximise_preference(g, d, tower, user, 1, cfg.design, REC_RES, seed=7, eta=0.0)
    np.testing.assert_allclose(free.objective, free.scores, rtol=1e-6)
    assert np.max(free.history[-1] - free.history[0]) > 0


def test_sphere_latent_keeps_each_code_on_its_starting_norm(nets):
    cfg, g, d, tower, user = nets
    cfg.design.starts, cfg.design.steps, cfg.design.learning_rate = 4, 8, 0.1
    cfg.design.latent = "sphere"
    try:
        r = design.maximise_preference(g, d, tower, user, 2, cfg.design, REC_RES, seed=5)
    finally:
        cfg.design.latent = "free"
    free = design.maximise_preference(g, d, tower, user, 2, cfg.design, REC_RES, seed=5)
    z0 = tf.random.stateless_normal([4, cfg.gan.noise_dim], seed=[5, 0]).numpy()
    # Same starts (rows are sorted by objective, so compare the sets of norms).
    np.testing.assert_allclose(np.sort(np.linalg.norm(r.z, axis=1)), np.sort(np.linalg.norm(z0, axis=1)), rtol=1e-4)
    assert not np.allclose(np.sort(np.linalg.norm(free.z, axis=1)), np.sort(np.linalg.norm(z0, axis=1)), rtol=1e-2)
    assert np.all(r.history[-1] > r.history[0])


def test_unknown_latent_is_a_clear_error(nets):
    cfg, g, d, tower, user = nets
    with pytest.raises(ValueError, match="design.latent='ball'"):
        design.build_design_fn(g, d, tower, REC_RES, latent="ball")


def test_category_term_keeps_designs_in_their_category(nets):
    from tfmodels.models.classifier import CategoryClassifier

    cfg, g, d, tower, user = nets
    tf.keras.utils.set_random_seed(1)
    # Any network with the classifier's interface (logits; resolution, num_categories) will do: a random
    # linear one gives logits that vary with the image. 20 px: the term resizes G's 16 px output.
    classifier = tf.keras.Sequential([tf.keras.layers.Flatten(), tf.keras.layers.Dense(3)])
    classifier.build((None, 20, 20, 3))
    classifier.resolution, classifier.num_categories = 20, 3
    cfg.design.starts, cfg.design.steps, cfg.design.learning_rate = 4, 8, 0.1
    plain = design.maximise_preference(g, d, tower, user, 2, cfg.design, REC_RES, seed=5, classifier=classifier)
    np.testing.assert_array_equal(plain.off_category, 0.0)  # weight 0: the paper's objective, no term
    cfg.design.category_weight = 10.0
    try:
        kept = design.maximise_preference(g, d, tower, user, 2, cfg.design, REC_RES, seed=5, classifier=classifier)
        with pytest.raises(ValueError, match="needs a category classifier"):
            design.maximise_preference(g, d, tower, user, 2, cfg.design, REC_RES, seed=5)
    finally:
        cfg.design.category_weight = 0.0
    np.testing.assert_allclose(kept.objective, kept.scores - cfg.design.eta * kept.realism - 10.0 * kept.off_category,
                               rtol=1e-4, atol=1e-4)
    # The classifier's cross-entropy for the category, recomputed from the returned images, is lower
    # with the term than without it (same starts).
    def cross_entropy(images):
        x = tf.image.resize(tf.cast(images, tf.float32) / 127.5 - 1.0, [20, 20])
        logits = classifier(x, training=False)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.fill([len(images)], 2), logits=logits).numpy()
    np.testing.assert_allclose(cross_entropy(kept.images), kept.off_category, atol=0.05)
    assert cross_entropy(kept.images).mean() < cross_entropy(plain.images).mean()
    with pytest.raises(ValueError, match="knows 4 categories, the GAN 3"):
        other = CategoryClassifier(cfg.model, 20, 4)
        design.build_design_fn(g, d, tower, REC_RES, classifier=other, category_weight=1.0)


def test_true_score_hook_sees_the_final_images(nets):
    cfg, g, d, tower, user = nets
    cfg.design.starts, cfg.design.steps = 2, 2
    brightness = lambda x: tf.reduce_mean(x, axis=[1, 2, 3])
    r = design.maximise_preference(g, d, tower, user, 0, cfg.design, REC_RES, true_score_fn=brightness)
    expected = r.images.astype(np.float32).mean(axis=(1, 2, 3)) / 127.5 - 1.0
    np.testing.assert_allclose(r.true_scores, expected, atol=2e-2)


def test_unknown_category_is_a_clear_error(nets):
    cfg, g, d, tower, user = nets
    with pytest.raises(ValueError, match="category index 3 out of range"):
        design.maximise_preference(g, d, tower, user, 3, cfg.design, REC_RES)


def test_inversion_lowers_l1_and_modification_keeps_close(nets):
    cfg, g, d, tower, user = nets
    cfg.design.starts, cfg.design.invert_steps, cfg.design.steps = 3, 25, 4
    cfg.design.proximity = 1.0
    # A target the generator can reach: G(z*, c) for a code z* none of the starts uses.
    z_star = tf.random.stateless_normal([1, cfg.gan.noise_dim], seed=[99, 1])
    target = g([z_star, gan_lib.onehot([1], 3)], training=False)[0]
    out = design.modify_prototype(g, d, tower, user, gan_lib.to_uint8(target).numpy(), 1, cfg.design, REC_RES, seed=2)
    inv = out["invert_history"]
    assert inv.shape == (26, 3)
    assert inv[-1].min() < 0.8 * inv[0].min()
    assert out["l1_before"] == pytest.approx(inv[-1].min(), rel=1e-4, abs=1e-3)
    assert out["history"][-1, 0] > out["history"][0, 0]
    for key in ("original", "before", "after"):
        assert out[key].shape == (16, 16, 3) and out[key].dtype == np.uint8
    for key in ("score_original", "score_before", "score_after", "l1_after"):
        assert np.isfinite(out[key])
