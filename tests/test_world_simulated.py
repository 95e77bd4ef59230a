"""Simulated users: NumPy/TF agreement, gradients, valid purchases, oracle AUC above chance."""

import numpy as np
import pytest

import tfmodels  # noqa: F401  (sets tf-keras before TensorFlow)
import tensorflow as tf

from tfmodels import config, evaluation
from tfmodels.data import garments, image_features, simulated
from tfmodels.data.dataset import ImageSource
from tfmodels.data.splits import leave_one_out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cfg = config.tiny()
    cfg.data.cache_dir = str(tmp_path_factory.mktemp("cache"))
    return simulated.build_world(cfg), cfg


def _images(n=12, res=32, seed=5):
    return garments.render_garments(garments.sample_garments(n, seed=seed), None, res)


def test_features_and_scores_agree_between_numpy_and_tf(world):
    ds, _ = world
    users = ds.extra["users"]
    for res in (32, 48):  # 48 is not a multiple of the feature resolution
        imgs = _images(res=res)
        x = tf.cast(imgs, tf.float32) / 127.5 - 1.0
        np.testing.assert_allclose(image_features.image_features(imgs), image_features.image_features_tf(x).numpy(),
                                   atol=1e-5)
        np.testing.assert_allclose(users.standardise(image_features.image_features(imgs)),
                                   users.standardised_features_tf(x).numpy(), atol=1e-4)
        u = np.arange(len(imgs)) % users.num_users
        cats = np.array([c % 8 - 1 for c in range(len(imgs))])  # includes -1 = unknown
        items = np.array([i - 2 for i in range(len(imgs))])  # includes -1, -2 = not catalogue items
        items = np.maximum(items, -1)
        s_np = users.true_score(u, imgs, categories=cats, items=items)
        s_tf = users.true_score_tf(tf.constant(u), x, categories=tf.constant(cats), items=tf.constant(items)).numpy()
        np.testing.assert_allclose(s_np, s_tf, atol=1e-4)
        assert np.all(np.abs(s_np) < 1)
        # Float input in [-1, 1] gives the same as uint8.
        np.testing.assert_allclose(users.true_score(u, x.numpy()), users.true_score(u, imgs), atol=1e-5)


def test_score_matrix_matches_true_score_on_catalogue(world):
    ds, _ = world
    users = ds.extra["users"]
    imgs = ds.images.render(np.arange(ds.num_items), 32)
    S = users.score_matrix(imgs, user_idx=np.array([0, 3]))
    items = np.arange(ds.num_items)
    direct = users.true_score(np.full(ds.num_items, 3), imgs, categories=ds.categories, items=items)
    np.testing.assert_allclose(S[1], direct, atol=1e-5)
    with pytest.raises(ValueError, match="catalogue"):
        users.score_matrix(imgs[:10])


