"""The ``item_encoder`` SavedModel: the trained CNN item tower alone, reusable and fine-tunable.

It follows TensorFlow Hub's *reusable SavedModel* convention, so any TensorFlow
program can use it without this package::

    obj = tf.saved_model.load("<base>/item_encoder/<N>")
    emb = obj(images, training=False)      # images float32 [B, R, R, 3] in [-1, 1] -> [B, K]
    obj.variables, obj.trainable_variables  # lists of tf.Variable
    obj.regularization_losses               # list of zero-argument functions -> scalar

``__call__`` is saved for ``training=False`` (inference) and ``training=True``
(dropout on the fc layers, for fine-tuning). ``regularization_losses`` holds one
function per conv/fc kernel returning ``l2 * ||W||^2`` (l2 = the recommender run's
``train.lambda_cnn``; biases are not regularised), which a fine-tuning program may
add to its loss. Images are prepared as in training: decoded, padded to a square,
resized to R (see ``export.recommender``; the recommender's ``item_embedding``
signature does that from JPEG/PNG bytes) and mapped to [-1, 1] by ``x / 127.5 - 1``.

The ``serving_default`` signature (images -> embedding) serves it with TensorFlow
Serving. ``ItemEncoderLayer`` is the small Keras wrapper for fine-tuning (what
``hub.KerasLayer`` does, without needing tensorflow_hub); it is ~20 lines of plain
TensorFlow that another program can copy.
"""

from __future__ import annotations

import tfmodels  # noqa: F401  (tf-keras before TensorFlow)

import numpy as np
import tensorflow as tf

from export import signatures as S
from tfmodels.data.pixels import to_model_input
from tfmodels.models.towers import kernel_variables

_AutoTrackable = tf.__internal__.tracking.AutoTrackable


def _l2_loss(weight: tf.Variable, l2: float):
    """A zero-argument tf.function returning l2 * ||weight||^2."""

    @tf.function(input_signature=[])
    def loss():
        return tf.constant(l2, tf.float32) * tf.reduce_sum(tf.square(tf.cast(weight, tf.float32)))

    return loss


class ItemEncoder(_AutoTrackable):
    """The reusable SavedModel object (TF Hub convention, see the module docstring)."""

    def __init__(self, item_tower: tf.keras.Model, l2: float = 0.0):
        super().__init__()
        self.tower = item_tower
        self.resolution = int(item_tower.inputs[0].shape[1])
        self.embedding_dim = int(item_tower.outputs[0].shape[-1])
        self.variables = list(item_tower.variables)
        self.trainable_variables = list(item_tower.trainable_variables)
        kernels = kernel_variables(item_tower) if l2 > 0 else []
        self.regularization_losses = [_l2_loss(w, l2) for w in kernels]
        for fn in self.regularization_losses:
            fn.get_concrete_function()
        spec = tf.TensorSpec([None, self.resolution, self.resolution, 3], tf.float32, name=S.IMAGES)

        @tf.function
        def call(images, training=False):
            return tf.cast(self.tower(images, training=training), tf.float32)

        call.get_concrete_function(spec, training=False)
        call.get_concrete_function(spec, training=True)
        self.__call__ = call

        @tf.function(input_signature=[spec])
        def serve(images):
            checks = [tf.debugging.assert_positive(tf.shape(images)[0], message=f"{S.IMAGES}: empty batch")]
            with tf.control_dependencies(checks):
                return {S.OUT_EMBEDDING: call(images, training=False)}

        self.serve = serve

    def signatures(self) -> dict:
        return {S.SERVING_DEFAULT: self.serve.get_concrete_function()}


def build_item_encoder(item_tower: tf.keras.Model, l2: float = 0.0) -> ItemEncoder:
    """The reusable item encoder object for ``item_tower`` (any tower of ``tfmodels.models.towers``)."""
    return ItemEncoder(item_tower, l2)


class ItemEncoderLayer(tf.keras.layers.Layer):
    """A Keras layer around a loaded item encoder, so it can be fine-tuned in a Keras model.

    The loaded object's variables are tracked by the layer (trainable ones in
    ``trainable_weights`` when ``trainable=True``), and its regularization losses
    are added as layer losses when trainable. ``call(images, training)`` passes
    ``training`` on (dropout on only while fine-tuning).
    """

    def __init__(self, path_or_object, trainable: bool = True, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.encoder = tf.saved_model.load(path_or_object) if isinstance(path_or_object, str) else path_or_object
        trainable_ids = {id(v) for v in self.encoder.trainable_variables}
        # Assigning lists of variables to a Keras layer tracks them as its weights.
        self.encoder_trainable = [v for v in self.encoder.variables if id(v) in trainable_ids]
        self.encoder_frozen = [v for v in self.encoder.variables if id(v) not in trainable_ids]
        if trainable:
            for fn in getattr(self.encoder, "regularization_losses", []):
                self.add_loss(fn)

    @property
    def trainable_weights(self):
        return list(self.encoder_trainable) if self.trainable else []

    @property
    def non_trainable_weights(self):
        return list(self.encoder_frozen) + ([] if self.trainable else list(self.encoder_trainable))

    def call(self, images, training=None):
        training = bool(training) if training is not None and not tf.is_tensor(training) else False
        return self.encoder(images, training=training and self.trainable)


def warmup_inputs(encoder: ItemEncoder, images_uint8: np.ndarray) -> list:
    """[(signature, inputs)]: one request with a catalogue image."""
    x = to_model_input(np.asarray(images_uint8[:1]))
    return [(S.SERVING_DEFAULT, {S.IMAGES: x})]
