"""Training and loading the baselines and the category classifier with the shared loop.

``tfmodels train {pop,bpr-mf,vbpr,classifier}`` call ``train_<kind>(cfg, workdir)``.
Each writes the work-directory layout every model kind shares (config.json,
model.json, ckpt/, best/, tb/, metrics.jsonl) through
``tfmodels.training.loop.run``, under the strategy named by ``cfg.train.strategy``:

- ``pop``: PopRank; its one "step" counts training interactions per item.
- ``bpr-mf``: BPR-MF on triples from ``tfmodels.data.sampler``; Adam at
  ``cfg.baseline.learning_rate``, L2 ``cfg.baseline.l2`` on the batch's factors
  and biases; validation AUC every ``eval_every`` steps, best kept by ``auc_all``.
- ``classifier``: the CNN-F trunk + softmax head on the catalogue's categories
  (90% of labelled items train, 10% measure accuracy; best kept by accuracy).
  This is the project's own pre-trained CNN (no downloaded weights).
- ``vbpr``: VBPR on frozen fc7 features of a classifier
  (``cfg.baseline.features_from``, or one trained first into ``W/pretrained``).

``load_scorer(workdir)`` rebuilds a trained baseline as a scorer for
``tfmodels.evaluation.evaluate_split`` (``tfmodels.training.recommender.load_scorer``
dispatches here for every kind but dvbpr); never-trained items are scored by the
shared rule of ``tfmodels.evaluation``. ``load_pretrained_tower`` returns a
classifier's restored CNN-F trunk (for DVBPR's ``cfg.model.init_from``) and
``copy_tower_weights`` copies it into a tower of the same settings.
Everything here runs on the host except ``*_step`` methods (replica context).
"""

from __future__ import annotations

import copy
import os

import numpy as np
import tensorflow as tf

from tfmodels import config as config_lib
from tfmodels import evaluation
from tfmodels.data.sampler import labelled_image_batches
from tfmodels.models.baselines import BPRMF, VBPR, PopRank
from tfmodels.models.classifier import CategoryClassifier, cross_entropy_per_example
from tfmodels.training import loop
from tfmodels.training.loop import checkpoint_path, read_model_json
from tfmodels.training.strategy import build_strategy

BASELINE_KINDS = ("pop", "bpr-mf", "vbpr")
VAL_SHARE = 0.1
"""Share of labelled items the classifier holds out to measure accuracy."""


# --------------------------------------------------------------------------- data helpers


def load_data(cfg):
    """(dataset, split) for a config (see ``tfmodels.data.loading.load_for_training``)."""
    from tfmodels.data.loading import load_for_training

    return load_for_training(cfg)



def _make_score_fn(model):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def score(users):
        return model.score_all(users)

    return lambda users: score(tf.constant(np.asarray(users), tf.int32)).numpy()


def _triples(strategy, split, cfg, start_step):
    from tfmodels.data.sampler import distributed_triples

    # A resumed run draws fresh triples instead of replaying the first ones.
    return distributed_triples(strategy, split, cfg.train.batch_size, seed=cfg.train.seed + start_step)


# --------------------------------------------------------------------------- tasks


class PopTask(loop.Task):
    """PopRank in the shared loop: one step, which counts training interactions per item."""

    kind = "pop"

    def __init__(self, split):
        self.split = split

    def build(self, strategy):
        self.model = PopRank(self.split.num_items)
        self.model.fit(self.split.train_item)

    def checkpoint_items(self):
        return {"model": self.model}

    def train_step(self, batch):
        return {"loss": tf.zeros([], tf.float32)}

    def make_dataset(self, strategy, start_step):
        return strategy.distribute_datasets_from_function(
            lambda ctx: tf.data.Dataset.from_tensors(tf.zeros([1])).repeat())

    def evaluate(self, step):
        return evaluation.evaluate_split(_make_score_fn(self.model), self.split, "val")

    def model_info(self):
        return {"num_users": self.split.num_users, "num_items": self.split.num_items}


