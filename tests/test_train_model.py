"""CNN-F shapes and the DVBPR loss against NumPy references."""

import numpy as np
import pytest

from test_train_support import colour_world, tiny_config

import tensorflow as tf

from tfmodels import config as config_lib
from tfmodels.models import cnnf, towers
from tfmodels.models.dvbpr import (DVBPR, bpr_loss_per_example, dvbpr_batch_loss,
                                   dvbpr_loss_per_example)


@pytest.mark.parametrize("resolution,final", [(32, 2), (64, 2), (128, 4)])
def test_tower_shapes_at_small_resolutions(resolution, final):
    cfg = tiny_config().model
    tower = cnnf.build_item_tower(cfg, resolution)
    assert tower.get_layer("pool5").output.shape[1:3] == (final, final)
    out = tower(tf.zeros([2, resolution, resolution, 3]))
    assert out.shape == (2, cfg.embedding_dim) and out.dtype == tf.float32


def test_paper_tower_is_cnn_f():
    cfg = config_lib.paper().model
    tower = cnnf.build_item_tower(cfg, 224)
    conv1 = tower.get_layer("conv1")
    assert conv1.kernel.shape == (11, 11, 3, 64) and conv1.strides == (4, 4)
    assert tower.get_layer("conv2").kernel.shape == (5, 5, 64, 256)
    for name in ("conv3", "conv4", "conv5"):
        assert tower.get_layer(name).kernel.shape == (3, 3, 256, 256)
    assert tower.get_layer("pool5").output.shape[1:] == (7, 7, 256)
    assert tower.get_layer("fc6").kernel.shape == (7 * 7 * 256, 4096)
    assert tower.get_layer("fc7").kernel.shape == (4096, 4096)
    assert tower.get_layer("embedding").kernel.shape == (4096, 100)
    assert tower.get_layer("drop6").rate == 0.5 and tower.get_layer("drop7").rate == 0.5
    assert tower.output_shape == (None, 100)
    # FLOP count agrees with the layer shapes (used by the throughput benchmark).
    expected_fc = 2 * (7 * 7 * 256 * 4096 + 4096 * 4096 + 4096 * 100)
    assert cnnf.forward_flops(cfg, 224) > expected_fc
    del tower


def test_kernel_l2_counts_kernels_not_biases():
    tower = cnnf.build_item_tower(tiny_config().model, 32)
    for layer in tower.layers:
        if hasattr(layer, "bias") and layer.bias is not None:
            layer.bias.assign(tf.fill(layer.bias.shape, 3.0))
    ref = sum(np.sum(layer.kernel.numpy() ** 2) for layer in tower.layers if hasattr(layer, "kernel"))
    assert len(towers.kernel_variables(tower)) == 8
    np.testing.assert_allclose(towers.kernel_l2(tower).numpy(), ref, rtol=1e-5)


def _np_softplus(x):
    return np.logaddexp(0.0, x)


def test_bpr_loss_matches_numpy_and_is_stable():
    rng = np.random.default_rng(0)
    x_ui = rng.normal(size=64).astype(np.float32) * 5
    x_uj = rng.normal(size=64).astype(np.float32) * 5
    ref = -np.log(1 / (1 + np.exp(-(x_ui.astype(np.float64) - x_uj))))
    np.testing.assert_allclose(bpr_loss_per_example(x_ui, x_uj).numpy(), ref, rtol=1e-5, atol=1e-6)
    big = bpr_loss_per_example(tf.constant([-200.0, 200.0]), tf.constant([200.0, -200.0])).numpy()
    np.testing.assert_allclose(big, [400.0, 0.0], atol=1e-4)  # naive log(sigmoid) gives inf


