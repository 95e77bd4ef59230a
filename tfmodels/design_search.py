"""The design search in the GAN's latent space, as graph functions: preference maximisation and prototype
modification (``tfmodels.design.Designer`` calls them; the designer SavedModel wraps them unchanged).

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

A *smoothed score* (``design.smooth`` = sigma > 0; not in the paper, off by default) replaces the
objective's ``theta_u . Phi(up(G))`` with ``theta_u . Phi(up(blur_sigma(G)))``, a Gaussian blur of sigma
pixels at the GAN's resolution (``tfmodels.data.pixels.gaussian_blur``): the gradient the recommender sends
back to z then carries no pixel-scale detail, so the search cannot buy score with high-frequency patterns
that only this network rewards. Outputs keep the recommender's score of the unblurred design.

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
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmodels.config import LATENTS
from tfmodels.data.pixels import gaussian_blur, resize_to
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
    the graph when floor_weight is 0). ``trust_radius`` is the cap ``_adam_loop`` projects onto. With
    ``smooth`` = sigma > 0 the score in ``terms`` is that of the images blurred with sigma (the
    objective's), ``score(images)`` stays the plain one.
    """

    def __init__(self, generator, discriminator, item_tower, rec_resolution: int, loss: str = "lsgan",
                 latent: str = "free", classifier=None, category_weight: float = 0.0, trust_radius: float = 0.0,
                 floor_weight: float = 0.0, floor_thresholds=None, smooth: float = 0.0):
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
        if not smooth >= 0:
            raise ValueError(f"design.smooth={smooth}: must be >= 0 (0 = off)")
        if floor_weight > 0:
            if floor_thresholds is None:
                raise ValueError("a realism floor needs its per-category thresholds tau_c "
                                 "(Designer.realism_thresholds)")
            floor_thresholds = np.asarray(floor_thresholds, np.float32).reshape(-1)
            if floor_thresholds.shape != (num_categories,) or not np.all(np.isfinite(floor_thresholds)):
                raise ValueError(f"realism floor: need {num_categories} finite thresholds (one per category), "
                                 f"got {floor_thresholds.tolist()}")
        self.latent = latent
        self.smooth = float(smooth)
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
        score = self.score(gaussian_blur(images, self.smooth), user_vector)
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
                    **options):
    """Returns a tf.function doing preference maximisation for one user and one category.

    ``design_fn(user_vector float32 [K], category int32 [], starts int32 [],
    steps int32 [], eta float32 [], learning_rate float32 [], seed int32 [])``
    returns a dict (R = starts, S = steps, all in graph):

    * ``images`` float32 [R, H, W, 3] in [-1, 1] after S Adam steps,
    * ``score`` [R] = theta_u . Phi(up(images)) (the recommender's opinion of the unblurred design),
    * ``realism`` [R] = (D - 1)^2 (or softplus(-D)),
    * ``off_category`` [R] = the classifier's cross-entropy for the category (zeros without one),
    * ``over_floor`` [R] = relu(realism - tau_c) (zeros without a realism floor),
    * ``objective`` [R] = score - eta * realism - category_weight * off_category - floor_weight * over_floor
      (with ``smooth`` > 0, the score of the blurred images: the objective searched),
    * ``history`` [S + 1, R] objective at every visited z (row 0 = the random start),
    * ``z`` [R, noise_dim], ``z0`` [R, noise_dim] the random starts.

    The graph-changing settings are ``options``, ``DesignObjective``'s keyword arguments: the latent
    choice (``latent``), the category term (``classifier``, ``category_weight``), the trust region
    (``trust_radius``), the smoothed score (``smooth``) and the realism floor (``floor_weight`` with ``floor_thresholds`` float [C], baked
    into the graph as constants). Rows are in start order (not
    sorted). The starting codes are ``stateless_normal([R, noise_dim], seed=[seed, 0])``, so a seed
    reproduces a design.
    """
    obj = DesignObjective(generator, discriminator, item_tower, rec_resolution, loss, **options)

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

        z, history = _adam_loop(objective, z0, steps, learning_rate, maximise=True, latent=obj.latent,
                                trust_radius=obj.trust_radius)
        images, searched, realism, off, over = obj.terms(z, c, user_vector)
        score = obj.score(images, user_vector) if obj.smooth > 0 else searched
        return {"images": images, "score": score, "realism": realism, "off_category": off, "over_floor": over,
                "objective": obj.value(searched, realism, off, over, eta), "history": history, "z": z, "z0": z0}

    return design_fn


def build_modify_fn(generator, discriminator, item_tower, rec_resolution: int, loss: str = "lsgan",
                    **options):
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
    obj = DesignObjective(generator, discriminator, item_tower, rec_resolution, loss, **options)
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

        z_inv, invert_history = _adam_loop(l1, z0, invert_steps, learning_rate, maximise=False, latent=obj.latent)
        best = tf.argmin(invert_history[-1])
        z_start = z_inv[best][None]
        c1 = c[:1]

        def objective(z):
            images, score, realism, off, over = obj.terms(z, c1, user_vector)
            dist = tf.reduce_mean(tf.abs(images - target), axis=[1, 2, 3])
            return obj.value(score, realism, off, over, eta) - proximity * dist

        z_end, history = _adam_loop(objective, z_start, steps, learning_rate, maximise=True, latent=obj.latent,
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