class BPRTask(loop.Task):
    """BPR-MF (or VBPR when ``features`` is given) on BPR triples.

    train_step (replica context): loss = mean over the global batch of
    [-ln sigmoid(x_ui - x_uj) + l2 * ||batch latent params||^2 (+ l2_visual * ||theta'_u||^2)]
    (+ l2_visual * (||E||^2 + ||beta'||^2) once per step for VBPR), Adam on all trainable variables.
    """

    def __init__(self, cfg, split, features: np.ndarray | None = None, features_from: str = ""):
        self.cfg = cfg
        self.split = split
        self.features = features
        self.features_from = features_from
        self.kind = "vbpr" if features is not None else "bpr-mf"

    def build(self, strategy):
        b = self.cfg.baseline
        if self.features is None:
            self.model = BPRMF(self.split.num_users, self.split.num_items, b.latent_dim, seed=self.cfg.train.seed)
        else:
            self.model = VBPR(self.split.num_users, self.split.num_items, b.latent_dim, b.visual_dim, self.features,
                              seed=self.cfg.train.seed)
        self.model.set_trained(~self.split.cold_items())
        self.optimizer = loop.build_optimizer(b.learning_rate, self.cfg.train.mixed_precision)

    def checkpoint_items(self):
        return {"model": self.model, "optimizer": self.optimizer}

    def train_step(self, batch):
        b = self.cfg.baseline
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            if isinstance(self.model, VBPR):
                per_example = self.model.loss_per_example(batch["user"], batch["pos"], batch["neg"], b.l2,
                                                          b.l2_visual)
                loss = loop.average_loss(per_example)
                loss += loop.scale_regularization(b.l2_visual * self.model.global_l2())
            else:
                per_example = self.model.loss_per_example(batch["user"], batch["pos"], batch["neg"], b.l2)
                loss = loop.average_loss(per_example)
        grads = loop.compute_gradients(tape, self.optimizer, loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return {"loss": loss}

    def make_dataset(self, strategy, start_step):
        return _triples(strategy, self.split, self.cfg, start_step)

    def evaluate(self, step):
        return evaluation.evaluate_split(_make_score_fn(self.model), self.split, "val", seed=self.cfg.data.seed)

    def model_info(self):
        info = {"num_users": self.split.num_users, "num_items": self.split.num_items,
                "latent_dim": self.cfg.baseline.latent_dim}
        if self.features is not None:
            info.update(visual_dim=self.cfg.baseline.visual_dim, feature_dim=int(self.features.shape[1]),
                        features_from=self.features_from)
        return info


class ClassifierTask(loop.Task):
    """Category classification on catalogue images: the pre-training of the CNN-F trunk.

    train_step (replica context): mean softmax cross-entropy + classifier_l2 *
    sum ||kernel||^2 (once per step), Adam; images flipped left-right at random.
    evaluate: top-1 accuracy on the 10% held-out labelled items.
    """

    kind = "classifier"
    best_metric = "accuracy"

    def __init__(self, cfg, images: np.ndarray, categories: np.ndarray, category_names: list[str]):
        categories = np.asarray(categories, np.int32)
        if len(images) != len(categories):
            raise ValueError(f"classifier: {len(images)} images but {len(categories)} category labels")
        labelled = np.flatnonzero(categories >= 0)
        present = np.unique(categories[labelled])
        if len(present) < 2:
            raise ValueError(f"classifier: need items of at least 2 categories, found {len(present)} "
                             f"(dataset categories: {category_names[:10]})")
        rng = np.random.default_rng(cfg.train.seed)
        order = rng.permutation(labelled)
        n_val = max(1, int(round(len(order) * VAL_SHARE)))
        self.val_items, self.train_items = np.sort(order[:n_val]), np.sort(order[n_val:])
        self.cfg = cfg
        self.images = images
        self.categories = categories
        self.num_categories = int(max(categories.max() + 1, len(category_names)))
        self.category_names = list(category_names)

    def build(self, strategy):
        self.model = CategoryClassifier(self.cfg.model, self.images.shape[1], self.num_categories)
        self.optimizer = loop.build_optimizer(self.cfg.baseline.classifier_learning_rate,
                                              self.cfg.train.mixed_precision)

    def checkpoint_items(self):
        return {"model": self.model, "optimizer": self.optimizer}

    def train_step(self, batch):
        from tfmodels.data.images import to_model_input

        x = to_model_input(batch["images"])
        flip = tf.random.uniform([tf.shape(x)[0], 1, 1, 1]) < 0.5
        x = tf.where(flip, tf.image.flip_left_right(x), x)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = loop.average_loss(cross_entropy_per_example(batch["category"], logits))
            loss += loop.scale_regularization(self.cfg.baseline.classifier_l2 * self.model.kernel_l2())
        grads = loop.compute_gradients(tape, self.optimizer, loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), batch["category"]), tf.float32)
        return {"loss": loss, "train_accuracy": loop.average_loss(correct)}

    def make_dataset(self, strategy, start_step):
        batch = self.cfg.baseline.classifier_batch_size
        seed = self.cfg.train.seed + start_step

        def fn(ctx):
            per_replica = ctx.get_per_replica_batch_size(batch)
            return labelled_image_batches(self.images, self.categories, self.train_items, per_replica,
                                          seed + ctx.input_pipeline_id)

        return strategy.distribute_datasets_from_function(fn)

    def evaluate(self, step):
        logits = predict_in_batches(self.model, self.images, self.val_items)
        acc = float(np.mean(np.argmax(logits, -1) == self.categories[self.val_items]))
        return {"accuracy": acc, "val_items": int(len(self.val_items)),
                "chance": float(np.max(np.bincount(self.categories[self.val_items])) / len(self.val_items))}

    def model_info(self):
        return {"num_categories": self.num_categories, "category_names": self.category_names,
                "resolution": int(self.images.shape[1]), "feature_layer": "fc7",
                "train_items": int(len(self.train_items)), "val_items": int(len(self.val_items))}


