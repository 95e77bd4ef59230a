"""The ``designer`` SavedModel: generation, personalised design and prototype modification.

``DesignerModule`` (a ``tf.Module``) bundles the conditional GAN's generator G and
discriminator D, the recommender's item tower Phi and user vectors theta, a
user-id table and the GAN's category names. The latent optimisation runs inside
the graph: ``tfmodels.design_search.build_design_fn`` / ``build_modify_fn`` (a
``tf.while_loop`` whose body takes a gradient of the objective with a
``GradientTape`` and applies Adam written out on plain tensors, no optimizer
variables), so one Predict call returns finished designs.

Signatures (keys from ``export.signatures``):

* ``generate``: category string [], n int32 [], seed int32 [] ->
  image uint8 [n, H, W, 3], png_bytes string [n]. z ~ stateless_normal([n, D], seed=[seed, 0]).
* ``design``: user_id string [], category string [], starts int32 [], steps int32 [],
  eta float32 [], seed int32 [] -> image uint8 [starts, H, W, 3], png_bytes string [starts],
  score float32 [starts]: ``starts`` random codes, ``steps`` Adam steps on z maximising
  ``theta_u . Phi(up(G(z, c))) - eta * (D(G(z, c), c) - 1)^2``; rows sorted best
  objective first; score = theta_u . Phi(up(image)). Same inputs => same output.
* ``modify``: user_id string [B], image_bytes string [B], category string [B],
  steps int32 [], eta float32 [] -> image, png_bytes, score [B] (the modified image)
  and score_before [B] (the unmodified image, decoded to the GAN's size and scored
  the same way). Per row: L1 GAN inversion of the image (``invert_starts`` starts,
  ``invert_steps`` steps, both fixed at export from the Designer's ``config``),
  then ``steps`` Adam steps on the design objective minus ``proximity *
  mean |G(z, c) - image|``.

Categories are addressed by name, case-insensitively (a decimal index such as "2"
works too); the learning rate, latent constraint, category term (its classifier is
saved in the SavedModel), trust radius, smoothed score, realism floor (its thresholds are constants in the
graph), inversion settings and proximity come from the
Designer's ``config`` (by default the GAN work directory's ``design`` section, see
``tfmodels.design.build_designer``) and are written in the model card.

Bad inputs are INVALID_ARGUMENT errors with a message: unknown user id (here an
error, unlike the recommender's ``known`` flag: a design for nobody has no
meaning), unknown category name (the message lists the known ones), empty or
mismatched batches, corrupt image bytes, and out-of-range numbers: ``n``,
``starts`` and ``modify``'s rows in [1, MAX_IMAGES], ``steps`` in [0, MAX_STEPS],
``eta`` finite and >= 0 (limits from ``export.signatures``).
"""

from __future__ import annotations

import tfmodels  # noqa: F401  (tf-keras before TensorFlow)

import types

import numpy as np
import tensorflow as tf

from export import signatures as S
from export.recommender import check_batch, check_same_length, decode_images, input_signature, string_table
from tfmodels import design as design_lib
from tfmodels import design_search
from tfmodels.data.pixels import to_model_input, to_uint8

MAX_IMAGES = S.MAX_IMAGES
"""Most images one ``generate`` / ``design`` call may ask for (n, starts)."""
MAX_STEPS = S.MAX_STEPS
"""Most Adam steps one ``design`` / ``modify`` call may ask for."""


def _png(images_uint8: tf.Tensor) -> tf.Tensor:
    return tf.map_fn(tf.io.encode_png, images_uint8, fn_output_signature=tf.TensorSpec([], tf.string))


