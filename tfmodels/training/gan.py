"""Training the category-conditional GAN with the shared strategy-aware loop.

One training step (``gan_train_step``, replica context) on a batch of real
images x (uint8, converted with ``to_model_input``) and their categories c:

1. discriminator update: z ~ N(0, I), D minimises the per-example loss of
   ``tfmodels.models.gan.discriminator_loss_per_example`` on (D(x, c), D(G(z, c), c)),
2. generator update: G minimises ``generator_loss_per_example`` on the updated D's scores of
   the same fakes G(z, c) (``gan.reuse_fakes``, the default: G runs forward once per step) or
   of fakes from a fresh z (the paper's recipe: a second forward pass of G),

each averaged over the *global* batch with ``tf.nn.compute_average_loss`` and
applied by its own Adam (lr and beta1 from ``cfg.gan``). One step counter
(``GanTask.step``) counts both updates as one step; checkpoints hold G, D, both
optimizers and the counter, so a killed run resumes at its saved step.

Every ``cfg.gan.sample_every`` steps the task writes a per-category image grid
(rows = categories, columns = the same fixed noise vectors) to TensorBoard and
as ``W/samples/step_<n>.png``. Work directory (the project-wide layout):
``W/config.json``, ``W/model.json`` {"kind": "gan", "step", "num_categories",
"category_names", "resolution", "noise_dim", "loss", "dataset"}, ``W/ckpt/``,
``W/tb/``, ``W/metrics.jsonl``. ``load_gan(workdir)`` restores G and D for design and export.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import tensorflow as tf

from tfmodels import kinds
from tfmodels import workdir as workdir_lib
from tfmodels.config import EMA_STATISTICS
from tfmodels.data.pixels import to_model_input, to_uint8
from tfmodels.data.sampler import labelled_image_batches
from tfmodels.models import gan as gan_lib
from tfmodels.training import loop as loop_lib

MODEL_KIND = "gan"
GRID_COLUMNS = 8


def _discriminator_update(discriminator, d_opt, real, c, fake, *, loss, global_batch_size, augment, r1):
    """One D update on real images and fakes (both float [-1, 1]); returns (d_real, d_fake, d_loss, penalty)."""
    fake = gan_lib.diff_augment(tf.stop_gradient(fake), augment)
    with tf.GradientTape() as tape:
        penalty = tf.zeros([tf.shape(real)[0]])
        if r1 > 0:  # a Python branch: without R1 the step records no second tape
            with tf.GradientTape() as r1_tape:
                r1_tape.watch(real)
                d_real = discriminator([real, c], training=True)
                d_real_sum = tf.reduce_sum(d_real)  # on the tape: R1 differentiates it w.r.t. the pixels
            grad_real = r1_tape.gradient(d_real_sum, real)
            penalty = 0.5 * r1 * tf.reduce_sum(tf.square(grad_real), axis=[1, 2, 3])
        else:
            d_real = discriminator([real, c], training=True)
        d_fake = discriminator([fake, c], training=True)
        d_loss = tf.nn.compute_average_loss(
            gan_lib.discriminator_loss_per_example(d_real, d_fake, loss) + penalty,
            global_batch_size=global_batch_size)
    grads = tape.gradient(d_loss, discriminator.trainable_variables)
    d_opt.apply_gradients(zip(grads, discriminator.trainable_variables))
    return d_real, d_fake, d_loss, penalty


def gan_train_step(generator, discriminator, g_opt, d_opt, images_uint8, categories, *,
                   noise_dim: int, num_categories: int, loss: str, global_batch_size, augment=(),
                   r1: float = 0.0, reuse_fakes: bool = True) -> dict:
    """One D update then one G update on a per-replica batch (replica context).

    Args:
      images_uint8: uint8 [b, R, R, 3] real images of this replica.
      categories: int32 [b] their category indices (the fakes use the same categories).
      global_batch_size: the batch size summed over replicas (tensor or int), for
        ``tf.nn.compute_average_loss``.
      augment: ``gan.augment`` policies: D sees ``diff_augment`` of every real and fake image, in
        both updates (so G is trained through the same augmentation).
      r1: gamma of the R1 penalty gamma / 2 * ||grad_x D(x, c)||^2 on the real images D sees.
      reuse_fakes: the G update scores the D update's fakes (G's forward pass is recorded once, on a
        tape paused while D updates) instead of generating a fresh batch.

    Returns:
      dict of per-replica scalars: d_loss, g_loss (global-batch averages, to be
      summed over replicas), d_real, d_fake (D's mean score on real / fake, for logging)
      and, with r1 > 0, r1_penalty.
    """
    real = gan_lib.diff_augment(to_model_input(images_uint8), augment)
    c = gan_lib.onehot(categories, num_categories)
    b = tf.shape(real)[0]

    z = tf.random.normal([b, noise_dim])
    with tf.GradientTape() as g_tape:
        # Fresh fakes for G (the paper's recipe) leave D's batch off G's tape: its activations need no keeping.
        with contextlib.nullcontext() if reuse_fakes else g_tape.stop_recording():
            fake = generator([z, c], training=True)
        with g_tape.stop_recording():
            d_real, d_fake, d_loss, penalty = _discriminator_update(
                discriminator, d_opt, real, c, fake, loss=loss, global_batch_size=global_batch_size,
                augment=augment, r1=r1)
        if not reuse_fakes:  # the paper's recipe: a fresh batch of fakes for G
            fake = generator([tf.random.normal([b, noise_dim]), c], training=True)
        g_fake = discriminator([gan_lib.diff_augment(fake, augment), c], training=True)
        g_loss = tf.nn.compute_average_loss(
            gan_lib.generator_loss_per_example(g_fake, loss), global_batch_size=global_batch_size)
    grads = g_tape.gradient(g_loss, generator.trainable_variables)
    g_opt.apply_gradients(zip(grads, generator.trainable_variables))

    # Means weighted so that summing over replicas gives the global mean, like the losses.
    weight = tf.cast(b, tf.float32) / tf.cast(global_batch_size, tf.float32)
    out = {"d_loss": d_loss, "g_loss": g_loss,
           "d_real": tf.reduce_mean(d_real) * weight, "d_fake": tf.reduce_mean(d_fake) * weight}
    if r1 > 0:
        out["r1_penalty"] = tf.reduce_mean(penalty) * weight
    return out


def update_ema(ema_model: tf.keras.Model, model: tf.keras.Model, decay: float) -> None:
    """w_ema <- decay * w_ema + (1 - decay) * w for every weight (batch-norm statistics included).

    Replica context: the update runs once, in cross-replica context (``merge_call``), on
    every copy of the mirrored variables; under the default strategy it is a plain assign.
    """
    pairs = list(zip(ema_model.weights, model.weights))

    def update(strategy):
        for ema_var, var in pairs:
            strategy.extended.update(ema_var, lambda e, w: e.assign(decay * e + (1.0 - decay) * w),
                                     args=(var,), group=False)

    tf.distribute.get_replica_context().merge_call(update)


STATISTICS_SAMPLES = 4096
"""Draws of (z, c) over which ``recompute_batch_norm_statistics`` measures each layer's input."""


def recompute_batch_norm_statistics(generator: tf.keras.Model, samples: int = STATISTICS_SAMPLES,
                                    batch_size: int = 256, seed: int = 0) -> None:
    """Sets each batch-norm layer's moving mean and variance to its own input's over seeded (z, c) draws.

    Layer by layer in inference mode: layer k is measured with layers 0..k-1 already normalising by their
    new statistics, so the result is what the generator sees when it samples. z ~ N(0, I), c uniform over
    the categories; the same seed gives the same statistics. (``gan.ema_statistics=recompute``: an averaged
    generator's averaged statistics belong to the live generators it averages, not to it.)
    """
    layers = [l for l in generator.layers if isinstance(l, tf.keras.layers.BatchNormalization)]
    noise_dim, num = int(generator.inputs[0].shape[-1]), int(generator.inputs[1].shape[-1])
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((samples, noise_dim)).astype(np.float32)
    c = gan_lib.onehot(rng.integers(0, num, samples), num)
    for layer in layers:
        probe = tf.keras.Model(generator.inputs, layer.input)
        total = total_sq = count = 0.0
        for s in range(0, samples, batch_size):
            x = probe([z[s:s + batch_size], c[s:s + batch_size]], training=False).numpy().astype(np.float64)
            x = x.reshape(-1, x.shape[-1])  # every position of every image is one observation of a channel
            total, total_sq, count = total + x.sum(0), total_sq + np.square(x).sum(0), count + x.shape[0]
        mean = total / count
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(total_sq / count - np.square(mean), 0.0).astype(np.float32))


