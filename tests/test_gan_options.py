"""The GAN's quality levers (moving-average generator, DiffAugment, R1, two-timescale rates, resize-convolution
upsampling, reused fakes, spectral normalisation) and its measures."""

import tfmodels  # noqa: F401  (sets tf-keras before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf

from test_gan_train import _cfg, _toy_data
from tfmodels import gan_metrics
from tfmodels.models import gan as gan_lib
from tfmodels.training import gan as gan_training

OPTIONS = {"ema": ["gan.ema=0.9"], "augment": ["gan.augment=translation,color,cutout"], "r1": ["gan.r1=1.0"],
           "ttur": ["gan.d_learning_rate=4e-4"], "upsample": ["gan.upsample=resize"],
           "transpose": ["gan.upsample=transpose"], "spectral_norm": ["gan.spectral_norm=true"]}


@pytest.mark.slow
@pytest.mark.parametrize("option", list(OPTIONS))
def test_each_option_trains_with_finite_losses_and_resumes(tmp_path, capfd, option):
    from tfmodels import config as config_lib

    cfg = config_lib.apply_overrides(_cfg(2), OPTIONS[option])
    w = str(tmp_path / option)
    out = gan_training.train_gan(cfg, w, data=_toy_data())
    assert out["step"] == 2 and all(np.isfinite(v) for v in out["losses"].values()), out["losses"]
    # Grappler's conv+bias+leaky-ReLU fusion fails on graphs with gradients through D (logged as an error);
    # D avoids the pattern with every option.
    assert "remapper failed" not in capfd.readouterr().err
    if option == "r1":
        assert out["losses"]["r1_penalty"] > 0
    if option == "upsample":  # the resize generator's last block: nearest-neighbour x2, then a 3x3 conv
        block = gan_training.load_gan(w)[0].get_layer("to_rgb")
        assert [type(layer).__name__ for layer in block.layers] == ["UpSampling2D", "Conv2D"]
        # Another upsampling cannot read this checkpoint: resuming with it is refused, naming the setting.
        with pytest.raises(ValueError, match="gan.upsample"):
            gan_training.train_gan(_cfg(4), w, data=_toy_data())
    if option == "transpose":  # the paper's 5x5 stride-2 kernels (the default's are 4x4, the stride dividing them)
        layer = gan_training.load_gan(w)[0].get_layer("to_rgb")
        assert type(layer).__name__ == "Conv2DTranspose" and layer.kernel.shape[:2] == (5, 5)
        assert gan_lib.build_gan(_cfg(2).gan, 3)[0].get_layer("to_rgb").kernel.shape[:2] == (4, 4)
    if option == "spectral_norm":  # every D layer normalised (largest singular value ~1), no layer norms left
        d = gan_training.load_gan(w)[1]
        wrapped = [layer for layer in d.layers if isinstance(layer, tf.keras.layers.SpectralNormalization)]
        assert len(wrapped) == 4 and not any(isinstance(layer, tf.keras.layers.LayerNormalization) for layer in d.layers)
        for layer in wrapped:
            kernel = layer.layer.kernel.numpy()
            sigma = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
            assert sigma == pytest.approx(1.0, abs=0.15), (layer.name, sigma)
        with pytest.raises(ValueError, match="gan.spectral_norm"):  # the default D cannot read its checkpoint
            gan_training.train_gan(_cfg(4), w, data=_toy_data())
    cfg.gan.steps = 4
    again = gan_training.train_gan(cfg, w, data=_toy_data())
    assert again["start_step"] == 2 and again["step"] == 4


def test_the_fusion_safe_leaky_relu_equals_keras_leaky_relu_to_the_bit():
    x = tf.random.stateless_normal([4, 8, 8, 16], seed=[1, 2]) * 3.0
    np.testing.assert_array_equal(gan_lib._LeakyMax()(x).numpy(), tf.keras.layers.LeakyReLU(0.2)(x).numpy())