def test_dvbpr_loss_with_regularisers_matches_numpy():
    rng = np.random.default_rng(1)
    theta = rng.normal(size=(16, 8)).astype(np.float32)
    x_ui = rng.normal(size=16).astype(np.float32)
    x_uj = rng.normal(size=16).astype(np.float32)
    kl2 = np.float32(123.4)
    per = _np_softplus(-(x_ui - x_uj)) + 0.7 * np.sum(theta ** 2, axis=1)
    np.testing.assert_allclose(dvbpr_loss_per_example(theta, x_ui, x_uj, 0.7).numpy(), per, rtol=1e-5)
    ref = per.mean() + 1e-3 * kl2 / 16
    np.testing.assert_allclose(dvbpr_batch_loss(theta, x_ui, x_uj, kl2, 0.7, 1e-3).numpy(), ref, rtol=1e-5)


def test_training_step_loss_matches_numpy_reference(tmp_path):
    """The loss the DVBPR task reports for one step = NumPy BPR + both L2 terms on the same weights."""
    from tfmodels.data.pixels import to_model_input
    from tfmodels.training.recommender import DVBPRTask

    dataset, split, images = colour_world()
    cfg = tiny_config(lambda_theta=0.5, lambda_cnn=0.01)
    cfg.model.dropout = 0.0  # training=True then equals the inference forward pass
    task = DVBPRTask(cfg, dataset, split, images)
    task.build_inputs(tf.distribute.get_strategy())
    task.build(tf.distribute.get_strategy())
    # Larger user vectors so the theta term and the scores are not negligible.
    task.model.user_embedding.embeddings.assign(tf.random.normal([split.num_users, 8], seed=3))
    batch = {"user": np.array([0, 1, 2, 5, 7, 9], np.int32), "pos": np.array([4, 1, 6, 5, 3, 13], np.int32),
             "neg": np.array([1, 2, 3, 4, 5, 6], np.int32)}
    theta = task.model.user_embedding.embeddings.numpy()[batch["user"]]
    phi_i = task.model.item_embeddings(to_model_input(images[batch["pos"]])).numpy()
    phi_j = task.model.item_embeddings(to_model_input(images[batch["neg"]])).numpy()
    kernels = sum(np.sum(w.numpy().astype(np.float64) ** 2) for w in towers.kernel_variables(task.model.item_tower))
    x_ui, x_uj = np.sum(theta * phi_i, 1), np.sum(theta * phi_j, 1)
    bpr = _np_softplus(-(x_ui - x_uj).astype(np.float64))
    ref_loss = np.mean(bpr + 0.5 * np.sum(theta.astype(np.float64) ** 2, 1)) + 0.01 * kernels / 6

    out = tf.function(task.train_step)({k: tf.constant(v) for k, v in batch.items()})
    np.testing.assert_allclose(out["bpr"].numpy(), bpr.mean(), rtol=1e-4)
    np.testing.assert_allclose(out["reg_cnn"].numpy(), 0.01 * kernels / 6, rtol=1e-4)
    np.testing.assert_allclose(out["loss"].numpy(), ref_loss, rtol=1e-4)
    # ... and the step changed the weights.
    assert not np.allclose(task.model.user_embedding.embeddings.numpy()[batch["user"]], theta)


def test_dvbpr_scores_are_dot_products():
    cfg = tiny_config().model
    model = DVBPR(5, cfg, 32)
    images = tf.random.uniform([3, 32, 32, 3], -1, 1)
    users = tf.constant([0, 4, 2])
    scores = model({"user": users, "images": images})
    ref = np.sum(model.user_vectors(users).numpy() * model.item_embeddings(images).numpy(), 1)
    np.testing.assert_allclose(scores.numpy(), ref, rtol=1e-5, atol=1e-7)


def test_loss_scaled_gradients_equal_plain_gradients():
    from tfmodels.training import loop

    w = tf.Variable([1.5, -2.0])
    opt = loop.build_optimizer(1e-3, mixed_precision=True)
    assert isinstance(opt, tf.keras.mixed_precision.LossScaleOptimizer)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(w ** 2)
    grads = loop.compute_gradients(tape, opt, loss, [w])
    np.testing.assert_allclose(grads[0].numpy(), [3.0, -4.0], rtol=1e-6)
    assert float(opt.loss_scale) > 1  # the scale really was applied and removed