def real_image_dataset(images: np.ndarray, categories: np.ndarray, batch_size: int, seed: int = 0) -> tf.data.Dataset:
    """Endless shuffled batches {"images": uint8 [batch, R, R, 3], "category": int32 [batch]}.

    Items with category -1 (unknown) are left out. The pixel table stays in host
    memory; only indices go through the shuffle, and each batch gathers its pixels.
    """
    categories = np.asarray(categories, np.int32)
    keep = np.flatnonzero(categories >= 0)
    if len(keep) == 0:
        raise ValueError("GAN training needs items with a known category; every item has category -1")
    if len(images) != len(categories):
        raise ValueError(f"GAN data: {len(images)} images but {len(categories)} categories")
    return labelled_image_batches(images, categories, keep, batch_size, seed)


def fixed_noise(noise_dim: int, columns: int = GRID_COLUMNS, seed: int = 1234) -> np.ndarray:
    """The grid's fixed noise: the same ``columns`` codes for every category (float32 [columns, noise_dim])."""
    return np.random.default_rng(seed).standard_normal((columns, noise_dim)).astype(np.float32)


def sample_grid(generator, num_categories: int, noise: np.ndarray) -> np.ndarray:
    """uint8 [C, columns, R, R, 3]: row c = G(noise, c) in inference mode."""
    cols = len(noise)
    z = np.tile(noise, (num_categories, 1))
    c = gan_lib.onehot(np.repeat(np.arange(num_categories), cols), num_categories)
    images = to_uint8(generator([z, c], training=False)).numpy()
    return images.reshape(num_categories, cols, *images.shape[1:])


