"""Training and loading the baselines (PopRank, BPR-MF, VBPR) with the shared loop.

``tfmodels train {pop,bpr-mf,vbpr}`` call ``train_<kind>(cfg, workdir)`` (through
``tfmodels.kinds``). Each writes the work-directory layout every kind shares
(``tfmodels.workdir``) through ``tfmodels.training.loop.run``, under the strategy
named by ``cfg.train.strategy``:

- ``pop``: PopRank; its one "step" counts training interactions per item.
- ``bpr-mf``: BPR-MF on triples from ``tfmodels.data.sampler``; Adam at
  ``cfg.baseline.learning_rate``, L2 ``cfg.baseline.l2`` on the batch's factors
  and biases; validation AUC every ``eval_every`` steps, best kept by ``auc_all``.
- ``vbpr``: VBPR on frozen fc7 features of a category classifier
  (``tfmodels.training.classifier``: ``cfg.baseline.features_from``, or one
  trained first into ``W/pretrained``), or on an ImageNet backbone's pooled
  features (``baseline.features_from=imagenet:efficientnet_lite0[@R]``).

``load_scorer(workdir)`` rebuilds a trained baseline as a scorer for
``tfmodels.evaluation.evaluate_split`` from the work directory alone;
never-trained items are scored by the shared rule of ``tfmodels.evaluation``.
Everything here runs on the host except ``train_step`` methods (replica context).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tfmodels import evaluation, kinds
from tfmodels import workdir as workdir_lib
from tfmodels.data.loading import load_for_training
from tfmodels.models.baselines import BPRMF, VBPR, PopRank
from tfmodels.training import classifier, loop
from tfmodels.training.strategy import build_strategy


# --------------------------------------------------------------------------- data helpers


def _make_score_fn(model):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def score(users):
        return model.score_all(users)

    return lambda users: score(tf.constant(np.asarray(users), tf.int32)).numpy()


def _triples(strategy, split, cfg, start_step):
    from tfmodels.data.sampler import distributed_triples

    # A resumed run draws fresh triples instead of replaying the first ones.
    return distributed_triples(strategy, split, cfg.baseline.batch_size, seed=cfg.train.seed + start_step)


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


# --------------------------------------------------------------------------- train_<kind>


def _start(cfg, workdir, kind, dataset, split):
    """Strategy first (multi-worker needs it before other TF work), then the resume guard,
    config.json and data.npz."""
    strategy = build_strategy(cfg.train.strategy)
    workdir_lib.check_resumable(cfg, workdir, kinds.get(kind).resume_keys)
    if split is None:
        dataset, split = load_for_training(cfg)
    workdir_lib.save_data(workdir, dataset, split)  # refuses other data before config.json changes
    workdir_lib.save_config(cfg, workdir)
    print(f"[{kind}] workdir {workdir}", flush=True)
    return strategy, dataset, split


def train_pop(cfg, workdir: str, dataset=None, split=None) -> dict:
    """PopRank: counts training interactions (one "step"); same work-directory layout as the others."""
    strategy, dataset, split = _start(cfg, workdir, "pop", dataset, split)
    return loop.run(PopTask(split), cfg.train, workdir, strategy, steps=kinds.get("pop").steps(cfg))


def train_bpr_mf(cfg, workdir: str, dataset=None, split=None) -> dict:
    """BPR-MF (theta_u . gamma_i + beta_i) trained on BPR triples with the shared loop."""
    strategy, dataset, split = _start(cfg, workdir, "bpr-mf", dataset, split)
    return loop.run(BPRTask(cfg, split), cfg.train, workdir, strategy, steps=cfg.baseline.steps)


def train_vbpr(cfg, workdir: str, dataset=None, split=None, features=None, features_from: str = "") -> dict:
    """VBPR on frozen classifier features (trains the classifier first if none is given).

    ``features`` float32 [num_items, F], if given, are used instead of a classifier's
    (``features_from`` then only names their origin in model.json).
    """
    strategy, dataset, split = _start(cfg, workdir, "vbpr", dataset, split)
    source = features_from
    if features is None:
        source = cfg.baseline.features_from
        if not source:
            source = os.path.join(workdir, "pretrained")
            print(f"[vbpr] pre-training the category classifier in {source}", flush=True)
            classifier.train_classifier(cfg, source, dataset=dataset)
        features = classifier.frozen_features(source, dataset, cfg)
        if not source.startswith(classifier.IMAGENET_PREFIX):
            source = os.path.abspath(source)
    if features.shape[0] != split.num_items:
        raise ValueError(f"features from {source} cover {features.shape[0]} items, "
                         f"the dataset has {split.num_items}")
    return loop.run(BPRTask(cfg, split, features, source), cfg.train, workdir, strategy, steps=cfg.baseline.steps)


# --------------------------------------------------------------------------- loading


def build_baseline(info: dict):
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
    raise ValueError(f"model.json kind {kind!r} is not a baseline (pop, bpr-mf, vbpr)")


def load_scorer(workdir: str, best: bool = True):
    """(score_fn, dataset, split) of a trained pop / bpr-mf / vbpr work directory, from the directory alone.

    ``score_fn(user_idx int [B]) -> float32 [B, num_items]`` with never-trained
    items scored by the rule of ``tfmodels.evaluation`` (the trained-item mask
    and VBPR's features are part of the checkpoint); ids and split from W/data.npz.
    """
    info = workdir_lib.read_model_json(workdir)
    model = build_baseline(info)
    tf.train.Checkpoint(model=model).restore(workdir_lib.checkpoint_path(workdir, best)).expect_partial()
    dataset, split = workdir_lib.load_data(workdir)
    return _make_score_fn(model), dataset, split
