"""Preference maximisation and prototype modification (``Designer`` methods) on tiny random networks."""

import tfmodels  # noqa: F401  (sets tf-keras before TensorFlow)
import dataclasses
import types

import numpy as np
import pytest
import tensorflow as tf

from tfmodels import design, design_search
from tfmodels.config import DesignConfig, tiny
from tfmodels.data.dataset import Dataset
from tfmodels.data.images import ArrayImageSource
from tfmodels.data.pixels import to_model_input, to_uint8
from tfmodels.models import gan as gan_lib

REC_RES = 24  # deliberately not the GAN's 16 px, so `up` is exercised
CATEGORIES = ["top", "shoe", "bag"]


def tiny_designer(g, d, tower, user_vectors, config=None, classifier=None, extra=None, rec_res=REC_RES):
    """A Designer over random networks and a 6-item catalogue (item i of category i % 3), users u0, u1, ..."""
    images = np.random.default_rng(0).integers(0, 256, size=(6, rec_res, rec_res, 3)).astype(np.uint8)
    user_vectors = np.atleast_2d(np.asarray(user_vectors, np.float32))
    dataset = Dataset(name="tiny", item_ids=np.array([f"i{i}" for i in range(6)]),
                      images=ArrayImageSource(images, "tiny"), categories=np.arange(6, dtype=np.int32) % 3,
                      category_names=CATEGORIES, user_ids=np.array([f"u{u}" for u in range(len(user_vectors))]),
                      inter_user=np.zeros(0, np.int32), inter_item=np.zeros(0, np.int32), extra=dict(extra or {}))
    return design.Designer(generator=g, discriminator=d, item_tower=tower, user_vectors=user_vectors,
                           dataset=dataset, images=images, category_names=CATEGORIES, rec_resolution=rec_res,
                           config=config or DesignConfig(), classifier=classifier)


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


@pytest.fixture(scope="module")
def designer(nets):
    cfg, g, d, tower, user = nets
    return tiny_designer(g, d, tower, user, config=cfg.design)


