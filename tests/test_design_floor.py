"""Guards that keep the design search on the image manifold (trust region, realism floor, smoothed score),
the paper's objective as the default, and the Frechet distance in ImageNet features with its floor."""

import tfmodels  # noqa: F401  (sets tf-keras before TensorFlow)
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from test_design_latent import REC_RES, nets, tiny_designer  # noqa: F401  (nets: the shared fixture)
from tfmodels import design_search, gan_metrics
from tfmodels.config import DesignConfig
from tfmodels.data.pixels import gaussian_blur, resize_to, to_model_input
from tfmodels.models import gan as gan_lib


class RealismTower:
    """An item "tower" whose score is D's realism penalty for category 2: maximising it is the search
    that walks into noise, the toy on which an unconstrained design leaves the floor behind."""

    def __init__(self, d):
        self.d = d

    def __call__(self, images, training=False):
        x = resize_to(images, 16)
        c = gan_lib.onehot(tf.fill(tf.shape(x)[:1], 2), 3)
        return gan_lib.realism_penalty(self.d([x, c], training=False))[:, None]


def reference_design(g, d, tower, user, category, starts, steps, eta, lr, seed):
    """The paper's search written out again: Adam on z maximising theta . Phi(up(G)) - eta (D - 1)^2."""
    z = tf.random.stateless_normal([starts, int(g.inputs[0].shape[-1])], seed=[seed, 0])
    c = gan_lib.onehot(tf.fill([starts], category), 3)
    m = v = tf.zeros_like(z)
    for t in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(z)
            x = g([z, c], training=False)
            score = tf.linalg.matvec(tower(resize_to(x, REC_RES), training=False), user)
            total = tf.reduce_sum(score - eta * tf.square(d([x, c], training=False) - 1.0))
        grad = -tape.gradient(total, z)
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * tf.square(grad)
        z = z - lr * (m / (1 - 0.9 ** (t + 1))) / (tf.sqrt(v / (1 - 0.999 ** (t + 1))) + 1e-8)
    return z.numpy()


def test_default_settings_are_the_papers_search(nets):
    cfg, g, d, tower, user = nets
    assert (DesignConfig().trust_radius, DesignConfig().realism_floor, DesignConfig().smooth) == (0.0, 0.0, 0.0)
    fn = design_search.build_design_fn(g, d, tower, REC_RES)
    args = (tf.constant(user), tf.constant(1), tf.constant(3), tf.constant(5), tf.constant(0.5), tf.constant(0.1),
            tf.constant(4))
    out = fn(*args)
    want = reference_design(g, d, tower, tf.constant(user), 1, 3, 5, 0.5, 0.1, 4)
    np.testing.assert_allclose(out["z"].numpy(), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out["over_floor"].numpy(), 0.0)
    # Guards that never bind change nothing, bit for bit: a trust region wider than any move, a floor
    # above any penalty.
    loose = design_search.build_design_fn(g, d, tower, REC_RES, trust_radius=1e3, floor_weight=100.0,
                                   floor_thresholds=[1e6] * 3)(*args)
    for key in ("z", "objective", "history"):
        np.testing.assert_array_equal(loose[key].numpy(), out[key].numpy())


@pytest.mark.parametrize("latent", ["free", "sphere"])
def test_trust_region_caps_every_move(nets, latent):
    cfg, g, d, tower, user = nets
    designer = tiny_designer(g, d, tower, user, config=dataclasses.replace(cfg.design, starts=4, steps=10,
                                                                            learning_rate=0.3, latent=latent))
    free = designer.design("u0", 1, seed=3)
    capped = designer.design("u0", 1, seed=3, trust_radius=0.1)
    move = lambda r: np.linalg.norm(r.z - r.z0, axis=1) / np.linalg.norm(r.z0, axis=1)  # noqa: E731
    assert np.all(move(free) > 0.1)  # the unconstrained search goes further than the cap
    assert np.all(move(capped) <= 0.1 * (1 + 1e-4))
    assert np.all(move(capped) > 0.05)  # ... and the capped one uses its room
    if latent == "sphere":
        np.testing.assert_allclose(np.linalg.norm(capped.z, axis=1), np.linalg.norm(capped.z0, axis=1), rtol=1e-4)
    assert np.all(capped.history[-1] > capped.history[0])
    # Prototype modification: the region is centred on the inverted code.
    m = designer.modify("u0", item="i1", starts=2, invert_steps=3, steps=10, trust_radius=0.05)
    assert np.linalg.norm(m["z_after"] - m["z_before"]) <= 0.05 * np.linalg.norm(m["z_before"]) * (1 + 1e-4)
    with pytest.raises(ValueError, match="design.trust_radius must be >= 0"):
        designer.design("u0", 1, trust_radius=-1.0)


