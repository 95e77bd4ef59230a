"""Exported SavedModels: layout, session-based loading, round trip, reuse, fine-tuning and bad inputs.

One tiny DVBPR (160 steps) + GAN (2 steps) is trained and exported once per
test process (``test_export_support``); every test here reads that export.
"""

import tfmodels  # noqa: F401  (tf-keras before TensorFlow)

import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from export import signatures as S
from export import layout
from test_export_support import PYTHON, exported, in_process, run_clean_python
from tfmodels.data.preview import png_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ex():
    return exported()


@pytest.fixture(scope="module")
def ref():
    return in_process()


@pytest.fixture(scope="module")
def loaded(ex):
    return {name: tf.saved_model.load(os.path.join(ex["base"], name, "1")) for name in S.MODEL_NAMES}


def _np(outputs: dict) -> dict:
    return {k: v.numpy() for k, v in outputs.items()}


def _assert_outputs_equal(got: dict, want: dict, what: str, loose: bool = False):
    """Equal outputs. ``loose``: the latent search ran in another graph runtime (the session
    loader's graph optimisations), whose last-bit differences Adam's g/sqrt(v) step can
    amplify to a few pixel levels; scores must still agree to 1e-3."""
    assert sorted(got) == sorted(want), what
    for k in want:
        g, w = np.asarray(got[k]), np.asarray(want[k])
        assert g.shape == w.shape and g.dtype == w.dtype, (what, k, g.shape, w.shape, g.dtype, w.dtype)
        if g.dtype == np.uint8:
            diff = np.abs(g.astype(int) - w.astype(int))
            assert diff.max(initial=0) <= (4 if loose else 1) and diff.mean() <= (0.5 if loose else 0.1), (what, k)
        elif g.dtype.kind in "fc":
            np.testing.assert_allclose(g, w, rtol=1e-3 if loose else 1e-4, atol=1e-5, err_msg=f"{what}: {k}")
        elif k == S.OUT_PNG:
            assert len(g) == len(w), (what, k)  # PNG bytes follow the images checked above
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{what}: {k}")


# --------------------------------------------------------------------------- layout


def test_layout_cards_warmup_and_models_config(ex):
    from serving.config import parse_model_config

    base = ex["base"]
    for name in S.MODEL_NAMES:
        assert layout.existing_versions(os.path.join(base, name)) == [1]
        folder = os.path.join(base, name, "1")
        assert os.path.exists(os.path.join(folder, "saved_model.pb"))
        assert not [n for n in os.listdir(os.path.join(base, name)) if n.startswith(".tmp")]
        # One warm-up request per signature, with the model's name.
        requests = layout.read_warmup_requests(os.path.join(folder, "assets.extra", layout.WARMUP_FILE))
        assert sorted(r.model_spec.signature_name for r in requests) == sorted(S.SIGNATURES[name])
        assert {r.model_spec.name for r in requests} == {name}
        card = json.load(open(os.path.join(folder, "assets.extra", layout.MODEL_CARD_FILE)))
        rec = card["sources"]["recommender"]
        assert rec["kind"] == "dvbpr" and rec["training_steps"] == 160 and rec["dataset"] == "generic"
        assert 0.5 < rec["metrics_best"]["auc_all"] <= 1.0 and rec["metrics_last"]["step"] == 160
        assert rec["config"]["train"]["steps"] == 160
        assert card["export_time"] and sorted(card["signatures"]) == sorted(S.SIGNATURES[name])
    card = json.load(open(os.path.join(base, S.DESIGNER, "1", "assets.extra", layout.MODEL_CARD_FILE)))
    assert card["sources"]["gan"]["kind"] == "gan" and card["settings"]["category_names"] == ["bag", "shoe", "top"]
    config = parse_model_config(open(os.path.join(base, "models.config")).read())
    paths = {m.name: m.base_path for m in config.model_config_list.config}
    assert paths == {n: os.path.join(os.path.abspath(base), n) for n in S.MODEL_NAMES}


def test_signatures_match_the_shared_contract(loaded):
    """Every exported signature has exactly the keys and dtypes of export/signatures.py."""
    for name, sigs in S.SIGNATURES.items():
        assert sorted(loaded[name].signatures) == sorted(sigs), name
        for sig_name, spec in sigs.items():
            fn = loaded[name].signatures[sig_name]
            inputs = fn.structured_input_signature[1]
            assert {k: v.dtype.name for k, v in inputs.items()} == {k: t.dtype for k, t in spec.inputs.items()}, \
                (name, sig_name)
            assert {k: len(v.shape) for k, v in inputs.items()} == {k: len(t.shape) for k, t in spec.inputs.items()}
            outputs = fn.structured_outputs
            assert {k: v.dtype.name for k, v in outputs.items()} == {k: t.dtype for k, t in spec.outputs.items()}, \
                (name, sig_name)


