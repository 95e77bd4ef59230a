"""Training and loading the DVBPR recommender.

``DVBPRTask`` plugs DVBPR into the shared loop (``tfmodels.training.loop``):

- the batch is {"user", "pos", "neg"} int32 triples from
  ``tfmodels.data.sampler.distributed_triples``; pixels are gathered *inside the
  step* from a uint8 image table [N, R, R, 3] (a non-trainable variable on the
  host CPU, so only the batch's images move to an accelerator) and converted
  with ``tfmodels.data.pixels.to_model_input``;
- one tower call embeds the 2B images of a batch (i's and j's), then the
  paper's batch objective ``sum_b[-ln sigmoid(x_ui - x_uj) + lambda_theta
  ||theta_u||^2] + lambda_cnn sum_W ||W||^2``, divided by the global batch size
  B (``tfmodels.models.dvbpr``): the mean per-triple loss plus
  ``lambda_cnn / B * sum_W ||W||^2``. B comes from ``tf.shape`` at run time;
- evaluation scores validation users with ``tfmodels.evaluation.evaluate_split``
  through ``build_scorer``: every item is embedded once, in batches, and users
  are scored with one matrix product ``theta[users] @ E^T``.

``train_dvbpr(cfg, workdir)`` is the command-line entry point;
``load_dvbpr(workdir)`` and ``load_scorer(workdir)`` reopen a finished (or
running) work directory for evaluation, design and export from the directory
alone (``tfmodels.workdir``: ids and split from W/data.npz, pixels from the image
cache training read, else the raw data again).
"""

from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf

from tfmodels import files, kinds
from tfmodels import workdir as workdir_lib
from tfmodels.data import images as images_lib
from tfmodels.data.pixels import embed_in_batches, resize_to, to_model_input, to_uint8
from tfmodels.models import towers
from tfmodels.models.dvbpr import DVBPR, build_dvbpr, dvbpr_loss_per_example, bpr_loss_per_example
from tfmodels.training import loop
from tfmodels.training.strategy import build_strategy

KIND = "dvbpr"

PROJECTOR_ITEMS = 4096
"""At most this many items (a seeded random subset) go to the embedding projector."""
PROJECTOR_THUMB = 32
"""Thumbnail side in the projector's sprite image."""


# --------------------------------------------------------------------------- data


def load_data(cfg):
    """(dataset, split, images uint8 [N, R, R, 3]) read from the raw data ``cfg.data`` names."""
    from tfmodels.data.loading import load_for_training

    dataset, split = load_for_training(cfg)
    pixels = images_lib.load_images(dataset, cfg.data.resolution, cfg.data.cache_dir,
                                    skip_bad=cfg.data.skip_bad_images)
    return dataset, split, pixels


# --------------------------------------------------------------------------- scoring


