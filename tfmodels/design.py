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

Prototype modification: given an item image x (float [-1, 1] at the GAN's
resolution) and its category, first invert the GAN: R starts of Adam on z
minimising ``mean |G(z, c) - x|`` (L1), keep the best start; then, from there,
maximise ``f(z) - proximity * mean |G(z, c) - x|`` for S steps.

Everything runs inside one ``tf.function`` per builder (``build_design_fn``,
``build_modify_fn``) whose loop is a ``tf.while_loop`` with a gradient tape in
its body and Adam written out on plain tensors (no optimizer variables), so the
export module can wrap these functions as SavedModel signatures unchanged.
``maximise_preference`` and ``modify_prototype`` are eager conveniences on top
that return NumPy arrays. Networks are called with ``training=False``
(moving averages in G's batch norm, no dropout in the item tower).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from tfmodels.config import LATENTS
from tfmodels.models import gan as gan_lib
from tfmodels.models.classifier import cross_entropy_per_example

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


def upsample(images: tf.Tensor, resolution: int) -> tf.Tensor:
    """Bilinear resize of [B, H, W, 3] float images to ``resolution`` (identity when equal).

    Antialiased when shrinking (a catalogue photo brought down to the GAN's size).
    """
    if images.shape[1] == resolution and images.shape[2] == resolution:
        return images
    shrink = images.shape[1] is not None and images.shape[1] > resolution
    return tf.image.resize(images, [resolution, resolution], method="bilinear", antialias=shrink)


def _adam_loop(value_fn, z0: tf.Tensor, steps: tf.Tensor, learning_rate: tf.Tensor, maximise: bool,
               latent: str = "free"):
    """Runs Adam on z for ``steps`` steps inside a tf.while_loop.

    Args:
      value_fn: z [R, D] -> per-start values [R] (independent per row).
      z0: starting codes [R, D].
      steps: int32 scalar tensor.
      learning_rate: float32 scalar tensor.
      maximise: ascend (True) or descend (False).
      latent: "free", or "sphere" to rescale every row of z to its norm in z0 after each step.

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
    = the classifier's cross-entropy for c, zeros without a classifier);
    ``value(score, realism, off, eta)`` combines them into the objective.
    """

    def __init__(self, generator, discriminator, item_tower, rec_resolution: int, loss: str = "lsgan",
                 latent: str = "free", classifier=None, category_weight: float = 0.0):
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
        phi = self.item_tower(upsample(images, self.rec_resolution), training=False)
        return tf.linalg.matvec(tf.cast(phi, tf.float32), tf.cast(user_vector, tf.float32))

    def terms(self, z, c_onehot, user_vector):
        images = self.generator([z, c_onehot], training=False)
        score = self.score(images, user_vector)
        realism = gan_lib.realism_penalty(self.discriminator([images, c_onehot], training=False), self.loss)
        if self.classifier is None:
            return images, score, realism, tf.zeros_like(score)
        logits = self.classifier(upsample(images, int(self.classifier.resolution)), training=False)
        off = cross_entropy_per_example(tf.argmax(c_onehot, axis=-1, output_type=tf.int32), tf.cast(logits, tf.float32))
        return images, score, realism, off

    def value(self, score, realism, off, eta):
        return score - eta * realism - self.category_weight * off

    def _codes_and_category(self, category, starts, seed, salt):
        starts = tf.cast(starts, tf.int32)
        z0 = tf.random.stateless_normal(tf.stack([starts, self.noise_dim]),
                                        seed=tf.stack([tf.cast(seed, tf.int32), salt]))
        z0 = tf.ensure_shape(z0, [None, self.noise_dim])
        c = gan_lib.onehot(tf.fill(tf.reshape(starts, [1]), tf.cast(category, tf.int32)), self.num_categories)
        return z0, c


def build_design_fn(generator, discriminator, item_tower, rec_resolution: int, loss: str = "lsgan",
                    latent: str = "free", classifier=None, category_weight: float = 0.0):
    """Returns a tf.function doing preference maximisation for one user and one category.

    ``design_fn(user_vector float32 [K], category int32 [], starts int32 [],
    steps int32 [], eta float32 [], learning_rate float32 [], seed int32 [])``
    returns a dict (R = starts, S = steps, all in graph):

    * ``images`` float32 [R, H, W, 3] in [-1, 1] after S Adam steps,
    * ``score`` [R] = theta_u . Phi(up(images)) (the recommender's opinion),
    * ``realism`` [R] = (D - 1)^2 (or softplus(-D)),
    * ``off_category`` [R] = the classifier's cross-entropy for the category (zeros without one),
    * ``objective`` [R] = score - eta * realism - category_weight * off_category,
    * ``history`` [S + 1, R] objective at every visited z (row 0 = the random start),
    * ``z`` [R, noise_dim].

    Rows are in start order (not sorted). The starting codes are
    ``stateless_normal([R, noise_dim], seed=[seed, 0])``, so a seed reproduces a design.
    """
    obj = DesignObjective(generator, discriminator, item_tower, rec_resolution, loss, latent, classifier,
                          category_weight)

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
            _, score, realism, off = obj.terms(z, c, user_vector)
            return obj.value(score, realism, off, eta)

        z, history = _adam_loop(objective, z0, steps, learning_rate, maximise=True, latent=latent)
        images, score, realism, off = obj.terms(z, c, user_vector)
        return {"images": images, "score": score, "realism": realism, "off_category": off,
                "objective": obj.value(score, realism, off, eta), "history": history, "z": z}

    return design_fn


def build_modify_fn(generator, discriminator, item_tower, rec_resolution: int, loss: str = "lsgan",
                    latent: str = "free", classifier=None, category_weight: float = 0.0):
    """Returns a tf.function doing prototype modification of one item image for one user.

    ``modify_fn(user_vector float32 [K], image float32 [H, W, 3] in [-1, 1] at the
    GAN's resolution, category int32 [], starts int32 [], invert_steps int32 [],
    steps int32 [], eta float32 [], proximity float32 [], learning_rate float32 [],
    seed int32 [])`` returns a dict:

    * ``before`` [H, W, 3]: G(z0, c), the best of R L1 inversions of the image,
    * ``after`` [H, W, 3]: G(z, c) after S steps maximising
      ``theta_u . Phi(up(G)) - eta * realism - proximity * mean|G - image|``,
    * ``score_original`` / ``score_before`` / ``score_after`` (scalars):
      theta_u . Phi(up(.)) of the item image, of ``before`` and of ``after``,
    * ``l1_before`` / ``l1_after``: mean |G - image| of ``before`` / ``after``,
    * ``invert_history`` [invert_steps + 1, R] L1 per start, ``history`` [S + 1, 1] objective.
    """
    obj = DesignObjective(generator, discriminator, item_tower, rec_resolution, loss, latent, classifier,
                          category_weight)
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
            images, score, realism, off = obj.terms(z, c1, user_vector)
            dist = tf.reduce_mean(tf.abs(images - target), axis=[1, 2, 3])
            return obj.value(score, realism, off, eta) - proximity * dist

        z_end, history = _adam_loop(objective, z_start, steps, learning_rate, maximise=True, latent=latent)
        before = generator([z_start, c1], training=False)
        after = generator([z_end, c1], training=False)
        scores = obj.score(tf.concat([target, before, after], 0), user_vector)
        return {
            "before": before[0], "after": after[0],
            "score_original": scores[0], "score_before": scores[1], "score_after": scores[2],
            "l1_before": tf.reduce_mean(tf.abs(before - target)),
            "l1_after": tf.reduce_mean(tf.abs(after - target)),
            "invert_history": invert_history, "history": history,
        }

    return modify_fn


@dataclass
class DesignResult:
    """Output of ``maximise_preference``; unpacks as ``images, scores, history``.

    Rows are sorted by final objective, best first.
    """

    images: np.ndarray
    """uint8 [R, H, W, 3] designed images at the GAN's resolution."""
    scores: np.ndarray
    """float32 [R]: theta_u . Phi(up(image)), the recommender's score."""
    history: np.ndarray
    """float32 [S + 1, R]: objective at each step (columns in the sorted order)."""
    objective: np.ndarray = None
    """float32 [R]: final objective, score - eta * realism - category_weight * off_category."""
    realism: np.ndarray = None
    """float32 [R]: realism penalty (D - 1)^2."""
    off_category: np.ndarray = None
    """float32 [R]: the category classifier's cross-entropy for the category (zeros without one)."""
    true_scores: np.ndarray | None = None
    """float32 [R] from ``true_score_fn`` (e.g. simulated users' true preference), or None."""
    z: np.ndarray = None
    """float32 [R, noise_dim] final codes."""
    extra: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.images, self.scores, self.history))