# --------------------------------------------------------------------------- session loader (TF Serving's path)

_SESSION_SCRIPT = r"""
import json, os, sys
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

base, out_dir = sys.argv[1], sys.argv[2]
report = {}
for name in sorted(os.listdir(base)):
    folder = os.path.join(base, name, "1")
    if not os.path.isdir(folder):
        continue
    requests = [prediction_log_pb2.PredictionLog.FromString(r).predict_log.request
                for r in tf.compat.v1.io.tf_record_iterator(os.path.join(folder, "assets.extra", "tf_serving_warmup_requests"))]
    extra = os.path.join(out_dir, name + ".requests")
    if os.path.exists(extra):
        requests += [prediction_log_pb2.PredictionLog.FromString(r).predict_log.request
                     for r in tf.compat.v1.io.tf_record_iterator(extra)]
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], folder)
        for i, req in enumerate(requests):
            sig = meta.signature_def[req.model_spec.signature_name or "serving_default"]
            feed = {sig.inputs[k].name: tf.make_ndarray(v) for k, v in req.inputs.items()}
            fetch = {k: v.name for k, v in sig.outputs.items()}
            key = f"{name}/{req.model_spec.signature_name}/{i}"
            try:
                out = sess.run(fetch, feed)
                np.savez(os.path.join(out_dir, key.replace("/", "__") + ".npz"), **out)
                report[key] = {"ok": True, "shapes": {k: list(np.shape(v)) for k, v in out.items()}}
            except tf.errors.OpError as e:
                report[key] = {"ok": False, "error": type(e).__name__ + ": " + e.message[:2000]}
print(json.dumps(report))
"""


def _ref_call(ref, model: str, signature: str, inputs: dict) -> dict:
    module = {S.RECOMMENDER: ref["recommender"], S.DESIGNER: ref["designer"], S.ITEM_ENCODER: ref["encoder"]}[model]
    fn = module.signatures()[signature]
    return _np(fn(**{k: tf.constant(v) for k, v in inputs.items()}))


