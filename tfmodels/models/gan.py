"""Category-conditional DCGAN-style generator and discriminator (Kang et al., ICDM 2017).

Generator ``G(z, c)``: the noise ``z`` [B, noise_dim] is concatenated with the
one-hot category ``c`` [B, C], projected by a dense layer to a 4x4x(8*base)
tensor, then doubled in size by 4x4 stride-2 transposed convolutions (``gan.upsample=transpose4``,
the default; the paper's are 5x5, ``gan.upsample=transpose``; with ``gan.upsample=resize``,
nearest-neighbour doubling and a 3x3 convolution; batch
norm + leaky ReLU, channels halving each time) up to the requested resolution,
where a last doubling convolution gives 3 channels (or, with ``gan.grey``, one
channel repeated as R, G and B) and ``tanh`` maps them to [-1, 1] (the project's
one pixel range, see ``tfmodels.data.pixels.to_model_input``).

Discriminator ``D(x, c)``: the one-hot category is tiled to C constant image
planes and concatenated to the image channels (the paper injects the category
this way); 5x5 stride-2 convolutions with channels base, 2*base, 4*base, 8*base
(capped at 8*base) halve the size down to 4x4; leaky ReLU, layer normalisation
after all but the first convolution (with ``gan.spectral_norm``: spectrally normalised layers
instead of the layer norms). On the flattened features h, the score is
``w . h + b + <E c, h>``: a linear layer plus a projection term with a learned
embedding E of the category (projection discriminator, Miyato & Koyama 2018),
one unbounded score per image.
Spectral or layer norm (rather than batch norm) keeps D a per-image function: real and fake
batches see the same network, and D(G(z, c), c) used in the design objective does
not depend on moving averages or on the other images in the batch.

Both networks are plain ``tf.keras.Model`` s taking ``[images_or_z, category_onehot]``.
Losses (``*_per_example``: unreduced, one value per image) for the two options of
``cfg.gan.loss``:

* ``lsgan`` (the paper's, Mao et al.): D minimises ``1/2 (D(x) - 1)^2 + 1/2 D(G(z))^2``,
  G minimises ``1/2 (D(G(z)) - 1)^2``.
* ``nonsaturating`` (Goodfellow et al.): D minimises ``softplus(-D(x)) + softplus(D(G(z)))``
  (sigmoid cross-entropy on logits), G minimises ``softplus(-D(G(z)))``.

``realism_penalty`` is the matching "looks real" term of the design objective:
``(D - 1)^2`` for LSGAN (exactly the paper's ``eta * (D(G(z,c),c) - 1)^2``) and
``softplus(-D)`` for the non-saturating loss.
"""

from __future__ import annotations

import math

import tensorflow as tf

from tfmodels.config import UPSAMPLINGS

LOSSES = ("lsgan", "nonsaturating")


def _init():
    # DCGAN's N(0, 0.02) weights: the untrained generator starts near a flat grey image
    # instead of Glorot-sized high-frequency noise, and early training is visibly faster.
    return tf.keras.initializers.RandomNormal(stddev=0.02)


def _num_upsamplings(resolution: int) -> int:
    """Number of stride-2 stages between 4x4 and ``resolution``; checks the value."""
    n = int(round(math.log2(resolution / 4))) if resolution >= 8 else 0
    if resolution < 8 or 4 * 2**n != resolution:
        raise ValueError(f"gan.resolution={resolution}: must be a power of two >= 8 (e.g. 32, 64, 128)")
    return n


def _doubling(channels: int, upsample: str, use_bias: bool, name: str) -> tf.keras.layers.Layer:
    """One size-doubling convolution: 5x5 or 4x4 stride-2 transposed, or nearest-neighbour x2 then 3x3."""
    if upsample in ("transpose", "transpose4"):
        return tf.keras.layers.Conv2DTranspose(channels, 5 if upsample == "transpose" else 4, strides=2,
                                               padding="same", use_bias=use_bias, kernel_initializer=_init(),
                                               name=name)
    return tf.keras.Sequential([tf.keras.layers.UpSampling2D(2, interpolation="nearest"),
                                tf.keras.layers.Conv2D(channels, 3, padding="same", use_bias=use_bias,
                                                       kernel_initializer=_init())], name=name)


