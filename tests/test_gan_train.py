"""A tiny conditional GAN trains with the shared loop, writes samples and resumes at its saved step."""

import tfmodels  # noqa: F401  (sets tf-keras before TensorFlow)
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfmodels.config import tiny
from tfmodels.models import gan as gan_lib
from tfmodels.training import gan as gan_training


def _toy_data(n=48, res=16, categories=3, seed=0):
    """Category c = a bright square in a category-specific corner on a dark background."""
    rng = np.random.default_rng(seed)
    cats = rng.integers(0, categories, size=n).astype(np.int32)
    images = rng.integers(0, 40, size=(n, res, res, 3)).astype(np.uint8)
    h = res // 2
    for i, c in enumerate(cats):
        y, x = divmod(int(c), 2)
        images[i, y * h:(y + 1) * h, x * h:(x + 1) * h] = 220
    return images, cats, [f"cat{c}" for c in range(categories)], "toy"


def _cfg(steps):
    cfg = tiny()
    cfg.gan.resolution = 16
    cfg.gan.steps = steps
    cfg.gan.batch_size = 8
    cfg.gan.sample_every = 2
    cfg.train.steps_per_loop = 2
    cfg.train.checkpoint_every = 2
    cfg.train.histogram_every = 0
    return cfg


def test_shapes_and_ranges():
    g, d = gan_lib.build_gan(_cfg(1).gan, 3)
    z = tf.random.normal([5, 16])
    c = gan_lib.onehot([0, 1, 2, 0, 1], 3)
    x = g([z, c], training=False)
    assert x.shape == (5, 16, 16, 3)
    assert float(tf.reduce_max(tf.abs(x))) <= 1.0
    assert d([x, c], training=False).shape == (5,)
    with pytest.raises(ValueError, match="power of two"):
        gan_lib.build_generator(16, 3, resolution=48)


def test_losses_match_numpy():
    real, fake = np.array([0.5, 1.5, -1.0], np.float32), np.array([0.2, -0.3, 2.0], np.float32)
    np.testing.assert_allclose(gan_lib.discriminator_loss_per_example(real, fake, "lsgan"),
                               0.5 * (real - 1) ** 2 + 0.5 * fake ** 2, rtol=1e-6)
    np.testing.assert_allclose(gan_lib.generator_loss_per_example(fake, "lsgan"), 0.5 * (fake - 1) ** 2, rtol=1e-6)
    softplus = lambda x: np.log1p(np.exp(x))
    np.testing.assert_allclose(gan_lib.discriminator_loss_per_example(real, fake, "nonsaturating"),
                               softplus(-real) + softplus(fake), rtol=1e-5)
    np.testing.assert_allclose(gan_lib.generator_loss_per_example(fake, "nonsaturating"), softplus(-fake), rtol=1e-5)


@pytest.mark.slow
def test_train_few_steps_then_resume_at_saved_step(tmp_path):
    workdir = str(tmp_path / "gan")
    data = _toy_data()
    out = gan_training.train_gan(_cfg(4), workdir, data=data)
    assert out["step"] == 4
    assert all(np.isfinite(v) for v in out["losses"].values())
    assert set(out["losses"]) >= {"d_loss", "g_loss"}
    meta = json.load(open(os.path.join(workdir, "model.json")))
    assert meta["kind"] == "gan" and meta["step"] == 4 and meta["category_names"] == data[2]
    assert os.path.exists(os.path.join(workdir, "samples", "step_0000004.png"))
    assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tb")))

    g1, _, _, _ = gan_training.load_gan(workdir)
    w_before = [v.numpy() for v in g1.weights]

    # A second run with more steps resumes at 4, not 0, and changes the weights.
    out = gan_training.train_gan(_cfg(6), workdir, data=data)
    assert out["start_step"] == 4 and out["step"] == 6
    g2, d2, cfg2, meta2 = gan_training.load_gan(workdir)
    assert meta2["step"] == 6 and cfg2.gan.steps == 6
    changed = [not np.allclose(a, b.numpy()) for a, b in zip(w_before, g2.weights)]
    assert any(changed)


def test_load_gan_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        gan_training.load_gan(str(tmp_path))


MIRRORED = r"""
import sys, json
import tfmodels
from tfmodels.training.strategy import split_cpu, build_strategy
split_cpu(2)
import numpy as np
sys.path.insert(0, "tests")
from test_gan_train import _toy_data, _cfg
from tfmodels.training import gan as gan_training
strategy = build_strategy("mirrored")
out = gan_training.train_gan(_cfg(2), sys.argv[1], strategy=strategy, data=_toy_data())
# Spectral normalisation assigns D's normalised kernels inside the replicas' step.
cfg = _cfg(1)
cfg.gan.spectral_norm = True
sn = gan_training.train_gan(cfg, sys.argv[1] + "_sn", strategy=strategy, data=_toy_data())
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "step": out["step"], "losses": out["losses"],
                  "sn_step": sn["step"], "sn_losses": sn["losses"]}))
"""


@pytest.mark.slow
def test_trains_under_two_replica_mirrored_strategy(tmp_path):
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path / "gan")], capture_output=True, text=True,
                          cwd=repo, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["step"] == 2 and result["sn_step"] == 1
    assert all(np.isfinite(v) for v in list(result["losses"].values()) + list(result["sn_losses"].values()))


@pytest.mark.slow
def test_grey_generator_trains_and_reloads_with_equal_channels(tmp_path, capsys):
    images, cats, names, _ = _toy_data()
    images[..., 1] = images[..., 2] = images[..., 0]  # a grey catalogue
    cfg = _cfg(2)
    gan_training.train_gan(cfg, str(tmp_path / "rgb"), data=(images, cats, names, "toy"))
    assert "are grey: consider --set gan.grey=true" in capsys.readouterr().out

    cfg.gan.grey = True
    gan_training.train_gan(cfg, str(tmp_path / "grey"), data=(images, cats, names, "toy"))
    assert "are grey" not in capsys.readouterr().out
    g, _, cfg2, _ = gan_training.load_gan(str(tmp_path / "grey"))
    assert cfg2.gan.grey and int(g.get_layer("to_rgb").output.shape[-1]) == 1
    x = g([tf.random.normal([4, 16]), gan_lib.onehot([0, 1, 2, 0], 3)], training=False).numpy()
    assert x.shape == (4, 16, 16, 3) and np.ptp(x) > 0
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])

    # Resuming the grey run as a colour one names the setting instead of failing in the restore.
    cfg.gan.grey, cfg.gan.steps = False, 4
    with pytest.raises(ValueError, match="gan.grey=True, this run asks for False"):
        gan_training.train_gan(cfg, str(tmp_path / "grey"), data=(images, cats, names, "toy"))