def test_every_signature_runs_in_the_session_based_loader(ex, ref, tmp_path):
    """TF Serving's loader (tf.compat.v1 session) runs each warm-up request; outputs equal the in-process model's.

    Bad requests through the same loader fail with the signature's message.
    """
    out_dir = str(tmp_path)
    bad = {S.RECOMMENDER: [(S.RECOMMEND, {S.USER_ID: np.array([b"user0"], object), S.K: np.int32(-1),
                                          S.EXCLUDE_PURCHASED: np.bool_(False)})],
           S.DESIGNER: [(S.DESIGN, {S.USER_ID: np.array(b"user0", object), S.CATEGORY: np.array(b"hat", object),
                                    S.STARTS: np.int32(1), S.STEPS: np.int32(1), S.ETA: np.float32(1),
                                    S.SEED: np.int32(0)})]}
    for model, reqs in bad.items():
        layout.write_warmup_requests(os.path.join(out_dir, model + ".requests"), model, reqs)
    proc = subprocess.run([PYTHON, "-c", _SESSION_SCRIPT, ex["base"], out_dir], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    ran = set()
    for model in S.MODEL_NAMES:
        requests = layout.read_warmup_requests(os.path.join(ex["base"], model, "1", "assets.extra", layout.WARMUP_FILE))
        for i, req in enumerate(requests):
            key = f"{model}/{req.model_spec.signature_name}/{i}"
            assert report[key]["ok"], (key, report[key])
            got = dict(np.load(os.path.join(out_dir, key.replace("/", "__") + ".npz"), allow_pickle=True))
            inputs = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
            sig = req.model_spec.signature_name
            _assert_outputs_equal(got, _ref_call(ref, model, sig, inputs), key, loose=sig in (S.DESIGN, S.MODIFY))
            ran.add((model, req.model_spec.signature_name))
    assert ran == {(m, s) for m, sigs in S.SIGNATURES.items() for s in sigs}
    errors = {k: v for k, v in report.items() if not v["ok"]}
    assert len(errors) == 2, report
    assert "k must be at least 1" in errors[f"{S.RECOMMENDER}/{S.RECOMMEND}/6"]["error"]
    assert "unknown category" in errors[f"{S.DESIGNER}/{S.DESIGN}/3"]["error"]


# --------------------------------------------------------------------------- round trip


def test_round_trip_every_signature(ex, ref, loaded):
    """tf.saved_model.load outputs == the in-process modules' outputs, on the same inputs."""
    img = png_bytes(ref["images"][3])
    raw = open(os.path.join(ex["data"], "img", "7.png"), "rb").read()  # 40x32: padded to square in the graph
    users = tf.constant(["user0", "user5", "nobody"])
    cases = {
        S.RECOMMENDER: {
            S.SCORE: dict(user_id=users, item_id=tf.constant(["item1", "item2", "item3"])),
            S.SERVING_DEFAULT: dict(user_id=users, item_id=tf.constant(["item1", "nope", "item3"])),
            S.SCORE_IMAGES: dict(user_id=users, image_bytes=tf.constant([img, raw, img])),
            S.ITEM_EMBEDDING: dict(image_bytes=tf.constant([img, raw])),
            S.USER_EMBEDDING: dict(user_id=users),
            S.RECOMMEND: dict(user_id=users, k=tf.constant(7), exclude_purchased=tf.constant(True)),
        },
        S.DESIGNER: {
            S.GENERATE: dict(category=tf.constant("shoe"), n=tf.constant(3), seed=tf.constant(5)),
            S.DESIGN: dict(user_id=tf.constant("user2"), category=tf.constant("Top"), starts=tf.constant(3),
                           steps=tf.constant(3), eta=tf.constant(1.0), seed=tf.constant(1)),
            S.MODIFY: dict(user_id=tf.constant(["user1", "user2"]), image_bytes=tf.constant([raw, img]),
                           category=tf.constant(["bag", "top"]), steps=tf.constant(2), eta=tf.constant(0.5)),
        },
        S.ITEM_ENCODER: {S.SERVING_DEFAULT: dict(images=tf.constant(
            np.asarray(ref["images"][:4], np.float32) / 127.5 - 1.0))},
    }
    modules = {S.RECOMMENDER: ref["recommender"], S.DESIGNER: ref["designer"], S.ITEM_ENCODER: ref["encoder"]}
    for model, sigs in cases.items():
        assert sorted(sigs) == sorted(S.SIGNATURES[model])
        for sig, inputs in sigs.items():
            want = _np(modules[model].signatures()[sig](**inputs))
            got = _np(loaded[model].signatures[sig](**inputs))
            _assert_outputs_equal(got, want, f"{model}/{sig}")
    # The TF Hub-style call of the item encoder too.
    x = tf.constant(np.asarray(ref["images"][:4], np.float32) / 127.5 - 1.0)
    np.testing.assert_allclose(loaded[S.ITEM_ENCODER](x, training=False).numpy(),
                               ref["model"].item_embeddings(x).numpy(), rtol=1e-4, atol=1e-5)


def test_outputs_agree_with_the_project_code(ref, loaded, ex):
    """The served signatures compute what the training/design code computes."""
    from tfmodels.training.recommender import build_scorer

    rec = loaded[S.RECOMMENDER].signatures
    dataset, split, model = ref["dataset"], ref["split"], ref["model"]
    scorer = build_scorer(model, ref["images"])
    users = np.array([0, 3, 7])
    full = scorer(users)
    # score = theta_u . Phi(X_i) of the catalogue.
    out = rec[S.SCORE](user_id=tf.constant(dataset.user_ids[users].astype(str)),
                       item_id=tf.constant(dataset.item_ids[[4, 5, 6]].astype(str)))
    np.testing.assert_allclose(out[S.OUT_SCORE].numpy(), full[[0, 1, 2], [4, 5, 6]], rtol=1e-4, atol=1e-6)
    # recommend without exclusion = top-k of the full score row.
    k = 6
    out = rec[S.RECOMMEND](user_id=tf.constant(dataset.user_ids[users].astype(str)), k=tf.constant(k),
                           exclude_purchased=tf.constant(False))
    np.testing.assert_allclose(out[S.OUT_SCORE].numpy(), -np.sort(-full, axis=1)[:, :k], rtol=1e-4, atol=1e-6)
    # score_images of an item's original file (40x32, padded in the graph) ~ its catalogue score.
    item = 9
    raw = open(os.path.join(ex["data"], "img", f"{item}.png"), "rb").read()
    emb = loaded[S.RECOMMENDER].signatures[S.ITEM_EMBEDDING](image_bytes=tf.constant([raw]))[S.OUT_EMBEDDING].numpy()
    scale = np.abs(scorer.item_embeddings).max()
    assert np.abs(emb[0] - scorer.item_embeddings[item]).max() <= 0.02 * scale

    d, designer = ref["designer"], ref["designer_object"]
    des = loaded[S.DESIGNER].signatures
    # generate: G(z, c) with z = stateless_normal(seed), as Designer.generate.
    out = des[S.GENERATE](category=tf.constant("bag"), n=tf.constant(2), seed=tf.constant(4))
    want = designer.generate("bag", 2, seed=4)
    assert np.abs(out[S.OUT_IMAGE].numpy().astype(int) - want.astype(int)).max() <= 1
    # design: Designer.design with the same settings (best first).
    u = 2
    res = designer.design(f"user{u}", "top", seed=6, starts=3, steps=2, eta=1.0, learning_rate=d.learning_rate,
                          latent=d.settings()["latent"], category_weight=0.0)
    out = des[S.DESIGN](user_id=tf.constant(f"user{u}"), category=tf.constant("top"), starts=tf.constant(3),
                        steps=tf.constant(2), eta=tf.constant(1.0), seed=tf.constant(6))
    np.testing.assert_allclose(out[S.OUT_SCORE].numpy(), res.scores, rtol=1e-4, atol=1e-6)
    assert np.abs(out[S.OUT_IMAGE].numpy().astype(int) - res.images.astype(int)).max() <= 1
    # modify (one row): Designer.modify of the decoded image.
    from PIL import Image
    import io

    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(ref["images"][item]))).resize((16, 16), Image.LANCZOS))
    img16 = png_bytes(decoded)  # already at the GAN's size: no resize differences
    res = designer.modify(f"user{u}", image=decoded, category="shoe", seed=0, starts=d.invert_starts,
                          invert_steps=d.invert_steps, steps=2, eta=0.5, proximity=d.proximity,
                          learning_rate=d.learning_rate, latent=d.settings()["latent"], category_weight=0.0)
    out = des[S.MODIFY](user_id=tf.constant([f"user{u}"]), image_bytes=tf.constant([img16]),
                        category=tf.constant(["shoe"]), steps=tf.constant(2), eta=tf.constant(0.5))
    np.testing.assert_allclose(out[S.OUT_SCORE].numpy()[0], res["score_after"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out[S.OUT_SCORE_BEFORE].numpy()[0], res["score_original"], rtol=1e-4, atol=1e-6)
    assert np.abs(out[S.OUT_IMAGE].numpy()[0].astype(int) - res["after"].astype(int)).max() <= 1


def test_recommend_excludes_purchases_and_pads(loaded, ref):
    rec = loaded[S.RECOMMENDER].signatures[S.RECOMMEND]
    dataset, split = ref["dataset"], ref["split"]
    n = split.num_items
    for u in (0, 1, 9):
        bought = set(dataset.item_ids[split.train_item[split.train_user == u]].astype(str))
        assert bought
        out = rec(user_id=tf.constant([f"user{u}"]), k=tf.constant(n), exclude_purchased=tf.constant(True))
        ids = [x.decode() for x in out[S.OUT_ITEM_ID].numpy()[0]]
        scores = out[S.OUT_SCORE].numpy()[0]
        real = [i for i in ids if i]
        assert not bought & set(real) and len(real) == n - len(bought) == len(set(real))
        assert ids[len(real):] == [""] * len(bought) and np.all(np.isneginf(scores[len(real):]))
        assert np.all(np.diff(scores[:len(real)]) <= 0)
        out = rec(user_id=tf.constant([f"user{u}"]), k=tf.constant(n), exclude_purchased=tf.constant(False))
        assert set(x.decode() for x in out[S.OUT_ITEM_ID].numpy()[0]) == set(dataset.item_ids.astype(str))


# --------------------------------------------------------------------------- bad inputs

_PNG = png_bytes(np.full((8, 8, 3), 200, np.uint8))

_BAD = [
    (S.RECOMMENDER, S.SCORE, dict(user_id=[], item_id=[]), "user_id: empty batch"),
    (S.RECOMMENDER, S.SCORE, dict(user_id=["user0", "user1"], item_id=["item0"]), "same number of rows"),
    (S.RECOMMENDER, S.SCORE_IMAGES, dict(user_id=["user0"], image_bytes=[b"not an image"]), "not a JPEG or PNG"),
    (S.RECOMMENDER, S.SCORE_IMAGES, dict(user_id=["user0"], image_bytes=[b"\xff\xd8\xff\xe0 truncated"]),
     "Invalid JPEG data"),
    (S.RECOMMENDER, S.ITEM_EMBEDDING, dict(image_bytes=[]), "image_bytes: empty batch"),
    (S.RECOMMENDER, S.RECOMMEND, dict(user_id=["user0"], k=-3, exclude_purchased=False), "k must be at least 1"),
    (S.RECOMMENDER, S.RECOMMEND, dict(user_id=["user0"], k=97, exclude_purchased=False),
     "k is larger than the catalogue (96 items)"),
    (S.RECOMMENDER, S.RECOMMEND, dict(user_id=[], k=3, exclude_purchased=False), "user_id: empty batch"),
    (S.DESIGNER, S.DESIGN, dict(user_id="nobody", category="top", starts=2, steps=1, eta=1.0, seed=0),
     "unknown user id"),
    (S.DESIGNER, S.DESIGN, dict(user_id="user0", category="hat", starts=2, steps=1, eta=1.0, seed=0),
     "unknown category name; the designer knows: bag, shoe, top"),
    (S.DESIGNER, S.DESIGN, dict(user_id="user0", category="top", starts=2, steps=10**6, eta=1.0, seed=0),
     "steps must be between 0 and 500"),
    (S.DESIGNER, S.DESIGN, dict(user_id="user0", category="top", starts=0, steps=1, eta=1.0, seed=0),
     "starts must be between 1 and 64"),
    (S.DESIGNER, S.DESIGN, dict(user_id="user0", category="top", starts=1, steps=1, eta=float("nan"), seed=0),
     "eta must be a finite number"),
    (S.DESIGNER, S.GENERATE, dict(category="shoe", n=100000, seed=0), "n must be between 1 and 64"),
    (S.DESIGNER, S.MODIFY, dict(user_id=["user0"], image_bytes=[b"GIF89a..."], category=["top"], steps=1, eta=1.0),
     "not a JPEG or PNG"),
    (S.DESIGNER, S.MODIFY, dict(user_id=[], image_bytes=[], category=[], steps=1, eta=1.0), "user_id: empty batch"),
    (S.DESIGNER, S.MODIFY, dict(user_id=["user0"], image_bytes=[_PNG], category=["top"], steps=-1, eta=1.0),
     "steps must be between 0 and 500"),
    (S.DESIGNER, S.MODIFY, dict(user_id=["user0"] * 65, image_bytes=[_PNG] * 65, category=["top"] * 65, steps=1,
                                eta=1.0), "modify: at most 64 rows per call"),
]


@pytest.mark.parametrize("model, sig, inputs, message", _BAD, ids=[f"{b[1]}-{b[3][:24]}" for b in _BAD])
def test_bad_inputs_are_clear_errors(loaded, model, sig, inputs, message):
    fn = loaded[model].signatures[sig]
    specs = fn.structured_input_signature[1]
    args = {k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()}
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        fn(**args)
    assert message in err.value.message


def test_unknown_ids_are_flagged_not_scored(loaded):
    rec = loaded[S.RECOMMENDER].signatures
    out = rec[S.SCORE](user_id=tf.constant(["user0", "nobody", "user1"]), item_id=tf.constant(["item0", "item1", "x"]))
    assert out[S.OUT_KNOWN].numpy().tolist() == [True, False, False]
    assert out[S.OUT_SCORE].numpy()[1:].tolist() == [0.0, 0.0] and out[S.OUT_SCORE].numpy()[0] != 0.0
    out = rec[S.USER_EMBEDDING](user_id=tf.constant(["nobody", "user3"]))
    assert out[S.OUT_KNOWN].numpy().tolist() == [False, True]
    assert not out[S.OUT_EMBEDDING].numpy()[0].any() and out[S.OUT_EMBEDDING].numpy()[1].any()
    out = rec[S.RECOMMEND](user_id=tf.constant(["nobody"]), k=tf.constant(3), exclude_purchased=tf.constant(True))
    assert out[S.OUT_KNOWN].numpy().tolist() == [False] and out[S.OUT_ITEM_ID].numpy().tolist() == [[b""] * 3]


# --------------------------------------------------------------------------- reuse without this project


_REUSE_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
args = json.loads(sys.argv[1])
rec = tf.saved_model.load(args["recommender"])
des = tf.saved_model.load(args["designer"])
out = rec.signatures["recommend"](user_id=tf.constant(args["users"]), k=tf.constant(5), exclude_purchased=tf.constant(True))
report = {"recommend": {k: [str(v.dtype.name), v.shape.as_list()] for k, v in out.items()}}
# AUC of each user's held-out test item against every other item (all catalogue ids).
items = args["items"]
aucs = []
for user, held in zip(args["users"], args["held_out"]):
    s = rec.signatures["score"](user_id=tf.constant([user] * len(items)), item_id=tf.constant(items))
    scores = dict(zip(items, s["score"].numpy()))
    others = np.array([scores[i] for i in items if i != held and i not in args["bought"][user]])
    aucs.append(float(np.mean((scores[held] > others) + 0.5 * (scores[held] == others))))
report["auc"] = float(np.mean(aucs))
d = des.signatures["design"](user_id=tf.constant(args["users"][0]), category=tf.constant("shoe"), starts=tf.constant(3),
                             steps=tf.constant(2), eta=tf.constant(1.0), seed=tf.constant(0))
report["design"] = {k: [str(v.dtype.name), v.shape.as_list()] for k, v in d.items()}
report["png_ok"] = all(bytes(p).startswith(b"\x89PNG") for p in d["png_bytes"].numpy())
report["scores_finite"] = bool(np.all(np.isfinite(d["score"].numpy())))
report["project_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("tfmodels", "export", "serving"))
print(json.dumps(report))
"""


def test_reuse_from_a_process_that_never_imports_the_project(ex, ref):
    dataset, split = ref["dataset"], ref["split"]
    users = np.flatnonzero(split.test_item >= 0)
    args = {
        "recommender": os.path.join(ex["base"], S.RECOMMENDER, "1"),
        "designer": os.path.join(ex["base"], S.DESIGNER, "1"),
        "users": [str(dataset.user_ids[u]) for u in users],
        "held_out": [str(dataset.item_ids[split.test_item[u]]) for u in users],
        "items": [str(i) for i in dataset.item_ids],
        "bought": {str(dataset.user_ids[u]): [str(dataset.item_ids[i]) for i in split.train_item[split.train_user == u]]
                   + [str(dataset.item_ids[split.val_item[u]])] for u in users},
    }
    proc = run_clean_python(_REUSE_SCRIPT, json.dumps(args))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    b = len(users)
    assert report["recommend"] == {S.OUT_ITEM_ID: ["string", [b, 5]], S.OUT_SCORE: ["float32", [b, 5]],
                                   S.OUT_KNOWN: ["bool", [b]]}
    assert report["design"] == {S.OUT_IMAGE: ["uint8", [3, 16, 16, 3]], S.OUT_PNG: ["string", [3]],
                                S.OUT_SCORE: ["float32", [3]]}
    assert report["png_ok"] and report["scores_finite"]
    assert report["project_modules"] == []
    # Chance is 0.5; the tiny model reached ~0.78 validation AUC in training.
    print(f"test-item AUC through the served score signature: {report['auc']:.3f} ({b} users)")
    assert report["auc"] > 0.65, report["auc"]


# --------------------------------------------------------------------------- fine-tuning the item encoder


def test_item_encoder_fine_tunes_in_a_fresh_keras_model(ex, ref):
    from export.item_encoder import ItemEncoderLayer

    tf.keras.utils.set_random_seed(0)
    path = os.path.join(ex["base"], S.ITEM_ENCODER, "1")
    layer = ItemEncoderLayer(path, trainable=True)
    assert layer.trainable_weights and len(layer.trainable_weights) == len(layer.encoder.trainable_variables)
    inputs = tf.keras.Input((32, 32, 3))
    logits = tf.keras.layers.Dense(3)(layer(inputs))
    model = tf.keras.Model(inputs, logits)
    # The task: the item's category (shape), from the catalogue images.
    x = np.asarray(ref["images"], np.float32) / 127.5 - 1.0
    y = np.asarray(ref["dataset"].categories, np.int32)
    before = [w.numpy().copy() for w in layer.trainable_weights]
    model.compile(tf.keras.optimizers.Adam(1e-3),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    last = model.evaluate(x, y, verbose=0)
    assert last < first, (first, last)
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, layer.trainable_weights)]
    assert all(changed)
    assert len(model.losses) == len(layer.encoder.regularization_losses) > 0