def build_generator(noise_dim: int, num_categories: int, resolution: int = 64,
                    base_channels: int = 64, grey: bool = False, upsample: str = "transpose",
                    name: str = "generator") -> tf.keras.Model:
    """Builds G: ([z float [B, noise_dim], onehot float [B, C]]) -> images float [B, R, R, 3] in [-1, 1].

    4x4x(8*base) -> size-doubling convs with batch norm + leaky ReLU (0.2),
    channels 8b, 4b, 2b, ... (never below base) -> a last doubling conv to 3
    channels (``grey``: to 1, repeated three times) -> tanh. ``upsample`` (``gan.upsample``): each
    doubling is a 5x5 stride-2 transposed conv (``"transpose"``), a 4x4 one (``"transpose4"``) or a
    nearest-neighbour x2 resize then a 3x3 conv (``"resize"``). Call with ``training=True`` while training the GAN (batch statistics),
    ``training=False`` everywhere else (moving averages).
    """
    if num_categories < 1:
        raise ValueError(f"build_generator: num_categories={num_categories}, need at least 1")
    if upsample not in UPSAMPLINGS:
        raise ValueError(f"gan.upsample={upsample!r}: choose one of {UPSAMPLINGS}")
    stages = _num_upsamplings(resolution)
    z = tf.keras.Input((noise_dim,), name="z")
    c = tf.keras.Input((num_categories,), name="category_onehot")
    h = tf.keras.layers.Concatenate(name="z_and_c")([z, c])
    top = 8 * base_channels
    h = tf.keras.layers.Dense(4 * 4 * top, use_bias=False, kernel_initializer=_init(), name="project")(h)
    h = tf.keras.layers.Reshape((4, 4, top))(h)
    # momentum 0.9: the moving statistics used at design time catch up quickly in short CPU runs.
    h = tf.keras.layers.BatchNormalization(momentum=0.9, name="project_bn")(h)
    h = tf.keras.layers.LeakyReLU(0.2)(h)
    channels = top
    for i in range(stages - 1):
        channels = max(channels // 2, base_channels)
        h = _doubling(channels, upsample, False, f"up{i}")(h)  # batch norm follows: no bias
        h = tf.keras.layers.BatchNormalization(momentum=0.9, name=f"up{i}_bn")(h)
        h = tf.keras.layers.LeakyReLU(0.2)(h)
    h = _doubling(1 if grey else 3, upsample, True, "to_rgb")(h)
    out = tf.keras.layers.Activation("tanh", dtype="float32", name="image" if not grey else "grey")(h)
    if grey:
        out = tf.keras.layers.Concatenate(name="image")([out, out, out])
    return tf.keras.Model([z, c], out, name=name)


class _LeakyMax(tf.keras.layers.Layer):
    """Leaky ReLU (slope 0.2) as max(x, 0.2 x): the same values as ``LeakyReLU(0.2)``, in ops that Grappler's
    Conv2D+BiasAdd+LeakyRelu fusion does not match. That fusion fails on the graphs that take gradients
    through D ("remapper failed ... LeakyReluGrad", logged as an error at the first trace, and that pass is
    then skipped); the first convolution avoids it by having no bias instead. The cost is one multiply and
    one maximum per element in place of the fused activation."""

    def call(self, x):
        return tf.maximum(x, 0.2 * x)


class _TileCategory(tf.keras.layers.Layer):
    """Tiles a one-hot [B, C] to constant planes [B, H, W, C] matching an image."""

    def call(self, inputs):
        image, onehot = inputs
        shape = tf.shape(image)
        planes = onehot[:, None, None, :]
        return tf.tile(planes, [1, shape[1], shape[2], 1])


def build_discriminator(num_categories: int, resolution: int = 64, base_channels: int = 64,
                        spectral_norm: bool = False, name: str = "discriminator") -> tf.keras.Model:
    """Builds D: ([images float [B, R, R, 3] in [-1, 1], onehot [B, C]]) -> score float [B].

    Input = image channels + C tiled one-hot planes; 5x5 stride-2 convs with
    channels base, 2b, 4b, 8b (capped) down to 4x4, leaky ReLU (0.2), layer norm
    after all but the first; flatten to h; score = w . h + b + <E onehot, h>.
    ``spectral_norm`` (``gan.spectral_norm``): every convolution, the score and the projection
    embedding are spectrally normalised (``tf.keras.layers.SpectralNormalization``, one power
    iteration per training call; Miyato et al. 2018), and the layer norms are left out, as in SNGAN.
    """
    def sn(layer):
        return tf.keras.layers.SpectralNormalization(layer, name=layer.name + "_sn") if spectral_norm else layer

    if num_categories < 1:
        raise ValueError(f"build_discriminator: num_categories={num_categories}, need at least 1")
    stages = _num_upsamplings(resolution)
    x = tf.keras.Input((resolution, resolution, 3), name="image")
    c = tf.keras.Input((num_categories,), name="category_onehot")
    h = tf.keras.layers.Concatenate(axis=-1, name="image_and_c")([x, _TileCategory(name="tile_c")([x, c])])
    channels = base_channels
    for i in range(stages):
        # No bias on the first conv: Grappler's Conv2D+BiasAdd+LeakyRelu fusion breaks on the
        # gradient-through-D graphs of the design loop ("remapper failed" errors), and the
        # bias adds nothing there that the next layer cannot absorb.
        h = sn(tf.keras.layers.Conv2D(channels, 5, strides=2, padding="same", use_bias=i > 0,
                                      kernel_initializer=_init(), name=f"down{i}"))(h)
        if i > 0 and not spectral_norm:
            h = tf.keras.layers.LayerNormalization(axis=[1, 2, 3], name=f"down{i}_ln")(h)
        # A conv with a bias straight into the activation (spectral norm, no layer norm between) needs the
        # fusion-safe form; the other layers keep Keras's LeakyReLU.
        h = (_LeakyMax(name=f"down{i}_lrelu") if spectral_norm and i > 0 else tf.keras.layers.LeakyReLU(0.2))(h)
        channels = min(channels * 2, 8 * base_channels)
    h = tf.keras.layers.Flatten()(h)
    unconditional = sn(tf.keras.layers.Dense(1, dtype="float32", kernel_initializer=_init(), name="score"))(h)
    # Projection term <embed(c), h> (Miyato & Koyama 2018): a per-category direction in
    # feature space, a much stronger conditioning signal than the input planes alone.
    embedded = sn(tf.keras.layers.Dense(h.shape[-1], use_bias=False, kernel_initializer=_init(),
                                        name="category_projection"))(c)
    projection = tf.keras.layers.Dot(axes=1, name="projection")([h, embedded])
    out = tf.keras.layers.Add()([unconditional, projection])
    out = tf.keras.layers.Reshape(())(out)
    return tf.keras.Model([x, c], out, name=name)


def build_gan(gan_cfg, num_categories: int) -> tuple[tf.keras.Model, tf.keras.Model]:
    """Builds (generator, discriminator) from a ``GanConfig``."""
    if gan_cfg.loss not in LOSSES:
        raise ValueError(f"gan.loss={gan_cfg.loss!r}: choose one of {LOSSES}")
    parse_augment(gan_cfg.augment)
    if not 0.0 <= gan_cfg.ema < 1.0:
        raise ValueError(f"gan.ema={gan_cfg.ema}: the decay must be in [0, 1) (0 = off, e.g. 0.999)")
    if gan_cfg.r1 < 0 or gan_cfg.d_learning_rate < 0:
        raise ValueError(f"gan.r1={gan_cfg.r1}, gan.d_learning_rate={gan_cfg.d_learning_rate}: must be >= 0")
    g = build_generator(gan_cfg.noise_dim, num_categories, gan_cfg.resolution, gan_cfg.base_channels,
                        grey=gan_cfg.grey, upsample=gan_cfg.upsample)
    d = build_discriminator(num_categories, gan_cfg.resolution, gan_cfg.base_channels,
                            spectral_norm=gan_cfg.spectral_norm)
    return g, d


AUGMENTS = ("translation", "color", "cutout")
"""The policies of ``diff_augment`` (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
Training"), applied in this order."""


def parse_augment(policy: str) -> tuple[str, ...]:
    """``gan.augment`` ("translation,color", or "") -> the policy names, checked."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [n for n in names if n not in AUGMENTS]
    if unknown:
        raise ValueError(f"gan.augment={policy!r}: unknown {unknown}; choose from {', '.join(AUGMENTS)}")
    return names


def diff_augment(x: tf.Tensor, policy, seed=None) -> tf.Tensor:
    """Random, differentiable augmentation of images float [B, H, W, 3] in [-1, 1], one draw per image.

    color: brightness +U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5) (on [0, 1] pixels, as in
    the paper's code); translation: shifted by up to 1/8 of the side, the border filled with -1 (black);
    cutout: a square of half the side set to 0 (mid grey) at a random place. Gradients flow to ``x``
    through every op, so G learns from D's view of augmented fakes.
    """
    names = parse_augment(policy) if isinstance(policy, str) else tuple(policy)
    if not names:
        return x
    b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    if "color" in names:
        y = (x + 1.0) / 2.0
        y = y + tf.random.uniform([b, 1, 1, 1]) - 0.5
        mean = tf.reduce_mean(y, axis=3, keepdims=True)
        y = (y - mean) * tf.random.uniform([b, 1, 1, 1], 0.0, 2.0) + mean
        mean = tf.reduce_mean(y, axis=[1, 2, 3], keepdims=True)
        y = (y - mean) * tf.random.uniform([b, 1, 1, 1], 0.5, 1.5) + mean
        x = y * 2.0 - 1.0
    if "translation" in names:
        pad = tf.maximum(h // 8, 1)
        shift = tf.random.uniform([b, 2], -pad, pad + 1, dtype=tf.int32)
        padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=-1.0)
        rows = tf.range(h)[None, :] + pad - shift[:, :1]   # [b, h]: source row of each output row
        cols = tf.range(w)[None, :] + pad - shift[:, 1:]
        x = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    if "cutout" in names:
        size_h, size_w = h // 2, w // 2
        cy = tf.random.uniform([b, 1, 1], 0, h, dtype=tf.int32)
        cx = tf.random.uniform([b, 1, 1], 0, w, dtype=tf.int32)
        yy = tf.range(h)[None, :, None]
        xx = tf.range(w)[None, None, :]
        inside = (tf.abs(yy - cy) < (size_h + 1) // 2) & (tf.abs(xx - cx) < (size_w + 1) // 2)
        x = x * tf.cast(~inside, x.dtype)[..., None]
    return x


def onehot(category, num_categories: int) -> tf.Tensor:
    """int category index (scalar or [B]) -> float32 one-hot ([C] or [B, C])."""
    return tf.one_hot(tf.cast(category, tf.int32), num_categories, dtype=tf.float32)


def discriminator_loss_per_example(real_scores: tf.Tensor, fake_scores: tf.Tensor,
                                   loss: str = "lsgan") -> tf.Tensor:
    """Per-example D loss [B] from D's scores on a real and a generated batch (same size)."""
    if loss == "lsgan":
        return 0.5 * tf.square(real_scores - 1.0) + 0.5 * tf.square(fake_scores)
    if loss == "nonsaturating":
        return tf.nn.softplus(-real_scores) + tf.nn.softplus(fake_scores)
    raise ValueError(f"gan.loss={loss!r}: choose one of {LOSSES}")


def generator_loss_per_example(fake_scores: tf.Tensor, loss: str = "lsgan") -> tf.Tensor:
    """Per-example G loss [B] from D's scores on generated images."""
    if loss == "lsgan":
        return 0.5 * tf.square(fake_scores - 1.0)
    if loss == "nonsaturating":
        return tf.nn.softplus(-fake_scores)
    raise ValueError(f"gan.loss={loss!r}: choose one of {LOSSES}")


def realism_penalty(scores: tf.Tensor, loss: str = "lsgan") -> tf.Tensor:
    """The design objective's "looks real" penalty per image: (D - 1)^2 (lsgan) or softplus(-D)."""
    if loss == "lsgan":
        return tf.square(scores - 1.0)
    if loss == "nonsaturating":
        return tf.nn.softplus(-scores)
    raise ValueError(f"gan.loss={loss!r}: choose one of {LOSSES}")


def generate(generator: tf.keras.Model, category, n: int, seed: int, noise_dim: int | None = None) -> tf.Tensor:
    """n images float [-1, 1] of one category from stateless normal noise seeded by ``seed`` (inference mode)."""
    noise_dim = noise_dim or generator.inputs[0].shape[-1]
    num_categories = generator.inputs[1].shape[-1]
    z = tf.random.stateless_normal([n, noise_dim], seed=[int(seed), 0])
    c = onehot(tf.fill([n], tf.cast(category, tf.int32)), num_categories)
    return generator([z, c], training=False)