def embed_items(model: DVBPR, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Phi(X_i) for every item: float32 [N, K], in batches (inference mode, host)."""
    return embed_in_batches(model.item_embeddings, images, batch_size).astype(np.float32)


def build_scorer(model: DVBPR, images: np.ndarray, batch_size: int = 256):
    """A scorer ``user_idx int [B] -> float32 [B, N]`` = theta[users] @ E^T.

    Item embeddings E are computed once, when the scorer is built; the model's
    later weight updates do not affect it (build a new scorer after training).
    """
    return scorer_from(model, embed_items(model, images, batch_size))


def scorer_from(model: DVBPR, item_emb: np.ndarray):
    """``build_scorer``'s scorer over item embeddings already computed (float32 [N, K])."""
    item_emb = np.asarray(item_emb, np.float32)
    theta = model.user_embedding.embeddings.numpy().astype(np.float32)

    def score_fn(user_idx):
        return theta[np.asarray(user_idx, np.int64)] @ item_emb.T

    score_fn.item_embeddings = item_emb
    score_fn.user_vectors = theta
    return score_fn


def _caches_frozen(model_cfg) -> bool:
    """Whether DVBPR trains on a table of the frozen stages' outputs (``model.cache_frozen``)."""
    return bool(model_cfg.cache_frozen and model_cfg.frozen_stages > 0
                and towers.get(model_cfg.tower).load_weights is not None)


def frozen_activations(lower: tf.keras.Model, images: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """``lower`` (a backbone's frozen stages) on every item: float16 [N, h, w, c], with a progress line."""
    out = None
    started = time.perf_counter()
    for i in range(0, len(images), chunk):
        part = embed_in_batches(lower, images, batch_size=128, items=np.arange(i, min(i + chunk, len(images))))
        if out is None:
            out = np.empty((len(images),) + part.shape[1:], np.float16)
            print(f"[dvbpr] caching the frozen stages' output for {len(images)} items: {list(out.shape[1:])} "
                  f"float16 each, {out.nbytes / 2**20:.0f} MiB", flush=True)
        out[i:i + len(part)] = part
    print(f"[dvbpr] cached in {time.perf_counter() - started:.0f} s", flush=True)
    return out


# --------------------------------------------------------------------------- the task


class DVBPRTask(loop.Task):
    """DVBPR in the shared loop. Host-side construction; see the module docstring."""

    kind = KIND
    best_metric = "auc_all"
    best_mode = "max"

    def __init__(self, cfg, dataset, split, images: np.ndarray, evaluate_fn=None):
        """
        Args:
          cfg: the full Config (model, train, data.resolution).
          dataset: the Dataset (ids and categories for the projector).
          split: the leave-one-out Split the sampler and evaluation use.
          images: uint8 [num_items, R, R, 3], R = cfg.data.resolution.
          evaluate_fn: optional ``(scorer, split) -> dict`` replacing
            ``evaluate_split(scorer, split, "val")`` (tests use a cheap one).
        """
        if images.ndim != 4 or images.shape[1:] != (cfg.data.resolution, cfg.data.resolution, 3):
            raise ValueError(f"images: expected uint8 [N, {cfg.data.resolution}, {cfg.data.resolution}, 3], "
                             f"got {images.dtype} {list(images.shape)}")
        if len(images) != split.num_items:
            raise ValueError(f"images: {len(images)} rows for {split.num_items} items in the split")
        self.cfg = cfg
        self.dataset = dataset
        self.split = split
        self.images = images
        self.evaluate_fn = evaluate_fn

    def build(self, strategy):
        cfg = self.cfg
        self.model = build_dvbpr(cfg.model, self.split.num_users, cfg.data.resolution)
        # A backbone tower trains with its own Adam (train.backbone_learning_rate), the rest
        # (users, embedding head, CNN-F) with train.learning_rate.
        backbone = towers.backbone_of(self.model.item_tower, cfg.model)
        ids = {id(v) for v in backbone.trainable_variables} if backbone is not None else set()
        self.backbone_variables = [v for v in self.model.trainable_variables if id(v) in ids]
        self.head_variables = [v for v in self.model.trainable_variables if id(v) not in ids]
        self.optimizer = loop.build_optimizer(cfg.train.learning_rate, cfg.train.mixed_precision)
        # Slots now (not at the first step), so a restored checkpoint fills them at once.
        self.optimizer.build(self.head_variables)
        self.backbone_optimizer = None
        if backbone is not None:
            self.backbone_optimizer = loop.build_optimizer(
                cfg.train.backbone_learning_rate or cfg.train.learning_rate, cfg.train.mixed_precision)
            self.backbone_optimizer.build(self.backbone_variables)
        if cfg.train.lambda_cnn_to not in ("zero", "start"):
            raise ValueError(f"train.lambda_cnn_to={cfg.train.lambda_cnn_to!r}: expected zero or start")
        self.kernel_start = None
        if cfg.train.lambda_cnn_to == "start":
            # W_0 of L2-SP, set by initialize() and kept in the checkpoint (a resumed run pulls to the same W_0).
            self.kernel_start = tf.Module(name="kernel_start")
            self.kernel_start.values = [tf.Variable(tf.zeros_like(k), trainable=False)
                                        for k in towers.kernel_variables(self.model.item_tower)]
        self.upper = None
        if _caches_frozen(cfg.model):
            self.lower, self.upper = towers.split_frozen(self.model.item_tower, cfg.model)

    def initialize(self):
        # Only for a fresh run: a resumed one has the tower in its checkpoint, so the
        # classifier's folder (or the weights file) need not exist any more.
        loaded = towers.load_tower_weights(self.model.item_tower, self.cfg.model)
        if loaded:
            print(f"[dvbpr] {self.cfg.model.tower} item tower initialised with {loaded}", flush=True)
        if self.cfg.model.init_from:
            load_pretrained_into(self.model, self.cfg.model.init_from, self.split)
        if self.kernel_start is not None:
            for start, kernel in zip(self.kernel_start.values, towers.kernel_variables(self.model.item_tower)):
                start.assign(kernel)

    def build_inputs(self, strategy):
        # Outside the strategy's scope and pinned to the host CPU: a plain (not
        # mirrored) variable every replica reads, so the table is stored once per
        # worker and gathers run next to it (only the batch's pixels move).
        if _caches_frozen(self.cfg.model):
            return  # the step reads the frozen stages' outputs instead (ready())
        with tf.device("/cpu:0"):
            self.image_table = tf.Variable(np.asarray(self.images), trainable=False, name="image_table")

    def ready(self):
        if self.upper is None:
            return
        # The frozen stages' weights are final now (restored or initialised): their output per item, once.
        self.activations = frozen_activations(self.lower, self.images)
        with tf.device("/cpu:0"):
            self.activation_table = tf.Variable(self.activations, trainable=False, name="activation_table")

    def checkpoint_items(self):
        items = {"model": self.model, "optimizer": self.optimizer}
        if self.backbone_optimizer is not None:
            items["backbone_optimizer"] = self.backbone_optimizer
        if self.kernel_start is not None:
            items["kernel_start"] = self.kernel_start
        return items

    def make_dataset(self, strategy, start_step):
        from tfmodels.data.sampler import distributed_triples

        # A resumed run draws fresh triples instead of replaying the first ones.
        return distributed_triples(strategy, self.split, self.cfg.train.batch_size,
                                   seed=self.cfg.train.seed + start_step)

    def train_step(self, batch):
        t = self.cfg.train
        users, pos, neg = batch["user"], batch["pos"], batch["neg"]
        items = tf.concat([pos, neg], axis=0)
        if self.upper is None:
            inputs, tower = to_model_input(tf.gather(self.image_table, items)), self.model.item_embeddings
        else:
            inputs = tf.cast(tf.gather(self.activation_table, items), tf.float32)
            tower = lambda x, training: tf.cast(self.upper(x, training=training), tf.float32)  # noqa: E731
        variables = self.head_variables + self.backbone_variables
        with tf.GradientTape() as tape:
            phi = tower(inputs, training=True)
            phi_i, phi_j = tf.split(phi, 2, axis=0)
            theta = self.model.user_vectors(users)
            x_ui = tf.reduce_sum(theta * phi_i, axis=-1)
            x_uj = tf.reduce_sum(theta * phi_j, axis=-1)
            per_example = dvbpr_loss_per_example(theta, x_ui, x_uj, t.lambda_theta)
            # The paper's objective sums over the batch's triples and adds the CNN
            # term once; we divide all of it by the global batch size B.
            global_batch = tf.cast(tf.shape(users)[0] * tf.distribute.get_replica_context().num_replicas_in_sync,
                                   tf.float32)
            l2 = self.model.cnn_l2() if self.kernel_start is None else towers.kernel_l2(
                self.model.item_tower, center=self.kernel_start.values)
            reg_cnn = loop.scale_regularization(t.lambda_cnn * l2 / global_batch)
            loss = loop.average_loss(per_example) + reg_cnn
        grads = loop.compute_gradients(tape, self.optimizer, loss, variables)
        n = len(self.head_variables)
        self.optimizer.apply_gradients(zip(grads[:n], self.head_variables))
        if self.backbone_optimizer is not None:
            self.backbone_optimizer.apply_gradients(zip(grads[n:], self.backbone_variables))
        bpr = loop.average_loss(bpr_loss_per_example(x_ui, x_uj))
        return {"loss": loss, "bpr": bpr, "reg_theta": loop.average_loss(per_example) - bpr,
                "reg_cnn": reg_cnn,
                "pair_acc": loop.average_loss(tf.cast(x_ui > x_uj, tf.float32))}

    def scorer(self):
        if self.upper is None:
            return build_scorer(self.model, self.images)
        # The same embeddings as the whole tower gives (up to float16 rounding), at a fraction of the cost.
        emb = np.concatenate([self.upper(tf.cast(self.activations[i:i + 1024], tf.float32), training=False).numpy()
                              for i in range(0, len(self.activations), 1024)])
        return scorer_from(self.model, emb)

    def evaluate(self, step):
        scorer = self.scorer()
        if self.evaluate_fn is not None:
            return self.evaluate_fn(scorer, self.split)
        from tfmodels.evaluation import evaluate_split

        return evaluate_split(scorer, self.split, which="val", seed=self.cfg.data.seed)

    def histogram_variables(self):
        return self.model.trainable_variables

    def model_info(self):
        return {"num_users": self.split.num_users, "num_items": self.split.num_items,
                "resolution": self.cfg.data.resolution, "embedding_dim": self.cfg.model.embedding_dim,
                "dataset": self.dataset.name if self.dataset is not None else ""}

    def finish(self, workdir, step, chief):
        if chief and self.dataset is not None:
            write_projector(workdir, self.model, self.dataset, self.images)


# --------------------------------------------------------------------------- pre-trained init


def load_pretrained_into(model: DVBPR, source_workdir: str, split) -> None:
    """Starts a fresh DVBPR ``model`` from a trained work directory (``model.init_from``).

    - A category classifier (``tfmodels.training.classifier``, built with the same
      ``build_item_tower``, so layers match by name): its item tower. The final
      ``embedding`` layer keeps its fresh initialisation when its shape differs (K
      differs); a mismatch elsewhere is an error.
    - A DVBPR run on the same data and split (``split``, this run's): its best checkpoint's
      user vectors and item tower, e.g. a run that trained only the embedding head
      on a frozen backbone (``model.frozen_stages=9``, fast on the cached
      features) before this one fine-tunes the upper stages from it (linear
      probing, then fine-tuning: the backbone's first updates then follow a
      trained head instead of a random one).

    Raises:
      FileNotFoundError: ``source_workdir`` is not a trained work directory.
      ValueError: another kind of run, another split, or a tower that does not match.
    """
    from tfmodels.training import classifier

    what = f"model.init_from={source_workdir}"
    kind = workdir_lib.read_model_json(source_workdir).get("kind")
    if kind == KIND:
        src_cfg = workdir_lib.load_config(source_workdir)
        _, src_split = workdir_lib.load_data(source_workdir)
        if not _same_split(src_split, split):
            raise ValueError(f"{what}: that DVBPR run has another split ({src_split.num_users} users, "
                             f"{src_split.num_items} items, {len(src_split.train_item)} training pairs; this run "
                             f"{split.num_users}, {split.num_items}, {len(split.train_item)}): its user vectors "
                             f"belong to other users")
        source = build_dvbpr(src_cfg.model, src_split.num_users, src_cfg.data.resolution)
        tf.train.Checkpoint(model=source).restore(workdir_lib.checkpoint_path(source_workdir)).expect_partial()
        copied = classifier.copy_tower_weights(source.item_tower, model.item_tower, what)
        model.user_embedding.set_weights(source.user_embedding.get_weights())
        print(f"[dvbpr] initialised from the DVBPR run {source_workdir} (best checkpoint): user vectors, "
              f"{', '.join(copied)}", flush=True)
        return
    if kind != "classifier":
        raise ValueError(f"{what}: a {kind} work directory; expected a category classifier or a DVBPR run")
    source = classifier.load_pretrained_tower(source_workdir)
    copied = classifier.copy_tower_weights(source, model.item_tower, what, keep_fresh=("embedding",))
    fresh = [layer.name for layer in model.item_tower.layers if layer.weights and layer.name not in copied]
    print(f"[dvbpr] item tower initialised from {source_workdir}: {', '.join(copied)}"
          + (f" (kept fresh: {', '.join(fresh)})" if fresh else ""), flush=True)


def _same_split(a, b) -> bool:
    return (a.num_users, a.num_items) == (b.num_users, b.num_items) and all(
        np.array_equal(getattr(a, k), getattr(b, k)) for k in ("train_user", "train_item", "val_item", "test_item"))


# --------------------------------------------------------------------------- projector


def write_projector(workdir: str, model: DVBPR, dataset, images: np.ndarray,
                    max_items: int = PROJECTOR_ITEMS, thumb: int = PROJECTOR_THUMB) -> str:
    """TensorBoard embedding projector of item embeddings, with an image sprite.

    Writes ``W/tb/`` projector files: a checkpoint holding the embedding matrix,
    ``metadata.tsv`` (item id, category) and ``sprite.png`` (thumbnails in a
    square grid). Returns the folder.
    """
    from tensorboard.plugins import projector

    from tfmodels.data.preview import save_png

    logdir = os.path.join(workdir, "tb")
    os.makedirs(logdir, exist_ok=True)
    n = len(images)
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(n, size=min(n, max_items), replace=False))
    emb = embed_items(model, images[idx] if len(idx) < n else images)
    thumbs = np.asarray(to_uint8(resize_to(to_model_input(np.asarray(images[idx])), thumb)))
    side = int(np.ceil(np.sqrt(len(idx))))
    sprite = np.full((side * thumb, side * thumb, 3), 255, np.uint8)
    for k, img in enumerate(thumbs):
        r, c = divmod(k, side)
        sprite[r * thumb:(r + 1) * thumb, c * thumb:(c + 1) * thumb] = img
    save_png(sprite, os.path.join(logdir, "sprite.png"))

    names = dataset.category_names
    rows = ["item_id\tcategory\n"]
    for i in idx:
        c = int(dataset.categories[i]) if len(dataset.categories) else -1
        cat = names[c] if 0 <= c < len(names) else "?"
        item_id = str(dataset.item_ids[i]).replace("\t", " ")
        rows.append(f"{item_id}\t{cat.replace(chr(9), ' ') or '?'}\n")
    files.write_text(os.path.join(logdir, "metadata.tsv"), "".join(rows))

    # As in TensorBoard's projector guide: a checkpoint saved in the log folder
    # (its "checkpoint" state file is how the projector finds the tensor).
    var = tf.Variable(emb, name="item_embedding")
    tf.train.Checkpoint(item_embedding=var).save(os.path.join(logdir, "embedding.ckpt"))
    cfg = projector.ProjectorConfig()
    e = cfg.embeddings.add()
    e.tensor_name = "item_embedding/.ATTRIBUTES/VARIABLE_VALUE"
    e.metadata_path = "metadata.tsv"
    e.sprite.image_path = "sprite.png"
    e.sprite.single_image_dim.extend([thumb, thumb])
    projector.visualize_embeddings(logdir, cfg)
    return logdir


# --------------------------------------------------------------------------- entry points


def train_dvbpr_on(cfg, workdir: str, dataset, split, images, strategy=None, evaluate_fn=None) -> dict:
    """Trains DVBPR on given data (resuming from ``W/ckpt``); returns ``loop.run``'s summary."""
    strategy = strategy or build_strategy(cfg.train.strategy)
    workdir_lib.check_resumable(cfg, workdir, kinds.get(KIND).resume_keys)
    workdir_lib.save_data(workdir, dataset, split, images)  # refuses other data before config.json changes
    workdir_lib.save_config(cfg, workdir)
    task = DVBPRTask(cfg, dataset, split, images, evaluate_fn=evaluate_fn)
    result = loop.run(task, cfg.train, workdir, strategy)
    result["task"] = task
    return result


def train_dvbpr(cfg, workdir: str) -> dict:
    """``tfmodels train dvbpr``: load data, train with validation AUC, keep the best checkpoint.

    Writes W/config.json, W/model.json, W/ckpt/, W/best/, W/tb/ (scalars,
    histograms, embedding projector) and W/metrics.jsonl. Returns the loop's summary.
    """
    strategy = build_strategy(cfg.train.strategy)  # before any other TF work (multi-worker)
    dataset, split, images = load_data(cfg)
    print(f"[dvbpr] {dataset.name}: {split.num_users} users, {split.num_items} items, "
          f"{len(split.train_item)} training pairs, images {list(images.shape)}", flush=True)
    return train_dvbpr_on(cfg, workdir, dataset, split, images, strategy=strategy)



def load_dvbpr(workdir: str, best: bool = True):
    """Reopens a DVBPR work directory: (model, dataset, split, images uint8 [N, R, R, 3]).

    Restores W/best/ (best validation AUC) when ``best`` and it exists, else the
    latest W/ckpt/ checkpoint. Ids and split come from W/data.npz; the pixels from
    the image cache training read or, when that is gone, from the raw data again.
    """
    workdir_lib.read_model_json(workdir, kind=KIND)
    cfg = workdir_lib.load_config(workdir)
    dataset, split = workdir_lib.load_data(workdir)
    images = workdir_lib.image_array(workdir)
    model = build_dvbpr(cfg.model, split.num_users, cfg.data.resolution)
    tf.train.Checkpoint(model=model).restore(workdir_lib.checkpoint_path(workdir, best)).expect_partial()
    return model, dataset, split, images


def load_scorer(workdir: str, best: bool = True):
    """(score_fn, dataset, split) of a DVBPR work directory (``tfmodels.kinds.load_scorer`` for any kind)."""
    model, dataset, split, images = load_dvbpr(workdir, best=best)
    return build_scorer(model, images), dataset, split
