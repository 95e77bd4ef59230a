"""The real exports (tiny trained DVBPR + GAN from the export tests) through the server.

Uses ``test_export_support.exported()`` (trains and exports once per process;
shared with the export tests when run together). Every typed client call, over
gRPC and REST, against the embedded server; outputs equal in-process calls.
"""

import os

import tfmodels  # noqa: F401

import numpy as np
import pytest
import tensorflow as tf

from export import signatures as S
import serving_fixtures as testing
from serving.client import GrpcClient, RestClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def export_base():
    try:
        from test_export_support import exported
    except ImportError as e:
        pytest.skip(f"export test support not available: {e}")
    return exported()["base"]


@pytest.fixture(scope="module")
def server(export_base):
    running = testing.start_server("embedded", os.path.join(export_base, "models.config"), poll_seconds=0)
    yield running
    running.stop()


def _warm(export_base, model):
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(export_base, model, "1", "assets.extra", "tf_serving_warmup_requests")
    out = {}
    for rec in tf.data.TFRecordDataset(path):
        req = prediction_log_pb2.PredictionLog.FromString(rec.numpy()).predict_log.request
        out[req.model_spec.signature_name] = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
    return out


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_every_exported_signature_through_the_server(server, export_base, protocol):
    c = GrpcClient(server.grpc_target, timeout=120) if protocol == "grpc" else RestClient(server.rest_url, timeout=120)
    rec, des = _warm(export_base, S.RECOMMENDER), _warm(export_base, S.DESIGNER)
    user = rec[S.SCORE][S.USER_ID][0].decode()
    item = rec[S.SCORE][S.ITEM_ID][0].decode()
    png = rec[S.SCORE_IMAGES][S.IMAGE_BYTES][0]
    category = des[S.DESIGN][S.CATEGORY].item().decode()
    loaded = tf.saved_model.load(os.path.join(export_base, S.RECOMMENDER, "1"))

    s = c.score([user, "no-such-user"], [item, item])
    assert s.known.tolist() == [True, False] and s.score[1] == 0.0
    want = loaded.signatures[S.SCORE](user_id=tf.constant([user]), item_id=tf.constant([item]))
    np.testing.assert_allclose(s.score[:1], want[S.OUT_SCORE].numpy(), rtol=1e-4, atol=1e-5)
    si = c.score_images([user], [png])
    assert si.score.shape == (1,) and np.isfinite(si.score).all()
    emb = c.item_embedding([png, png])
    assert emb.ndim == 2 and emb.shape[0] == 2 and emb.dtype == np.float32
    assert c.user_embedding([user]).shape == (1, emb.shape[1])
    r = c.recommend([user], k=5)
    assert len(r.item_ids[0]) == 5 and np.all(np.diff(r.score[0]) <= 1e-6)

    g = c.generate(category, n=2, seed=1)
    assert g.image.ndim == 4 and g.image.shape[0] == 2 and g.image.dtype == np.uint8
    assert g.png[0].startswith(b"\x89PNG")
    d = c.design(user, category, starts=2, steps=3, eta=1.0, seed=0)
    assert d.image.shape[0] >= 1 and d.score is not None
    m = c.modify([user], [png], [category], steps=2, eta=1.0)
    assert m.image.shape[0] == 1 and m.score_before.shape == (1,)

    meta = c.metadata(S.RECOMMENDER)
    for sig, spec in S.SIGNATURES[S.RECOMMENDER].items():
        assert set(meta[sig]["inputs"]) == set(spec.inputs), sig
    assert c.status(S.DESIGNER)[0]["state"] == "AVAILABLE"
    c.close()
