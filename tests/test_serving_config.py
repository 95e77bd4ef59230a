"""models.config / batching file parsing and version policies (no sockets)."""

import os
import shutil

import tfmodels  # noqa: F401

import pytest

from export import signatures as S
import serving_fixtures as testing
from serving.config import load_batching_parameters, parse_batching_parameters, parse_model_config
from serving.manager import ModelManager, State, wanted_versions

CONFIG = """
model_config_list {
  config {
    name: "recommender"
    base_path: "models/recommender"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config { name: "designer" base_path: "/abs/designer" model_platform: "tensorflow" }
}
"""


def test_parse_model_config_resolves_relative_paths():
    cfg = parse_model_config(CONFIG, base_dir="/exports")
    a, b = cfg.model_config_list.config
    assert a.base_path == "/exports/models/recommender" and b.base_path == "/abs/designer"
    assert dict(a.version_labels) == {"stable": 1, "canary": 2}
    assert a.model_version_policy.latest.num_versions == 2


@pytest.mark.parametrize("text, words", [
    ("model_config_list { config { name: 'a' base_path: '/x' } config { name: 'a' base_path: '/y' } }", "twice"),
    ("model_config_list { config { base_path: '/x' } }", "no name"),
    ("model_config_list { config { name: 'a' } }", "base_path"),
    ("model_config_list { config { name: 'a' base_path: '/x' model_platform: 'onnx' } }", "onnx"),
    ("model_config_list { config { name: 'a' base_pth: '/x' } }", "base_pth"),
    ("not a proto", "ModelServerConfig"),
])
def test_bad_model_configs_are_named(text, words):
    with pytest.raises(ValueError, match=words):
        parse_model_config(text, source="my.config")


def test_deploy_files_parse():
    here = os.path.join(os.path.dirname(__file__), "..", "serving", "deploy")
    cfg = parse_model_config(open(os.path.join(here, "models.config")).read())
    assert [m.name for m in cfg.model_config_list.config] == [S.RECOMMENDER, S.DESIGNER, S.ITEM_ENCODER]
    p = load_batching_parameters(os.path.join(here, "batching_parameters.txt"))
    assert p.max_batch_size >= 1 and p.num_batch_threads >= 1


def test_batching_parameters():
    p = parse_batching_parameters("""
        max_batch_size { value: 64 }   # rows
        batch_timeout_micros { value: 2000 }
        num_batch_threads { value: 3 }
        max_enqueued_batches { value: 50 }
        allowed_batch_sizes: 16
        allowed_batch_sizes: 64
        pad_variable_length_inputs: false
    """)
    assert (p.max_batch_size, p.batch_timeout_micros, p.num_batch_threads, p.max_enqueued_batches) == (64, 2000, 3, 50)
    assert p.allowed_batch_sizes == [16, 64]
    with pytest.raises(ValueError, match="max_batch_sizee"):
        parse_batching_parameters("max_batch_sizee { value: 3 }")
    with pytest.raises(ValueError, match="allowed_batch_sizes"):
        parse_batching_parameters("max_batch_size { value: 8 } allowed_batch_sizes: 4")


def test_version_policies():
    cfg = parse_model_config(CONFIG, base_dir="/e").model_config_list.config[0]
    assert wanted_versions(cfg, [1, 2, 3, 10]) == {3, 10}
    cfg.model_version_policy.all.SetInParent()
    assert wanted_versions(cfg, [1, 2, 3]) == {1, 2, 3}
    cfg.model_version_policy.specific.versions.extend([1, 3, 7])
    assert wanted_versions(cfg, [1, 2, 3]) == {1, 3}


def _versions_dir(tmp_path):
    base = testing.fixture_models()
    root = tmp_path / S.RECOMMENDER
    for v in (1, 2, 3):
        shutil.copytree(f"{base}/{S.RECOMMENDER}/1", root / str(v))
    shutil.copytree(f"{base}/{S.RECOMMENDER}/1", root / ".tmp-4-abc")  # exporter's temp folder
    (root / "5").mkdir()  # no saved_model.pb yet
    return root


@pytest.mark.parametrize("policy, expect", [
    ("", [3]), ("latest { num_versions: 2 }", [3, 2]), ("all {}", [3, 2, 1]),
    ("specific { versions: 1 versions: 3 }", [3, 1])])
def test_manager_loads_what_the_policy_asks(tmp_path, policy, expect):
    root = _versions_dir(tmp_path)
    text = f'model_config_list {{ config {{ name: "recommender" base_path: "{root}" ' \
           f'model_version_policy {{ {policy} }} }} }}' if policy else \
           f'model_config_list {{ config {{ name: "recommender" base_path: "{root}" }} }}'
    m = ModelManager(parse_model_config(text))
    m.poll()
    assert [v for v, s, _ in m.status(S.RECOMMENDER) if s == State.AVAILABLE] == expect
    assert m.resolve(S.RECOMMENDER).version == expect[0]


