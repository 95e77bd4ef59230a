"""Bounded fuzz: thousands of malformed requests, each answered with a proper error.

Every request is malformed in one way (wrong dtype, shape, name, unknown model /
version / label / signature, oversized or corrupt tensors, corrupt images, image
headers claiming huge sizes, counts beyond the limits, bad JSON, lone surrogates,
deep nesting, bad HTTP framing and methods, ...), drawn from named classes. The
server must answer each with the status TensorFlow Serving gives, never 500 for a
client mistake, never crash, and keep serving valid requests. The counts by class
are printed (``pytest -s``).
"""

import base64
import collections
import http.client
import json
import random
import socket
import time
from concurrent import futures

import tfmodels  # noqa: F401

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from export import signatures as S
import serving_fixtures as testing
from serving.client import GrpcClient, RestClient
from serving_fixtures import png_claiming

C = grpc.StatusCode
MAX_REQUEST = 1 << 20  # a 1 MiB limit makes oversized requests cheap to produce


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = testing.fixture_models()
    cfg = testing.models_config(base, str(tmp_path_factory.mktemp("fuzz") / "models.config"),
                                labels={S.RECOMMENDER: {"stable": 1}})
    running = testing.start_server("embedded", cfg, poll_seconds=0, max_request_bytes=MAX_REQUEST)
    yield running
    running.stop()


def _t(value, dtype=None):
    arr = np.asarray(value, dtype=dtype)
    if arr.dtype.kind == "U":
        arr = np.char.encode(arr, "utf-8").astype(object)
    return tf.make_tensor_proto(arr)


def _req(model=S.RECOMMENDER, sig=S.SCORE, inputs=None, version=None, label=None, output_filter=()):
    r = predict_pb2.PredictRequest()
    r.model_spec.name = model
    r.model_spec.signature_name = sig
    if version is not None:
        r.model_spec.version.value = version
    if label is not None:
        r.model_spec.version_label = label
    for k, v in (inputs or {}).items():
        r.inputs[k].CopyFrom(v)
    r.output_filter.extend(output_filter)
    return r


def _good(n=2):
    return {"user_id": _t(["u1"] * n), "item_id": _t(["i1"] * n)}


def _rec(k=5, user=("u1",), excl=False):
    return {"user_id": _t(list(user)), "k": _t(k, np.int32), "exclude_purchased": _t(excl)}