_FN_CACHE: dict = {}


def _cached(builder, generator, discriminator, item_tower, rec_resolution, loss, design_cfg, classifier):
    # One traced function per (networks, resolution, loss, latent, category term), so repeated calls do
    # not retrace. The networks are kept in the entry so their ids cannot be reused by other objects.
    nets = (generator, discriminator, item_tower, classifier)
    settings = (int(rec_resolution), loss, design_cfg.latent, float(design_cfg.category_weight))
    key = (builder.__name__, *map(id, nets), *settings)
    if key not in _FN_CACHE:
        _FN_CACHE[key] = (builder(generator, discriminator, item_tower, int(rec_resolution), loss,
                                  latent=design_cfg.latent, classifier=classifier,
                                  category_weight=float(design_cfg.category_weight)), nets)
    return _FN_CACHE[key][0]


def _check_category(category, generator):
    num = int(generator.inputs[1].shape[-1])
    if not 0 <= int(category) < num:
        raise ValueError(f"category index {category} out of range: the GAN knows {num} categories")


def maximise_preference(generator, discriminator, item_tower, user_vector, category, design_cfg,
                        rec_resolution: int, seed: int = 0, loss: str = "lsgan", eta: float | None = None,
                        true_score_fn=None, classifier=None) -> DesignResult:
    """Designs ``design_cfg.starts`` images of ``category`` for one user (eager wrapper of ``build_design_fn``).

    Args:
      generator, discriminator: the conditional GAN (``tfmodels.models.gan``).
      item_tower: images float [-1, 1] [B, rec_resolution, rec_resolution, 3] -> [B, K].
      user_vector: theta_u, float [K].
      category: category index (the GAN's numbering).
      design_cfg: ``DesignConfig`` (starts, steps, learning_rate, eta, latent, category_weight).
      rec_resolution: the item tower's input side.
      seed: seeds the random starts.
      loss: the GAN's loss (chooses the realism penalty).
      eta: overrides ``design_cfg.eta`` when given.
      true_score_fn: optional callable(images float [-1, 1] [R, H, W, 3] tf.Tensor) -> [R],
        evaluated on the final designs only (e.g. a simulated user's true preference).
      classifier: the category classifier of the category term (a ``CategoryClassifier``:
        logits for float [-1, 1] images at its ``resolution``); needed when
        ``design_cfg.category_weight`` > 0.

    Returns:
      A ``DesignResult`` (``images, scores, history = result`` also works), best objective first.
    """
    _check_category(category, generator)
    fn = _cached(build_design_fn, generator, discriminator, item_tower, rec_resolution, loss, design_cfg,
                 classifier)
    out = fn(tf.convert_to_tensor(user_vector, tf.float32), tf.constant(int(category), tf.int32),
             tf.constant(int(design_cfg.starts), tf.int32), tf.constant(int(design_cfg.steps), tf.int32),
             tf.constant(float(design_cfg.eta if eta is None else eta), tf.float32),
             tf.constant(float(design_cfg.learning_rate), tf.float32), tf.constant(int(seed), tf.int32))
    order = np.argsort(-out["objective"].numpy(), kind="stable")
    true_scores = None
    if true_score_fn is not None:
        true_scores = np.asarray(true_score_fn(tf.gather(out["images"], order)), np.float32)
    return DesignResult(
        images=gan_lib.to_uint8(tf.gather(out["images"], order)).numpy(),
        scores=out["score"].numpy()[order], history=out["history"].numpy()[:, order],
        objective=out["objective"].numpy()[order], realism=out["realism"].numpy()[order],
        off_category=out["off_category"].numpy()[order],
        true_scores=true_scores, z=out["z"].numpy()[order])