def grid_image(rows: np.ndarray, labels=None) -> np.ndarray:
    """[rows, cols, H, W, 3] uint8 -> one picture (``tfmodels.data.preview.image_grid``), one row per category."""
    from tfmodels.data.preview import image_grid

    r, c = rows.shape[:2]
    return image_grid(rows.reshape(r * c, *rows.shape[2:]), cols=c, labels=labels)


def load_gan(workdir: str):
    """Restores a trained GAN from its work directory.

    Returns:
      (generator, discriminator, cfg, meta): Keras models with the latest
      checkpoint's weights (the generator's moving average when ``gan.ema`` > 0, its batch-norm statistics
      then recomputed on it with ``gan.ema_statistics=recompute``), the run's ``Config`` and ``model.json`` (which has
      ``category_names``, ``num_categories``, ``resolution``, ``noise_dim``, ``loss``, ``step``).

    Raises:
      FileNotFoundError: no config, model.json or checkpoint in ``workdir``.
    """
    cfg = workdir_lib.load_config(workdir)
    meta = workdir_lib.read_model_json(workdir, kind=MODEL_KIND)
    generator, discriminator = gan_lib.build_gan(cfg.gan, int(meta["num_categories"]))
    latest = workdir_lib.latest_checkpoint(workdir)
    if latest is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'ckpt')}")
    # With gan.ema the averaged generator is the one to use (sampling, design, export).
    generator_key = "generator_ema" if cfg.gan.ema > 0 else "generator"
    ckpt = tf.train.Checkpoint(**{generator_key: generator, "discriminator": discriminator})
    ckpt.read(latest).expect_partial()
    if cfg.gan.ema > 0 and cfg.gan.ema_statistics == "recompute":
        recompute_batch_norm_statistics(generator)
    return generator, discriminator, cfg, meta


