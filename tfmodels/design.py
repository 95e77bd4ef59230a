"""Personalised design in the GAN's latent space: preference maximisation and prototype modification.

Preference maximisation (Kang et al. 2017, section IV): for a user vector
``theta_u`` [K] and a category c, start from R random codes z ~ N(0, I) and
run S steps of Adam on z only (the networks stay fixed), *maximising*

    f(z) = theta_u . Phi(up(G(z, c))) - eta * (D(G(z, c), c) - 1)^2

where ``Phi`` is the recommender's item tower, ``up`` a bilinear resize from
the GAN's resolution to the recommender's input size, and the second term (the
LSGAN realism penalty, ``softplus(-D)`` for a non-saturating GAN) keeps designs
looking like real items. The R starts are independent: the gradient of
``sum_r f(z_r)`` with respect to z_r is the gradient of f(z_r).

Optionally (not in the paper) a *category term* keeps designs in their
category: ``- kappa * CE(classifier(up(G(z, c))), c)`` with a category classifier
trained on the catalogue (``tfmodels train classifier``) and ``kappa =
design.category_weight``. The discriminator alone holds the category only loosely:
it is trained on real images with their true category only, so it ranks images
by category poorly.

``latent`` chooses where z may go: ``"free"`` (plain Adam, as in the paper) or
``"sphere"`` (after every Adam step each code is rescaled to the norm of its
random start, so the search turns z on the shell where N(0, I) puts nearly all
its mass instead of pushing it to norms the generator never saw in training).

Two optional guards keep the search on the image manifold (neither is in the paper; both off by
default). A *trust region* (``design.trust_radius`` = t > 0) caps how far each code may move from
its start z0: after every Adam step (and the sphere's rescaling) z is projected back onto
``||z - z0|| <= t * ||z0||``; under ``"sphere"`` that ball meets the shell in a spherical cap, and z is
turned towards z0 in the plane of the two until its angle to z0 is ``2 asin(t / 2)`` (the same chord).
A *realism floor* (``design.realism_floor`` = q in (0, 1]) adds the hinge

    - lambda * relu(realism(z) - tau_c),   lambda = design.floor_weight,

where tau_c is the q-quantile of the realism penalty D gives real images of category c
(``Designer.realism_thresholds``: the catalogue at the GAN's resolution). Below tau_c the design
objective is unchanged, so designs move freely while D finds them as real as typical real items; above
it the hinge (an exact penalty: with lambda above the constraint's Lagrange multiplier the constrained
optimum is a stationary point of the penalised objective) pushes them back. It is a penalty, not a
projection: a step may overshoot tau_c, a start D already finds less real than tau_c is first pushed
towards the floor, and Adam's second-moment estimate remembers the hinge's large gradient, so a
design's steps stay short for a while after it touched the floor.

Prototype modification: given an item image x (float [-1, 1] at the GAN's
resolution) and its category, first invert the GAN: R starts of Adam on z
minimising ``mean |G(z, c) - x|`` (L1), keep the best start; then, from there,
maximise ``f(z) - proximity * mean |G(z, c) - x|`` for S steps (the trust region, if any, centred on the
inverted code; the inversion itself is unconstrained but for the latent choice).

Everything runs inside one ``tf.function`` per builder (``build_design_fn``,
``build_modify_fn``) whose loop is a ``tf.while_loop`` with a gradient tape in
its body and Adam written out on plain tensors (no optimizer variables), so the
export module can wrap these functions as SavedModel signatures unchanged.
Networks are called with ``training=False`` (moving averages in G's batch norm,
no dropout in the item tower).

:class:`Designer` is the model object on top: a trained recommender + GAN pair
addressed by the dataset's user and item ids and the GAN's category names, with
``design``, ``modify`` and ``generate`` methods that run those functions eagerly
and return NumPy arrays. :func:`build_designer` assembles one from two work
directories; its design settings (a ``DesignConfig``, held as ``designer.config``)
come from, in increasing precedence: the ``DesignConfig`` defaults, what the GAN
run recorded in its config.json (``design`` section, for runs that tuned them
there), a whole ``DesignConfig`` passed as ``build_designer(design=...)`` (used
instead of the recorded one), and keyword overrides of a single call
(``designer.design(user, category, eta=0.1)``, which is how the CLI flags apply).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from tfmodels.config import LATENTS, DesignConfig
from tfmodels.data.pixels import embed_in_batches, resize_to, to_model_input, to_uint8
from tfmodels.models import gan as gan_lib
from tfmodels.models.classifier import cross_entropy_per_example

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


def _project_trust_region(z: tf.Tensor, z0: tf.Tensor, trust_radius: float, latent: str) -> tf.Tensor:
    """z with every row brought back to ``||z - z0|| <= trust_radius * ||z0||`` (rows already inside untouched).

    ``"free"``: the nearest point of the ball, ``z0 + (z - z0) * r / ||z - z0||``. ``"sphere"`` (z and z0
    of equal norm rho): the ball's intersection with the shell is the cap of angle
    ``theta = 2 asin(t / 2)`` around z0, and z is turned towards z0 in their common plane to that angle:
    ``rho * (cos(theta) z0 / rho + sin(theta) u / ||u||)``, u = the part of z orthogonal to z0.
    """
    rho = tf.norm(z0, axis=1, keepdims=True)
    dist = tf.norm(z - z0, axis=1, keepdims=True)
    limit = trust_radius * rho
    if latent == "sphere":
        if trust_radius >= 2.0:  # the whole shell is within the chord
            return z
        theta = 2.0 * np.arcsin(trust_radius / 2.0)
        unit0 = z0 / tf.maximum(rho, _EPS)
        ortho = z - tf.reduce_sum(z * unit0, axis=1, keepdims=True) * unit0
        unit = ortho / tf.maximum(tf.norm(ortho, axis=1, keepdims=True), _EPS)
        inside = rho * (np.cos(theta) * unit0 + np.sin(theta) * unit)
    else:
        inside = z0 + (z - z0) * (limit / tf.maximum(dist, _EPS))
    # tf.where, not a scale factor of 1: rows inside the region keep their exact values.
    return tf.where(dist > limit, inside, z)


def _adam_loop(value_fn, z0: tf.Tensor, steps: tf.Tensor, learning_rate: tf.Tensor, maximise: bool,
               latent: str = "free", trust_radius: float = 0.0):
    """Runs Adam on z for ``steps`` steps inside a tf.while_loop.

    Args:
      value_fn: z [R, D] -> per-start values [R] (independent per row).
      z0: starting codes [R, D].
      steps: int32 scalar tensor.
      learning_rate: float32 scalar tensor.
      maximise: ascend (True) or descend (False).
      latent: "free", or "sphere" to rescale every row of z to its norm in z0 after each step.
      trust_radius: t > 0 projects every row back to ``||z - z0|| <= t * ||z0||`` after each step
        (``_project_trust_region``); 0 = no cap.

    Returns:
      (z after the last step [R, D], history float32 [steps + 1, R] of the values
      at every visited z, the last row being the final z).
    """
    sign = -1.0 if maximise else 1.0
    steps = tf.cast(steps, tf.int32)
    lr = tf.cast(learning_rate, tf.float32)
    history = tf.TensorArray(tf.float32, size=steps + 1, element_shape=z0.shape[:1])
    radius = tf.norm(z0, axis=1, keepdims=True)

    def body(t, z, m, v, history):
        with tf.GradientTape() as tape:
            tape.watch(z)
            values = value_fn(z)
            total = tf.reduce_sum(values)
        grad = sign * tape.gradient(total, z)
        m = _BETA1 * m + (1.0 - _BETA1) * grad
        v = _BETA2 * v + (1.0 - _BETA2) * tf.square(grad)
        tf1 = tf.cast(t + 1, tf.float32)
        m_hat = m / (1.0 - tf.pow(_BETA1, tf1))
        v_hat = v / (1.0 - tf.pow(_BETA2, tf1))
        z = z - lr * m_hat / (tf.sqrt(v_hat) + _EPS)
        if latent == "sphere":
            z = z * (radius / tf.maximum(tf.norm(z, axis=1, keepdims=True), _EPS))
        if trust_radius > 0:
            z = _project_trust_region(z, z0, trust_radius, latent)
        return t + 1, z, m, v, history.write(t, values)

    _, z, _, _, history = tf.while_loop(
        lambda t, *_: t < steps, body,
        (tf.constant(0), z0, tf.zeros_like(z0), tf.zeros_like(z0), history))
    history = history.write(steps, value_fn(z))
    return z, history.stack()


class DesignObjective:
    """The pieces of the design objective, bound to a generator, discriminator and item tower
    (and optionally a category classifier).

    ``terms(z, c_onehot, user_vector)`` returns (images [R,H,W,3] in [-1,1],
    score = theta_u . Phi(up(G)) [R], realism penalty [R], off-category penalty [R]
    = the classifier's cross-entropy for c, zeros without a classifier, over-floor [R] =
    relu(realism - tau_c), zeros without a realism floor);
    ``value(score, realism, off, over, eta)`` combines them into the objective
    ``score - eta * realism - category_weight * off - floor_weight * over`` (the hinge left out of
    the graph when floor_weight is 0). ``trust_radius`` is the cap ``_adam_loop`` projects onto.
    """

    def __init__(self, generator, discriminator, item_tower, rec_resolution: int, loss: str = "lsgan",
                 latent: str = "free", classifier=None, category_weight: float = 0.0, trust_radius: float = 0.0,
                 floor_weight: float = 0.0, floor_thresholds=None):
        if loss not in gan_lib.LOSSES:
            raise ValueError(f"loss={loss!r}: choose one of {gan_lib.LOSSES}")
        if latent not in LATENTS:
            raise ValueError(f"design.latent={latent!r}: choose one of {LATENTS}")
        if category_weight < 0 or (category_weight > 0 and classifier is None):
            raise ValueError(f"design.category_weight={category_weight}: must be >= 0, and > 0 needs a category "
                             "classifier (design.classifier_from / --classifier-workdir)")
        num_categories = int(generator.inputs[1].shape[-1])
        if classifier is not None and int(classifier.num_categories) != num_categories:
            raise ValueError(f"the category classifier knows {classifier.num_categories} categories, "
                             f"the GAN {num_categories}")
        if not trust_radius >= 0:
            raise ValueError(f"design.trust_radius={trust_radius}: must be >= 0 (0 = no cap)")
        if not floor_weight >= 0:
            raise ValueError(f"design.floor_weight={floor_weight}: must be >= 0")
        if floor_weight > 0:
            if floor_thresholds is None:
                raise ValueError("a realism floor needs its per-category thresholds tau_c "
                                 "(Designer.realism_thresholds)")
            floor_thresholds = np.asarray(floor_thresholds, np.float32).reshape(-1)
            if floor_thresholds.shape != (num_categories,) or not np.all(np.isfinite(floor_thresholds)):
                raise ValueError(f"realism floor: need {num_categories} finite thresholds (one per category), "
                                 f"got {floor_thresholds.tolist()}")
        self.trust_radius = float(trust_radius)
        self.floor_weight = float(floor_weight)
        self.floor_thresholds = floor_thresholds if self.floor_weight > 0 else None
        self.classifier = classifier if category_weight > 0 else None
        self.category_weight = float(category_weight)
        self.generator = generator
        self.discriminator = discriminator
        self.item_tower = item_tower
        self.rec_resolution = int(rec_resolution)
        self.loss = loss
        self.noise_dim = int(generator.inputs[0].shape[-1])
        self.num_categories = num_categories

    def score(self, images: tf.Tensor, user_vector: tf.Tensor) -> tf.Tensor:
        """theta_u . Phi(up(images)) for float [-1, 1] images [R, H, W, 3] -> [R]."""
        phi = self.item_tower(resize_to(images, self.rec_resolution), training=False)
        return tf.linalg.matvec(tf.cast(phi, tf.float32), tf.cast(user_vector, tf.float32))

    def terms(self, z, c_onehot, user_vector):
        images = self.generator([z, c_onehot], training=False)
        score = self.score(images, user_vector)
        realism = gan_lib.realism_penalty(self.discriminator([images, c_onehot], training=False), self.loss)
        if self.floor_thresholds is None:
            over = tf.zeros_like(score)
        else:
            tau = tf.linalg.matvec(tf.cast(c_onehot, tf.float32), tf.constant(self.floor_thresholds))
            over = tf.nn.relu(realism - tau)
        if self.classifier is None:
            return images, score, realism, tf.zeros_like(score), over
        logits = self.classifier(resize_to(images, int(self.classifier.resolution)), training=False)
        off = cross_entropy_per_example(tf.argmax(c_onehot, axis=-1, output_type=tf.int32), tf.cast(logits, tf.float32))
        return images, score, realism, off, over

    def value(self, score, realism, off, over, eta):
        value = score - eta * realism - self.category_weight * off
        if self.floor_weight > 0:
            value = value - self.floor_weight * over
        return value

    def _codes_and_category(self, category, starts, seed, salt):
        starts = tf.cast(starts, tf.int32)
        z0 = tf.random.stateless_normal(tf.stack([starts, self.noise_dim]),
                                        seed=tf.stack([tf.cast(seed, tf.int32), salt]))
        z0 = tf.ensure_shape(z0, [None, self.noise_dim])
        c = gan_lib.onehot(tf.fill(tf.reshape(starts, [1]), tf.cast(category, tf.int32)), self.num_categories)
        return z0, c


def build_design_fn(generator, discriminator, item_tower, rec_resolution: int, loss: str = "lsgan",
                    latent: str = "free", classifier=None, category_weight: float = 0.0, trust_radius: float = 0.0,
                    floor_weight: float = 0.0, floor_thresholds=None):
    """Returns a tf.function doing preference maximisation for one user and one category.

    ``design_fn(user_vector float32 [K], category int32 [], starts int32 [],
    steps int32 [], eta float32 [], learning_rate float32 [], seed int32 [])``
    returns a dict (R = starts, S = steps, all in graph):

    * ``images`` float32 [R, H, W, 3] in [-1, 1] after S Adam steps,
    * ``score`` [R] = theta_u . Phi(up(images)) (the recommender's opinion),
    * ``realism`` [R] = (D - 1)^2 (or softplus(-D)),
    * ``off_category`` [R] = the classifier's cross-entropy for the category (zeros without one),
    * ``over_floor`` [R] = relu(realism - tau_c) (zeros without a realism floor),
    * ``objective`` [R] = score - eta * realism - category_weight * off_category - floor_weight * over_floor,
    * ``history`` [S + 1, R] objective at every visited z (row 0 = the random start),
    * ``z`` [R, noise_dim], ``z0`` [R, noise_dim] the random starts.

    The graph-changing settings are arguments here (``DesignObjective``): the latent choice, the
    category term, the trust region (``trust_radius``) and the realism floor (``floor_weight`` with
    ``floor_thresholds`` float [C], baked into the graph as constants). Rows are in start order (not
    sorted). The starting codes are ``stateless_normal([R, noise_dim], seed=[seed, 0])``, so a seed
    reproduces a design.
    """
    obj = DesignObjective(generator, discriminator, item_tower, rec_resolution, loss, latent, classifier,
                          category_weight, trust_radius, floor_weight, floor_thresholds)

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.float32, name="user_vector"),
        tf.TensorSpec([], tf.int32, name="category"),
        tf.TensorSpec([], tf.int32, name="starts"),
        tf.TensorSpec([], tf.int32, name="steps"),
        tf.TensorSpec([], tf.float32, name="eta"),
        tf.TensorSpec([], tf.float32, name="learning_rate"),
        tf.TensorSpec([], tf.int32, name="seed"),
    ])
    def design_fn(user_vector, category, starts, steps, eta, learning_rate, seed):
        z0, c = obj._codes_and_category(category, starts, seed, 0)

        def objective(z):
            _, score, realism, off, over = obj.terms(z, c, user_vector)
            return obj.value(score, realism, off, over, eta)

        z, history = _adam_loop(objective, z0, steps, learning_rate, maximise=True, latent=latent,
                                trust_radius=obj.trust_radius)
        images, score, realism, off, over = obj.terms(z, c, user_vector)
        return {"images": images, "score": score, "realism": realism, "off_category": off, "over_floor": over,
                "objective": obj.value(score, realism, off, over, eta), "history": history, "z": z, "z0": z0}

    return design_fn


def build_modify_fn(generator, discriminator, item_tower, rec_resolution: int, loss: str = "lsgan",
                    latent: str = "free", classifier=None, category_weight: float = 0.0, trust_radius: float = 0.0,
                    floor_weight: float = 0.0, floor_thresholds=None):
    """Returns a tf.function doing prototype modification of one item image for one user.

    ``modify_fn(user_vector float32 [K], image float32 [H, W, 3] in [-1, 1] at the
    GAN's resolution, category int32 [], starts int32 [], invert_steps int32 [],
    steps int32 [], eta float32 [], proximity float32 [], learning_rate float32 [],
    seed int32 [])`` returns a dict:

    * ``before`` [H, W, 3]: G(z0, c), the best of R L1 inversions of the image,
    * ``after`` [H, W, 3]: G(z, c) after S steps maximising
      ``theta_u . Phi(up(G)) - eta * realism - proximity * mean|G - image|`` (with the optional terms and
      trust region of ``build_design_fn``, the region centred on the inverted code),
    * ``score_original`` / ``score_before`` / ``score_after`` (scalars):
      theta_u . Phi(up(.)) of the item image, of ``before`` and of ``after``,
    * ``l1_before`` / ``l1_after``: mean |G - image| of ``before`` / ``after``,
    * ``invert_history`` [invert_steps + 1, R] L1 per start, ``history`` [S + 1, 1] objective,
    * ``z_before`` / ``z_after`` [noise_dim]: the inverted code and the modified one.
    """
    obj = DesignObjective(generator, discriminator, item_tower, rec_resolution, loss, latent, classifier,
                          category_weight, trust_radius, floor_weight, floor_thresholds)
    res = int(generator.outputs[0].shape[1])

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.float32, name="user_vector"),
        tf.TensorSpec([res, res, 3], tf.float32, name="image"),
        tf.TensorSpec([], tf.int32, name="category"),
        tf.TensorSpec([], tf.int32, name="starts"),
        tf.TensorSpec([], tf.int32, name="invert_steps"),
        tf.TensorSpec([], tf.int32, name="steps"),
        tf.TensorSpec([], tf.float32, name="eta"),
        tf.TensorSpec([], tf.float32, name="proximity"),
        tf.TensorSpec([], tf.float32, name="learning_rate"),
        tf.TensorSpec([], tf.int32, name="seed"),
    ])
    def modify_fn(user_vector, image, category, starts, invert_steps, steps, eta, proximity,
                  learning_rate, seed):
        z0, c = obj._codes_and_category(category, starts, seed, 1)
        target = image[None]

        def l1(z):
            return tf.reduce_mean(tf.abs(generator([z, c], training=False) - target), axis=[1, 2, 3])

        z_inv, invert_history = _adam_loop(l1, z0, invert_steps, learning_rate, maximise=False, latent=latent)
        best = tf.argmin(invert_history[-1])
        z_start = z_inv[best][None]
        c1 = c[:1]

        def objective(z):
            images, score, realism, off, over = obj.terms(z, c1, user_vector)
            dist = tf.reduce_mean(tf.abs(images - target), axis=[1, 2, 3])
            return obj.value(score, realism, off, over, eta) - proximity * dist

        z_end, history = _adam_loop(objective, z_start, steps, learning_rate, maximise=True, latent=latent,
                                    trust_radius=obj.trust_radius)
        before = generator([z_start, c1], training=False)
        after = generator([z_end, c1], training=False)
        scores = obj.score(tf.concat([target, before, after], 0), user_vector)
        return {
            "before": before[0], "after": after[0],
            "score_original": scores[0], "score_before": scores[1], "score_after": scores[2],
            "l1_before": tf.reduce_mean(tf.abs(before - target)),
            "l1_after": tf.reduce_mean(tf.abs(after - target)),
            "invert_history": invert_history, "history": history, "z_before": z_start[0], "z_after": z_end[0],
        }

    return modify_fn


@dataclass
class DesignResult:
    """Output of ``Designer.design``; unpacks as ``images, scores, history``.

    Rows are sorted by final objective, best first.
    """

    images: np.ndarray
    """uint8 [R, H, W, 3] designed images at the GAN's resolution."""
    scores: np.ndarray
    """float32 [R]: theta_u . Phi(up(image)), the recommender's score."""
    history: np.ndarray
    """float32 [S + 1, R]: objective at each step (columns in the sorted order)."""
    objective: np.ndarray
    """float32 [R]: final objective, score - eta * realism - category_weight * off_category
    - floor_weight * over_floor."""
    realism: np.ndarray
    """float32 [R]: realism penalty (D - 1)^2 (softplus(-D) for a non-saturating GAN)."""
    off_category: np.ndarray
    """float32 [R]: the category classifier's cross-entropy for the category (zeros without one)."""
    z: np.ndarray
    """float32 [R, noise_dim] final codes."""
    z0: np.ndarray
    """float32 [R, noise_dim] their random starts (same rows)."""
    over_floor: np.ndarray
    """float32 [R]: relu(realism - tau_c), how far D finds a design less real than the floor (zeros without one)."""
    settings: DesignConfig
    """The design settings this call used (the Designer's ``config`` with the call's overrides)."""
    true_scores: np.ndarray | None = None
    """float32 [R]: on a simulated world, the simulated user's true preference for each design; else None."""

    def __iter__(self):
        return iter((self.images, self.scores, self.history))


# Fields a call may override; classifier_from is not one: the classifier is loaded when the Designer is built.
_CALL_SETTINGS = tuple(f.name for f in dataclasses.fields(DesignConfig) if f.name != "classifier_from")


@dataclass
class Designer:
    """A trained recommender + conditional GAN pair that designs items for users.

    Users and items are addressed by the recommender dataset's own ids (or row
    indices, as ints), categories by the GAN's category names (case-insensitive)
    or indices; the two work directories are matched by category name. The
    methods run eagerly on the host and return NumPy arrays; each traces its
    ``tf.function`` (``build_design_fn`` / ``build_modify_fn``) once per setting that
    changes the graph (latent constraint, category weight, trust radius, realism floor) and reuses it.

    Build one with :func:`build_designer` (from work directories) or directly from
    networks (tests, the benchmark's true-taste variant via ``dataclasses.replace``).
    """

    generator: tf.keras.Model
    discriminator: tf.keras.Model
    item_tower: object
    """Phi: float [-1, 1] images [B, rec_resolution, rec_resolution, 3] -> [B, K] (the recommender's CNN)."""
    user_vectors: np.ndarray
    """float32 [num_users, K]: theta_u of every user, rows in ``dataset.user_ids`` order."""
    dataset: object
    """The recommender's Dataset (user_ids, item_ids, categories, extra["users"] if simulated)."""
    images: np.ndarray
    """uint8 [num_items, rec_resolution, rec_resolution, 3]: the catalogue at the recommender's size."""
    category_names: list
    """The GAN's category names, in its index order."""
    rec_resolution: int
    """The item tower's input side."""
    config: DesignConfig = field(default_factory=DesignConfig)
    """The design settings every call starts from (see the module docstring for where they come from)."""
    loss: str = "lsgan"
    """The GAN's loss (chooses the realism penalty)."""
    classifier: object = None
    """The category classifier of the category term (``load_category_classifier``), or None."""
    gan_meta: dict = field(default_factory=dict)
    """The GAN's model.json (step, resolution, ...), for reports."""
    _item_embeddings: np.ndarray | None = field(default=None, init=False, repr=False)
    _fns: dict = field(default_factory=dict, init=False, repr=False)
    _real_realism: np.ndarray | None = field(default=None, init=False, repr=False)
    _thresholds: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.user_vectors = np.asarray(self.user_vectors, np.float32)
        self.category_names = [str(n) for n in self.category_names]
        self.rec_resolution = int(self.rec_resolution)
        if len(self.user_vectors) != len(self.dataset.user_ids):
            raise ValueError(f"Designer: {len(self.user_vectors)} user vectors for {len(self.dataset.user_ids)} "
                             "user ids")
        if len(self.images) != len(self.dataset.item_ids):
            raise ValueError(f"Designer: {len(self.images)} images for {len(self.dataset.item_ids)} item ids")
        if len(self.category_names) != self.num_categories:
            raise ValueError(f"Designer: {len(self.category_names)} category names for a generator with "
                             f"{self.num_categories} categories")

    # -- sizes and lookups

    @property
    def num_categories(self) -> int:
        return int(self.generator.inputs[1].shape[-1])

    @property
    def gan_resolution(self) -> int:
        return int(self.generator.outputs[0].shape[1])

    def user_index(self, user) -> int:
        """Row of a user id (str) in ``user_vectors``; an int is taken as the row itself (range-checked)."""
        return _index_of("user", self.dataset.user_ids, user)

    def item_index(self, item) -> int:
        """Row of an item id (str) in the catalogue; an int is taken as the row itself (range-checked)."""
        return _index_of("item", self.dataset.item_ids, item)

    def category_index(self, category) -> int:
        """GAN category index for a name (case-insensitive), a decimal string or an int index."""
        names = self.category_names
        if isinstance(category, (int, np.integer)) and not isinstance(category, bool):
            if not 0 <= int(category) < len(names):
                raise ValueError(f"category index {int(category)} out of range: the GAN knows {len(names)} "
                                 f"categories ({', '.join(names)})")
            return int(category)
        text = str(category)
        lowered = [n.lower() for n in names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        if text.isdigit() and int(text) < len(names):
            return int(text)
        raise ValueError(f"unknown category {text!r}; the GAN knows: {', '.join(names)}")

    def item_category(self, item) -> int:
        """The GAN category index of catalogue item ``item`` (id or row; matched by category name)."""
        item = self.item_index(item)
        rec_names = list(self.dataset.category_names)
        c = int(self.dataset.categories[item]) if len(self.dataset.categories) else -1
        if c < 0 or c >= len(rec_names):
            if self.category_names == ["all"]:
                return 0
            raise ValueError(f"item {self.dataset.item_ids[item]!r} has no category; pass --category")
        return self.category_index(rec_names[c])

    def items_of_category(self, category) -> np.ndarray:
        """Rows of the catalogue items whose category name is the GAN category ``category``."""
        category = self.category_index(category)
        if self.category_names == ["all"]:
            return np.arange(len(self.images))
        name = self.category_names[category].lower()
        rec_names = [n.lower() for n in self.dataset.category_names]
        if name not in rec_names:
            return np.zeros(0, np.int64)
        return np.flatnonzero(np.asarray(self.dataset.categories) == rec_names.index(name))

    def simulated_users(self):
        """The SimulatedUsers of a simulated world (true preferences), or None."""
        return self.dataset.extra.get("users")

    # -- the catalogue

    def item_embeddings(self) -> np.ndarray:
        """Phi(X_i) of the whole catalogue, float32 [num_items, K] (computed once, in batches, host)."""
        if self._item_embeddings is None:
            self._item_embeddings = np.asarray(embed_in_batches(self.item_tower, self.images), np.float32)
        return self._item_embeddings

    def item_scores(self, user, items=None) -> np.ndarray:
        """theta_u . Phi(X_i) of catalogue items (rows ``items``, default all) for one user: float32 [M]."""
        emb = self.item_embeddings()
        emb = emb if items is None else emb[np.asarray(items, np.int64)]
        return emb @ self.user_vectors[self.user_index(user)]

    # -- what it can do

    def settings(self, **overrides) -> DesignConfig:
        """``self.config`` with ``overrides`` (DesignConfig field names) applied, checked.

        Raises:
          ValueError: an unknown field, ``classifier_from`` (fixed when the Designer is built), or a
            value out of range (starts < 1, steps or invert_steps < 0, eta, proximity or category_weight < 0).
        """
        unknown = sorted(set(overrides) - set(_CALL_SETTINGS))
        if unknown:
            raise ValueError(f"unknown design setting(s) {unknown}; a call may set: {', '.join(_CALL_SETTINGS)}"
                             + (" (the classifier is chosen by build_designer(classifier_workdir=...))"
                                if "classifier_from" in unknown else ""))
        cfg = dataclasses.replace(self.config, **{k: v for k, v in overrides.items() if v is not None})
        for name, low in (("starts", 1), ("steps", 0), ("invert_steps", 0), ("eta", 0), ("proximity", 0),
                          ("category_weight", 0), ("trust_radius", 0), ("floor_weight", 0)):
            if not getattr(cfg, name) >= low:
                raise ValueError(f"design.{name} must be >= {low}, got {getattr(cfg, name)}")
        if not 0 <= cfg.realism_floor <= 1:
            raise ValueError(f"design.realism_floor must be a quantile in (0, 1] (0 = off), got {cfg.realism_floor}")
        return cfg

    def realism_thresholds(self, quantile: float) -> np.ndarray:
        """tau_c of the realism floor: float32 [C], the ``quantile`` of the realism penalty (D - 1)^2
        (softplus(-D) for a non-saturating GAN) over the catalogue's real images of each GAN category,
        brought to the GAN's resolution; a category without catalogue items takes the quantile over
        all of them. Computed once per quantile (host; D in inference mode, in batches)."""
        quantile = float(quantile)
        if not 0 < quantile <= 1:
            raise ValueError(f"realism_thresholds: the quantile must be in (0, 1], got {quantile}")
        if quantile not in self._thresholds:
            penalties = self.real_realism()
            cats = self._catalogue_gan_categories()
            known = cats >= 0
            fallback = np.quantile(penalties[known] if np.any(known) else penalties, quantile)
            self._thresholds[quantile] = np.array(
                [np.quantile(penalties[cats == c], quantile) if np.any(cats == c) else fallback
                 for c in range(self.num_categories)], np.float32)
        return self._thresholds[quantile]

    def real_realism(self) -> np.ndarray:
        """The realism penalty D gives every catalogue image with its own GAN category, float32 [num_items]
        (items of no GAN category are scored as category 0 and ignored by ``realism_thresholds``; computed
        once; images resized to the GAN's resolution)."""
        if self._real_realism is None:
            cats = self._catalogue_gan_categories()
            res, disc, loss, num = self.gan_resolution, self.discriminator, self.loss, self.num_categories
            out = []
            for start in range(0, len(self.images), 256):
                x = resize_to(to_model_input(np.asarray(self.images[start:start + 256])), res)
                c = gan_lib.onehot(np.maximum(cats[start:start + 256], 0), num)
                out.append(gan_lib.realism_penalty(disc([x, c], training=False), loss).numpy())
            self._real_realism = np.concatenate(out).astype(np.float32)
        return self._real_realism

    def generate(self, category, n: int, seed: int = 0) -> np.ndarray:
        """n samples G(z, c), z ~ stateless_normal([n, noise_dim], seed=[seed, 0]): uint8 [n, H, W, 3].

        The same images as the exported designer's ``generate`` signature for the same inputs.
        """
        if n < 1:
            raise ValueError(f"generate: n must be >= 1, got {n}")
        return to_uint8(gan_lib.generate(self.generator, self.category_index(category), int(n), int(seed))).numpy()

    def design(self, user, category, seed: int = 0, **overrides) -> DesignResult:
        """Preference maximisation: ``starts`` designs of ``category`` for ``user`` (``build_design_fn``).

        Maximises ``theta_u . Phi(up(G(z, c))) - eta * realism - category_weight * off_category
        - floor_weight * relu(realism - tau_c)`` (the last term with ``realism_floor`` > 0) over z with ``steps`` Adam steps from ``starts`` random codes seeded by ``seed`` (the module
        docstring has the math). Eager; the optimisation itself runs in one ``tf.function``.

        Args:
          user: the dataset's user id (str) or row (int).
          category: the GAN's category name or index.
          seed: seeds the random starts (a seed reproduces a design).
          **overrides: DesignConfig fields for this call only (eta, starts, steps, learning_rate,
            latent, category_weight, trust_radius, realism_floor, floor_weight); None values are ignored.

        Returns:
          A ``DesignResult``, best objective first; ``true_scores`` are filled on a simulated world.
        """
        row, c = self.user_index(user), self.category_index(category)
        cfg = self.settings(**overrides)
        out = self._fn(build_design_fn, cfg)(
            tf.constant(self.user_vectors[row]), tf.constant(c, tf.int32), tf.constant(int(cfg.starts), tf.int32),
            tf.constant(int(cfg.steps), tf.int32), tf.constant(float(cfg.eta), tf.float32),
            tf.constant(float(cfg.learning_rate), tf.float32), tf.constant(int(seed), tf.int32))
        order = np.argsort(-out["objective"].numpy(), kind="stable")
        images = tf.gather(out["images"], order)
        return DesignResult(
            images=to_uint8(images).numpy(), scores=out["score"].numpy()[order],
            history=out["history"].numpy()[:, order], objective=out["objective"].numpy()[order],
            realism=out["realism"].numpy()[order], off_category=out["off_category"].numpy()[order],
            z=out["z"].numpy()[order], z0=out["z0"].numpy()[order], over_floor=out["over_floor"].numpy()[order],
            settings=cfg, true_scores=self._true_scores(row, images))

    def modify(self, user, item=None, image=None, category=None, seed: int = 0, **overrides) -> dict:
        """Prototype modification: one item changed towards ``user``'s taste (``build_modify_fn``).

        L1 GAN inversion of the item image (``starts`` starts, ``invert_steps`` steps, the best
        kept), then ``steps`` Adam steps maximising the design objective minus
        ``proximity * mean |G(z, c) - image|``.

        Args:
          user: the dataset's user id (str) or row (int).
          item: a catalogue item id (str) or row (int); its image is ``self.images[item]``.
          image: instead of ``item``, an image uint8 [H, W, 3] or float [-1, 1] [H, W, 3], any side
            (resized to the GAN's resolution).
          category: the GAN category (name or index); default: the item's own (needs ``item``).
          seed: seeds the inversion's random starts.
          **overrides: DesignConfig fields for this call only (eta, starts, invert_steps, steps,
            proximity, learning_rate, latent, category_weight, trust_radius, realism_floor, floor_weight).

        Returns:
          dict of NumPy values: ``original``, ``before`` (the inversion), ``after`` (uint8 [H, W, 3]
          at the GAN's resolution), ``score_original``, ``score_before``, ``score_after``,
          ``l1_before``, ``l1_after`` (floats), ``invert_history`` [invert_steps + 1, starts],
          ``history`` [steps + 1, 1], ``z_before`` / ``z_after`` [noise_dim] (the inverted and the modified
          code), ``settings`` (the DesignConfig used), and on a simulated world
          ``true_original``, ``true_before``, ``true_after``.
        """
        if (item is None) == (image is None):
            raise ValueError("modify: give exactly one of item (an id or row) and image")
        row = self.user_index(user)
        if item is not None:
            item = self.item_index(item)
            image = self.images[item]
        if category is None:
            if item is None:
                raise ValueError("modify: an image needs its category (category=...)")
            category = self.item_category(item)
        c = self.category_index(category)
        image = tf.convert_to_tensor(np.asarray(image))
        if image.shape.rank != 3 or image.shape[-1] != 3:
            raise ValueError(f"modify: the image must be [H, W, 3], got shape {image.shape}")
        if image.dtype == tf.uint8:
            image = to_model_input(image)
        image = resize_to(tf.cast(image[None], tf.float32), self.gan_resolution)[0]
        cfg = self.settings(**overrides)
        out = self._fn(build_modify_fn, cfg)(
            tf.constant(self.user_vectors[row]), image, tf.constant(c, tf.int32),
            tf.constant(int(cfg.starts), tf.int32), tf.constant(int(cfg.invert_steps), tf.int32),
            tf.constant(int(cfg.steps), tf.int32), tf.constant(float(cfg.eta), tf.float32),
            tf.constant(float(cfg.proximity), tf.float32), tf.constant(float(cfg.learning_rate), tf.float32),
            tf.constant(int(seed), tf.int32))
        result = {k: (float(v.numpy()) if v.shape.rank == 0 else v.numpy()) for k, v in out.items()}
        result.update(original=to_uint8(image).numpy(), before=to_uint8(out["before"]).numpy(),
                      after=to_uint8(out["after"]).numpy(), settings=cfg)
        true = self._true_scores(row, tf.stack([image, out["before"], out["after"]]))
        if true is not None:
            result.update(true_original=float(true[0]), true_before=float(true[1]), true_after=float(true[2]))
        return result

    # -- internals

    def _fn(self, builder, cfg: DesignConfig):
        # One traced function per builder and per setting that changes the graph; the others are inputs.
        floor = cfg.realism_floor > 0 and cfg.floor_weight > 0
        key = (builder.__name__, cfg.latent, float(cfg.category_weight), float(cfg.trust_radius),
               (float(cfg.realism_floor), float(cfg.floor_weight)) if floor else None)
        if key not in self._fns:
            self._fns[key] = builder(self.generator, self.discriminator, self.item_tower, self.rec_resolution,
                                     self.loss, **objective_options(self, cfg))
        return self._fns[key]

    def _catalogue_gan_categories(self) -> np.ndarray:
        """int [num_items]: each catalogue item's GAN category index (-1 = none the GAN knows)."""
        out = np.full(len(self.images), -1, np.int64)
        for c in range(self.num_categories):
            out[self.items_of_category(c)] = c
        return out

    def _true_scores(self, row: int, images_float):
        """The simulated user's true preference for float [-1, 1] images [N, H, W, 3], or None."""
        users = self.simulated_users()
        if users is None:
            return None
        return np.asarray(users.true_score_tf(tf.fill([tf.shape(images_float)[0]], row), images_float), np.float32)


def objective_options(designer: Designer, cfg: DesignConfig | None = None) -> dict:
    """The graph-changing keyword arguments of ``build_design_fn`` / ``build_modify_fn`` for a Designer's
    settings ``cfg`` (default ``designer.config``): latent, classifier, category_weight, trust_radius,
    and the realism floor's weight with its thresholds (``Designer.realism_thresholds``) when
    ``cfg.realism_floor`` > 0. The one place that turns settings into an objective (eager calls, export)."""
    cfg = designer.config if cfg is None else cfg
    floor = cfg.realism_floor > 0 and cfg.floor_weight > 0
    return {"latent": cfg.latent, "classifier": designer.classifier, "category_weight": float(cfg.category_weight),
            "trust_radius": float(cfg.trust_radius), "floor_weight": float(cfg.floor_weight) if floor else 0.0,
            "floor_thresholds": designer.realism_thresholds(cfg.realism_floor) if floor else None}


def load_category_classifier(workdir: str, category_names):
    """The category classifier in ``workdir`` (``tfmodels train classifier``), checked against the GAN's
    ``category_names`` (same names in the same order, or the category term would push towards the wrong one);
    None when ``workdir`` is empty."""
    from tfmodels.training.classifier import load_classifier
    from tfmodels.workdir import read_model_json

    if not workdir:
        return None

    classifier = load_classifier(workdir)[0]  # checks that it is a classifier
    names = list(read_model_json(workdir).get("category_names", []))
    if [n.lower() for n in names] != [str(n).lower() for n in category_names]:
        raise ValueError(f"category classifier {workdir}: its categories {names} are not the GAN's "
                         f"{list(category_names)} (same names, same order)")
    return classifier


def build_designer(rec_workdir: str, gan_workdir: str, design: DesignConfig | None = None, best: bool = True,
                   classifier_workdir: str | None = None, recommender=None) -> Designer:
    """The one way to assemble a ``Designer`` from a DVBPR and a GAN work directory (host).

    Args:
      rec_workdir: DVBPR work directory, reopened with ``tfmodels.training.recommender.load_dvbpr``.
      gan_workdir: GAN work directory (``tfmodels.training.gan.load_gan``).
      design: the design settings; None = the GAN run's recorded ``design`` section (config.json;
        DesignConfig defaults for fields it lacks). Single calls can still override fields.
      best: the recommender's best-validation checkpoint (else its last).
      classifier_workdir: the category classifier of the category term; None = ``design.classifier_from``,
        "" = none. Its categories must be the GAN's.
      recommender: what ``load_dvbpr(rec_workdir, best)`` returned, when the caller already has it (export),
        so the catalogue is not reopened twice.

    Returns:
      A ``Designer`` whose ``config`` is ``design`` (``config.classifier_from`` names the classifier it holds).
    """
    from tfmodels.training.gan import load_gan
    from tfmodels.training.recommender import load_dvbpr

    generator, discriminator, gan_cfg, meta = load_gan(gan_workdir)
    model, dataset, _split, images = recommender if recommender is not None else load_dvbpr(rec_workdir, best)
    design = copy.deepcopy(gan_cfg.design if design is None else design)
    if classifier_workdir is not None:
        design.classifier_from = classifier_workdir
    classifier = load_category_classifier(design.classifier_from, meta["category_names"])
    return Designer(generator=generator, discriminator=discriminator, item_tower=model.item_tower,
                    user_vectors=model.user_embedding.embeddings.numpy(), dataset=dataset, images=images,
                    category_names=meta["category_names"], rec_resolution=model.resolution, config=design,
                    loss=meta.get("loss", gan_cfg.gan.loss), classifier=classifier, gan_meta=meta)


def _index_of(kind: str, ids, value) -> int:
    """Row of ``value`` among the recommender's ``kind`` ids (an int is the row itself); ValueError naming
    a few known ids."""
    ids = np.asarray(ids).astype(str)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if not 0 <= int(value) < len(ids):
            raise ValueError(f"{kind} row {int(value)} out of range: the recommender has {len(ids)} {kind}s")
        return int(value)
    hit = np.flatnonzero(ids == str(value))
    if len(hit) == 0:
        raise ValueError(f"unknown {kind} {value!r}: not among the recommender's {len(ids)} {kind}s "
                         f"(e.g. {', '.join(repr(str(x)) for x in ids[:3])})")
    return int(hit[0])