def predict_in_batches(fn, images, items=None, batch_size=256) -> np.ndarray:
    """Applies ``fn`` (float images in [-1, 1] -> [b, d]) to uint8 images in batches; returns [n, d]."""
    from tfmodels.data.images import to_model_input

    items = np.arange(len(images)) if items is None else np.asarray(items)
    call = tf.function(lambda x: fn(to_model_input(x), training=False)) if isinstance(fn, tf.keras.Model) \
        else tf.function(lambda x: fn(to_model_input(x)))
    out = [call(tf.constant(np.asarray(images[items[s:s + batch_size]]))).numpy()
           for s in range(0, len(items), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# --------------------------------------------------------------------------- train_<kind>


def _start(cfg, workdir, kind):
    os.makedirs(workdir, exist_ok=True)
    config_lib.save(cfg, workdir)
    print(f"[{kind}] workdir {workdir}", flush=True)
    return build_strategy(cfg.train.strategy)


def train_pop(cfg, workdir: str, dataset=None, split=None) -> dict:
    """PopRank: counts training interactions; same work-directory layout as the others."""
    strategy = _start(cfg, workdir, "pop")
    if split is None:
        dataset, split = load_data(cfg)
    one_step = copy.deepcopy(cfg.train)
    one_step.steps, one_step.steps_per_loop, one_step.eval_every, one_step.checkpoint_every = 1, 1, 1, 1
    one_step.histogram_every = 0
    return loop.run(PopTask(split), one_step, workdir, strategy)


def train_bpr_mf(cfg, workdir: str, dataset=None, split=None) -> dict:
    """BPR-MF (theta_u . gamma_i + beta_i) trained on BPR triples with the shared loop."""
    strategy = _start(cfg, workdir, "bpr-mf")
    if split is None:
        dataset, split = load_data(cfg)
    return loop.run(BPRTask(cfg, split), cfg.train, workdir, strategy)


def train_classifier(cfg, workdir: str, dataset=None) -> dict:
    """The category classifier (CNN-F trunk + softmax head) on the catalogue's labels.

    Trains ``cfg.baseline.classifier_steps`` steps of ``classifier_batch_size``
    images at ``cfg.data.resolution``; checkpoints/evaluation follow cfg.train.
    """
    from tfmodels.data.images import load_images

    strategy = _start(cfg, workdir, "classifier")
    if dataset is None:
        from tfmodels.data.loading import load_dataset

        dataset = load_dataset(cfg)  # users are not needed: any labelled image set will do
    images = load_images(dataset, cfg.data.resolution, cache_dir=cfg.data.cache_dir,
                         skip_bad=cfg.data.skip_bad_images)
    train_cfg = copy.deepcopy(cfg.train)
    train_cfg.steps = cfg.baseline.classifier_steps
    task = ClassifierTask(cfg, images, dataset.categories, dataset.category_names)
    return loop.run(task, train_cfg, workdir, strategy)


def load_classifier(workdir: str, best: bool = True) -> tuple[CategoryClassifier, object]:
    """(classifier with restored weights, its Config) from a classifier work directory."""
    info = read_model_json(workdir)
    if info.get("kind") != "classifier":
        raise ValueError(f"{workdir} holds a {info.get('kind')!r} model, not a classifier")
    cfg = config_lib.load(workdir)
    model = CategoryClassifier(cfg.model, int(info["resolution"]), int(info["num_categories"]))
    tf.train.Checkpoint(model=model).restore(checkpoint_path(workdir, best)).expect_partial()
    return model, cfg


def classifier_features(classifier_workdir: str, dataset, cache_dir: str = "", best: bool = True) -> np.ndarray:
    """Frozen fc7 features float32 [num_items, fc_units] of every item, scaled to mean L2 norm 1.

    The scale only conditions VBPR's optimisation (E and beta' see inputs of
    norm ~1 whatever the classifier's width); it does not change the ranking power.
    """
    from tfmodels.data.images import load_images

    model, ccfg = load_classifier(classifier_workdir, best)
    images = load_images(dataset, model.resolution, cache_dir=cache_dir or ccfg.data.cache_dir,
                         skip_bad=ccfg.data.skip_bad_images)
    feats = predict_in_batches(lambda x: model.features(x), images).astype(np.float32)
    norm = float(np.mean(np.linalg.norm(feats, axis=1)))
    if not np.isfinite(norm) or norm <= 0:
        raise ValueError(f"classifier {classifier_workdir}: fc7 features are all zero or non-finite")
    return feats / norm


def train_vbpr(cfg, workdir: str, dataset=None, split=None, features=None, features_from: str = "") -> dict:
    """VBPR on frozen classifier features (trains the classifier first if none is given).

    ``features`` float32 [num_items, F], if given, are used instead of a classifier's
    (``features_from`` then only names their origin in model.json).
    """
    if split is None:
        dataset, split = load_data(cfg)
    source = features_from
    if features is None:
        source = cfg.baseline.features_from
        if not source:
            source = os.path.join(workdir, "pretrained")
            print(f"[vbpr] pre-training the category classifier in {source}", flush=True)
            train_classifier(cfg, source, dataset=dataset)
        features = classifier_features(source, dataset, cache_dir=cfg.data.cache_dir)
        source = os.path.abspath(source)
    if features.shape[0] != split.num_items:
        raise ValueError(f"features from {source} cover {features.shape[0]} items, "
                         f"the dataset has {split.num_items}")
    strategy = _start(cfg, workdir, "vbpr")
    return loop.run(BPRTask(cfg, split, features, source), cfg.train, workdir, strategy)


# --------------------------------------------------------------------------- loading


def build_baseline(info: dict, cfg):
    """An untrained model of the kind and shapes recorded in model.json (weights come from a checkpoint)."""
    kind = info.get("kind")
    if kind == "pop":
        return PopRank(int(info["num_items"]))
    if kind == "bpr-mf":
        return BPRMF(int(info["num_users"]), int(info["num_items"]), int(info["latent_dim"]))
    if kind == "vbpr":
        zeros = np.zeros((int(info["num_items"]), int(info["feature_dim"])), np.float32)
        return VBPR(int(info["num_users"]), int(info["num_items"]), int(info["latent_dim"]),
                    int(info["visual_dim"]), zeros)
    raise ValueError(f"model.json kind {kind!r} is not a baseline; expected one of {BASELINE_KINDS}")


def load_scorer(workdir: str, best: bool = True, dataset=None, split=None):
    """(score_fn, dataset, split) of a trained pop / bpr-mf / vbpr work directory.

    ``score_fn(user_idx int [B]) -> float32 [B, num_items]`` with never-trained
    items scored by the rule of ``tfmodels.evaluation`` (the trained-item mask
    is part of the checkpoint). ``dataset`` and ``split`` are reloaded from
    config.json unless given.
    """
    info = read_model_json(workdir)
    cfg = config_lib.load(workdir)
    model = build_baseline(info, cfg)
    tf.train.Checkpoint(model=model).restore(checkpoint_path(workdir, best)).expect_partial()
    if split is None:
        dataset, split = load_data(cfg)
    if split.num_items != int(info["num_items"]) or split.num_users != int(info.get("num_users", split.num_users)):
        raise ValueError(f"{workdir}: model has {info['num_items']} items / {info.get('num_users')} users, "
                         f"the data now has {split.num_items} / {split.num_users}; was the dataset changed?")
    return _make_score_fn(model), dataset, split


def load_pretrained_tower(classifier_workdir: str, best: bool = True) -> tf.keras.Model:
    """The restored CNN-F trunk (``item_tower``) of a classifier work directory.

    Built by ``build_item_tower`` with the classifier's own model config and
    resolution, so its layers (conv1..conv5, fc6, fc7, embedding) match a DVBPR
    tower of the same settings by name and shape; ``copy_tower_weights`` (or
    ``tfmodels.training.recommender.load_pretrained_into``) copies them over.
    """
    model, _ = load_classifier(classifier_workdir, best)
    return model.item_tower


def copy_tower_weights(source: tf.keras.Model, tower: tf.keras.Model, what: str = "pre-trained tower") -> list[str]:
    """Copies weights layer by layer (matched by name) from ``source`` into ``tower``; returns copied names.

    Raises:
      ValueError: naming the first layer that is missing or whose shapes differ.
    """
    copied = []
    for layer in tower.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        try:
            src = source.get_layer(layer.name)
        except ValueError:
            raise ValueError(f"{what} has no layer {layer.name!r}") from None
        src_w = src.get_weights()
        shapes, src_shapes = [w.shape for w in weights], [w.shape for w in src_w]
        if shapes != src_shapes:
            raise ValueError(f"{what}: layer {layer.name} has shapes {src_shapes}, the target needs {shapes} "
                             f"(use the same model.* settings and data.resolution)")
        layer.set_weights(src_w)
        copied.append(layer.name)
    if not copied:
        raise ValueError(f"no weights copied from {what}")
    return copied