@pytest.mark.slow
def test_the_moving_average_is_what_sampling_design_and_export_use(tmp_path):
    from tfmodels import config as config_lib

    cfg = config_lib.apply_overrides(_cfg(4), ["gan.ema=0.5"])
    w = str(tmp_path / "ema")
    gan_training.train_gan(cfg, w, data=_toy_data())
    raw, averaged = gan_lib.build_gan(cfg.gan, 3)[0], gan_lib.build_gan(cfg.gan, 3)[0]
    latest = tf.train.latest_checkpoint(f"{w}/ckpt")
    tf.train.Checkpoint(generator=raw).read(latest).expect_partial()
    tf.train.Checkpoint(generator_ema=averaged).read(latest).expect_partial()
    loaded = gan_training.load_gan(w)[0]
    for a, b in zip(loaded.trainable_weights, averaged.trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(not np.array_equal(a.numpy(), r.numpy()) for a, r in zip(loaded.weights, raw.weights))
    # Its batch-norm statistics are measured on it (gan.ema_statistics=recompute), not the averaged ones.
    saved = [v.numpy() for v in averaged.non_trainable_weights]
    gan_training.recompute_batch_norm_statistics(averaged)
    for a, b in zip(loaded.non_trainable_weights, averaged.non_trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(saved, loaded.non_trainable_weights))
    cfg.gan.ema_statistics = "bogus"
    with pytest.raises(ValueError, match="gan.ema_statistics='bogus'"):
        gan_training.train_gan(cfg, w, data=_toy_data())
    cfg.gan.ema_statistics = "recompute"
    # Resuming the averaged run without the average would lose it: refused, naming the setting.
    cfg.gan.ema = 0.0
    with pytest.raises(ValueError, match="gan.ema=0.5"):
        gan_training.train_gan(cfg, w, data=_toy_data())


class _CountingModel:
    """Wraps a Keras model and counts its forward calls."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.model(*args, **kwargs)

    @property
    def trainable_variables(self):
        return self.model.trainable_variables


@pytest.mark.parametrize("reuse", [True, False])
def test_reused_fakes_run_the_generator_once_and_still_train_both_networks(reuse):
    images, cats, _, _ = _toy_data(n=8)
    cfg = _cfg(1)
    g, d = gan_lib.build_gan(cfg.gan, 3)
    g_before, d_before = [v.numpy() for v in g.trainable_variables], [v.numpy() for v in d.trainable_variables]
    counted = _CountingModel(g)
    from tfmodels.training import loop as loop_lib

    out = gan_training.gan_train_step(counted, d, loop_lib.build_optimizer(1e-3), loop_lib.build_optimizer(1e-3),
                                      tf.constant(images), tf.constant(cats), noise_dim=cfg.gan.noise_dim,
                                      num_categories=3, loss="lsgan", global_batch_size=8, reuse_fakes=reuse)
    assert counted.calls == (1 if reuse else 2)
    assert all(np.isfinite(float(v)) for v in out.values())
    # Both updates happened: the G update's gradient reached G through the tape paused for the D update.
    assert all(not np.array_equal(a, v.numpy()) for a, v in zip(g_before, g.trainable_variables))
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(d_before, d.trainable_variables))


def test_ema_update_is_the_weighted_average():
    a = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
    b = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
    before = [v.numpy() for v in a.weights]
    target = [v.numpy() for v in b.weights]
    tf.distribute.get_strategy().run(lambda: gan_training.update_ema(a, b, 0.75))
    for v, x, y in zip(a.weights, before, target):
        np.testing.assert_allclose(v.numpy(), 0.75 * x + 0.25 * y, rtol=1e-6)


def test_diff_augment_keeps_shape_and_gradients_and_is_checked():
    x = tf.random.uniform([4, 16, 16, 3], -1, 1)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = gan_lib.diff_augment(x, "translation,color,cutout")
        total = tf.reduce_sum(y)
    assert y.shape == x.shape and not np.allclose(y.numpy(), x.numpy())
    assert float(tf.reduce_sum(tf.abs(tape.gradient(total, x)))) > 0
    np.testing.assert_array_equal(gan_lib.diff_augment(x, "").numpy(), x.numpy())
    # translation moves content, filling with black (-1): a constant image gains -1 borders, nothing else.
    flat = gan_lib.diff_augment(tf.zeros([64, 16, 16, 3]), "translation").numpy()
    assert set(np.unique(flat)) <= {-1.0, 0.0} and (flat == -1.0).any()
    with pytest.raises(ValueError, match="unknown \\['flip'\\]"):
        gan_lib.parse_augment("translation,flip")


def test_real_vs_real_floor_uses_disjoint_halves_and_diversity_sees_collapse():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((400, 5))
    out = gan_metrics.real_vs_real_floor(feats, seed=1)
    a, b = out["halves"]
    assert len(a) == len(b) == 200 and not set(a) & set(b)
    shifted = gan_metrics.frechet_distance(feats[a], feats[b] + 1.0)
    assert 0 <= out["frechet"] < 0.2 * shifted
    assert gan_metrics.diversity(np.repeat(feats[:1], 5, axis=0)) == pytest.approx(0.0, abs=1e-6)
    assert gan_metrics.diversity(feats) > 2.0  # ~sqrt(2 * 5) for unit normals


def test_recomputed_batch_norm_statistics_standardise_each_layer_on_fresh_draws():
    generator = gan_lib.build_generator(16, 3, resolution=16, base_channels=8, upsample="transpose4")
    layers = [l for l in generator.layers if isinstance(l, tf.keras.layers.BatchNormalization)]
    outputs = tf.keras.Model(generator.inputs, [l.output for l in layers])
    rng = np.random.default_rng(7)  # other draws than the statistics' own
    z = rng.standard_normal((2048, 16)).astype(np.float32)
    c = gan_lib.onehot(rng.integers(0, 3, 2048), 3)

    def worst(moment):  # largest per-channel deviation over all layers, inference mode
        values = [moment(o.numpy().reshape(-1, o.shape[-1]), l)
                  for o, l in zip(outputs([z, c], training=False), layers)]
        return max(float(np.abs(v).max()) for v in values)

    def std_error(x, layer):  # a standardised channel of variance v has std sqrt(v / (v + epsilon))
        v = layer.moving_variance.numpy()
        return x.std(0) - np.sqrt(v / (v + layer.epsilon))

    # Fresh layers (mean 0, variance 1, gamma 1, beta 0) do not standardise the generator's activations.
    assert worst(lambda x, _: x.std(0) - 1.0) > 0.2
    gan_training.recompute_batch_norm_statistics(generator, samples=2048)
    assert worst(lambda x, _: x.mean(0)) < 0.05 and worst(std_error) < 0.05
    first = [v.numpy() for v in generator.non_trainable_weights]
    gan_training.recompute_batch_norm_statistics(generator, samples=2048)  # the same seed: the same statistics
    for a, b in zip(first, generator.non_trainable_weights):
        np.testing.assert_array_equal(a, b.numpy())
