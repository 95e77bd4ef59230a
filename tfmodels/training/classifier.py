"""The category classifier: the project's own pre-trained CNN (no downloaded weights).

``tfmodels train classifier`` trains the CNN-F trunk plus a softmax head on the
catalogue's categories (90% of labelled items train, 10% measure accuracy; best
kept by accuracy) with the shared loop. Three things use it:

- DVBPR's pre-trained initialisation (``model.init_from``): ``load_pretrained_tower``
  + ``copy_tower_weights``, run only when the DVBPR run has no checkpoint yet;
- VBPR's frozen image features (``classifier_features``, fc7 scaled to mean norm 1;
  ``frozen_features`` also reads ``imagenet:TOWER[@R]``, an ImageNet backbone's pooled features);
- the design search's optional category term (``load_classifier``).

Everything here runs on the host except ``train_step`` (replica context).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tfmodels import kinds
from tfmodels import workdir as workdir_lib
from tfmodels.data.images import load_images
from tfmodels.data.pixels import embed_in_batches, to_model_input
from tfmodels.data.sampler import labelled_image_batches
from tfmodels.models import towers
from tfmodels.models.classifier import CategoryClassifier, cross_entropy_per_example
from tfmodels.training import loop
from tfmodels.training.strategy import build_strategy

KIND = "classifier"
VAL_SHARE = 0.1
"""Share of labelled items the classifier holds out to measure accuracy."""
IMAGENET_PREFIX = "imagenet:"
"""``baseline.features_from=imagenet:TOWER[@R]``: VBPR on a backbone's frozen ImageNet features."""


class ClassifierTask(loop.Task):
    """Category classification on catalogue images: the pre-training of the CNN-F trunk.

    train_step (replica context): mean softmax cross-entropy + classifier.l2 *
    sum ||kernel||^2 (once per step), Adam; images flipped left-right at random.
    evaluate: top-1 accuracy on the 10% held-out labelled items.
    """

    kind = KIND
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
        self.optimizer = loop.build_optimizer(self.cfg.classifier.learning_rate,
                                              self.cfg.train.mixed_precision)

    def initialize(self):
        loaded = towers.load_tower_weights(self.model.item_tower, self.cfg.model)
        if loaded:
            print(f"[classifier] {self.cfg.model.tower} initialised with {loaded}", flush=True)

    def checkpoint_items(self):
        return {"model": self.model, "optimizer": self.optimizer}

    def train_step(self, batch):
        x = to_model_input(batch["images"])
        flip = tf.random.uniform([tf.shape(x)[0], 1, 1, 1]) < 0.5
        x = tf.where(flip, tf.image.flip_left_right(x), x)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = loop.average_loss(cross_entropy_per_example(batch["category"], logits))
            loss += loop.scale_regularization(self.cfg.classifier.l2 * self.model.kernel_l2())
        grads = loop.compute_gradients(tape, self.optimizer, loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), batch["category"]), tf.float32)
        return {"loss": loss, "train_accuracy": loop.average_loss(correct)}

    def make_dataset(self, strategy, start_step):
        batch = self.cfg.classifier.batch_size
        seed = self.cfg.train.seed + start_step

        def fn(ctx):
            per_replica = ctx.get_per_replica_batch_size(batch)
            return labelled_image_batches(self.images, self.categories, self.train_items, per_replica,
                                          seed + ctx.input_pipeline_id)

        return strategy.distribute_datasets_from_function(fn)

    def evaluate(self, step):
        logits = embed_in_batches(self.model, self.images, items=self.val_items)
        acc = float(np.mean(np.argmax(logits, -1) == self.categories[self.val_items]))
        return {"accuracy": acc, "val_items": int(len(self.val_items)),
                "chance": float(np.max(np.bincount(self.categories[self.val_items])) / len(self.val_items))}

    def model_info(self):
        return {"num_categories": self.num_categories, "category_names": self.category_names,
                "resolution": int(self.images.shape[1]),
                "feature_layer": towers.get(self.cfg.model.tower).feature_layer,
                "train_items": int(len(self.train_items)), "val_items": int(len(self.val_items))}


def train_classifier(cfg, workdir: str, dataset=None) -> dict:
    """``tfmodels train classifier``: the CNN-F trunk + softmax head on the catalogue's labels.

    Trains up to ``cfg.classifier.steps`` steps (or ``train.minutes``) of
    ``cfg.classifier.batch_size`` images at ``cfg.data.resolution``; checkpoints and
    evaluation follow ``cfg.train``. ``dataset`` defaults to ``load_dataset(cfg)``
    (any labelled image set will do: users are not needed).
    """
    strategy = build_strategy(cfg.train.strategy)
    workdir_lib.check_resumable(cfg, workdir, kinds.get(KIND).resume_keys)
    workdir_lib.save_config(cfg, workdir)
    if dataset is None:
        from tfmodels.data.loading import load_dataset

        dataset = load_dataset(cfg)
    images = load_images(dataset, cfg.data.resolution, cache_dir=cfg.data.cache_dir,
                         skip_bad=cfg.data.skip_bad_images)
    task = ClassifierTask(cfg, images, dataset.categories, dataset.category_names)
    return loop.run(task, cfg.train, workdir, strategy, steps=kinds.get(KIND).steps(cfg))