def test_true_score_tf_has_pixel_gradients_in_a_tf_function(world):
    users = world[0].extra["users"]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, None, None, 3], tf.float32)])
    def grad(u, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            s = users.true_score_tf(u, x, categories=tf.zeros_like(u))
            total = tf.reduce_sum(s)
        return s, tape.gradient(total, x)

    for res in (32, 64):
        x = tf.cast(_images(n=4, res=res), tf.float32) / 127.5 - 1.0
        s, g = grad(tf.constant([0, 1, 2, 3]), x)
        assert s.shape == (4,)
        g = g.numpy()
        assert np.all(np.isfinite(g)) and np.abs(g).sum(axis=(1, 2, 3)).min() > 0
        # A small step along the gradient raises the score (it is a real gradient).
        step = x + 0.05 * g / np.abs(g).max(axis=(1, 2, 3), keepdims=True)
        s2, _ = grad(tf.constant([0, 1, 2, 3]), tf.clip_by_value(step, -1, 1))
        assert np.all(s2.numpy() > s.numpy())


def test_purchases_are_valid_distinct_and_time_ordered(world):
    ds, cfg = world
    assert ds.num_users == cfg.world.num_users and ds.num_items == cfg.world.num_items
    u, i, t = ds.inter_user, ds.inter_item, ds.inter_time
    assert u.min() >= 0 and u.max() < ds.num_users and i.min() >= 0 and i.max() < ds.num_items
    for user in range(ds.num_users):
        items, times = i[u == user], t[u == user]
        assert len(items) >= 3 and len(set(items.tolist())) == len(items)
        assert np.all(np.diff(times) > 0)
    mean = len(u) / ds.num_users
    assert abs(mean - cfg.world.interactions_per_user) < 1.5


def test_build_world_is_deterministic(world):
    ds, cfg = world
    again = simulated.build_world(cfg)
    np.testing.assert_array_equal(ds.inter_item, again.inter_item)
    np.testing.assert_array_equal(ds.inter_time, again.inter_time)


def test_oracle_auc_well_above_chance_on_tiny_world(world):
    ds, _ = world
    split = leave_one_out(ds)
    imgs = ds.images.render(np.arange(ds.num_items), 32)
    out = evaluation.oracle_auc(ds, split, imgs)
    assert out["users"] == ds.num_users
    assert out["auc_all"] > 0.7, out


def test_purchases_follow_pixels_more_than_chance(world):
    # Bought items score higher than random items on the *visual part alone*.
    ds, _ = world
    users = ds.extra["users"]
    z = users.standardise(image_features.image_features(ds.images.render(np.arange(ds.num_items), 32)))
    vis = users.taste @ z.T
    bought = vis[ds.inter_user, ds.inter_item].mean()
    assert bought > vis.mean() + 0.3 * vis.std()


class _GreyImages(ImageSource):
    """Fashion-MNIST-like: grey garments on a black background, 28 px."""

    fingerprint = "grey-test"

    def __init__(self, n):
        self.imgs = garments.render_garments(garments.sample_garments(n, seed=9), None, 28)
        self.imgs = (255 - self.imgs.mean(-1)).astype(np.uint8)  # dark background

    def __len__(self):
        return len(self.imgs)

    def load(self, index):
        return np.repeat(self.imgs[index][..., None], 3, axis=-1)


def test_world_over_another_image_source_subsets_and_ignores_constant_features(tmp_path):
    cfg = config.tiny()
    cfg.data.cache_dir = str(tmp_path)
    cfg.world.num_items = 50
    src = _GreyImages(80)
    cats = np.arange(80) % 4
    ds = simulated.build_world(cfg, images=src, categories=cats, category_names=list("abcd"),
                               item_ids=[f"id{i}" for i in range(80)], name="grey")
    assert ds.num_items == 50 and len(ds.images) == 50 and ds.name == "grey-sim"
    picked = ds.extra["source_indices"]
    np.testing.assert_array_equal(ds.categories, cats[picked])
    assert ds.item_ids[0] == f"id{picked[0]}"
    users = ds.extra["users"]
    # Grey images carry no hue: those features get zero weight instead of dividing by ~0.
    hue = [image_features.FEATURE_NAMES.index("red_green"), image_features.FEATURE_NAMES.index("yellow_blue")]
    assert np.all(users.feature_inv_std[hue] == 0)
    assert np.all(np.isfinite(users.score_matrix(np.stack([ds.images.load(i) for i in range(50)]))))


def test_bad_inputs_are_named(world):
    users = world[0].extra["users"]
    imgs = _images(n=2)
    with pytest.raises(ValueError, match="user index"):
        users.true_score(np.array([0, 10_000]), imgs)
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        users.true_score(np.array([0, 1]), imgs[..., 0])
    with pytest.raises(ValueError, match="2 users but 1 images"):
        users.true_score(np.array([0, 1]), imgs[:1])


def test_true_score_tf_first_traced_in_a_graph_then_used_eagerly(world):
    u0 = world[0].extra["users"]
    users = simulated.SimulatedUsers(u0.taste, u0.affinity, u0.popularity, u0.item_categories, u0.feature_mean,
                                     u0.feature_std, u0.visual_scale, u0.taste_strength)
    x = tf.cast(_images(n=2), tf.float32) / 127.5 - 1.0
    in_graph = tf.function(lambda u, im: users.true_score_tf(u, im))(tf.constant([0, 1]), x)
    eager = users.true_score_tf(tf.constant([0, 1]), x)
    np.testing.assert_allclose(in_graph.numpy(), eager.numpy(), atol=1e-5)
