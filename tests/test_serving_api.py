"""Client <-> server round trips over real sockets on 127.0.0.1, gRPC and REST.

Parametrised over servers: the embedded one always, tensorflow_model_server when
it is on PATH. Models are synthetic SavedModels with the project's signatures.
"""

import json
import shutil
import urllib.error
import urllib.request

import tfmodels  # noqa: F401  (tf-keras guard first)

import grpc
import numpy as np
import pytest
import tensorflow as tf

from export import signatures as S
import serving_fixtures as testing
from serving.client import GrpcClient, RestClient
from serving.errors import ServingError


@pytest.fixture(scope="module", params=testing.KINDS)
def server(request, tmp_path_factory):
    if request.param == "tensorflow_model_server" and shutil.which("tensorflow_model_server") is None:
        pytest.skip("tensorflow_model_server is not on PATH (cannot be installed here)")
    base = testing.copy_models(str(tmp_path_factory.mktemp("api") / "models"))
    cfg = testing.models_config(base, labels={S.RECOMMENDER: {"stable": 1}})
    running = testing.start_server(request.param, cfg)
    yield running
    running.stop()


@pytest.fixture(params=["grpc", "rest"])
def client(request, server):
    c = GrpcClient(server.grpc_target, timeout=30) if request.param == "grpc" else RestClient(server.rest_url, timeout=30)
    yield c
    c.close()


@pytest.fixture(scope="module")
def reference():
    """In-process calls of the same SavedModels, to compare against."""
    base = testing.fixture_models()
    return {n: tf.saved_model.load(f"{base}/{n}/1") for n in (S.RECOMMENDER, S.DESIGNER)}


def test_score_matches_in_process(client, reference):
    users, items = ["u1", "u2", "u3", "nobody"], ["i5", "i6", "i7", "i8"]
    got = client.score(users, items)
    want = reference[S.RECOMMENDER].signatures[S.SCORE](user_id=tf.constant(users), item_id=tf.constant(items))
    np.testing.assert_allclose(got.score, want[S.OUT_SCORE].numpy(), rtol=1e-5, atol=1e-6)
    assert got.known.tolist() == [True, True, True, False]
    assert got.score[3] == 0.0


def test_serving_default_is_score(client):
    a = client.score(["u1"], ["i2"], signature=S.SERVING_DEFAULT)
    b = client.score(["u1"], ["i2"], signature=S.SCORE)
    assert a.score.tolist() == b.score.tolist()


def test_score_images_and_embeddings(client, reference):
    imgs = [testing.png_bytes(i) for i in range(3)]
    got = client.score_images(["u1", "u2", "u3"], imgs)
    want = reference[S.RECOMMENDER].signatures[S.SCORE_IMAGES](
        user_id=tf.constant(["u1", "u2", "u3"]), image_bytes=tf.constant(imgs))
    np.testing.assert_allclose(got.score, want[S.OUT_SCORE].numpy(), rtol=1e-5, atol=1e-6)
    emb = client.item_embedding(imgs)
    assert emb.shape == (3, 16) and emb.dtype == np.float32
    uemb = client.user_embedding(["u1", "u2"])
    assert uemb.shape == (2, 16)
    # score_images is the dot product of the two embeddings
    np.testing.assert_allclose(got.score[:2], np.sum(uemb * emb[:2], -1), rtol=1e-4, atol=1e-5)


def test_recommend(client, reference):
    rec = client.recommend(["u1", "u4"], k=7, exclude_purchased=False)
    assert len(rec.item_ids) == 2 and all(len(r) == 7 for r in rec.item_ids)
    assert rec.score.shape == (2, 7)
    assert np.all(np.diff(rec.score, axis=1) <= 0), "top-k must be sorted by score"
    want = reference[S.RECOMMENDER].signatures[S.RECOMMEND](
        user_id=tf.constant(["u1", "u4"]), k=tf.constant(7), exclude_purchased=tf.constant(False))
    assert rec.item_ids == [[b.decode() for b in row] for row in want[S.OUT_ITEM_ID].numpy()]
    excl = client.recommend(["u1"], k=200, exclude_purchased=True)
    assert "i1" not in excl.item_ids[0][:199]  # u1's "purchase" is pushed to the end


def test_generate_design_modify(client):
    g = client.generate(category="trousers", n=3, seed=5)
    assert g.image.shape == (3, 16, 16, 3) and g.image.dtype == np.uint8
    assert len(g.png) == 3 and all(p.startswith(b"\x89PNG") for p in g.png)
    np.testing.assert_array_equal(tf.io.decode_png(g.png[0]).numpy(), g.image[0])
    d = client.design("u3", category="top", starts=4, steps=10, eta=1.0, seed=1)
    assert d.image.shape == (4, 16, 16, 3) and d.score.shape == (4,)
    assert np.all(np.diff(d.score) <= 0), "designs come best first"
    d0 = client.design("u3", category="top", starts=4, steps=0, eta=1.0, seed=1)
    assert d.score[0] > d0.score[0], "optimising the latent code must raise the preference"
    m = client.modify(["u2", "u3"], [g.png[0], g.png[1]], ["trousers", "bag"], steps=10, eta=0.5)
    assert m.image.shape == (2, 16, 16, 3) and m.score_before.shape == (2,)
    assert np.all(m.score > m.score_before)