class DesignerModule(tf.Module):
    """Conditional GAN + recommender as a served design model (signatures in the module docstring)."""

    def __init__(self, generator: tf.keras.Model, discriminator: tf.keras.Model, item_tower: tf.keras.Model,
                 user_vectors: np.ndarray, user_ids, category_names, rec_resolution: int, loss: str = "lsgan",
                 learning_rate: float = 0.1, invert_starts: int = 4, invert_steps: int = 200,
                 proximity: float = 1.0, name: str = S.DESIGNER, **objective):
        """``objective``: the design objective's graph-changing options, keyword arguments of
        ``tfmodels.design_search.DesignObjective`` (latent, classifier, category_weight, trust_radius, smooth,
        floor_weight, floor_thresholds; ``tfmodels.design.objective_options`` gives a Designer's), passed
        unchanged to the search builders."""
        super().__init__(name=name)
        user_vectors = np.asarray(user_vectors, np.float32)
        if len(user_ids) != len(user_vectors):
            raise ValueError(f"{len(user_ids)} user ids for {len(user_vectors)} user vectors")
        names = [str(n) for n in category_names]
        if len(names) != int(generator.inputs[1].shape[-1]):
            raise ValueError(f"{len(names)} category names for a generator with {generator.inputs[1].shape[-1]} "
                             "categories")
        self.generator = generator
        self.discriminator = discriminator
        self.item_tower = item_tower
        self.rec_resolution = int(rec_resolution)
        self.gan_resolution = int(generator.outputs[0].shape[1])
        self.noise_dim = int(generator.inputs[0].shape[-1])
        self.num_categories = len(names)
        self.category_names = tuple(names)
        self.loss = loss
        self.learning_rate = float(learning_rate)
        self.invert_starts = int(invert_starts)
        self.invert_steps = int(invert_steps)
        self.proximity = float(proximity)
        self.user_vectors = tf.Variable(user_vectors, trainable=False, name="user_vectors")
        self.user_table = string_table(user_ids, "user_ids")
        lowered = [n.lower() for n in names]
        if len(set(lowered)) != len(lowered):
            raise ValueError(f"category names are not unique ignoring case: {names}")
        # Names and decimal indices ("0", "1", ...) both map to the index.
        keys = lowered + [str(i) for i in range(len(names)) if str(i) not in lowered]
        values = list(range(len(names))) + [i for i in range(len(names)) if str(i) not in lowered]
        self.category_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.constant(values, tf.int32)),
            default_value=-1, name="category_names")
        self._known_categories = ", ".join(names)
        # The in-graph optimisation of tfmodels.design, wrapped unchanged. A plain
        # namespace is not tracked, so they are not saved as extra module functions.
        build_args = (generator, discriminator, item_tower, self.rec_resolution, loss)
        self._fns = types.SimpleNamespace(design=design_search.build_design_fn(*build_args, **objective),
                                          modify=design_search.build_modify_fn(*build_args, **objective))
        # The objective as it was built (checked and normalised), for the model card; its classifier, when the
        # category term uses one, is tracked here so that the SavedModel holds it.
        built = design_search.DesignObjective(*build_args, **objective)
        self.classifier = built.classifier
        self._objective_settings = {
            "latent": built.latent, "category_weight": built.category_weight, "trust_radius": built.trust_radius,
            "smooth": built.smooth, "floor_weight": built.floor_weight,
            "floor_thresholds": None if built.floor_thresholds is None else built.floor_thresholds.tolist()}

    # -- helpers (graph code)

    def _category(self, category):
        index = self.category_table.lookup(tf.strings.lower(tf.strings.strip(category)))
        check = tf.debugging.Assert(
            tf.reduce_all(index >= 0),
            [f"{S.CATEGORY}: unknown category name; the designer knows: {self._known_categories}. Got:",
             tf.boolean_mask(tf.reshape(category, [-1]), tf.reshape(index < 0, [-1]))], summarize=10)
        with tf.control_dependencies([check]):
            return tf.identity(index)

    def _user_vectors(self, user_id):
        row = self.user_table.lookup(user_id)
        check = tf.debugging.Assert(
            tf.reduce_all(row >= 0),
            [f"{S.USER_ID}: unknown user id(s):", tf.boolean_mask(tf.reshape(user_id, [-1]), tf.reshape(row < 0, [-1]))],
            summarize=10)
        with tf.control_dependencies([check]):
            return tf.gather(self.user_vectors, tf.maximum(row, 0))

    @staticmethod
    def _in_range(name, value, low, high):
        return [tf.debugging.assert_greater_equal(value, tf.cast(low, value.dtype),
                                                  message=f"{name} must be between {low} and {high}"),
                tf.debugging.assert_less_equal(value, tf.cast(high, value.dtype),
                                               message=f"{name} must be between {low} and {high}")]

    @staticmethod
    def _checked(values, checks):
        """``values`` usable only once ``checks`` passed: nothing is sized or looped from an unchecked
        number (an assert alone runs beside the ops that read the same input)."""
        with tf.control_dependencies(checks):
            return [tf.identity(v) for v in values]

    @staticmethod
    def _check_eta(eta):
        return [tf.debugging.assert_all_finite(eta, message=f"{S.ETA} must be a finite number"),
                tf.debugging.assert_non_negative(eta, message=f"{S.ETA} must be >= 0")]

    # -- signatures

    @tf.function(input_signature=input_signature(S.DESIGNER, S.GENERATE))
    def generate(self, category, n, seed):
        (n,) = self._checked([n], self._in_range(S.N, n, 1, MAX_IMAGES))
        c = self._category(category)
        z = tf.random.stateless_normal(tf.stack([n, self.noise_dim]), seed=tf.stack([seed, 0]))
        onehot = tf.one_hot(tf.fill(tf.reshape(n, [1]), c), self.num_categories, dtype=tf.float32)
        image = to_uint8(self.generator([z, onehot], training=False))
        return {S.OUT_IMAGE: image, S.OUT_PNG: _png(image)}

    @tf.function(input_signature=input_signature(S.DESIGNER, S.DESIGN))
    def design(self, user_id, category, starts, steps, eta, seed):
        checks = (self._in_range(S.STARTS, starts, 1, MAX_IMAGES) + self._in_range(S.STEPS, steps, 0, MAX_STEPS)
                  + self._check_eta(eta))
        starts, steps, eta = self._checked([starts, steps, eta], checks)
        with tf.control_dependencies(checks):
            theta = self._user_vectors(user_id[None])[0]
            c = self._category(category)
        out = self._fns.design(theta, c, starts, steps, eta, tf.constant(self.learning_rate), seed)
        order = tf.argsort(out["objective"], direction="DESCENDING", stable=True)
        image = to_uint8(tf.gather(out["images"], order))
        return {S.OUT_IMAGE: image, S.OUT_PNG: _png(image), S.OUT_SCORE: tf.gather(out["score"], order)}

    @tf.function(input_signature=input_signature(S.DESIGNER, S.MODIFY))
    def modify(self, user_id, image_bytes, category, steps, eta):
        checks = (check_batch(S.USER_ID, user_id)
                  + [tf.debugging.assert_less_equal(tf.size(user_id), MAX_IMAGES,
                                                    message=f"modify: at most {MAX_IMAGES} rows per call")]
                  + check_same_length(S.USER_ID, user_id, S.IMAGE_BYTES, image_bytes)
                  + check_same_length(S.USER_ID, user_id, S.CATEGORY, category)
                  + self._in_range(S.STEPS, steps, 0, MAX_STEPS) + self._check_eta(eta))
        image_bytes, steps, eta = self._checked([image_bytes, steps, eta], checks)
        with tf.control_dependencies(checks):
            theta = self._user_vectors(user_id)
            c = self._category(category)
        target = to_model_input(decode_images(image_bytes, self.gan_resolution))
        fn = self._fns.modify
        starts, invert_steps = tf.constant(self.invert_starts), tf.constant(self.invert_steps)
        proximity, lr, seed = tf.constant(self.proximity), tf.constant(self.learning_rate), tf.constant(0)

        def one(args):
            theta_b, image_b, c_b = args
            out = fn(theta_b, image_b, c_b, starts, invert_steps, steps, eta, proximity, lr, seed)
            return out["after"], out["score_after"], out["score_original"]

        R = self.gan_resolution
        after, score, before = tf.map_fn(
            one, (theta, target, c),
            fn_output_signature=(tf.TensorSpec([R, R, 3], tf.float32), tf.TensorSpec([], tf.float32),
                                 tf.TensorSpec([], tf.float32)))
        image = to_uint8(after)
        return {S.OUT_IMAGE: image, S.OUT_PNG: _png(image), S.OUT_SCORE: score, S.OUT_SCORE_BEFORE: before}

    def signatures(self) -> dict:
        return {
            S.GENERATE: self.generate.get_concrete_function(),
            S.DESIGN: self.design.get_concrete_function(),
            S.MODIFY: self.modify.get_concrete_function(),
        }

    def settings(self) -> dict:
        """The fixed settings of the signatures (for the model card)."""
        return {"category_names": list(self.category_names), "gan_resolution": self.gan_resolution,
                "rec_resolution": self.rec_resolution, "noise_dim": self.noise_dim, "loss": self.loss,
                "learning_rate": self.learning_rate, "invert_starts": self.invert_starts,
                "invert_steps": self.invert_steps, "proximity": self.proximity, **self._objective_settings,
                "max_images": MAX_IMAGES, "max_steps": MAX_STEPS}