def test_realism_thresholds_are_quantiles_of_real_items(nets):
    cfg, g, d, tower, user = nets
    designer = tiny_designer(g, d, tower, user)
    x = resize_to(to_model_input(designer.images), 16)
    cats = np.arange(6) % 3  # item i is of category i % 3
    penalty = gan_lib.realism_penalty(d([x, gan_lib.onehot(cats, 3)], training=False)).numpy()
    tau = designer.realism_thresholds(0.5)
    np.testing.assert_allclose(tau, [np.median(penalty[cats == c]) for c in range(3)], rtol=1e-5)
    with pytest.raises(ValueError, match="quantile in"):
        designer.design("u0", 0, realism_floor=1.5)


def test_realism_floor_holds_where_the_plain_search_crosses_it(nets):
    cfg, g, d, tower, user = nets
    settings = dataclasses.replace(cfg.design, starts=6, steps=30, learning_rate=0.05, eta=0.0)
    designer = tiny_designer(g, d, RealismTower(d), np.ones([1, 1], np.float32), config=settings)
    start = designer.design("u0", 2, seed=1, steps=0)
    plain = designer.design("u0", 2, seed=1)
    # The floor: the starts' median penalty stands in for a quantile of real items.
    tau = float(np.median(start.realism))
    designer._thresholds[0.5] = np.full(3, tau, np.float32)
    floored = designer.design("u0", 2, seed=1, realism_floor=0.5, floor_weight=100.0)
    assert np.all(plain.realism > tau)  # the plain search crosses into "noise" from every start
    np.testing.assert_allclose(floored.over_floor, np.maximum(floored.realism - tau, 0.0), rtol=1e-5, atol=1e-6)
    assert np.max(floored.realism) <= tau + 0.1 * (np.min(plain.realism) - tau)
    np.testing.assert_allclose(floored.objective, floored.scores - 100.0 * floored.over_floor, rtol=1e-4, atol=1e-5)
    # Starts below the floor are free to move: their score (here: the penalty itself) rises towards tau.
    # Below the floor the hinge is 0 and the objective the plain one (that a floor which never binds
    # leaves the search bit for bit as it was is test_default_settings_are_the_papers_search).
    under = floored.realism <= tau
    assert np.any(under)
    np.testing.assert_array_equal(floored.objective[under], floored.scores[under])


class SpeckleTower:
    """An item "tower" whose score is the images' pixel-scale detail (energy left after a blur): what a
    recommender that rewards speckle would make the search produce."""

    def __call__(self, images, training=False):
        return tf.reduce_mean(tf.square(images - gaussian_blur(images, 1.0)), axis=[1, 2, 3])[:, None]


def test_gaussian_blur_keeps_flat_images_and_removes_pixel_noise():
    flat = tf.fill([2, 9, 9, 3], 0.7)
    np.testing.assert_allclose(gaussian_blur(flat, 1.5).numpy(), 0.7, rtol=1e-6)  # reflected borders
    noise = tf.random.stateless_normal([4, 32, 32, 1], seed=[1, 2])
    assert gaussian_blur(noise, 0.0) is noise
    blurred = gaussian_blur(noise, 1.0)
    assert blurred.shape == noise.shape
    assert float(tf.math.reduce_std(blurred)) < 0.4 * float(tf.math.reduce_std(noise))
    # A single bright pixel spreads into a normalised, symmetric 2 * ceil(2 sigma) + 1 square.
    dot = np.zeros([1, 11, 11, 1], np.float32)
    dot[0, 5, 5, 0] = 1.0
    spread = gaussian_blur(tf.constant(dot), 1.0).numpy()[0, :, :, 0]
    assert spread.sum() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(spread, spread.T, atol=1e-7)
    assert np.count_nonzero(spread > 1e-9) == 25
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        gaussian_blur(flat, -1.0)
    with pytest.raises(ValueError, match="wider than the images"):
        gaussian_blur(flat, 5.0)


def test_smoothed_score_earns_nothing_from_pixel_patterns(nets):
    cfg, g, d, _, _ = nets
    settings = dataclasses.replace(cfg.design, starts=4, steps=20, learning_rate=0.1, eta=0.0)
    designer = tiny_designer(g, d, SpeckleTower(), np.ones([1, 1], np.float32), config=settings)
    start = designer.design("u0", 1, seed=2, steps=0)
    plain = designer.design("u0", 1, seed=2)
    smoothed = designer.design("u0", 1, seed=2, smooth=1.5)
    # The plain search multiplies the speckle score; the smoothed one, whose objective sees the blurred
    # design, barely moves it (the reported score is the unblurred design's).
    assert np.mean(plain.scores) > 4 * np.mean(start.scores)
    assert np.mean(smoothed.scores) < 0.3 * np.mean(plain.scores)
    np.testing.assert_allclose(smoothed.objective, smoothed.history[-1], rtol=1e-5)
    assert np.all(smoothed.objective < 0.1 * smoothed.scores)  # the blurred design's score is the objective
    np.testing.assert_array_equal(designer.design("u0", 1, seed=2, smooth=0.0).z, plain.z)
    with pytest.raises(ValueError, match="design.smooth must be >= 0"):
        designer.design("u0", 1, smooth=-0.5)