def test_broken_version_is_reported_and_older_keeps_serving(tmp_path):
    root = _versions_dir(tmp_path)
    shutil.rmtree(root / "2"), shutil.rmtree(root / "3")
    m = ModelManager(parse_model_config(f'model_config_list {{ config {{ name: "recommender" base_path: "{root}" }} }}'))
    m.poll()
    (root / "7").mkdir()
    (root / "7" / "saved_model.pb").write_bytes(b"garbage")
    m.poll()
    status = {v: (s, msg) for v, s, msg in m.status(S.RECOMMENDER)}
    assert status[7][0] == State.END and "failed to load" in status[7][1]
    assert status[1][0] == State.AVAILABLE and m.resolve(S.RECOMMENDER).version == 1


def _write_warmup(version_dir, requests):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    os.makedirs(version_dir / "assets.extra", exist_ok=True)
    with tf.io.TFRecordWriter(str(version_dir / "assets.extra" / "tf_serving_warmup_requests")) as w:
        for r in requests:
            w.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=r)).SerializeToString())


def test_warmup_requests_are_replayed_and_bad_ones_fail_the_load(tmp_path):
    from serving.client import GrpcClient
    from serving.manager import ServedVersion

    root = tmp_path / S.RECOMMENDER
    shutil.copytree(f"{testing.fixture_models()}/{S.RECOMMENDER}/1", root / "1")
    c = GrpcClient("127.0.0.1:1")  # only builds protos; never connects
    good = c.predict_request(S.RECOMMENDER, {"user_id": ["u1"], "item_id": ["i1"]}, signature=S.SCORE)
    _write_warmup(root / "1", [good, good])
    assert ServedVersion(S.RECOMMENDER, 1, str(root / "1")).warm_up() == 2
    shutil.copytree(root / "1", root / "2")
    bad = c.predict_request(S.RECOMMENDER, {"user_id": ["u1"]}, signature=S.SCORE)
    _write_warmup(root / "2", [good, bad])
    m = ModelManager(parse_model_config(
        f'model_config_list {{ config {{ name: "recommender" base_path: "{root}" '
        f'model_version_policy {{ all {{}} }} }} }}'))
    m.poll()
    status = {v: (s, msg) for v, s, msg in m.status(S.RECOMMENDER)}
    assert status[1][0] == State.AVAILABLE
    assert status[2][0] == State.END and "item_id" in status[2][1]
    c.close()


def test_serving_never_imports_training_code():
    """Serving needs only the SavedModel (and the signature constants): no training code."""
    import ast
    import glob

    root = os.path.join(os.path.dirname(__file__), "..", "serving")
    for path in glob.glob(os.path.join(root, "*.py")):
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [f"{node.module}.{a.name}" if node.module == "export" else node.module or ""
                        for a in node.names]
            else:
                mods = []
            for m in mods:
                assert not m.startswith("tfmodels"), f"{path} imports {m}"
                assert not m.startswith("export") or m == "export.signatures", f"{path} imports {m}"


def test_decode_matches_make_ndarray():
    """serving.tensors.decode's fast paths give what tf.make_ndarray gives."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    from serving.tensors import array_to_proto, decode

    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array(3, np.int32), np.array([True, False]),
              np.array([[b"a", b"bc"]], dtype=object), np.zeros((0, 4)), np.array([1, 2], np.float16),
              np.array([-1, 2], np.int8), np.array([1, 2], np.uint64)]
    protos = [p for a in arrays for p in (array_to_proto(a), tf.make_tensor_proto(a))]
    for a in arrays[:3] + arrays[6:]:  # values in the typed repeated fields, not tensor_content
        p = tensor_pb2.TensorProto(dtype=tf.as_dtype(a.dtype).as_datatype_enum)
        for d in a.shape:
            p.tensor_shape.dim.add(size=d)
        field = {np.float32: "float_val", np.int32: "int_val", np.bool_: "bool_val", np.int8: "int_val",
                 np.uint64: "uint64_val"}[a.dtype.type]
        getattr(p, field).extend(a.reshape(-1).tolist())
        protos.append(p)
    protos.append(tf.make_tensor_proto(1.5, shape=[3]))  # one value repeated to fill the shape
    for p in protos:
        got, want = decode(p), tf.make_ndarray(p)
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), p
        assert got.flags.writeable