def test_preference_maximisation_raises_the_objective(designer):
    result = designer.design("u0", 2, seed=5, starts=4, steps=8, learning_rate=0.1)
    images, scores, history = result
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8
    assert history.shape == (9, 4) and scores.shape == (4,)
    # Every start improves on its random initial code, and the final objective is
    # score - eta * realism as reported.
    assert np.all(history[-1] > history[0])
    np.testing.assert_allclose(result.objective, result.scores - result.settings.eta * result.realism,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(history[-1], result.objective, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(result.objective) <= 0)  # sorted best first
    assert result.settings.starts == 4 and designer.config.starts != 4  # the override is for this call only
    assert result.true_scores is None  # not a simulated world


def test_design_is_reproducible_and_eta_changes_the_trade_off(designer):
    a = designer.design("u0", 1, seed=7, starts=3, steps=5)
    b = designer.design(0, "SHOE", seed=7, starts=3, steps=5)  # the same user and category by row and name
    np.testing.assert_array_equal(a.images, b.images)
    # eta = 0 optimises the score alone: its best score is at least that of a run penalising realism hard.
    free = designer.design("u0", 1, seed=7, starts=3, steps=5, eta=0.0)
    np.testing.assert_allclose(free.objective, free.scores, rtol=1e-6)
    assert np.max(free.history[-1] - free.history[0]) > 0


def test_sphere_latent_keeps_each_code_on_its_starting_norm(nets, designer):
    cfg = nets[0]
    r = designer.design("u0", 2, seed=5, starts=4, steps=8, learning_rate=0.1, latent="sphere")
    free = designer.design("u0", 2, seed=5, starts=4, steps=8, learning_rate=0.1)
    z0 = tf.random.stateless_normal([4, cfg.gan.noise_dim], seed=[5, 0]).numpy()
    # Same starts (rows are sorted by objective, so compare the sets of norms).
    np.testing.assert_allclose(np.sort(np.linalg.norm(r.z, axis=1)), np.sort(np.linalg.norm(z0, axis=1)), rtol=1e-4)
    assert not np.allclose(np.sort(np.linalg.norm(free.z, axis=1)), np.sort(np.linalg.norm(z0, axis=1)), rtol=1e-2)
    assert np.all(r.history[-1] > r.history[0])


def test_unknown_latent_is_a_clear_error(nets, designer):
    cfg, g, d, tower, user = nets
    with pytest.raises(ValueError, match="design.latent='ball'"):
        design_search.build_design_fn(g, d, tower, REC_RES, latent="ball")
    with pytest.raises(ValueError, match="design.latent='ball'"):
        designer.design("u0", 0, latent="ball")


def test_category_term_keeps_designs_in_their_category(nets):
    from tfmodels.models.classifier import CategoryClassifier

    cfg, g, d, tower, user = nets
    tf.keras.utils.set_random_seed(1)
    # Any network with the classifier's interface (logits; resolution, num_categories) will do: a random
    # linear one gives logits that vary with the image. 20 px: the term resizes G's 16 px output.
    classifier = tf.keras.Sequential([tf.keras.layers.Flatten(), tf.keras.layers.Dense(3)])
    classifier.build((None, 20, 20, 3))
    classifier.resolution, classifier.num_categories = 20, 3
    config = dataclasses.replace(cfg.design, starts=4, steps=8, learning_rate=0.1)
    with_classifier = tiny_designer(g, d, tower, user, config=config, classifier=classifier)
    plain = with_classifier.design("u0", 2, seed=5)
    np.testing.assert_array_equal(plain.off_category, 0.0)  # weight 0: the paper's objective, no term
    kept = with_classifier.design("u0", 2, seed=5, category_weight=10.0)
    with pytest.raises(ValueError, match="needs a category classifier"):
        tiny_designer(g, d, tower, user, config=config).design("u0", 2, seed=5, category_weight=10.0)
    np.testing.assert_allclose(kept.objective, kept.scores - config.eta * kept.realism - 10.0 * kept.off_category,
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
        design_search.build_design_fn(g, d, tower, REC_RES, classifier=other, category_weight=1.0)


def test_true_scores_of_a_simulated_world_see_the_final_images(nets):
    cfg, g, d, tower, user = nets
    # A stand-in for SimulatedUsers: the "true preference" is an image's mean brightness.
    users = types.SimpleNamespace(true_score_tf=lambda rows, x: tf.reduce_mean(x, axis=[1, 2, 3]))
    sim = tiny_designer(g, d, tower, user, config=dataclasses.replace(cfg.design, starts=2, steps=2),
                        extra={"users": users})
    r = sim.design("u0", 0)
    expected = r.images.astype(np.float32).mean(axis=(1, 2, 3)) / 127.5 - 1.0
    np.testing.assert_allclose(r.true_scores, expected, atol=2e-2)
    m = sim.modify("u0", item="i1", invert_steps=2, steps=1)
    for key in ("original", "before", "after"):
        assert m[f"true_{key}"] == pytest.approx(m[key].astype(np.float32).mean() / 127.5 - 1.0, abs=2e-2)


def test_unknown_ids_and_settings_are_clear_errors(designer):
    with pytest.raises(ValueError, match="category index 3 out of range"):
        designer.design("u0", 3)
    with pytest.raises(ValueError, match="unknown category 'hat'; the GAN knows: top, shoe, bag"):
        designer.design("u0", "hat")
    with pytest.raises(ValueError, match="unknown user 'nobody'"):
        designer.design("nobody", 0)
    with pytest.raises(ValueError, match="user row 5 out of range"):
        designer.design(5, 0)
    with pytest.raises(ValueError, match="unknown item 'nope'"):
        designer.modify("u0", item="nope")
    with pytest.raises(ValueError, match=r"unknown design setting\(s\) \['temperature'\]"):
        designer.design("u0", 0, temperature=2.0)
    with pytest.raises(ValueError, match="build_designer"):
        designer.design("u0", 0, classifier_from="elsewhere")
    with pytest.raises(ValueError, match="design.starts must be >= 1, got 0"):
        designer.design("u0", 0, starts=0)
    with pytest.raises(ValueError, match="exactly one of item"):
        designer.modify("u0")
    with pytest.raises(ValueError, match=r"must be \[H, W, 3\], got shape \(16, 16\)"):
        designer.modify("u0", image=np.zeros((16, 16), np.uint8), category=0)


def test_generate_is_seeded_sampling_of_the_generator(designer):
    a = designer.generate("bag", 3, seed=4)
    assert a.shape == (3, 16, 16, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, designer.generate(2, 3, seed=4))
    assert not np.array_equal(a, designer.generate("bag", 3, seed=5))
    want = to_uint8(gan_lib.generate(designer.generator, 2, 3, 4)).numpy()
    np.testing.assert_array_equal(a, want)


def test_item_lookups_and_scores(designer):
    assert designer.item_category("i4") == 1 and designer.item_category(5) == 2
    np.testing.assert_array_equal(designer.items_of_category("shoe"), [1, 4])
    emb = designer.item_embeddings()
    want = designer.item_tower(to_model_input(designer.images), training=False).numpy()
    np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(designer.item_scores("u0", [1, 4]), want[[1, 4]] @ designer.user_vectors[0],
                               rtol=1e-5, atol=1e-6)


def test_inversion_lowers_l1_and_modification_keeps_close(nets, designer):
    cfg, g, d, tower, user = nets
    # A target the generator can reach: G(z*, c) for a code z* none of the starts uses.
    z_star = tf.random.stateless_normal([1, cfg.gan.noise_dim], seed=[99, 1])
    target = g([z_star, gan_lib.onehot([1], 3)], training=False)[0]
    out = designer.modify("u0", image=to_uint8(target).numpy(), category=1, seed=2, starts=3, invert_steps=25,
                          steps=4, proximity=1.0)
    inv = out["invert_history"]
    assert inv.shape == (26, 3)
    assert inv[-1].min() < 0.8 * inv[0].min()
    assert out["l1_before"] == pytest.approx(inv[-1].min(), rel=1e-4, abs=1e-3)
    assert out["history"][-1, 0] > out["history"][0, 0]
    for key in ("original", "before", "after"):
        assert out[key].shape == (16, 16, 3) and out[key].dtype == np.uint8
    for key in ("score_original", "score_before", "score_after", "l1_after"):
        assert np.isfinite(out[key])


def test_modify_by_item_is_modify_of_its_image(designer):
    # A catalogue item (24 px, the recommender's size) is brought down to the GAN's 16 px and its
    # category is the item's own.
    by_item = designer.modify("u0", item="i4", seed=1, starts=2, invert_steps=3, steps=2)
    by_image = designer.modify(0, image=designer.images[4], category="shoe", seed=1, starts=2, invert_steps=3,
                               steps=2)
    for key in ("original", "before", "after"):
        np.testing.assert_array_equal(by_item[key], by_image[key])
    assert by_item["score_after"] == pytest.approx(by_image["score_after"], rel=1e-6, abs=1e-6)