def build_designer_module(designer) -> DesignerModule:
    """A ``DesignerModule`` from a ``tfmodels.design.Designer`` (``tfmodels.design.build_designer``).

    The fixed settings of the signatures (learning rate, inversion starts and steps, proximity, and the
    objective's graph-changing options of ``tfmodels.design.objective_options``: latent constraint,
    category term, trust radius, smoothed score, realism floor with its per-category thresholds) are the Designer's
    ``config``; ``design`` and ``modify`` take steps and eta per request.
    """
    d = designer.config
    return DesignerModule(designer.generator, designer.discriminator, designer.item_tower,
                          designer.user_vectors, designer.dataset.user_ids, designer.category_names,
                          designer.rec_resolution, designer.loss, learning_rate=d.learning_rate,
                          invert_starts=d.starts, invert_steps=d.invert_steps, proximity=d.proximity,
                          **design_lib.objective_options(designer))


def warmup_inputs(module: DesignerModule, user_id: str, image_png: bytes) -> list:
    """[(signature, inputs)] for the warm-up file: one small valid request per signature."""
    cat = module.category_names[0].encode()
    u = str(user_id).encode()
    return [
        (S.GENERATE, {S.CATEGORY: np.array(cat, dtype=object), S.N: np.int32(1), S.SEED: np.int32(0)}),
        (S.DESIGN, {S.USER_ID: np.array(u, dtype=object), S.CATEGORY: np.array(cat, dtype=object),
                    S.STARTS: np.int32(1), S.STEPS: np.int32(1), S.ETA: np.float32(1.0), S.SEED: np.int32(0)}),
        (S.MODIFY, {S.USER_ID: np.array([u], dtype=object), S.IMAGE_BYTES: np.array([image_png], dtype=object),
                    S.CATEGORY: np.array([cat], dtype=object), S.STEPS: np.int32(1), S.ETA: np.float32(1.0)}),
    ]