def load_classifier(workdir: str, best: bool = True) -> tuple[CategoryClassifier, object]:
    """(classifier with restored weights, its Config) from a classifier work directory."""
    info = workdir_lib.read_model_json(workdir)
    if info.get("kind") != KIND:
        raise ValueError(f"{workdir} holds a {info.get('kind')!r} model, not a classifier")
    cfg = workdir_lib.load_config(workdir)
    model = CategoryClassifier(cfg.model, int(info["resolution"]), int(info["num_categories"]))
    tf.train.Checkpoint(model=model).restore(workdir_lib.checkpoint_path(workdir, best)).expect_partial()
    return model, cfg


def classifier_features(classifier_workdir: str, dataset, cache_dir: str = "", best: bool = True) -> np.ndarray:
    """Frozen fc7 features float32 [num_items, fc_units] of every item, scaled to mean L2 norm 1.

    The scale only conditions VBPR's optimisation (E and beta' see inputs of
    norm ~1 whatever the classifier's width); it does not change the ranking power.
    """
    model, ccfg = load_classifier(classifier_workdir, best)
    images = load_images(dataset, model.resolution, cache_dir=cache_dir or ccfg.data.cache_dir,
                         skip_bad=ccfg.data.skip_bad_images)
    feats = embed_in_batches(model.features, images)
    return _unit_mean_norm(feats, f"classifier {classifier_workdir}")


def _unit_mean_norm(feats: np.ndarray, what: str) -> np.ndarray:
    feats = feats.astype(np.float32)
    norm = float(np.mean(np.linalg.norm(feats, axis=1)))
    if not np.isfinite(norm) or norm <= 0:
        raise ValueError(f"{what}: features are all zero or non-finite")
    return feats / norm


def imagenet_features(spec: str, dataset, cache_dir: str = "", resolution: int = 224,
                      skip_bad: bool = False) -> np.ndarray:
    """Pooled ImageNet features float32 [num_items, 1280] of a backbone, scaled to mean L2 norm 1.

    Args:
      spec: ``TOWER`` or ``TOWER@R`` (e.g. ``efficientnet_lite0@224``): the backbone
        and the image side it sees (default ``resolution``).
    """
    name, _, side = spec.partition("@")
    if side and not side.isdigit():
        raise ValueError(f"features {IMAGENET_PREFIX}{spec}: expected {IMAGENET_PREFIX}TOWER[@R], R in pixels")
    side = int(side) if side else resolution
    backbone = towers.pretrained_backbone(name, side)
    images = load_images(dataset, side, cache_dir=cache_dir, skip_bad=skip_bad)
    return _unit_mean_norm(embed_in_batches(backbone, images, what=f"{name} ImageNet features at {side} px"),
                           f"{IMAGENET_PREFIX}{spec}")


def frozen_features(source: str, dataset, cfg) -> np.ndarray:
    """VBPR's frozen features for ``baseline.features_from``: ``imagenet:TOWER[@R]`` or a classifier work directory."""
    if source.startswith(IMAGENET_PREFIX):
        return imagenet_features(source[len(IMAGENET_PREFIX):], dataset, cfg.data.cache_dir, cfg.data.resolution,
                                 cfg.data.skip_bad_images)
    return classifier_features(source, dataset, cache_dir=cfg.data.cache_dir)


def load_pretrained_tower(classifier_workdir: str, best: bool = True) -> tf.keras.Model:
    """The restored CNN-F trunk (``item_tower``) of a classifier work directory.

    Built by ``build_item_tower`` with the classifier's own model config and
    resolution, so its layers (conv1..conv5, fc6, fc7, embedding) match a DVBPR
    tower of the same settings by name and shape (``copy_tower_weights``).
    """
    if not os.path.isdir(classifier_workdir):
        raise FileNotFoundError(f"pre-trained classifier {classifier_workdir!r} does not exist")
    return load_classifier(classifier_workdir, best)[0].item_tower


def _weight_layers(model: tf.keras.Model, prefix: str = ""):
    """(path, layer) of every layer holding weights, nested models walked ("efficientnet_lite0/stem_conv").

    Layer by layer, because a nested model's own ``get_weights()`` lists trainable weights before frozen
    ones: two towers with different ``model.frozen_stages`` would list the same weights in other orders.
    """
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from _weight_layers(layer, f"{prefix}{layer.name}/")
        elif layer.weights:
            yield prefix + layer.name, layer


def copy_tower_weights(source: tf.keras.Model, tower: tf.keras.Model, what: str = "pre-trained tower",
                       keep_fresh=()) -> list[str]:
    """Copies weights layer by layer (matched by name) from ``source`` into ``tower``; returns the names of
    ``tower``'s top-level layers that got weights (a nested backbone counts as one).

    Layers named in ``keep_fresh`` (e.g. the final ``embedding`` layer when K
    differs) keep their initialisation when the source lacks them or their shapes
    differ; any other missing layer or shape mismatch is an error.

    Raises:
      ValueError: naming the first layer that is missing or whose shapes differ.
    """
    sources = dict(_weight_layers(source))
    copied = []
    for path, layer in _weight_layers(tower):
        fresh = path.split("/")[0] in keep_fresh
        if path not in sources:
            if fresh:
                continue
            raise ValueError(f"{what} has no layer {path!r}")
        weights, src_w = layer.get_weights(), sources[path].get_weights()
        shapes, src_shapes = [w.shape for w in weights], [w.shape for w in src_w]
        if shapes != src_shapes:
            if fresh:
                continue
            raise ValueError(f"{what}: layer {path} has shapes {src_shapes}, the target needs {shapes} "
                             f"(use the same model.width / fc_units / data.resolution)")
        layer.set_weights(src_w)
        if path.split("/")[0] not in copied:
            copied.append(path.split("/")[0])
    if not copied:
        raise ValueError(f"no weights copied from {what}")
    return copied
