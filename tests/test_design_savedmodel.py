"""The in-graph design and modify functions survive SavedModel export and run in the
session-based loader that TensorFlow Serving uses, with the same results as eagerly."""

import tfmodels  # noqa: F401  (sets tf-keras before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf

from test_design_latent import tiny_designer
from tfmodels import design_search
from tfmodels.config import tiny
from tfmodels.data.pixels import to_uint8
from tfmodels.models import gan as gan_lib


def tiny_nets(seed, grey=False, spectral_norm=False):
    """A 16 px GAN over 3 categories (``gan.grey`` and ``gan.spectral_norm`` as given), a 24 px item tower (K = 6) and a 20 px
    linear category classifier (any network with logits, ``resolution`` and ``num_categories`` will do)."""
    tf.keras.utils.set_random_seed(seed)
    cfg = tiny()
    cfg.gan.resolution = 16
    cfg.gan.grey = grey
    cfg.gan.spectral_norm = spectral_norm
    g, d = gan_lib.build_gan(cfg.gan, 3)
    tower = tf.keras.Sequential([tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                                 tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(6)])
    tower.build((None, 24, 24, 3))
    classifier = tf.keras.Sequential([tf.keras.layers.Flatten(), tf.keras.layers.Dense(3)])
    classifier.build((None, 20, 20, 3))
    classifier.resolution, classifier.num_categories = 20, 3
    return g, d, tower, classifier


@pytest.mark.slow
def test_design_and_modify_signatures_in_a_v1_session(tmp_path):
    # With the options (the default path is exported by tests/test_export_support.py): codes kept on
    # their sphere, a category term with a classifier at its own size, a grey generator and a spectrally
    # normalised discriminator.
    g, d, tower, classifier = tiny_nets(1, grey=True, spectral_norm=True)
    module = tf.Module()
    module.g, module.d, module.tower, module.classifier = g, d, tower, classifier
    module.users = tf.Variable(tf.random.normal([5, 6]))
    options = dict(latent="sphere", classifier=classifier, category_weight=1.0)
    module.design_fn = design_search.build_design_fn(g, d, tower, 24, "lsgan", **options)
    module.modify_fn = design_search.build_modify_fn(g, d, tower, 24, "lsgan", **options)

    @tf.function(input_signature=[tf.TensorSpec([], tf.int64, name="user"),
                                  tf.TensorSpec([], tf.int32, name="category"),
                                  tf.TensorSpec([], tf.int32, name="steps"),
                                  tf.TensorSpec([], tf.float32, name="eta")])
    def design_sig(user, category, steps, eta):
        out = module.design_fn(tf.gather(module.users, user), category, tf.constant(3), steps, eta,
                               tf.constant(0.1), tf.constant(7))
        return {"score": out["score"], "image": to_uint8(out["images"]), "history": out["history"],
                "off_category": out["off_category"]}

    @tf.function(input_signature=[tf.TensorSpec([], tf.int64, name="user"),
                                  tf.TensorSpec([16, 16, 3], tf.float32, name="image")])
    def modify_sig(user, image):
        out = module.modify_fn(tf.gather(module.users, user), image, tf.constant(1), tf.constant(2),
                               tf.constant(3), tf.constant(2), tf.constant(1.0), tf.constant(1.0),
                               tf.constant(0.1), tf.constant(0))
        return {"score_after": out["score_after"], "after": out["after"]}

    path = str(tmp_path / "designer")
    tf.saved_model.save(module, path, signatures={"design": design_sig, "modify": modify_sig})
    eager = design_sig(tf.constant(2, tf.int64), tf.constant(1), tf.constant(4), tf.constant(1.0))
    eager_mod = modify_sig(tf.constant(1, tf.int64), tf.zeros([16, 16, 3]))

    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta.signature_def["design"]
        res = sess.run({k: v.name for k, v in sig.outputs.items()},
                       {sig.inputs["user"].name: 2, sig.inputs["category"].name: 1,
                        sig.inputs["steps"].name: 4, sig.inputs["eta"].name: 1.0})
        sig = meta.signature_def["modify"]
        mod = sess.run({k: v.name for k, v in sig.outputs.items()},
                       {sig.inputs["user"].name: 1, sig.inputs["image"].name: np.zeros((16, 16, 3), np.float32)})
    assert res["image"].shape == (3, 16, 16, 3) and res["image"].dtype == np.uint8
    assert np.all(res["image"][..., :1] == res["image"][..., 1:])  # grey: R = G = B
    assert res["history"].shape == (5, 3)
    np.testing.assert_allclose(res["score"], eager["score"].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res["off_category"], eager["off_category"].numpy(), rtol=1e-4, atol=1e-5)
    assert np.all(res["off_category"] > 0)
    np.testing.assert_allclose(mod["score_after"], eager_mod["score_after"].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_served_designer_carries_the_category_term(tmp_path):
    """DesignerModule with latent = sphere and a category term: the classifier is saved with the
    model, and the reloaded design signature matches ``Designer.design`` with the same settings."""
    from export import signatures as S
    from export.designer import DesignerModule
    from tfmodels.config import DesignConfig

    g, d, tower, classifier = tiny_nets(2)
    users = tf.random.stateless_normal([4, 6], seed=[5, 6]).numpy()
    module = DesignerModule(g, d, tower, users, ["a", "b", "c", "d"], ["top", "shoe", "bag"], 24,
                            latent="sphere", classifier=classifier, category_weight=2.0)
    assert module.settings()["latent"] == "sphere" and module.settings()["category_weight"] == 2.0
    path = str(tmp_path / "designer")
    tf.saved_model.save(module, path, signatures=module.signatures())
    loaded = tf.saved_model.load(path)
    out = loaded.signatures[S.DESIGN](user_id=tf.constant("c"), category=tf.constant("bag"), starts=tf.constant(3),
                                      steps=tf.constant(4), eta=tf.constant(1.0), seed=tf.constant(9))
    config = DesignConfig(starts=3, steps=4, eta=1.0, learning_rate=module.learning_rate, latent="sphere",
                          category_weight=2.0)
    designer = tiny_designer(g, d, tower, users, config=config, classifier=classifier)
    want = designer.design(2, "bag", seed=9)
    assert np.all(want.off_category > 0)
    np.testing.assert_allclose(out[S.OUT_SCORE].numpy(), want.scores, rtol=1e-4, atol=1e-5)
    # Without the classifier the same settings give other designs: the term is really in the graph.
    plain = designer.design(2, "bag", seed=9, category_weight=0.0)
    assert not np.allclose(plain.scores, want.scores, rtol=1e-3)
