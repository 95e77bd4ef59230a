"""Personalised design as a model object: a trained recommender + GAN pair that designs items for users.

The search itself (the objective, its optional terms and guards, the in-graph Adam loop) is
``tfmodels.design_search``; this module addresses it by ids and category names.

:class:`Designer` is addressed by the dataset's user and item ids and the GAN's category names, with
``design``, ``modify`` and ``generate`` methods that run the search functions eagerly
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

from tfmodels.config import DesignConfig
from tfmodels.data.pixels import embed_in_batches, resize_to, to_model_input, to_uint8
from tfmodels.design_search import build_design_fn, build_modify_fn
from tfmodels.models import gan as gan_lib


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
                          ("category_weight", 0), ("trust_radius", 0), ("floor_weight", 0), ("smooth", 0)):
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
            latent, category_weight, trust_radius, realism_floor, floor_weight, smooth); None values are ignored.

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
            proximity, learning_rate, latent, category_weight, trust_radius, realism_floor, floor_weight, smooth).

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
        key = (builder.__name__, cfg.latent, float(cfg.category_weight), float(cfg.trust_radius), float(cfg.smooth),
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
    settings ``cfg`` (default ``designer.config``): latent, classifier, category_weight, trust_radius, smooth,
    and the realism floor's weight with its thresholds (``Designer.realism_thresholds``) when
    ``cfg.realism_floor`` > 0. The one place that turns settings into an objective (eager calls, export)."""
    cfg = designer.config if cfg is None else cfg
    floor = cfg.realism_floor > 0 and cfg.floor_weight > 0
    return {"latent": cfg.latent, "classifier": designer.classifier, "category_weight": float(cfg.category_weight),
            "trust_radius": float(cfg.trust_radius), "smooth": float(cfg.smooth),
            "floor_weight": float(cfg.floor_weight) if floor else 0.0,
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