# Each case: rng -> (request, allowed status codes).
def _cases():
    bad = C.INVALID_ARGUMENT

    def corrupt_content(rng):
        p = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
        p.tensor_shape.dim.add(size=int(rng.integers(2, 50)))
        p.tensor_content = rng.bytes(int(rng.integers(1, 7)))
        return _req(S.DESIGNER, S.DESIGN, {"eta": p}), {bad}

    def huge_shape(rng):
        p = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
        for _ in range(3):
            p.tensor_shape.dim.add(size=int(rng.integers(10**4, 10**6)))
        return _req(S.DESIGNER, S.DESIGN, {"eta": p}), {C.RESOURCE_EXHAUSTED}

    def bad_dtype_enum(rng):
        p = tensor_pb2.TensorProto(dtype=int(rng.choice([20, 21, 0, 999, 120])))
        p.tensor_shape.dim.add(size=1)
        return _req(inputs={"user_id": p, "item_id": _t(["i1"])}), {bad}

    def negative_dim(rng):
        p = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"u1"])
        p.tensor_shape.dim.add(size=-int(rng.integers(1, 5)))
        return _req(inputs={"user_id": p, "item_id": _t(["i1"])}), {bad}

    def string_count(rng):
        p = _t(["u1", "u2", "u3"])
        p.tensor_shape.dim[0].size = int(rng.choice([1, 2, 5, 100]))
        return _req(inputs={"user_id": p, "item_id": _t(["i1"] * 3)}), {bad}

    def corrupt_image(rng):
        n = int(rng.integers(1, 4))
        imgs = [rng.bytes(int(rng.integers(0, 300))) for _ in range(n)]
        if rng.random() < 0.5:  # a truncated real PNG
            imgs[0] = testing.png_bytes(1)[: int(rng.integers(8, 60))]
        return _req(sig=S.SCORE_IMAGES, inputs={"user_id": _t(["u1"] * n),
                                                "image_bytes": tf.make_tensor_proto(np.array(imgs, dtype=object))}), {bad}

    def image_bomb(rng):
        side = int(rng.integers(5000, 60000))
        img = png_claiming(side, side) if rng.random() < 0.5 else _jpeg_claiming(side)
        sig = str(rng.choice([S.SCORE_IMAGES, S.ITEM_EMBEDDING]))
        inputs = {"image_bytes": tf.make_tensor_proto(np.array([img], dtype=object))}
        if sig == S.SCORE_IMAGES:
            inputs["user_id"] = _t(["u1"])
        return _req(sig=sig, inputs=inputs), {bad}

    def huge_count(rng):  # beyond the limit, up to what no memory could hold
        big = int(rng.choice([65, 1000, 2**24, 2**31 - 1, -1, 0, -(2**31)]))
        if rng.random() < 0.5:
            return _req(S.DESIGNER, S.GENERATE, {"category": _t("top"), "n": _t(big, np.int32),
                                                 "seed": _t(0, np.int32)}), {bad}
        return _req(S.DESIGNER, S.DESIGN, {
            "user_id": _t("u1"), "category": _t("top"), "starts": _t(big, np.int32),
            "steps": _t(1, np.int32), "eta": _t(1.0, np.float32), "seed": _t(0, np.int32)}), {bad}

    cases = {
        "unknown_model": lambda rng: (_req(model=f"m{rng.integers(1e6)}", inputs=_good()), {C.NOT_FOUND}),
        "unknown_version": lambda rng: (_req(inputs=_good(), version=int(rng.integers(2, 1e9))), {C.NOT_FOUND}),
        # TF Serving: an unrecognised label is the caller's mistake, INVALID_ARGUMENT.
        "unknown_label": lambda rng: (_req(inputs=_good(), label=f"l{rng.integers(1e6)}"), {bad}),
        "unknown_signature": lambda rng: (_req(sig=f"s{rng.integers(1e6)}", inputs=_good()), {C.FAILED_PRECONDITION}),
        "missing_input": lambda rng: (_req(inputs={"user_id": _t(["u1"])}), {bad}),
        "extra_input": lambda rng: (_req(inputs={**_good(), f"x{rng.integers(99)}": _t([1.0])}), {bad}),
        "no_inputs": lambda rng: (_req(sig=str(rng.choice([S.SCORE, S.RECOMMEND, S.SCORE_IMAGES]))), {bad}),
        "wrong_dtype_string": lambda rng: (_req(inputs={"user_id": _t(rng.random(2).astype(np.float32)),
                                                        "item_id": _t(["i1", "i2"])}), {bad}),
        "wrong_dtype_k": lambda rng: (_req(sig=S.RECOMMEND, inputs={**_rec(), "k": _t(5, rng.choice(
            [np.int64, np.float32, np.int16]))}), {bad}),
        "wrong_rank": lambda rng: (_req(inputs={"user_id": _t([["u1", "u2"]] * 2), "item_id": _t(["i1"] * 2)}), {bad}),
        "scalar_for_vector": lambda rng: (_req(inputs={"user_id": _t("u1"), "item_id": _t("i1")}), {bad}),
        "vector_for_scalar": lambda rng: (_req(sig=S.RECOMMEND, inputs={**_rec(), "k": _t([3, 4], np.int32)}), {bad}),
        "batch_mismatch": lambda rng: (_req(inputs={"user_id": _t(["u1"] * 2), "item_id": _t(["i1"] * 3)}), {bad}),
        "k_zero_or_negative": lambda rng: (_req(sig=S.RECOMMEND, inputs=_rec(k=-int(rng.integers(0, 100)))), {bad}),
        "k_too_large": lambda rng: (_req(sig=S.RECOMMEND, inputs=_rec(k=int(rng.integers(201, 10**6)))), {bad}),
        "absurd_steps": lambda rng: (_req(S.DESIGNER, S.DESIGN, {
            "user_id": _t("u1"), "category": _t("top"), "starts": _t(1, np.int32),
            "steps": _t(int(rng.integers(10**4, 10**9)), np.int32), "eta": _t(1.0, np.float32),
            "seed": _t(0, np.int32)}), {bad}),
        "unknown_user_design": lambda rng: (_req(S.DESIGNER, S.DESIGN, {
            "user_id": _t(f"nobody{rng.integers(99)}"), "category": _t("top"), "starts": _t(1, np.int32),
            "steps": _t(1, np.int32), "eta": _t(1.0, np.float32), "seed": _t(0, np.int32)}), {bad}),
        "bad_category": lambda rng: (_req(S.DESIGNER, S.GENERATE, {
            "category": _t(str(rng.choice(["", "Top", "shoes", "top "]))), "n": _t(1, np.int32),
            "seed": _t(0, np.int32)}), {bad}),
        "category_as_int": lambda rng: (_req(S.DESIGNER, S.GENERATE, {
            "category": _t(int(rng.integers(0, 3)), np.int32), "n": _t(1, np.int32),
            "seed": _t(0, np.int32)}), {bad}),
        "bad_output_filter": lambda rng: (_req(inputs=_good(), output_filter=[f"o{rng.integers(9)}"]), {bad}),
        "duplicate_output_filter": lambda rng: (_req(inputs=_good(), output_filter=["score", "score"]), {bad}),
        "corrupt_tensor_content": corrupt_content,
        "huge_declared_shape": huge_shape,
        "bad_dtype_enum": bad_dtype_enum,
        "negative_dim": negative_dim,
        "string_count_mismatch": string_count,
        "corrupt_image": corrupt_image,
        "image_bomb": image_bomb,
        "huge_count": huge_count,
    }
    return cases