def modify_prototype(generator, discriminator, item_tower, user_vector, item_image, category, design_cfg,
                     rec_resolution: int, seed: int = 0, loss: str = "lsgan", eta: float | None = None,
                     true_score_fn=None, classifier=None) -> dict:
    """Modifies one item image towards a user's taste (eager wrapper of ``build_modify_fn``).

    Args:
      item_image: uint8 [H, W, 3] or float [-1, 1], at the GAN's resolution (resized if not).
      true_score_fn: optional callable(images float [-1, 1] [N, H, W, 3]) -> [N], applied to
        (original, before, after).
      Other arguments as in ``maximise_preference``; uses ``design_cfg.starts`` inversion starts,
      ``invert_steps``, ``steps``, ``proximity``, ``learning_rate``.

    Returns:
      dict of NumPy values: ``original``, ``before`` (the inversion), ``after`` (uint8 [H, W, 3]),
      ``score_original``, ``score_before``, ``score_after``, ``l1_before``, ``l1_after`` (floats),
      ``invert_history`` [invert_steps + 1, starts], ``history`` [steps + 1, 1], and
      ``true_original``, ``true_before``, ``true_after`` when ``true_score_fn`` is given.
    """
    _check_category(category, generator)
    res = int(generator.outputs[0].shape[1])
    image = tf.convert_to_tensor(item_image)
    if image.shape.rank != 3 or image.shape[-1] != 3:
        raise ValueError(f"modify_prototype: item_image must be [H, W, 3], got shape {image.shape}")
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 127.5 - 1.0
    image = upsample(tf.cast(image[None], tf.float32), res)[0]
    fn = _cached(build_modify_fn, generator, discriminator, item_tower, rec_resolution, loss, design_cfg,
                 classifier)
    out = fn(tf.convert_to_tensor(user_vector, tf.float32), image, tf.constant(int(category), tf.int32),
             tf.constant(int(design_cfg.starts), tf.int32), tf.constant(int(design_cfg.invert_steps), tf.int32),
             tf.constant(int(design_cfg.steps), tf.int32),
             tf.constant(float(design_cfg.eta if eta is None else eta), tf.float32),
             tf.constant(float(design_cfg.proximity), tf.float32),
             tf.constant(float(design_cfg.learning_rate), tf.float32), tf.constant(int(seed), tf.int32))
    result = {k: (float(v.numpy()) if v.shape.rank == 0 else v.numpy()) for k, v in out.items()}
    result["original"] = gan_lib.to_uint8(image).numpy()
    result["before"] = gan_lib.to_uint8(out["before"]).numpy()
    result["after"] = gan_lib.to_uint8(out["after"]).numpy()
    if true_score_fn is not None:
        t = np.asarray(true_score_fn(tf.stack([image, out["before"], out["after"]])), np.float32)
        result.update(true_original=float(t[0]), true_before=float(t[1]), true_after=float(t[2]))
    return result


