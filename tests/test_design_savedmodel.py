"""The in-graph design and modify functions survive SavedModel export and run in the
session-based loader that TensorFlow Serving uses, with the same results as eagerly."""

import tfmodels  # noqa: F401  (sets tf-keras before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf

from tfmodels import design
from tfmodels.config import tiny
from tfmodels.models import gan as gan_lib


@pytest.mark.slow
def test_design_and_modify_signatures_in_a_v1_session(tmp_path):
    tf.keras.utils.set_random_seed(1)
    cfg = tiny()
    cfg.gan.resolution = 16
    g, d = gan_lib.build_gan(cfg.gan, 3)
    tower = tf.keras.Sequential([tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                                 tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(6)])
    tower.build((None, 24, 24, 3))
    module = tf.Module()
    module.g, module.d, module.tower = g, d, tower
    module.users = tf.Variable(tf.random.normal([5, 6]))
    module.design_fn = design.build_design_fn(g, d, tower, 24, "lsgan")
    module.modify_fn = design.build_modify_fn(g, d, tower, 24, "lsgan")

    @tf.function(input_signature=[tf.TensorSpec([], tf.int64, name="user"),
                                  tf.TensorSpec([], tf.int32, name="category"),
                                  tf.TensorSpec([], tf.int32, name="steps"),
                                  tf.TensorSpec([], tf.float32, name="eta")])
    def design_sig(user, category, steps, eta):
        out = module.design_fn(tf.gather(module.users, user), category, tf.constant(3), steps, eta,
                               tf.constant(0.1), tf.constant(7))
        return {"score": out["score"], "image": gan_lib.to_uint8(out["images"]), "history": out["history"]}

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
    assert res["history"].shape == (5, 3)
    np.testing.assert_allclose(res["score"], eager["score"].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mod["score_after"], eager_mod["score_after"].numpy(), rtol=1e-4, atol=1e-5)