def _jpeg_claiming(side: int) -> bytes:
    """A tiny JPEG whose frame header is rewritten to claim side x side (scan data cut off)."""
    jpg = bytearray(tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy())
    sof = jpg.index(b"\xff\xc0")
    jpg[sof + 5:sof + 9] = side.to_bytes(2, "big") * 2  # height, width
    return bytes(jpg[: jpg.index(b"\xff\xda") + 12])


def _rpc_code(fn, request):
    try:
        fn(request, timeout=30)
        return C.OK
    except grpc.RpcError as e:
        return e.code()


def test_grpc_fuzz(server):
    cases = _cases()
    names = sorted(cases)
    rng = np.random.default_rng(0)
    plan = [(names[i % len(names)], int(rng.integers(1 << 30))) for i in range(2100)]
    client = GrpcClient(server.grpc_target, timeout=30, retries=0)
    predict = client.prediction.Predict
    failures = []

    def one(item):
        name, seed = item
        request, allowed = cases[name](np.random.default_rng(seed))
        code = _rpc_code(predict, request)
        if code not in allowed:
            failures.append((name, code))
        return code

    t0 = time.monotonic()
    with futures.ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(one, plan))
    by_class = collections.Counter(name for name, _ in plan)
    print("gRPC fuzz, requests by class:", dict(sorted(by_class.items())))
    # Requests larger than the server's limit are refused by gRPC itself.
    big = _req(inputs={"user_id": _t(["u" * (MAX_REQUEST + 10)]), "item_id": _t(["i1"])})
    codes.append(_rpc_code(predict, big))
    assert codes[-1] == C.RESOURCE_EXHAUSTED
    # Raw garbage instead of a serialized PredictRequest.
    raw = client.channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                     request_serializer=None, response_deserializer=None)
    for i in range(20):
        try:
            raw(random.Random(i).randbytes(200), timeout=10)
            codes.append(C.OK)
        except grpc.RpcError as e:
            codes.append(e.code())
            assert e.code() in (C.INTERNAL, C.INVALID_ARGUMENT, C.UNKNOWN)
    # Other RPCs with bad arguments.
    md = get_model_metadata_pb2.GetModelMetadataRequest()
    md.model_spec.name = S.RECOMMENDER
    assert _rpc_code(client.prediction.GetModelMetadata, md) == C.INVALID_ARGUMENT  # no metadata_field
    md.metadata_field.append("signature_def")
    md.model_spec.name = "nope"
    assert _rpc_code(client.prediction.GetModelMetadata, md) == C.NOT_FOUND
    st = get_model_status_pb2.GetModelStatusRequest()
    st.model_spec.name = "nope"
    assert _rpc_code(client.models.GetModelStatus, st) == C.NOT_FOUND
    elapsed = time.monotonic() - t0

    assert failures == [], failures[:20]
    assert len(codes) >= 2000 and C.OK not in codes
    assert C.INTERNAL not in codes[:len(plan)] and C.UNKNOWN not in codes[:len(plan)]
    assert elapsed < 60
    # Still serving, and the errors were counted.
    assert client.score(["u1"], ["i1"]).known.tolist() == [True]
    assert server.server.metrics.request_count(code="INVALID_ARGUMENT") >= 1000
    client.close()