# ---------------------------------------------------------------------------
# The Task for the shared loop (tfmodels.training.loop)
# ---------------------------------------------------------------------------


class GanTask(loop_lib.Task):
    """The conditional GAN as a ``tfmodels.training.loop.Task``.

    ``train_step`` (replica context) runs one D and one G update (see
    ``gan_train_step``); the loop's single step counter counts them as one step.
    ``write_summaries`` adds the per-category grid every ``gan_cfg.sample_every`` steps.
    """

    kind = MODEL_KIND
    best_metric = "none"  # the GAN has no validation metric; W/best/ stays empty
    mixed_precision = False

    def __init__(self, cfg, images: np.ndarray, categories: np.ndarray, category_names: list[str],
                 dataset_name: str = "", workdir: str = ""):
        self.cfg = cfg
        self.gan_cfg = cfg.gan
        self.images = images
        self.categories = np.asarray(categories, np.int32)
        self.category_names = list(category_names)
        self.num_categories = len(self.category_names)
        self.dataset_name = dataset_name
        self.workdir = workdir
        self.noise = fixed_noise(cfg.gan.noise_dim)
        self.summary_every = cfg.gan.sample_every  # loop chunks end exactly on sample steps
        if images.shape[1] != cfg.gan.resolution or images.shape[2] != cfg.gan.resolution:
            raise ValueError(f"GAN images are {images.shape[1]}x{images.shape[2]} px but gan.resolution="
                             f"{cfg.gan.resolution}")
        if self.categories.max(initial=-1) >= self.num_categories:
            raise ValueError(f"category index {self.categories.max()} >= number of category names "
                             f"{self.num_categories}")
        if cfg.gan.ema_statistics not in EMA_STATISTICS:
            raise ValueError(f"gan.ema_statistics={cfg.gan.ema_statistics!r}: choose one of {EMA_STATISTICS}")

    def build(self, strategy):
        g = self.gan_cfg
        self.generator, self.discriminator = gan_lib.build_gan(g, self.num_categories)
        self.generator_ema = gan_lib.build_gan(g, self.num_categories)[0] if g.ema > 0 else None
        self.g_optimizer = loop_lib.build_optimizer(g.learning_rate, beta_1=g.beta1)
        self.d_optimizer = loop_lib.build_optimizer(g.d_learning_rate or g.learning_rate, beta_1=g.beta1)

    def initialize(self):
        if self.generator_ema is not None:  # the average starts at the initial weights
            self.generator_ema.set_weights(self.generator.get_weights())

    def checkpoint_items(self):
        items = {"generator": self.generator, "discriminator": self.discriminator,
                 "g_optimizer": self.g_optimizer, "d_optimizer": self.d_optimizer}
        if self.generator_ema is not None:
            items["generator_ema"] = self.generator_ema
        return items

    def sampler(self) -> tf.keras.Model:
        """The generator that samples, designs and is exported: the moving average when gan.ema > 0."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def make_dataset(self, strategy, start_step):
        global_batch = self.gan_cfg.batch_size

        def dataset_fn(ctx: tf.distribute.InputContext):
            per_replica = ctx.get_per_replica_batch_size(global_batch)
            # A new shuffle seed on resume, so a restarted run does not replay the same batches.
            seed = self.cfg.train.seed + 1000 * ctx.input_pipeline_id + int(start_step)
            return real_image_dataset(self.images, self.categories, per_replica, seed=seed)

        return strategy.distribute_datasets_from_function(dataset_fn)

    def train_step(self, batch):
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        global_batch = tf.shape(batch["images"])[0] * replicas
        out = gan_train_step(self.generator, self.discriminator, self.g_optimizer, self.d_optimizer,
                             batch["images"], batch["category"], noise_dim=self.gan_cfg.noise_dim,
                             num_categories=self.num_categories, loss=self.gan_cfg.loss,
                             global_batch_size=global_batch, augment=gan_lib.parse_augment(self.gan_cfg.augment),
                             r1=self.gan_cfg.r1, reuse_fakes=self.gan_cfg.reuse_fakes)
        if self.generator_ema is not None:
            update_ema(self.generator_ema, self.generator, self.gan_cfg.ema)
        return out

    def write_summaries(self, step):
        every = self.gan_cfg.sample_every
        if every <= 0 or step % every:
            return
        rows = sample_grid(self.sampler(), self.num_categories, self.noise)
        labels = [self.category_names[i] if j == 0 else "" for i in range(rows.shape[0]) for j in range(rows.shape[1])]
        grid = grid_image(rows, labels)
        tf.summary.image("samples/per_category", grid[None], step=step)
        if self.workdir:
            from tfmodels.data.preview import save_png

            save_png(grid, os.path.join(self.workdir, "samples", f"step_{step:07d}.png"))

    def model_info(self):
        return {"num_categories": self.num_categories, "category_names": self.category_names,
                "resolution": self.gan_cfg.resolution, "noise_dim": self.gan_cfg.noise_dim,
                "loss": self.gan_cfg.loss, "dataset": self.dataset_name, "ema": self.gan_cfg.ema,
                "grid_rows": "categories in order of category_names; columns share fixed noise"}


def prepare_gan_data(cfg):
    """(images uint8 [N, R, R, 3] at cfg.gan.resolution, categories int32 [N], names, dataset name).

    A dataset without categories is trained as one category "all".
    """
    from tfmodels.data.images import load_images
    from tfmodels.data.loading import load_dataset

    dataset = load_dataset(cfg)
    images = load_images(dataset, cfg.gan.resolution, cache_dir=cfg.data.cache_dir,
                         skip_bad=cfg.data.skip_bad_images)
    categories = np.asarray(dataset.categories, np.int32)
    names = list(dataset.category_names)
    if len(names) == 0 or categories.max(initial=-1) < 0:
        print("[gan] the dataset has no categories: training one category 'all'", flush=True)
        categories, names = np.zeros(dataset.num_items, np.int32), ["all"]
    return images, categories, names, dataset.name


def train_gan(cfg, workdir: str, strategy=None, data=None) -> dict:
    """Trains (or resumes) the conditional GAN in ``workdir`` with the shared loop.

    Args:
      cfg: the run's Config (cfg.gan for the networks, steps and batch; cfg.train for
        steps_per_loop, checkpoint_every, keep_checkpoints, histogram_every, strategy, seed).
      workdir: W (config.json, model.json, ckpt/, tb/, samples/).
      strategy: overrides ``build_strategy(cfg.train.strategy)``.
      data: optional (images, categories, category_names, dataset_name), e.g. in tests;
        default ``prepare_gan_data(cfg)``.

    Returns:
      The loop's summary dict (step, start_step, losses, steps_per_sec, ...).
    """
    from tfmodels.training.strategy import build_strategy

    images, categories, names, dataset_name = data if data is not None else prepare_gan_data(cfg)
    sample = np.asarray(images[:512])  # a hint, not a check: the first 512 images are enough
    grey_data = bool(np.all(sample[..., :1] == sample[..., 1:]))
    if grey_data and not cfg.gan.grey:
        print(f"[gan] the training images of {dataset_name or 'the dataset'} are grey: consider "
              "--set gan.grey=true (three free output channels only add colour noise)", flush=True)
    elif cfg.gan.grey and not grey_data:
        print(f"[gan] gan.grey=true: the generator gives grey images, but the training images of "
              f"{dataset_name or 'the dataset'} are in colour", flush=True)
    kind = kinds.get(MODEL_KIND)
    workdir_lib.check_resumable(cfg, workdir, kind.resume_keys)
    strategy = strategy or build_strategy(cfg.train.strategy)
    workdir_lib.save_config(cfg, workdir)
    tf.keras.utils.set_random_seed(cfg.train.seed)
    task = GanTask(cfg, images, categories, names, dataset_name, workdir)
    return loop_lib.run(task, cfg.train, workdir, strategy, steps=kind.steps(cfg))