def test_metadata(client):
    meta = client.metadata(S.RECOMMENDER)
    for sig in (S.SERVING_DEFAULT, S.SCORE, S.SCORE_IMAGES, S.ITEM_EMBEDDING, S.USER_EMBEDDING, S.RECOMMEND):
        spec = S.SIGNATURES[S.RECOMMENDER][sig]
        assert set(meta[sig]["inputs"]) == set(spec.inputs), sig
        assert set(meta[sig]["outputs"]) == set(spec.outputs), sig
        for k, t in spec.inputs.items():
            assert meta[sig]["inputs"][k].dtype == t.dtype
            assert meta[sig]["inputs"][k].shape == t.shape
    dmeta = client.metadata(S.DESIGNER)
    assert set(dmeta) == {S.GENERATE, S.DESIGN, S.MODIFY}
    assert "__saved_model_init_op" not in meta


def test_status_and_labels(client):
    st = client.status(S.RECOMMENDER)
    assert st == [{"version": 1, "state": "AVAILABLE", "error_code": 0, "error_message": ""}]
    assert client.status(S.RECOMMENDER, version=1)[0]["state"] == "AVAILABLE"
    a = client.score(["u1"], ["i1"], label="stable").score
    b = client.score(["u1"], ["i1"], version=1).score
    assert a.tolist() == b.tolist()
    with pytest.raises(ServingError) as e:
        client.status("no_such_model")
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_errors_name_the_problem(client):
    with pytest.raises(ServingError) as e:
        client.predict(S.RECOMMENDER, {"user_id": np.array([b"u1"], dtype=object)}, signature=S.SCORE)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "item_id" in e.value.message
    with pytest.raises(ServingError) as e:
        client.predict(S.RECOMMENDER, {"user_id": np.array([b"u1"], dtype=object)}, signature="nope")
    assert e.value.code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT)
    assert "nope" in e.value.message
    with pytest.raises(ServingError) as e:
        client.score(["u1"], ["i1"], version=99)
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ServingError) as e:
        client.recommend(["u1"], k=0)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "k must be" in e.value.message
    with pytest.raises(ServingError) as e:
        client.score_images(["u1"], [b"not an image"])
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ServingError) as e:
        client.generate("spaceship")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "unknown category" in e.value.message


def test_grpc_output_filter_and_unimplemented(server):
    c = GrpcClient(server.grpc_target)
    out = c.predict(S.RECOMMENDER, {"user_id": ["u1"], "item_id": ["i1"]}, signature=S.SCORE,
                    output_filter=[S.OUT_SCORE])
    assert list(out) == [S.OUT_SCORE]
    from tensorflow_serving.apis import classification_pb2

    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = S.RECOMMENDER
    with pytest.raises(grpc.RpcError) as e:
        c.prediction.Classify(req, timeout=10)
    if server.kind == "embedded":  # the real server answers per its signature checks
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED and "Predict" in e.value.details()
        # grpc.health.v1 is an addition of the embedded server (TF Serving has none)
        assert c.health() and c.health("tensorflow.serving.PredictionService")
    c.close()


def _post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_rest_row_format_and_b64(server):
    url = f"{server.rest_url}/v1/models/{S.RECOMMENDER}:predict"
    status, body = _post(url, {"signature_name": S.SCORE,
                               "instances": [{"user_id": "u1", "item_id": "i1"},
                                             {"user_id": {"b64": "dTI="}, "item_id": "i2"}]})
    assert status == 200 and len(body["predictions"]) == 2
    assert set(body["predictions"][0]) == {S.OUT_SCORE, S.OUT_KNOWN}
    # single-input signature: instances are bare values; binary strings as b64
    import base64

    b64 = base64.b64encode(testing.png_bytes(1)).decode()
    status, body = _post(url, {"signature_name": S.ITEM_EMBEDDING, "instances": [{"b64": b64}]})
    assert status == 200 and len(body["predictions"]) == 1 and len(body["predictions"][0]) == 16
    # PNG outputs come back base64-encoded (key ends in _bytes)
    status, body = _post(f"{server.rest_url}/v1/models/{S.DESIGNER}:predict",
                         {"signature_name": S.GENERATE, "inputs": {"category": "bag", "n": 1, "seed": 0}})
    assert status == 200
    assert base64.b64decode(body["outputs"][S.OUT_PNG][0]["b64"]).startswith(b"\x89PNG")
    status, body = _post(url, {"instances": [1, 2], "inputs": {}})
    assert status == 400 and "error" in body
    status, body = _post(f"{server.rest_url}/v1/models/nope:predict", {"instances": [1]})
    assert status == 404 and "nope" in body["error"]


def test_rest_client_row_format(server):
    c = RestClient(server.rest_url)
    out = c.predict(S.RECOMMENDER, {"user_id": np.array([b"u1", b"u2"], dtype=object),
                                    "item_id": np.array([b"i1", b"i2"], dtype=object)},
                    signature=S.SCORE, row_format=True)
    ref = c.score(["u1", "u2"], ["i1", "i2"])
    np.testing.assert_allclose(out[S.OUT_SCORE], ref.score)


def test_prometheus_metrics(server):
    if server.kind != "embedded":
        pytest.skip("metrics need --monitoring_config_file on the real server")
    c = GrpcClient(server.grpc_target)
    c.score(["u1"], ["i1"])
    text = RestClient(server.rest_url).prometheus_metrics()
    assert 'tfmodels_serving_requests_total{model="recommender",signature="score",protocol="grpc",code="OK"}' in text
    assert "tfmodels_serving_request_latency_seconds_bucket" in text
    assert 'tfmodels_serving_model_version_available{model="recommender",version="1"} 1' in text