# ---------------------------------------------------------------------------
# A trained recommender + GAN pair, addressed by the dataset's own ids
# ---------------------------------------------------------------------------


@dataclass
class Designer:
    """Everything personalised design needs, from a DVBPR work directory and a GAN work directory.

    Users and items are addressed by the recommender dataset's own ids, categories by the
    GAN's category names (or indices); the two work directories are matched by category name.
    """

    generator: tf.keras.Model
    discriminator: tf.keras.Model
    item_tower: tf.keras.Model
    user_vectors: np.ndarray
    """float32 [num_users, K]: theta_u of every user."""
    dataset: object
    """The recommender's Dataset (user_ids, item_ids, categories, extra["users"] if simulated)."""
    images: np.ndarray
    """uint8 [num_items, rec_resolution, rec_resolution, 3]: the catalogue at the recommender's size."""
    gan_meta: dict
    """The GAN's model.json (category_names, resolution, noise_dim, loss, step)."""
    gan_cfg: object
    """The GAN run's full Config (its ``design`` section gives defaults)."""
    rec_resolution: int
    loss: str = "lsgan"
    classifier: object = None
    """The category classifier of the category term (``load_category_classifier``), or None."""
    _item_embeddings: np.ndarray | None = None

    @property
    def category_names(self) -> list[str]:
        return list(self.gan_meta["category_names"])

    def user_index(self, user_id: str) -> int:
        return _index_of("user", self.dataset.user_ids, user_id)

    def item_index(self, item_id: str) -> int:
        return _index_of("item", self.dataset.item_ids, item_id)

    def category_index(self, category) -> int:
        """GAN category index for a name (case-insensitive) or a decimal index."""
        names = self.category_names
        text = str(category)
        lowered = [n.lower() for n in names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        if text.isdigit() and int(text) < len(names):
            return int(text)
        raise ValueError(f"unknown category {text!r}; the GAN knows: {', '.join(names)}")

    def item_category(self, item: int) -> int:
        """The GAN category index of catalogue item ``item`` (matched by name)."""
        rec_names = list(self.dataset.category_names)
        c = int(self.dataset.categories[item]) if len(self.dataset.categories) else -1
        if c < 0 or c >= len(rec_names):
            if self.category_names == ["all"]:
                return 0
            raise ValueError(f"item {self.dataset.item_ids[item]!r} has no category; pass --category")
        return self.category_index(rec_names[c])

    def items_of_category(self, gan_category: int) -> np.ndarray:
        """Indices of catalogue items whose category name is the GAN category ``gan_category``."""
        if self.category_names == ["all"]:
            return np.arange(len(self.images))
        name = self.category_names[gan_category].lower()
        rec_names = [n.lower() for n in self.dataset.category_names]
        if name not in rec_names:
            return np.zeros(0, np.int64)
        return np.flatnonzero(np.asarray(self.dataset.categories) == rec_names.index(name))

    def item_embeddings(self, batch_size: int = 256) -> np.ndarray:
        """Phi(X_i) of the whole catalogue, float32 [num_items, K] (computed once, in batches)."""
        if self._item_embeddings is None:
            out = []
            for start in range(0, len(self.images), batch_size):
                x = tf.cast(np.asarray(self.images[start:start + batch_size]), tf.float32) / 127.5 - 1.0
                out.append(np.asarray(self.item_tower(x, training=False), np.float32))
            self._item_embeddings = np.concatenate(out) if out else np.zeros((0, self.user_vectors.shape[1]))
        return self._item_embeddings

    def simulated_users(self):
        """The SimulatedUsers of a simulated world (true preferences), or None."""
        return getattr(self.dataset, "extra", {}).get("users")


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


def load_designer(rec_workdir: str, gan_workdir: str, best: bool = True,
                  classifier_workdir: str | None = None) -> Designer:
    """Loads a trained DVBPR (``tfmodels.training.recommender.load_dvbpr``) and GAN (``load_gan``), and the
    category classifier of ``classifier_workdir`` (default: the GAN run's ``design.classifier_from``; none
    when empty)."""
    from tfmodels.training.gan import load_gan
    from tfmodels.training.recommender import load_dvbpr

    generator, discriminator, gan_cfg, meta = load_gan(gan_workdir)
    model, dataset, _split, images = load_dvbpr(rec_workdir, best=best)
    users = np.asarray(model.user_embedding.embeddings.numpy(), np.float32)
    rec_resolution = int(getattr(model, "resolution", images.shape[1]))
    if classifier_workdir is None:
        classifier_workdir = gan_cfg.design.classifier_from
    classifier = load_category_classifier(classifier_workdir, meta["category_names"])
    return Designer(generator=generator, discriminator=discriminator, item_tower=model.item_tower,
                    user_vectors=users, dataset=dataset, images=images, gan_meta=meta, gan_cfg=gan_cfg,
                    rec_resolution=rec_resolution, loss=meta.get("loss", gan_cfg.gan.loss), classifier=classifier)


def _index_of(kind: str, ids, value) -> int:
    """Row of ``value`` among the recommender's ``kind`` ids; ValueError naming a few known ids."""
    ids = np.asarray(ids).astype(str)
    hit = np.flatnonzero(ids == str(value))
    if len(hit) == 0:
        raise ValueError(f"unknown {kind} {value!r}: not among the recommender's {len(ids)} {kind}s "
                         f"(e.g. {', '.join(repr(str(x)) for x in ids[:3])})")
    return int(hit[0])