@pytest.mark.slow
def test_exported_designer_keeps_the_guards(nets, tmp_path):
    from export import signatures as S
    from export.designer import build_designer_module

    cfg, g, d, tower, user = nets
    users = np.stack([user, -user])
    settings = dataclasses.replace(cfg.design, starts=3, steps=4, learning_rate=0.1, trust_radius=0.05,
                                   realism_floor=0.5, floor_weight=10.0, smooth=1.0)
    designer = tiny_designer(g, d, tower, users, config=settings)
    module = build_designer_module(designer)
    assert (module.settings()["trust_radius"], module.settings()["smooth"]) == (0.05, 1.0)
    np.testing.assert_allclose(module.settings()["floor_thresholds"], designer.realism_thresholds(0.5))
    path = str(tmp_path / "designer")
    tf.saved_model.save(module, path, signatures=module.signatures())
    out = tf.saved_model.load(path).signatures[S.DESIGN](
        user_id=tf.constant("u1"), category=tf.constant("bag"), starts=tf.constant(3), steps=tf.constant(4),
        eta=tf.constant(1.0), seed=tf.constant(9))
    want = designer.design("u1", "bag", seed=9)
    np.testing.assert_allclose(out[S.OUT_SCORE].numpy(), want.scores, rtol=1e-4, atol=1e-5)
    plain = designer.design("u1", "bag", seed=9, trust_radius=0.0, realism_floor=0.0, smooth=0.0)
    assert not np.allclose(plain.scores, want.scores, rtol=1e-3)


def test_frechet_floor_compares_equal_halves_of_the_real_set():
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.normal(0, 1, (60, 4)), rng.normal(3, 1, (40, 4))])
    cats = np.repeat([0, 1], [60, 40])
    fake_cats = np.repeat([0, 1], [50, 10])
    same = gan_metrics.frechet_with_floor(real, real[np.r_[0:50, 60:70]], cats, fake_cats, seed=1)
    a, b = same["halves"]
    # Disjoint halves with the generated set's category mix, capped by half of each category's real rows.
    assert len(np.intersect1d(a, b)) == 0 and len(a) == len(b) == len(same["fake_rows"]) == same["count"] == 40
    assert np.array_equal(np.bincount(cats[a]), [30, 10]) and np.array_equal(np.bincount(cats[b]), [30, 10])
    assert same["floor"] == pytest.approx(gan_metrics.frechet_distance(real[b], real[a]))
    # Samples of the real distribution score about the floor; shifted ones far above it.
    fresh = np.concatenate([rng.normal(0, 1, (50, 4)), rng.normal(3, 1, (10, 4))])
    near = gan_metrics.frechet_with_floor(real, fresh, cats, fake_cats, seed=1)
    far = gan_metrics.frechet_with_floor(real, fresh + 2.0, cats, fake_cats, seed=1)
    assert near["floor"] == same["floor"] and near["ratio"] < 3 and far["ratio"] > 10
    # A floor passed back in (same real rows, seed and counts: the same split) is used as it is.
    again = gan_metrics.frechet_with_floor(real, fresh + 2.0, cats, fake_cats, seed=1, floor=near["floor"])
    assert again["frechet"] == far["frechet"] and again["floor"] == near["floor"]
    with pytest.raises(ValueError, match="for both sets or for neither"):
        gan_metrics.frechet_with_floor(real, real, cats, None)


def test_imagenet_features_and_their_frechet_distance_to_themselves():
    images = np.random.default_rng(0).integers(0, 256, size=(12, 16, 16, 3)).astype(np.uint8)
    feats = gan_metrics.imagenet_features(images, resolution=32, batch_size=8)
    assert feats.shape == (12, 1280) and feats.dtype == np.float32 and np.all(np.isfinite(feats))
    one = gan_metrics.imagenet_features(images[:1], resolution=32, batch_size=8)
    np.testing.assert_allclose(one, feats[:1], rtol=1e-4, atol=1e-4)
    x = feats[:, :256]  # a slice keeps the eigendecompositions small; the formula is the same
    assert gan_metrics.frechet_distance(x, x) < 1e-6 * np.trace(np.cov(x, rowvar=False))