def _http(server, method, path, body=None, headers=None):
    host = server.rest_url.split("//")[1]
    conn = http.client.HTTPConnection(host, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, data
    finally:
        conn.close()


def _raw_http(server, request: bytes) -> int:
    """Sends bytes as they are (framing http.client would refuse to write); the status answered."""
    host, port = server.rest_url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


_P = f"/v1/models/{S.RECOMMENDER}:predict"
_D = f"/v1/models/{S.DESIGNER}:predict"


def _rest_bodies():
    good_b64 = base64.b64encode(testing.png_bytes(2)).decode()
    return [
        b"{not json", b"\xff\xfe\x00", b"[]", b"42", b"{}",
        json.dumps({"instances": [1], "inputs": [1]}).encode(),
        json.dumps({"instances": {"user_id": "u1"}}).encode(),
        json.dumps({"instances": [{"user_id": "u1"}, {"item_id": "i1"}]}).encode(),
        json.dumps({"instances": ["u1", "u2"]}).encode(),
        json.dumps({"inputs": {"user_id": [["u1"], "u2"], "item_id": ["i1", "i2"]}}).encode(),
        json.dumps({"inputs": {"user_id": [1, 2], "item_id": ["i1", "i2"]}}).encode(),
        json.dumps({"inputs": {"user_id": ["u1"], "item_id": [{"b64": "!!!"}]}}).encode(),
        json.dumps({"inputs": {"user_id": ["u1"], "item_id": [{"b65": "aGk="}]}}).encode(),
        json.dumps({"inputs": {"user_id": ["u1"], "item_id": ["i1"], "zzz": [1]}}).encode(),
        json.dumps({"signature_name": 7, "inputs": {}}).encode(),
        json.dumps({"signature_name": "nope", "inputs": {}}).encode(),
        json.dumps({"signature_name": "recommend", "inputs": {"user_id": ["u1"], "k": 2.5,
                                                              "exclude_purchased": False}}).encode(),
        json.dumps({"signature_name": "recommend", "inputs": {"user_id": ["u1"], "k": "5",
                                                              "exclude_purchased": False}}).encode(),
        json.dumps({"signature_name": "recommend", "inputs": {"user_id": ["u1"], "k": 2**40,
                                                              "exclude_purchased": False}}).encode(),
        json.dumps({"signature_name": "recommend", "inputs": {"user_id": ["u1"], "k": 5,
                                                              "exclude_purchased": 1}}).encode(),
        json.dumps({"signature_name": "recommend", "instances": [{"user_id": "u1", "k": 5,
                                                                 "exclude_purchased": True}]}).encode(),
        json.dumps({"signature_name": "score_images", "inputs": {"user_id": ["u1"],
                                                                 "image_bytes": [{"b64": good_b64[:40]}]}}).encode(),
        json.dumps({"signature_name": "score_images", "inputs": {"user_id": ["u1"],
                                                                 "image_bytes": ["plain text"]}}).encode(),
        json.dumps({"inputs": {"user_id": [float("nan")], "item_id": ["i"]}}).encode(),
        json.dumps({"inputs": {"user_id": [[["u1"]]], "item_id": ["i1"]}}).encode(),  # rank refused before converting
    ]


def _rest_cases():
    """Each class: rng -> (send(server) -> HTTP status, allowed statuses)."""
    bodies = _rest_bodies()

    def post(path, body, headers=None):
        return lambda server: _http(server, "POST", path, body, {"Content-Type": "application/json", **(headers or {})})

    def flipped(rng):
        b = bytearray(bodies[int(rng.integers(len(bodies)))])
        for _ in range(int(rng.integers(1, 5))):
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
        return post(_P, bytes(b)), {400, 404}

    def nested(rng, depth, leaf):
        return "[" * depth + leaf + "]" * depth

    def deep_strings(rng):
        deep = nested(rng, int(rng.integers(33, 900)), '"u1"')
        return post(_P, f'{{"inputs": {{"user_id": {deep}, "item_id": ["i1"]}}}}'.encode()), {400}

    def deep_json(rng):
        deep = nested(rng, int(rng.integers(1000, 50000)), "1")
        return post(_P, f'{{"inputs": {deep}}}'.encode()), {400}

    def lone_surrogate(rng):
        s = rng.choice(["\\ud800", "\\udfff", "a\\ud83d", "\\udc00b"])
        return post(_P, f'{{"inputs": {{"user_id": ["{s}"], "item_id": ["i1"]}}}}'.encode()), {400}

    def image_bomb(rng):
        side = int(rng.integers(5000, 60000))
        b64 = base64.b64encode(png_claiming(side, side)).decode()
        return post(_P, json.dumps({"signature_name": S.ITEM_EMBEDDING, "instances": [{"b64": b64}]}).encode()), {400}

    def huge_count(rng):
        n = int(rng.choice([65, 2**24, 2**31 - 1, -5]))
        return post(_D, json.dumps({"signature_name": S.GENERATE, "inputs": {"category": "top", "n": n,
                                                                            "seed": 0}}).encode()), {400}

    def bad_version(rng):
        v = str(rng.choice(["99999999999999999999", "%C2%B2", "%D9%A1", "-1", "1e3", "abc"]))
        return post(f"/v1/models/{S.RECOMMENDER}/versions/{v}:predict", b'{"instances": [1]}'), {400}

    def other_method(rng):
        method = str(rng.choice(["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW"]))
        return (lambda server: _http(server, method, _P, b"{}")[0:2]), {400}

    def negative_length(rng):
        n = int(rng.integers(1, 10**6))
        req = f"POST {_P} HTTP/1.1\r\nHost: x\r\nContent-Length: -{n}\r\n\r\n".encode()
        return (lambda server: (_raw_http(server, req), b"")), {400}

    def oversized(rng):
        size = int(rng.integers(MAX_REQUEST + 1, 10**12))
        req = f"POST {_P} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
        return (lambda server: (_raw_http(server, req), b"")), {413}

    def oversized_chunked(rng):
        chunk = b"x" * 65536
        n = MAX_REQUEST // len(chunk) + 2
        req = (f"POST {_P} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
               + b"%x\r\n%s\r\n" % (len(chunk), chunk) * n + b"0\r\n\r\n")
        return (lambda server: (_raw_http(server, req), b"")), {413}

    paths = [("/v1/models/nope:predict", 404), (f"/v1/models/{S.RECOMMENDER}/versions/77:predict", 404),
             (f"/v1/models/{S.RECOMMENDER}/labels/nope:predict", 400), (f"/v1/models/{S.RECOMMENDER}:explode", 400),
             (f"/v1/models/{S.RECOMMENDER}:classify", 501), ("/v2/whatever", 404), ("/v1/models", 400),
             ("/v1/models/", 400)]

    def bad_path(rng):
        path, status = paths[int(rng.integers(len(paths)))]
        method = "GET" if path.startswith("/v1/models") and path.rstrip("/") == "/v1/models" else "POST"
        return (lambda server: _http(server, method, path, b'{"instances": [1]}')), {status}

    return {
        "malformed_body": lambda rng: (post(_P, bodies[int(rng.integers(len(bodies)))]), {400, 404}),
        "byte_flips": flipped, "deep_strings": deep_strings, "deep_json": deep_json,
        "lone_surrogate": lone_surrogate, "image_bomb": image_bomb, "huge_count": huge_count,
        "bad_version": bad_version, "other_method": other_method, "negative_length": negative_length,
        "oversized_declared": oversized, "oversized_chunked": oversized_chunked, "bad_path": bad_path,
    }


def test_rest_fuzz(server):
    cases = _rest_cases()
    names = sorted(cases)
    rng = np.random.default_rng(1)
    # Chunked bodies over the 1 MiB limit cost 1 MiB each to send: fewer of them.
    plan = [n for n in (names[i % len(names)] for i in range(1400))
            if n != "oversized_chunked" or rng.random() < 0.2]
    failures, statuses = [], collections.Counter()

    def one(name):
        send, allowed = cases[name](np.random.default_rng(int(rng.integers(1 << 30))))
        status, data = send(server)
        statuses[status] += 1
        framing = name in ("negative_length", "oversized_declared", "oversized_chunked")
        if status not in allowed or (not framing and status != 413 and data and "error" not in json.loads(data)):
            failures.append((name, status, data[:200]))

    t0 = time.monotonic()
    for name in plan:
        one(name)
    print("REST fuzz, requests by class:", dict(sorted(collections.Counter(plan).items())),
          "statuses:", dict(statuses))
    assert failures == [], failures[:10]
    assert len(plan) >= 1100 and 500 not in statuses and 200 not in statuses
    assert time.monotonic() - t0 < 90
    # The well-formed request still works, also with routes in another case.
    assert RestClient(server.rest_url).score(["u1"], ["i1"]).known.tolist() == [True]
    status, data = _http(server, "POST", _P.upper().replace(S.RECOMMENDER.upper(), S.RECOMMENDER),
                         json.dumps({"inputs": {"user_id": ["u1"], "item_id": ["i1"]}}).encode())
    assert status == 200 and json.loads(data)["outputs"]["known"] == [True]
